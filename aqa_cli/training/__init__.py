"""Layer 7: training: the configuration, the one epoch loop, end-to-end and heads-on-features training, and
the dispatcher between them."""
