"""`aqa preprocess`: source adapter -> decoding jobs in worker processes -> crash-safe store.

Samples that share a source (all dives of one MTL-AQA event) form one job, so each event video is
decoded once. Workers write each finished sample to `STORE.partial/`; this process owns the store and
assembles it at the end. Rerunning resumes: samples already in the store or in `STORE.partial/` are
not decoded again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from aqa_cli.errors import AqaError
from aqa_cli.sampling import FIT_RULES, stored_indices
from aqa_cli.sources.base import IMAGES_NUMBERED, IMAGES_SORTED, VIDEO, Sample, SourceScan
from aqa_cli.store import (
    COMPRESSIONS,
    DEFAULT_COMPRESSION,
    PartialWork,
    StoreAttributes,
    StoreConfig,
    StoredSample,
    StoreReadError,
    VideoStore,
    assemble_store,
    partial_dir_for,
    store_lock,
    verify_samples,
)
from aqa_cli.video import FRAME_SIZE, VideoDecoder, decode_image
from aqa_cli.worker_pool import StopRun, WorkerPool

DEFAULT_FRAMES = 103
MAX_FRAMES = 4096  # 270 MB of frames per sample in memory: beyond that a typo, not a dataset
DATA_DIR = Path("data")
# A source with no end frame is held in memory while its length is unknown, up to this many frames;
# a longer one is decoded twice (count, then keep) so memory never grows with the video's length.
BUFFER_FRAMES = 1024
# A worker that finishes no clip for this long is stopped and its video reported failed; a whole-event
# MTL-AQA video (up to an hour) decodes in a few minutes on one core.
DEFAULT_TIMEOUT = 900.0


class StoreWriteError(StopRun):
    """Writing the store failed (disk full, read-only): stop everything, keep what is done."""


@dataclass
class PreprocessOptions:
    frames: int | None = None
    fit: str = "uniform"
    workers: int | None = None
    compression: str = DEFAULT_COMPRESSION
    shard: str | None = None
    timeout: float | None = None  # default DEFAULT_TIMEOUT
    action: str | None = None  # keep only this action's samples (AQA-7, FineDiving)


@dataclass
class Outcome:
    """What happened to one sample in a worker."""

    id: str
    stored: bool
    reason: str = ""
    frames_lost: int = 0


@dataclass
class PreprocessReport:
    out: Path
    stored: int = 0
    kept: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    frames_lost: int = 0
    seconds: float = 0.0
    damaged: list[str] = field(default_factory=list)  # ids of damaged samples of the earlier store
    notices: list[str] = field(default_factory=list)  # the source's notices (e.g. dataset overlaps)
    written: bool = True  # False when no sample could be stored, so no store was written


@dataclass
class Job:
    """All samples read from one source file or folder, decoded in one pass."""

    source: str
    source_kind: str
    samples: list[tuple[int, Sample]]  # (position in the scan, sample)


def resolve_source(
    source: Path | None, frames: int, fit: str, action: str | None = None
) -> tuple[SourceScan, str]:
    """Pick the adapter from what the user gave; return its scan and the default store name."""
    from aqa_cli.sources.datasets import resolve_dataset

    found = resolve_dataset(source, frames, fit, action)
    if found is not None:
        return found
    if action is not None:
        raise AqaError(
            f"--action {action} keeps one action of an AQA-7 or FineDiving source, and "
            f"{source or DATA_DIR} is neither; drop --action"
        )
    from aqa_cli.sources.folder import scan_folder
    from aqa_cli.sources.manifest import scan_manifest
    from aqa_cli.sources.mtl_aqa import find_mtl_aqa_root, scan_mtl_aqa

    if source is None:
        root = find_mtl_aqa_root(DATA_DIR) if DATA_DIR.is_dir() else None
        if root is None:
            raise AqaError(
                f"no MTL-AQA layout found under {DATA_DIR.resolve()} (looked for final_annotations_dict.pkl, "
                "train_split_0.pkl and test_split_0.pkl with whole_videos/NN.mp4 or frame folders); "
                "put the release there or run `aqa preprocess PATH` with an MTL-AQA root, a CSV manifest or a "
                "folder of videos"
            )
        return scan_mtl_aqa(root, frames), "mtl_aqa"
    if not source.exists():
        raise AqaError(
            f"source not found: {source}; give a CSV manifest, an MTL-AQA root or a folder of videos"
        )
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise AqaError(
                f"{source} is a file but not a .csv manifest; to preprocess videos, point at their folder "
                "or list them in a CSV (path,score,split[,difficulty,id,start,end])"
            )
        return scan_manifest(source, fit), source.stem
    root = find_mtl_aqa_root(source)
    if root is not None:
        return scan_mtl_aqa(root, frames), "mtl_aqa"
    return scan_folder(source, fit), source.resolve().name


def run_preprocess(source: Path | None, out: Path | None, options: PreprocessOptions) -> PreprocessReport:
    from aqa_cli.report import print_preprocess_report

    frames = DEFAULT_FRAMES if options.frames is None else options.frames
    if frames < 1:
        raise AqaError(f"--frames must be at least 1 (got {frames})")
    if frames > MAX_FRAMES:
        raise AqaError(f"--frames {frames} is more than {MAX_FRAMES}, the most a sample may hold in memory")
    if options.fit not in FIT_RULES:
        raise AqaError(f"unknown --fit {options.fit!r}: use one of {', '.join(FIT_RULES)}")
    if options.compression not in COMPRESSIONS:
        raise AqaError(f"unknown --compression {options.compression!r}: use one of {', '.join(COMPRESSIONS)}")
    timeout = DEFAULT_TIMEOUT if options.timeout is None else options.timeout
    if not timeout > 0:
        raise AqaError(f"--timeout must be a positive number of seconds (got {timeout:g})")
    shard_index, shard_count = _parse_shard(options.shard)
    scan, default_name = resolve_source(source, frames, options.fit, options.action)
    if out is None:
        suffix = f".shard{shard_index}of{shard_count}" if shard_count > 1 else ""
        out = DATA_DIR / f"{default_name}{suffix}.h5"
    config = StoreConfig(frames, options.fit, *FRAME_SIZE, options.compression)
    jobs = [job for n, job in enumerate(_group_jobs(scan.samples)) if n % shard_count == shard_index]
    positions = {sample.id: position for job in jobs for position, sample in job.samples}
    report = PreprocessReport(out=out, notices=list(scan.notices))
    started = time.perf_counter()
    workers = max(1, min(options.workers or os.cpu_count() or 1, len(jobs)))
    # The workers start importing now, while the earlier store and partial work are checked.
    with store_lock(out), WorkerPool(workers, timeout) as pool:
        earlier = _earlier_store_rows(out, config, report)
        partial = PartialWork(partial_dir_for(out), config)
        partial.open()
        done = earlier.keys() | partial.done_ids()
        todo = [_without(job, done) for job in jobs]
        todo = [job for job in todo if job.samples]
        failed = [problem for problem in scan.problems if shard_count == 1] + _run_jobs(
            pool, todo, config, partial, report
        )
        rows = []
        for sample_id in sorted(positions, key=positions.get):
            if partial.path_of(sample_id).exists():
                rows.append((sample_id, partial.path_of(sample_id), -1))
            elif sample_id in earlier:
                rows.append((sample_id, out, earlier[sample_id]))
                report.kept += 1
        if rows:  # with no sample to store there is no store to write (HDF5 refuses a 0-row chunked one)
            attributes = StoreAttributes(scan.kind, scan.description, failed, options.shard or "")
            assemble_store(out, config, attributes, rows)
        partial.remove()
    report.failed = failed
    report.written = bool(rows)
    report.seconds = time.perf_counter() - started
    if not rows and not failed:
        shard = f" in shard {options.shard}" if shard_count > 1 else ""
        raise AqaError(f"no samples to store{shard} from {scan.description}: no store written at {out}")
    print_preprocess_report(report, len(rows))
    return report


def _parse_shard(shard: str | None) -> tuple[int, int]:
    if not shard:
        return 0, 1
    try:
        index, count = (int(part) for part in shard.split("/"))
    except ValueError:
        raise AqaError(f"--shard {shard!r} must look like K/N, e.g. 0/4") from None
    if not 0 <= index < count:
        raise AqaError(f"--shard {shard}: K must be between 0 and N-1")
    return index, count


def _group_jobs(samples: list[Sample]) -> list[Job]:
    jobs: dict[tuple[str, str], Job] = {}
    for position, sample in enumerate(samples):
        key = (sample.source, sample.source_kind)
        jobs.setdefault(key, Job(sample.source, sample.source_kind, [])).samples.append((position, sample))
    return list(jobs.values())


def _without(job: Job, done: set[str]) -> Job:
    return Job(job.source, job.source_kind, [(p, s) for p, s in job.samples if s.id not in done])


def _earlier_store_rows(out: Path, config: StoreConfig, report: PreprocessReport) -> dict[str, int]:
    """Intact samples of an existing store at `out` (id -> row), if it was made with the same settings.

    Every kept sample is read and checked against its checksums; damaged ones are decoded again, and a
    store too damaged to keep any sample (but still recognisably ours) is rebuilt.
    """
    if not out.exists():
        return {}
    try:
        with VideoStore(out, check=False) as store:
            if store.config != config:
                raise AqaError(
                    f"{out} already exists and was made with other settings "
                    f"({config.differences(asdict(store.config))}): rerun with those, choose another "
                    "--out, or delete it"
                )
            rows = {}
            for row, sample_id, problem in verify_samples(store):
                if problem:
                    report.damaged.append(sample_id)
                else:
                    rows[sample_id] = row
            return rows
    except StoreReadError:
        pass
    except AqaError:
        raise
    except Exception:  # noqa: BLE001 - h5py raises many types on damaged metadata; the store is rebuilt
        pass
    report.damaged.append("all (the store's own structure is damaged)")
    return {}


def _run_jobs(
    pool: WorkerPool, jobs: list[Job], config: StoreConfig, partial: PartialWork, report: PreprocessReport
) -> list[tuple[str, str]]:
    """Decode the jobs in the pool's worker processes, with a progress bar; return failures."""
    from aqa_cli.report import preprocess_progress

    failed: list[tuple[str, str]] = []
    reported: set[str] = set()
    total = sum(len(job.samples) for job in jobs)

    with preprocess_progress(total) as advance:

        def record(outcome: Outcome) -> None:
            reported.add(outcome.id)
            if outcome.stored:
                report.stored += 1
                report.frames_lost += outcome.frames_lost
            else:
                failed.append((outcome.id, outcome.reason))
            advance(outcome.id)

        def remaining(job: Job) -> Job | None:
            left = _without(job, reported)
            return left if left.samples else None

        def give_up(job: Job, reason: str) -> None:
            for _, sample in job.samples:
                if sample.id not in reported:
                    record(Outcome(sample.id, False, f"{job.source}: {reason}"))

        threads = max(1, (os.cpu_count() or 1) // pool.size)  # per worker: no oversubscription
        pool.run(jobs, DecodeWork(config, partial.dir, threads), record, give_up, remaining)
    return failed


@dataclass(frozen=True)
class DecodeWork:
    """What a worker runs for each job (picklable, so that it can be sent to the worker)."""

    config: StoreConfig
    partial_dir: Path
    threads: int

    def __call__(self, job: Job, emit: Callable[[Outcome], None]) -> None:
        decode_job(job, self.config, self.partial_dir, emit, self.threads)


def decode_job(
    job: Job, config: StoreConfig, partial_dir: Path, emit: Callable[[Outcome], None], threads: int = 0
) -> None:
    """Decode one source once and write each of its samples; report every sample through `emit`."""
    writer = PartialWork(partial_dir, config)
    remaining = {sample.id: (position, sample) for position, sample in job.samples}

    def finish(sample_id: str, frames: np.ndarray, indices: np.ndarray, meta: dict) -> None:
        position, sample = remaining.pop(sample_id)
        try:
            writer.write(_stored_sample(sample, position, frames, indices, meta))
        except AqaError as exc:
            raise StoreWriteError(str(exc)) from None
        emit(Outcome(sample.id, True, frames_lost=meta["frames_lost"]))

    reason = None
    try:
        if job.source_kind in (IMAGES_SORTED, IMAGES_NUMBERED):
            _decode_images(job, config, finish)
        else:
            _decode_video(job, config, finish, threads)
    except StoreWriteError:
        raise
    except AqaError as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - one bad video must not stop the others
        reason = f"unexpected {type(exc).__name__} while decoding {job.source}: {exc}"
    for sample_id, (_, sample) in list(remaining.items()):
        ended = f"{job.source} ended before frame {sample.last} that clip {sample_id} needs"
        emit(Outcome(sample_id, False, reason or ended))


def decode_clip(path: str | Path, config: StoreConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """One video or frame folder, prepared exactly as preprocess stores it: (frames, indices, metadata)."""
    path = Path(path)
    kind = IMAGES_SORTED if path.is_dir() else VIDEO
    sample = Sample(id=path.name, source=str(path), source_kind=kind, fit=config.fit)
    found = {}

    def keep(sample_id: str, frames: np.ndarray, indices: np.ndarray, meta: dict) -> None:
        found.update(frames=frames, indices=indices, meta=meta)

    job = Job(str(path), kind, [(0, sample)])
    (_decode_images if kind == IMAGES_SORTED else _decode_video)(job, config, keep)
    return found["frames"], found["indices"], found["meta"]


def _window(sample: Sample, length: int | None, frames: int) -> np.ndarray:
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


def _decode_video(job: Job, config: StoreConfig, finish: Callable, threads: int = 0) -> None:
    size = (config.width, config.height)
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
                    indices = _window(sample, len(buffered), config.frames)
                    finish(sample.id, np.stack([buffered[i] for i in indices]), indices, meta)
                return
            length = BUFFER_FRAMES + 1 + sum(1 for _ in decoder.frames(wanted=lambda _: False))
    with VideoDecoder(job.source, size, threads) as decoder:
        _stream_windows(decoder, samples, length, config, meta, finish)


def _stream_windows(decoder, samples: list[Sample], length, config: StoreConfig, meta: dict, finish) -> None:
    """One pass keeping only wanted frames; each sample is written as soon as its last frame is decoded."""
    windows = {sample.id: _window(sample, length, config.frames) for sample in samples}
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


def _decode_images(job: Job, config: StoreConfig, finish: Callable) -> None:
    folder = Path(job.source)
    if not folder.is_dir():
        raise AqaError(f"frame folder not found: {folder}")
    if job.source_kind == IMAGES_SORTED:
        from aqa_cli.sources.folder import IMAGE_SUFFIXES

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

    size = (config.width, config.height)
    decoded: dict[int, np.ndarray] = {}
    meta = None
    for _, sample in job.samples:
        indices = _window(sample, length, config.frames)
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


def _stored_sample(
    sample: Sample, position: int, frames: np.ndarray, indices: np.ndarray, meta: dict
) -> StoredSample:
    return StoredSample(
        id=sample.id,
        frames=np.ascontiguousarray(frames, dtype=np.uint8),
        frame_index=np.asarray(indices, dtype=np.int64),
        split=sample.split,
        score=sample.score,
        difficulty=sample.difficulty,
        source=sample.source,
        frame_first=int(indices[0]),
        frame_last=int(indices[-1]) + 1,
        orig_width=meta["orig_width"],
        orig_height=meta["orig_height"],
        fps=meta["fps"] if meta["fps"] is not None else float("nan"),
        frames_lost=meta["frames_lost"],
        index=position,
        extra=sample.extra,
        action=sample.action,
        frame_labels=_stored_labels(sample, indices),
    )


def _stored_labels(sample: Sample, indices: np.ndarray) -> np.ndarray | None:
    """The sample's label of each stored frame (`Sample.frame_labels` starts at frame `first`)."""
    if sample.frame_labels is None:
        return None
    labels = np.asarray(sample.frame_labels, dtype=np.int32)
    return labels[np.asarray(indices, dtype=np.int64) - (sample.first or 0)]
