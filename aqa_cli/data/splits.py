"""Which samples train, select and test: the store's split column, with part of train held out for
validation (drawn by the seed)."""

from __future__ import annotations

import numpy as np

from aqa_cli.stores.feature_store import FeatureStore
from aqa_cli.stores.video_store import VideoStore
from aqa_cli.util.errors import AqaError


def split_rows(store_path, val_fraction: float, seed: int) -> dict[str, list[int]]:
    """Rows per split: train, val (the store's val split plus `val_fraction` of train held out) and test."""
    with VideoStore(store_path) as store:
        return split_by_column(store.column("split"), val_fraction, seed)


def split_by_column(splits: np.ndarray, val_fraction: float, seed: int) -> dict[str, list[int]]:
    """`split_rows` for a column of split names (any store that has one)."""
    rows = {name: np.flatnonzero(splits == name).tolist() for name in ("train", "val", "test")}
    if val_fraction > 0:
        if not 0 < val_fraction < 1:
            raise AqaError(f"--val-fraction must be between 0 and 1 (got {val_fraction})")
        shuffled = np.random.default_rng(seed).permutation(rows["train"]).tolist()
        held = max(1, round(len(shuffled) * val_fraction))
        rows["val"] = sorted(rows["val"] + shuffled[:held])
        rows["train"] = sorted(shuffled[held:])
    return rows


def labelled_splits(store: FeatureStore, target: str, val_fraction: float, seed: int) -> dict[str, list[int]]:
    """Rows per split (`val_fraction` of train held out as in end-to-end training), labelled ones only."""
    scores = store.scores(target)
    rows = split_by_column(store.column("split"), val_fraction, seed)
    return {split: [row for row in found if np.isfinite(scores[row])] for split, found in rows.items()}
