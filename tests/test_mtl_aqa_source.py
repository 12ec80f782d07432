"""The MTL-AQA adapter on trees built here: real annotation pickles (or a synthetic stand-in) plus
frames in each of the four on-disk layouts, whose pixels carry their 1-based frame number."""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from aqa_cli.media.sources import mtl_aqa
from aqa_cli.media.sources.base import IMAGES_NUMBERED, IMAGES_SORTED, VIDEO
from aqa_cli.media.sources.mtl_aqa import find_mtl_aqa_root, scan_mtl_aqa
from aqa_cli.util.errors import AqaError
from aqa_cli.util.safe_pickle import load_pickle
from tests.helpers import SHARED_MTL_AQA, write_number_video
from tests.mtl_aqa_trees import (
    LAYOUTS,
    LOOKED_FOR,
    PICKLES,
    SMALL_ENDS,
    Annotations,
    build_per_dive_folders,
    build_videos,
    frame_numbers,
    needs_shared,
    record,
    synthetic_annotations,
    write_annotations,
    write_frame,
)

# ---------------------------------------------------------------- each layout, exactly


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_gives_the_103_frames_ending_at_end_frame(
    tmp_path: Path, small_annotations: Annotations, layout: str
) -> None:
    records, train, test = small_annotations
    write_annotations(tmp_path / "annotations", small_annotations)
    build, kind = LAYOUTS[layout]
    build(tmp_path, SMALL_ENDS)

    scan = scan_mtl_aqa(tmp_path)

    assert scan.kind == "mtl-aqa"
    assert scan.problems == []
    assert [sample.id for sample in scan.samples] == ["01_01", "01_02", "01_03", "02_01", "02_02"]
    for sample, key in zip(scan.samples, sorted(records), strict=True):
        end = records[key]["end_frame"]
        window = (0, 103) if layout == "per-dive" else (end - 103, end)
        assert (sample.source_kind, sample.first, sample.last, sample.fit) == (kind, *window, "tail")
        assert sample.split == ("train" if key in train else "test")
        assert (sample.score, sample.difficulty) == (records[key]["final_score"], records[key]["difficulty"])
        expected_extra = {
            name: value for name, value in records[key].items() if name not in ("final_score", "difficulty")
        }
        assert sample.extra == {**expected_extra, "event": key[0], "dive": key[1]}
        assert frame_numbers(sample) == list(range(end - 102, end + 1))
    whole_event = layout != "per-dive"
    assert len({sample.source for sample in scan.samples}) == (2 if whole_event else 5)


def test_frames_option_moves_the_window_start(tmp_path: Path) -> None:
    write_annotations(tmp_path, synthetic_annotations(SMALL_ENDS))
    build_videos(tmp_path, SMALL_ENDS)
    samples = scan_mtl_aqa(tmp_path, frames=96).samples
    assert [(sample.first, sample.last) for sample in samples] == [
        (end - 96, end) for end in SMALL_ENDS.values()
    ]
    with pytest.raises(AqaError, match="--frames must be at least 1"):
        scan_mtl_aqa(tmp_path, frames=0)


# ---------------------------------------------------------------- which source wins


@pytest.mark.parametrize(
    ("present", "chosen"),
    [
        (["video", "sorted", "numbered", "per-dive"], "video"),
        (["sorted", "numbered", "per-dive"], "sorted"),
        (["numbered", "per-dive"], "numbered"),
        (["per-dive"], "per-dive"),
    ],
)
def test_preference_video_then_sorted_then_numbered_then_per_dive(
    tmp_path: Path, present: list[str], chosen: str
) -> None:
    ends = {(1, 1): 103, (1, 2): 110}
    write_annotations(tmp_path, synthetic_annotations(ends))
    for layout in present:
        LAYOUTS[layout][0](tmp_path, ends)
    samples = scan_mtl_aqa(tmp_path).samples
    assert {sample.source_kind for sample in samples} == {LAYOUTS[chosen][1]}
    assert all(
        frame_numbers(sample) == list(range(end - 102, end + 1))
        for sample, end in zip(samples, ends.values(), strict=True)
    )


def test_the_shallowest_of_two_videos_wins(tmp_path: Path) -> None:
    ends = {(1, 1): 103}
    write_annotations(tmp_path, synthetic_annotations(ends))
    build_videos(tmp_path / "backup" / "old", ends)
    build_videos(tmp_path, ends)
    assert scan_mtl_aqa(tmp_path).samples[0].source == str(tmp_path / "whole_videos" / "01.mp4")


