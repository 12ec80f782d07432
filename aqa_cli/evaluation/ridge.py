"""The baseline every head must beat on cached features: closed-form ridge regression on mean-pooled,
standardized clip features, quality x difficulty where the store has difficulties (like the heads)."""

from __future__ import annotations

import numpy as np

from aqa_cli.data.splits import labelled_splits
from aqa_cli.evaluation.metrics import metrics, score_span
from aqa_cli.stores.feature_store import FeatureStore
from aqa_cli.util.errors import AqaError

RIDGE_LAMBDAS = tuple(10.0**k for k in range(-2, 6))
"""Ridge penalties tried on standardized mean-pooled features; the best on validation is kept."""


def ridge_baseline(features: str, target: str, val_fraction: float, seed: int) -> dict[str, float]:
    """Test metrics of ridge regression on mean-pooled features (view 0), its penalty chosen on the
    validation rows that `val_fraction` and `seed` hold out of train (as the heads' runs do)."""
    with FeatureStore(features) as store:
        target = target or store.attributes["default_target"]
        rows = labelled_splits(store, target, val_fraction, seed)
        if not rows["val"]:
            raise AqaError("the ridge baseline chooses its penalty on validation: set --val-fraction")
        pooled = np.stack([store.features(row).mean(axis=0) for row in range(len(store))])
        scores, difficulty = store.scores(target), store.column("difficulty")
        span = score_span(scores, store.path, target)
    scale = np.where(np.isfinite(difficulty) & (difficulty > 0), difficulty, 1.0)
    train, val, test = (np.array(rows[split], dtype=int) for split in ("train", "val", "test"))
    mean, std = pooled[train].mean(axis=0), pooled[train].std(axis=0) + 1e-8
    standardized = (pooled - mean) / std
    quality = scores / scale
    best = None
    for penalty in RIDGE_LAMBDAS:
        weights, bias = ridge_fit(standardized[train], quality[train], penalty)
        predicted = (standardized[val] @ weights + bias) * scale[val]
        rho = metrics(predicted, scores[val], span)["rho"]
        if best is None or rho > best[0]:
            best = (rho, weights, bias)
    _, weights, bias = best
    return metrics((standardized[test] @ weights + bias) * scale[test], scores[test], span)


def ridge_fit(x: np.ndarray, y: np.ndarray, penalty: float) -> tuple[np.ndarray, float]:
    """Closed-form ridge with an unpenalised intercept: (X'X + penalty I)^-1 X'y on centred data."""
    x_mean, y_mean = x.mean(axis=0), y.mean()
    centred = x - x_mean
    weights = np.linalg.solve(centred.T @ centred + penalty * np.eye(x.shape[1]), centred.T @ (y - y_mean))
    return weights, float(y_mean - x_mean @ weights)
