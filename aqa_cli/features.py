"""The HDF5 feature store: per-clip features of every sample, from `aqa extract` or `aqa features import`.

Layout (docs/FORMAT.md): `/features` (N, views, max clips, dim) float16 or float32, one compressed chunk
per sample, zero-padded past each sample's clip count `/samples/clips`; labels under `/samples/` and
`/scores/`; how the features were made (backbone and its weights' fingerprint, window, source store) in
root attributes. Files are written to `OUT.tmp` and renamed, and contain no timestamps, so the same
inputs give the same bytes.

`aqa extract` is crash-safe and resumable like `aqa preprocess`: each block of `batch_size` samples is
written to `OUT.partial/` as its own file (temporary name, fsync, rename) and skipped when rerun. Blocks
sit at fixed rows, so a resumed run computes every block exactly as an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from aqa_cli import __version__
from aqa_cli.data import WindowConfig, centred_window, check_window
from aqa_cli.errors import AqaError
from aqa_cli.files import atomic_write, write_error
from aqa_cli.models import Normalization, VideoResNetFeatures, build_backbone
from aqa_cli.models.aqa import clip_features
from aqa_cli.models.registry import resolve_weights
from aqa_cli.runtime import autocast, resolve_device, resolve_precision
from aqa_cli.store import TEXT, VideoStore, _fsync_file, partial_dir_for, store_lock

FORMAT_NAME = "aqa-feature-store"
FORMAT_VERSION = 1
DTYPES = ("float16", "float32")
JSON_ATTRIBUTES = ("score_columns", "window", "views", "backbone", "video_store", "source")
"""Root attributes stored as JSON text."""


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


@dataclass
class FeatureLabels:
    """What a feature store records per sample besides its features. `scores` keeps its column order:
    the first column is the store's default training target."""

    ids: list[str]
    splits: list[str]
    difficulty: np.ndarray
    scores: dict[str, np.ndarray]

    def digest(self) -> str:
        """sha256 of ids, splits, difficulties and every score column: identifies the labels."""
        digest = hashlib.sha256()
        for values in (self.ids, self.splits, self.difficulty, *self.scores.values()):
            digest.update(np.asarray(values).astype(str).tobytes())
        return digest.hexdigest()


class FeatureStore:
    """Read access to a feature store; checks that the file is one and that this aqa can read it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise AqaError(
                f"feature store not found: {self.path}; create it with `aqa extract` or `aqa features import`"
            )
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as exc:
            raise AqaError(
                f"cannot open {self.path} as HDF5 ({exc}); it is damaged: rerun the command that made it"
            ) from None
        if self.file.attrs.get("format") != FORMAT_NAME:
            self.file.close()
            raise AqaError(
                f"{self.path} is not an aqa feature store (no format={FORMAT_NAME}); video stores go to "
                "`aqa extract --store`, feature stores come from `aqa extract` or `aqa features import`"
            )
        if int(self.file.attrs["format_version"]) > FORMAT_VERSION:
            self.file.close()
            raise AqaError(f"{self.path} has feature store format newer than this aqa reads: upgrade aqa")

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()

    def __len__(self) -> int:
        return self.file["features"].shape[0]

    @property
    def attributes(self) -> dict:
        """All root attributes, JSON ones decoded."""
        return {
            key: json.loads(value) if key in JSON_ATTRIBUTES else _plain(value)
            for key, value in self.file.attrs.items()
        }

    @property
    def feature_dim(self) -> int:
        return self.file["features"].shape[3]

    @property
    def view_count(self) -> int:
        return self.file["features"].shape[1]

    @property
    def score_columns(self) -> list[str]:
        return json.loads(self.file.attrs["score_columns"])

    @property
    def backbone(self) -> dict | None:
        """The extracting backbone's record (architecture, normalization, weights' fingerprint); None for
        imported features."""
        return self.attributes.get("backbone")

    def column(self, name: str) -> np.ndarray:
        data = self.file["samples"][name]
        return data.asstr()[()] if data.dtype.kind == "O" else data[()]

    def scores(self, target: str) -> np.ndarray:
        if target not in self.score_columns:
            raise AqaError(
                f"{self.path} has no score column {target!r}; choose --target from "
                f"{', '.join(self.score_columns)}"
            )
        return self.file["scores"][target][()]

    def features(self, row: int, view: int = 0) -> np.ndarray:
        """(clips, dim) float32 features of one sample's view, without padding."""
        return self.padded_features(row, view)[: int(self.file["samples/clips"][row])]

    def padded_features(self, row: int, view: int = 0) -> np.ndarray:
        """(most clips, dim) float32 features of one sample's view: its clips, then zeros. A damaged
        sample (its chunk fails the Fletcher-32 check) is an error naming it."""
        try:
            return self.file["features"][row, view].astype(np.float32)
        except Exception as exc:  # noqa: BLE001 - h5py raises several types for a damaged chunk
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise AqaError(
                f"{self.path}: the features of sample {self.column('id')[row]} (row {row}) cannot be read "
                f"({reason}): the file is damaged; make it again with the `aqa extract` or `aqa features "
                "import` that wrote it"
            ) from None

    def fingerprint(self) -> dict:
        """What identifies the features a head is trained on (stored in its checkpoints)."""
        attrs = self.attributes
        return {
            "path": str(self.path.resolve()),
            "samples": len(self),
            "feature_dim": self.feature_dim,
            "views": self.view_count,
            "source_kind": attrs["source_kind"],
            "labels_sha256": attrs["labels_sha256"],
        }


