"""Predictions over the rows of a store, deterministic: fixed windows (or view 0 of cached features), no
randomness, no gradients."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from aqa_cli.data.datasets import FeatureClips, FeatureTensors, StoreClips
from aqa_cli.data.windows import WindowConfig
from aqa_cli.models.heads import AQAHead, AQAOutput
from aqa_cli.models.model import AQAModel
from aqa_cli.models.normalization import model_input
from aqa_cli.stores.feature_store import FeatureStore
from aqa_cli.stores.video_store import VideoStore
from aqa_cli.util.runtime import autocast


@dataclass
class Predictions:
    rows: np.ndarray
    ids: np.ndarray
    true: np.ndarray
    difficulty: np.ndarray
    score: np.ndarray
    quality: np.ndarray
    clip_weights: np.ndarray | None  # (N, K, 128) for the Weight-Decider, (N, K) for attn and gdlt
    precision: str = "fp32"  # the autocast the model ran under
    spread: np.ndarray | None = None  # an ensemble's: std (ddof 0) of its members' scores per video


def predict(
    model: AQAModel,
    store_path,
    rows: list[int],
    window: WindowConfig,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 4,
    workers: int = 0,
    progress=None,
) -> Predictions:
    """The model's scores for `rows` of a store, with evaluation windows (last frames, centre crop)."""
    dataset = StoreClips(store_path, rows, window, train=False)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda")
    model.eval()

    def forward(batch: dict) -> AQAOutput:
        video = model_input(batch["video"], model.backbone.normalization, device)
        with autocast(device, precision):
            return model(video, batch["difficulty"].to(device), actions=batch["action"])

    with VideoStore(store_path) as store:
        ids = store.column("id")[rows]
    found = collect_predictions(
        loader, forward, ids, dataset.scores[rows], dataset.difficulties[rows], progress
    )
    found.precision = precision
    return found


def collect_predictions(
    loader: DataLoader,
    forward: Callable[[dict], AQAOutput],
    ids: np.ndarray,
    true: np.ndarray,
    difficulty: np.ndarray,
    progress=None,
) -> Predictions:
    """`forward` over every batch of an unshuffled loader (whose items carry `row`), without gradients.
    Clip weights of batches with fewer clips are zero-padded to the most clips."""
    outputs = {"score": [], "quality": [], "weights": [], "rows": [], "spread": []}
    with torch.no_grad():
        for batch in loader:
            out = forward(batch)
            outputs["score"].append(out.score.float().cpu())
            outputs["quality"].append(out.quality.float().cpu())
            outputs["rows"].append(batch["row"])
            if out.clip_weights is not None:
                outputs["weights"].append(out.clip_weights.float().cpu())
            if out.spread is not None:
                outputs["spread"].append(out.spread.float().cpu())
            if progress is not None:
                progress(len(batch["row"]))
    clip_weights = None
    if outputs["weights"]:
        most = max(weights.shape[1] for weights in outputs["weights"])
        padded = [_pad_clips(w, most) for w in outputs["weights"]]
        clip_weights = torch.cat(padded).numpy()
    return Predictions(
        rows=torch.cat(outputs["rows"]).numpy(),
        ids=ids,
        true=true,
        difficulty=difficulty,
        score=torch.cat(outputs["score"]).numpy(),
        quality=torch.cat(outputs["quality"]).numpy(),
        clip_weights=clip_weights,
        spread=torch.cat(outputs["spread"]).numpy() if outputs["spread"] else None,
    )


def _pad_clips(weights: torch.Tensor, clips: int) -> torch.Tensor:
    """Clip weights (N, K[, C]) zero-padded to `clips` clips."""
    missing = clips - weights.shape[1]
    return torch.nn.functional.pad(weights, (0, missing) if weights.dim() == 2 else (0, 0, 0, missing))


def predict_tensors(
    head: AQAHead, data: FeatureTensors, rows: list[int], ids: np.ndarray, precision: str = "fp32"
) -> Predictions:
    """The heads' scores for `rows` of an in-memory feature store: one batched forward pass (view 0)."""
    head.eval()
    torch.empty((), dtype=torch.int64).random_()  # as a DataLoader does: the global RNG moves on alike
    batch = data.evaluation_batch(rows)
    found = collect_predictions(
        [batch],
        lambda batch: run_heads(head, batch, data.device, precision),
        ids,
        data.scores[rows],
        data.difficulties[rows],
    )
    found.precision = precision
    return found


def run_heads(head: AQAHead, batch: dict, device: torch.device, precision: str = "fp32") -> AQAOutput:
    """The heads on a padded batch, cut to its longest video, with the mask of real clips (and its
    samples' actions, which a contrastive head matches exemplars by), under `precision`'s autocast."""
    features, mask = batch_inputs(batch, device)
    with autocast(device, precision):
        return head(features, batch["difficulty"].to(device), mask, batch["action"])


def batch_inputs(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch's features cut to its longest video, and the mask of real clips, on `device`."""
    longest = int(batch["clips"].max())
    features = batch["features"][:, :longest].to(device)
    return features, torch.arange(longest, device=device)[None] < batch["clips"].to(device)[:, None]


def predict_features(
    head: AQAHead,
    store_path,
    rows: list[int],
    target: str,
    device: torch.device,
    batch_size: int = 32,
    precision: str = "fp32",
) -> Predictions:
    """The heads' scores for `rows` of a feature store (view 0: the evaluation window)."""
    dataset = FeatureClips(store_path, rows, target, train=False)
    head.eval()
    with FeatureStore(store_path) as store:
        ids = store.column("id")[rows]
    found = collect_predictions(
        DataLoader(dataset, batch_size=batch_size),
        lambda batch: run_heads(head, batch, device, precision),
        ids,
        dataset.scores[rows],
        dataset.difficulties[rows],
    )
    found.precision = precision
    return found
