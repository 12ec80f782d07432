"""Training checkpoints: self-describing files from which `eval` and `score` rebuild the model (see
`checkpoints.restore`).

A checkpoint holds the model config (architecture, family, normalization), the input window, the
preprocessing of the store it was trained on, the training config, and the weights; a training
checkpoint adds optimizer, scaler, RNG states and metrics so that a run can resume. Files are written
atomically and always read with `weights_only=True` (a checkpoint is untrusted input).

Integrity: `integrity` records a sha256 of every tensor (by its path in the payload, e.g.
`model/head.regressor.weight`) and one of everything else; loading checks them and names what is damaged
(torch itself does not check the zip's CRCs, so a flipped bit would otherwise load as a wrong weight).
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch

from aqa_cli import __version__
from aqa_cli.models.provenance import tensor_sha256
from aqa_cli.util.errors import AqaError
from aqa_cli.util.interrupts import ctrl_c_held
from aqa_cli.util.safe_output import atomic_output

FORMAT_NAME = "aqa-checkpoint"
FORMAT_VERSION = 1
RUNS_DIR = Path("runs")
LAST, BEST = "last.pt", "best.pt"
INTEGRITY = "integrity"
MAX_NAMED = 5  # damaged tensors named in the error


def save_checkpoint(path: Path, payload: dict) -> None:
    """torch.save through `atomic_output`: a kill leaves the old file or the new one, never a mix."""
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        **payload,
    }
    payload[INTEGRITY] = _checksums(payload)
    # Ctrl-C held: torch's zip writer calls back into Python to write, and a KeyboardInterrupt there
    # surfaces as a RuntimeError ("unexpected pos"); the checkpoint is finished, then interrupted.
    with (
        ctrl_c_held(),
        atomic_output(path, "free some space or choose another --out") as temp,
        open(temp, "wb") as f,
    ):
        torch.save(payload, f)
        f.flush()


def _tensors(value: object, name: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a payload with its path, e.g. `optimizer/state/3/exp_avg`."""
    if isinstance(value, torch.Tensor):
        yield name, value
    elif isinstance(value, dict | list | tuple):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            yield from _tensors(item, f"{name}/{key}" if name else str(key))


def _skeleton(value: object) -> object:
    """The payload with every tensor replaced by a marker: what the metadata checksum covers."""
    if isinstance(value, torch.Tensor):
        return "<tensor>"
    if isinstance(value, dict):
        return {key: _skeleton(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_skeleton(item) for item in value)
    return value


def _checksums(payload: dict) -> dict:
    body = {key: value for key, value in payload.items() if key != INTEGRITY}
    return {
        "tensors": {name: tensor_sha256(tensor) for name, tensor in _tensors(body)},
        "metadata": hashlib.sha256(repr(_skeleton(body)).encode()).hexdigest(),
    }


def _check_integrity(path: Path, payload: dict, remedy: str) -> None:
    """Compare a loaded payload with the checksums recorded when it was written (older files have none)."""
    recorded = payload.get(INTEGRITY)
    if recorded is None:
        return
    actual = _checksums(payload)
    names = recorded["tensors"].keys() | actual["tensors"].keys()
    damaged = sorted(name for name in names if recorded["tensors"].get(name) != actual["tensors"].get(name))
    if recorded["metadata"] != actual["metadata"]:
        damaged.append("its settings and metadata")
    if damaged:
        more = f" and {len(damaged) - MAX_NAMED} more" if len(damaged) > MAX_NAMED else ""
        raise AqaError(
            f"{path} is damaged: {', '.join(damaged[:MAX_NAMED])}{more} no longer match the checksums recorded "
            f"when it was written (bits changed on disk or in a copy); {remedy}"
        )


def load_checkpoint(path: Path, remedy: str = "copy it again or use another checkpoint") -> dict:
    """Read a checkpoint written by `aqa train`, refusing anything that is not plain tensors and data;
    `remedy` is what the message for a damaged file tells the user to do."""
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
        raise AqaError(f"{path} is damaged or not a torch checkpoint ({exc}); {remedy}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise AqaError(
            f"{path} is not an aqa training checkpoint; pretrained backbone files go to `aqa train --weights`"
        )
    if int(payload.get("format_version", 0)) > FORMAT_VERSION:
        raise AqaError(f"{path} was written by a newer aqa ({payload.get('tool_version')}): upgrade aqa")
    _check_integrity(path, payload, remedy)
    return payload


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
