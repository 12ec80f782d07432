"""`aqa train`: fine-tune backbone, FC layers, aggregation and regressor end to end (one readable loop).

On CUDA: autocast (bf16/fp16), channels-last 3D, cudnn autotuning, pinned-memory loader workers.
Everywhere: gradient accumulation, optional gradient checkpointing, DistributedDataParallel when
started by torchrun (only rank 0 writes), an atomic checkpoint every epoch, and exact resumption.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import math
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from aqa_cli.checkpoint import BEST, LAST, RUNS_DIR, load_checkpoint, save_checkpoint
from aqa_cli.config import LOSSES, TrainConfig
from aqa_cli.data import EpochTagged, SeededShuffle, StoreClips, WindowConfig, check_window, split_rows
from aqa_cli.errors import AqaError
from aqa_cli.evaluate import Predictions, metrics, predict, score_range
from aqa_cli.files import atomic_write, writer_lock
from aqa_cli.models import AGGREGATIONS, DEFAULT_FAMILY, AQAHead, ModelConfig, Normalization, build_model
from aqa_cli.models.backbones import check_architecture
from aqa_cli.models.registry import resolve_weights
from aqa_cli.runtime import Distributed, autocast, init_distributed, resolve_precision
from aqa_cli.store import VideoStore

METRIC_COLUMNS = ("epoch", "train_loss", "val_rho", "val_r_l2", "test_rho", "test_r_l2", "lr", "seconds")


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    metrics: list[dict]
    best_epoch: int | None


def loss_fn(kind: str, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """The paper's L1 + L2 on the final score (or either alone)."""
    error = pred - true
    l1, l2 = error.abs().mean(), error.pow(2).mean()
    return {"l1+l2": l1 + l2, "l1": l1, "l2": l2}[kind]


def store_fingerprint(store_path: str) -> dict:
    """What identifies the training data: path, preprocessing, and a hash of ids, splits and scores."""
    with VideoStore(store_path) as store:
        config = store.config
        digest = hashlib.sha256()
        for name in ("id", "split", "score", "difficulty"):
            digest.update(np.asarray(store.column(name)).astype(str).tobytes())
        return {
            "path": str(Path(store_path).resolve()),
            "created": str(store.file.attrs["created"]),
            "samples": len(store),
            "frames": config.frames,
            "fit": config.fit,
            "width": config.width,
            "height": config.height,
            "labels_sha256": digest.hexdigest(),
        }


