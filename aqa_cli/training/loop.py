"""The one epoch loop every training runs through (after nanoGPT's train.py: one readable loop, no
framework): loss, accumulation, DDP's no_sync, validation-based selection (best.pt), an atomic last.pt every
epoch with model, optimizer, scaler and RNG states (CPU and CUDA), metrics.csv and curves.png, exact
resumption. It reports progress through a `TrainingProgress` and never prints."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader

from aqa_cli.checkpoints.io import BEST, LAST, load_checkpoint, save_checkpoint
from aqa_cli.data.samplers import EpochTagged
from aqa_cli.evaluation.metrics import metrics
from aqa_cli.evaluation.plots import plot_training_curves
from aqa_cli.evaluation.predict import Predictions
from aqa_cli.models.heads import AGGREGATIONS, AQAHead, AQAOutput
from aqa_cli.training.config import (
    ARCHITECTURE_SETTINGS,
    GDLT_LAYOUTS,
    HEAD_OPTIONS,
    LOSSES,
    OPTIMIZERS,
    SCHEDULES,
    TRIPLET_MINING,
    TrainConfig,
)
from aqa_cli.util.errors import AqaError
from aqa_cli.util.runtime import Distributed, load_scaler_state
from aqa_cli.util.safe_output import atomic_write, writer_lock

LOG_EVERY = 10
"""Steps between the host's looks at the running loss (progress, the non-finite check): every look waits
for the device, so once per step would stall a GPU's queue."""
METRIC_COLUMNS = ("epoch", "train_loss", "val_rho", "val_r_l2", "test_rho", "test_r_l2", "lr", "seconds")


class TrainingProgress(Protocol):
    """What a caller is told while training runs (the CLI draws a bar; a notebook may pass nothing)."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...

    def step(self, loss: float, samples: int) -> None:
        """One batch done: the epoch's running mean loss (as of the last `LOG_EVERY` steps; NaN before)
        and the samples in the batch."""

    def end_epoch(self, row: dict) -> None:
        """The epoch's metrics (a row of metrics.csv)."""


class _Silent:
    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def step(self, loss: float, samples: int) -> None:
        pass

    def end_epoch(self, row: dict) -> None:
        pass


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    metrics: list[dict]
    best_epoch: int | None
    already_finished: int = 0  # epochs a resumed run had trained before, when it had nothing left to do


