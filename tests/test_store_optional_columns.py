"""The store's optional `action` column and `frame_labels` dataset: written, read, covered by each
sample's meta_sha256, carried through resume and merge, and absent from older stores, which still read
and verify."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from aqa_cli.stores.merge import merge_stores
from aqa_cli.stores.video_store import (
    NO_LABEL,
    SamplePartial,
    StoreAttributes,
    StoreConfig,
    StoredSample,
    StoreReadError,
    VideoStore,
    assemble_store,
    verify_store,
)

CONFIG = StoreConfig(4, "uniform", 171, 128, "none")


def sample(sample_id: str, index: int, action: str = "", labels: list[int] | None = None) -> StoredSample:
    rng = np.random.default_rng(index)
    return StoredSample(
        id=sample_id,
        frames=rng.integers(0, 256, (4, 128, 171, 3), dtype=np.uint8),
        frame_index=np.arange(4, dtype=np.int64) + index,
        split="train",
        score=50.0 + index,
        difficulty=float("nan"),
        source=f"/data/{sample_id}",
        frame_first=index,
        frame_last=index + 4,
        orig_width=171,
        orig_height=128,
        fps=float("nan"),
        frames_lost=0,
        index=index,
        action=action,
        frame_labels=None if labels is None else np.asarray(labels, dtype=np.int32),
    )


def write_store(folder: Path, name: str, samples: list[StoredSample]) -> Path:
    out = folder / f"{name}.h5"
    partial = SamplePartial(out, CONFIG).open()
    for stored in samples:
        partial.write(stored)
    rows = [(stored.id, partial.path_of(stored.id), -1) for stored in samples]
    assemble_store(out, CONFIG, StoreAttributes("test", "test samples"), rows)
    return out


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    return write_store(
        tmp_path,
        "labelled",
        [sample("a", 0, "diving", [1, 2, 2, NO_LABEL]), sample("b", 1, "gym_vault"), sample("c", 2)],
    )


def test_actions_and_frame_labels_read_back(labelled: Path) -> None:
    with VideoStore(labelled) as store:
        assert list(store.column("action")) == ["diving", "gym_vault", ""]
        labels = store.frame_labels()
    np.testing.assert_array_equal(labels, [[1, 2, 2, NO_LABEL], [NO_LABEL] * 4, [NO_LABEL] * 4])
    assert verify_store(labelled)["damaged"] == []


def test_a_store_without_labels_has_no_frame_labels_dataset(tmp_path: Path) -> None:
    out = write_store(tmp_path, "plain", [sample("a", 0), sample("b", 1, "diving")])
    with h5py.File(out, "r") as f:
        assert "frame_labels" not in f["samples"]
    with VideoStore(out) as store:
        assert store.frame_labels() is None


@pytest.mark.parametrize("column", ["action", "frame_labels"])
def test_a_changed_action_or_label_is_damage(labelled: Path, column: str) -> None:
    with h5py.File(labelled, "r+") as f:
        if column == "action":
            f["samples/action"][0] = "gym_vault"
        else:
            f["samples/frame_labels"][0, 1] = 7
    with pytest.raises(StoreReadError, match=r"the metadata of 1 sample\(s\) \(a \(row 0\)\)"):
        VideoStore(labelled)


def test_a_store_written_before_the_columns_existed_reads_and_verifies(tmp_path: Path) -> None:
    """Such a store lacks samples/action (and frame_labels); its checksums were computed without them."""
    out = write_store(tmp_path, "older", [sample("a", 0), sample("b", 1)])
    with h5py.File(out, "r+") as f:
        del f["samples/action"]
    with VideoStore(out) as store:
        assert list(store.column("action")) == ["", ""]
        assert store.frame_labels() is None
    assert verify_store(out) == {"samples": 2, "checksums": True, "damaged": []}
    # resuming from it copies its rows (checksums included) into a store that has the column
    again = tmp_path / "again.h5"
    assemble_store(again, CONFIG, StoreAttributes("test", "test"), [("a", out, 0), ("b", out, 1)])
    with VideoStore(again) as store:
        assert list(store.column("action")) == ["", ""]
    assert verify_store(again)["damaged"] == []


def test_rows_copied_from_an_earlier_store_keep_actions_and_labels(labelled: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.h5"
    rows = [(sample_id, labelled, row) for row, sample_id in enumerate("abc")]
    assemble_store(again, CONFIG, StoreAttributes("test", "test"), rows)
    with VideoStore(again) as store, VideoStore(labelled) as first:
        assert list(store.column("action")) == list(first.column("action"))
        np.testing.assert_array_equal(store.frame_labels(), first.frame_labels())
        np.testing.assert_array_equal(store.column("meta_sha256"), first.column("meta_sha256"))
    assert verify_store(again)["damaged"] == []


def test_merge_carries_actions_and_labels_from_the_shards_that_have_them(
    labelled: Path, tmp_path: Path
) -> None:
    plain = write_store(tmp_path, "plain", [sample("d", 3, "ski_big_air")])
    merged = tmp_path / "merged.h5"
    merge_stores([labelled, plain], merged)
    with VideoStore(merged) as store:
        assert list(store.column("action")) == ["diving", "gym_vault", "", "ski_big_air"]
        labels = store.frame_labels()
    np.testing.assert_array_equal(labels[0], [1, 2, 2, NO_LABEL])
    assert (labels[1:] == NO_LABEL).all()
    assert verify_store(merged)["damaged"] == []
