"""Training configuration: defaults < a TOML file (--config) < flags given on the command line.

The config a run saves (`config.toml`) is such a file, so `aqa train --config runs/X/config.toml`
repeats a run exactly.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path

from aqa_cli.util.errors import AqaError


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
    # optimisation
    epochs: int = 50
    batch_size: int = 2
    accumulate: int = 1
    lr: float = 1e-4  # randomly initialised modules
    backbone_lr: float = 1e-5  # pretrained backbone (a random one trains at lr)
    loss: str = "l1+l2"
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


LOSSES = ("l1+l2", "l1", "l2")


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
    return config
