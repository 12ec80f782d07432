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

from aqa_cli.media.clips import ClipShape, Job, decode_job
from aqa_cli.media.decoder import FRAME_SIZE
from aqa_cli.media.fitting import FIT_RULES
from aqa_cli.media.sources.base import Sample, SourceScan
from aqa_cli.media.sources.datasets import resolve_dataset
from aqa_cli.media.sources.folder import scan_folder
from aqa_cli.media.sources.manifest import scan_manifest
from aqa_cli.media.sources.mtl_aqa import find_mtl_aqa_root, scan_mtl_aqa
from aqa_cli.media.worker_pool import StopRun, WorkerPool
from aqa_cli.pipelines.options import DEFAULT_FRAMES, DEFAULT_TIMEOUT, PreprocessOptions
from aqa_cli.stores.common import COMPRESSIONS
from aqa_cli.stores.video_store import (
    SamplePartial,
    StoreAttributes,
    StoreConfig,
    StoredSample,
    StoreReadError,
    VideoStore,
    assemble_store,
    store_lock,
    verify_samples,
)
from aqa_cli.util.errors import AqaError

MAX_FRAMES = 4096  # 270 MB of frames per sample in memory: beyond that a typo, not a dataset
DATA_DIR = Path("data")


class StoreWriteError(StopRun):
    """Writing the store failed (disk full, read-only): stop everything, keep what is done."""


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
    in_store: int = 0  # samples in the store written


def resolve_source(
    source: Path | None, frames: int, fit: str, action: str | None = None
) -> tuple[SourceScan, str]:
    """Pick the adapter from what the user gave; return its scan and the default store name."""
    found = resolve_dataset(source, frames, fit, action)
    if found is not None:
        return found
    if action is not None:
        raise AqaError(
            f"--action {action} keeps one action of an AQA-7 or FineDiving source, and "
            f"{source or DATA_DIR} is neither; drop --action"
        )
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


def run_preprocess(
    source: Path | None,
    out: Path | None,
    options: PreprocessOptions,
    progress: Callable[[str, int, int], None] | None = None,
) -> PreprocessReport:
    """Store every sample of `source` in `out` (default: data/<source>.h5); `progress(sample_id, 1, total)`
    is called as each sample finishes (stored or failed). Rerunning resumes (see the module docstring)."""
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
    shard_index, shard_count = parse_shard(options.shard)
    scan, default_name = resolve_source(source, frames, options.fit, options.action)
    if out is None:
        suffix = f".shard{shard_index}of{shard_count}" if shard_count > 1 else ""
        out = DATA_DIR / f"{default_name}{suffix}.h5"
    config = StoreConfig(frames, options.fit, *FRAME_SIZE, options.compression)
    shape = ClipShape(frames, *FRAME_SIZE)
    jobs = [job for n, job in enumerate(_group_jobs(scan.samples)) if n % shard_count == shard_index]
    positions = {sample.id: position for job in jobs for position, sample in job.samples}
    report = PreprocessReport(out=out, notices=list(scan.notices))
    started = time.perf_counter()
    workers = max(1, min(options.workers or os.cpu_count() or 1, len(jobs)))
    # The workers start importing now, while the earlier store and partial work are checked.
    with store_lock(out), WorkerPool(workers, timeout) as pool:
        earlier = _earlier_store_rows(out, config, report)
        partial = SamplePartial(out, config).open()
        done = earlier.keys() | partial.done_ids()
        todo = [_without(job, done) for job in jobs]
        todo = [job for job in todo if job.samples]
        failed = [problem for problem in scan.problems if shard_count == 1] + _run_jobs(
            pool, todo, shape, partial, report, progress
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
    report.in_store = len(rows)
    if not rows and not failed:
        shard = f" in shard {options.shard}" if shard_count > 1 else ""
        raise AqaError(f"no samples to store{shard} from {scan.description}: no store written at {out}")
    return report


def parse_shard(shard: str | None) -> tuple[int, int]:
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
    pool: WorkerPool,
    jobs: list[Job],
    shape: ClipShape,
    partial: SamplePartial,
    report: PreprocessReport,
    progress: Callable[[str, int, int], None] | None,
) -> list[tuple[str, str]]:
    """Decode the jobs in the pool's worker processes, reporting each finished sample; return failures."""
    failed: list[tuple[str, str]] = []
    reported: set[str] = set()
    total = sum(len(job.samples) for job in jobs)

    def record(outcome: Outcome) -> None:
        reported.add(outcome.id)
        if outcome.stored:
            report.stored += 1
            report.frames_lost += outcome.frames_lost
        else:
            failed.append((outcome.id, outcome.reason))
        if progress is not None:
            progress(outcome.id, 1, total)

    def remaining(job: Job) -> Job | None:
        left = _without(job, reported)
        return left if left.samples else None

    def give_up(job: Job, reason: str) -> None:
        for _, sample in job.samples:
            if sample.id not in reported:
                record(Outcome(sample.id, False, f"{job.source}: {reason}"))

    threads = max(1, (os.cpu_count() or 1) // pool.size)  # per worker: no oversubscription
    pool.run(jobs, DecodeWork(shape, partial.config, partial.store_path, threads), record, give_up, remaining)
    return failed


@dataclass(frozen=True)
class DecodeWork:
    """What a worker runs for each job (picklable, so that it can be sent to the worker): decode the
    job's source once and write each of its samples to the store's partial work, reporting every sample
    through `emit`."""

    shape: ClipShape
    config: StoreConfig
    store_path: Path
    threads: int

    def __call__(self, job: Job, emit: Callable[[Outcome], None]) -> None:
        writer = SamplePartial(self.store_path, self.config)
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
            decode_job(job, self.shape, finish, self.threads)
        except StoreWriteError:
            raise
        except AqaError as exc:
            reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - one bad video must not stop the others
            reason = f"unexpected {type(exc).__name__} while decoding {job.source}: {exc}"
        for sample_id, (_, sample) in list(remaining.items()):
            ended = f"{job.source} ended before frame {sample.last} that clip {sample_id} needs"
            emit(Outcome(sample_id, False, reason or ended))


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
