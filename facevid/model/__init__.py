"""facevid.model: the encoder, motion quantizer, flow code, warp, diffusion decoder and mouth refiner of BCD (seed 001)."""
