"""Which pixels the model sees: the paper's 96-frame windows, crops and flips, cut from stored frames as
uint8 arrays (numpy only: no torch, no store)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from aqa_cli.util.errors import AqaError

CROP_MODES = ("centre", "random")


@dataclass(frozen=True)
class WindowConfig:
    """How a stored sample becomes the model's input."""

    frames: int = 96  # frames the model sees
    jitter: int = 6  # training windows end at a random one of the last `jitter` stored frames
    crop: int = 112  # square crop, centred (training too, as the paper says; `crop_mode`)
    flip: bool = True  # random horizontal flip in training
    crop_mode: str = "centre"  # training crops: "centre" (the paper), or "random" (where in the frame)


def check_window(
    window: WindowConfig, stored_frames: int, height: int, width: int, store_path
) -> WindowConfig:
    """The window that fits the store, or a clear error; shrinks `jitter` to what the store allows."""
    if stored_frames < window.frames:
        raise AqaError(
            f"{store_path} keeps {stored_frames} frames per sample but the model needs {window.frames}: "
            f"preprocess again with --frames {window.frames + window.jitter - 1} or train with --frames "
            f"{stored_frames}"
        )
    if window.crop_mode not in CROP_MODES:
        raise AqaError(f"unknown --crop-mode {window.crop_mode!r}; choose one of {', '.join(CROP_MODES)}")
    if window.crop > min(height, width):
        raise AqaError(f"--crop {window.crop} is larger than the stored {width}x{height} frames")
    jitter = min(window.jitter, stored_frames - window.frames + 1)
    return dataclasses.replace(window, jitter=max(jitter, 1))


def select_window(frames: np.ndarray, window: WindowConfig, rng: np.random.Generator | None) -> np.ndarray:
    """(T, H, W, 3) stored frames -> (3, frames, crop, crop) uint8 model input.

    Evaluation (`rng` None): the last `frames` frames, centre crop. Training: the window ends at a random
    one of the last `jitter` frames, with a random horizontal flip, and a centre crop (the paper's and its
    authors' loader) or, with `crop_mode` "random", a random one.
    """
    if rng is None:
        return centred_window(frames, window)
    stored, height, width, _ = frames.shape
    w = window
    end = stored - int(rng.integers(w.jitter))
    if w.crop_mode == "random":
        top, left = int(rng.integers(height - w.crop + 1)), int(rng.integers(width - w.crop + 1))
    else:
        top, left = (height - w.crop) // 2, (width - w.crop) // 2
    flip = w.flip and bool(rng.integers(2))
    return _cut_window(frames, w, end, top, left, flip)


def centred_window(
    frames: np.ndarray, window: WindowConfig, shift: int = 0, flip: bool = False
) -> np.ndarray:
    """The evaluation window (the last frames, centre crop), or the one ending `shift` frames earlier,
    optionally flipped: the fixed views that `aqa extract --views` stores."""
    stored, height, width, _ = frames.shape
    top, left = (height - window.crop) // 2, (width - window.crop) // 2
    return _cut_window(frames, window, stored - shift, top, left, flip)


def _cut_window(
    frames: np.ndarray, window: WindowConfig, end: int, top: int, left: int, flip: bool
) -> np.ndarray:
    clip = frames[end - window.frames : end, top : top + window.crop, left : left + window.crop]
    if flip:
        clip = clip[:, :, ::-1]
    return np.ascontiguousarray(clip.transpose(3, 0, 1, 2))


@dataclass(frozen=True)
class View:
    """One fixed input window of a sample: the evaluation window ending `shift` frames early, maybe flipped."""

    shift: int = 0
    flip: bool = False


def extraction_views(jitter: int, augment: bool) -> list[View]:
    """View 0 is the evaluation window. `--views` adds its mirror image and the window ending at the
    earliest frame a training window may end at (jitter - 1 frames earlier), plain and mirrored."""
    if not augment:
        return [View()]
    return [View(shift, flip) for shift in sorted({0, jitter - 1}) for flip in (False, True)]
