"""The HDF5 video store: its format, a crash-safe writer, a reader and a summary (merging: `stores.merge`).

Layout (see docs/FORMAT.md): `/frames` (N, T, H, W, 3) uint8, one chunk per sample, with per-sample
columns under `/samples/` and store-level attributes on the root.

Crash safety: the store file is only ever created by an atomic rename (`util.safe_output`). While
`aqa preprocess` runs, every finished sample is its own small file in `STORE.partial/` (`SamplePartial`),
so a kill at any moment loses at most the samples in flight. Assembly copies those compressed chunks
as they are (`write_direct_chunk`: no recompression) into a temporary file, then renames it.

Integrity: every frames chunk carries a Fletcher-32 checksum, and every sample a sha256 of its frames
(`samples/frames_sha256`) and one of its metadata (`samples/meta_sha256`), computed when the sample is
written. Readers check all metadata when they open a store and each sample's frames when they first read
them; `verify_samples` checks everything.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from aqa_cli import __version__
from aqa_cli.stores.common import FEATURE_STORE_FORMAT, VIDEO_STORE_FORMAT
from aqa_cli.util.errors import AqaError
from aqa_cli.util.safe_output import PartialWork, atomic_output, output_lock

FORMAT_NAME = VIDEO_STORE_FORMAT
FORMAT_VERSION = 1
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
# Per-sample checksums, hex sha256 text (`sample_checksums`); stores written before they existed lack
# these columns and are still read.
FRAMES_SHA256 = "frames_sha256"  # of the frame bytes
META_SHA256 = "meta_sha256"  # of frame_index and every column above
CHECKSUMS = (FRAMES_SHA256, META_SHA256)
# Per-sample columns added after the first version-1 stores, with the value that stands for "unknown":
# stores written before them lack them and read as that value, and a sample whose value is the default
# adds nothing to meta_sha256, so those stores verify unchanged (and a resumed run copies their rows).
OPTIONAL_COLUMNS: dict[str, object] = {"action": TEXT}  # AQA-7's action class, FineDiving's dive number
OPTIONAL_DEFAULTS = {"action": ""}
# (N, T) int32: a label per stored frame (FineDiving's sub-action ids), -1 where unknown; the dataset is
# written only when some sample has labels, and a sample's labels count in meta_sha256 only when it has any.
FRAME_LABELS = "frame_labels"
NO_LABEL = -1


@dataclass(frozen=True)
class StoreConfig:
    """How frames were prepared; a store and its partial work must agree on all of it to be mixed."""

    frames: int
    fit: str
    width: int
    height: int
    compression: str

    def describe(self) -> str:
        """As the preprocess options that make it: `--frames 103, --fit uniform, ..., width 171, ...`."""
        return ", ".join(_setting(name, value) for name, value in asdict(self).items())

    def differences(self, earlier: dict) -> str:
        """What `earlier` (a StoreConfig as a dict) was made with where it differs from this one, as the
        options that would reproduce it: `--compression lzf (now none)`."""
        return ", ".join(
            f"{_setting(name, earlier.get(name))} (now {value})"
            for name, value in asdict(self).items()
            if earlier.get(name) != value
        )

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
    action: str = ""
    frame_labels: np.ndarray | None = None  # (T,) int32 per stored frame, NO_LABEL where unknown

    def columns(self) -> dict:
        """Every column and optional column, as written (`frame_labels` is a dataset of its own)."""
        row = {name: getattr(self, name) for name in (*COLUMNS, *OPTIONAL_COLUMNS)}
        row["extra"] = json.dumps(self.extra, sort_keys=True)
        return row


def frames_checksum(frames: np.ndarray) -> str:
    """sha256 of a sample's frame bytes: (T, H, W, 3) uint8 in C order."""
    return hashlib.sha256(np.ascontiguousarray(frames, dtype=np.uint8).data).hexdigest()


def metadata_checksum(frame_index: np.ndarray, columns: dict) -> str:
    """sha256 of a sample's frame_index (int64 little endian), then each column in `COLUMNS` order (text
    as UTF-8, numbers as their little-endian dtype), each preceded by its byte length (8 bytes, little
    endian); then each optional column whose value is not its default, as its name and its value the same
    way, and `frame_labels` (int32 little endian) when the sample has a label."""
    digest = hashlib.sha256(np.ascontiguousarray(frame_index, dtype="<i8").tobytes())

    def add(data: bytes) -> None:
        digest.update(len(data).to_bytes(8, "little") + data)

    for name, dtype in COLUMNS.items():
        add(_column_bytes(columns[name], dtype))
    for name, dtype in OPTIONAL_COLUMNS.items():
        value = columns.get(name, OPTIONAL_DEFAULTS[name])
        if (value.decode() if isinstance(value, bytes) else value) != OPTIONAL_DEFAULTS[name]:
            add(name.encode())
            add(_column_bytes(value, dtype))
    labels = columns.get(FRAME_LABELS)
    if labels is not None and np.any(np.asarray(labels) != NO_LABEL):
        add(FRAME_LABELS.encode())
        add(np.ascontiguousarray(labels, dtype="<i4").tobytes())
    return digest.hexdigest()


