"""Which samples train, select and test: the store's split column, with part of train held out for
validation (drawn by the seed), or, for k-fold cross-validation, one of k folds of train (drawn by the
fixed FOLD_SEED, the same for every run seed) as validation."""

from __future__ import annotations

import numpy as np

from aqa_cli.stores.feature_store import FeatureStore
from aqa_cli.stores.video_store import VideoStore
from aqa_cli.util.errors import AqaError

FOLD_SEED = 0
"""The folds of `--folds` are drawn by this seed, whatever the run's seed: every run of a grid sees the
same folds."""


def split_rows(
    store_path, val_fraction: float, seed: int, folds: int = 0, fold: int = 0
) -> dict[str, list[int]]:
    """Rows per split: train, val (the store's val split plus `val_fraction` of train held out) and test;
    with `folds`, see `cross_validation_split`."""
    with VideoStore(store_path) as store:
        rows = split_by_column(store.column("split"), 0.0 if folds else val_fraction, seed)
    return cross_validation_split(rows, folds, fold)


def cross_validation_split(rows: dict[str, list[int]], folds: int, fold: int) -> dict[str, list[int]]:
    """With `folds` >= 2: train cut into `folds` folds by a FOLD_SEED permutation; fold `fold` is val, the
    others train, test unchanged (the store's own val split is left out). `folds` 0: `rows` as they are."""
    if not folds:
        return rows
    if len(rows["train"]) < folds:
        raise AqaError(f"--folds {folds} needs at least {folds} training samples (got {len(rows['train'])})")
    permuted = np.random.default_rng(FOLD_SEED).permutation(rows["train"])
    parts = np.array_split(permuted, folds)
    val = sorted(parts[fold].tolist())
    train = sorted(np.concatenate([part for k, part in enumerate(parts) if k != fold]).tolist())
    return {"train": train, "val": val, "test": rows["test"]}


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


def labelled_splits(
    store: FeatureStore, target: str, val_fraction: float, seed: int, folds: int = 0, fold: int = 0
) -> dict[str, list[int]]:
    """Rows per split (`val_fraction` of train held out as in end-to-end training, or fold `fold` of
    `folds`), labelled ones only."""
    scores = store.scores(target)
    rows = split_by_column(store.column("split"), 0.0 if folds else val_fraction, seed)
    labelled = {split: [row for row in found if np.isfinite(scores[row])] for split, found in rows.items()}
    return cross_validation_split(labelled, folds, fold)
