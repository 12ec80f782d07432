"""FineDiving (Xu et al., CVPR 2022): the release's annotation pickles plus the frames the user has.

A dive is the frames `start_frame ... end_frame` (absolute, 1-based, inclusive) of its untrimmed video,
fitted to the store's frame count by `--fit` (`uniform`, the default, spreads them over the whole dive
as the reference loader's `linspace` does; a dive shorter than that repeats frames). Per dive the
frames come from, in order of preference:

1. its trimmed folder `<video_name>/<instance_id>/<NNNNN>.jpg`, as the release ships them: one file per
   frame, named by its absolute frame number (`%05d`, 6 digits above 99,999); the folder must hold every
   frame `start_frame ... end_frame` (more around them are ignored), or exactly the dive's frames
   numbered from 0 or 1 (re-extracted per dive), else the dive is reported;
2. the untrimmed video `<video_name>.mp4` (or .mkv .avi .webm .mov), frames counted from 1.

Both are found anywhere under the root (the shallowest, then path order, wins), as are the annotation
files: `FineDiving_coarse_annotation.pkl` with `train_split.pkl` and `test_split.pkl` beside it (the
official 2,251 / 749 split), and optionally `FineDiving_fine-grained_annotation.pkl`, whose per-frame
sub-action labels are stored for the stored frames (`frame_labels`). Every file is loaded by the
restricted unpickler admitting only the numpy globals that file needs.

The store gets each dive's `dive_score`, `difficulty` and `action_type` (the `action` column) as
published; `extra` holds its video name, instance id, frame range, judge scores (as published: the three
known typos such as 55.5 are kept and reported, never "fixed"), its steps (sub-actions in order, repeats
kept) and, for the two-digit videos, its MTL-AQA key: those 1,369 dives are MTL-AQA dives, and the two
datasets' splits cross (see `aqa_cli.media.sources.overlap`).
"""

from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aqa_cli.media.sources.base import IMAGES_SORTED, VIDEO, Sample, SourceScan, official_split, walk_folders
from aqa_cli.util.errors import AqaError
from aqa_cli.util.safe_pickle import load_pickle

KIND = "finediving"
COARSE_FILE = "FineDiving_coarse_annotation.pkl"
FINE_FILE = "FineDiving_fine-grained_annotation.pkl"
SUB_ACTION_TABLE = "Sub_action_Types_Table.pkl"
SPLIT_FILES = {"train": "train_split.pkl", "test": "test_split.pkl"}
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".webm", ".mov")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # as preprocess reads them
LOOKED_FOR = "<video_name>/<instance_id>/NNNNN.jpg, <video_name>.mp4"
# The numpy globals each pickle references (README of the release, checked with pickletools); the split
# files and the sub-action table need none.
COARSE_GLOBALS = {("numpy.core.multiarray", "scalar"), ("numpy", "dtype")}
FINE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
}
RECORD_FIELDS = ("action_type", "start_frame", "end_frame", "dive_score", "difficulty", "judge_scores")
MTL_AQA_VIDEO = re.compile(r"\d\d")  # FineDiving's names of the MTL-AQA event videos: '01' ... '26'
MAX_NAMED = 5  # dives named in one notice


def _is_key(key: Any) -> bool:
    return (
        isinstance(key, tuple)
        and len(key) == 2
        and isinstance(key[0], str)
        and isinstance(key[1], numbers.Integral)
        and not isinstance(key[1], bool)
    )


def dive_id(key: tuple[str, int]) -> str:
    """`<video_name>/<instance_id>`, as the release's folders are named."""
    return f"{key[0]}/{int(key[1])}"


def mtl_aqa_key(video_name: str, instance_id: int) -> tuple[int, int] | None:
    """The MTL-AQA (event, dive) of a FineDiving dive of a two-digit video (`('01', 1)` is `(1, 1)`)."""
    return (int(video_name), int(instance_id)) if MTL_AQA_VIDEO.fullmatch(video_name) else None


# ---------------------------------------------------------------- finding the files


