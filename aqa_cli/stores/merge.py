"""`aqa merge`: one store over shard stores written with `aqa preprocess --shard K/N`, without copying frames."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np

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
from aqa_cli.util.safe_output import atomic_write


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
