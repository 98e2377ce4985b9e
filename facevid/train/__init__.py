"""Training: the loop, batches, the crop cache (prepare), the mouth refiner, grids."""
