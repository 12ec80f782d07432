"""`aqa train`: fine-tune backbone, FC layers, aggregation and regressor end to end.

On CUDA: channels-last 3D by default, cudnn autotuning, pinned-memory loader workers. Everywhere:
autocast for --precision bf16/fp16 (the CPU too, fp16 with the gradient scaler), gradient accumulation,
optional gradient checkpointing, DistributedDataParallel when started by torchrun (even one process;
only rank 0 writes), an atomic checkpoint every epoch, and exact resumption (the loop is
`training.loop`'s). Validation predicts in the training precision, as `aqa eval` of the checkpoint does.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from aqa_cli.checkpoints.io import RUNS_DIR
from aqa_cli.data.datasets import StoreClips
from aqa_cli.data.samplers import EpochTagged, SeededShuffle
from aqa_cli.data.splits import SplitPlan, split_rows
from aqa_cli.data.windows import WindowConfig, check_window
from aqa_cli.evaluation.metrics import score_span
from aqa_cli.evaluation.predict import Predictions, predict
from aqa_cli.models.architectures import DEFAULT_FAMILY
from aqa_cli.models.backbones import check_architecture
from aqa_cli.models.model import ModelConfig, build_model, clip_count
from aqa_cli.models.normalization import Normalization, model_input
from aqa_cli.models.registry import resolve_weights
from aqa_cli.stores.video_store import VideoStore
from aqa_cli.training.config import TrainConfig, head_options, resolve_head_defaults
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
from aqa_cli.util.runtime import autocast, grad_scaler, init_distributed, resolve_precision


def default_run_dir(config: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return RUNS_DIR / f"{config.conv}{config.depth}-clip{config.clip}-{config.agg}-{stamp}"


def train_end_to_end(
    config: TrainConfig, resume: bool = False, progress: TrainingProgress | None = None
) -> TrainResult:
    """Fine-tune as the config says; with `resume`, continue the run in `config.out` from its last epoch.
    The long heads (attn, gdlt) take the backbone's clip features unstandardized (they change as it
    trains); `--clip-crop` trains on a random run of that many of the window's clips."""
    config = resolve_head_defaults(config)
    check_optimisation(config)
    distributed, device = init_distributed(config.device)
    precision = resolve_precision(config.precision, device)
    config = dataclasses.replace(config, precision=precision)  # recorded as run, never `auto`
    check_settings(config)
    channels_last = config.channels_last == "on" or (config.channels_last == "auto" and device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    run_dir, state = open_run(config, resume, default_run_dir(config))
    torch.manual_seed(config.seed)
    model_config = ModelConfig(
        depth=config.depth,
        conv=config.conv,
        family=config.family or None,
        clip_len=config.clip,
        agg=config.agg,
        wd_dropout=config.wd_dropout,
        use_difficulty=config.use_difficulty,
        normalization=_normalization(config.normalization),
        head_options=head_options(config),
    )
    # A weights name is looked up (and downloaded) before any work; on resume the checkpoint has them.
    resolved = resolve_weights(config.weights) if config.weights and state is None else None
    weights = resolved.path if resolved is not None else None
    if state is not None:
        model_config = ModelConfig.from_dict(state["model_config"])
    model = build_model(model_config, weights, grad_checkpoint=config.grad_checkpoint)
    window = WindowConfig(config.frames, config.jitter, config.crop, config.flip, config.crop_mode)
    rows = split_rows(config.store, SplitPlan.of(config))
    if not rows["train"]:
        raise AqaError(
            f"{config.store} has no training samples (split 'train'); check the manifest's split column"
        )
    train_set = StoreClips(
        config.store,
        rows["train"],
        window,
        train=True,
        seed=config.seed,
        clip_len=config.clip,
        clip_crop=config.clip_crop,
    )
    with VideoStore(config.store) as store:
        fingerprint = store.fingerprint()
        span = score_span(store.column("score"), config.store)
    window = train_set.window

    if state is None:
        start_regressor_at_mean_quality(
            model.head, train_set.scores[train_set.rows], train_set.difficulties[train_set.rows]
        )
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
    groups = [
        {"params": model.head.parameters(), "lr": config.lr, "name": "head"},
        {
            "params": model.backbone.parameters(),
            "lr": config.backbone_lr if weights else config.lr,
            "name": "backbone",
        },
    ]
    optimizer = build_optimizer(config, groups)
    scaler = grad_scaler(device, precision)
    trained = DistributedDataParallel(model) if distributed.enabled else model
    sampler = EpochTagged(
        DistributedSampler(train_set, seed=config.seed)
        if distributed.enabled
        else SeededShuffle(train_set, config.seed)
    )
    loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=config.workers > 0,  # the epoch comes with each index (EpochTagged)
        # Its own generator: a loader draws a seed for its workers from it whenever it starts them, once
        # per run when they persist, which would shift the global RNG (dropout) of a resumed run.
        generator=torch.Generator().manual_seed(config.seed),
    )

    def forward(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        video = model_input(batch["video"], model.backbone.normalization, device, channels_last)
        difficulty = batch["difficulty"].to(device, non_blocking=True)
        with autocast(device, precision):
            out = trained(video, difficulty)
        return loss_inputs(model.head, out, batch["score"].to(device, non_blocking=True), batch["difficulty"])

    def evaluate(split_rows_: list[int]) -> Predictions:  # as `aqa eval` predicts: the same precision
        return predict(model, config.store, split_rows_, window, device, precision, config.batch_size)

    return run_epochs(
        TrainingRun(
            config=config,
            run_dir=run_dir,
            model=model,
            trained=trained,
            loader=loader,
            sampler=sampler,
            forward=forward,
            evaluate=evaluate,
            rows=rows,
            score_span=span,
            optimizer=optimizer,
            scaler=scaler,
            distributed=distributed,
            device=device,
            payload_base={
                "model_config": model.config.to_dict(),
                "window": dataclasses.asdict(window),
                "store": fingerprint,
                "training_range": training_range(
                    train_set.scores[train_set.rows],
                    train_set.difficulties[train_set.rows],
                    config.use_difficulty,
                ),
                # the pretrained weights (registry name, file, sha256): eval and score need no network
                "backbone_weights": state.get("backbone_weights")
                if state is not None
                else (resolved.to_dict() if resolved is not None else None),
            },
            state=state,
            progress=progress,
            scheduler=build_scheduler(config, optimizer, len(loader)),
        )
    )


def check_settings(config: TrainConfig) -> None:
    """Settings wrong on their own, together, or for the store, found before anything is built or read."""
    for name in ("clip", "frames", "crop", "jitter"):
        if getattr(config, name) < 1:
            raise AqaError(f"--{name} must be at least 1 (got {getattr(config, name)})")
    clip_count(config.frames, config.clip)
    if config.channels_last not in ("auto", "on", "off"):
        raise AqaError(f"--channels-last {config.channels_last!r}: use auto, on or off")
    if config.normalization:
        Normalization.named(config.normalization)
    if not config.weights:  # with weights, the file says what it is (checked when it is read)
        check_architecture(config.depth, config.conv, config.family or DEFAULT_FAMILY)
    with VideoStore(config.store) as store:
        stored = store.config
    window = WindowConfig(config.frames, config.jitter, config.crop, config.flip, config.crop_mode)
    check_window(window, stored.frames, stored.height, stored.width, config.store)


def _normalization(name: str) -> dict | None:
    if not name:
        return None
    return Normalization.named(name).to_dict()
