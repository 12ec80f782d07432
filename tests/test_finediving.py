"""`aqa preprocess` on FineDiving: the real annotation files with frames for a handful of dives whose
pixels encode their absolute frame numbers, checked through the store (frames, split, scores, judge
scores, dive numbers, per-frame sub-action labels), plus the release's pitfalls."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from aqa_cli.media.sources.finediving import COARSE_GLOBALS, scan_finediving
from aqa_cli.stores.video_store import NO_LABEL, VideoStore
from aqa_cli.util.errors import AqaError
from aqa_cli.util.safe_pickle import load_pickle
from tests.dataset_trees import (
    MODULO,
    SHARED_FINEDIVING,
    finediving_records,
    link_finediving_annotations,
    needs_finediving,
    shown_numbers,
    uniform_positions,
    write_dive_folder,
)
from tests.helpers import SHARED_MTL_AQA, write_number_video

pytestmark = needs_finediving

FRAMES = 96  # the reference loader's frame count
DIVES = [
    ("01", 1),  # MTL-AQA (1, 1), test split, 85 frames: shorter than 96; judge scores are numpy floats
    ("04", 49),  # a judge score typo: 45.0
    ("07", 86),  # 6-digit frame names (125825 ... 125902), 78 frames; FineDiving test, MTL-AQA train
    ("FINADivingWorldCup2021_Men3m_final_r1", 0),  # the README's example: 00489.jpg ... 00592.jpg
    ("FINAWorldChampionships2019_Women3m_final_r3", 1),  # a judge score typo: 55.5
    ("FINAWorldChampionships2019_Women3mSynchronised_final_r4", 2),  # synchronised, test split
]
TOTAL_DIVES = 3000


@pytest.fixture(scope="module")
def annotations():
    return finediving_records()


@pytest.fixture(scope="module")
def release(tmp_path_factory, annotations) -> Path:
    """The release's layout: `FineDiving/Annotaions/` (readme.txt's spelling) and per-dive folders under
    `Trimmed_Video_Frames/`, the first dive with 3 extra frames on each side; MTL-AQA's files beside."""
    coarse = annotations[0]
    root = tmp_path_factory.mktemp("finediving")
    link_finediving_annotations(root / "FineDiving" / "Annotaions")
    for n, key in enumerate(DIVES):
        write_dive_folder(
            root / "Trimmed_Video_Frames" / "FINADiving_MTL_256s", key, coarse[key], pad=3 * (n == 3)
        )
    if SHARED_MTL_AQA.is_dir():
        for name in ("final_annotations_dict.pkl", "train_split_0.pkl", "test_split_0.pkl"):
            (root / "MTL-AQA").mkdir(exist_ok=True)
            (root / "MTL-AQA" / name).symlink_to(SHARED_MTL_AQA / name)
    return root


@pytest.fixture(scope="module")
def stored(release: Path, tmp_path_factory):
    from tests.helpers import run_aqa

    out = tmp_path_factory.mktemp("store") / "finediving.h5"
    result = run_aqa("preprocess", release, "--out", out, "--frames", FRAMES, "--workers", "2", check=1)
    return out, result


def test_stored_frames_are_each_dives_own_frames_spread_over_the_dive(stored, annotations) -> None:
    out, _ = stored
    coarse = annotations[0]
    with VideoStore(out) as store:
        ids = list(store.column("id"))
        assert ids == sorted(f"{video}/{instance}" for video, instance in DIVES)
        for row, sample_id in enumerate(ids):
            video, instance = sample_id.rsplit("/", 1)
            record = coarse[(video, int(instance))]
            length = record["end_frame"] - record["start_frame"] + 1
            expected = [(record["start_frame"] + k) % MODULO for k in uniform_positions(length, FRAMES)]
            assert shown_numbers(store.frames(row)) == expected, sample_id
            offset = json.loads(store.column("extra")[row])["frame_offset"]
            numbers = store.column("frame_index")[row] + offset
            assert list(numbers) == [record["start_frame"] + k for k in uniform_positions(length, FRAMES)]


def test_split_scores_judges_and_dive_numbers_are_the_annotations(stored, annotations) -> None:
    out, _ = stored
    coarse, train, test, _ = annotations
    with VideoStore(out) as store:
        rows = zip(
            store.column("id"),
            store.column("split"),
            store.column("score"),
            store.column("difficulty"),
            store.column("action"),
            store.column("extra"),
            strict=True,
        )
        for sample_id, split, score, difficulty, action, extra in rows:
            video, instance = sample_id.rsplit("/", 1)
            key = (video, int(instance))
            record, extra = coarse[key], json.loads(extra)
            assert split == ("train" if key in train else "test") and (key in train) != (key in test)
            assert (score, difficulty, action) == (
                record["dive_score"],
                record["difficulty"],
                record["action_type"],
            )
            assert extra["judge_scores"] == [float(s) for s in record["judge_scores"]]  # typos as published
            assert (extra["start_frame"], extra["end_frame"]) == (record["start_frame"], record["end_frame"])
            assert extra.get("mtl_aqa") == ([int(video), int(instance)] if video.isdigit() else None)
        typos = {
            sample_id: json.loads(e).get("judge_score_typos")
            for sample_id, e in zip(store.column("id"), store.column("extra"), strict=True)
        }
    assert typos["04/49"] == [45.0] and typos["FINAWorldChampionships2019_Women3m_final_r3/1"] == [55.5]
    assert typos["01/1"] is None


