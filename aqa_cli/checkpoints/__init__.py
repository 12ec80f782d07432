"""Layer 5: training checkpoints: writing and reading them safely, and rebuilding the trained model they
describe."""
