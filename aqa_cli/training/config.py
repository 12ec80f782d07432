"""Training configuration: defaults < a TOML file (--config) < flags given on the command line.

The config a run saves (`config.toml`) is such a file, so `aqa train --config runs/X/config.toml`
repeats a run exactly.

Per-head defaults: the optimisation settings below marked "head default" are left at a sentinel ("" or
-1) unless given, and `resolve_head_defaults` (called once, when training starts) fills them in from the
aggregation's defaults: the paper's for `avg` and `wd` (Adam, lr 1e-4, constant, batch 2, 50 epochs,
L1 + L2, all clips), the frozen Fis-V research settings for `attn` and `gdlt` (AdamW, lr 3e-4, weight decay
0.01, cosine schedule, no warm-up, batch 16, 60 epochs, MSE on the [0, 1]-scaled quality, a random run of
64 clips in training). A run's config.toml and checkpoints record the resolved values.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from aqa_cli.util.errors import AqaError

HEAD_DEFAULT = -1
"""A numeric setting left at this (or a string left "") takes its aggregation's default."""


@dataclass
class TrainConfig:
    # data
    store: str = "data/mtl_aqa.h5"
    frames: int = 96
    jitter: int = 6
    crop: int = 112
    crop_mode: str = "centre"  # training crops: centre (the paper), or random
    flip: bool = True
    val_fraction: float = 0.0
    features: str = ""  # a feature store (`aqa extract`, `aqa features import`): train the heads only
    target: str = ""  # the feature store's score column to predict; "" = its default
    # model
    depth: int = 34
    conv: str = "2plus1d"
    family: str = ""  # "" = from --weights, else hara
    weights: str = ""  # a public pretrained checkpoint file; "" = random initialisation
    normalization: str = ""  # "" = what the weights expect
    clip: int = 32
    agg: str = "wd"
    wd_dropout: float = 0.1
    use_difficulty: bool = True
    dropout: float = -1.0  # the attn/gdlt heads' dropout; head default
    # optimisation (-1 / "": the aggregation's default, see HEAD_DEFAULTS)
    epochs: int = -1
    batch_size: int = -1
    accumulate: int = 1
    lr: float = -1.0  # randomly initialised modules
    backbone_lr: float = 1e-5  # pretrained backbone (a random one trains at lr)
    loss: str = ""
    optimizer: str = ""  # adam, adamw or sgd
    weight_decay: float = -1.0
    schedule: str = ""  # constant or cosine (per optimisation step), after `warmup` epochs of linear warm-up
    warmup: int = -1  # epochs
    clip_crop: int = -1  # train on a random contiguous run of this many clips (0: all clips)
    stream: bool = False  # --features: read every batch from the store even when it fits in memory
    folds: int = 0  # k-fold cross-validation inside train (`aqa experiment --folds`): 0 = off
    fold: int = 0  # which fold is this run's validation set
    seed: int = 0
    # hardware
    device: str = "auto"
    precision: str = "auto"
    channels_last: str = "auto"  # auto: on CUDA
    grad_checkpoint: bool = False
    workers: int = 2
    # bookkeeping
    out: str = ""  # run directory; "" = runs/<conv><depth>-clip<clip>-<agg>-<time>
    test_curve: bool = True  # also evaluate the test split each epoch, for the curves only

    def to_toml(self) -> str:
        lines = ["# aqa train config: `aqa train --config THIS_FILE` repeats the run"]
        for field in dataclasses.fields(self):
            lines.append(f"{field.name} = {toml_value(getattr(self, field.name))}")
        return "\n".join(lines) + "\n"


LOSSES = ("l1+l2", "l1", "l2", "mse")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")

