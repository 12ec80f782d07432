"""`aqa preprocess` on AQA-7 split 4: the real train/test lists (as published, scores x 100, and as the
release's Split_4 files with raw scores), frame folders for a few samples whose pixels encode their
frame numbers, `--action`, and bad folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import scipy.io

from aqa_cli.media.sources.aqa7 import ACTIONS, scan_aqa7
from aqa_cli.stores.video_store import VideoStore
from aqa_cli.util.errors import AqaError
from tests.dataset_trees import (
    aqa7_rows,
    copy_aqa7_lists,
    needs_aqa7,
    shown_numbers,
    uniform_positions,
    write_aqa7_sample,
)

pytestmark = needs_aqa7

FRAMES = 8
SAMPLE_FRAMES = 12  # frames per sample folder here (103 in the release)
TOTAL = 1106
# (action, index) with frames: per action one train and one test sample (read from the real lists).


def listed() -> dict[tuple[str, int], tuple[str, float]]:
    """(action, index) -> (split, score / 100) for every row of the real lists, read by the test."""
    rows = {}
    for split, array in aqa7_rows().items():
        for number, index, score in array.tolist():
            rows[ACTIONS[int(number) - 1], int(index)] = (split, round(score / 100, 2))
    return rows


def chosen() -> list[tuple[str, int]]:
    """The first train and the first test sample of each action, in store order (class, then index)."""
    picked = []
    for array in aqa7_rows().values():
        for number in range(1, 7):
            index = int(array[array[:, 0] == number][0, 1])
            picked.append((ACTIONS[number - 1], index))
    return sorted(picked, key=lambda sample: (ACTIONS.index(sample[0]), sample[1]))


def build(root: Path, raw_scores: bool, samples: list[tuple[str, int]]) -> Path:
    copy_aqa7_lists(root / "Seven" / "Split_4", raw_scores)
    for offset, (action, index) in enumerate(samples):
        write_aqa7_sample(
            root / "Seven" / f"{action}-out" / f"{index:03d}", SAMPLE_FRAMES, offset=100 * offset
        )
    return root


@pytest.fixture(scope="module", params=["consolidated (scores x 100)", "split_4 (raw scores)"])
def stored(request, tmp_path_factory):
    from tests.helpers import run_aqa

    root = build(tmp_path_factory.mktemp("aqa7"), request.param.startswith("split_4"), chosen())
    out = root / "aqa7.h5"
    result = run_aqa("preprocess", root, "--out", out, "--frames", FRAMES, "--workers", "2", check=1)
    return out, result, request.param


def test_stored_frames_splits_scores_and_actions_are_the_lists(stored) -> None:
    out, result, layout = stored
    rows = listed()
    samples = chosen()
    with VideoStore(out) as store:
        ids = list(store.column("id"))
        assert ids == [f"{action}/{index:03d}" for action, index in samples]
        for row, (action, index) in enumerate(samples):
            split, score = rows[action, index]
            assert store.column("split")[row] == split
            assert store.column("score")[row] == score  # the raw score, whichever scale the list used
            assert store.column("action")[row] == action
            offset = 100 * row
            expected = [offset + 1 + k for k in uniform_positions(SAMPLE_FRAMES, FRAMES)]
            assert shown_numbers(store.frames(row)) == expected
            extra = json.loads(store.column("extra")[row])
            assert extra == {"action_class": ACTIONS.index(action) + 1, "sample_index": index}
        assert len(store) + len(store.failed()) == TOTAL
    scaled = "x 100: divided by 100" in " ".join(result.stdout.split())
    assert scaled == layout.startswith("consolidated")


def test_info_counts_the_actions(stored, aqa) -> None:
    out, _, _ = stored
    text = " ".join(aqa("info", out, check=0).stdout.split())
    assert "6 actions: diving 2, gym_vault 2, ski_big_air 2, snowboard_big_air 2" in text


def test_one_action_keeps_only_its_samples(tmp_path: Path, aqa) -> None:
    root = build(tmp_path, False, chosen())
    result = aqa("preprocess", root, "--frames", FRAMES, "--action", "gym_vault", cwd=tmp_path, check=1)
    out = tmp_path / "data" / "aqa7_gym_vault.h5"
    with VideoStore(out) as store:
        assert set(store.column("action")) == {"gym_vault"} and len(store) == 2
        failed = store.failed()
    assert 2 + len(failed) == 176  # the class's 120 + 56 samples, no other action reported
    assert all(sample_id.startswith("gym_vault/") for sample_id, _ in failed)
    assert "failed diving/" not in result.stdout
    refused = aqa("preprocess", root, "--action", "trampoline", "--out", tmp_path / "x.h5", check=2)
    assert "unknown --action 'trampoline'" in refused.stderr and len(refused.stderr.splitlines()) == 1


def test_bad_folders_give_one_line_each_and_lose_no_other_sample(tmp_path: Path, aqa) -> None:
    samples = chosen()[:4]  # diving (2), gym_vault (2)
    root = build(tmp_path, False, samples)
    gap, stray, empty = (root / "Seven" / f"{a}-out" / f"{i:03d}" for a, i in samples[1:])
    (gap / "img_00005.jpg").unlink()
    (stray / "Thumbs.jpg").write_bytes((stray / "img_00001.jpg").read_bytes())
    for frame in empty.iterdir():
        frame.unlink()
    out = tmp_path / "s.h5"
    result = aqa("preprocess", root, "--out", out, "--frames", FRAMES, check=1)
    with VideoStore(out) as store:
        assert list(store.column("id")) == [f"{samples[0][0]}/{samples[0][1]:03d}"]
        failed = dict(store.failed())
    ids = [f"{a}/{i:03d}" for a, i in samples[1:]]
    assert "(first missing: frame 5)" in failed[ids[0]]
    assert "holds 'Thumbs.jpg', not named by frame number" in failed[ids[1]]
    assert "holds no images" in failed[ids[2]]
    lines = result.stdout.splitlines()
    for sample_id in ids:
        assert sum(line.startswith(f"failed {sample_id}: ") for line in lines) == 1


def test_the_c3d_lstm_layout_is_read_too(tmp_path: Path) -> None:
    action, index = chosen()[0]
    copy_aqa7_lists(tmp_path / "input")
    folder = "diving_v1" if action == "diving" else action
    write_aqa7_sample(tmp_path / f"{folder}_samples_lstm_103" / "frames" / f"{index:03d}", 4, "{:05d}.jpg")
    scan = scan_aqa7(tmp_path, "uniform", action)
    assert [sample.id for sample in scan.samples] == [f"{action}/{index:03d}"]


def test_lists_that_are_not_split_4_are_one_clear_error(tmp_path: Path) -> None:
    copy_aqa7_lists(tmp_path)
    (tmp_path / "consolidated_test_list.mat").unlink()
    with pytest.raises(AqaError, match="no AQA-7 test list under"):
        scan_aqa7(tmp_path, "uniform")
    scipy.io.savemat(str(tmp_path / "consolidated_test_list.mat"), {"consolidated_test_list": [[1.0, 2.0]]})
    with pytest.raises(AqaError, match=r"is not an AQA-7 split-4 list \(its list is \(1, 2\)"):
        scan_aqa7(tmp_path, "uniform")
    (tmp_path / "consolidated_test_list.mat").write_bytes(b"not a mat file")
    with pytest.raises(AqaError, match="not a readable MAT-file") as caught:
        scan_aqa7(tmp_path, "uniform")
    assert "\n" not in str(caught.value)
