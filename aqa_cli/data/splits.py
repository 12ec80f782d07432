"""Which samples train, select and test: the store's split column (or, with `resplit`, a partition of its
train + test samples re-drawn by that seed with the same sizes), with part of train held out for validation
(drawn by the seed), or, for k-fold cross-validation, one of k folds of train (drawn by the fixed FOLD_SEED,
the same for every run seed) as validation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from aqa_cli.stores.feature_store import FeatureStore
from aqa_cli.stores.video_store import VideoStore
from aqa_cli.util.errors import AqaError

FOLD_SEED = 0
"""The folds of `--folds` are drawn by this seed, whatever the run's seed: every run of a grid sees the
same folds."""


@dataclass(frozen=True)
class SplitPlan:
    """How one run splits a store: the settings of `TrainConfig` that decide it, which a run records, so
    that `aqa eval` finds the same rows."""

    val_fraction: float = 0.0
    seed: int = 0
    folds: int = 0
    fold: int = 0
    resplit: int = 0
    """>= 1: train and test re-drawn from the store's train + test samples by this seed (same sizes), a
    partition no one tuned on; 0: the store's own split."""

    @classmethod
    def of(cls, settings) -> SplitPlan:
        """The plan of a TrainConfig, or of the `train_config` dict a checkpoint recorded (older runs lack
        `resplit`: the store's split)."""
        read = settings.get if isinstance(settings, dict) else lambda name, default: getattr(settings, name)
        return cls(*(read(item.name, item.default) for item in dataclasses.fields(cls)))


def split_rows(store_path, plan: SplitPlan) -> dict[str, list[int]]:
    """Rows per split: train, val (the store's val split plus `val_fraction` of train held out) and test;
    with `folds`, see `cross_validation_split`."""
    with VideoStore(store_path) as store:
        rows = split_by_column(store.column("split"), plan)
    return cross_validation_split(rows, plan)


def cross_validation_split(rows: dict[str, list[int]], plan: SplitPlan) -> dict[str, list[int]]:
    """With `folds` >= 2: train cut into `folds` folds by a FOLD_SEED permutation; fold `fold` is val, the
    others train, test unchanged (the store's own val split is left out). `folds` 0: `rows` as they are."""
    folds = plan.folds
    if not folds:
        return rows
    if len(rows["train"]) < folds:
        raise AqaError(f"--folds {folds} needs at least {folds} training samples (got {len(rows['train'])})")
    permuted = np.random.default_rng(FOLD_SEED).permutation(rows["train"])
    parts = np.array_split(permuted, folds)
    val = sorted(parts[plan.fold].tolist())
    train = sorted(np.concatenate([part for k, part in enumerate(parts) if k != plan.fold]).tolist())
    return {"train": train, "val": val, "test": rows["test"]}


def split_by_column(splits: np.ndarray, plan: SplitPlan) -> dict[str, list[int]]:
    """`split_rows` for a column of split names (any store that has one); the validation rows of
    `val_fraction` only when there are no folds."""
    rows = {name: np.flatnonzero(splits == name).tolist() for name in ("train", "val", "test")}
    if plan.resplit:
        rows.update(redrawn_partition(rows["train"], rows["test"], plan.resplit))
    val_fraction = 0.0 if plan.folds else plan.val_fraction
    if val_fraction > 0:
        if not 0 < val_fraction < 1:
            raise AqaError(f"--val-fraction must be between 0 and 1 (got {val_fraction})")
        shuffled = np.random.default_rng(plan.seed).permutation(rows["train"]).tolist()
        held = max(1, round(len(shuffled) * val_fraction))
        rows["val"] = sorted(rows["val"] + shuffled[:held])
        rows["train"] = sorted(shuffled[held:])
    return rows


def redrawn_partition(train: list[int], test: list[int], resplit: int) -> dict[str, list[int]]:
    """Train and test of the same sizes drawn from their union by the `resplit` seed."""
    if resplit < 1:
        raise AqaError(f"--resplit must be a seed >= 1 (0 keeps the store's split; got {resplit})")
    if not train or not test:
        raise AqaError("--resplit needs a store with both train and test samples to re-draw")
    shuffled = np.random.default_rng([resplit, len(train), len(test)]).permutation(train + test)
    return {"test": sorted(shuffled[: len(test)].tolist()), "train": sorted(shuffled[len(test) :].tolist())}


def labelled_splits(store: FeatureStore, target: str, plan: SplitPlan) -> dict[str, list[int]]:
    """Rows per split (`val_fraction` of train held out as in end-to-end training, or fold `fold` of
    `folds`), labelled ones only."""
    scores = store.scores(target)
    rows = split_by_column(store.column("split"), plan)
    labelled = {split: [row for row in found if np.isfinite(scores[row])] for split, found in rows.items()}
    return cross_validation_split(labelled, plan)
