"""`aqa train --features F`: train only the heads (clip FC layers, WD or avg, regressor) on cached features.

The epoch loop, loss, optimizer, validation-based selection, checkpoints, metrics and resumption are
`aqa_cli.train`'s; only the batches differ: padded (N, clips, dim) features with a clip mask, one view per
sample and epoch (chosen by (seed, epoch, row), so a resumed run repeats it), view 0 for evaluation.

A head checkpoint records the feature store's backbone (architecture, normalization, weights file and
its sha256, or the seed of a random initialisation), the window and the video store's preprocessing,
so `aqa score` rebuilds the full model: frozen backbone + trained heads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from aqa_cli.checkpoint import RUNS_DIR, TrainedModel, load_state
from aqa_cli.config import TrainConfig
from aqa_cli.data import EpochRows, EpochTagged, SeededShuffle, WindowConfig, split_by_column
from aqa_cli.errors import AqaError
from aqa_cli.evaluate import Predictions, collect_predictions
from aqa_cli.features import FeatureStore, rebuild_backbone
from aqa_cli.models import AQAHead, AQAModel, AQAOutput, ModelConfig, build_head
from aqa_cli.runtime import Distributed, resolve_device
from aqa_cli.train import (
    EpochLoop,
    TrainResult,
    check_optimisation,
    open_run,
    run_epochs,
    start_regressor_at_mean_quality,
)


class FeatureClips(EpochRows):
    """Rows of a feature store as dicts: `features` float32 (max clips, dim) of one view, zero-padded,
    `clips` (how many are real), `score` (the target column), `difficulty`, `row`."""

    def __init__(self, store_path, rows: list[int], target: str, train: bool, seed: int = 0):
        super().__init__(rows, train, seed)
        self.store_path = store_path
        with FeatureStore(store_path) as store:
            self.scores = store.scores(target).astype(np.float32)
            self.difficulties = store.column("difficulty").astype(np.float32)
            self.clips = store.column("clips")
            self.views = store.view_count
        self._store: FeatureStore | None = None

    def sample(self, row: int, rng: np.random.Generator | None) -> dict:
        if self._store is None:
            self._store = FeatureStore(self.store_path)
        view = int(rng.integers(self.views)) if rng is not None else 0
        return {
            "features": torch.from_numpy(self._store.padded_features(row, view)),
            "clips": int(self.clips[row]),
            "score": torch.tensor(self.scores[row]),
            "difficulty": torch.tensor(self.difficulties[row]),
            "row": row,
        }


def run_heads(head: AQAHead, batch: dict, device: torch.device) -> AQAOutput:
    """The heads on a padded batch, cut to its longest video, with the mask of real clips."""
    longest = int(batch["clips"].max())
    features = batch["features"][:, :longest].to(device)
    mask = torch.arange(longest, device=device)[None] < batch["clips"].to(device)[:, None]
    return head(features, batch["difficulty"].to(device), mask)


def labelled_splits(store: FeatureStore, target: str, val_fraction: float, seed: int) -> dict[str, list[int]]:
    """Rows per split (`val_fraction` of train held out as in end-to-end training), labelled ones only."""
    scores = store.scores(target)
    rows = split_by_column(store.column("split"), val_fraction, seed)
    return {split: [row for row in found if np.isfinite(scores[row])] for split, found in rows.items()}


def target_range(store: FeatureStore, target: str) -> tuple[float, float]:
    scores = store.scores(target)
    scores = scores[np.isfinite(scores)]
    if not len(scores):
        raise AqaError(f"{store.path} has no values in score column {target!r}")
    return float(scores.min()), float(scores.max())


def head_model_config(config: TrainConfig, store: FeatureStore) -> ModelConfig:
    """The heads' config; the backbone fields describe the extracting backbone (zero/empty for imported
    features, which have none)."""
    backbone = store.backbone or {}
    return ModelConfig(
        depth=backbone.get("depth", 0),
        conv=backbone.get("conv", ""),
        family=backbone.get("family"),
        clip_len=store.attributes.get("clip_len", 0),
        agg=config.agg,
        wd_dropout=config.wd_dropout,
        use_difficulty=config.use_difficulty,
        normalization=backbone.get("normalization"),
        feature_dim=store.feature_dim,
    )


def default_features_run_dir(config: TrainConfig, target: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = Path(config.features).name.removesuffix(".h5").removesuffix(".features")
    return RUNS_DIR / f"features-{name}-{target}-{config.agg}-{stamp}"


def train_heads(config: TrainConfig, resume: bool = False, console=None) -> TrainResult:
    """Train the heads on the feature store `config.features` (see the module docstring)."""
    check_optimisation(config)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise AqaError("head training on --features runs in one process: start it without torchrun")
    device = resolve_device(config.device)
    with FeatureStore(config.features) as store:
        target = config.target or store.attributes["default_target"]
        rows = labelled_splits(store, target, config.val_fraction, config.seed)
        score_span = target_range(store, target)
        model_config = head_model_config(config, store)
        attributes = store.attributes
        payload_base = {
            "features": {**store.fingerprint(), "target": target},
            "backbone": store.backbone,
            "window": attributes.get("window"),
            "store": attributes.get("video_store"),
        }
    if not rows["train"]:
        raise AqaError(
            f"{config.features} has no labelled training samples for target {target!r}; check its split column"
        )
    run_dir, state = open_run(config, resume, default_features_run_dir(config, target))
    torch.manual_seed(config.seed)
    if state is not None:
        model_config = ModelConfig.from_dict(state["model_config"])
    head = build_head(model_config)
    train_set = FeatureClips(config.features, rows["train"], target, train=True, seed=config.seed)
    if state is None:
        start_regressor_at_mean_quality(
            head, train_set.scores[train_set.rows], train_set.difficulties[train_set.rows]
        )
    head.to(device)
    sampler = EpochTagged(SeededShuffle(train_set, config.seed))

    def forward(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return run_heads(head, batch, device).score, batch["score"].to(device)

    def evaluate(split_rows: list[int]) -> Predictions:
        return predict_features(head, config.features, split_rows, target, device, config.batch_size)

    with _one_thread_on_cpu(device):
        return run_epochs(
            EpochLoop(
                config=config,
                run_dir=run_dir,
                model=head,
                trained=head,
                loader=DataLoader(train_set, batch_size=config.batch_size, sampler=sampler),
                sampler=sampler,
                forward=forward,
                evaluate=evaluate,
                rows=rows,
                score_span=score_span,
                optimizer=torch.optim.Adam([{"params": head.parameters(), "lr": config.lr, "name": "head"}]),
                scaler=torch.amp.GradScaler(device.type, enabled=False),
                distributed=Distributed(),
                device=device,
                payload_base={"model_config": model_config.to_dict(), **payload_base},
                state=state,
                console=console,
            )
        )


@contextmanager
def _one_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """The heads' matrices are small: on a CPU, more threads only add synchronisation (and are several
    times slower whenever other processes share the cores)."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def predict_features(
    head: AQAHead, store_path, rows: list[int], target: str, device: torch.device, batch_size: int = 32
) -> Predictions:
    """The heads' scores for `rows` of a feature store (view 0: the evaluation window)."""
    dataset = FeatureClips(store_path, rows, target, train=False)
    head.eval()
    with FeatureStore(store_path) as store:
        ids = store.column("id")[rows]
    return collect_predictions(
        DataLoader(dataset, batch_size=batch_size),
        lambda batch: run_heads(head, batch, device),
        ids,
        dataset.scores[rows],
        dataset.difficulties[rows],
    )


