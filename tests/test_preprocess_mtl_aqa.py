"""`aqa preprocess` on MTL-AQA trees in every layout: the stored frames are exactly the 103 frames
ending at each dive's end_frame, checked pixel by pixel through the store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aqa_cli.stores.video_store import VideoStore
from tests.helpers import read_number
from tests.mtl_aqa_trees import LAYOUTS, SMALL_ENDS, Annotations, write_annotations


@pytest.mark.parametrize("layout", LAYOUTS)
def test_stored_frames_are_the_window_ending_at_end_frame(
    tmp_path: Path, small_annotations: Annotations, layout: str, aqa
) -> None:
    records, train, _ = small_annotations
    root = tmp_path / "release"
    write_annotations(root / "annotations", small_annotations)
    build, _ = LAYOUTS[layout]
    build(root, SMALL_ENDS)
    out = tmp_path / "mtl.h5"
    aqa("preprocess", root, "--out", out, "--workers", "2", check=0)
    with VideoStore(out) as store:
        assert list(store.column("id")) == ["01_01", "01_02", "01_03", "02_01", "02_02"]
        assert store.file.attrs["source_kind"] == "mtl-aqa"
        for row, key in enumerate(sorted(records)):
            end = records[key]["end_frame"]
            numbers = [read_number(frame) for frame in store.frames(row)]
            assert numbers == list(range(end - 102, end + 1)), (layout, key)
            assert store.column("split")[row] == ("train" if key in train else "test")
            assert store.column("score")[row] == records[key]["final_score"]
            assert json.loads(store.column("extra")[row])["end_frame"] == end


def test_no_argument_finds_the_release_under_data(tmp_path: Path, aqa) -> None:
    from tests.mtl_aqa_trees import build_videos, synthetic_annotations

    annotations = synthetic_annotations(SMALL_ENDS)
    write_annotations(tmp_path / "data" / "MTL-AQA" / "info", annotations)
    build_videos(tmp_path / "data" / "MTL-AQA", SMALL_ENDS)
    aqa("preprocess", cwd=tmp_path, check=0)
    with VideoStore(tmp_path / "data" / "mtl_aqa.h5") as store:
        assert len(store) == 5
        np.testing.assert_array_equal(store.file["samples/frame_index"][0], np.arange(0, 103))


def test_a_missing_event_is_reported_and_the_others_stored(tmp_path: Path, aqa) -> None:
    from tests.mtl_aqa_trees import build_videos, synthetic_annotations

    write_annotations(tmp_path / "annotations", synthetic_annotations(SMALL_ENDS))
    build_videos(tmp_path, SMALL_ENDS)
    (tmp_path / "whole_videos" / "02.mp4").unlink()
    result = aqa("preprocess", tmp_path, "--out", tmp_path / "s.h5", check=1)
    assert "no video or frame folder for event 02" in result.stdout
    with VideoStore(tmp_path / "s.h5") as store:
        assert list(store.column("id")) == ["01_01", "01_02", "01_03"]
        assert {sample_id for sample_id, _ in store.failed()} == {"02_01", "02_02"}