@dataclass
class _Tree:
    """What one walk of the root found: annotation files and, per video name, candidate frame sources."""

    annotations: list[Path] = field(default_factory=list)
    mtl_aqa_annotations: list[Path] = field(default_factory=list)
    folders: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # name -> (depth, path)
    videos: dict[str, list[tuple[int, str]]] = field(default_factory=dict)


def _walk(root: Path) -> _Tree:
    """Find the annotation files and every folder or video file under `root` (hidden ones skipped, linked
    folders followed once). A folder holding images is a frame folder: its listing stops at the first
    image (an untrimmed video's frame folder holds up to ~290,000), and it is not descended into.
    Candidates are chosen by depth, then path, so the order of listing does not matter."""
    tree = _Tree()
    for depth, entries, descend in walk_folders(root):
        found = _Tree()
        for entry in entries:
            if entry.name.startswith("."):
                continue
            stem, extension = os.path.splitext(entry.name)
            if extension.lower() in IMAGE_EXTENSIONS:
                found = _Tree()
                descend.clear()
                break  # a frame folder
            if entry.is_dir():
                found.folders.setdefault(entry.name, []).append((depth, entry.path))
                descend.append(entry.path)
            elif entry.name == COARSE_FILE:
                found.annotations.append(Path(entry.path))
            elif entry.name == "final_annotations_dict.pkl":
                found.mtl_aqa_annotations.append(Path(entry.path))
            elif extension.lower() in VIDEO_EXTENSIONS:
                found.videos.setdefault(stem, []).append((depth, entry.path))
        tree.annotations += found.annotations
        tree.mtl_aqa_annotations += found.mtl_aqa_annotations
        for name, candidates in found.folders.items():
            tree.folders.setdefault(name, []).extend(candidates)
        for name, candidates in found.videos.items():
            tree.videos.setdefault(name, []).extend(candidates)
    return tree


def _has_coarse_file(root: Path) -> bool:
    """Whether FineDiving's coarse annotation file lies under `root`: a cheap walk that never lists a
    frame folder beyond its first image."""
    for _, entries, descend in walk_folders(root):
        for entry in entries:
            if entry.name == COARSE_FILE:
                return True
            if os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                descend.clear()
                break
            if not entry.name.startswith(".") and entry.is_dir():
                descend.append(entry.path)
    return False


def find_finediving_root(path: Path | str) -> Path | None:
    """`path` if FineDiving's coarse annotation file lies anywhere under that folder, else None."""
    path = Path(path)
    return path if path.is_dir() and _has_coarse_file(path) else None


def _annotation_folder(root: Path, found: list[Path]) -> Path:
    """The folder holding the coarse annotations and both split pickles (the shallowest, then path order)."""
    complete = [
        file for file in found if all((file.parent / name).is_file() for name in SPLIT_FILES.values())
    ]
    if complete:
        return min(complete, key=lambda file: (len(file.parts), str(file))).parent
    splits = " and ".join(SPLIT_FILES.values())
    if found:
        raise AqaError(
            f"{min(found)} has no {splits} beside it: copy them from the FineDiving release "
            "(Annotations/) into that folder"
        )
    raise AqaError(
        f"no FineDiving annotations under {root}: looked for {COARSE_FILE} (with {splits} beside it); point "
        "`aqa preprocess PATH` at the folder that holds the FineDiving annotations and frames"
    )


def _not_annotations(path: Path, why: str) -> AqaError:
    return AqaError(f"{path} is not a FineDiving annotation file ({why}): use the file from the release")


def _load_dict(path: Path, numpy_names: set[tuple[str, str]]) -> dict:
    records = load_pickle(path, allow_numpy=True, numpy_names=numpy_names)
    if not isinstance(records, dict):
        raise _not_annotations(path, f"it holds a {type(records).__name__}, not a dict of dives")
    for key in records:
        if not _is_key(key):
            raise _not_annotations(path, f"key {key!r} is not a (video_name, instance_id) pair")
    return records


def _load_split(path: Path) -> set[tuple[str, int]]:
    keys = load_pickle(path)
    if not isinstance(keys, (list, tuple, set)) or not all(_is_key(key) for key in keys):
        raise _not_annotations(path, "it is not a list of (video_name, instance_id) pairs")
    return {(key[0], int(key[1])) for key in keys}


