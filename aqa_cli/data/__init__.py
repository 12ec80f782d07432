"""Layer 4: how stored samples become model inputs: numpy-only windows and crops, splits, torch datasets over
the stores, and samplers."""