def test_dives_without_whole_event_source_fall_back_to_their_own_folders(tmp_path: Path) -> None:
    write_annotations(tmp_path, synthetic_annotations(SMALL_ENDS))
    build_videos(tmp_path, {key: end for key, end in SMALL_ENDS.items() if key[0] == 1})
    build_per_dive_folders(tmp_path, {(2, 1): SMALL_ENDS[2, 1]})

    scan = scan_mtl_aqa(tmp_path)

    assert [(sample.id, sample.source_kind) for sample in scan.samples] == [
        ("01_01", VIDEO),
        ("01_02", VIDEO),
        ("01_03", VIDEO),
        ("02_01", IMAGES_SORTED),
    ]
    assert scan.samples[-1].source == str(tmp_path / "musdl" / "02_01")
    assert scan.problems == [
        ("02_02", f"no video or frame folder for event 02 under {tmp_path} {LOOKED_FOR}")
    ]
    assert scan.description == (
        f"MTL-AQA at {tmp_path}: 5 dives in 2 events (annotations in {tmp_path}); whole-event videos for 1 "
        "events; per-dive folders for 1 dives; 1 dives without frames or split"
    )


def test_a_window_before_frame_1_is_a_problem_unless_a_per_dive_folder_has_the_dive(tmp_path: Path) -> None:
    ends = {(1, 1): 102, (1, 2): 50, (1, 3): 103}
    write_annotations(tmp_path, synthetic_annotations(ends))
    build_videos(tmp_path, ends)
    build_per_dive_folders(tmp_path, {(1, 1): 102})

    scan = scan_mtl_aqa(tmp_path)

    assert [(sample.id, sample.source_kind, sample.first, sample.last) for sample in scan.samples] == [
        ("01_01", IMAGES_SORTED, 0, 103),
        ("01_03", VIDEO, 0, 103),
    ]
    video = tmp_path / "whole_videos" / "01.mp4"
    assert scan.problems == [
        ("01_02", f"its 103-frame window ends at frame 50 of {video}, so it would start before frame 1")
    ]


@pytest.mark.parametrize(
    ("folder", "names", "kind"),
    [
        ("01", [f"{n:06d}.jpg" for n in range(1, 120)], IMAGES_SORTED),
        ("01", [f"frame_{n:04d}.png" for n in range(1, 120)], IMAGES_SORTED),
        ("01", [f"{n}.jpg" for n in range(1, 120)], IMAGES_NUMBERED),  # the names tell: widths differ
        ("video1_frames", [f"{n}.jpg" for n in range(1, 120)], IMAGES_NUMBERED),
        ("video1_frames", [f"{n:08d}.jpg" for n in range(1, 120)], IMAGES_SORTED),  # zero-padded: sorted
        (
            "video1_frames",
            [f"{n}.jpg" for n in range(100, 120)],
            IMAGES_NUMBERED,
        ),  # undecided: the folder's name
        ("01", [f"{n}.jpg" for n in range(100, 120)], IMAGES_SORTED),
    ],
)
def test_whole_event_folder_kind_follows_its_file_names(
    tmp_path: Path, folder: str, names: list[str], kind: str
) -> None:
    write_annotations(tmp_path, synthetic_annotations({(1, 1): 119}))
    for name in names:
        write_frame(tmp_path / folder / name, 1)
    (sample,) = scan_mtl_aqa(tmp_path).samples
    assert (sample.source, sample.source_kind) == (str(tmp_path / folder), kind)


def test_a_huge_frame_folder_is_not_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_annotations(tmp_path, synthetic_annotations({(1, 1): 4000}))
    frames = tmp_path / "01"
    frames.mkdir()
    for number in range(1, 4001):
        (frames / f"{number:06d}.jpg").touch()
    entries_read: Counter[str] = Counter()
    real_scandir = os.scandir

    class CountingScandir:
        def __init__(self, path: str) -> None:
            self.path, self.entries = str(path), real_scandir(path)

        def __enter__(self) -> CountingScandir:
            return self

        def __exit__(self, *exc: object) -> None:
            self.entries.close()

        def __iter__(self) -> CountingScandir:
            return self

        def __next__(self) -> os.DirEntry:
            entry = next(self.entries)
            entries_read[self.path] += 1
            return entry

    monkeypatch.setattr(mtl_aqa.os, "scandir", CountingScandir)
    (sample,) = scan_mtl_aqa(tmp_path).samples
    monkeypatch.undo()
    assert sample.source == str(frames)
    assert entries_read[str(frames)] == 1


