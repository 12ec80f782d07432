"""The baseline every head must beat on cached features: closed-form ridge regression on mean-pooled,
standardized clip features, quality x difficulty where the store has difficulties (like the heads)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aqa_cli.data.splits import FOLD_SEED, SplitPlan, labelled_splits
from aqa_cli.evaluation.metrics import metrics, score_span
from aqa_cli.stores.feature_store import FeatureStore
from aqa_cli.util.errors import AqaError

RIDGE_LAMBDAS = tuple(10.0**k for k in range(-2, 6))
"""Ridge penalties tried on standardized mean-pooled features; the best on validation is kept."""
RIDGE_POOLINGS = ("mean", "mean-max")
"""How a video's clip features become the ridge's input: their mean (the baseline), or their mean and
their channel-wise maximum side by side (a blended ridge's option: the maximum keeps short salient moments)."""
RIDGE_FOLDS = 5
"""Folds inside train that choose the penalty when no validation split is held out (fewer, of at least two
videos each, for a smaller training split)."""


@dataclass(frozen=True)
class RidgeFit:
    """Ridge regression on mean-pooled clip features: their training mean and std (standardization),
    weights and intercept predicting the quality, and the penalty chosen."""

    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    bias: float
    penalty: float

    def quality(self, pooled: np.ndarray) -> np.ndarray:
        return ((pooled - self.mean) / self.std) @ self.weights + self.bias


def pooled_features(store: FeatureStore, pooling: str = "mean") -> np.ndarray:
    """(samples, dim) the mean of each sample's clip features (view 0), as the ridge sees a video; (samples,
    2 dim) with "mean-max": the mean, then the channel-wise maximum."""
    if pooling not in RIDGE_POOLINGS:
        raise AqaError(f"unknown ridge pooling {pooling!r}; choose one of {', '.join(RIDGE_POOLINGS)}")
    clips = [store.features(row) for row in range(len(store))]
    if pooling == "mean":
        return np.stack([features.mean(axis=0) for features in clips])
    return np.stack([np.concatenate([features.mean(axis=0), features.max(axis=0)]) for features in clips])


def difficulty_scale(difficulty: np.ndarray) -> np.ndarray:
    """What a quality is multiplied by to give the score: the difficulty where there is one, else 1."""
    return np.where(np.isfinite(difficulty) & (difficulty > 0), difficulty, 1.0)


def fit_ridge(
    pooled: np.ndarray, scores: np.ndarray, scale: np.ndarray, train: list[int], val: list[int], span
) -> RidgeFit:
    """Ridge on the `train` rows' qualities (scores / scale); its penalty chosen on the `val` rows, or,
    without them, by 5-fold cross-validation inside train; then fitted on all of train."""
    train_rows = np.array(train, dtype=int)
    if val:
        checks = [(train_rows, np.array(val, dtype=int))]
    else:
        checks = [(np.setdiff1d(train_rows, fold), fold) for fold in _train_folds(train_rows)]
    quality = scores / scale

    def fitted(fit_rows: np.ndarray, penalty: float) -> RidgeFit:
        mean, std = pooled[fit_rows].mean(axis=0), pooled[fit_rows].std(axis=0) + 1e-8
        weights, bias = ridge_fit((pooled[fit_rows] - mean) / std, quality[fit_rows], penalty)
        return RidgeFit(mean, std, weights, bias, penalty)

    def held_out_rho(fit_rows: np.ndarray, held: np.ndarray, penalty: float) -> float:
        predicted = fitted(fit_rows, penalty).quality(pooled[held]) * scale[held]
        return metrics(predicted, scores[held], span)["rho"]

    def chosen_by(penalty: float) -> float:
        return float(np.mean([held_out_rho(fit, held, penalty) for fit, held in checks]))

    best = max(RIDGE_LAMBDAS, key=chosen_by)  # the first of equals: the smallest penalty
    return fitted(train_rows, best)


def ridge_baseline(
    features: str, target: str, val_fraction: float, seed: int, resplit: int = 0
) -> dict[str, float]:
    """Test metrics of ridge regression on mean-pooled features (view 0). Its penalty is chosen on the
    validation rows that `val_fraction` and `seed` hold out of train (as the heads' runs do), or, with no
    validation split, by 5-fold cross-validation inside train, then fitted on all of train. `resplit`: the
    re-drawn partition of `data.splits.SplitPlan`."""
    with FeatureStore(features) as store:
        target = target or store.attributes["default_target"]
        rows = labelled_splits(store, target, SplitPlan(val_fraction, seed, resplit=resplit))
        pooled = pooled_features(store)
        scores, scale = store.scores(target), difficulty_scale(store.column("difficulty"))
        span = score_span(scores, store.path, target)
    ridge = fit_ridge(pooled, scores, scale, rows["train"], rows["val"], span)
    test = np.array(rows["test"], dtype=int)
    return metrics(ridge.quality(pooled[test]) * scale[test], scores[test], span)


def _train_folds(train: np.ndarray) -> list[np.ndarray]:
    """Folds of the training rows (RIDGE_FOLDS, fewer for a small split: at least 2 videos each), drawn
    by the fixed fold seed of `--folds`."""
    folds = min(RIDGE_FOLDS, len(train) // 2)
    if folds < 2:
        raise AqaError(
            "the ridge baseline needs a validation split or at least 4 training videos to choose its penalty "
            "by cross-validation: set --val-fraction"
        )
    shuffled = np.random.default_rng(FOLD_SEED).permutation(train)
    return [np.sort(fold) for fold in np.array_split(shuffled, folds)]


def ridge_fit(x: np.ndarray, y: np.ndarray, penalty: float) -> tuple[np.ndarray, float]:
    """Closed-form ridge with an unpenalised intercept: (X'X + penalty I)^-1 X'y on centred data."""
    x_mean, y_mean = x.mean(axis=0), y.mean()
    centred = x - x_mean
    weights = np.linalg.solve(centred.T @ centred + penalty * np.eye(x.shape[1]), centred.T @ (y - y_mean))
    return weights, float(y_mean - x_mean @ weights)
