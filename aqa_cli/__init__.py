"""aqa: action quality assessment from video (ResNets + Weight-Decider)."""

__version__ = "0.2.0"
