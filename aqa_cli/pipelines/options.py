"""The settings of each pipeline, as plain dataclasses that import nothing heavy (no torch, h5py or PyAV):
the command line reads its help texts' defaults from them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from aqa_cli.stores.common import DEFAULT_COMPRESSION
from aqa_cli.training.config import toml_value

DEFAULT_FRAMES = 103
"""Frames kept per sample: MTL-AQA's window, enough for a 96-frame training window to end at any of the
last 6 frames."""
DEFAULT_TIMEOUT = 900.0
"""A worker that finishes no clip for this long is stopped and its video reported failed; a whole-event
MTL-AQA video (up to an hour) decodes in a few minutes on one core."""


@dataclass
class PreprocessOptions:
    frames: int | None = None  # None: DEFAULT_FRAMES
    fit: str = "uniform"
    workers: int | None = None
    compression: str = DEFAULT_COMPRESSION  # video frames barely compress losslessly; see docs/FORMAT.md
    shard: str | None = None
    timeout: float | None = None  # default DEFAULT_TIMEOUT
    action: str | None = None  # keep only this action's samples (AQA-7, FineDiving)


@dataclass
class ExtractOptions:
    store: str = "data/mtl_aqa.h5"
    out: str = ""  # "" = next to the store: <store stem>-<conv><depth>-clip<clip>[-views].features.h5
    depth: int = 34
    conv: str = "2plus1d"
    clip: int = 32
    weights: str = ""  # a weights name or a file; "" = random initialisation drawn from `seed`
    family: str = ""
    normalization: str = ""
    frames: int = 96
    crop: int = 112
    views: bool = False
    seed: int = 0
    batch_size: int = 4
    dtype: str = "float16"
    device: str = "auto"
    precision: str = "auto"
    workers: int = 2

    def out_path(self) -> Path:
        if self.out:
            return Path(self.out)
        store = Path(self.store)
        suffix = "-views" if self.views else ""
        return store.with_name(f"{store.stem}-{self.conv}{self.depth}-clip{self.clip}{suffix}.features.h5")


@dataclass
class StreamExtractOptions:
    """`aqa extract SOURCE --recipe NAME`: raw videos to a recipe's clip features."""

    source: str = ""
    recipe: str = ""
    weights: str = ""  # "" = the recipe's default weights; a name or a file in the recipe's layout
    clip: int | None = None  # None = the recipe's own clip length and stride
    stride: int | None = None
    resize: str = (
        "exact"  # the decode workers' resizer: exact (numpy, torchvision's within 1 level) or ffmpeg
    )
    out: str = ""  # "" = data/<source>-<recipe>[.shardKofN].features.h5
    shard: str | None = None
    batch_size: int = 4  # clips per forward pass
    dtype: str = "float32"
    device: str = "auto"
    precision: str = "auto"
    workers: int | None = None  # decode processes; None = one per core
    timeout: float | None = None  # default DEFAULT_TIMEOUT


VIDEO_ONLY = {"depth", "conv", "clip", "finetune", "weights", "views"}
"""Grid settings that choose backbones and clips: a grid on a feature store (`features`) has none."""


@dataclass
class ExperimentGrid:
    depth: list[int] = field(default_factory=lambda: [34])
    conv: list[str] = field(default_factory=lambda: ["2plus1d"])
    clip: list[int] = field(default_factory=lambda: [32])
    agg: list[str] = field(default_factory=lambda: ["avg", "wd"])
    target: list[str] = field(default_factory=lambda: [""])  # "" = the feature store's default
    seeds: int = 3
    folds: int = 0  # k-fold cross-validation inside train, measured on the held-out folds; 0 = off (test)
    finetune: bool = False
    features: str = ""  # train on this feature store (imported or extracted): aggregations x seeds
    weights: list[str] = field(default_factory=list)  # backbone files, matched to cells by depth/conv/clip
    views: bool = False  # extract augmented views too
    out: str = ""
    train: dict = field(default_factory=dict)  # TrainConfig settings shared by every run

    def to_toml(self) -> str:
        lines = ["# aqa experiment grid: `aqa experiment --config THIS_FILE` repeats it"]
        unused = {"train"} | (VIDEO_ONLY if self.features else set())
        for item in dataclasses.fields(self):
            if item.name not in unused:
                lines.append(f"{item.name} = {toml_value(getattr(self, item.name))}")
        lines.append("\n[train]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in sorted(self.train.items()))
        return "\n".join(lines) + "\n"
