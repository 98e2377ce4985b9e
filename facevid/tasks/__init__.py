"""One module per inference command: track, transfer, encode/decode."""