# ---------------------------------------------------------------- one dive


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _record_problem(record: Any) -> str | None:
    """Why a coarse record cannot be stored, or None. numpy and Python numbers are both accepted."""
    if not isinstance(record, dict):
        return f"its record is a {type(record).__name__}, not a dict"
    missing = [name for name in RECORD_FIELDS if name not in record]
    if missing:
        return f"its record lacks {', '.join(missing)}"
    for name in ("dive_score", "difficulty"):
        if not (_number(record[name]) and record[name] >= 0):
            return f"its {name} {record[name]!r} is not a finite number >= 0"
    start, end = record["start_frame"], record["end_frame"]
    for name, value in (("start_frame", start), ("end_frame", end)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            return f"its {name} {value!r} is not a frame number (a whole number from 1)"
    if end < start:
        return f"its end_frame {end} is before its start_frame {start}"
    if not isinstance(record["action_type"], str) or not record["action_type"].isprintable():
        return f"its action_type {record['action_type']!r} is not a dive number"
    judges = record["judge_scores"]
    if isinstance(judges, np.ndarray) and judges.ndim == 1:
        judges = judges.tolist()
    if not isinstance(judges, (list, tuple)) or not all(_number(score) for score in judges):
        return f"its judge_scores {judges!r} are not a list of finite numbers"
    return None


def judge_typos(judges: list[float]) -> list[float]:
    """Judge scores that no judge can give (outside 0 ... 10 or not in steps of 0.5): typos, as published."""
    return [score for score in judges if not (0 <= score <= 10 and float(score * 2).is_integer())]


def _steps(labels: list[int], names: dict[int, str]) -> list[list]:
    """The dive's sub-actions in order, each [id, name]; a label that recurs later is a step of its own."""
    steps: list[list] = []
    for label in labels:
        if not steps or steps[-1][0] != label:
            steps.append([label, names.get(label, "")])
    return steps


def _fine_labels(fine: dict | None, key: tuple[str, int], length: int) -> tuple[list[int], dict] | str | None:
    """The dive's per-frame sub-action ids and their names, None without a fine-grained file, or why not."""
    if fine is None:
        return None
    record = fine.get(key)
    if record is None:
        return "it is not in the fine-grained annotations"
    if not isinstance(record, dict):
        return f"its fine-grained record is a {type(record).__name__}, not a dict"
    try:
        labels = [int(label) for label in record["frames_labels"]]
        names = {int(number): str(name) for number, name in dict(record.get("sub-action_types", {})).items()}
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        return f"its fine-grained record is malformed ({type(exc).__name__}: {exc})"
    if len(labels) != length:
        return f"its {len(labels)} frame labels do not match its {length} frames"
    if any(not 0 <= label < 2**31 for label in labels):
        return "its frame labels are not sub-action ids (whole numbers from 0)"
    return labels, names


@dataclass(frozen=True)
class _Source:
    kind: str
    path: str
    first: int  # 0-based, in the order preprocess reads the source
    last: int  # exclusive


def _frame_names(folder: str) -> list[str]:
    """The folder's images in the order preprocess reads them (sorted names)."""
    return sorted(
        name for name in os.listdir(folder) if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
    )


def _folder_window(folder: str, start: int, end: int) -> tuple[int, int] | str:
    """Where frames start ... end lie in the folder's sorted files (first, last exclusive), or why not."""
    try:
        names = _frame_names(folder)
    except OSError as exc:
        return f"cannot read its frame folder {folder} ({exc.strerror or exc})"
    if not names:
        return f"its frame folder {folder} holds no images"
    numbers_found = []
    for name in names:
        stem = os.path.splitext(name)[0]
        if not stem.isdigit():
            return f"its frame folder {folder} holds {name!r}, not named by frame number (NNNNN.jpg)"
        numbers_found.append(int(stem))
    wanted = end - start + 1
    base = numbers_found[0]
    if base in (0, 1) and base != start and numbers_found == list(range(base, base + wanted)):
        return 0, wanted  # the dive's frames numbered from 0 or 1 instead of by frame number
    if start in numbers_found:
        first = numbers_found.index(start)
        if numbers_found[first : first + wanted] == list(range(start, end + 1)):
            return first, first + wanted
    have = set(numbers_found)
    missing = [number for number in range(start, end + 1) if number not in have]
    if missing:
        held = f"{len(have & set(range(start, end + 1)))} of them"
        return (
            f"its frame folder {folder} lacks {len(missing)} of its {wanted} frames {start} ... {end} "
            f"(first missing: {missing[0]}; it holds {held}, files {numbers_found[0]} ... {numbers_found[-1]}); "
            "extract the dive's frames again"
        )
    return (
        f"its frame folder {folder} holds frames {start} ... {end} out of order when sorted by name "
        "(mixed name widths); name them with the same number of digits"
    )


@dataclass
class _Scan:
    root: Path
    tree: _Tree
    folder: Path
    splits: dict[str, set[tuple[str, int]]]
    fine: dict | None
    table: dict[int, str]
    fit: str
    frames: int
    used: dict[str, int] = field(default_factory=dict)  # dives per frame source kind
    short: list[str] = field(default_factory=list)  # ids of dives shorter than the stored frame count
    typos: list[tuple[str, list[float]]] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)  # why some dives have no frame labels

    def _best(self, candidates: list[tuple[int, str]] | None) -> str | None:
        return min(candidates)[1] if candidates else None

    def frame_source(self, key: tuple[str, int], start: int, end: int) -> _Source | str:
        video_name, instance = key
        for _, video_folder in sorted(self.tree.folders.get(video_name, ())):
            dive_folder = os.path.join(video_folder, str(instance))
            if os.path.isdir(dive_folder):
                window = _folder_window(dive_folder, start, end)
                if isinstance(window, str):
                    return window
                return _Source(IMAGES_SORTED, dive_folder, *window)
        video = self._best(self.tree.videos.get(video_name))
        if video:
            return _Source(VIDEO, video, start - 1, end)
        return f"no frames for it under {self.root} (looked for {LOOKED_FOR})"

    def dive(self, key: tuple[str, int], record: Any) -> Sample | str:
        split, problem = official_split(key, self.splits, SPLIT_FILES, self.folder)
        if problem:
            return problem
        problem = _record_problem(record)
        if problem:
            return problem
        video_name = key[0]
        if not video_name or "/" in video_name or video_name in (".", "..") or not video_name.isprintable():
            return f"its video name {video_name!r} cannot be a folder name"
        start, end = int(record["start_frame"]), int(record["end_frame"])
        source = self.frame_source(key, start, end)
        if isinstance(source, str):
            return source
        judges = [float(score) for score in record["judge_scores"]]
        sample_id = dive_id(key)
        typos = judge_typos(judges)
        if typos:
            self.typos.append((sample_id, typos))
        length = end - start + 1
        if length < self.frames:
            self.short.append(sample_id)
        extra: dict[str, Any] = {
            "video_name": video_name,
            "instance_id": key[1],
            "start_frame": start,
            "end_frame": end,
            "judge_scores": judges,
            "frame_offset": start - source.first,  # frame number = frame_index + frame_offset
        }
        if typos:
            extra["judge_score_typos"] = typos
        mtl = mtl_aqa_key(*key)
        if mtl:
            extra["mtl_aqa"] = list(mtl)
        labels = _fine_labels(self.fine, key, length)
        frame_labels = None
        if isinstance(labels, str):
            self.unlabelled.append(f"{sample_id}: {labels}")
        elif labels is not None:
            frame_labels, names = labels
            extra["steps"] = _steps(frame_labels, {**self.table, **names})
        self.used[source.kind] = self.used.get(source.kind, 0) + 1
        return Sample(
            id=sample_id,
            source=source.path,
            source_kind=source.kind,
            first=source.first,
            last=source.last,
            score=float(record["dive_score"]),
            difficulty=float(record["difficulty"]),
            split=split,
            fit=self.fit,
            extra=extra,
            action=record["action_type"],
            frame_labels=frame_labels,
        )

    def notices(self, samples: list[Sample]) -> list[str]:
        notes = []
        if self.short:
            notes.append(
                f"{len(self.short)} dives are shorter than the {self.frames} stored frames, so some of their "
                f"frames are stored twice (--fit {self.fit}), as the reference loader does; e.g. "
                + ", ".join(self.short[:MAX_NAMED])
            )
        if self.typos:
            listed = "; ".join(f"{sample_id} {typos}" for sample_id, typos in self.typos[:MAX_NAMED])
            notes.append(
                f"{len(self.typos)} dives list judge scores no judge can give (typos in the release), kept as "
                f"published in extra.judge_scores (the score label is dive_score): {listed}"
            )
        if self.unlabelled:
            notes.append(
                f"{len(self.unlabelled)} dives are stored without frame labels: "
                + "; ".join(self.unlabelled[:MAX_NAMED])
            )
        from aqa_cli.media.sources.overlap import finediving_notice

        notice = finediving_notice(self.splits, samples, self.tree.mtl_aqa_annotations)
        if notice:
            notes.append(notice)
        return notes

    def summary(self, records: dict, problems: int) -> str:
        labels = "with frame labels" if self.fine is not None else f"no {FINE_FILE}: no frame labels"
        parts = [f"{len(records)} dives (annotations in {self.folder}, {labels})"]
        names = {IMAGES_SORTED: "per-dive frame folders", VIDEO: "untrimmed videos"}
        parts += [f"{names[kind]} for {count} dives" for kind, count in sorted(self.used.items())]
        if problems:
            parts.append(f"{problems} dives without frames or split")
        return f"FineDiving at {self.root}: " + "; ".join(parts)


