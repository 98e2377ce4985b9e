"""Reading and writing: video, images, .fvl files, atomic outputs."""
