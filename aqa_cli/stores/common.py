"""What both stores share, importable without h5py: their format names, the frame compressions, and the one
fingerprint of a dataset's labels that stores, feature stores and checkpoints record."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import numpy as np

VIDEO_STORE_FORMAT = "aqa-video-store"
FEATURE_STORE_FORMAT = "aqa-feature-store"
COMPRESSIONS = ("none", "lzf", "gzip")
DEFAULT_COMPRESSION = "none"  # video frames barely compress losslessly; see docs/FORMAT.md


def labels_sha256(
    ids: Iterable, splits: Iterable, difficulty: Iterable, scores: Mapping[str, Iterable]
) -> str:
    """sha256 of ids, splits, difficulties and every score column (in order), each as numpy text: what
    identifies the labels a model was trained and evaluated on."""
    digest = hashlib.sha256()
    for values in (ids, splits, difficulty, *scores.values()):
        digest.update(
            np.asarray(list(values) if not isinstance(values, np.ndarray) else values).astype(str).tobytes()
        )
    return digest.hexdigest()