PAPER_DEFAULTS = {
    "epochs": 50,
    "batch_size": 2,
    "lr": 1e-4,
    "loss": "l1+l2",
    "optimizer": "adam",
    "weight_decay": 0.0,
    "schedule": "constant",
    "warmup": 0,
    "clip_crop": 0,
    "dropout": 0.0,  # unused by avg and wd (the Weight-Decider's is wd_dropout)
}
LONG_DEFAULTS = {
    **PAPER_DEFAULTS,
    "epochs": 60,
    "batch_size": 16,
    "lr": 3e-4,
    "loss": "mse",
    "optimizer": "adamw",
    "weight_decay": 0.01,
    "schedule": "cosine",
    "clip_crop": 64,
}
HEAD_DEFAULT_NUMBERS = {name for name, value in PAPER_DEFAULTS.items() if not isinstance(value, str)}
"""The numeric settings whose sentinel (-1) means "the head's default": a value the user gives is checked."""
HEAD_DEFAULTS = {
    "avg": PAPER_DEFAULTS,
    "wd": PAPER_DEFAULTS,
    "attn": {**LONG_DEFAULTS, "dropout": 0.0},
    "gdlt": {**LONG_DEFAULTS, "dropout": 0.3},
}
"""Per aggregation: the value of every "head default" setting the user did not give."""
HEAD_OPTIONS = {
    "attn": {"hidden": 256, "width": 128, "attn_hidden": 64, "mean_path": False},
    "gdlt": {
        "width": 128,
        "proj_hidden": None,
        "heads": 1,
        "encoder_layers": 1,
        "decoder_layers": 2,
        "queries": 4,
        "ff_mult": 3,
        "weighting": "sigmoid",
    },
}
"""The architecture of the long heads (the frozen Fis-V research settings); dropout comes from --dropout."""


def resolve_head_defaults(config: TrainConfig) -> TrainConfig:
    """The config with every "head default" setting (-1 or "") replaced by its aggregation's default;
    an unknown aggregation keeps the paper's (and fails in `check_optimisation`)."""
    defaults = HEAD_DEFAULTS.get(config.agg, PAPER_DEFAULTS)
    changes = {}
    for name, value in defaults.items():
        current = getattr(config, name)
        if current == "" or (not isinstance(current, str) and current == HEAD_DEFAULT):
            changes[name] = value
    return dataclasses.replace(config, **changes)


def head_options(config: TrainConfig) -> dict | None:
    """The ModelConfig.head_options of the config's aggregation (None for avg and wd)."""
    if config.agg not in HEAD_OPTIONS:
        return None
    return {**HEAD_OPTIONS[config.agg], "dropout": float(config.dropout)}


def head_default_text(name: str) -> str:
    """A help text's default of a per-head setting, e.g. `1e-4 for avg/wd, 3e-4 for attn/gdlt`."""

    def shown(value) -> str:
        return f"{value:g}" if isinstance(value, float) else str(value)

    paper, attn, gdlt = (shown(HEAD_DEFAULTS[agg][name]) for agg in ("avg", "attn", "gdlt"))
    long = f"{attn} for attn/gdlt" if attn == gdlt else f"{attn} for attn, {gdlt} for gdlt"
    return f"{paper} for avg/wd, {long}"


def toml_value(value) -> str:
    """A bool, string, number or list of them as TOML."""
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise AqaError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AqaError(f"{path} is not valid TOML: {exc}") from None


def resolve_config(config_file: Path | None, overrides: dict) -> TrainConfig:
    """Defaults, then the file's values, then every flag the user actually gave (not None)."""
    values = read_toml(config_file) if config_file is not None else {}
    known = {field.name: field.type for field in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise AqaError(f"{config_file}: unknown setting(s) {', '.join(unknown)}; see `aqa train --help`")
    values.update({key: value for key, value in overrides.items() if value is not None})
    config = TrainConfig(**values)
    for field in dataclasses.fields(config):
        value, default = getattr(config, field.name), getattr(TrainConfig, field.name)
        if type(value) is int and type(default) is float:
            setattr(config, field.name, float(value))
        elif type(value) is not type(default):
            raise AqaError(f"setting {field.name} = {value!r} should be a {type(default).__name__}")
    for name in sorted(HEAD_DEFAULT_NUMBERS & set(values)):  # given: never the "head default" sentinel
        value, least = getattr(config, name), 1 if name in ("epochs", "batch_size") else 0
        if not (math.isfinite(value) and value >= least):
            raise AqaError(f"--{name.replace('_', '-')} must be a finite number >= {least} (got {value})")
    return config