def scan_finediving(root: Path | str, frames: int, fit: str, action: str | None = None) -> SourceScan:
    """One `Sample` per annotated dive under `root` (sorted by video, then instance), or a problem; with
    `action` (a dive number such as 207c), only that action's dives."""
    root = Path(root).absolute()
    if not root.is_dir():
        raise AqaError(f"{root} is not a folder: point `aqa preprocess PATH` at the FineDiving folder")
    tree = _walk(root)
    folder = _annotation_folder(root, tree.annotations)
    records = _load_dict(folder / COARSE_FILE, COARSE_GLOBALS)
    splits = {name: _load_split(folder / file) for name, file in SPLIT_FILES.items()}
    fine = _load_dict(folder / FINE_FILE, FINE_GLOBALS) if (folder / FINE_FILE).is_file() else None
    table: dict[int, str] = {}
    if (folder / SUB_ACTION_TABLE).is_file():
        loaded = load_pickle(folder / SUB_ACTION_TABLE)
        if not isinstance(loaded, dict):
            raise _not_annotations(folder / SUB_ACTION_TABLE, "it is not a dict of sub-action names")
        table = {int(number): str(name) for number, name in loaded.items()}
    if fine is not None:
        fine = {(key[0], int(key[1])): value for key, value in fine.items()}
    scan = _Scan(root, tree, folder, splits, fine, table, fit, frames)
    samples: list[Sample] = []
    problems: list[tuple[str, str]] = []
    keys = sorted({(key[0], int(key[1])): key for key in records}.items())
    if action is not None:
        actions = {record.get("action_type") for record in records.values() if isinstance(record, dict)}
        keys = [
            (key, k)
            for key, k in keys
            if isinstance(records[k], dict) and records[k].get("action_type") == action
        ]
        if not keys:
            known = sorted(str(name) for name in actions)
            raise AqaError(
                f"no dive of --action {action!r} in {folder / COARSE_FILE}: its dive numbers are "
                f"{', '.join(known[:60])}"
            )
    for key, original in keys:
        dive = scan.dive(key, records[original])
        if isinstance(dive, Sample):
            samples.append(dive)
        else:
            problems.append((dive_id(key), dive))
    description = scan.summary(records, len(problems))
    if action is not None:
        description += f"; kept --action {action}: {len(keys)} dives"
    return SourceScan(KIND, description, samples, problems, scan.notices(samples))