def labels_sha256(
    ids: Iterable, splits: Iterable, difficulty: Iterable, scores: Mapping[str, Iterable]
) -> str:
    """sha256 of ids, splits, difficulties and every score column (in order), each as numpy text: the one
    fingerprint of the labels a model was trained and evaluated on (stores, feature stores, checkpoints)."""
    digest = hashlib.sha256()
    for values in (ids, splits, difficulty, *scores.values()):
        digest.update(
            np.asarray(list(values) if not isinstance(values, np.ndarray) else values).astype(str).tobytes()
        )
    return digest.hexdigest()


def _column_bytes(value: object, dtype: object) -> bytes:
    if dtype is TEXT:
        return value if isinstance(value, bytes) else str(value).encode()
    return np.asarray(value, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def _has_labels(labels: np.ndarray | None) -> bool:
    return labels is not None and bool(np.any(np.asarray(labels) != NO_LABEL))


def sample_checksums(frames: np.ndarray, frame_index: np.ndarray, columns: dict) -> dict[str, str]:
    return {FRAMES_SHA256: frames_checksum(frames), META_SHA256: metadata_checksum(frame_index, columns)}


def _segment_name(sample_id: str) -> str:
    return hashlib.sha1(sample_id.encode()).hexdigest()[:20] + ".h5"


class SamplePartial:
    """`STORE.partial/` of a preprocess run: one HDF5 file per finished sample (`PartialWork`)."""

    def __init__(self, store_path: Path, config: StoreConfig):
        self.store_path = store_path
        self.config = config
        self.work = PartialWork(store_path, asdict(config), config.differences)
        self.dir = self.work.dir

    def open(self) -> SamplePartial:
        self.work.open()
        return self

    def done_ids(self) -> set[str]:
        """Ids of the finished samples whose files read back intact; a damaged file is deleted, so that
        its sample is decoded again."""
        done = set()
        for path in self.work.pieces("*.h5"):
            sample_id = _intact_sample_file(path)
            if sample_id is None:
                path.unlink()
            else:
                done.add(sample_id)
        return done

    def write(self, sample: StoredSample) -> None:
        """Build the sample's HDF5 file in memory, then write it atomically.

        HDF5 never writes to the disk itself here, so a full disk is a plain OSError on one write call
        instead of a half-written HDF5 file and h5py errors at close.
        """
        image = io.BytesIO()
        columns = sample.columns()
        with h5py.File(image, "w") as f:
            f.create_dataset(
                "frames", data=sample.frames, chunks=sample.frames.shape, **self.config.filters()
            )
            f.create_dataset("frame_index", data=sample.frame_index)
            if _has_labels(sample.frame_labels):
                f.create_dataset(FRAME_LABELS, data=np.asarray(sample.frame_labels, dtype=np.int32))
            for name, value in columns.items():
                f.attrs[name] = value
            hashed = {**columns, FRAME_LABELS: sample.frame_labels}
            f.attrs.update(sample_checksums(sample.frames, sample.frame_index, hashed))
        self.work.write(_segment_name(sample.id), image.getvalue())

    def path_of(self, sample_id: str) -> Path:
        return self.work.path(_segment_name(sample_id))

    def remove(self) -> None:
        self.work.remove()


def _intact_sample_file(path: Path) -> str | None:
    """The id of a `SamplePartial` sample file whose frames and checksum read back intact, else None."""
    try:
        with h5py.File(path, "r") as f:
            columns = {name: f.attrs[name] for name in COLUMNS}
            columns.update({name: f.attrs.get(name, default) for name, default in OPTIONAL_DEFAULTS.items()})
            columns[FRAME_LABELS] = f[FRAME_LABELS][()] if FRAME_LABELS in f else None
            actual = sample_checksums(f["frames"][()], f["frame_index"][()], columns)
            return str(columns["id"]) if actual == {name: f.attrs.get(name) for name in CHECKSUMS} else None
    except Exception:  # noqa: BLE001 - h5py raises many types on damaged files; any of them means redo it
        return None


def _setting(name: str, value: object) -> str:
    """A StoreConfig field as the preprocess option that sets it (the frame size is fixed, no option)."""
    return f"{name} {value}" if name in ("width", "height") else f"--{name} {value}"


def store_lock(store_path: Path):
    """Refuse a second writer of the same store (an advisory lock the OS drops if we die)."""
    return output_lock(store_path)


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
    """Write `out` from finished samples, in the given order, atomically (`atomic_output`).

    Each row is (id, file, row): a sample file from `SamplePartial` (row -1) or a row of an earlier store.
    Compressed chunks are copied as they are, with each sample's checksum (computed here only for the
    rows of an earlier store written before stores had checksums).
    """
    n = len(rows)
    _check_free_space(out, rows)
    with atomic_output(out) as temp, h5py.File(temp, "w", libver=("v110", "latest")) as dst:
        write_root_attributes(dst, config, attributes)
        frames = dst.create_dataset(
            "frames",
            shape=(n, *config.frame_shape()),
            dtype=np.uint8,
            chunks=(1, *config.frame_shape()),
            **config.filters(),
        )
        frame_index = dst.create_dataset("samples/frame_index", shape=(n, config.frames), dtype=np.int64)
        all_columns = {**COLUMNS, **OPTIONAL_COLUMNS, **dict.fromkeys(CHECKSUMS, TEXT)}
        columns = {name: [] for name in all_columns}
        labels = np.full((n, config.frames), NO_LABEL, dtype=np.int32)
        for position, (_, path, row) in enumerate(rows):
            with h5py.File(path, "r") as src:
                if row < 0:
                    filter_mask, chunk = src["frames"].id.read_direct_chunk((0, 0, 0, 0))
                    frame_index[position] = src["frame_index"][()]
                    values = {name: src.attrs.get(name, OPTIONAL_DEFAULTS.get(name)) for name in all_columns}
                    if FRAME_LABELS in src:
                        labels[position] = src[FRAME_LABELS][()]
                else:
                    filter_mask, chunk = src["frames"].id.read_direct_chunk((row, 0, 0, 0, 0))
                    frame_index[position] = src["samples/frame_index"][row]
                    values = {name: src["samples"][name][row] for name in COLUMNS}
                    for name, default in OPTIONAL_DEFAULTS.items():
                        values[name] = src["samples"][name][row] if name in src["samples"] else default
                    if FRAME_LABELS in src["samples"]:
                        labels[position] = src["samples"][FRAME_LABELS][row]
                    if FRAMES_SHA256 in src["samples"]:
                        values.update({name: src["samples"][name][row] for name in CHECKSUMS})
                    else:
                        hashed = {**values, FRAME_LABELS: labels[position]}
                        values.update(sample_checksums(src["frames"][row], frame_index[position], hashed))
            frames.id.write_direct_chunk((position, 0, 0, 0, 0), chunk, filter_mask)
            for name, value in values.items():
                columns[name].append(value.decode() if isinstance(value, bytes) else value)
        if _has_labels(labels):
            dst.create_dataset(f"samples/{FRAME_LABELS}", data=labels)
        for name, dtype in all_columns.items():
            dst.create_dataset(
                f"samples/{name}",
                data=np.array(columns[name], dtype=object if dtype is TEXT else dtype),
                dtype=dtype,
            )


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


def write_root_attributes(dst: h5py.File, config: StoreConfig, attributes: StoreAttributes) -> None:
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


MAX_NAMED = 5  # damaged samples named in one error line
_REBUILD = (
    "`aqa info --verify STORE` lists the damage, and rerunning `aqa preprocess` with the same source and "
    "--out decodes damaged samples again"
)


class StoreReadError(AqaError):
    """Part of a store cannot be read back, or does not match its checksum: its bytes are damaged."""

    def __init__(self, message: object = "", problem: str = "") -> None:
        super().__init__(message)
        self.problem = problem  # what is wrong, without the file and the remedy


class VideoStore:
    """Read access to a store; opens the file read-only and checks that it is one of ours."""

    def __init__(self, path: str | Path, check: bool = True):
        """`check`: refuse a store whose samples' metadata do not match their checksums (`aqa info
        --verify` and resuming preprocess open without it, to find and replace the damaged samples)."""
        self.path = Path(path)
        if not self.path.exists():
            raise AqaError(f"store not found: {self.path}; create it with `aqa preprocess`")
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as exc:
            raise AqaError(
                f"cannot open {self.path} as HDF5 ({exc}); it is not a store or it is damaged: "
                "delete it and rerun `aqa preprocess` to rebuild it"
            ) from exc
        self._frames_sha256: np.ndarray | None = None  # loaded on the first check of frames
        self._verified: set[int] = set()
        try:
            self._check(check)
        except BaseException:
            self.file.close()
            raise

    def _check(self, metadata: bool) -> None:
        """That the file is an aqa store this version reads (StoreReadError: it is ours, but damaged)."""
        try:
            format_name = self.file.attrs.get("format")
            version = int(self.file.attrs.get("format_version", 0))
        except Exception as exc:  # noqa: BLE001 - h5py raises many types on damaged metadata
            raise AqaError(self._damage_message("its attributes", exc)) from None  # not known to be ours
        if format_name != FORMAT_NAME:
            if format_name == FEATURE_STORE_FORMAT:
                raise AqaError(
                    f"{self.path} is a feature store, not a video store: see it with `aqa features info "
                    f"{self.path}`, train heads on it with `aqa train --features {self.path}`"
                )
            raise AqaError(
                f"{self.path} is an HDF5 file but not an aqa video store (no format={FORMAT_NAME}); if it "
                f"is a damaged store, delete it and rerun `aqa preprocess` to rebuild it"
            )
        if version > FORMAT_VERSION:
            raise AqaError(
                f"{self.path} has store format {version}, newer than this aqa reads "
                f"({FORMAT_VERSION}): upgrade aqa (or, if it is a damaged store, delete it and rerun "
                "`aqa preprocess` to rebuild it)"
            )
        try:
            self.config, len(self)  # noqa: B018 - read once here, so that damage shows up now
        except Exception as exc:  # noqa: BLE001
            raise self._damaged("its layout", exc) from None
        damaged = self.damaged_metadata() if metadata else {}
        if damaged:
            names = ", ".join(self._name(row) for row in sorted(damaged)[:MAX_NAMED])
            raise StoreReadError(
                f"{self.path}: the metadata of {len(damaged)} sample(s) ({names}) do not match their "
                f"checksums: the file is damaged; {_REBUILD}"
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
        """One per-sample column; an optional column that the store lacks (written before it existed)
        reads as its default for every sample."""
        try:
            if name in OPTIONAL_COLUMNS and name not in self.file["samples"]:
                return np.full(len(self), OPTIONAL_DEFAULTS[name], dtype=object)
            data = self.file["samples"][name]
            return data.asstr()[()] if data.dtype.kind == "O" else data[()]
        except Exception as exc:  # noqa: BLE001 - h5py raises many types on damaged metadata
            raise self._damaged(f"its column samples/{name}", exc) from None

    def frame_labels(self) -> np.ndarray | None:
        """(N, T) int32 labels per stored frame (NO_LABEL where unknown), or None if no sample has any."""
        try:
            samples = self.file["samples"]
            return samples[FRAME_LABELS][()] if FRAME_LABELS in samples else None
        except Exception as exc:  # noqa: BLE001 - h5py raises many types on damaged metadata
            raise self._damaged(f"its column samples/{FRAME_LABELS}", exc) from None

    @property
    def has_checksums(self) -> bool:
        """Whether the store records per-sample checksums (stores written before they existed do not)."""
        try:
            return FRAMES_SHA256 in self.file["samples"]
        except Exception as exc:  # noqa: BLE001 - h5py raises many types on damaged metadata
            raise self._damaged("its samples group", exc) from None

    def damaged_metadata(self) -> dict[int, str]:
        """Rows whose frame_index and columns do not match their meta_sha256, with the problem."""
        if not self.has_checksums:
            return {}
        columns = {name: self.column(name) for name in (*COLUMNS, *OPTIONAL_COLUMNS)}
        labels = self.frame_labels()
        if labels is not None:
            columns[FRAME_LABELS] = labels
        frame_index, recorded = self.column("frame_index"), self.column(META_SHA256)
        if any(len(column) != len(self) for column in (*columns.values(), frame_index, recorded)):
            raise self._damaged("its columns", ValueError("they differ in length"))
        problem = "its metadata do not match their sha256"
        rows = {row: {name: column[row] for name, column in columns.items()} for row in range(len(self))}
        return {
            row: problem
            for row, values in rows.items()
            if metadata_checksum(frame_index[row], values) != recorded[row]
        }

    def frames(self, i: int) -> np.ndarray:
        """All stored frames of sample i as (T, H, W, 3) uint8; a damaged chunk fails its Fletcher-32
        checksum, which is a StoreReadError naming the sample."""
        try:
            return self.file["frames"][i]
        except OSError as exc:
            raise self._damaged(
                f"the frames of sample {self._name(i)}",
                exc,
                "its frames fail their chunk checksum (Fletcher-32) or cannot be read",
            ) from None

    def verified_frames(self, i: int) -> np.ndarray:
        """`frames(i)`, checked against the sample's frames_sha256 the first time this reader reads them
        (stores without checksums: the chunk checksum only)."""
        frames = self.frames(i)
        if i in self._verified or not self.has_checksums:
            return frames
        if self._frames_sha256 is None:
            self._frames_sha256 = self.column(FRAMES_SHA256)
        if frames_checksum(frames) != self._frames_sha256[i]:
            problem = "its frames do not match their sha256"
            raise StoreReadError(
                f"{self.path}: sample {self._name(i)} is damaged: {problem}; {_REBUILD}", problem
            )
        self._verified.add(i)
        return frames

    def _name(self, i: int) -> str:
        try:
            return f"{self.file['samples/id'].asstr()[i]} (row {i})"
        except Exception:  # noqa: BLE001 - the id itself may be what is damaged
            return f"row {i}"

    def _damage_message(self, what: str, exc: Exception) -> str:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"{self.path}: {what} cannot be read ({reason}): the file is damaged; {_REBUILD}"

    def _damaged(self, what: str, exc: Exception, problem: str = "") -> StoreReadError:
        return StoreReadError(self._damage_message(what, exc), problem)

    def fingerprint(self) -> dict:
        """What identifies the data a model is trained on: path, preprocessing, and the labels' sha256."""
        config = self.config
        return {
            "path": str(self.path.resolve()),
            "created": str(self.file.attrs["created"]),
            "samples": len(self),
            "frames": config.frames,
            "fit": config.fit,
            "width": config.width,
            "height": config.height,
            "labels_sha256": labels_sha256(
                self.column("id"),
                self.column("split"),
                self.column("difficulty"),
                {"score": self.column("score")},
            ),
        }

    def failed(self) -> list[tuple[str, str]]:
        try:
            return [tuple(item) for item in json.loads(self.file.attrs.get("failed", "[]"))]
        except Exception as exc:  # noqa: BLE001 - a damaged attribute is not JSON, or not readable
            raise self._damaged("its list of failed samples", exc) from None


def verify_samples(store: VideoStore) -> Iterator[tuple[int, str, str]]:
    """(row, id, problem) for every sample, reading everything: problem is "" when the sample's frames
    pass their chunk checksum and frames and metadata match their sha256 (when the store has them)."""
    damaged = store.damaged_metadata()
    for row, sample_id in enumerate(store.column("id")):
        if row in damaged:
            yield row, sample_id, damaged[row]
            continue
        try:
            store.verified_frames(row)
        except StoreReadError as exc:
            if not exc.problem:  # not this sample: the store's own structure is damaged
                raise
            yield row, sample_id, exc.problem
            continue
        yield row, sample_id, ""


def verify_store(path: str | Path) -> dict:
    """`aqa info --verify`: every sample read and checked (see `verify_samples`), as plain JSON types."""
    with VideoStore(path, check=False) as store:
        damaged = [
            {"id": sample_id, "row": row, "problem": problem}
            for row, sample_id, problem in verify_samples(store)
            if problem
        ]
        return {"samples": len(store), "checksums": store.has_checksums, "damaged": damaged}


def summarize(path: str | Path) -> dict:
    """Counts per split, score/difficulty ranges, frame counts and size on disk, as plain JSON types
    (of a damaged store too: `verify_store` says what is damaged)."""
    with VideoStore(path, check=False) as store:
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
        per_action = action_counts(store.column("action") if len(store) else np.array([], dtype=object))
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
            "actions": per_action,  # samples per action (stores with an `action` column)
            "frames_per_sample": config.frames,
            "frame_size": [config.width, config.height],
            "fit": config.fit,
            "compression": config.compression,
            "frames_lost": int(store.column("frames_lost").sum()) if len(store) else 0,
            "failed": len(store.failed()),
            "failures": [{"id": sample_id, "reason": reason} for sample_id, reason in store.failed()],
            "size_bytes": _size_on_disk(store),
        }


def action_counts(actions: np.ndarray) -> dict[str, int]:
    """Samples per known action (a store's `action` column; "" is unknown and not counted)."""
    return {str(a): int((actions == a).sum()) for a in sorted(set(actions.tolist())) if a}


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
