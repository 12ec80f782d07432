"""Layer 0: what every layer uses: the one-line error, Ctrl-C handling, device and precision, safe unpickling,
safe output (atomic files, one writer, partial work). Imports nothing of aqa_cli beyond itself."""
