"""`aqa merge`: one store over shard stores written with `aqa preprocess --shard K/N`, without copying frames;
`aqa features merge`: one feature store over the shards of `aqa extract --recipe --shard K/N`."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np

from aqa_cli.stores.feature_store import ACTION, FeatureLabels, FeatureStore, write_feature_store
from aqa_cli.stores.video_store import (
    CHECKSUMS,
    COLUMNS,
    FRAME_LABELS,
    NO_LABEL,
    OPTIONAL_COLUMNS,
    TEXT,
    StoreAttributes,
    VideoStore,
    store_lock,
    write_root_attributes,
)
from aqa_cli.util.errors import AqaError
from aqa_cli.util.safe_output import atomic_write, output_lock


def merge_stores(shards: Iterable[Path], out: Path) -> None:
    """One store over shard stores: `/frames` is a virtual dataset reading each shard's chunks in place.

    Samples are ordered by their position in the source (the `index` column), as in an unsharded run.
    The shard files must stay next to the merged store (paths are stored relative to it).
    """
    shards = [Path(s) for s in shards]
    if not shards:
        raise AqaError("give at least one shard store to merge")
    with store_lock(out):  # from the first read to the rename: one merge of `out` at a time
        _merge(shards, out)


def _merge(shards: list[Path], out: Path) -> None:
    stores = [VideoStore(s) for s in shards]
    try:
        configs = {s.config for s in stores}
        if len(configs) > 1:
            raise AqaError(
                "the shards were preprocessed with different settings and cannot be merged: "
                + "; ".join(f"{s.path}: {s.config.describe()}" for s in stores)
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
        # Built in memory (no frame is copied, so it is small), then written atomically: HDF5 never writes
        # to the disk itself, so a full disk is one failed write, not a half-flushed HDF5 file.
        image = io.BytesIO()
        with h5py.File(image, "w", libver=("v110", "latest")) as dst:
            first = stores[0].file.attrs
            write_root_attributes(
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
            with_checksums = all(s.has_checksums for s in stores)
            copied = {**COLUMNS, **OPTIONAL_COLUMNS}
            if with_checksums:
                copied.update(dict.fromkeys(CHECKSUMS, TEXT))
            shard_labels = [s.frame_labels() for s in stores]
            if any(labels is not None for labels in shard_labels):
                blank = np.full(config.frames, NO_LABEL, dtype=np.int32)
                dst.create_dataset(
                    f"samples/{FRAME_LABELS}",
                    data=np.stack(
                        [blank if shard_labels[k] is None else shard_labels[k][row] for _, k, row in rows]
                    ),
                )
            for name, dtype in copied.items():
                values = [stores[k].column(name)[row] for _, k, row in rows]
                dst.create_dataset(
                    f"samples/{name}",
                    data=np.array(values, dtype=object if dtype is TEXT else dtype),
                    dtype=dtype,
                )
        atomic_write(out, image.getvalue())
    finally:
        for s in stores:
            s.close()


SHARD_ATTRIBUTES = ("shard", "samples_sha256", "labels_sha256")
"""Root attributes of a feature store that differ between the shards of one extraction."""


def merge_feature_stores(shards: Iterable[Path], out: Path) -> int:
    """One feature store over the shards of `aqa extract --recipe --shard K/N`, its rows in source order
    (`/samples/index`), as an unsharded run writes it. Features are copied one sample at a time. Returns
    the number of samples."""
    shards = [Path(s) for s in shards]
    if not shards:
        raise AqaError("give at least one shard feature store to merge")
    with output_lock(out):
        stores = [FeatureStore(s) for s in shards]
        try:
            return _merge_features(stores, out)
        finally:
            for store in stores:
                store.file.close()


def _merge_features(stores: list[FeatureStore], out: Path) -> int:
    settings = []
    for store in stores:
        attributes = store.attributes
        if "index" not in store.file["samples"]:
            raise AqaError(
                f"{store.path} records no source positions (/samples/index): only stores of `aqa extract "
                "--recipe --shard K/N` can be merged"
            )
        settings.append({k: v for k, v in attributes.items() if k not in SHARD_ATTRIBUTES})
    for store, setting in zip(stores, settings, strict=True):
        if setting != settings[0]:
            keys = sorted(
                k for k in setting.keys() | settings[0].keys() if setting.get(k) != settings[0].get(k)
            )
            raise AqaError(
                f"{store.path} and {stores[0].path} were extracted with different settings ({', '.join(keys)}) "
                "and cannot be merged"
            )
    rows = sorted(
        (int(index), k, row) for k, s in enumerate(stores) for row, index in enumerate(s.column("index"))
    )
    ids = [str(stores[k].column("id")[row]) for _, k, row in rows]
    if len(set(ids)) != len(ids):
        raise AqaError("sample ids appear in more than one shard: merge each shard once")
    score_columns = stores[0].score_columns
    labels = FeatureLabels(
        ids=ids,
        splits=[str(stores[k].column("split")[row]) for _, k, row in rows],
        difficulty=np.array([stores[k].column("difficulty")[row] for _, k, row in rows], dtype=np.float64),
        scores={c: np.array([stores[k].scores(c)[row] for _, k, row in rows]) for c in score_columns},
        actions=[str(stores[k].column(ACTION)[row]) for _, k, row in rows],
    )
    clips = np.array([stores[k].column("clips")[row] for _, k, row in rows], dtype=np.int32)
    most = int(clips.max())
    columns = {"clip_start": np.zeros((len(rows), most)), "clip_end": np.zeros((len(rows), most))}
    for position, (_, k, row) in enumerate(rows):
        starts, ends = stores[k].clip_times(row)
        columns["clip_start"][position, : clips[position]] = starts
        columns["clip_end"][position, : clips[position]] = ends
    columns["index"] = np.array([index for index, _, _ in rows], dtype=np.int64)
    attributes = {
        key: value
        for key, value in stores[0].attributes.items()
        if key not in ("format", "format_version", "tool_version", "score_columns", "labels_sha256")
    }
    attributes.update(shard="", samples_sha256=labels.digest())
    write_feature_store(
        out,
        attributes,
        labels,
        clips,
        (stores[0].view_count, most, stores[0].feature_dim),
        str(attributes["dtype"]),
        (
            stores[k].file["features"][row : row + 1, :, : clips[position]]
            for position, (_, k, row) in enumerate(rows)
        ),
        columns=columns,
    )
    return len(rows)