def test_hidden_folders_are_skipped_and_linked_loops_end(tmp_path: Path) -> None:
    ends = {(1, 1): 103}
    write_annotations(tmp_path, synthetic_annotations(ends))
    build_videos(tmp_path / ".trash", ends)
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    scan = scan_mtl_aqa(tmp_path)
    assert scan.samples == []
    assert [problem for problem, _ in scan.problems] == ["01_01"]


# ---------------------------------------------------------------- splits, the real files


def test_a_dive_in_neither_split_is_a_problem(tmp_path: Path) -> None:
    ends = {(1, 1): 103, (1, 2): 110}
    records, _, _ = synthetic_annotations(ends)
    write_annotations(tmp_path, (records, [(1, 1)], []))
    build_videos(tmp_path, ends)
    scan = scan_mtl_aqa(tmp_path)
    assert [(sample.id, sample.split) for sample in scan.samples] == [("01_01", "train")]
    assert scan.problems == [
        (
            "01_02",
            f"it is listed in neither train_split_0.pkl nor test_split_0.pkl in {tmp_path}, so its split is unknown",
        )
    ]


@needs_shared
def test_all_1412_real_dives_from_whole_event_videos(tmp_path: Path) -> None:
    for name in PICKLES:
        shutil.copy(SHARED_MTL_AQA / name, tmp_path / name)
    records, train, test = (load_pickle(SHARED_MTL_AQA / name) for name in PICKLES)
    events = sorted({event for event, _ in records})
    video = write_number_video(tmp_path / "whole_videos" / "01.mp4", first=1, count=2)
    for event in events[1:]:
        shutil.copy(video, tmp_path / "whole_videos" / f"{event:02d}.mp4")

    scan = scan_mtl_aqa(tmp_path)

    assert scan.problems == []
    assert scan.description == (
        f"MTL-AQA at {tmp_path}: 1412 dives in 15 events (annotations in {tmp_path}); whole-event videos for 15 events"
    )
    assert [sample.id for sample in scan.samples] == [
        f"{event:02d}_{dive:02d}" for event, dive in sorted(records)
    ]
    assert Counter(sample.split for sample in scan.samples) == {"train": 1059, "test": 353}
    for sample in scan.samples:
        key = (sample.extra["event"], sample.extra["dive"])
        end = records[key]["end_frame"]
        assert sample.split == ("train" if key in train else "test")
        assert (sample.score, sample.difficulty) == (records[key]["final_score"], records[key]["difficulty"])
        assert (sample.first, sample.last, sample.fit) == (end - 103, end, "tail")
        assert sample.source == str(tmp_path / "whole_videos" / f"{key[0]:02d}.mp4")
    assert scan.samples[0].extra == {
        "primary_view": 0,
        "start_frame": 7377,
        "end_frame": 7462,
        "position": 2,
        "armstand": 0,
        "rotation_type": 2,
        "ss_no": 7,
        "tw_no": 0,
        "event": 1,
        "dive": 1,
    }


@needs_shared
def test_real_annotations_without_frames_make_one_problem_per_dive() -> None:
    scan = scan_mtl_aqa(SHARED_MTL_AQA)  # the shared folder also holds UNLV-Dive and smaller sets' pickles
    assert scan.samples == []
    assert len(scan.problems) == 1412
    assert scan.problems[0] == (
        "01_01",
        f"no video or frame folder for event 01 under {SHARED_MTL_AQA} {LOOKED_FOR}",
    )
    assert scan.description.startswith(
        f"MTL-AQA at {SHARED_MTL_AQA}: 1412 dives in 15 events (annotations in {SHARED_MTL_AQA});"
    )


# ---------------------------------------------------------------- finding the root, errors


def release_tree(data: Path) -> Path:
    """The release's Ready_2_Use folder nested under `data`, with UNLV-Dive's and a smaller set's pickles
    beside the main ones at the same depth, and the videos elsewhere under `data`."""
    ready = data / "downloads" / "MTL-AQA" / "Ready_2_Use"
    write_annotations(ready / "MTL-AQA_split_0_data", synthetic_annotations(SMALL_ENDS))
    write_annotations(ready / "UNLV_Dive_split_4", synthetic_annotations({(1, 1): 103}))
    records, train, _ = synthetic_annotations({(1, 1): 103, (1, 2): 110})
    write_annotations(ready / "smaller_training_sets" / "size_140", (records, train, []))
    (ready / "smaller_training_sets" / "size_140" / "test_split_0.pkl").unlink()
    build_videos(data / "videos", SMALL_ENDS)
    return ready / "MTL-AQA_split_0_data"


