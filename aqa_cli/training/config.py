"""Training configuration: defaults < a TOML file (--config) < flags given on the command line.

The config a run saves (`config.toml`) is such a file, so `aqa train --config runs/X/config.toml`
repeats a run exactly.

Per-head defaults: the optimisation settings below marked "head default" are left at a sentinel ("" or
-1) unless given, and `resolve_head_defaults` (called once, when training starts) fills them in from the
aggregation's defaults: the paper's for `avg` and `wd` (Adam, lr 1e-4, constant, batch 2, 50 epochs,
L1 + L2, all clips), the frozen Fis-V research settings for `attn` and `gdlt` (AdamW, lr 3e-4, weight decay
0.01, cosine schedule, no warm-up, batch 16, 60 epochs, MSE on the [0, 1]-scaled quality, a random run of
64 clips in training). A preset (`--preset`, `training.presets`) fills these settings first, for the
run's target, and gives its head unless --agg is given. A run's config.toml and checkpoints record the
resolved values.
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
    preset: str = ""  # a named whole recipe (`training.presets`): fills every setting not given
    # the long heads' architecture (-1: the head's own, HEAD_OPTIONS)
    width: int = -1
    proj_hidden: int = -1  # gdlt: hidden width of the projection (0: one Linear)
    encoder_layers: int = -1  # gdlt
    decoder_layers: int = -1  # gdlt
    queries: int = -1  # gdlt: grade queries
    gdlt_layout: str = ""  # gdlt: "aqa" or "code" (GDLT's released code: GDLT_LAYOUTS); "" = aqa
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
    min_lr: float = -1.0  # where the cosine schedule ends; head default
    label_scale: float = (
        -1.0
    )  # long heads: targets / this fixed maximum (0: the training range); head default
    triplet: float = -1.0  # gdlt: weight of the triplet term on the query outputs; head default
    triplet_margin: float = -1.0  # head default
    triplet_mining: str = ""  # gdlt: hardest (GDLT's code) or rolled; head default
    stream: bool = False  # --features: read every batch from the store even when it fits in memory
    contrastive: bool = False  # --features: exemplar-based regression (`training.contrastive`)
    exemplars: int = 10  # with --contrastive: training exemplars per video (per difficulty in the bank)
    ensemble: int = 0  # --features: train this many heads (seeds, or the folds of --folds) as one checkpoint
    ridge_blend: float = 0.0  # with --ensemble: the share of a ridge regression blended into its score
    ridge_pool: str = "mean"  # the blended ridge's input: mean or mean-max of the clip features
    aux_target: str = ""  # with --ensemble: also an ensemble on this score column, averaged in; "": none
    aux_weight: float = 0.5  # with --aux-target: that ensemble's share of the score
    folds: int = 0  # k-fold cross-validation inside train (`aqa experiment --folds`): 0 = off
    fold: int = 0  # which fold is this run's validation set
    resplit: int = 0  # >= 1: train/test re-drawn from the store's train + test by this seed (`data.splits`)
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
TRIPLET_MINING = ("hardest", "rolled")
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
    "min_lr": 0.0,
    "label_scale": 0.0,  # the long heads only
    "triplet": 0.0,  # gdlt only
    "triplet_margin": 1.0,
    "triplet_mining": "rolled",
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
ARCHITECTURE_SETTINGS = ("width", "proj_hidden", "encoder_layers", "decoder_layers", "queries")
"""TrainConfig settings that change HEAD_OPTIONS (-1: the head's own)."""
DEFAULT_GDLT_LAYOUT = "aqa"
GDLT_LAYOUTS = {
    "aqa": {
        "projection_norm": "layer",
        "query_std": 0.02,
        "final_norm": False,
        "xavier": False,
        "attention_dropout": False,
        "standardize": True,
    },
    "code": {
        "projection_norm": "batch",
        "query_std": 1.0,
        "final_norm": True,
        "xavier": True,
        "attention_dropout": True,
        "standardize": False,
    },
}
"""The two layouts of `models.long_heads.GDLTHead`'s details (its options, and `standardize` of
`models.heads.AQAHead`): ours, and that of GDLT's released code (xuangch/CVPR22_GDLT: BatchNorm after both
projection layers, grade queries as an nn.Embedding (N(0, 1)), nn.Transformer's final encoder and decoder
LayerNorms and its initialisation (Xavier-uniform matrices, the query-key-value ones drawn as one fused
matrix, zero attention biases), the score logits drawn as its nn.Linear draws them, nn.MultiheadAttention's
dropout on the attention weights, and the features as they are, not standardized)."""


def gdlt_head_options(layout: str) -> dict:
    """A GDLT layout's options of `models.long_heads.GDLTHead` itself (without AQAHead's `standardize`)."""
    return {name: value for name, value in GDLT_LAYOUTS[layout].items() if name != "standardize"}


def _unset(value) -> bool:
    return value == "" or (not isinstance(value, str) and value == HEAD_DEFAULT)


def resolve_head_defaults(config: TrainConfig) -> TrainConfig:
    """The config with every "head default" setting (-1 or "") replaced by its preset's value for the
    config's target (`training.presets`), else its aggregation's default; an unknown aggregation keeps the
    paper's (and fails in `check_optimisation`)."""
    from aqa_cli.training.presets import PRESETS

    if config.preset and config.preset not in PRESETS:
        raise AqaError(f"unknown --preset {config.preset!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[config.preset].values(config.target) if config.preset else {}
    preset = {  # architecture settings only where the head has them (a preset may be used with another head)
        name: value
        for name, value in preset.items()
        if (name not in ARCHITECTURE_SETTINGS or name in HEAD_OPTIONS.get(config.agg, {}))
        and (name != "gdlt_layout" or config.agg == "gdlt")
    }
    defaults = {**HEAD_DEFAULTS.get(config.agg, PAPER_DEFAULTS), **preset}
    changes = {name: value for name, value in defaults.items() if _unset(getattr(config, name))}
    return dataclasses.replace(config, **changes)


def preset_fixed(preset: str) -> dict:
    """The head and run settings a preset sets whatever the target ({} without one)."""
    from aqa_cli.training.presets import PRESETS

    if not preset:
        return {}
    if preset not in PRESETS:
        raise AqaError(f"unknown --preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[preset].fixed()


def head_options(config: TrainConfig) -> dict | None:
    """The ModelConfig.head_options of the config's aggregation (None for avg and wd), with the
    architecture settings given (or set by a preset) that the head has."""
    if config.agg not in HEAD_OPTIONS:
        return None
    options = {**HEAD_OPTIONS[config.agg], "dropout": float(config.dropout)}
    if config.agg == "gdlt":
        options.update(GDLT_LAYOUTS[config.gdlt_layout or DEFAULT_GDLT_LAYOUT])
    for name in ARCHITECTURE_SETTINGS:
        value = getattr(config, name)
        if value != HEAD_DEFAULT and name in options:
            options[name] = None if name == "proj_hidden" and value == 0 else value
    return options


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
    for name, value in preset_fixed(values.get("preset", "")).items():
        values.setdefault(name, value)  # the preset's head and run settings, unless given
    config = TrainConfig(**values)
    for field in dataclasses.fields(config):
        value, default = getattr(config, field.name), getattr(TrainConfig, field.name)
        if type(value) is int and type(default) is float:
            setattr(config, field.name, float(value))
        elif type(value) is not type(default):
            raise AqaError(f"setting {field.name} = {value!r} should be a {type(default).__name__}")
    given = HEAD_DEFAULT_NUMBERS & set(values)
    given |= {name for name in ARCHITECTURE_SETTINGS if values.get(name, HEAD_DEFAULT) != HEAD_DEFAULT}
    for name in sorted(given):  # given: never the "head default" sentinel
        at_least_one = name in ("epochs", "batch_size", *ARCHITECTURE_SETTINGS) and name != "proj_hidden"
        value, least = getattr(config, name), 1 if at_least_one else 0
        if not (math.isfinite(value) and value >= least):
            raise AqaError(f"--{name.replace('_', '-')} must be a finite number >= {least} (got {value})")
    if config.resplit < 0:
        raise AqaError(f"--resplit must be a seed >= 1 (0: the store's own split; got {config.resplit})")
    return config