def test_frame_labels_are_the_sub_actions_of_the_stored_frames(stored, annotations) -> None:
    out, _ = stored
    coarse, _, _, fine = annotations
    with VideoStore(out) as store:
        labels = store.frame_labels()
        assert labels is not None and labels.shape == (len(DIVES), FRAMES)
        for row, sample_id in enumerate(store.column("id")):
            video, instance = sample_id.rsplit("/", 1)
            key = (video, int(instance))
            published = np.asarray(fine[key]["frames_labels"])
            positions = uniform_positions(len(published), FRAMES)
            np.testing.assert_array_equal(labels[row], published[positions], err_msg=sample_id)
            assert NO_LABEL not in labels[row]
            steps = [label for n, label in enumerate(published) if n == 0 or published[n - 1] != label]
            names = {int(k): v for k, v in fine[key]["sub-action_types"].items()}
            assert json.loads(store.column("extra")[row])["steps"] == [[s, names[s]] for s in steps]


def test_every_other_dive_is_reported_and_the_pitfalls_are_said(stored) -> None:
    out, result = stored
    with VideoStore(out) as store:
        failed = dict(store.failed())
        assert len(store) + len(failed) == TOTAL_DIVES
    assert all(reason.startswith("no frames for it under") for reason in failed.values())
    text = " ".join(result.stdout.split())
    assert "2 dives are shorter than the 96 stored frames" in text and "e.g. 01/1, 07/86" in text
    assert "2 dives list judge scores no judge can give" in text and "04/49 [45.0]" in text
    assert (
        "1369 FineDiving dives (the two-digit videos; 3 of them among the dives with frames here) are MTL-AQA dives"
        in text
    )
    if SHARED_MTL_AQA.is_dir():
        assert (
            "249 FineDiving test dives are MTL-AQA training dives and 268 FineDiving training dives" in text
        )


def test_a_store_of_both_datasets_says_which_test_dives_leak(stored, tmp_path: Path, aqa) -> None:
    """MTL-AQA (7, 86) is FineDiving ('07', 86): MTL-AQA train, FineDiving test. A merged store holds it
    twice; a model trained on MTL-AQA and evaluated on FineDiving's test split has seen it."""
    if not SHARED_MTL_AQA.is_dir():
        pytest.skip(f"real MTL-AQA annotations not found at {SHARED_MTL_AQA}")
    from aqa_cli.stores.overlap import evaluation_notices
    from tests.mtl_aqa_trees import build_videos, real_annotations, write_annotations

    write_annotations(tmp_path / "mtl", real_annotations({(7, 86): 103}))
    build_videos(tmp_path / "mtl", {(7, 86): 103})
    mtl_store = tmp_path / "mtl.h5"
    aqa("preprocess", tmp_path / "mtl", "--out", mtl_store, "--frames", FRAMES, check=0)
    merged = tmp_path / "both.h5"
    aqa("merge", stored[0], mtl_store, "--out", merged, check=0)
    info = " ".join(aqa("info", merged, check=0).stdout.split())
    assert "1 dives are in this store twice" in info
    assert "1 of them are test dives on one side and training dives on the other (e.g. MTL-AQA 07_86)" in info
    notices = evaluation_notices({"path": str(mtl_store)}, stored[0], "test")
    assert len(notices) == 1 and notices[0].startswith("1 of the test dives evaluated")
    assert evaluation_notices({"path": str(mtl_store)}, stored[0], "train") == []


def _small_release(root: Path, annotations, keys: list[tuple[str, int]]) -> dict:
    link_finediving_annotations(root / "Annotations")
    coarse = annotations[0]
    return {key: write_dive_folder(root / "frames", key, coarse[key]) for key in keys}


def test_short_and_bad_folders_give_one_line_each_and_lose_no_other_dive(
    tmp_path: Path, annotations, aqa
) -> None:
    good, short, stray, empty = DIVES[3], DIVES[0], DIVES[4], DIVES[5]
    folders = _small_release(tmp_path / "release", annotations, [good, short, stray, empty])
    start = annotations[0][short]["start_frame"]
    (folders[short] / f"{start + 40:05d}.jpg").unlink()  # a dive folder that lost a frame
    shutil.copy(next(folders[stray].iterdir()), folders[stray] / "thumbnail.jpg")
    for frame in folders[empty].iterdir():
        frame.unlink()
    out = tmp_path / "s.h5"
    result = aqa("preprocess", tmp_path / "release", "--out", out, "--frames", FRAMES, check=1)
    with VideoStore(out) as store:
        assert list(store.column("id")) == ["FINADivingWorldCup2021_Men3m_final_r1/0"]
        failed = dict(store.failed())
    assert "lacks 1 of its 85 frames 7378 ... 7462 (first missing: 7418" in failed["01/1"]
    assert "holds 'thumbnail.jpg', not named by frame number" in failed[f"{stray[0]}/{stray[1]}"]
    assert "holds no images" in failed[f"{empty[0]}/{empty[1]}"]
    lines = [line for line in result.stdout.splitlines() if line.startswith("failed ")]
    for dive in ("01/1", f"{stray[0]}/{stray[1]}", f"{empty[0]}/{empty[1]}"):
        assert sum(line.startswith(f"failed {dive}: ") for line in lines) == 1  # one line each
    assert "Traceback" not in result.stdout + result.stderr


