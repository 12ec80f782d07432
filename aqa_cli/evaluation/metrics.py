"""The numbers models are judged by: Spearman rho, R-l2, MAE, the difficulty-only baseline."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from aqa_cli.util.errors import AqaError


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(spearmanr(a, b).statistic)


def metrics(pred: np.ndarray, true: np.ndarray, score_range: tuple[float, float]) -> dict[str, float]:
    """Spearman rho; R-l2 = 100 * mean(((pred - true) / (max - min))^2) over the dataset's score range; MAE."""
    low, high = score_range
    span = (high - low) or 1.0
    return {
        "rho": spearman(pred, true),
        "r_l2": float(100 * np.mean(((pred - true) / span) ** 2)),
        "mae": float(np.mean(np.abs(pred - true))),
    }


def difficulty_baseline(difficulty: np.ndarray, true: np.ndarray) -> float | None:
    """Rho of 'constant quality x difficulty', i.e. of difficulty alone (None without difficulties)."""
    known = np.isfinite(difficulty)
    return spearman(difficulty[known], true[known]) if known.sum() > 1 else None


def score_span(scores: np.ndarray, where: object, column: str = "score") -> tuple[float, float]:
    """The range of the labelled scores (0 .. 104.5 on MTL-AQA), for R-l2; `where` and `column` name them
    in the error when there are none."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if not len(scores):
        raise AqaError(f"{where} has no values in score column {column!r}")
    return float(scores.min()), float(scores.max())
