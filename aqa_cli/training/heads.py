"""`aqa train --features F`: train only the heads (clip FC layers, WD or avg, regressor) on cached features.

The epoch loop, loss, optimizer, validation-based selection, checkpoints, metrics and resumption are
`training.loop`'s; only the batches differ: padded (N, clips, dim) features with a clip mask, one view
per sample and epoch (chosen by (seed, epoch, row), so a resumed run repeats it), view 0 for evaluation.

A head checkpoint records the feature store's backbone (architecture, normalization, weights file and
its sha256, or the seed of a random initialisation), the window and the video store's preprocessing,
so `aqa score` rebuilds the full model: frozen backbone + trained heads.

A feature store that fits in memory (`data.datasets.MEMORY_LIMIT`, unless `--stream`) is read once into
tensors on the training device and batched by index, with the same seeded order and per-sample draws as
the streaming path (so both give the same run up to float summation order); validation is then one
batched forward pass. The long heads (attn, gdlt) standardize every feature channel with the training
clips' mean and std (view 0, real clips), stored in the head.

Precision: `auto` is fp32 here; a named one (`--precision bf16`) runs the heads under autocast, the losses
in fp32, and validation (and `aqa eval`, which reads it from the run's config) in the same precision.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from aqa_cli.checkpoints.io import RUNS_DIR
from aqa_cli.data.datasets import FeatureBatches, FeatureClips, FeatureTensors, fits_in_memory
from aqa_cli.data.samplers import EpochTagged, SeededShuffle
from aqa_cli.data.splits import SplitPlan, labelled_splits
from aqa_cli.evaluation.metrics import score_span
from aqa_cli.evaluation.predict import Predictions, predict_features, predict_tensors, run_heads
from aqa_cli.models.long_heads import gdlt_hardest_triplet_loss, gdlt_triplet_loss
from aqa_cli.models.model import ModelConfig, build_head
from aqa_cli.stores.feature_store import ACTION, FeatureStore
from aqa_cli.training.config import TrainConfig, head_options, resolve_head_defaults
from aqa_cli.training.contrastive import bank_action_names, bank_tensors, choose_exemplars, pair_inputs
from aqa_cli.training.loop import (
    TrainingProgress,
    TrainingRun,
    TrainResult,
    build_optimizer,
    build_scheduler,
    check_optimisation,
    loss_inputs,
    open_run,
    run_epochs,
    start_regressor_at_mean_quality,
    training_range,
)
from aqa_cli.util.errors import AqaError
from aqa_cli.util.runtime import Distributed, autocast, grad_scaler, resolve_device, resolve_precision

TRIPLET_LOSSES = {"hardest": gdlt_hardest_triplet_loss, "rolled": gdlt_triplet_loss}


def head_model_config(config: TrainConfig, store: FeatureStore, bank: dict | None = None) -> ModelConfig:
    """The heads' config; the backbone fields describe the extracting backbone (zero/empty for imported
    features, which have none); with a contrastive bank, its settings, shape and the exemplars' ids."""
    backbone = store.backbone or {}
    contrastive = None
    if bank is not None:
        clips = store.column("clips")
        contrastive = {
            "exemplars": config.exemplars,
            "rule": bank["rule"],
            "seed": config.seed,
            "bank": [len(bank["rows"]), int(max(clips[bank["rows"]])), store.feature_dim],
            "ids": [str(sample) for sample in store.column("id")[bank["rows"]]],
        }
        if bank["rule"] == "action":  # the bank's groups: each entry's action is the buffer bank_action
            contrastive["actions"] = bank_action_names(bank)
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
        head_options=head_options(config),
        contrastive=contrastive,
    )


