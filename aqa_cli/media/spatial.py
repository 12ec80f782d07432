"""A recipe's spatial steps in numpy, for decoding workers that have no torch.

`apply_spatial_plan` takes the plan `models.recipes.spatial_plan` computes (plain numbers: resize size,
crop box, final size, antialiasing) and gives the same uint8 pixels as `models.recipes.transform_frames`
(torchvision's resize), within one grey level: bilinear resampling as a separable triangle filter,
widened by the shrink factor when antialiasing (PIL's and torchvision's antialiased bilinear), not
widened without it (torch's plain bilinear, what torchvision's video weights' transforms use).
"""

from __future__ import annotations

import numpy as np

from aqa_cli.util.errors import AqaError


def _taps(source: int, target: int, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """Source indices (target, K) and normalized weights (target, K) of bilinear resampling along one axis."""
    scale = source / target
    support = max(scale, 1.0) if antialias else 1.0
    centre = (np.arange(target) + 0.5) * scale
    first = np.floor(centre - support).astype(np.int64)
    count = int(np.ceil(2 * support)) + 2
    index = first[:, None] + np.arange(count)[None, :]
    weights = np.maximum(0.0, 1.0 - np.abs((index + 0.5 - centre[:, None]) / support))
    weights[(index < 0) | (index >= source)] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    return np.clip(index, 0, source - 1), weights.astype(np.float32)


def resize(frames: np.ndarray, width: int, height: int, antialias: bool) -> np.ndarray:
    """uint8 (T, H, W, 3) -> uint8 (T, height, width, 3), bilinear."""
    source_height, source_width = frames.shape[1:3]
    if (source_width, source_height) == (width, height):
        return frames
    rows, row_weights = _taps(source_height, height, antialias)
    columns, column_weights = _taps(source_width, width, antialias)
    video = frames.astype(np.float32)
    video = np.einsum("tokwc,ok->towc", video[:, rows], row_weights)
    video = np.einsum("thokc,ok->thoc", video[:, :, columns], column_weights)
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)


def crop(frames: np.ndarray, left: int, top: int, width: int, height: int) -> np.ndarray:
    """The box of (T, H, W, 3) frames; parts outside the frames are black, as torchvision pads."""
    _, frame_height, frame_width, _ = frames.shape
    out = np.zeros((frames.shape[0], height, width, 3), dtype=frames.dtype)
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + width, frame_width), min(top + height, frame_height)
    out[:, y0 - top : y1 - top, x0 - left : x1 - left] = frames[:, y0:y1, x0:x1]
    return out


def apply_spatial_plan(frames: np.ndarray, plan: dict) -> np.ndarray:
    """uint8 (T, H, W, 3) display-oriented frames -> uint8 (T, h, w, 3): resize, crop, final resize."""
    if plan.get("interpolation", "bilinear") != "bilinear":
        raise AqaError(f"numpy resampling is bilinear only, not {plan['interpolation']!r}")
    antialias = bool(plan.get("antialias", True))
    video = crop(resize(frames, *plan["resize"], antialias), *plan["crop"])
    return resize(video, *plan["final"], antialias)
