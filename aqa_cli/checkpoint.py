"""Training checkpoints: self-describing files from which `eval` and `score` rebuild the model.

A checkpoint holds the model config (architecture, family, normalization), the input window, the
preprocessing of the store it was trained on, the training config, and the weights; a training
checkpoint adds optimizer, scaler, RNG states and metrics so that a run can resume. Files are written
atomically and always read with `weights_only=True` (a checkpoint is untrusted input).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from aqa_cli import __version__
from aqa_cli.data import WindowConfig
from aqa_cli.errors import AqaError
from aqa_cli.models import AQAModel, ModelConfig, build_model

FORMAT_NAME = "aqa-checkpoint"
FORMAT_VERSION = 1
RUNS_DIR = Path("runs")
LAST, BEST = "last.pt", "best.pt"


def save_checkpoint(path: Path, payload: dict) -> None:
    """torch.save to a temporary file, fsync, then rename: a kill leaves the old file or the new one."""
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        **payload,
    }
    temp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(temp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise AqaError(
            f"cannot write checkpoint {path}: {exc.strerror or exc}; free space or choose --out"
        ) from exc


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint written by `aqa train`, refusing anything that is not plain tensors and data."""
    if not path.is_file():
        raise AqaError(f"checkpoint not found: {path}; train one with `aqa train` or pass --checkpoint/--run")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise AqaError(
            f"refusing to load {path}: it holds objects other than tensors and plain data ({str(exc).splitlines()[0]}); "
            "it was not written by aqa and may be malicious"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise AqaError(
            f"{path} is damaged or not a torch checkpoint ({exc}); use another checkpoint"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise AqaError(
            f"{path} is not an aqa training checkpoint; pretrained backbone files go to `aqa train --weights`"
        )
    if int(payload.get("format_version", 0)) > FORMAT_VERSION:
        raise AqaError(f"{path} was written by a newer aqa ({payload.get('tool_version')}): upgrade aqa")
    return payload


@dataclass
class TrainedModel:
    """A model rebuilt from a checkpoint, with what it needs to see the same pixels as in training."""

    model: AQAModel
    window: WindowConfig
    store: dict  # the training store's preprocessing: frames, fit, width, height
    path: Path
    payload: dict


def load_trained_model(path: Path) -> TrainedModel:
    payload = load_checkpoint(path)
    config = ModelConfig.from_dict(payload["model_config"])
    model = build_model(config)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise AqaError(
            f"{path}: the weights do not fit the model it describes ({str(exc).splitlines()[0]})"
        ) from None
    model.eval()
    return TrainedModel(model, WindowConfig(**payload["window"]), payload["store"], path, payload)


def find_checkpoint(run: Path | None = None, checkpoint: Path | None = None) -> Path:
    """An explicit checkpoint; else the run's best (chosen on validation) or last; else the latest run's."""
    if checkpoint is not None:
        return checkpoint
    if run is None:
        runs = (
            sorted(RUNS_DIR.glob(f"*/{LAST}"), key=lambda p: p.stat().st_mtime) if RUNS_DIR.is_dir() else []
        )
        if not runs:
            raise AqaError(
                f"no trained model: {RUNS_DIR}/ holds no run; train with `aqa train` or pass --checkpoint"
            )
        run = runs[-1].parent
    for name in (BEST, LAST):
        if (run / name).is_file():
            return run / name
    raise AqaError(f"{run} holds no checkpoint ({BEST} or {LAST}); is it a run directory of `aqa train`?")
