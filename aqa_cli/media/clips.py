"""Decoding the samples of one source in one pass: each sample's frame window, fitted to the store's frame
count (`fitting.stored_indices`), resized and converted by the decoder. Shared by `aqa preprocess` (in its
worker processes) and `aqa score` (one video at a time), so that a scored video is prepared exactly as a
stored one."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aqa_cli.media.decoder import VideoDecoder, decode_image
from aqa_cli.media.fitting import stored_indices
from aqa_cli.media.sources.base import IMAGES_NUMBERED, IMAGES_SORTED, VIDEO, Sample
from aqa_cli.media.sources.folder import IMAGE_SUFFIXES
from aqa_cli.util.errors import AqaError

BUFFER_FRAMES = 1024
"""A source with no end frame is held in memory while its length is unknown, up to this many frames; a
longer one is decoded twice (count, then keep) so memory never grows with the video's length."""

Finish = Callable[[str, np.ndarray, np.ndarray, dict], None]
"""`finish(sample_id, frames (T, H, W, 3) uint8, source frame indices (T,), metadata)`."""


@dataclass
class Job:
    """All samples read from one source file or folder, decoded in one pass."""

    source: str
    source_kind: str
    samples: list[tuple[int, Sample]]  # (position in the scan, sample)


@dataclass(frozen=True)
class ClipShape:
    """The fixed shape every stored clip has: `frames` frames of `width` x `height`."""

    frames: int
    width: int
    height: int

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)


def decode_job(job: Job, shape: ClipShape, finish: Finish, threads: int = 0) -> None:
    """Decode one source once, calling `finish(sample_id, frames, indices, metadata)` for each of its
    samples as soon as its frames are decoded (an error stops the job: the caller reports the samples
    that did not finish)."""
    if job.source_kind in (IMAGES_SORTED, IMAGES_NUMBERED):
        _decode_images(job, shape, finish)
    else:
        _decode_video(job, shape, finish, threads)


def decode_clip(path: str | Path, shape: ClipShape, fit: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """One video or frame folder, prepared exactly as preprocess stores it: (frames, indices, metadata)."""
    path = Path(path)
    kind = IMAGES_SORTED if path.is_dir() else VIDEO
    sample = Sample(id=path.name, source=str(path), source_kind=kind, fit=fit)
    found = {}

    def keep(sample_id: str, frames: np.ndarray, indices: np.ndarray, meta: dict) -> None:
        found.update(frames=frames, indices=indices, meta=meta)

    decode_job(Job(str(path), kind, [(0, sample)]), shape, keep)
    return found["frames"], found["indices"], found["meta"]


def window_indices(sample: Sample, length: int | None, frames: int) -> np.ndarray:
    """Absolute source frame indices stored for `sample` (length None: the clip's end is given)."""
    first = sample.first or 0
    last = sample.last if sample.last is not None else length
    if length is not None and last > length:
        raise AqaError(f"{sample.source} has {length} frames but clip {sample.id} needs frames up to {last}")
    if last <= first:
        raise AqaError(
            f"{sample.source} has {length} frames, none of them in clip {sample.id} (from {first})"
        )
    return first + stored_indices(last - first, frames, sample.fit or "uniform")


def _decode_video(job: Job, shape: ClipShape, finish: Finish, threads: int = 0) -> None:
    size = shape.size
    samples = [sample for _, sample in job.samples]
    with VideoDecoder(job.source, size, threads) as decoder:
        meta = {"orig_width": decoder.info.width, "orig_height": decoder.info.height, "fps": decoder.info.fps}
        length = None
        if any(sample.last is None for sample in samples):
            buffered = []
            for _, frame in decoder.frames():
                buffered.append(frame)
                if len(buffered) > BUFFER_FRAMES:
                    buffered = None
                    break
            if buffered is not None:
                meta["frames_lost"] = decoder.frames_lost
                for sample in samples:
                    indices = window_indices(sample, len(buffered), shape.frames)
                    finish(sample.id, np.stack([buffered[i] for i in indices]), indices, meta)
                return
            length = BUFFER_FRAMES + 1 + sum(1 for _ in decoder.frames(wanted=lambda _: False))
    with VideoDecoder(job.source, size, threads) as decoder:
        _stream_windows(decoder, samples, length, shape, meta, finish)


def _stream_windows(decoder, samples: list[Sample], length, shape: ClipShape, meta: dict, finish) -> None:
    """One pass keeping only wanted frames; each sample is written as soon as its last frame is decoded."""
    windows = {sample.id: window_indices(sample, length, shape.frames) for sample in samples}
    by_end = sorted(windows, key=lambda sample_id: windows[sample_id][-1])
    wanted = set(np.concatenate(list(windows.values())).tolist())
    kept: dict[int, np.ndarray] = {}
    for index, frame in decoder.frames(wanted=wanted.__contains__):
        if frame is None:
            continue
        kept[index] = frame
        while by_end and windows[by_end[0]][-1] == index:
            sample_id = by_end.pop(0)
            indices = windows.pop(sample_id)
            finish(
                sample_id,
                np.stack([kept[i] for i in indices]),
                indices,
                {**meta, "frames_lost": decoder.frames_lost},
            )
            oldest_needed = min((w[0] for w in windows.values()), default=index + 1)
            kept = {i: f for i, f in kept.items() if i >= oldest_needed}
        if not by_end:
            return


def _decode_images(job: Job, shape: ClipShape, finish: Finish) -> None:
    folder = Path(job.source)
    if not folder.is_dir():
        raise AqaError(f"frame folder not found: {folder}")
    if job.source_kind == IMAGES_SORTED:
        files = sorted(p for p in os.listdir(folder) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise AqaError(f"no frame images in {folder}")
        length = len(files)

        def path_of(index: int) -> Path:
            return folder / files[index]
    else:
        length = None

        def path_of(index: int) -> Path:
            return folder / f"{index + 1}.jpg"

    size = shape.size
    decoded: dict[int, np.ndarray] = {}
    meta = None
    for _, sample in job.samples:
        indices = window_indices(sample, length, shape.frames)
        for index in indices:
            if index not in decoded:
                path = path_of(int(index))
                if not path.exists():
                    raise AqaError(f"frame {index + 1} of clip {sample.id} is missing: {path} does not exist")
                decoded[int(index)] = decode_image(path, size)
        if meta is None:
            with VideoDecoder(path_of(int(indices[0])), None) as probe:
                meta = {
                    "orig_width": probe.info.width,
                    "orig_height": probe.info.height,
                    "fps": float("nan"),
                    "frames_lost": 0,
                }
        finish(sample.id, np.stack([decoded[int(i)] for i in indices]), indices, meta)
