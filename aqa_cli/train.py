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
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from aqa_cli.checkpoint import BEST, LAST, RUNS_DIR, load_checkpoint, save_checkpoint
from aqa_cli.config import LOSSES, TrainConfig
from aqa_cli.data import SeededShuffle, StoreClips, WindowConfig, split_rows
from aqa_cli.errors import AqaError
from aqa_cli.evaluate import metrics, predict, score_range
from aqa_cli.models import ModelConfig, build_model
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
    """Train as the config says; with `resume`, continue the run in `config.out` from its last epoch."""
    if config.loss not in LOSSES:
        raise AqaError(f"unknown --loss {config.loss!r}; choose one of {', '.join(LOSSES)}")
    if config.batch_size < 1 or config.accumulate < 1 or config.epochs < 1:
        raise AqaError("--batch-size, --accumulate and --epochs must be at least 1")
    distributed, device = init_distributed(config.device)
    precision = resolve_precision(config.precision, device)
    channels_last = config.channels_last == "on" or (config.channels_last == "auto" and device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    run_dir = Path(config.out) if config.out else default_run_dir(config)
    if not resume and (run_dir / LAST).exists():
        raise AqaError(f"{run_dir} already holds a run; add --resume to continue it, or choose another --out")
    state = _resume_state(run_dir, config) if resume else None
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
    weights = config.weights or None
    if state is not None:
        model_config = ModelConfig.from_dict(state["model_config"])
        weights = None  # the checkpoint has them
    model = build_model(model_config, weights, grad_checkpoint=config.grad_checkpoint)
    if weights and distributed.is_main and console is not None:
        console.print(f"backbone: {model.backbone.weights_summary}")
    if config.frames % config.clip:
        raise AqaError(
            f"--clip {config.clip} does not divide --frames {config.frames}: use 8, 16 or 32 for 96 frames"
        )
    window = WindowConfig(config.frames, config.jitter, config.crop, config.flip)
    rows = split_rows(config.store, config.val_fraction, config.seed)
    if not rows["train"]:
        raise AqaError(
            f"{config.store} has no training samples (split 'train'); check the manifest's split column"
        )
    train_set = StoreClips(config.store, rows["train"], window, train=True, seed=config.seed)
    window = train_set.window
    score_span = score_range(config.store)

    if state is None:
        _start_regressor_at_mean_quality(model, train_set)
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
    metrics_rows: list[dict] = []
    best = {"epoch": None, "val_rho": -math.inf}
    start_epoch = 1
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        metrics_rows, best, start_epoch = state["metrics"], state["best"], state["epoch"] + 1

    fingerprint = store_fingerprint(config.store)
    if distributed.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.toml").write_text(dataclasses.replace(config, out=str(run_dir)).to_toml())
    sampler = (
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
        persistent_workers=config.workers > 0,
    )
    normalization = model.backbone.normalization
    payload_base = {
        "model_config": model.config.to_dict(),
        "window": dataclasses.asdict(window),
        "store": fingerprint,
        "train_config": dataclasses.asdict(dataclasses.replace(config, out=str(run_dir))),
    }

    from aqa_cli.report import training_progress

    with training_progress(console, enabled=distributed.is_main) as progress:
        for epoch in range(start_epoch, config.epochs + 1):
            started = time.perf_counter()
            train_set.set_epoch(epoch)
            sampler.set_epoch(epoch)
            trained.train()
            loss_sum, seen = 0.0, 0
            task = progress.start_epoch(epoch, config.epochs, len(loader))
            optimizer.zero_grad(set_to_none=True)
            for step, batch in enumerate(loader, start=1):
                video = normalization.apply(batch["video"].to(device, non_blocking=True))
                if channels_last:
                    video = video.contiguous(memory_format=torch.channels_last_3d)
                true = batch["score"].to(device)
                sync = step % config.accumulate == 0 or step == len(loader)
                context = trained.no_sync() if distributed.enabled and not sync else contextlib.nullcontext()
                with context:
                    with autocast(device, precision):
                        out = trained(video, batch["difficulty"].to(device))
                    loss = loss_fn(config.loss, out.score.float(), true)
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
            row = {"epoch": epoch, "train_loss": _mean_across(distributed, loss_sum, seen, device)}
            if distributed.is_main:
                for split in ("val", "test"):
                    if rows[split] and (split == "val" or config.test_curve):
                        found = predict(
                            model, config.store, rows[split], window, device, precision, config.batch_size
                        )
                        result = metrics(found.score, found.true, score_span)
                        row[f"{split}_rho"], row[f"{split}_r_l2"] = result["rho"], result["r_l2"]
                row["lr"] = optimizer.param_groups[0]["lr"]
                row["seconds"] = round(time.perf_counter() - started, 2)
                metrics_rows.append(row)
                is_best = rows["val"] and row.get("val_rho", -math.inf) > best["val_rho"]
                if is_best:
                    best = {"epoch": epoch, "val_rho": row["val_rho"]}
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

        plot_training_curves(metrics_rows, run_dir / "curves.png")
    if distributed.enabled:
        torch.distributed.destroy_process_group()
    return TrainResult(run_dir, metrics_rows, best["epoch"])


def _start_regressor_at_mean_quality(model, train_set: StoreClips) -> None:
    """Start the regressor's bias at the mean training quality (score / difficulty), not at 0: the
    first epochs then learn differences between dives instead of the scale of the scores."""
    rows = train_set.rows
    scores, difficulties = train_set.scores[rows], train_set.difficulties[rows]
    if model.head.use_difficulty:
        scores = np.where(
            np.isfinite(difficulties), scores / np.where(difficulties > 0, difficulties, 1), scores
        )
    with torch.no_grad():
        model.head.regressor.bias.fill_(float(np.mean(scores)))


def _normalization(name: str) -> dict | None:
    if not name:
        return None
    from aqa_cli.models import Normalization

    return Normalization.named(name).to_dict()


def _resume_state(run_dir: Path, config: TrainConfig) -> dict:
    path = run_dir / LAST
    if not path.is_file():
        raise AqaError(f"nothing to resume: {path} does not exist; start the run without --resume")
    state = load_checkpoint(path)
    if state["epoch"] >= config.epochs:
        raise AqaError(f"{run_dir} already finished {state['epoch']} epochs; raise --epochs to train longer")
    return state


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
    temp = run_dir / "metrics.csv.tmp"
    temp.write_text(buffer.getvalue())
    temp.replace(run_dir / "metrics.csv")
