"""The HDF5 feature store: per-clip features of every sample, from `aqa extract` or `aqa features import`.

Layout (docs/FORMAT.md): `/features` (N, views, max clips, dim) float16 or float32, one compressed chunk
per sample, zero-padded past each sample's clip count `/samples/clips`; labels under `/samples/` and
`/scores/`; how the features were made (backbone and its weights' fingerprint, window, source store) in
root attributes. Stores extracted from raw video with a recipe add `/samples/clip_start` and
`/samples/clip_end` (N, max clips) seconds, zero-padded like the features, `/samples/index` (position in
the source, for merging shards) and the `recipe` and `weights` attributes. `/samples/action` (AQA-7's
action, FineDiving's dive number) is optional: written when some sample has one, and a store without it
reads as all unknown (""). Files are written atomically (`atomic_output`), and contain no timestamps, so
the same inputs give the same bytes.

"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from aqa_cli import __version__
from aqa_cli.stores.common import FEATURE_STORE_FORMAT
from aqa_cli.stores.video_store import TEXT, action_counts, labels_sha256
from aqa_cli.util.errors import AqaError
from aqa_cli.util.safe_output import atomic_output

FORMAT_NAME = FEATURE_STORE_FORMAT
FORMAT_VERSION = 1
ACTION = "action"
"""The optional per-sample text column of the action or dive number (as in the video store)."""
DTYPES = ("float16", "float32")
JSON_ATTRIBUTES = (
    "score_columns",
    "window",
    "views",
    "backbone",
    "video_store",
    "source",
    "recipe",
    "recipe_weights",
)
"""Root attributes stored as JSON text."""


@dataclass
class FeatureLabels:
    """What a feature store records per sample besides its features. `scores` keeps its column order:
    the first column is the store's default training target."""

    ids: list[str]
    splits: list[str]
    difficulty: np.ndarray
    scores: dict[str, np.ndarray]
    actions: list[str] | None = None
    """Each sample's action or dive number ("": unknown); None: unknown for all."""

    def digest(self) -> str:
        """sha256 of ids, splits, difficulties and every score column: identifies the labels (as the
        video store's `labels_sha256`, which leaves the action out too)."""
        return labels_sha256(self.ids, self.splits, self.difficulty, self.scores)


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

    def clip_times(self, row: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(starts, ends) in seconds of one sample's clips, or None for a store that records no times."""
        if "clip_start" not in self.file["samples"]:
            return None
        clips = int(self.file["samples/clips"][row])
        return self.file["samples/clip_start"][row, :clips], self.file["samples/clip_end"][row, :clips]

    def column(self, name: str) -> np.ndarray:
        """One per-sample column; `action`, which stores written before it existed (or with no known
        action) lack, reads as "" (unknown) for every sample."""
        if name == ACTION and name not in self.file["samples"]:
            return np.full(len(self), "", dtype=object)
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
    columns: dict[str, np.ndarray] | None = None,
) -> None:
    """Write a feature store atomically, one block of rows at a time (memory stays
    at one block). `shape` is (views, max clips, dim); each block is (rows, views, <= max clips, dim),
    in row order, padded here with zeros. `attributes` are JSON-able; those in JSON_ATTRIBUTES are stored
    as JSON text. `columns` are further per-sample arrays stored under `/samples/` (e.g. clip times)."""
    views, max_clips, dim = shape
    count = len(labels.ids)
    options = {"track_times": False}
    with atomic_output(out) as temp, h5py.File(temp, "w", libver=("v110", "latest"), track_order=True) as f:
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
        stored = {
            "samples/id": (labels.ids, TEXT),
            "samples/split": (labels.splits, TEXT),
            "samples/clips": (clips, np.int32),
            "samples/difficulty": (labels.difficulty, np.float64),
            **{f"scores/{name}": (values, np.float64) for name, values in labels.scores.items()},
            **({f"samples/{ACTION}": (labels.actions, TEXT)} if any(labels.actions or []) else {}),
            **{
                f"samples/{name}": (values, np.asarray(values).dtype)
                for name, values in (columns or {}).items()
            },
        }
        for name, (values, kind) in stored.items():
            data = np.array(values, dtype=object if kind is TEXT else kind)
            f.create_dataset(name, data=data, dtype=kind, **options)


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
            "actions": action_counts(store.column(ACTION)),
            "default_target": attrs["default_target"],
            "source_kind": attrs["source_kind"],
            "source": attrs["source_description"],
            "backbone": store.backbone,
            "size_bytes": store.path.stat().st_size,
            "attributes": attrs,
        }
