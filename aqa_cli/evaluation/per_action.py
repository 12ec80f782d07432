"""Per-action evaluation, as the AQA-7 literature reports it: Spearman rho (and R-l2, MAE) per action,
and their average through Fisher's z (rho -> arctanh, mean, tanh back), which averages correlations
without the bias of averaging them directly.

A store says which action each sample is in its `action` column (AQA-7's six actions; FineDiving's dive
numbers); stores without it, or where it is empty, get no per-action report. Heads on features extracted
from such a store get it through the video store the features record.
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


def store_actions(store_path: str | Path) -> dict[str, tuple[str, float]] | None:
    """id -> (action, score) of a video store's samples, or None when no sample has an action. For a
    feature store, those of the video store it was extracted from (where that store is still there)."""
    import json

    import h5py

    from aqa_cli.stores.feature_store import is_feature_store
    from aqa_cli.stores.video_store import VideoStore
    from aqa_cli.util.errors import AqaError

    if is_feature_store(store_path):
        with h5py.File(store_path, "r") as f:
            try:
                store_path = json.loads(f.attrs.get("video_store", "null") or "null")["path"]
            except (TypeError, KeyError, ValueError):
                return None  # imported features: no video store behind them
        if not Path(store_path).is_file():
            return None
    try:
        with VideoStore(store_path) as store:
            if not len(store):
                return None
            ids, actions, scores = store.column("id"), store.column("action"), store.column("score")
    except AqaError:
        return None
    if not any(actions):
        return None
    return {str(i): (str(a), float(s)) for i, a, s in zip(ids, actions, scores, strict=True)}


def per_action_metrics(
    store_path: str | Path, ids: np.ndarray, pred: np.ndarray, true: np.ndarray
) -> dict | None:
    """{"per_action": {action: {rho, r_l2, mae, samples}}, "rho_fisher_z": ...} for predictions of the
    samples `ids` (aligned with `pred` and `true`, all labelled), or None when the store has no actions.
    R-l2 uses each action's own score range over the whole store, as per-action models do."""
    from aqa_cli.evaluation.metrics import metrics

    found = store_actions(store_path)
    if found is None:
        return None
    of_ids = np.array([found.get(str(i), ("", math.nan))[0] for i in ids], dtype=object)
    per_action = {}
    for action in sorted({a for a in of_ids if a}):
        mask = of_ids == action
        known = np.array([score for a, score in found.values() if a == action and math.isfinite(score)])
        span = (float(known.min()), float(known.max())) if len(known) else (0.0, 1.0)
        per_action[action] = {**metrics(pred[mask], true[mask], span), "samples": int(mask.sum())}
    if not per_action:
        return None
    return {
        "per_action": per_action,
        "rho_fisher_z": fisher_z_mean([entry["rho"] for entry in per_action.values()]),
    }
