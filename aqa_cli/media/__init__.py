"""Layer 1: from video files to frames: PyAV decoding, fitting a clip to T frames, source adapters that all
yield the same sample description, the supervised worker pool, and the synthetic demo videos. Torch-free."""