def is_feature_store(path: str | Path) -> bool:
    """Whether `path` is an HDF5 file that says it is a feature store (anything else: False)."""
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT_NAME
    except OSError:
        return False


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def write_feature_store(
    out: Path,
    attributes: dict,
    labels: FeatureLabels,
    clips: np.ndarray,
    shape: tuple[int, int, int],
    dtype: str,
    blocks: Iterable[np.ndarray],
) -> None:
    """Write a feature store through `out.tmp` and a rename, one block of rows at a time (memory stays
    at one block). `shape` is (views, max clips, dim); each block is (rows, views, <= max clips, dim),
    in row order, padded here with zeros. `attributes` are JSON-able; those in JSON_ATTRIBUTES are stored
    as JSON text."""
    views, max_clips, dim = shape
    temp = Path(str(out) + ".tmp")
    count = len(labels.ids)
    options = {"track_times": False}
    try:
        with h5py.File(temp, "w", libver=("v110", "latest"), track_order=True) as f:
            for key, value in {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "tool_version": __version__,
                "score_columns": list(labels.scores),
                "labels_sha256": labels.digest(),
                **attributes,
            }.items():
                f.attrs[key] = json.dumps(value) if key in JSON_ATTRIBUTES else value
            features = f.create_dataset(
                "features",
                shape=(count, views, max_clips, dim),
                dtype=dtype,
                chunks=(1, views, max_clips, dim),
                compression="lzf",
                fletcher32=True,
                fillvalue=0,
                **options,
            )
            row = 0
            for block in blocks:
                padded = np.zeros((len(block), views, max_clips, dim), dtype=dtype)
                padded[:, :, : block.shape[2]] = block
                features[row : row + len(block)] = padded
                row += len(block)
            if row != count:
                raise AqaError(f"internal error: {row} feature rows written for {count} samples")
            columns = {
                "samples/id": (labels.ids, TEXT),
                "samples/split": (labels.splits, TEXT),
                "samples/clips": (clips, np.int32),
                "samples/difficulty": (labels.difficulty, np.float64),
                **{f"scores/{name}": (values, np.float64) for name, values in labels.scores.items()},
            }
            for name, (values, kind) in columns.items():
                data = np.array(values, dtype=object if kind is TEXT else kind)
                f.create_dataset(name, data=data, dtype=kind, **options)
        _fsync_file(temp)
        os.replace(temp, out)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise write_error(exc, out) from exc
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's parameters and buffers (names, dtypes and values), in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def frozen_backbone(
    depth: int,
    conv: str,
    weights: str | None,
    family: str | None,
    normalization: Normalization | str | None,
    seed: int,
) -> VideoResNetFeatures:
    """A backbone in evaluation mode; a random initialisation is drawn from `seed` (same seed and torch,
    same weights) without touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = build_backbone(depth, conv, weights, family=family, normalization=normalization)
    return backbone.eval()


def backbone_record(
    backbone: VideoResNetFeatures, weights: str | None, seed: int, weights_name: str | None = None
) -> dict:
    """Everything needed to rebuild the backbone and to tell whether a rebuilt one is the same;
    `weights_name`: the registry name the weights file came from (recorded only when there is one)."""
    named = {"weights_name": weights_name} if weights_name else {}
    return {
        **named,
        "depth": backbone.depth,
        "conv": backbone.conv,
        "family": backbone.family,
        "feature_dim": backbone.feature_dim,
        "normalization": backbone.normalization.to_dict(),
        "weights": str(Path(weights).resolve()) if weights else None,
        "weights_sha256": file_sha256(weights) if weights else "random init",
        "seed": None if weights else seed,
        "summary": backbone.weights_summary,
        "state_sha256": state_sha256(backbone),
        "torch_version": torch.__version__,
    }


def rebuild_backbone(record: dict, where: Path) -> VideoResNetFeatures:
    """The backbone an extraction used, from its record: the same weights file (checked by sha256), or
    the same random initialisation (checked by the state's sha256: it depends on the torch version)."""
    weights = record["weights"]
    if weights is not None:
        if not Path(weights).is_file():
            fetch = f" (`aqa weights fetch {record['weights_name']}`)" if record.get("weights_name") else ""
            raise AqaError(
                f"{where}: its backbone weights {weights} are missing; put that file (sha256 "
                f"{record['weights_sha256'][:16]}...) back at that path{fetch} to score videos"
            )
        if file_sha256(weights) != record["weights_sha256"]:
            raise AqaError(
                f"{where}: {weights} is not the weights file the features were extracted with (sha256 "
                f"differs); restore the original file"
            )
    backbone = frozen_backbone(
        record["depth"],
        record["conv"],
        weights,
        record["family"],
        Normalization.from_dict(record["normalization"]),
        record["seed"] or 0,
    )
    if weights is None and state_sha256(backbone) != record["state_sha256"]:
        raise AqaError(
            f"{where}: the random-init backbone (seed {record['seed']}, torch {record['torch_version']}) "
            f"cannot be rebuilt by torch {torch.__version__}; use that torch version, or extract with --weights"
        )
    return backbone


@dataclass
class ExtractOptions:
    store: str = "data/mtl_aqa.h5"
    out: str = ""  # "" = next to the store: <store stem>-<conv><depth>-clip<clip>[-views].features.h5
    depth: int = 34
    conv: str = "2plus1d"
    clip: int = 32
    weights: str = ""  # a weights name or a file; "" = random initialisation drawn from `seed`
    family: str = ""
    normalization: str = ""
    frames: int = 96
    crop: int = 112
    views: bool = False
    seed: int = 0
    batch_size: int = 4
    dtype: str = "float16"
    device: str = "auto"
    precision: str = "auto"
    workers: int = 2

    def out_path(self) -> Path:
        if self.out:
            return Path(self.out)
        store = Path(self.store)
        suffix = "-views" if self.views else ""
        return store.with_name(f"{store.stem}-{self.conv}{self.depth}-clip{self.clip}{suffix}.features.h5")


@dataclass
class ExtractReport:
    out: Path
    samples: int
    computed: int  # samples whose features were computed by this run
    reused: int  # samples found finished in OUT.partial/ (or the whole store, when up to date)
    seconds: float
    up_to_date: bool = False
    attributes: dict = dataclasses.field(default_factory=dict)


class _ViewBlocks(Dataset):
    """Blocks of consecutive store rows as uint8 (rows, views, 3, frames, crop, crop)."""

    def __init__(
        self, store_path: str, window: WindowConfig, views: list[View], starts: list[int], size: int
    ):
        self.store_path, self.window, self.views = store_path, window, views
        self.starts, self.size = starts, size
        self._store: VideoStore | None = None

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray]:
        if self._store is None:
            self._store = VideoStore(self.store_path)
        start = self.starts[i]
        rows = range(start, min(start + self.size, len(self._store)))
        block = [
            [
                centred_window(self._store.verified_frames(row), self.window, v.shift, v.flip)
                for v in self.views
            ]
            for row in rows
        ]
        return start, np.stack([np.stack(views) for views in block])


