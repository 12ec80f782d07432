"""Raw video to a recipe's frames in bounded chunks, for `aqa extract --recipe` (torch-free: it runs in the
decode workers of `media.worker_pool`).

Two kinds of job:

* `ProbeWork` (one sample: a whole video, or a `[first, last)` range of one) says how many frames the
  sample has and its display size. The count comes from a demux pass (no decoding, so cheap); header
  counts are never used.
* `StreamWork` (a `StreamGroup`: the stream jobs of one video file, e.g. every dive of an MTL-AQA event
  video, `group_streams`) decodes the file once, up to the last frame any of them needs, and sends each
  sample the frames the recipe selected, resized and cropped by the recipe's spatial plan, as
  `FrameChunk`s of at most `chunk` frames: a worker holds one chunk per sample, and the pipe to the main
  process blocks it while the main process is busy, so memory stays flat in the video's length. Each
  sample ends with `Finished` as soon as the decode passes its range. Decoding counts the frames for
  real; when that count differs from the probe's (a damaged packet, a codec that packs two frames in
  one), the sample ends with `Recount` instead, and the main process selects again with the true
  count.

Rotation, variable frame rate and damaged packets are handled by `media.decoder`, as in preprocess.

Two resizers (`RESIZERS`), no torch in either, so workers start in a moment: `exact` decodes at the
display size and applies the plan in numpy (`media.spatial`: torchvision's resize within one grey
level, antialiased or not as the recipe says); `ffmpeg` lets FFmpeg's scaler resize while it converts
the colours (about 4x faster on HD video, always antialiased when shrinking, a few grey levels off).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from aqa_cli.media import spatial
from aqa_cli.media.decoder import INTERPOLATION, VideoDecoder
from aqa_cli.media.sources.base import VIDEO, Sample
from aqa_cli.util.errors import AqaError

CHUNK_FRAMES = 16


@dataclass(frozen=True)
class Probe:
    id: str
    frames: int  # frames of the sample's range, counted by demuxing
    width: int  # display-oriented size
    height: int
    fps: float | None


@dataclass(frozen=True)
class FrameChunk:
    id: str
    position: int  # position of its first frame among the selected ones
    frames: np.ndarray  # (k, h, w, 3) uint8: the selected frames, the spatial plan applied
    times: np.ndarray  # (k,) presentation time of each frame in seconds (nan where unknown)


@dataclass(frozen=True)
class Finished:
    id: str
    frames_lost: int
    fps: float | None


@dataclass(frozen=True)
class Recount:
    id: str
    frames: int  # the decoded count of the sample's range


@dataclass(frozen=True)
class Failure:
    id: str
    reason: str


@dataclass(frozen=True)
class StreamJob:
    sample: Sample
    selected: np.ndarray  # frame indices within the sample's range, in order (may repeat)
    plan: dict  # the recipe's spatial plan for this video's size (`models.recipes.spatial_plan`)
    frames: int  # the count `selected` was made for
    size: tuple[int, int]  # the video's display (width, height)


@dataclass(frozen=True)
class StreamGroup:
    """Stream jobs of one video file with one spatial plan, decoded in one pass."""

    jobs: tuple[StreamJob, ...]

    def without(self, done: set[str]) -> StreamGroup | None:
        """The group less the samples in `done` (None: nothing left)."""
        left = tuple(job for job in self.jobs if job.sample.id not in done)
        return StreamGroup(left) if left else None


def group_streams(jobs: list[StreamJob]) -> list[StreamGroup]:
    """The jobs as groups of one video file each (in the order their files first appear), so that a file
    holding many samples (an event video's dives) is decoded once, not once per sample."""
    groups: dict[tuple[str, str], list[StreamJob]] = {}
    for job in jobs:
        groups.setdefault((job.sample.source, repr(sorted(job.plan.items()))), []).append(job)
    return [StreamGroup(tuple(members)) for members in groups.values()]


def probe_sample(sample: Sample) -> Probe:
    """The sample's frame count and display size (see the module docstring)."""
    if sample.source_kind != VIDEO:
        raise AqaError(
            f"{sample.source}: extracting with a recipe reads video files; encode the frame folder as a video"
        )
    with VideoDecoder(sample.source, None, threads=1) as decoder:
        info = decoder.info
    first = sample.first or 0
    count = (sample.last if sample.last is not None else _demuxed_frames(sample.source)) - first
    return Probe(sample.id, max(count, 0), info.width, info.height, info.fps)


def _demuxed_frames(path: str) -> int:
    try:
        with av.open(path, metadata_errors="replace") as container:
            return sum(1 for packet in container.demux(container.streams.video[0]) if packet.size)
    except av.FFmpegError as err:
        raise AqaError(f"{path}: reading failed ({err.strerror}); check the file and the disk") from err


RESIZERS = ("exact", "ffmpeg")
INTERPOLATIONS = {"bilinear": Interpolation.BILINEAR, "bicubic": Interpolation.BICUBIC}


def ffmpeg_plan_rest(frame: np.ndarray, plan: dict, scaler: VideoReformatter) -> np.ndarray:
    """The `ffmpeg` resizer after decoding (which already resized to the plan's `resize`): the crop box
    (black where it leaves the frame), then FFmpeg's scaler to `final`."""
    cropped = spatial.crop(frame[None], *plan["crop"])[0]
    final = tuple(plan["final"])
    if final == cropped.shape[1::-1]:
        return cropped
    resized = scaler.reformat(
        av.VideoFrame.from_ndarray(cropped, format="rgb24"), *final, "rgb24", interpolation=_filter(plan)
    )
    return resized.to_ndarray().copy()


def _filter(plan: dict) -> Interpolation:
    if plan["interpolation"] not in INTERPOLATIONS:
        raise AqaError(
            f"the ffmpeg resizer has no {plan['interpolation']!r} interpolation; use --resize exact"
        )
    return INTERPOLATIONS[plan["interpolation"]]


@dataclass(frozen=True)
class ProbeWork:
    """The worker side of a probe job (one `Sample`)."""

    def __call__(self, sample: Sample, emit: Callable[[Any], None]) -> None:
        try:
            emit(probe_sample(sample))
        except AqaError as exc:
            emit(Failure(sample.id, str(exc)))


@dataclass(frozen=True)
class StreamWork:
    """The worker side of a stream job or group: see the module docstring."""

    resizer: str = "exact"
    threads: int = 1
    chunk: int = CHUNK_FRAMES

    def __call__(self, work: StreamJob | StreamGroup, emit: Callable[[Any], None]) -> None:
        group = work if isinstance(work, StreamGroup) else StreamGroup((work,))
        streams = []
        for job in group.jobs:
            selected = np.asarray(job.selected, dtype=np.int64)
            if len(selected) and (np.diff(selected) < 0).any():
                emit(
                    Failure(
                        job.sample.id,
                        f"internal error: the recipe selected the frames of {job.sample.id} out of order",
                    )
                )
            else:
                streams.append(_SampleStream(job, selected, self.chunk, emit))
        try:
            self._decode(group.jobs[0], streams)
        except AqaError as exc:
            for stream in streams:
                if not stream.ended:
                    emit(Failure(stream.job.sample.id, str(exc)))

    def _decode(self, like: StreamJob, streams: list[_SampleStream]) -> None:
        """Decode `like`'s file once, feeding every stream the frames of its range."""
        if not streams:
            return
        ends = [stream.end for stream in streams]
        end = None if None in ends else max(ends)
        wanted = set().union(*(stream.wanted for stream in streams))
        last_index = -1
        origin = 0.0  # times count from the video's first frame
        scaler = VideoReformatter()
        ffmpeg = self.resizer == "ffmpeg"
        decoded_size = tuple(like.plan["resize"]) if ffmpeg else None
        interpolation = _filter(like.plan) if ffmpeg else INTERPOLATION
        with VideoDecoder(like.sample.source, decoded_size, self.threads, interpolation) as decoder:
            fps = decoder.info.fps
            for index, frame in decoder.frames(wanted=wanted.__contains__):
                if index == 0 and decoder.time is not None:
                    origin = decoder.time
                for stream in streams:  # the samples whose range ended with the frame before
                    if not stream.ended and stream.end is not None and index >= stream.end:
                        stream.close(index - 1, decoder.frames_lost, decoder.info.fps or fps)
                if end is not None and index >= end:
                    break
                last_index = index
                if frame is None:
                    continue
                if ffmpeg:
                    planned = ffmpeg_plan_rest(frame, like.plan, scaler)
                else:
                    planned = spatial.apply_spatial_plan(frame[None], like.plan)[0]
                moment = (
                    decoder.time - origin if decoder.time is not None else (index / fps if fps else math.nan)
                )
                for stream in streams:
                    stream.take(index, planned, moment)
            frames_lost, fps = decoder.frames_lost, decoder.info.fps or fps
        for stream in streams:
            if not stream.ended:
                stream.close(last_index, frames_lost, fps)


class _SampleStream:
    """One sample of a decode pass: its selected frames as chunks, then how it ended."""

    def __init__(self, job: StreamJob, selected: np.ndarray, chunk: int, emit: Callable[[Any], None]):
        self.job, self.selected, self.chunk, self.emit = job, selected, chunk, emit
        self.first = job.sample.first or 0
        self.end = job.sample.last
        self.wanted = set((self.first + selected).tolist())
        self.pending: list[np.ndarray] = []
        self.times: list[float] = []
        self.position = self.sent = 0
        self.ended = False

    def take(self, index: int, planned: np.ndarray, moment: float) -> None:
        """Frame `index` of the file: kept once for each time the recipe selected it."""
        while self.position < len(self.selected) and self.first + self.selected[self.position] == index:
            self.pending.append(planned)
            self.times.append(moment)
            self.position += 1
            if len(self.pending) == self.chunk:
                self._send()

    def _send(self) -> None:
        self.emit(FrameChunk(self.job.sample.id, self.sent, np.stack(self.pending), np.array(self.times)))
        self.sent += len(self.pending)
        self.pending, self.times = [], []

    def close(self, last_index: int, frames_lost: int, fps: float | None) -> None:
        """The decode passed the sample's range (or the file ended at `last_index`)."""
        self.ended = True
        sample = self.job.sample
        decoded = max(0, last_index + 1 - self.first)
        if decoded != self.job.frames:
            if self.end is not None and decoded < self.job.frames:
                self.emit(
                    Failure(
                        sample.id,
                        f"{sample.source} has {last_index + 1} frames but sample {sample.id} needs frames "
                        f"up to {self.end}",
                    )
                )
            else:
                self.emit(Recount(sample.id, decoded))
            return
        if self.pending:
            self._send()
        self.emit(Finished(sample.id, frames_lost, fps))