def test_find_root_in_nested_folders_and_scan_from_there(tmp_path: Path) -> None:
    data = tmp_path / "data"
    annotations = release_tree(data)
    assert find_mtl_aqa_root(data) == data
    scan = scan_mtl_aqa(find_mtl_aqa_root(data))
    assert len(scan.samples) == len(SMALL_ENDS)
    assert f"(annotations in {annotations})" in scan.description


def test_find_root_finds_nothing_where_there_are_no_annotations(tmp_path: Path) -> None:
    build_videos(tmp_path / "videos", {(1, 1): 103})
    assert find_mtl_aqa_root(tmp_path) is None
    assert find_mtl_aqa_root(tmp_path / "missing") is None
    assert find_mtl_aqa_root(tmp_path / "videos" / "whole_videos" / "01.mp4") is None


def test_missing_annotations_say_what_was_looked_for_and_how_to_point_elsewhere(tmp_path: Path) -> None:
    build_videos(tmp_path, {(1, 1): 103})
    with pytest.raises(AqaError) as error:
        scan_mtl_aqa(tmp_path)
    assert str(error.value) == (
        f"no MTL-AQA annotations under {tmp_path}: looked for final_annotations_dict.pkl (with "
        "train_split_0.pkl and test_split_0.pkl beside it) in every folder; point `aqa preprocess PATH` at the "
        "folder that holds the MTL-AQA annotations and frames"
    )


def test_annotations_without_split_pickles(tmp_path: Path) -> None:
    write_annotations(tmp_path / "ann", synthetic_annotations({(1, 1): 103}))
    (tmp_path / "ann" / "test_split_0.pkl").unlink()
    with pytest.raises(
        AqaError, match=r"final_annotations_dict\.pkl has no train_split_0\.pkl and test_split_0\.pkl"
    ):
        scan_mtl_aqa(tmp_path)


def test_relative_root_gives_absolute_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_annotations(tmp_path / "data", synthetic_annotations({(1, 1): 103}))
    build_videos(tmp_path / "data", {(1, 1): 103})
    monkeypatch.chdir(tmp_path)
    assert scan_mtl_aqa("data").samples[0].source == str(tmp_path / "data" / "whole_videos" / "01.mp4")


def test_root_that_is_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(AqaError, match="is not a folder"):
        scan_mtl_aqa(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("annotations", "why"),
    [
        (([1, 2], [], []), "it holds a list, not a dict of dives"),
        (({"01_01": record(103)}, [], []), "key '01_01' is not an (event, dive) pair"),
        (({(1, 1): {"end_frame": 103}}, [], []), "dive (1, 1) lacks final_score, difficulty"),
        (({(1, 1): 88.0}, [], []), "dive (1, 1) is a float, not a record"),
    ],
)
def test_pickles_that_are_not_mtl_aqa_annotations(tmp_path: Path, annotations: Annotations, why: str) -> None:
    write_annotations(tmp_path, annotations)
    with pytest.raises(AqaError, match=re.escape(f"is not an MTL-AQA annotation file ({why})")):
        scan_mtl_aqa(tmp_path)


def test_a_split_that_is_not_a_list_of_dives(tmp_path: Path) -> None:
    records, train, _ = synthetic_annotations({(1, 1): 103})
    write_annotations(tmp_path, (records, train, {"test": "all"}))
    with pytest.raises(AqaError, match=r"test_split_0\.pkl is not an MTL-AQA annotation file"):
        scan_mtl_aqa(tmp_path)


def test_malicious_annotations_are_refused_not_run(tmp_path: Path) -> None:
    write_annotations(tmp_path, synthetic_annotations({(1, 1): 103}))
    marker = tmp_path / "marker"
    (tmp_path / "final_annotations_dict.pkl").write_bytes(f"cos\nsystem\n(Vtouch {marker}\ntR.".encode())
    with pytest.raises(AqaError, match="it references os.system"):
        scan_mtl_aqa(tmp_path)
    assert not marker.exists()