@dataclass
class _Extraction:
    """Everything an extraction needs, resolved from the options and the video store."""

    out: Path
    labels: FeatureLabels
    window: WindowConfig
    views: list[View]
    backbone: VideoResNetFeatures
    precision: str
    attributes: dict  # the feature store's root attributes; also what a resumed run must match


def extract_features(
    options: ExtractOptions, progress: Callable[[str, int, int], None] | None = None
) -> ExtractReport:
    """Run the frozen backbone over every sample of a video store once and write a feature store.

    `progress(last_id, samples, total)` is called after every block with the samples it finished.
    Rerunning resumes from `OUT.partial/`; a store already made with the same settings is left as it is.
    """
    started = time.perf_counter()
    plan = _plan_extraction(options)
    out, count, attributes = plan.out, len(plan.labels.ids), plan.attributes
    with store_lock(out):
        if out.exists():
            with FeatureStore(out) as existing:
                made_with = {key: existing.attributes.get(key) for key in attributes}
            if made_with == json.loads(json.dumps(attributes)):
                return ExtractReport(out, count, 0, count, time.perf_counter() - started, True, attributes)
            raise AqaError(
                f"{out} holds features made with other settings ({_differences(made_with, attributes)}); "
                "choose another --out, or delete it to extract again"
            )
        partial = _ExtractPartial(partial_dir_for(out), attributes)
        starts = list(range(0, count, options.batch_size))
        reused = sum(min(options.batch_size, count - start) for start in starts if partial.has(start))
        if progress is not None and reused:
            progress("(already extracted)", reused, count)
        _extract_blocks(
            options, plan, [start for start in starts if not partial.has(start)], partial, progress
        )
        clips = options.frames // options.clip
        write_feature_store(
            out,
            attributes,
            plan.labels,
            np.full(count, clips, dtype=np.int32),
            (len(plan.views), clips, plan.backbone.feature_dim),
            options.dtype,
            (partial.read(start) for start in starts),
        )
        partial.remove()
    return ExtractReport(out, count, count - reused, reused, time.perf_counter() - started, False, attributes)