def default_features_run_dir(config: TrainConfig, target: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = Path(config.features).name.removesuffix(".h5").removesuffix(".features")
    return RUNS_DIR / f"features-{name}-{target}-{config.agg}-{stamp}"


def extraction_record(attributes: dict) -> dict | None:
    """How a feature store extracted from raw video with a recipe made its features (what `aqa score`
    repeats on a new video); None for other stores."""
    if attributes.get("recipe") is None:
        return None
    record = {
        key: attributes[key] for key in ("recipe", "recipe_weights", "dtype", "batch_size", "precision")
    }
    return {**record, "resize": attributes.get("resize", "exact")}


def train_heads(
    config: TrainConfig, resume: bool = False, progress: TrainingProgress | None = None
) -> TrainResult:
    """Train the heads on the feature store `config.features` (see the module docstring)."""
    config = resolve_head_defaults(with_target(config))
    check_optimisation(config)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise AqaError("head training on --features runs in one process: start it without torchrun")
    device = resolve_device(config.device)
    # auto is fp32 here: whether bf16 costs the heads rho is measured per recipe (README), not assumed.
    precision = "fp32" if config.precision == "auto" else resolve_precision(config.precision, device)
    config = dataclasses.replace(config, precision=precision)  # recorded as run
    with FeatureStore(config.features) as store:
        target = config.target
        rows = labelled_splits(store, target, SplitPlan.of(config))
        span = score_span(store.scores(target), store.path, target)
        bank = None
        if config.contrastive:
            bank = choose_exemplars(
                rows["train"],
                store.column("difficulty"),
                config.exemplars,
                config.seed,
                store.column(ACTION),
            )
        model_config = head_model_config(config, store, bank)
        attributes = store.attributes
        ids = store.column("id")
        payload_base = {
            "features": {**store.fingerprint(), "target": target},
            "backbone": store.backbone,
            "window": attributes.get("window"),
            "store": attributes.get("video_store"),
            "extraction": extraction_record(attributes),
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
    train_set = FeatureClips(
        config.features, rows["train"], target, train=True, seed=config.seed, clip_crop=config.clip_crop
    )
    train_scores = train_set.scores[train_set.rows]
    train_difficulties = train_set.difficulties[train_set.rows]
    in_memory = not config.stream and fits_in_memory(config.features)
    data = FeatureTensors(config.features, target, device) if in_memory else None
    if state is None:
        start_regressor_at_mean_quality(head, train_scores, train_difficulties)
        if head.is_long:
            if head.standardize:
                head.set_standardization(*clip_statistics(config.features, rows["train"], data))
            if config.label_scale > 0:  # a fixed maximum instead of the training range
                head.set_quality_range(0.0, config.label_scale)
        if bank is not None:
            qualities = train_set.scores.astype(np.float64)
            if head.use_difficulty:
                known = np.isfinite(train_set.difficulties) & (train_set.difficulties > 0)
                qualities = np.where(known, qualities / np.where(known, train_set.difficulties, 1), qualities)
            if not head.is_long:
                head.set_quality_range(
                    *training_range(train_scores, train_difficulties, head.use_difficulty)["quality"]
                )
            head.set_exemplars(*bank_tensors(config.features, bank, qualities))
    head.to(device)
    sampler = EpochTagged(SeededShuffle(train_set, config.seed))

    triplet = TRIPLET_LOSSES[config.triplet_mining]

    def forward(batch: dict) -> tuple[torch.Tensor, ...]:
        if head.contrastive:
            with autocast(device, precision):
                predicted, true, embed = pair_inputs(head, batch, device)
        else:
            out = run_heads(head, batch, device, precision)
            predicted, true = loss_inputs(head, out, batch["score"].to(device), batch["difficulty"])
            embed = out.embed
        predicted = predicted.float()  # the losses in fp32 whatever the autocast
        if config.triplet > 0 and embed is not None:
            return predicted, true, config.triplet * triplet(embed.float(), config.triplet_margin)
        return predicted, true

    if data is not None:
        loader = FeatureBatches(
            data, rows["train"], sampler, config.batch_size, config.seed, config.clip_crop
        )

        def evaluate(split_rows: list[int]) -> Predictions:
            return predict_tensors(head, data, split_rows, ids[split_rows], precision)

    else:
        loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler)

        def evaluate(split_rows: list[int]) -> Predictions:
            return predict_features(
                head, config.features, split_rows, target, device, config.batch_size, precision
            )

    optimizer = build_optimizer(config, [{"params": head.parameters(), "lr": config.lr, "name": "head"}])
    with _one_thread_on_cpu(device):
        return run_epochs(
            TrainingRun(
                config=config,
                run_dir=run_dir,
                model=head,
                trained=head,
                loader=loader,
                sampler=sampler,
                forward=forward,
                evaluate=evaluate,
                rows=rows,
                score_span=span,
                optimizer=optimizer,
                scaler=grad_scaler(device, precision),
                distributed=Distributed(),
                device=device,
                payload_base={
                    "model_config": model_config.to_dict(),
                    **payload_base,
                    "training_range": training_range(train_scores, train_difficulties, head.use_difficulty),
                },
                state=state,
                progress=progress,
                scheduler=build_scheduler(config, optimizer, len(loader)),
            )
        )


def with_target(config: TrainConfig) -> TrainConfig:
    """The config with its target named (the feature store's default when none is given): a preset's
    per-target settings need it."""
    if config.target:
        return config
    with FeatureStore(config.features) as store:
        return dataclasses.replace(config, target=store.attributes["default_target"])


def clip_statistics(
    store_path, rows: list[int], data: FeatureTensors | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (unbiased, at least 1e-3) of the real clips of `rows` (view 0), in float64
    whether read from the store or from memory (the same numbers either way)."""
    if data is not None:
        arrays = [data.features[row, 0, : int(data.clips[row])].cpu().numpy() for row in rows]
    else:
        with FeatureStore(store_path) as store:
            arrays = [store.features(row, 0).astype(np.float32) for row in rows]
    clips = np.concatenate(arrays).astype(np.float64)
    mean = clips.mean(axis=0)
    std = clips.std(axis=0, ddof=1) if len(clips) > 1 else np.ones_like(mean)
    return torch.from_numpy(mean).float(), torch.from_numpy(np.maximum(std, 1e-3)).float()


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
