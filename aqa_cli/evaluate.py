"""Evaluation: predictions over a split, Spearman rho, R-l2, MAE, the difficulty-only baseline, and a
predictions store with the Weight-Decider's clip weights. Deterministic: fixed windows, no randomness."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from scipy.stats import spearmanr
from torch.utils.data import DataLoader

from aqa_cli.data import StoreClips, WindowConfig
from aqa_cli.errors import AqaError
from aqa_cli.files import atomic_write, writer_lock
from aqa_cli.models import AQAModel, AQAOutput, Normalization
from aqa_cli.runtime import autocast
from aqa_cli.store import VideoStore


@dataclass
class Predictions:
    rows: np.ndarray
    ids: np.ndarray
    true: np.ndarray
    difficulty: np.ndarray
    score: np.ndarray
    quality: np.ndarray
    clip_weights: np.ndarray | None  # (N, K, 128) for the Weight-Decider


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
    normalization: Normalization = model.backbone.normalization
    model.eval()

    def forward(batch: dict) -> AQAOutput:
        video = normalization.apply(batch["video"].to(device, non_blocking=True))
        with autocast(device, precision):
            return model(video, batch["difficulty"].to(device))

    with VideoStore(store_path) as store:
        ids = store.column("id")[rows]
    return collect_predictions(
        loader, forward, ids, dataset.scores[rows], dataset.difficulties[rows], progress
    )


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
    outputs = {"score": [], "quality": [], "weights": [], "rows": []}
    with torch.no_grad():
        for batch in loader:
            out = forward(batch)
            outputs["score"].append(out.score.float().cpu())
            outputs["quality"].append(out.quality.float().cpu())
            outputs["rows"].append(batch["row"])
            if out.clip_weights is not None:
                outputs["weights"].append(out.clip_weights.float().cpu())
            if progress is not None:
                progress(len(batch["row"]))
    clip_weights = None
    if outputs["weights"]:
        most = max(weights.shape[1] for weights in outputs["weights"])
        padded = [torch.nn.functional.pad(w, (0, 0, 0, most - w.shape[1])) for w in outputs["weights"]]
        clip_weights = torch.cat(padded).numpy()
    return Predictions(
        rows=torch.cat(outputs["rows"]).numpy(),
        ids=ids,
        true=true,
        difficulty=difficulty,
        score=torch.cat(outputs["score"]).numpy(),
        quality=torch.cat(outputs["quality"]).numpy(),
        clip_weights=clip_weights,
    )


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


def score_range(store_path) -> tuple[float, float]:
    """The range of all labelled scores in the store (0 .. 104.5 on MTL-AQA), for R-l2."""
    with VideoStore(store_path) as store:
        scores = store.column("score")
    scores = scores[np.isfinite(scores)]
    if not len(scores):
        raise AqaError(f"{store_path} has no scored samples to evaluate on")
    return float(scores.min()), float(scores.max())


def write_predictions(path: Path, predictions: Predictions, attributes: dict) -> None:
    """Per-sample predictions (and WD clip weights) as an HDF5 store, written atomically."""
    image = io.BytesIO()
    with h5py.File(image, "w") as f:
        f.attrs.update(
            {
                key: json.dumps(value) if isinstance(value, dict) else value
                for key, value in attributes.items()
            }
        )
        f.create_dataset("id", data=[str(i) for i in predictions.ids], dtype=h5py.string_dtype())
        for name in ("rows", "true", "difficulty", "score", "quality"):
            f[name] = getattr(predictions, name)
        if predictions.clip_weights is not None:
            f["clip_weights"] = predictions.clip_weights
    atomic_write(path, image.getvalue(), "make that folder writable or evaluate a copy of the checkpoint")


def evaluate_checkpoint(
    run: Path | None,
    checkpoint: Path | None,
    store: Path | None,
    split: str,
    device_name: str,
    batch_size: int,
) -> dict:
    """`aqa eval`: a checkpoint on a split of a store; writes predictions and a scatter plot beside it.

    Heads trained on cached features are evaluated on their feature store (or on `store` when that is a
    feature store); given a video store, they run with their frozen backbone on the videos.
    """
    from aqa_cli.checkpoint import find_checkpoint, load_checkpoint
    from aqa_cli.features import is_feature_store

    if split not in ("train", "val", "test"):
        raise AqaError(f"unknown --split {split!r}; choose train, val or test")
    path = find_checkpoint(run, checkpoint).resolve()
    predictions = path.parent / f"predictions-{split}.h5"  # one writer at a time: a second eval stops
    with writer_lock(predictions.with_suffix(".lock"), predictions, "evaluate a copy of the checkpoint"):
        payload = load_checkpoint(path)
        if "features" in payload and (store is None or is_feature_store(store)):
            from aqa_cli.head_training import predict_heads

            found, store_path, span = predict_heads(payload, store, split, device_name, batch_size)
        else:
            found, store_path, span = _predict_videos(payload, path, store, split, device_name, batch_size)
        result = report_predictions(found, path, int(payload.get("epoch", 0)), store_path, split, span)
    from aqa_cli.store_overlap import evaluation_notices

    result["notices"] = evaluation_notices(payload.get("store"), store_path, split)
    return result


def _predict_videos(
    payload: dict, path: Path, store: Path | None, split: str, device_name: str, batch_size: int
) -> tuple[Predictions, Path, tuple[float, float]]:
    from aqa_cli.checkpoint import trained_model_from
    from aqa_cli.data import split_rows
    from aqa_cli.runtime import resolve_device

    trained = trained_model_from(payload, path)
    store_path = Path(store) if store is not None else Path(trained.store["path"])
    _check_store_matches(store_path, trained.store)
    train_config = trained.payload.get("train_config", {})
    rows = split_rows(store_path, train_config.get("val_fraction", 0.0), train_config.get("seed", 0))[split]
    if not rows:
        raise AqaError(f"{store_path} has no samples in split {split!r}")
    device = resolve_device(device_name)
    trained.model.to(device)
    found = predict(trained.model, store_path, rows, trained.window, device, "fp32", batch_size)
    return found, store_path, score_range(store_path)


def report_predictions(
    found: Predictions, path: Path, epoch: int, store_path: Path, split: str, span: tuple[float, float]
) -> dict:
    """Metrics of a checkpoint's predictions on a split, next to the difficulty-only baseline; writes the
    predictions and a scatter plot beside the checkpoint."""
    from aqa_cli.plots import plot_scatter

    labelled = np.isfinite(found.true)
    if not labelled.any():
        raise AqaError(f"split {split!r} of {store_path} has no scores to compare with")
    result = metrics(found.score[labelled], found.true[labelled], span)
    result.update(
        {
            "checkpoint": str(path),
            "epoch": epoch,
            "store": str(store_path),
            "split": split,
            "samples": int(labelled.sum()),
            "difficulty_baseline_rho": difficulty_baseline(found.difficulty[labelled], found.true[labelled]),
        }
    )
    from aqa_cli.per_action import per_action_metrics

    by_action = per_action_metrics(
        store_path, found.ids[labelled], found.score[labelled], found.true[labelled]
    )
    if by_action:  # a store with an `action` column: rho per action and their Fisher-z average
        result.update(by_action)
    stem = path.parent / f"predictions-{split}"
    title = f"{split}: rho {result['rho']:.4f}, R-l2 {result['r_l2']:.3f} ({result['samples']} videos)"
    write_predictions(
        stem.with_suffix(".h5"),
        found,
        {"checkpoint": str(path), "store": str(store_path), "split": split, "metrics": result},
    )
    scatter = plot_scatter(
        found.true[labelled], found.score[labelled], title, path.parent / f"scatter-{split}.png"
    )
    result["predictions"] = str(stem.with_suffix(".h5"))
    result["plot"] = str(scatter) if scatter else None
    return result


def _check_store_matches(store_path: Path, trained_on: dict) -> None:
    with VideoStore(store_path) as store:
        config = store.config
    wanted = (trained_on["width"], trained_on["height"])
    if (config.width, config.height) != wanted or config.frames < trained_on["frames"] - 5:
        raise AqaError(
            f"{store_path} holds {config.frames} frames of {config.width}x{config.height}, but the model was "
            f"trained on {trained_on['frames']} frames of {wanted[0]}x{wanted[1]}; preprocess it the same way"
        )
