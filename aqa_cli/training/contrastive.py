"""Contrastive (exemplar-based) regression on cached features, for any aggregation (`--contrastive`).

Training pairs every video of a batch with every other one (all from the training split) and fits the
predicted quality difference (`AQAHead.pair_differences`) to the true one, in units of the training
quality range. Evaluation and `aqa score` compare a video with exemplars from a bank the checkpoint
carries: training videos only, chosen here once, by the seed. Always `exemplars` fallback entries from
the whole training split (the only ones under the rule "seed"); `exemplars` per action where every
training video has one (the store's `action` column: AQA-7's action, FineDiving's dive number; the rule
"action"); and `exemplars` per difficulty where every training video has one (the rule "difficulty"
when there are no actions). A query takes the entries of its own action, else of its difficulty, else
the fallback ones: an action unseen in training, or unknown, falls back.
"""

from __future__ import annotations

import numpy as np
import torch

from aqa_cli.evaluation.predict import batch_inputs
from aqa_cli.models.heads import AQAHead
from aqa_cli.stores.feature_store import FeatureStore


def choose_exemplars(
    train_rows: list[int],
    difficulties: np.ndarray,
    count: int,
    seed: int,
    actions: np.ndarray | None = None,
) -> dict:
    """The bank: rows (of the training split only), each entry's group (its difficulty, else NaN) and
    action (else ""; an entry with neither is a fallback), and the rule used. Each group's entries are
    the first `count` of a permutation of the training rows drawn from `seed`."""
    order = np.random.default_rng(seed).permutation(np.asarray(train_rows, dtype=np.int64))
    fallback = min(count, len(order))
    bank = {"rows": list(order[:count]), "groups": [float("nan")] * fallback, "actions": [""] * fallback}
    known = difficulties[order]
    named = np.full(len(order), "", dtype=object) if actions is None else actions[order]
    by_action = len(order) > 0 and bool(np.all(named != ""))
    by_difficulty = len(order) > 0 and bool(np.all(np.isfinite(known) & (known > 0)))
    for value in sorted(set(named.tolist())) if by_action else []:
        chosen = order[named == value][:count]
        bank["rows"] += list(chosen)
        bank["groups"] += [float("nan")] * len(chosen)
        bank["actions"] += [value] * len(chosen)
    for value in sorted(set(known.tolist())) if by_difficulty else []:
        chosen = order[known == value][:count]
        bank["rows"] += list(chosen)
        bank["groups"] += [value] * len(chosen)
        bank["actions"] += [""] * len(chosen)
    bank["rows"] = [int(row) for row in bank["rows"]]
    bank["rule"] = "action" if by_action else "difficulty" if by_difficulty else "seed"
    return bank


def bank_action_names(bank: dict) -> list[str]:
    """The actions the bank has entries of, sorted (empty unless the rule is "action")."""
    return sorted({name for name in bank["actions"] if name})


def bank_tensors(store_path, bank: dict, qualities: np.ndarray) -> tuple[torch.Tensor, ...]:
    """(features (M, K, D) padded, clips (M,), quality (M,), group (M,), action (M,): index into
    `bank_action_names`, -1 for entries of no action) of the bank's rows (view 0)."""
    with FeatureStore(store_path) as store:
        arrays = [store.features(row, 0).astype(np.float32) for row in bank["rows"]]
    longest = max(len(array) for array in arrays)
    features = torch.zeros(len(arrays), longest, arrays[0].shape[-1])
    for i, array in enumerate(arrays):
        features[i, : len(array)] = torch.from_numpy(array)
    clips = torch.tensor([len(array) for array in arrays])
    quality = torch.tensor(qualities[bank["rows"]], dtype=torch.float32)
    index = {name: position for position, name in enumerate(bank_action_names(bank))}
    action = torch.tensor([index.get(name, -1) for name in bank["actions"]], dtype=torch.int64)
    return features, clips, quality, torch.tensor(bank["groups"], dtype=torch.float32), action


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