def default_run_dir(config: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return RUNS_DIR / f"{config.conv}{config.depth}-clip{config.clip}-{config.agg}-{stamp}"


def train(config: TrainConfig, resume: bool = False, console=None) -> TrainResult:
    """Train as the config says; with `resume`, continue the run in `config.out` from its last epoch.

    With `config.features` only the heads train, on a feature store (`aqa_cli.head_training`).
    """
    if config.features:
        from aqa_cli.head_training import train_heads

        return train_heads(config, resume, console)
    check_optimisation(config)
    distributed, device = init_distributed(config.device)
    precision = resolve_precision(config.precision, device)
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
    )
    # A weights name is looked up (and downloaded) before any work; on resume the checkpoint has them.
    resolved = resolve_weights(config.weights) if config.weights and state is None else None
    weights = resolved.path if resolved is not None else None
    if state is not None:
        model_config = ModelConfig.from_dict(state["model_config"])
    model = build_model(model_config, weights, grad_checkpoint=config.grad_checkpoint)
    if weights and distributed.is_main and console is not None:
        console.print(f"backbone: {model.backbone.weights_summary}")
    window = WindowConfig(config.frames, config.jitter, config.crop, config.flip)
    rows = split_rows(config.store, config.val_fraction, config.seed)
    if not rows["train"]:
        raise AqaError(
            f"{config.store} has no training samples (split 'train'); check the manifest's split column"
        )
    train_set = StoreClips(config.store, rows["train"], window, train=True, seed=config.seed)
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
    optimizer = torch.optim.Adam(groups)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
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
    normalization = model.backbone.normalization

    def forward(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        video = normalization.apply(batch["video"].to(device, non_blocking=True))
        if channels_last:
            video = video.contiguous(memory_format=torch.channels_last_3d)
        with autocast(device, precision):
            out = trained(video, batch["difficulty"].to(device))
        return out.score.float(), batch["score"].to(device)

    def evaluate(split_rows_: list[int]) -> Predictions:
        return predict(model, config.store, split_rows_, window, device, precision, config.batch_size)

    return run_epochs(
        EpochLoop(
            config=config,
            run_dir=run_dir,
            model=model,
            trained=trained,
            loader=loader,
            sampler=sampler,
            forward=forward,
            evaluate=evaluate,
            rows=rows,
            score_span=score_range(config.store),
            optimizer=optimizer,
            scaler=scaler,
            distributed=distributed,
            device=device,
            payload_base={
                "model_config": model.config.to_dict(),
                "window": dataclasses.asdict(window),
                "store": store_fingerprint(config.store),
                # the pretrained weights (registry name, file, sha256): eval and score need no network
                "backbone_weights": state.get("backbone_weights")
                if state is not None
                else (resolved.to_dict() if resolved is not None else None),
            },
            state=state,
            console=console,
        )
    )


def check_optimisation(config: TrainConfig) -> None:
    """Settings of the heads and the optimiser, shared by end-to-end and cached-feature training."""
    if config.loss not in LOSSES:
        raise AqaError(f"unknown --loss {config.loss!r}; choose one of {', '.join(LOSSES)}")
    if config.batch_size < 1 or config.accumulate < 1 or config.epochs < 1:
        raise AqaError("--batch-size, --accumulate and --epochs must be at least 1")
    for name in ("lr", "backbone_lr", "wd_dropout", "val_fraction"):
        value, flag = getattr(config, name), "--" + name.replace("_", "-")
        if not (math.isfinite(value) and value >= 0):
            raise AqaError(f"{flag} must be a finite number >= 0 (got {value})")
        if name in ("wd_dropout", "val_fraction") and value >= 1:
            raise AqaError(f"{flag} must be below 1 (got {value})")
    if config.agg not in AGGREGATIONS:
        raise AqaError(f"unknown aggregation {config.agg!r}; choose one of {', '.join(AGGREGATIONS)}")


def check_settings(config: TrainConfig) -> None:
    """Settings wrong on their own, together, or for the store, found before anything is built or read."""
    for name in ("clip", "frames", "crop", "jitter"):
        if getattr(config, name) < 1:
            raise AqaError(f"--{name} must be at least 1 (got {getattr(config, name)})")
    if config.frames % config.clip:
        raise AqaError(
            f"--clip {config.clip} does not divide --frames {config.frames}: use 8, 16 or 32 for 96 frames"
        )
    if config.channels_last not in ("auto", "on", "off"):
        raise AqaError(f"--channels-last {config.channels_last!r}: use auto, on or off")
    if config.normalization:
        Normalization.named(config.normalization)
    if not config.weights:  # with weights, the file says what it is (checked when it is read)
        check_architecture(config.depth, config.conv, config.family or DEFAULT_FAMILY)
    with VideoStore(config.store) as store:
        stored = store.config
    window = WindowConfig(config.frames, config.jitter, config.crop, config.flip)
    check_window(window, stored.frames, stored.height, stored.width, config.store)


def open_run(config: TrainConfig, resume: bool, default_dir: Path) -> tuple[Path, dict | None]:
    """The run directory (`config.out`, else `default_dir`) and, with `resume`, its last checkpoint."""
    run_dir = Path(config.out) if config.out else default_dir
    if not resume and (run_dir / LAST).exists():
        raise AqaError(f"{run_dir} already holds a run; add --resume to continue it, or choose another --out")
    return run_dir, _resume_state(run_dir) if resume else None


@dataclasses.dataclass
class EpochLoop:
    """What the epoch loop needs; end-to-end and head-only training differ only in what they put here."""

    config: TrainConfig
    run_dir: Path
    model: torch.nn.Module  # what the checkpoints hold
    trained: torch.nn.Module  # what the batches go through (the model, or its DDP wrapper)
    loader: DataLoader
    sampler: EpochTagged  # the loader's: its order and each sample's augmentation follow `set_epoch`
    forward: Callable[[dict], tuple[torch.Tensor, torch.Tensor]]  # batch -> (predicted, true) scores
    evaluate: Callable[[list[int]], Predictions]  # rows of a split -> predictions (evaluation mode)
    rows: dict[str, list[int]]  # per split
    score_span: tuple[float, float]  # for R-l2
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    distributed: Distributed
    device: torch.device
    payload_base: dict  # what every checkpoint records besides weights and training state
    state: dict | None  # the checkpoint to resume from
    console: object = None


def run_epochs(loop: EpochLoop) -> TrainResult:
    """Train epoch after epoch: validation-based selection (best.pt), an atomic last.pt every epoch,
    metrics.csv and curves.png; resumes from `loop.state` exactly where it stopped. One process at a
    time writes a run (`RUN/train.lock`); a second one stops with a clear message."""
    if not loop.distributed.is_main:
        return _train_epochs(loop)
    with writer_lock(loop.run_dir / "train.lock", loop.run_dir):
        return _train_epochs(loop)


def _train_epochs(loop: EpochLoop) -> TrainResult:
    config, run_dir, model, distributed = loop.config, loop.run_dir, loop.model, loop.distributed
    optimizer, scaler, rows = loop.optimizer, loop.scaler, loop.rows
    metrics_rows: list[dict] = []
    best = {"epoch": None, "val_rho": -math.inf}
    start_epoch = 1
    if loop.state is not None:
        state = loop.state
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        metrics_rows, best, start_epoch = state["metrics"], state["best"], state["epoch"] + 1
    if distributed.is_main:
        atomic_write(run_dir / "config.toml", dataclasses.replace(config, out=str(run_dir)).to_toml())
    payload_base = {
        **loop.payload_base,
        "train_config": dataclasses.asdict(dataclasses.replace(config, out=str(run_dir))),
    }

    from aqa_cli.report import training_progress

    with training_progress(loop.console, enabled=distributed.is_main) as progress:
        for epoch in range(start_epoch, config.epochs + 1):
            started = time.perf_counter()
            loop.sampler.set_epoch(epoch)
            loop.trained.train()
            loss_sum, seen = 0.0, 0
            task = progress.start_epoch(epoch, config.epochs, len(loop.loader))
            optimizer.zero_grad(set_to_none=True)
            for step, batch in enumerate(loop.loader, start=1):
                sync = step % config.accumulate == 0 or step == len(loop.loader)
                context = (
                    loop.trained.no_sync() if distributed.enabled and not sync else contextlib.nullcontext()
                )
                with context:
                    predicted, true = loop.forward(batch)
                    loss = loss_fn(config.loss, predicted, true)
                    scaler.scale(loss / config.accumulate).backward()
                if sync:
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                if not math.isfinite(loss.item()):
                    raise AqaError(
                        f"the loss became {loss.item()} at epoch {epoch} step {step}; lower --lr or use --precision fp32"
                    )
                loss_sum += loss.item() * len(true)
                seen += len(true)
                progress.step(task, loss_sum / seen, len(true))
            row = {"epoch": epoch, "train_loss": _mean_across(distributed, loss_sum, seen, loop.device)}
            if distributed.is_main:
                for split in ("val", "test"):
                    if rows[split] and (split == "val" or config.test_curve):
                        found = loop.evaluate(rows[split])
                        result = metrics(found.score, found.true, loop.score_span)
                        row[f"{split}_rho"], row[f"{split}_r_l2"] = result["rho"], result["r_l2"]
                row["lr"] = optimizer.param_groups[0]["lr"]
                row["seconds"] = round(time.perf_counter() - started, 2)
                metrics_rows.append(row)
                if rows["val"] and _better_on_validation(row, best):
                    best = {"epoch": epoch, "val_rho": row["val_rho"], "val_r_l2": row["val_r_l2"]}
                    save_checkpoint(
                        run_dir / BEST, {**payload_base, "model": model.state_dict(), "epoch": epoch}
                    )
                save_checkpoint(
                    run_dir / LAST,
                    {
                        **payload_base,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict(),
                        "rng": {"torch": torch.get_rng_state()},
                        "epoch": epoch,
                        "metrics": metrics_rows,
                        "best": best,
                    },
                )
                _write_metrics(run_dir, metrics_rows)
                progress.end_epoch(task, row)
            distributed.barrier()
    if distributed.is_main:
        from aqa_cli.plots import plot_training_curves

        if start_epoch > config.epochs:  # resumed after the last epoch: its outputs may be incomplete
            from aqa_cli.report import status_console

            status_console.print(
                f"{run_dir} already finished {start_epoch - 1} epochs: nothing to train (raise --epochs to "
                "train longer); metrics.csv and curves.png written again",
                highlight=False,
            )
            _write_metrics(run_dir, metrics_rows)
        plot_training_curves(metrics_rows, run_dir / "curves.png")
    if distributed.enabled:
        torch.distributed.destroy_process_group()
    return TrainResult(run_dir, metrics_rows, best["epoch"])


def start_regressor_at_mean_quality(head: AQAHead, scores: np.ndarray, difficulties: np.ndarray) -> None:
    """Start the regressor's bias at the mean training quality (score / difficulty), not at 0: the
    first epochs then learn differences between dives instead of the scale of the scores."""
    if head.use_difficulty:
        scores = np.where(
            np.isfinite(difficulties), scores / np.where(difficulties > 0, difficulties, 1), scores
        )
    with torch.no_grad():
        head.regressor.bias.fill_(float(np.mean(scores)))


def _better_on_validation(row: dict, best: dict) -> bool:
    """Higher validation rho wins; on a tie (small validation sets often reach 1.0) the lower R-l2."""
    rho = row.get("val_rho", -math.inf)
    if not math.isfinite(rho) or rho < best["val_rho"]:
        return False
    return rho > best["val_rho"] or row["val_r_l2"] < best.get("val_r_l2", math.inf)


def _normalization(name: str) -> dict | None:
    if not name:
        return None
    from aqa_cli.models import Normalization

    return Normalization.named(name).to_dict()


def _resume_state(run_dir: Path) -> dict:
    path = run_dir / LAST
    if not path.is_file():
        raise AqaError(f"nothing to resume: {path} does not exist; start the run without --resume")
    return load_checkpoint(path, f"restore an intact copy of it, or delete {run_dir} to train from the start")


def _mean_across(distributed: Distributed, loss_sum: float, seen: int, device) -> float:
    if not distributed.enabled:
        return loss_sum / max(seen, 1)
    totals = torch.tensor([loss_sum, seen], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(totals)
    return float(totals[0] / totals[1])


def _write_metrics(run_dir: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS)
    writer.writeheader()
    writer.writerows([{key: row.get(key, "") for key in METRIC_COLUMNS} for row in rows])
    atomic_write(run_dir / "metrics.csv", buffer.getvalue())
