"""MTL-AQA trees for tests: real annotation pickles (or a synthetic stand-in) plus frames in each of the
four on-disk layouts, whose pixels carry their 1-based frame number."""

from __future__ import annotations

import functools
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import av
import pytest

from aqa_cli.media.sources.base import IMAGES_NUMBERED, IMAGES_SORTED, VIDEO, Sample
from aqa_cli.util.safe_pickle import load_pickle
from tests.helpers import SHARED_MTL_AQA, number_frame, read_number, write_image, write_number_video

needs_shared = pytest.mark.skipif(
    not SHARED_MTL_AQA.is_dir(), reason=f"real MTL-AQA annotations not found at {SHARED_MTL_AQA}"
)
PICKLES = ("final_annotations_dict.pkl", "train_split_0.pkl", "test_split_0.pkl")
LOOKED_FOR = "(looked for NN.mp4, NN/, video{N}_frames/, NN_DD/)"

# The dives of the small trees and the end frames they are shifted to (small, so that few frames are
# written; (1, 1)'s window is exactly frames 1 ... 103).
SMALL_ENDS = {(1, 1): 103, (1, 2): 121, (1, 3): 140, (2, 1): 110, (2, 2): 150}
Ends = dict[tuple[int, int], int]
Annotations = tuple[dict, list, list]  # records, train keys, test keys


# ---------------------------------------------------------------- annotation files


def write_annotations(folder: Path, annotations: Annotations) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in zip(PICKLES, annotations, strict=True):
        with (folder / name).open("wb") as file:
            pickle.dump(content, file, protocol=3)
    return folder


def record(end_frame: int, score: float = 70.0, difficulty: float = 3.0) -> dict:
    """A record with every field of the release's records."""
    return {
        "primary_view": 0,
        "start_frame": end_frame - 80,
        "end_frame": end_frame,
        "position": 1,
        "difficulty": difficulty,
        "armstand": 0,
        "rotation_type": 1,
        "ss_no": 5,
        "tw_no": 2,
        "final_score": score,
    }


def synthetic_annotations(ends: Ends) -> Annotations:
    records = {
        key: record(end, score=60.0 + key[0] + key[1] / 10, difficulty=2.0 + key[1] / 10)
        for key, end in ends.items()
    }
    keys = sorted(ends)
    return records, keys[::2], keys[1::2]


def real_annotations(ends: Ends) -> Annotations:
    """The release's records and split for these dives, with end (and start) frames shifted to `ends`."""
    records, train, test = (load_pickle(SHARED_MTL_AQA / name) for name in PICKLES)
    shifted = {}
    for key, end in ends.items():
        offset = records[key]["end_frame"] - end
        shifted[key] = {**records[key], "end_frame": end, "start_frame": records[key]["start_frame"] - offset}
    return shifted, [key for key in train if key in ends], [key for key in test if key in ends]


@pytest.fixture(params=["real", "synthetic"])
def small_annotations(request: pytest.FixtureRequest) -> Annotations:
    if request.param == "synthetic":
        return synthetic_annotations(SMALL_ENDS)
    if not SHARED_MTL_AQA.is_dir():
        pytest.skip(f"real MTL-AQA annotations not found at {SHARED_MTL_AQA}")
    return real_annotations(SMALL_ENDS)


# ---------------------------------------------------------------- frames in the four layouts

_jpeg_of_number: dict[int, bytes] = {}


def write_frame(path: Path, number: int) -> None:
    """A JPEG showing `number` (encoded once per number, then copied)."""
    if number in _jpeg_of_number:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_jpeg_of_number[number])
    else:
        _jpeg_of_number[number] = write_image(path, number_frame(number)).read_bytes()


def last_frame_per_event(ends: Ends) -> dict[int, int]:
    """How many frames each event's whole-event source needs: a couple past its last dive."""
    events: dict[int, int] = {}
    for (event, _), end in ends.items():
        events[event] = max(events.get(event, 0), end + 2)
    return events


def build_videos(root: Path, ends: Ends) -> None:
    """Layout 1: whole_videos/NN.mp4, frame n (1-based) showing n."""
    for event, count in last_frame_per_event(ends).items():
        write_number_video(root / "whole_videos" / f"{event:02d}.mp4", first=1, count=count)


def build_sorted_folders(root: Path, ends: Ends) -> None:
    """Layout 2: whole_videos_frames/NN/%06d.jpg for odd events, %08d.jpg for even ones."""
    for event, count in last_frame_per_event(ends).items():
        width = 6 if event % 2 else 8
        for number in range(1, count + 1):
            write_frame(root / "whole_videos_frames" / f"{event:02d}" / f"{number:0{width}d}.jpg", number)


def build_numbered_folders(root: Path, ends: Ends) -> None:
    """Layout 3: frames/video{N}_frames/{n}.jpg, only the dives' windows; N zero-padded for even events."""
    for (event, _), end in ends.items():
        folder = root / "frames" / (f"video{event}_frames" if event % 2 else f"video{event:02d}_frames")
        for number in range(end - 102, end + 1):
            write_frame(folder / f"{number}.jpg", number)


def build_per_dive_folders(root: Path, ends: Ends) -> None:
    """Layout 4: musdl/EE_DD/%05d.jpg holding the dive's 103 frames and 3 more after it."""
    for (event, dive), end in ends.items():
        for index in range(106):
            write_frame(root / "musdl" / f"{event:02d}_{dive:02d}" / f"{index:05d}.jpg", end - 102 + index)


LAYOUTS: dict[str, tuple[Callable[[Path, Ends], None], str]] = {
    "video": (build_videos, VIDEO),
    "sorted": (build_sorted_folders, IMAGES_SORTED),
    "numbered": (build_numbered_folders, IMAGES_NUMBERED),
    "per-dive": (build_per_dive_folders, IMAGES_SORTED),
}


_number_of_jpeg: dict[bytes, int] = {}


def image_number(path: Path) -> int:
    """The number an image file shows (decoded once per distinct file content)."""
    content = path.read_bytes()
    if content not in _number_of_jpeg:
        with av.open(str(path)) as container:
            _number_of_jpeg[content] = read_number(next(container.decode(video=0)).to_ndarray(format="rgb24"))
    return _number_of_jpeg[content]


@functools.cache
def video_numbers(path: str) -> list[int]:
    """The numbers the frames of a video show, in decode order (decoded once per path)."""
    with av.open(path) as container:
        return [read_number(frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]


def frame_numbers(sample: Sample) -> list[int]:
    """The numbers shown by frames first ... last-1 of the sample, found as `base.py` defines its kind."""
    indices = range(sample.first, sample.last)
    if sample.source_kind == VIDEO:
        return [video_numbers(sample.source)[index] for index in indices]
    if sample.source_kind == IMAGES_NUMBERED:
        return [image_number(Path(sample.source) / f"{index + 1}.jpg") for index in indices]
    files = sorted(os.listdir(sample.source))
    return [image_number(Path(sample.source) / files[index]) for index in indices]
