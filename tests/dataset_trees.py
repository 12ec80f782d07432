"""FineDiving and AQA-7 trees for tests: the real annotation files from ../shared (linked or copied into
the tree, never changed), plus frames for a handful of dives or samples whose pixels carry their frame
number (FineDiving's absolute frame numbers modulo 4096, which is unambiguous within one dive)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import av
import numpy as np
import pytest
import scipy.io

from tests.helpers import NUMBER_BITS, SHARED, number_frame, read_number, write_image

SHARED_FINEDIVING = SHARED / "data" / "finediving"
SHARED_AQA7 = SHARED / "data" / "aqa-7"
FINEDIVING_PICKLES = (
    "FineDiving_coarse_annotation.pkl",
    "FineDiving_fine-grained_annotation.pkl",
    "fine-grained_annotation_aqa.pkl",
    "Sub_action_Types_Table.pkl",
    "train_split.pkl",
    "test_split.pkl",
)
AQA7_LISTS = ("consolidated_train_list.mat", "consolidated_test_list.mat")
needs_finediving = pytest.mark.skipif(
    not all((SHARED_FINEDIVING / name).is_file() for name in FINEDIVING_PICKLES),
    reason=f"real FineDiving annotations not found at {SHARED_FINEDIVING}",
)
needs_aqa7 = pytest.mark.skipif(
    not all((SHARED_AQA7 / name).is_file() for name in AQA7_LISTS),
    reason=f"real AQA-7 lists not found at {SHARED_AQA7}",
)
MODULO = 1 << NUMBER_BITS
SIZE = (96, 64)  # small frames: fast to write, still read back exactly after resizing to 171x128


def plain_load(path: Path):
    """The test's own reading of a trusted release file (plain pickle, not the adapter's loader)."""
    with open(path, "rb") as file:
        return pickle.load(file)


_jpeg_of_number: dict[int, bytes] = {}


def write_frame(path: Path, number: int) -> None:
    """A JPEG showing `number` modulo 4096 (encoded once per number, then copied)."""
    shown = number % MODULO
    path.parent.mkdir(parents=True, exist_ok=True)
    if shown not in _jpeg_of_number:
        _jpeg_of_number[shown] = write_image(path, number_frame(shown, *SIZE)).read_bytes()
    else:
        path.write_bytes(_jpeg_of_number[shown])


def link_finediving_annotations(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in FINEDIVING_PICKLES:
        os.symlink(SHARED_FINEDIVING / name, folder / name)
    return folder


def finediving_records() -> tuple[dict, set, set, dict]:
    """Coarse records, train keys, test keys, fine-grained records, read with plain pickle."""
    coarse = plain_load(SHARED_FINEDIVING / "FineDiving_coarse_annotation.pkl")
    fine = plain_load(SHARED_FINEDIVING / "FineDiving_fine-grained_annotation.pkl")
    train = set(plain_load(SHARED_FINEDIVING / "train_split.pkl"))
    test = set(plain_load(SHARED_FINEDIVING / "test_split.pkl"))
    return coarse, train, test, fine


def write_dive_folder(frames_root: Path, key: tuple[str, int], record: dict, pad: int = 0) -> Path:
    """`<frames_root>/<video>/<id>/<NNNNN>.jpg` for the dive's frames (and `pad` more on each side)."""
    folder = frames_root / key[0] / str(key[1])
    for number in range(record["start_frame"] - pad, record["end_frame"] + pad + 1):
        write_frame(folder / f"{number:05d}.jpg", number)
    return folder


def uniform_positions(length: int, frames: int) -> list[int]:
    """The test's statement of --fit uniform: frame floor((k + 0.5) * L / T) of a clip of L frames."""
    return [int((k + 0.5) * length / frames) for k in range(frames)]


def shown_numbers(frames: np.ndarray) -> list[int]:
    return [read_number(frame) for frame in frames]


def image_number(path: Path) -> int:
    with av.open(str(path)) as container:
        return read_number(next(container.decode(video=0)).to_ndarray(format="rgb24"))


# ---------------------------------------------------------------- AQA-7


def aqa7_rows() -> dict[str, np.ndarray]:
    """The real lists as published: (N, 3) float, scores x 100."""
    return {
        split: scipy.io.loadmat(str(SHARED_AQA7 / f"consolidated_{split}_list.mat"))[
            f"consolidated_{split}_list"
        ]
        for split in ("train", "test")
    }


def copy_aqa7_lists(folder: Path, raw_scores: bool = False) -> Path:
    """The real lists into `folder`: as published (consolidated_*, scores x 100), or as the release's
    Split_4 files peers read (split_4_*_list.mat, same variables, raw scores)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in aqa7_rows().items():
        if raw_scores:
            raw = rows.copy()
            raw[:, 2] = raw[:, 2] / 100
            scipy.io.savemat(str(folder / f"split_4_{split}_list.mat"), {f"consolidated_{split}_list": raw})
        else:
            os.symlink(
                SHARED_AQA7 / f"consolidated_{split}_list.mat", folder / f"consolidated_{split}_list.mat"
            )
    return folder


def write_aqa7_sample(folder: Path, count: int, name: str = "img_{:05d}.jpg", offset: int = 0) -> Path:
    """A sample folder of `count` frames numbered from 1 (frame n shows offset + n)."""
    for number in range(1, count + 1):
        write_frame(folder / name.format(number), offset + number)
    return folder