def _plan_extraction(options: ExtractOptions) -> _Extraction:
    if options.dtype not in DTYPES:
        raise AqaError(f"unknown --dtype {options.dtype!r}; choose one of {', '.join(DTYPES)}")
    if options.batch_size < 1:
        raise AqaError("--batch-size must be at least 1")
    if options.frames % options.clip:
        raise AqaError(
            f"--clip {options.clip} does not divide --frames {options.frames}: use 8, 16 or 32 for 96 frames"
        )
    with VideoStore(options.store) as store:
        config = store.config
        labels = FeatureLabels(
            ids=store.column("id").tolist(),
            splits=store.column("split").tolist(),
            difficulty=store.column("difficulty"),
            scores={"score": store.column("score")},
        )
        video_store = {
            "path": str(store.path.resolve()),
            "samples": len(store),
            "frames": config.frames,
            "fit": config.fit,
            "width": config.width,
            "height": config.height,
            "labels_sha256": labels.digest(),
        }
    if not labels.ids:
        raise AqaError(f"{options.store} holds no samples; preprocess videos into it first")
    window = WindowConfig(options.frames, crop=options.crop, flip=False)
    window = check_window(window, config.frames, config.height, config.width, options.store)
    views = extraction_views(window.jitter, options.views)
    precision = resolve_precision(options.precision, resolve_device(options.device))
    resolved = resolve_weights(options.weights) if options.weights else None  # a name: found or downloaded
    weights = str(resolved.path) if resolved is not None else None
    backbone = frozen_backbone(
        options.depth,
        options.conv,
        weights,
        options.family or None,
        options.normalization or None,
        options.seed,
    )
    attributes = {
        "source_kind": "extract",
        "source_description": f"{backbone.weights_summary} over {len(labels.ids)} samples of {video_store['path']}",
        "default_target": "score",
        "dtype": options.dtype,
        "clip_len": options.clip,
        "window": dataclasses.asdict(window),
        "views": [dataclasses.asdict(view) for view in views],
        "backbone": backbone_record(backbone, weights, options.seed, resolved and resolved.name),
        "video_store": video_store,
        "batch_size": options.batch_size,
        "precision": precision,
    }
    return _Extraction(options.out_path(), labels, window, views, backbone, precision, attributes)


