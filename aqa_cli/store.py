"""The HDF5 video store: its format, a crash-safe writer, a reader, a summary, and shard merging.

Layout (see docs/FORMAT.md): `/frames` (N, T, H, W, 3) uint8, one chunk per sample, with per-sample
columns under `/samples/` and store-level attributes on the root.

Crash safety: the store file is only ever created by an atomic rename. While `aqa preprocess` runs,
every finished sample is its own small file in `STORE.partial/` (written to a temporary name, then
renamed), so a kill at any moment loses at most the samples in flight. Assembly copies those
compressed chunks as they are (`write_direct_chunk`: no recompression) into `STORE.tmp`, then renames.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from aqa_cli import __version__
from aqa_cli.errors import AqaError

FORMAT_NAME = "aqa-video-store"
FORMAT_VERSION = 1
COMPRESSIONS = ("lzf", "gzip", "none")

TEXT = h5py.string_dtype("utf-8")
# Per-sample columns under /samples/ and their HDF5 types (frame_index is (N, T) and handled apart).
COLUMNS: dict[str, object] = {
    "id": TEXT,
    "split": TEXT,
    "score": np.float64,
    "difficulty": np.float64,
    "source": TEXT,
    "frame_first": np.int64,
    "frame_last": np.int64,
    "orig_width": np.int32,
    "orig_height": np.int32,
    "fps": np.float64,
    "frames_lost": np.int32,
    "index": np.int64,
    "extra": TEXT,
}


@dataclass(frozen=True)
class StoreConfig:
    """How frames were prepared; a store and its partial work must agree on all of it to be mixed."""

    frames: int
    fit: str
    width: int
    height: int
    compression: str

    def filters(self) -> dict:
        """h5py dataset options: the codec, and a Fletcher-32 checksum on every chunk."""
        codec = {"lzf": {"compression": "lzf"}, "gzip": {"compression": "gzip", "compression_opts": 4}}
        return {**codec.get(self.compression, {}), "fletcher32": True}

    def frame_shape(self) -> tuple[int, int, int, int]:
        return (self.frames, self.height, self.width, 3)


@dataclass
class StoredSample:
    """One finished sample: its frames and everything the store records about it."""

    id: str
    frames: np.ndarray
    frame_index: np.ndarray
    split: str
    score: float
    difficulty: float
    source: str
    frame_first: int
    frame_last: int
    orig_width: int
    orig_height: int
    fps: float
    frames_lost: int
    index: int
    extra: dict = field(default_factory=dict)

    def columns(self) -> dict:
        row = {name: getattr(self, name) for name in COLUMNS}
        row["extra"] = json.dumps(self.extra, sort_keys=True)
        return row


def _segment_name(sample_id: str) -> str:
    return hashlib.sha1(sample_id.encode()).hexdigest()[:20] + ".h5"


def _disk_error(exc: OSError, where: Path) -> AqaError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return AqaError(f"disk full while writing {where}: free some space and rerun to resume")
    if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return AqaError(f"cannot write {where}: {exc.strerror}; choose a writable --out")
    return AqaError(f"cannot write {where}: {exc}")


class PartialWork:
    """The `STORE.partial/` folder: one atomically written file per finished sample."""

    def __init__(self, directory: Path, config: StoreConfig):
        self.dir = directory
        self.config = config

    def open(self) -> None:
        """Create the folder (or check that earlier work used the same settings) and drop temp files."""
        config_file = self.dir / "config.json"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            for leftover in self.dir.glob("*.tmp"):
                leftover.unlink()
            if config_file.exists():
                earlier = json.loads(config_file.read_text())
                if earlier != asdict(self.config):
                    raise AqaError(
                        f"{self.dir} holds unfinished work made with other settings ({_describe(earlier)}); "
                        f"rerun with those settings, or delete {self.dir} to start over"
                    )
            else:
                _atomic_write_text(config_file, json.dumps(asdict(self.config)))
        except OSError as exc:
            raise _disk_error(exc, self.dir) from exc

    def done_ids(self) -> set[str]:
        done = set()
        for path in self.dir.glob("*.h5"):
            with h5py.File(path, "r") as f:
                done.add(f.attrs["id"])
        return done

    def write(self, sample: StoredSample) -> None:
        """Build the sample's HDF5 file in memory, then write, fsync and rename it into place.

        HDF5 never writes to the disk itself here, so a full disk is a plain OSError on one write call
        instead of a half-written HDF5 file and h5py errors at close.
        """
        image = io.BytesIO()
        with h5py.File(image, "w") as f:
            f.create_dataset(
                "frames", data=sample.frames, chunks=sample.frames.shape, **self.config.filters()
            )
            f.create_dataset("frame_index", data=sample.frame_index)
            for name, value in sample.columns().items():
                f.attrs[name] = value
        final = self.dir / _segment_name(sample.id)
        temp = final.with_suffix(".tmp")
        try:
            with open(temp, "wb") as out:
                out.write(image.getbuffer())
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, final)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise _disk_error(exc, final) from exc

    def path_of(self, sample_id: str) -> Path:
        return self.dir / _segment_name(sample_id)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def partial_dir_for(store_path: Path) -> Path:
    return Path(str(store_path) + ".partial")


def _describe(config: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items())


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_text(path: Path, text: str) -> None:
    temp = path.with_suffix(path.suffix + ".tmp")
    temp.write_text(text)
    _fsync_file(temp)
    os.replace(temp, path)


@contextmanager
def store_lock(store_path: Path) -> Iterator[None]:
    """Refuse a second writer of the same store (an advisory lock the OS drops if we die)."""
    lock_path = Path(str(store_path) + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a")  # noqa: SIM115 - held for the whole block
    except OSError as exc:
        raise _disk_error(exc, lock_path) from exc
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AqaError(
                f"another aqa process is writing {store_path} (it holds {lock_path}); "
                "wait for it to finish or stop it, then rerun"
            ) from None
        yield
    finally:
        handle.close()


@dataclass
class StoreAttributes:
    """Store-level attributes written on the root group."""

    source_kind: str
    source_description: str
    failed: list[tuple[str, str]] = field(default_factory=list)
    shard: str = ""


def assemble_store(
    out: Path,
    config: StoreConfig,
    attributes: StoreAttributes,
    rows: list[tuple[str, Path, int]],
) -> None:
    """Write `out` from finished samples, in the given order, through `out.tmp` and an atomic rename.

    Each row is (id, file, row): a sample file from `PartialWork` (row -1) or a row of an earlier store.
    Compressed chunks are copied as they are.
    """
    temp = Path(str(out) + ".tmp")
    n = len(rows)
    _check_free_space(out, rows)
    try:
        with _h5py_close_errors_quiet(), h5py.File(temp, "w", libver=("v110", "latest")) as dst:
            _write_root_attributes(dst, config, attributes)
            frames = dst.create_dataset(
                "frames",
                shape=(n, *config.frame_shape()),
                dtype=np.uint8,
                chunks=(1, *config.frame_shape()),
                **config.filters(),
            )
            frame_index = dst.create_dataset("samples/frame_index", shape=(n, config.frames), dtype=np.int64)
            columns = {name: [] for name in COLUMNS}
            for position, (_, path, row) in enumerate(rows):
                with h5py.File(path, "r") as src:
                    if row < 0:
                        filter_mask, chunk = src["frames"].id.read_direct_chunk((0, 0, 0, 0))
                        frame_index[position] = src["frame_index"][()]
                        values = {name: src.attrs[name] for name in COLUMNS}
                    else:
                        filter_mask, chunk = src["frames"].id.read_direct_chunk((row, 0, 0, 0, 0))
                        frame_index[position] = src["samples/frame_index"][row]
                        values = {name: src["samples"][name][row] for name in COLUMNS}
                frames.id.write_direct_chunk((position, 0, 0, 0, 0), chunk, filter_mask)
                for name, value in values.items():
                    columns[name].append(value.decode() if isinstance(value, bytes) else value)
            for name, dtype in COLUMNS.items():
                dst.create_dataset(
                    f"samples/{name}",
                    data=np.array(columns[name], dtype=object if dtype is TEXT else dtype),
                    dtype=dtype,
                )
        _fsync_file(temp)
        os.replace(temp, out)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise _disk_error(exc, out) from exc


def _check_free_space(out: Path, rows: list[tuple[str, Path, int]]) -> None:
    """Refuse to start assembling when the compressed chunks to copy cannot fit next to the store."""
    needed = sum(path.stat().st_size for path in {path for _, path, row in rows if row < 0})
    if out.exists():
        needed += out.stat().st_size
    free = shutil.disk_usage(out.parent).free
    if needed > free:
        raise AqaError(
            f"disk full: assembling {out} needs about {needed / 2**20:.0f} MiB and {out.parent} has "
            f"{free / 2**20:.0f} MiB free; free some space and rerun to resume (finished samples are kept)"
        )


@contextmanager
def _h5py_close_errors_quiet() -> Iterator[None]:
    """After a failed write, h5py reports close errors as 'Exception ignored' tracebacks on stderr; the
    OSError that caused them is reported instead, as one line."""
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _write_root_attributes(dst: h5py.File, config: StoreConfig, attributes: StoreAttributes) -> None:
    dst.attrs.update(
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "tool_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "source_kind": attributes.source_kind,
            "source_description": attributes.source_description,
            "resize": np.array([config.width, config.height], dtype=np.int32),
            "frames_per_sample": config.frames,
            "fit": config.fit,
            "compression": config.compression,
            "failed": json.dumps(attributes.failed),
            "shard": attributes.shard,
        }
    )


class VideoStore:
    """Read access to a store; opens the file read-only and checks that it is one of ours."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise AqaError(f"store not found: {self.path}; create it with `aqa preprocess`")
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as exc:
            raise AqaError(
                f"cannot open {self.path} as HDF5 ({exc}); it is not a store or it is damaged: "
                "rerun `aqa preprocess` to rebuild it"
            ) from exc
        if self.file.attrs.get("format") != FORMAT_NAME:
            self.file.close()
            raise AqaError(
                f"{self.path} is an HDF5 file but not an aqa video store (no format={FORMAT_NAME})"
            )
        version = int(self.file.attrs["format_version"])
        if version > FORMAT_VERSION:
            self.file.close()
            raise AqaError(
                f"{self.path} has store format {version}, newer than this aqa reads "
                f"({FORMAT_VERSION}): upgrade aqa"
            )

    def __enter__(self) -> VideoStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    def __len__(self) -> int:
        return self.file["frames"].shape[0]

    @property
    def config(self) -> StoreConfig:
        attrs = self.file.attrs
        width, height = (int(v) for v in attrs["resize"])
        return StoreConfig(
            int(attrs["frames_per_sample"]), str(attrs["fit"]), width, height, str(attrs["compression"])
        )

    def column(self, name: str) -> np.ndarray:
        data = self.file["samples"][name]
        return data.asstr()[()] if data.dtype.kind == "O" else data[()]

    def frames(self, i: int) -> np.ndarray:
        """All stored frames of sample i as (T, H, W, 3) uint8."""
        return self.file["frames"][i]

    def failed(self) -> list[tuple[str, str]]:
        return [tuple(item) for item in json.loads(self.file.attrs.get("failed", "[]"))]


