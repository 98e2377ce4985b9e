"""facevid.model: the encoder, motion quantizer, diffusion decoder and motion prior of BCD (seed 001)."""