def loss_fn(kind: str, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """The paper's L1 + L2 on the final score (or either alone; `mse` is `l2`)."""
    error = pred - true
    l1, l2 = error.abs().mean(), error.pow(2).mean()
    return {"l1+l2": l1 + l2, "l1": l1, "l2": l2, "mse": l2}[kind]


def loss_inputs(head: AQAHead, out: AQAOutput, true: torch.Tensor, difficulty: torch.Tensor):
    """(predicted, true) as the loss sees them: the final scores for avg and wd; for the long heads the
    quality (the score over the difficulty, where the head uses it) mapped to [0, 1] by the training
    split's quality range, the units they are trained in."""
    if not head.is_long:
        return out.score.float(), true
    true = true.to(out.quality.device).float()
    if head.use_difficulty:
        difficulty = difficulty.to(true.device).float()
        known = torch.isfinite(difficulty) & (difficulty > 0)
        true = torch.where(known, true / torch.where(known, difficulty, 1.0), true)
    return head.normalized_quality(out.quality.float()), head.normalized_quality(true)


def check_optimisation(config: TrainConfig) -> None:
    """Settings of the heads and the optimiser, shared by end-to-end and cached-feature training (on a
    config whose head defaults are resolved: `training.config.resolve_head_defaults`)."""
    if config.loss not in LOSSES:
        raise AqaError(f"unknown --loss {config.loss!r}; choose one of {', '.join(LOSSES)}")
    if config.optimizer not in OPTIMIZERS:
        raise AqaError(f"unknown --optimizer {config.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if config.schedule not in SCHEDULES:
        raise AqaError(f"unknown --schedule {config.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if config.batch_size < 1 or config.accumulate < 1 or config.epochs < 1:
        raise AqaError("--batch-size, --accumulate and --epochs must be at least 1")
    if config.warmup < 0 or config.clip_crop < 0:
        raise AqaError("--warmup and --clip-crop must be at least 0")
    if config.folds == 1 or config.folds < 0 or (config.folds and not 0 <= config.fold < config.folds):
        raise AqaError(f"--folds must be 0 (off) or at least 2, and the fold below it (got {config.folds})")
    if config.exemplars < 1:
        raise AqaError(f"--exemplars must be at least 1 (got {config.exemplars})")
    if config.triplet_mining not in TRIPLET_MINING:
        raise AqaError(
            f"unknown --triplet-mining {config.triplet_mining!r}; choose {' or '.join(TRIPLET_MINING)}"
        )
    if config.gdlt_layout and config.gdlt_layout not in GDLT_LAYOUTS:
        raise AqaError(f"unknown --gdlt-layout {config.gdlt_layout!r}; choose {' or '.join(GDLT_LAYOUTS)}")
    if config.gdlt_layout and config.agg != "gdlt":
        raise AqaError(f"--gdlt-layout is not a setting of --agg {config.agg}")
    for name in ARCHITECTURE_SETTINGS:
        if getattr(config, name) != -1 and name not in HEAD_OPTIONS.get(config.agg, {}):
            raise AqaError(f"--{name.replace('_', '-')} is not a setting of --agg {config.agg}")
    numbers = ("lr", "backbone_lr", "wd_dropout", "val_fraction", "weight_decay", "dropout", "min_lr")
    for name in (*numbers, "label_scale", "triplet", "triplet_margin"):
        value, flag = getattr(config, name), "--" + name.replace("_", "-")
        if not (math.isfinite(value) and value >= 0):
            raise AqaError(f"{flag} must be a finite number >= 0 (got {value})")
        if name in ("wd_dropout", "val_fraction", "dropout") and value >= 1:
            raise AqaError(f"{flag} must be below 1 (got {value})")
    if config.agg not in AGGREGATIONS:
        raise AqaError(f"unknown aggregation {config.agg!r}; choose one of {', '.join(AGGREGATIONS)}")


def build_optimizer(config: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    """`config.optimizer` over the parameter groups (each with its lr), with `config.weight_decay`."""
    decay = config.weight_decay
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, weight_decay=decay)
    return torch.optim.Adam(groups, weight_decay=decay)


def build_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, batches_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """Per optimisation step: linear warm-up over `config.warmup` epochs, then constant or a cosine decay
    to `config.min_lr` at the last step. None for a constant schedule without warm-up (the paper's: nothing to step)."""
    if config.schedule == "constant" and config.warmup == 0:
        return None
    steps_per_epoch = math.ceil(batches_per_epoch / config.accumulate)
    floor = min(1.0, config.min_lr / config.lr) if config.lr > 0 else 0.0
    total, warm = steps_per_epoch * config.epochs, steps_per_epoch * config.warmup

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if config.schedule == "cosine":
            cosine = 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
            return floor + (1 - floor) * cosine
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def open_run(config: TrainConfig, resume: bool, default_dir: Path) -> tuple[Path, dict | None]:
    """The run directory (`config.out`, else `default_dir`) and, with `resume`, its last checkpoint."""
    run_dir = Path(config.out) if config.out else default_dir
    if not resume and (run_dir / LAST).exists():
        raise AqaError(f"{run_dir} already holds a run; add --resume to continue it, or choose another --out")
    return run_dir, _resume_state(run_dir) if resume else None


@dataclasses.dataclass
class TrainingRun:
    """What `run_epochs` trains and where it writes; end-to-end and head-only training differ only in what
    they put here."""

    config: TrainConfig
    run_dir: Path
    model: torch.nn.Module  # what the checkpoints hold
    trained: torch.nn.Module  # what the batches go through (the model, or its DDP wrapper)
    loader: DataLoader
    sampler: EpochTagged  # the loader's: its order and each sample's augmentation follow `set_epoch`
    forward: Callable[[dict], tuple[torch.Tensor, ...]]  # batch -> (predicted, true) scores[, extra loss]
    evaluate: Callable[[list[int]], Predictions]  # rows of a split -> predictions (evaluation mode)
    rows: dict[str, list[int]]  # per split
    score_span: tuple[float, float]  # for R-l2
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    distributed: Distributed
    device: torch.device
    payload_base: dict  # what every checkpoint records besides weights and training state
    state: dict | None  # the checkpoint to resume from
    progress: TrainingProgress | None = None
    scheduler: torch.optim.lr_scheduler.LambdaLR | None = None  # stepped after every optimizer step


def run_epochs(loop: TrainingRun) -> TrainResult:
    """Train epoch after epoch: validation-based selection (best.pt), an atomic last.pt every epoch,
    metrics.csv and curves.png; resumes from `loop.state` exactly where it stopped. One process at a
    time writes a run (`RUN/train.lock`); a second one stops with a clear message."""
    if not loop.distributed.is_main:
        return _train_epochs(loop)
    with writer_lock(loop.run_dir / "train.lock", loop.run_dir):
        return _train_epochs(loop)


def _train_epochs(loop: TrainingRun) -> TrainResult:
    config, run_dir, model, distributed = loop.config, loop.run_dir, loop.model, loop.distributed
    optimizer, scaler, rows = loop.optimizer, loop.scaler, loop.rows
    metrics_rows: list[dict] = []
    best = {"epoch": None, "val_rho": -math.inf}
    start_epoch = 1
    if loop.state is not None:
        state = loop.state
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        load_scaler_state(scaler, state.get("scaler"))
        if loop.scheduler is not None and state.get("scheduler") is not None:
            loop.scheduler.load_state_dict(state["scheduler"])
        restore_rng(rank_rng(state, distributed), loop.device)
        metrics_rows, best, start_epoch = state["metrics"], state["best"], state["epoch"] + 1
    if distributed.is_main:
        atomic_write(run_dir / "config.toml", dataclasses.replace(config, out=str(run_dir)).to_toml())
    payload_base = {
        **loop.payload_base,
        "train_config": dataclasses.asdict(dataclasses.replace(config, out=str(run_dir))),
    }

    progress = loop.progress if distributed.is_main and loop.progress is not None else _Silent()
    for epoch in range(start_epoch, config.epochs + 1):
        started = time.perf_counter()
        loop.sampler.set_epoch(epoch)
        loop.trained.train()
        # The loss is summed on the device: the host waits for it once per LOG_EVERY steps, not every step.
        loss_sum, seen, mean_loss = torch.zeros((), dtype=torch.float64, device=loop.device), 0, math.nan
        progress.start_epoch(epoch, config.epochs, len(loop.loader))
        optimizer.zero_grad(set_to_none=True)
        for step, batch in enumerate(loop.loader, start=1):
            sync = step % config.accumulate == 0 or step == len(loop.loader)
            context = loop.trained.no_sync() if distributed.enabled and not sync else contextlib.nullcontext()
            with context:
                predicted, true, *extra = loop.forward(batch)
                loss = loss_fn(config.loss, predicted, true) + sum(extra)
                scaler.scale(loss / config.accumulate).backward()
            if sync:
                optimizer_step(optimizer, scaler, loop.scheduler)
            loss_sum += loss.detach() * len(true)
            seen += len(true)
            if step % LOG_EVERY == 0 or step == len(loop.loader):
                mean_loss = loss_sum.item() / seen
                if not math.isfinite(mean_loss):
                    raise AqaError(
                        f"the loss became {mean_loss} at epoch {epoch} by step {step}; lower --lr or use "
                        "--precision fp32"
                    )
            progress.step(mean_loss, len(true))
        row = {"epoch": epoch, "train_loss": _mean_across(distributed, loss_sum, seen, loop.device)}
        for split in ("val", "test"):
            if rows[split] and (split == "val" or config.test_curve):
                score, true = _split_scores(loop, rows[split])
                result = metrics(score, true, loop.score_span)
                row[f"{split}_rho"], row[f"{split}_r_l2"] = result["rho"], result["r_l2"]
        if distributed.is_main:
            row["lr"] = optimizer.param_groups[0]["lr"]
            row["seconds"] = round(time.perf_counter() - started, 2)
            metrics_rows.append(row)
            if rows["val"] and _better_on_validation(row, best):
                best = {"epoch": epoch, "val_rho": row["val_rho"], "val_r_l2": row["val_r_l2"]}
                save_checkpoint(run_dir / BEST, {**payload_base, "model": model.state_dict(), "epoch": epoch})
        rngs = distributed.gather(rng_state(loop.device))  # every rank's, so that each resumes exactly
        if distributed.is_main:
            save_checkpoint(
                run_dir / LAST,
                {
                    **payload_base,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "scheduler": loop.scheduler.state_dict() if loop.scheduler is not None else None,
                    "rng": rngs[0],
                    "rank_rng": rngs,
                    "epoch": epoch,
                    "metrics": metrics_rows,
                    "best": best,
                },
            )
            _write_metrics(run_dir, metrics_rows)
            progress.end_epoch(row)
        distributed.barrier()
    already_finished = start_epoch > config.epochs  # resumed after the last epoch
    if distributed.is_main:
        if already_finished:  # its outputs may be incomplete
            _write_metrics(run_dir, metrics_rows)
        plot_training_curves(metrics_rows, run_dir / "curves.png")
    if distributed.enabled:
        torch.distributed.destroy_process_group()
    return TrainResult(run_dir, metrics_rows, best["epoch"], start_epoch - 1 if already_finished else 0)


def start_regressor_at_mean_quality(head: AQAHead, scores: np.ndarray, difficulties: np.ndarray) -> None:
    """Start the regressor's bias at the mean training quality (score / difficulty), not at 0: the
    first epochs then learn differences between dives instead of the scale of the scores. A long head
    (attn, gdlt) instead records the training qualities' range, which its [0, 1] output is scaled to."""
    if head.use_difficulty:
        scores = np.where(
            np.isfinite(difficulties), scores / np.where(difficulties > 0, difficulties, 1), scores
        )
    if head.is_long:
        head.set_quality_range(float(np.min(scores)), float(np.max(scores)))
        return
    with torch.no_grad():
        head.regressor.bias.fill_(float(np.mean(scores)))


def training_range(scores: np.ndarray, difficulties: np.ndarray, use_difficulty: bool) -> dict:
    """The training split's score and quality (score / difficulty, where the model uses it) ranges, as
    recorded in checkpoints: `aqa score` says when a prediction lies outside them."""
    scores = np.asarray(scores, dtype=np.float64)
    quality = scores
    if use_difficulty:
        known = np.isfinite(difficulties) & (difficulties > 0)
        quality = np.where(known, scores / np.where(known, difficulties, 1), scores)
    return {
        "score": [float(np.min(scores)), float(np.max(scores))],
        "quality": [float(np.min(quality)), float(np.max(quality))],
    }


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    scheduler: torch.optim.lr_scheduler.LambdaLR | None,
) -> None:
    """One optimiser step through the scaler; the schedule advances only when the step was taken (fp16
    skips a step whose gradients overflowed, and lowers the scale)."""
    scale = scaler.get_scale() if scaler.is_enabled() else None
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None and (scale is None or scaler.get_scale() >= scale):
        scheduler.step()


def _better_on_validation(row: dict, best: dict) -> bool:
    """Higher validation rho wins; on a tie (small validation sets often reach 1.0) the lower R-l2."""
    rho = row.get("val_rho", -math.inf)
    if not math.isfinite(rho) or rho < best["val_rho"]:
        return False
    return rho > best["val_rho"] or row["val_r_l2"] < best.get("val_r_l2", math.inf)


def rng_state(device: torch.device) -> dict:
    """The random states a resumed process needs: the CPU's, and on CUDA its GPU's (dropout draws there)."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def rank_rng(state: dict, distributed: Distributed) -> dict:
    """This rank's random states from a checkpoint (rank 0's where it kept only those, or other ranks)."""
    ranks = state.get("rank_rng") or [state["rng"]]
    return ranks[distributed.rank] if len(ranks) == distributed.world_size else state["rng"]


def restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type != "cuda":
        return
    if "cuda_device" in state:
        torch.cuda.set_rng_state(state["cuda_device"], device)
    elif len(state.get("cuda", [])) == torch.cuda.device_count():  # a checkpoint of an earlier version
        torch.cuda.set_rng_state_all(state["cuda"])


def _resume_state(run_dir: Path) -> dict:
    path = run_dir / LAST
    if not path.is_file():
        raise AqaError(f"nothing to resume: {path} does not exist; start the run without --resume")
    return load_checkpoint(path, f"restore an intact copy of it, or delete {run_dir} to train from the start")


def _split_scores(loop: TrainingRun, rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, true) scores of a split's rows, in their order. Under torchrun each rank predicts
    every world_size-th row and all ranks gather the shares, so evaluation takes 1 / world_size of the
    time and no rank idles at the barrier while rank 0 evaluates alone."""
    distributed = loop.distributed
    distributed.share_buffers(loop.model)  # every rank predicts with the model rank 0 saves
    share = rows[distributed.rank :: distributed.world_size]
    found = loop.evaluate(share) if share else None
    parts = distributed.gather((found.score, found.true) if found is not None else None)
    positions = np.concatenate(
        [np.arange(rank, len(rows), distributed.world_size) for rank in range(len(parts))]
    )
    order = np.argsort(positions, kind="stable")
    score = np.concatenate([part[0] for part in parts if part is not None])
    true = np.concatenate([part[1] for part in parts if part is not None])
    return score[order], true[order]


def _mean_across(distributed: Distributed, loss_sum: torch.Tensor, seen: int, device) -> float:
    """The epoch's mean loss over every rank's samples (`loss_sum`: this rank's, on its device)."""
    totals = torch.stack(
        [loss_sum.to(torch.float64), torch.tensor(float(seen), dtype=torch.float64, device=device)]
    )
    if distributed.enabled:
        torch.distributed.all_reduce(totals)
    return float(totals[0] / totals[1].clamp(min=1))


def _write_metrics(run_dir: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS)
    writer.writeheader()
    writer.writerows([{key: row.get(key, "") for key in METRIC_COLUMNS} for row in rows])
    atomic_write(run_dir / "metrics.csv", buffer.getvalue())
