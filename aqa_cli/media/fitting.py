"""Which frames: the fixed-length window stored per sample, and the model's training/eval windows.

The store keeps `frames` frames per sample. A clip of another length is fitted by one of two rules:

- ``uniform``: the centres of `frames` equal bins over the clip. A longer clip is subsampled evenly
  (its whole motion is kept); a shorter one repeats frames evenly (nothing is invented).
- ``tail``: the last `frames` frames. This is MTL-AQA's rule (a dive is the frames ending at its
  entry into the water); a shorter clip is padded by repeating its first frame.
"""

from __future__ import annotations

import numpy as np

from aqa_cli.util.errors import AqaError

FIT_RULES = ("uniform", "tail")


def stored_indices(length: int, frames: int, fit: str) -> np.ndarray:
    """Indices (0 .. length-1, ascending) of the `frames` frames kept from a clip of `length` frames."""
    if length <= 0:
        raise ValueError("a clip needs at least one frame")
    if fit == "uniform":
        return ((np.arange(frames) + 0.5) * length / frames).astype(np.int64)
    if fit == "tail":
        if length >= frames:
            return np.arange(length - frames, length, dtype=np.int64)
        return np.concatenate([np.zeros(frames - length, np.int64), np.arange(length, dtype=np.int64)])
    raise AqaError(f"unknown --fit {fit!r}: use one of {', '.join(FIT_RULES)}")
