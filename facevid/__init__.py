"""facevid: edit and generate talking-face video with a disentangled diffusion video model."""

__version__ = "0.1.0"
