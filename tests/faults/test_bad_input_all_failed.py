"""Runs in which every sample fails, for every kind of source `aqa preprocess` reads (FineDiving and
AQA-7 with their real annotation files from ../shared, skipped without them).

Found trying bad input as a new user would: with zero samples stored, preprocess used to end in
`error: unexpected ValueError: Chunk shape must not be greater than data shape ...` (HDF5 refuses a
chunked dataset with no rows) instead of the per-sample lines it prints when one sample succeeds. Now
each failure is reported as usual, no store is written, and the exit status is 1.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aqa_cli.media.sources.aqa7 import scan_aqa7
from aqa_cli.media.sources.base import SPLITS
from aqa_cli.media.sources.finediving import scan_finediving
from aqa_cli.util.errors import AqaError
from tests.faults.injection import UNWANTED, fault_count, run
from tests.mtl_aqa_trees import synthetic_annotations, write_annotations

Build = Callable[[Path], tuple[Path, str, str]]  # root -> (source to preprocess, failed id, reason)


def _manifest(row: str, sample_id: str, reason: str) -> Build:
    def build(root: Path) -> tuple[Path, str, str]:
        (root / "bad.csv").write_text(f"path,score,difficulty,split\n{row}\n")
        return root / "bad.csv", sample_id, reason

    return build


def _undecodable_video(root: Path) -> tuple[Path, str, str]:
    (root / "videos").mkdir()
    (root / "videos" / "dive.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    return root / "videos", "dive", "dive.mp4"


def _mtl_aqa_without_frames(root: Path) -> tuple[Path, str, str]:
    write_annotations(root / "mtl", synthetic_annotations({(1, 1): 103}))
    return root / "mtl", "01_01", "no video or frame folder for event 01"


def _finediving_bad_folder(root: Path) -> tuple[Path, str, str]:
    """The real FineDiving annotations with one dive whose folder lost a frame (the other 2,999 dives
    have no frames at all)."""
    from tests.dataset_trees import (
        SHARED_FINEDIVING,
        finediving_records,
        link_finediving_annotations,
        write_dive_folder,
    )

    if not SHARED_FINEDIVING.is_dir():
        pytest.skip(f"real FineDiving annotations not found at {SHARED_FINEDIVING}")
    link_finediving_annotations(root / "fd" / "Annotations")
    key = ("01", 1)
    record = finediving_records()[0][key]
    folder = write_dive_folder(root / "fd" / "frames", key, record)
    (folder / f"{record['start_frame']:05d}.jpg").unlink()
    return root / "fd", "01/1", "lacks 1 of its 85 frames"


def _aqa7_bad_folder(root: Path) -> tuple[Path, str, str]:
    """The real AQA-7 lists, --action-free, with one sample folder of frames named otherwise."""
    from tests.dataset_trees import SHARED_AQA7, copy_aqa7_lists, write_aqa7_sample

    if not SHARED_AQA7.is_dir():
        pytest.skip(f"real AQA-7 lists not found at {SHARED_AQA7}")
    copy_aqa7_lists(root / "aqa7" / "Split_4")
    write_aqa7_sample(root / "aqa7" / "diving-out" / "054", 4, "frame-{:05d}.jpg")
    return root / "aqa7", "diving/054", "not named by frame number"


ALL_FAILED: dict[str, Build] = {
    "manifest: missing file": _manifest("missing.mp4,70,3.0,train", "missing", "missing.mp4"),
    "manifest: NaN score": _manifest("a.mp4,nan,3.0,train", "a", "score 'nan' must be a finite number"),
    "manifest: negative difficulty": _manifest("a.mp4,70,-1,train", "a", "difficulty '-1'"),
    "manifest: unknown split": _manifest("a.mp4,70,3.0,holdout", "a", "unknown split 'holdout'"),
    "folder: undecodable video": _undecodable_video,
    "mtl-aqa: no frames": _mtl_aqa_without_frames,
    "finediving: a dive folder short of a frame": _finediving_bad_folder,
    "aqa-7: a folder of misnamed frames": _aqa7_bad_folder,
}


def assert_all_failed(root: Path, source: Path, sample_id: str, reason: str) -> None:
    """One run of `aqa preprocess` on a source whose only sample fails: its line, no store, exit 1."""
    out = root / "out" / "s.h5"
    out.parent.mkdir()
    result = run(["preprocess", source, "--out", out, "--workers", "1"])
    text = result.stdout + result.stderr
    assert not any(word in text for word in UNWANTED), text[-3000:]
    assert "unexpected" not in text, text[-3000:]
    assert result.returncode == 1, f"exit {result.returncode}\n{text[-3000:]}"
    failed = [line for line in result.stdout.splitlines() if line.startswith(f"failed {sample_id}: ")]
    assert len(failed) == 1 and reason in failed[0], result.stdout
    assert "no store was written" in " ".join(result.stdout.split()), result.stdout
    assert not result.messages(), result.stderr  # no `error:` verdict: the failures are the answer
    assert list(out.parent.iterdir()) == []  # no store, .tmp, .partial or lock file


@pytest.mark.parametrize("case", ALL_FAILED)
def test_a_run_whose_every_sample_fails_reports_each_and_writes_no_store(tmp_path: Path, case: str) -> None:
    assert_all_failed(tmp_path, *ALL_FAILED[case](tmp_path))


def test_an_empty_shard_is_one_clear_error(tmp_path: Path) -> None:
    """A shard that gets no sample at all stores nothing either, and says so in one line."""
    from tests.helpers import write_number_video

    write_number_video(tmp_path / "videos" / "a.mp4", 1, 8)
    result = run(["preprocess", tmp_path / "videos", "--out", tmp_path / "s.h5", "--shard", "1/2"])
    text = result.stdout + result.stderr
    assert not any(word in text for word in UNWANTED), text[-3000:]
    assert result.returncode == 2 and len(result.messages()) == 1, text[-3000:]
    assert "no samples to store in shard 1/2" in result.messages()[0]
    assert not (tmp_path / "s.h5").exists()


# ---------------------------------------------------------------- FineDiving and AQA-7 annotations

EXAMPLES = settings(
    max_examples=fault_count(30, 300),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
ODD_NUMBERS = st.sampled_from(
    [70.5, 0.0, -3.0, math.nan, math.inf, "70", None, True, np.float64(81.2), np.int64(3), 10**30]
)
ODD_FRAMES = st.sampled_from([1, 5, 8, 0, -5, 3.0, np.int64(4), "4", None, False, 10**12])
FD_KEY = st.tuples(st.sampled_from(["01", "v", "", "..", "a/b", "x\n"]), st.integers(0, 2))
FD_RECORD = st.fixed_dictionaries(
    {},
    optional={
        "action_type": st.sampled_from(["207c", 207, "", None]),
        "start_frame": ODD_FRAMES,
        "end_frame": ODD_FRAMES,
        "dive_score": ODD_NUMBERS,
        "difficulty": ODD_NUMBERS,
        "judge_scores": st.sampled_from([[7.5, 8.0], [np.float64(55.5)], "8.0", [None], [], [math.nan]]),
    },
)


FINE_RECORD = st.sampled_from(
    [
        {"frames_labels": np.array([4] * 3 + [36] * 5), "sub-action_types": {np.int64(4): "Inward"}},
        {"frames_labels": [1.5] * 8},
        {"frames_labels": [-5] * 8},
        {"frames_labels": [10**40] * 8},
        {"frames_labels": [1] * 3},
        {"sub-action_types": {}},
        [1, 2],
        None,
    ]
)


def _clean(scan, listed: int) -> None:
    assert len(scan.samples) + len(scan.problems) == listed
    for sample in scan.samples:
        assert sample.split in SPLITS and math.isfinite(sample.score) and sample.score >= 0
        assert sample.first is not None and sample.last is not None and 0 <= sample.first < sample.last
    for _, reason in scan.problems:
        assert "\n" not in reason and "Traceback" not in reason


@EXAMPLES
@given(
    records=st.dictionaries(FD_KEY, FD_RECORD | st.sampled_from([None, [1, 2], "x"]), max_size=5),
    train=st.lists(FD_KEY, max_size=5),
    test=st.lists(FD_KEY, max_size=5),
    fine=st.none() | st.dictionaries(FD_KEY, FINE_RECORD, max_size=3),
)
@example(records={("v", 1): {}}, train=[("v", 1)], test=[], fine={("v", 1): {"frames_labels": [-5] * 8}})
@example(
    records={("v", 1): {}}, train=[], test=[("v", 1)], fine={("v", 1): {"frames_labels": list(range(8))}}
)
def test_any_finediving_annotations_are_a_clean_scan_or_one_clear_error(
    tmp_path: Path, records: dict, train: list, test: list, fine: dict | None
) -> None:
    """Whatever the coarse records and splits hold, each dive is stored or a one-line problem; frames
    exist for ('v', 1) at frames 1 ... 8 (some records match them, most do not)."""
    root = tmp_path / "fd"
    if not (root / "v" / "1").is_dir():
        from tests.dataset_trees import write_frame

        for number in range(1, 9):
            write_frame(root / "v" / "1" / f"{number:05d}.jpg", number)
    explicit = records == {("v", 1): {}} and len(train + test) == 1  # the @examples: a storable dive
    full = {"action_type": "207c", "start_frame": 1, "end_frame": 8, "dive_score": 50.0, "difficulty": 2.0}
    records = {
        key: {**full, "judge_scores": [5.0]} | value if isinstance(value, dict) else value
        for key, value in records.items()
    }
    for name, content in (
        ("FineDiving_coarse_annotation.pkl", records),
        ("train_split.pkl", train),
        ("test_split.pkl", test),
    ):
        (root / name).write_bytes(pickle.dumps(content, protocol=3))
    fine_file = root / "FineDiving_fine-grained_annotation.pkl"
    if fine is None:
        fine_file.unlink(missing_ok=True)
    else:
        fine_file.write_bytes(pickle.dumps(fine, protocol=3))
    try:
        scan = scan_finediving(root, 8, "uniform")
    except AqaError as error:
        assert "\n" not in str(error) and not explicit, str(error)
        return
    _clean(scan, len(records))
    if explicit:
        assert [sample.id for sample in scan.samples] == ["v/1"]
        assert scan.samples[0].frame_labels == (list(range(8)) if test else None)
    for sample in scan.samples:
        labels = sample.frame_labels
        assert labels is None or (len(labels) == sample.last - sample.first and min(labels) >= 0)


@EXAMPLES
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from([1.0, 2.0, 7.0, 0.0, 1.5, math.nan, -1.0]),
            st.sampled_from([1.0, 2.0, 0.0, 2.5, math.inf, 1e12]),
            st.sampled_from([50.0, 8415.0, -1.0, math.nan, 0.0, 1e300]),
        ),
        max_size=8,
    ),
    shape=st.sampled_from(["rows", "transposed", "flat", "text"]),
)
def test_any_aqa7_list_is_a_clean_scan_or_one_clear_error(tmp_path: Path, rows: list, shape: str) -> None:
    import scipy.io

    root = tmp_path / "aqa7"
    if not (root / "diving-out" / "001").is_dir():
        from tests.dataset_trees import write_aqa7_sample

        write_aqa7_sample(root / "diving-out" / "001", 3)
    array = np.array(rows, dtype=np.float64).reshape(-1, 3)
    content = {"rows": array, "transposed": array.T, "flat": array.ravel(), "text": "not a list"}[shape]
    scipy.io.savemat(str(root / "split_4_train_list.mat"), {"consolidated_train_list": content})
    scipy.io.savemat(str(root / "split_4_test_list.mat"), {"consolidated_test_list": np.zeros((0, 3))})
    try:
        scan = scan_aqa7(root, "uniform")
    except AqaError as error:
        assert "\n" not in str(error)
        assert shape != "rows" or not rows, str(error)
        return
    assert len(scan.samples) + len(scan.problems) >= (len(rows) > 0)
    for sample in scan.samples:
        assert sample.split == "train" and math.isfinite(sample.score) and sample.score >= 0
    for _, reason in scan.problems:
        assert "\n" not in reason
