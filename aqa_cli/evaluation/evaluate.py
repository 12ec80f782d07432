"""`aqa eval`: a checkpoint's metrics on a split of a store, next to the difficulty-only baseline, with a
predictions store (and the Weight-Decider's clip weights) and a scatter plot written beside it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import h5py
import numpy as np
import torch

from aqa_cli.checkpoints.io import find_checkpoint, load_checkpoint
from aqa_cli.checkpoints.restore import load_head, trained_model_from
from aqa_cli.data.splits import SplitPlan, labelled_splits, split_rows
from aqa_cli.evaluation.metrics import difficulty_baseline, metrics, score_span
from aqa_cli.evaluation.per_action import per_action_metrics
from aqa_cli.evaluation.plots import plot_scatter
from aqa_cli.evaluation.predict import Predictions, predict, predict_features
from aqa_cli.stores.feature_store import FeatureStore, is_feature_store
from aqa_cli.stores.overlap import evaluation_notices
from aqa_cli.stores.video_store import VideoStore
from aqa_cli.util.errors import AqaError
from aqa_cli.util.runtime import resolve_device, resolve_precision
from aqa_cli.util.safe_output import atomic_write, writer_lock


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
    if split not in ("train", "val", "test"):
        raise AqaError(f"unknown --split {split!r}; choose train, val or test")
    path = find_checkpoint(run, checkpoint).resolve()
    predictions = path.parent / f"predictions-{split}.h5"  # one writer at a time: a second eval stops
    with writer_lock(predictions.with_suffix(".lock"), predictions, "evaluate a copy of the checkpoint"):
        payload = load_checkpoint(path)
        if "features" in payload and (store is None or is_feature_store(store)):
            found, store_path, span = predict_heads(payload, store, split, device_name, batch_size)
        else:
            found, store_path, span = _predict_videos(payload, path, store, split, device_name, batch_size)
        result = report_predictions(found, path, int(payload.get("epoch", 0)), store_path, split, span)
    result["notices"] = evaluation_notices(payload.get("store"), store_path, split)
    return result


def _predict_videos(
    payload: dict, path: Path, store: Path | None, split: str, device_name: str, batch_size: int
) -> tuple[Predictions, Path, tuple[float, float]]:
    trained = trained_model_from(payload, path)
    store_path = Path(store) if store is not None else Path(trained.store["path"])
    _check_store_matches(store_path, trained.store)
    train_config = trained.payload.get("train_config", {})
    rows = split_rows(store_path, SplitPlan.of(train_config))[split]
    if not rows:
        raise AqaError(f"{store_path} has no samples in split {split!r}")
    device = resolve_device(device_name)
    trained.model.to(device)
    precision = training_precision(train_config, device)
    found = predict(trained.model, store_path, rows, trained.window, device, precision, batch_size)
    with VideoStore(store_path) as opened:
        span = score_span(opened.column("score"), store_path)
    return found, store_path, span


def training_precision(train_config: dict, device: torch.device) -> str:
    """The precision the run trained and validated in, so that `aqa eval --split val` gives the val rho of
    its metrics.csv; fp32 for a run that recorded none, or `auto` (before runs recorded what auto chose)."""
    recorded = train_config.get("precision", "fp32")
    return resolve_precision("fp32" if recorded == "auto" else recorded, device)


def predict_heads(
    payload: dict, store: Path | None, split: str, device_name: str, batch_size: int
) -> tuple[Predictions, Path, tuple[float, float]]:
    """`aqa eval` of a head checkpoint on a split of its feature store (or of `store`, another one)."""
    features = payload["features"]
    store_path = Path(store) if store is not None else Path(features["path"])
    train_config = payload.get("train_config", {})
    with FeatureStore(store_path) as opened:
        if opened.feature_dim != features["feature_dim"]:
            raise AqaError(
                f"{store_path} holds features of width {opened.feature_dim}, but the heads were trained on "
                f"{features['feature_dim']}; evaluate on features from the same backbone"
            )
        rows = labelled_splits(opened, features["target"], SplitPlan.of(train_config))[split]
        span = score_span(opened.scores(features["target"]), store_path, features["target"])
    if not rows:
        raise AqaError(f"{store_path} has no labelled samples in split {split!r}")
    device = resolve_device(device_name)
    head = load_head(payload, store_path).to(device)
    precision = training_precision(train_config, device)
    found = predict_features(head, store_path, rows, features["target"], device, batch_size, precision)
    return found, store_path, span


def report_predictions(
    found: Predictions, path: Path, epoch: int, store_path: Path, split: str, span: tuple[float, float]
) -> dict:
    """Metrics of a checkpoint's predictions on a split, next to the difficulty-only baseline; writes the
    predictions and a scatter plot beside the checkpoint."""
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
            "precision": found.precision,
            "difficulty_baseline_rho": difficulty_baseline(found.difficulty[labelled], found.true[labelled]),
        }
    )
    if found.spread is not None:  # an ensemble: how far its members' scores lie apart
        spread = found.spread[labelled]
        result["member_spread"] = {"mean": float(spread.mean()), "max": float(spread.max())}
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