def _extract_blocks(
    options: ExtractOptions,
    plan: _Extraction,
    starts: list[int],
    partial: _ExtractPartial,
    progress: Callable[[str, int, int], None] | None,
) -> None:
    """Features of the blocks of rows beginning at `starts`, each written to `partial` when done."""
    device = resolve_device(options.device)
    backbone = plan.backbone.to(device)
    loader = DataLoader(
        _ViewBlocks(options.store, plan.window, plan.views, starts, options.batch_size),
        batch_size=None,
        num_workers=min(options.workers, len(starts)),
        pin_memory=device.type == "cuda",
    )
    with torch.inference_mode():
        for start, block in loader:
            rows, views = block.shape[:2]
            video = backbone.normalization.apply(block.flatten(0, 1).to(device, non_blocking=True))
            with autocast(device, plan.precision):
                found = clip_features(backbone, video, options.clip)
            found = found.float().cpu().numpy().astype(options.dtype)
            partial.write(int(start), found.reshape(rows, views, *found.shape[1:]))
            if progress is not None:
                progress(plan.labels.ids[int(start) + rows - 1], rows, len(plan.labels.ids))


def _differences(made_with: dict, wanted: dict) -> str:
    wanted = json.loads(json.dumps(wanted))
    keys = [key for key in wanted if made_with.get(key) != wanted[key]]
    return "differs in " + ", ".join(keys)


class _ExtractPartial:
    """`OUT.partial/`: the settings (config.json) and one atomically written .npy file per finished block."""

    def __init__(self, directory: Path, attributes: dict):
        self.dir = directory
        config = directory / "config.json"
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(exc, directory) from exc
        if not config.exists():
            atomic_write(config, json.dumps(attributes, sort_keys=True))
        earlier = json.loads(config.read_text())
        if earlier != json.loads(json.dumps(attributes)):
            raise AqaError(
                f"{directory} holds unfinished work made with other settings "
                f"({_differences(earlier, attributes)}); rerun with those settings, or delete {directory} "
                "to start over"
            )

    def _path(self, start: int) -> Path:
        return self.dir / f"rows-{start:09d}.npy"

    def has(self, start: int) -> bool:
        return self._path(start).is_file()

    def write(self, start: int, features: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, features, allow_pickle=False)
        atomic_write(self._path(start), buffer.getvalue())

    def read(self, start: int) -> np.ndarray:
        return np.load(self._path(start), allow_pickle=False)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def summarize_features(path: str | Path) -> dict:
    """What a feature store holds, as plain JSON types: shape, views, splits, score columns, provenance."""
    with FeatureStore(path) as store:
        splits = store.column("split")
        clips = store.column("clips")
        attrs = store.attributes
        return {
            "path": str(store.path),
            "samples": len(store),
            "feature_dim": store.feature_dim,
            "dtype": attrs["dtype"],
            "clips": {"min": int(clips.min()), "max": int(clips.max())} if len(clips) else None,
            "views": attrs["views"],
            "splits": {split: int((splits == split).sum()) for split in sorted(set(splits.tolist()))},
            "score_columns": store.score_columns,
            "default_target": attrs["default_target"],
            "source_kind": attrs["source_kind"],
            "source": attrs["source_description"],
            "backbone": store.backbone,
            "size_bytes": store.path.stat().st_size,
            "attributes": attrs,
        }
