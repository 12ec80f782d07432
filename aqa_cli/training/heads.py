"""`aqa train --features F`: train only the heads (clip FC layers, WD or avg, regressor) on cached features.

The epoch loop, loss, optimizer, validation-based selection, checkpoints, metrics and resumption are
`training.loop`'s; only the batches differ: padded (N, clips, dim) features with a clip mask, one view
per sample and epoch (chosen by (seed, epoch, row), so a resumed run repeats it), view 0 for evaluation.

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

import torch
from torch.utils.data import DataLoader

from aqa_cli.checkpoints.io import RUNS_DIR
from aqa_cli.data.datasets import FeatureClips
from aqa_cli.data.samplers import EpochTagged, SeededShuffle
from aqa_cli.data.splits import labelled_splits
from aqa_cli.evaluation.metrics import score_span
from aqa_cli.evaluation.predict import Predictions, predict_features, run_heads
from aqa_cli.models.model import ModelConfig, build_head
from aqa_cli.stores.feature_store import FeatureStore
from aqa_cli.training.config import TrainConfig
from aqa_cli.training.loop import (
    TrainingProgress,
    TrainingRun,
    TrainResult,
    check_optimisation,
    open_run,
    run_epochs,
    start_regressor_at_mean_quality,
)
from aqa_cli.util.errors import AqaError
from aqa_cli.util.runtime import Distributed, resolve_device


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


def train_heads(
    config: TrainConfig, resume: bool = False, progress: TrainingProgress | None = None
) -> TrainResult:
    """Train the heads on the feature store `config.features` (see the module docstring)."""
    check_optimisation(config)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise AqaError("head training on --features runs in one process: start it without torchrun")
    device = resolve_device(config.device)
    with FeatureStore(config.features) as store:
        target = config.target or store.attributes["default_target"]
        rows = labelled_splits(store, target, config.val_fraction, config.seed)
        span = score_span(store.scores(target), store.path, target)
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
            TrainingRun(
                config=config,
                run_dir=run_dir,
                model=head,
                trained=head,
                loader=DataLoader(train_set, batch_size=config.batch_size, sampler=sampler),
                sampler=sampler,
                forward=forward,
                evaluate=evaluate,
                rows=rows,
                score_span=span,
                optimizer=torch.optim.Adam([{"params": head.parameters(), "lr": config.lr, "name": "head"}]),
                scaler=torch.amp.GradScaler(device.type, enabled=False),
                distributed=Distributed(),
                device=device,
                payload_base={"model_config": model_config.to_dict(), **payload_base},
                state=state,
                progress=progress,
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
