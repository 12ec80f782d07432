"""Contrastive (exemplar-based) regression on cached features, for any aggregation (`--contrastive`).

Training pairs every video of a batch with every other one (all from the training split) and fits the
predicted quality difference (`AQAHead.pair_differences`) to the true one, in units of the training
quality range. Evaluation and `aqa score` compare a video with exemplars from a bank the checkpoint
carries: training videos only, chosen here once, by the seed: `exemplars` per difficulty where the
training split has difficulties (the rule "difficulty"), and `exemplars` fallback entries from the whole
training split (the only ones under the rule "seed", for stores without difficulties). Feature stores
carry no action or dive-number column, so the difficulty is the finest grouping available.
"""

from __future__ import annotations

import numpy as np
import torch

from aqa_cli.evaluation.predict import batch_inputs
from aqa_cli.models.heads import AQAHead
from aqa_cli.stores.feature_store import FeatureStore


def choose_exemplars(train_rows: list[int], difficulties: np.ndarray, count: int, seed: int) -> dict:
    """The bank: rows (of the training split only) and their groups (difficulty, NaN = fallback), and the
    rule used. The order is a permutation of the training rows drawn from `seed`."""
    order = np.random.default_rng(seed).permutation(np.asarray(train_rows, dtype=np.int64))
    rows, groups = list(order[:count]), [float("nan")] * min(count, len(order))
    known = difficulties[order]
    rule = "difficulty" if len(order) and bool(np.all(np.isfinite(known) & (known > 0))) else "seed"
    if rule == "difficulty":
        for value in sorted(set(known.tolist())):
            chosen = order[known == value][:count]
            rows += list(chosen)
            groups += [value] * len(chosen)
    return {"rows": [int(row) for row in rows], "groups": groups, "rule": rule}


def bank_tensors(store_path, bank: dict, qualities: np.ndarray) -> tuple[torch.Tensor, ...]:
    """(features (M, K, D) padded, clips (M,), quality (M,), group (M,)) of the bank's rows (view 0)."""
    with FeatureStore(store_path) as store:
        arrays = [store.features(row, 0).astype(np.float32) for row in bank["rows"]]
    longest = max(len(array) for array in arrays)
    features = torch.zeros(len(arrays), longest, arrays[0].shape[-1])
    for i, array in enumerate(arrays):
        features[i, : len(array)] = torch.from_numpy(array)
    clips = torch.tensor([len(array) for array in arrays])
    quality = torch.tensor(qualities[bank["rows"]], dtype=torch.float32)
    return features, clips, quality, torch.tensor(bank["groups"], dtype=torch.float32)


def pair_inputs(head: AQAHead, batch: dict, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(predicted, true) quality differences of every ordered pair of distinct videos in the batch, in
    units of the training quality range, and the query outputs (for the triplet term; None but for gdlt)."""
    features, mask = batch_inputs(batch, device)
    embed, pooled = head.direct(features, mask)[2:]
    quality = batch["score"].to(device).float()
    if head.use_difficulty:
        difficulty = batch["difficulty"].to(device).float()
        known = torch.isfinite(difficulty) & (difficulty > 0)
        quality = torch.where(known, quality / torch.where(known, difficulty, 1.0), quality)
    normalized = head.normalized_quality(quality)
    distinct = ~torch.eye(len(quality), dtype=torch.bool, device=device) | (len(quality) == 1)
    predicted = head.pair_differences(pooled, pooled)[distinct]
    return predicted, (normalized[:, None] - normalized[None, :])[distinct], embed
