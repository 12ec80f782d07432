"""Head training on cached features: `aqa train --features` against a minimal plain-PyTorch loop.

The case of issue 12: Fis-V (Video Swin-B features, 124-302 clips per video), the paper's `avg` heads
(clip layers 1024-512-256-128, as `models.heads.clip_layer_widths` gives for 1024-d features), batch 2,
320 training videos and 80 validation videos, the same epochs. The reference is
`heads_reference.Trainer` (all features in one tensor, batches of indices, per-clip layers on the packed
real clips) configured to the same heads and recipe (Adam 1e-4, L1 + L2, all clips, raw features, fp32); aqa runs in memory (the default for a store that fits) and with `--stream` (the
per-sample HDF5 loader). Seconds are training seconds per epoch (aqa: metrics.csv, which also counts the
per-epoch validation pass), median over the epochs, one thread as aqa uses for heads on a CPU.
Target: aqa in memory within 1.3x the reference.
"""

from __future__ import annotations

import csv
import dataclasses
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import BIN, log
from heads_reference import FISV, Config, Trainer, load_fisv

from aqa_cli.training.config import GDLT_LAYOUTS, gdlt_head_options
from aqa_cli.util.runtime import native_bf16_cpu

EPOCHS = 5
TARGET_RATIO = 1.3


def run() -> list[dict]:
    if not FISV.is_dir():
        return [{"name": "heads on Fis-V", "measure": "not run: ../shared/data/features/fis-v is absent"}]
    work = Path(__file__).parent / "work" / "heads"
    work.mkdir(parents=True, exist_ok=True)
    store = work / "fis-v.features.h5"
    if not store.exists():
        subprocess.run(
            [BIN / "aqa", "features", "import", FISV, "--out", store], check=True, capture_output=True
        )
    reference = reference_seconds(PAPER_AVG)
    in_memory = aqa_seconds(store, work / "memory", PAPER_AVG_FLAGS)
    streamed = aqa_seconds(store, work / "stream", [*PAPER_AVG_FLAGS, "--stream"])
    preset_reference = reference_seconds(GDLT_FISV, PRESET_EPOCHS)
    preset = aqa_seconds(store, work / "preset", ["--preset", "gdlt-fisv"], PRESET_EPOCHS)
    bf16_reference = reference_seconds(dataclasses.replace(GDLT_FISV, bf16=True), PRESET_EPOCHS)
    bf16 = aqa_seconds(
        store, work / "preset-bf16", ["--preset", "gdlt-fisv", "--precision", "bf16"], PRESET_EPOCHS
    )
    measure = f"s/epoch, avg heads, batch 2, {EPOCHS} epochs, 320 train / 80 val (median)"
    return [
        {
            "name": "heads on Fis-V, in memory",
            "measure": measure,
            "aqa": round(in_memory, 3),
            "reference": round(reference, 3),
            "ratio": round(in_memory / reference, 2),
            "target": f"<= {TARGET_RATIO}",
            "met": in_memory / reference <= TARGET_RATIO,
        },
        {
            "name": "heads on Fis-V, --stream",
            "measure": measure,
            "aqa": round(streamed, 3),
            "reference": round(reference, 3),
            "ratio": round(streamed / reference, 2),
        },
        {
            "name": "heads on Fis-V, --preset gdlt-fisv",
            "measure": f"s/epoch, GDLT recipe (width 256, batch 32, 124-clip crops, SGD, triplet), {PRESET_EPOCHS} "
            "epochs, 320 train / 80 val (median)",
            "aqa": round(preset, 3),
            "reference": round(preset_reference, 3),
            "ratio": round(preset / preset_reference, 2),
            "target": f"<= {TARGET_RATIO}",
            "met": preset / preset_reference <= TARGET_RATIO,
        },
        {
            "name": "heads on Fis-V, --preset gdlt-fisv --precision bf16",
            "measure": f"s/epoch, as above under bf16 autocast ({'native' if native_bf16_cpu() else 'no native'} "
            f"bf16 on this CPU); fp32 preset {preset:.3f} s",
            "aqa": round(bf16, 3),
            "reference": round(bf16_reference, 3),
            "ratio": round(bf16 / bf16_reference, 2),
            "speedup_over_fp32": round(preset / bf16, 2),
            "target": f"<= {TARGET_RATIO}",
            "met": bf16 / bf16_reference <= TARGET_RATIO,
        },
    ]


PAPER_AVG = Config(
    head="avg",
    head_options={"widths": (512, 256, 128)},  # aqa's clip layers for 1024-d features
    optimizer="adam",
    lr=1e-4,
    weight_decay=0.0,
    epochs=EPOCHS,
    batch=2,
    schedule="constant",
    crop=None,
    loss="l1l2",
    standardize=False,
)
PAPER_AVG_FLAGS = ["--agg", "avg", "--batch-size", "2"]
PRESET_EPOCHS = 3
GDLT_FISV = Config(  # the `gdlt-fisv` preset's math (training.presets), label scale aside (no cost)
    head="gdlt",
    head_options={
        "width": 256,
        "proj_hidden": 512,
        "encoder_layers": 1,
        "decoder_layers": 2,
        "queries": 4,
        "dropout": 0.7,
        **gdlt_head_options("code"),
    },
    standardize=GDLT_LAYOUTS["code"]["standardize"],
    optimizer="sgd",
    lr=0.01,
    weight_decay=1e-4,
    epochs=PRESET_EPOCHS,
    batch=32,
    schedule="cosine",
    min_lr=1e-4,
    crop=124,
    loss="mse",
    triplet=0.5,
    triplet_mining="hardest",
)


def reference_seconds(config: Config, epochs: int = EPOCHS) -> float:
    torch.set_num_threads(1)
    data = load_fisv()
    trainer = Trainer(data, config, "TES", data.train_ids[:320])
    for _ in range(epochs):
        trainer.train_epoch()
        trainer.predict(data.train_ids[320:])  # as aqa validates every epoch
    log(f"heads: reference {trainer.epoch_seconds}")
    return statistics.median(trainer.epoch_seconds)


def aqa_seconds(store: Path, out: Path, extra: list[str], epochs: int = EPOCHS) -> float:
    args = [sys.executable, "-m", "aqa_cli", "train", "--features", store, "--target", "TES"]
    args += ["--epochs", str(epochs), "--val-fraction", "0.2", "--no-test-curve"]
    args += ["--device", "cpu", "--out", out, *extra]
    if out.exists():
        subprocess.run(["rm", "-rf", out], check=True)
    started = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    log(f"heads: aqa {' '.join(extra) or 'in memory'} in {time.perf_counter() - started:.1f} s")
    with open(out / "metrics.csv") as f:
        return statistics.median(float(row["seconds"]) for row in csv.DictReader(f))
