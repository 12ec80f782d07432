"""`aqa extract SOURCE --recipe NAME`: raw videos of any length to a recipe's clip features, no frame
written anywhere.

SOURCE is what `aqa preprocess` takes (a folder, a CSV manifest, a dataset root). Decode workers
(`media.streaming`) probe each video (frame count by demuxing, display size), then stream the recipe's
frames, resized and cropped, in bounded chunks; this process turns them into clips and features
(`models.streamed.ClipAssembler`) and writes each finished video to `OUT.partial/` (`PartialWork`), so
a rerun after a kill resumes and writes the same bytes. A video that fails (too short for one clip,
unreadable) is reported on its own line; the others are stored, and `OUT.partial/` is kept so that a
rerun retries only the failed ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aqa_cli.media.sources.base import Sample
from aqa_cli.media.streaming import (
    RESIZERS,
    Failure,
    Finished,
    FrameChunk,
    ProbeWork,
    Recount,
    StreamGroup,
    StreamJob,
    StreamWork,
    group_streams,
)
from aqa_cli.media.worker_pool import WorkerPool
from aqa_cli.models.recipes import build_feature_network, get_recipe
from aqa_cli.models.streamed import MAX_RECOUNTS, ClipAssembler, VideoFeatures, plan_stream
from aqa_cli.pipelines.options import DEFAULT_FRAMES, DEFAULT_TIMEOUT, StreamExtractOptions
from aqa_cli.pipelines.preprocess import DATA_DIR, parse_shard, resolve_source
from aqa_cli.stores.feature_store import DTYPES, FeatureLabels, FeatureStore, write_feature_store
from aqa_cli.util.errors import AqaError
from aqa_cli.util.runtime import resolve_device, resolve_precision
from aqa_cli.util.safe_output import PartialWork, output_lock


@dataclass
class StreamExtractReport:
    out: Path
    samples: int  # samples in the store written
    computed: int  # videos extracted by this run
    reused: int  # videos found done in OUT.partial/
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    up_to_date: bool = False
    written: bool = True
    attributes: dict = field(default_factory=dict)


def extract_from_videos(
    options: StreamExtractOptions, progress: Callable[[str, int, int], None] | None = None
) -> StreamExtractReport:
    """Extract every video of `options.source` (this shard's share) with the recipe into a feature store;
    `progress(sample_id, 1, total)` is called as each video finishes (stored or failed)."""
    started = time.perf_counter()
    if options.dtype not in DTYPES:
        raise AqaError(f"unknown --dtype {options.dtype!r}; choose one of {', '.join(DTYPES)}")
    if options.batch_size < 1:
        raise AqaError("--batch-size must be at least 1")
    recipe = get_recipe(options.recipe, clip=options.clip, stride=options.stride)
    if options.resize not in RESIZERS:
        raise AqaError(f"unknown --resize {options.resize!r}; choose one of {', '.join(RESIZERS)}")
    shard_index, shard_count = parse_shard(options.shard)
    if Path(options.source).suffix.lower() in (".h5", ".hdf5"):
        raise AqaError(
            f"{options.source} is a store, and --recipe reads raw videos: give the folder, CSV manifest or "
            "dataset root its videos came from (a video store holds frames shrunk to 171x128; extract it "
            "without --recipe)"
        )
    scan, default_name = resolve_source(Path(options.source), DEFAULT_FRAMES, "uniform")
    samples = [sample for n, sample in enumerate(scan.samples) if n % shard_count == shard_index]
    positions = {sample.id: n for n, sample in enumerate(scan.samples)}
    suffix = f".shard{shard_index}of{shard_count}" if shard_count > 1 else ""
    out = Path(options.out) if options.out else DATA_DIR / f"{default_name}-{recipe.name}{suffix}.features.h5"
    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device, inference=True)
    network, weights = build_feature_network(recipe, options.weights or "default")
    network = network.eval().to(device)
    labels = _labels(samples)
    attributes = {
        "source_kind": "extract",
        "source_description": f"recipe {recipe.name} over {scan.description}",
        "default_target": "score",
        "dtype": options.dtype,
        "clip_len": recipe.clip,
        "views": [{"shift": 0, "flip": False}],  # one view: the whole video
        "recipe": recipe.to_dict(),
        "recipe_weights": weights,
        "precision": precision,
        "batch_size": options.batch_size,
        "resize": options.resize,
        "shard": options.shard or "",
        "samples_sha256": labels.digest(),
    }
    report = StreamExtractReport(out, 0, 0, 0, attributes=attributes)
    with output_lock(out):
        if _up_to_date(out, attributes, len(samples)):
            report.samples, report.reused, report.up_to_date = len(samples), len(samples), True
            report.seconds = time.perf_counter() - started
            return report
        partial = VideoPartial(out, attributes)
        todo = [sample for sample in samples if not partial.has(sample.id)]
        report.reused = len(samples) - len(todo)
        if progress is not None and report.reused:
            progress("(already extracted)", report.reused, len(samples))
        failed = [problem for problem in scan.problems if shard_count == 1]
        if todo:
            workers = max(1, min(options.workers or os.cpu_count() or 1, len(todo)))
            with WorkerPool(workers, options.timeout or DEFAULT_TIMEOUT) as pool:
                run = _Run(recipe, network, device, precision, options, partial, report, progress)
                run.extract(pool, todo, len(samples))
                failed += run.failed
        done = [sample for sample in samples if partial.has(sample.id)]
        report.failed = failed
        report.samples = len(done)
        if done:
            _write_store(out, attributes, done, positions, options.dtype, partial)
        elif not failed:
            raise AqaError(f"no videos to extract from {scan.description}")
        report.written = bool(done)
        if not failed:
            partial.remove()
    report.seconds = time.perf_counter() - started
    return report


def _up_to_date(out: Path, attributes: dict, samples: int) -> bool:
    """Whether `out` already holds every sample with these settings (an error when it holds features of
    another recipe or weights)."""
    if not out.exists():
        return False
    with FeatureStore(out) as existing:
        made_with = {key: existing.attributes.get(key) for key in attributes}
        stored = len(existing)
    if made_with == json.loads(json.dumps(attributes)):
        return stored == samples
    if made_with.get("recipe") == json.loads(json.dumps(attributes["recipe"])) and (
        made_with.get("recipe_weights") == json.loads(json.dumps(attributes["recipe_weights"]))
    ):
        return False  # the same features over other (or more) videos: extracted again from the partials
    raise AqaError(
        f"{out} holds features made with another recipe or weights; choose another --out, or delete it to "
        "extract again"
    )


class _Run:
    """One extraction's rounds: probe every video, then stream each (again, when a decode found another
    frame count than the probe)."""

    def __init__(self, recipe, network, device, precision, options, partial, report, progress):
        self.recipe, self.network, self.device, self.precision = recipe, network, device, precision
        self.batch, self.resize = options.batch_size, options.resize
        self.partial, self.report, self.progress = partial, report, progress
        self.failed: list[tuple[str, str]] = []
        self.total = 0

    def extract(self, pool: WorkerPool, samples: list[Sample], total: int) -> None:
        self.total = total
        by_id = {sample.id: sample for sample in samples}
        probes = {}

        def probed(message) -> None:
            if isinstance(message, Failure):
                self._fail(message.id, message.reason)
            else:
                probes[message.id] = message

        pool.run(samples, ProbeWork(), probed, self._gave_up, lambda sample: sample)
        jobs = []
        for sample_id, probe in probes.items():
            job = self._plan(by_id[sample_id], probe.frames, probe.width, probe.height)
            if job is not None:
                jobs.append(job)
        for _ in range(MAX_RECOUNTS + 1):
            if not jobs:
                return
            jobs = self._stream(pool, jobs)
        for job in jobs:
            self._fail(job.sample.id, f"{job.sample.source}: its frame count changed between decodes")

    def _plan(self, sample: Sample, frames: int, width: int, height: int) -> StreamJob | None:
        try:
            return plan_stream(self.recipe, sample, frames, width, height)
        except AqaError as exc:
            self._fail(sample.id, str(exc))
            return None

    def _stream(self, pool: WorkerPool, jobs: list[StreamJob]) -> list[StreamJob]:
        """Stream the jobs, one decode per video file; return the ones to run again with their true frame
        count."""
        assemblers = {}
        again: list[StreamJob] = []
        by_id = {job.sample.id: job for job in jobs}
        ended: set[str] = set()  # samples stored, failed or to recount

        def assembler(sample_id: str) -> ClipAssembler:
            if sample_id not in assemblers:
                assemblers[sample_id] = ClipAssembler(
                    by_id[sample_id], self.recipe, self.network, self.device, self.precision, self.batch
                )
            return assemblers[sample_id]

        def receive(message) -> None:
            if isinstance(message, FrameChunk):
                assembler(message.id).add(message)
                return
            ended.add(message.id)
            if isinstance(message, Finished):
                self._store(message.id, assembler(message.id).finish(message))
                assemblers.pop(message.id)
            elif isinstance(message, Recount):
                assemblers.pop(message.id, None)
                job = by_id[message.id]
                retry = self._plan(job.sample, message.frames, *job.size)
                if retry is not None:
                    again.append(retry)
            else:
                assemblers.pop(message.id, None)
                self._fail(message.id, message.reason)

        def remaining(group: StreamGroup) -> StreamGroup | None:
            left = group.without(ended)
            for job in left.jobs if left else ():
                assemblers.pop(job.sample.id, None)  # it streams again from its first frame
            return left

        def gave_up(group: StreamGroup, reason: str) -> None:
            for job in group.jobs:
                if job.sample.id not in ended:
                    self._gave_up(job, reason)

        pool.run(group_streams(jobs), StreamWork(self.resize), receive, gave_up, remaining)
        return again

    def _store(self, sample_id: str, found: VideoFeatures) -> None:
        self.partial.write(sample_id, found)
        self.report.computed += 1
        if self.progress is not None:
            self.progress(sample_id, 1, self.total)

    def _gave_up(self, job, reason: str) -> None:
        sample = job.sample if isinstance(job, StreamJob) else job
        self._fail(sample.id, f"{sample.source}: {reason}")

    def _fail(self, sample_id: str, reason: str) -> None:
        self.failed.append((sample_id, " ".join(reason.split())))
        if self.progress is not None:
            self.progress(sample_id, 1, self.total)


def _write_store(
    out: Path,
    attributes: dict,
    samples: list[Sample],
    positions: dict[str, int],
    dtype: str,
    partial: VideoPartial,
) -> None:
    """The store of the finished videos, in source order, read back one video at a time."""
    clips = np.array([partial.clips(sample.id) for sample in samples], dtype=np.int32)
    most = int(clips.max())
    dim = partial.read(samples[0].id)["features"].shape[1]
    starts = np.zeros((len(samples), most), dtype=np.float64)
    ends = np.zeros((len(samples), most), dtype=np.float64)
    for row, sample in enumerate(samples):
        saved = partial.read(sample.id)
        starts[row, : clips[row]] = saved["clip_start"]
        ends[row, : clips[row]] = saved["clip_end"]
    labels = _labels(samples)
    write_feature_store(
        out,
        attributes,
        labels,
        clips,
        (1, most, dim),
        dtype,
        (partial.read(sample.id)["features"][None, None] for sample in samples),
        columns={
            "clip_start": starts,
            "clip_end": ends,
            "index": np.array([positions[sample.id] for sample in samples], dtype=np.int64),
        },
    )


class VideoPartial:
    """`OUT.partial/` of a recipe extraction: one .npz file per finished video (`PartialWork`)."""

    def __init__(self, out: Path, attributes: dict):
        self.work = PartialWork(out, attributes, lambda earlier: "differs in the recipe or settings").open()

    def _name(self, sample_id: str) -> str:
        return f"video-{hashlib.sha256(sample_id.encode()).hexdigest()[:24]}.npz"

    def has(self, sample_id: str) -> bool:
        return self.work.path(self._name(sample_id)).is_file()

    def write(self, sample_id: str, found: VideoFeatures) -> None:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            features=found.features.astype(np.float32),
            clip_start=found.clip_start,
            clip_end=found.clip_end,
        )
        self.work.write(self._name(sample_id), buffer.getvalue())

    def read(self, sample_id: str) -> dict[str, np.ndarray]:
        with np.load(self.work.path(self._name(sample_id)), allow_pickle=False) as saved:
            return {key: saved[key] for key in saved.files}

    def clips(self, sample_id: str) -> int:
        return len(self.read(sample_id)["clip_start"])

    def remove(self) -> None:
        self.work.remove()


def _labels(samples: list[Sample]) -> FeatureLabels:
    """The feature store's labels of the source's samples, their action (dive number) included."""
    return FeatureLabels(
        ids=[sample.id for sample in samples],
        splits=[sample.split for sample in samples],
        difficulty=np.array([sample.difficulty for sample in samples], dtype=np.float64),
        scores={"score": np.array([sample.score for sample in samples], dtype=np.float64)},
        actions=[sample.action for sample in samples],
    )
