"""Layer 8: whole jobs over many samples or runs: preprocess, extract, import features, experiment grids."""