def summarize(path: str | Path) -> dict:
    """Counts per split, score/difficulty ranges, frame counts and size on disk, as plain JSON types."""
    with VideoStore(path) as store:
        attrs = store.file.attrs
        splits = store.column("split") if len(store) else np.array([], dtype=object)
        scores = store.column("score") if len(store) else np.array([])
        difficulty = store.column("difficulty") if len(store) else np.array([])
        per_split = {}
        for split in sorted(set(splits.tolist())):
            mask = splits == split
            per_split[split] = {
                "samples": int(mask.sum()),
                "score": _range(scores[mask]),
                "difficulty": _range(difficulty[mask]),
            }
        config = store.config
        return {
            "path": str(store.path),
            "format_version": int(attrs["format_version"]),
            "tool_version": str(attrs["tool_version"]),
            "created": str(attrs["created"]),
            "source": str(attrs["source_description"]),
            "samples": len(store),
            "splits": per_split,
            "all": {"score": _range(scores), "difficulty": _range(difficulty)},
            "frames_per_sample": config.frames,
            "frame_size": [config.width, config.height],
            "fit": config.fit,
            "compression": config.compression,
            "frames_lost": int(store.column("frames_lost").sum()) if len(store) else 0,
            "failed": len(store.failed()),
            "failures": [{"id": sample_id, "reason": reason} for sample_id, reason in store.failed()],
            "size_bytes": _size_on_disk(store),
        }


