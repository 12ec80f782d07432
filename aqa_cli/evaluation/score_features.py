"""`aqa score FEATURES.npy`: heads trained on cached features (`aqa train --features`) score a video whose
clip features are already extracted, one (clips, dim) array per file (the layout `aqa features import`
reads), e.g. a new performance of a dataset published as features. The array goes to the heads as the
store's rows do (float32, all clips); contrastive heads compare it with the exemplars they carry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from aqa_cli.checkpoints.restore import load_head
from aqa_cli.evaluation.score_common import (
    clip_weights,
    difficulty_tensor,
    failure_entry,
    member_spread,
    score_fields,
)
from aqa_cli.util.errors import AqaError
from aqa_cli.util.runtime import resolve_device

FEATURE_SUFFIX = ".npy"


def is_feature_file(path: Path) -> bool:
    return path.suffix.lower() == FEATURE_SUFFIX


def score_feature_files(
    files: list[Path],
    difficulties: list[float | None],
    actions: list[str],
    payload: dict,
    path: Path,
    device: str,
) -> list[dict]:
    """One result per file: path, clips, the score fields, member_spread (ensembles), weights (their kind)
    and clips (clip, weight); or an `error` entry for a file that is not such an array."""
    if payload.get("features") is None:
        raise AqaError(
            f"{path} is an end-to-end model: it scores videos, not clip features; give videos, or heads "
            "trained with `aqa train --features`"
        )
    width = int(payload["features"]["feature_dim"])
    target = resolve_device(device)
    head = load_head(payload, path).to(target).eval()
    results = []
    for file, difficulty, action in zip(files, difficulties, actions, strict=True):
        try:
            features = _read_features(file, width)
        except AqaError as exc:
            results.append(failure_entry(file, path, str(exc)))
            continue
        with torch.inference_mode():
            output = head(
                torch.from_numpy(features)[None].to(target),
                difficulty_tensor(difficulty, target),
                actions=[action],
            )
        weights, kind = clip_weights(output.clip_weights, len(features))
        results.append(
            {
                "path": str(file),
                "clips_given": len(features),
                **score_fields(
                    payload, path, float(output.quality[0]), difficulty, head.use_difficulty, action
                ),
                **member_spread(output),
                "weights": kind,
                "clips": [{"clip": k, "weight": float(weight)} for k, weight in enumerate(weights)],
            }
        )
    return results


def _read_features(file: Path, width: int) -> np.ndarray:
    """The file's (clips, width) float32 array; one line on anything else."""
    try:
        array = np.load(file, allow_pickle=False)
    except FileNotFoundError:
        raise AqaError(f"{file}: no such file") from None
    except (ValueError, OSError) as exc:
        raise AqaError(f"{file} is not a plain .npy array of clip features ({exc})") from None
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != width or not len(array):
        raise AqaError(
            f"{file} holds an array of shape {array.shape}; these heads take (clips, {width}) clip features "
            "from the backbone they were trained on"
        )
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise AqaError(f"{file} holds non-numeric, NaN or infinite values; extract its features again")
    return array.astype(np.float32)
