"""A recipe's clip features from frames that arrive in chunks (`media.streaming`), in flat memory.

The frames come resized and cropped in the decode workers by the recipe's spatial plan (`media.spatial`,
torchvision's resize within one grey level; or FFmpeg's scaler with `--resize ffmpeg`); only the
normalization and the network run here.

`ClipAssembler` keeps only the frames that clips not yet computed still need, runs the network on
`batch` clips at a time and records each clip's start and end time. `aqa extract --recipe` feeds it
from decode workers; `aqa score` feeds it from the same `StreamWork` run in its own process
(`stream_video_features`), so a scored video goes through exactly the steps of an extracted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from aqa_cli.media.sources.base import Sample
from aqa_cli.media.streaming import (
    Failure,
    Finished,
    FrameChunk,
    Recount,
    StreamJob,
    StreamWork,
    probe_sample,
)
from aqa_cli.models.recipes import Recipe, clip_starts, normalize, select_frames, spatial_plan
from aqa_cli.util.errors import AqaError
from aqa_cli.util.runtime import autocast

MAX_RECOUNTS = 2


@dataclass
class VideoFeatures:
    features: np.ndarray  # (clips, dim) float32
    clip_start: np.ndarray  # (clips,) seconds
    clip_end: np.ndarray
    frames: int  # frames of the sample's range
    frames_lost: int
    fps: float | None


def plan_stream(recipe: Recipe, sample: Sample, frames: int, width: int, height: int) -> StreamJob:
    """The stream job of a sample of `frames` frames: the recipe's frames and spatial plan; a sample too
    short for one clip is an AqaError naming it."""
    selected = np.asarray(select_frames(recipe, frames), dtype=np.int64)
    starts = np.asarray(clip_starts(recipe, len(selected)), dtype=np.int64)
    if frames < 1 or len(starts) == 0:
        raise AqaError(
            f"{sample.source}: {frames} frames, fewer than one clip of recipe {recipe.name} "
            f"({recipe.clip} frames); nothing to extract from it"
        )
    return StreamJob(sample, selected, spatial_plan(recipe, width, height), frames, (width, height))


class ClipAssembler:
    """Clips of one stream job, computed as their frames arrive (see the module docstring)."""

    def __init__(
        self,
        job: StreamJob,
        recipe: Recipe,
        network,
        device,
        precision: str,
        batch: int,
        progress: Callable[[int, int], None] | None = None,
    ):
        """`progress(clips, total)` is called after each batch with the clips it computed."""
        self.job, self.recipe, self.network = job, recipe, network
        self.device, self.precision, self.batch, self.progress = device, precision, batch, progress
        self.starts = np.asarray(clip_starts(recipe, len(job.selected)), dtype=np.int64)
        self._frames: dict[int, np.ndarray] = {}
        self._times: dict[int, float] = {}
        self._ready: list[torch.Tensor] = []
        self._next = 0  # the next clip to assemble
        self._features: list[np.ndarray] = []
        self._bounds: list[tuple[float, float]] = []  # (time of the first frame, of the last frame)

    def add(self, chunk: FrameChunk) -> None:
        for offset, (frame, moment) in enumerate(zip(chunk.frames, chunk.times, strict=True)):
            self._frames[chunk.position + offset] = frame
            self._times[chunk.position + offset] = float(moment)
        clip = self.recipe.clip
        while self._next < len(self.starts) and int(self.starts[self._next]) + clip - 1 in self._frames:
            start = int(self.starts[self._next])
            positions = range(start, start + clip)
            frames = torch.from_numpy(np.stack([self._frames[p] for p in positions]))  # (T, h, w, 3)
            self._ready.append(normalize(self.recipe, frames.permute(3, 0, 1, 2)))
            self._bounds.append((self._times[start], self._times[start + clip - 1]))
            self._next += 1
            oldest = int(self.starts[self._next]) if self._next < len(self.starts) else math.inf
            for position in [p for p in self._frames if p < oldest]:
                del self._frames[position], self._times[position]
            if len(self._ready) == self.batch:
                self._run()

    def finish(self, finished: Finished) -> VideoFeatures:
        self._run()
        if self._next != len(self.starts):
            raise AqaError(
                f"{self.job.sample.source}: the decoder delivered {len(self._frames)} of the frames clip "
                f"{self._next} of {self.job.sample.id} needs"
            )
        duration = 1 / finished.fps if finished.fps else 0.0
        bounds = np.array(self._bounds, dtype=np.float64).reshape(-1, 2)
        return VideoFeatures(
            np.concatenate(self._features),
            bounds[:, 0],
            bounds[:, 1] + duration,
            self.job.frames,
            finished.frames_lost,
            finished.fps,
        )

    def _run(self) -> None:
        if not self._ready:
            return
        batch = torch.stack(self._ready).to(self.device)
        self._ready = []
        with torch.inference_mode(), autocast(self.device, self.precision):
            found = self.network(batch)
        self._features.append(found.float().cpu().numpy())
        if self.progress is not None:
            self.progress(len(found), len(self.starts))


def stream_video_features(
    sample: Sample,
    recipe: Recipe,
    network,
    device,
    precision: str,
    batch: int,
    resize: str = "exact",
    threads: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> VideoFeatures:
    """One sample's features in this process, through the same steps as `aqa extract --recipe`;
    `progress(clips, total)` after each batch of clips."""
    probe = probe_sample(sample)
    frames = probe.frames
    for _ in range(MAX_RECOUNTS + 1):
        job = plan_stream(recipe, sample, frames, probe.width, probe.height)
        assembler = ClipAssembler(job, recipe, network, device, precision, batch, progress)
        outcome: list = []

        def receive(message, assembler=assembler, outcome=outcome) -> None:
            if isinstance(message, FrameChunk):
                assembler.add(message)
            else:
                outcome.append(message)

        StreamWork(resize, threads)(job, receive)
        (last,) = outcome
        if isinstance(last, Failure):
            raise AqaError(last.reason)
        if isinstance(last, Finished):
            return assembler.finish(last)
        frames = last.frames if isinstance(last, Recount) else frames
    raise AqaError(f"{sample.source}: its frame count changed between decodes; the file may be damaged")