def _range(values: np.ndarray) -> dict | None:
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    return {"min": float(values.min()), "max": float(values.max()), "mean": float(values.mean())}


def _size_on_disk(store: VideoStore) -> int:
    """The file's size plus, for a merged store, the shard files its virtual dataset reads."""
    total = store.path.stat().st_size
    frames = store.file["frames"]
    if frames.is_virtual:
        for source in {vs.file_name for vs in frames.virtual_sources()}:
            shard = (store.path.parent / source) if not os.path.isabs(source) else Path(source)
            total += shard.stat().st_size if shard.exists() else 0
    return total


def merge_stores(shards: Iterable[Path], out: Path) -> None:
    """One store over shard stores: `/frames` is a virtual dataset reading each shard's chunks in place.

    Samples are ordered by their position in the source (the `index` column), as in an unsharded run.
    The shard files must stay next to the merged store (paths are stored relative to it).
    """
    shards = [Path(s) for s in shards]
    if not shards:
        raise AqaError("give at least one shard store to merge")
    stores = [VideoStore(s) for s in shards]
    try:
        configs = {s.config for s in stores}
        if len(configs) > 1:
            raise AqaError(
                "the shards were preprocessed with different settings and cannot be merged: "
                + "; ".join(f"{s.path}: {_describe(asdict(s.config))}" for s in stores)
            )
        config = configs.pop()
        rows = sorted(
            (
                (int(index), k, row)
                for k, s in enumerate(stores)
                for row, index in enumerate(s.column("index"))
            ),
        )
        ids = [stores[k].column("id")[row] for _, k, row in rows]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise AqaError(
                f"sample ids appear in more than one shard (e.g. {duplicates[0]}): merge each shard once"
            )
        layout = h5py.VirtualLayout(shape=(len(rows), *config.frame_shape()), dtype=np.uint8)
        for position, (_, k, row) in enumerate(rows):
            relative = os.path.relpath(stores[k].path.resolve(), out.resolve().parent)
            layout[position] = h5py.VirtualSource(relative, "frames", shape=stores[k].file["frames"].shape)[
                row
            ]
        temp = Path(str(out) + ".tmp")
        with h5py.File(temp, "w", libver=("v110", "latest")) as dst:
            first = stores[0].file.attrs
            _write_root_attributes(
                dst,
                config,
                StoreAttributes(
                    source_kind=str(first["source_kind"]),
                    source_description=str(first["source_description"]),
                    failed=[f for s in stores for f in s.failed()],
                ),
            )
            dst.attrs["merged_from"] = json.dumps([str(s.path) for s in stores])
            dst.create_virtual_dataset("frames", layout)
            dst.create_dataset(
                "samples/frame_index",
                data=np.stack([stores[k].file["samples/frame_index"][row] for _, k, row in rows]),
            )
            for name, dtype in COLUMNS.items():
                values = [stores[k].column(name)[row] for _, k, row in rows]
                dst.create_dataset(
                    f"samples/{name}",
                    data=np.array(values, dtype=object if dtype is TEXT else dtype),
                    dtype=dtype,
                )
        os.replace(temp, out)
    finally:
        for s in stores:
            s.close()