def test_untrimmed_videos_are_the_other_layout(tmp_path: Path, annotations, aqa) -> None:
    """`<video_name>.mp4`: a dive is frames start_frame ... end_frame counted from 1."""
    coarse = annotations[0]
    link_finediving_annotations(tmp_path / "Annotations")
    video = "FINADivingWorldCup2021_Men3m_final_r1"
    write_number_video(tmp_path / "videos" / f"{video}.mp4", first=1, count=600)
    out = tmp_path / "s.h5"
    aqa("preprocess", tmp_path, "--out", out, "--frames", FRAMES, "--action", "205b", check=1)
    record = coarse[(video, 0)]
    assert record["action_type"] == "205b"
    with VideoStore(out) as store:
        assert f"{video}/0" in list(store.column("id"))
        row = list(store.column("id")).index(f"{video}/0")
        length = record["end_frame"] - record["start_frame"] + 1
        expected = [record["start_frame"] + k for k in uniform_positions(length, FRAMES)]
        assert shown_numbers(store.frames(row)) == expected
        offset = json.loads(store.column("extra")[row])["frame_offset"]
        assert list(store.column("frame_index")[row] + offset) == expected
        assert set(store.column("action")) == {"205b"}


def test_the_unpickler_admits_only_the_globals_each_file_needs(tmp_path: Path) -> None:
    coarse = SHARED_FINEDIVING / "FineDiving_coarse_annotation.pkl"
    assert len(load_pickle(coarse, allow_numpy=True, numpy_names=COARSE_GLOBALS)) == TOTAL_DIVES
    with pytest.raises(AqaError, match=r"references numpy\.core\.multiarray\.scalar"):
        load_pickle(coarse, allow_numpy=True, numpy_names={("numpy", "dtype")})
    link_finediving_annotations(tmp_path / "Annotations")
    swapped = tmp_path / "Annotations" / "FineDiving_coarse_annotation.pkl"
    swapped.unlink()
    swapped.write_bytes(pickle.dumps({("01", 1): {"frames": np.arange(3)}}, protocol=3))  # an ndarray
    with pytest.raises(AqaError, match=r"references numpy\.(_)?core\.multiarray\._reconstruct") as caught:
        scan_finediving(tmp_path, FRAMES, "uniform")
    assert "\n" not in str(caught.value)
    swapped.write_bytes(b"cos\nsystem\n(Vtouch " + str(tmp_path / "pwned").encode() + b"\ntR.")
    with pytest.raises(AqaError, match="references os.system"):
        scan_finediving(tmp_path, FRAMES, "uniform")
    assert not (tmp_path / "pwned").exists()


def test_a_dive_folder_numbered_from_1_is_its_frames_in_order(tmp_path: Path, annotations, aqa) -> None:
    """Frames re-extracted per dive (00001.jpg ... 00104.jpg) are the dive's frames in order."""
    coarse = annotations[0]
    link_finediving_annotations(tmp_path / "Annotations")
    key = DIVES[3]
    record = coarse[key]
    length = record["end_frame"] - record["start_frame"] + 1
    from tests.dataset_trees import write_frame

    for position in range(length):
        write_frame(
            tmp_path / key[0] / str(key[1]) / f"{position + 1:05d}.jpg", record["start_frame"] + position
        )
    out = tmp_path / "s.h5"
    aqa("preprocess", tmp_path, "--out", out, "--frames", FRAMES, "--action", record["action_type"], check=1)
    with VideoStore(out) as store:
        row = list(store.column("id")).index(f"{key[0]}/{key[1]}")
        expected = [record["start_frame"] + k for k in uniform_positions(length, FRAMES)]
        assert shown_numbers(store.frames(row)) == expected
        offset = json.loads(store.column("extra")[row])["frame_offset"]
        assert list(store.column("frame_index")[row] + offset) == expected


def test_annotations_without_their_split_files_are_one_clear_error(tmp_path: Path) -> None:
    link_finediving_annotations(tmp_path / "Annotations")
    (tmp_path / "Annotations" / "test_split.pkl").unlink()
    with pytest.raises(AqaError, match="has no train_split.pkl and test_split.pkl beside it") as caught:
        scan_finediving(tmp_path, FRAMES, "uniform")
    assert "\n" not in str(caught.value)
