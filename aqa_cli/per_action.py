"""Per-action evaluation, as the AQA-7 literature reports it: Spearman rho (and R-l2, MAE) per action,
and their average through Fisher's z (rho -> arctanh, mean, tanh back), which averages correlations
without the bias of averaging them directly.

A store says which action each sample is in its `action` column (AQA-7's six actions; FineDiving's dive
numbers); stores without it, or where it is empty, get no per-action report.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# |rho| = 1 has an infinite z; such a rho is taken as 1 - RHO_LIMIT, so one perfect action among others
# weighs heavily in the mean but does not make it exactly 1.
RHO_LIMIT = 1e-6


def fisher_z_mean(rhos: list[float]) -> float:
    """tanh(mean(arctanh(rho))) over the finite rhos (NaN if there are none)."""
    finite = np.array([rho for rho in rhos if math.isfinite(rho)], dtype=np.float64)
    if not len(finite):
        return float("nan")
    z = np.arctanh(np.clip(finite, -1 + RHO_LIMIT, 1 - RHO_LIMIT))
    return float(np.tanh(z.mean()))


def store_actions(store_path: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(action, score) per row of a video store, or None for a feature store or a store without actions."""
    from aqa_cli.features import is_feature_store
    from aqa_cli.store import VideoStore

    if is_feature_store(store_path):
        return None
    with VideoStore(store_path) as store:
        if not len(store):
            return None
        actions = np.asarray(store.column("action"), dtype=object)
        scores = store.column("score")
    if not any(actions):
        return None
    return actions, scores


def per_action_metrics(
    store_path: str | Path, rows: np.ndarray, pred: np.ndarray, true: np.ndarray
) -> dict | None:
    """{"per_action": {action: {rho, r_l2, mae, samples}}, "rho_fisher_z": ...} for predictions of store
    `rows` (aligned with `pred` and `true`, all labelled), or None when the store has no actions. R-l2
    uses each action's own score range over the whole store, as per-action models do."""
    from aqa_cli.evaluate import metrics

    found = store_actions(store_path)
    if found is None:
        return None
    actions, scores = found
    of_rows = actions[np.asarray(rows, dtype=np.int64)]
    per_action = {}
    for action in sorted({str(a) for a in of_rows if a}):
        mask = of_rows == action
        known = scores[(actions == action) & np.isfinite(scores)]
        span = (float(known.min()), float(known.max())) if len(known) else (0.0, 1.0)
        per_action[action] = {**metrics(pred[mask], true[mask], span), "samples": int(mask.sum())}
    if not per_action:
        return None
    return {
        "per_action": per_action,
        "rho_fisher_z": fisher_z_mean([entry["rho"] for entry in per_action.values()]),
    }