def load_head(payload: dict, path: Path) -> AQAHead:
    head = build_head(ModelConfig.from_dict(payload["model_config"]))
    load_state(head, payload["model"], path)
    return head


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
        rows = labelled_splits(
            opened, features["target"], train_config.get("val_fraction", 0.0), train_config.get("seed", 0)
        )[split]
        span = target_range(opened, features["target"])
    if not rows:
        raise AqaError(f"{store_path} has no labelled samples in split {split!r}")
    device = resolve_device(device_name)
    head = load_head(payload, store_path).to(device)
    return predict_features(head, store_path, rows, features["target"], device, batch_size), store_path, span


def model_from_head_checkpoint(payload: dict, path: Path) -> TrainedModel:
    """The full model for videos: the frozen backbone rebuilt from its record, then the trained heads."""
    if payload.get("backbone") is None:
        raise AqaError(
            f"{path} holds heads trained on imported features ({payload['features']['path']}), with no "
            f"backbone to turn videos into features; evaluate it with `aqa eval --checkpoint {path}`"
        )
    config = ModelConfig.from_dict(payload["model_config"])
    model = AQAModel(
        rebuild_backbone(payload["backbone"], path), load_head(payload, path), config.clip_len, config
    )
    return TrainedModel(model.eval(), WindowConfig(**payload["window"]), payload["store"], path, payload)
