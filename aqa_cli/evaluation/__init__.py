"""Layer 6: judging models: metrics, predictions over a split, `aqa eval`, `aqa score`, the ridge baseline and
the plots."""
