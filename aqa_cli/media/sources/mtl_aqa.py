"""MTL-AQA: the release's annotation pickles plus whatever frames the user has, found anywhere under a root.

A dive is the `frames` (103) frames ending at its `end_frame`: 1-based frame numbers
`end_frame - frames + 1 ... end_frame` of its event, i.e. 0-based indices `end_frame - frames ...
end_frame - 1` (see docs/mtl-aqa.md in the shared folder). Per event the frames come from, in order of
preference:

1. a whole-event video `NN.mp4` (or .mkv .avi .webm .mov),
2. a whole-event frame folder `NN/` whose sorted file names are the frames (`%06d.jpg`, `%08d.jpg`),
3. a whole-event frame folder `video{N}_frames/` whose files are named by frame number (`{n}.jpg`)
   (where a folder's file names show which of 2 and 3 it is, they decide over its name),

and a dive with none of these (or whose window would start before frame 1) falls back to

4. its own trimmed folder `{event:02d}_{dive:02d}/` (MUSDL), whose first `frames` sorted files are the dive.

Where one layout has several candidates for an event or dive, the shallowest wins, then path order.
Hidden folders are skipped. The annotation pickles are found the same way (see `_annotation_folder`).
Every dive belongs to the split whose pickle lists it; a dive listed in neither (or both) is reported
as a problem rather than stored with a guessed split: the official split is the one every paper uses.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aqa_cli.media.sources.base import (
    IMAGES_NUMBERED,
    IMAGES_SORTED,
    VIDEO,
    Sample,
    SourceScan,
    official_split,
    walk_folders,
)
from aqa_cli.util.errors import AqaError
from aqa_cli.util.safe_pickle import load_pickle

KIND = "mtl-aqa"
DIVE_FRAMES = 103
ANNOTATIONS_FILE = "final_annotations_dict.pkl"
SPLIT_FILES = {"train": "train_split_0.pkl", "test": "test_split_0.pkl"}
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".webm", ".mov")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
SCORE_FIELDS = ("final_score", "difficulty")
LOOKED_FOR = "NN.mp4, NN/, video{N}_frames/, NN_DD/"


@dataclass(frozen=True)
class _Layout:
    preference: int  # lower wins when an event has several
    kind: str  # the Sample.source_kind
    label: str  # how the scan's description names it


WHOLE_EVENT_VIDEO = _Layout(1, VIDEO, "whole-event videos")
WHOLE_EVENT_SORTED = _Layout(2, IMAGES_SORTED, "whole-event frame folders")
WHOLE_EVENT_NUMBERED = _Layout(3, IMAGES_NUMBERED, "frame-numbered folders")
PER_DIVE = _Layout(4, IMAGES_SORTED, "per-dive folders")

# Folder names that hold frames, by layout; the group(s) are the event (and dive) numbers.
_FRAME_FOLDER_NAMES = (
    (re.compile(r"(\d+)"), WHOLE_EVENT_SORTED),
    (re.compile(r"video(\d+)_frames"), WHOLE_EVENT_NUMBERED),
    (re.compile(r"(\d+)_(\d+)"), PER_DIVE),
)
_EVENT_VIDEO_STEM = re.compile(r"\d+")


@dataclass(frozen=True)
class _Candidate:
    """One place that holds an event's (or a dive's) frames."""

    layout: _Layout
    depth: int  # of its folder below the root
    path: str


@dataclass
class _Tree:
    """What one walk of the root found.

    Frame sources are keyed by (event,) for the whole-event layouts, by (event, dive) for per-dive folders.
    """

    annotation_files: list[Path] = field(default_factory=list)
    sources: dict[tuple[int, ...], list[_Candidate]] = field(default_factory=dict)

    def add(self, key: tuple[int, ...], candidate: _Candidate) -> None:
        self.sources.setdefault(key, []).append(candidate)

    def best(self, key: tuple[int, ...]) -> _Candidate | None:
        """The preferred layout, then the shallowest, then the first path."""
        return min(
            self.sources.get(key, ()),
            key=lambda candidate: (candidate.layout.preference, candidate.depth, candidate.path),
            default=None,
        )


def _frames_layout(folder: str, named: _Layout) -> _Layout | None:
    """How `folder`, named like a `named` folder, indexes its frames; None if it holds no image.

    Reads only as many file names as decide it (a whole-event folder holds up to ~290,000 files). In a
    whole-event folder the file names decide over the folder's name: zero-padded or non-numeric names
    (`000001.jpg`) are in frame order when sorted; numbers of different widths (`7.jpg`, `1234.jpg`) are
    frame numbers. Names that decide neither (`200.jpg` ... `302.jpg`) follow the folder's name.
    """
    widths: set[int] = set()
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, extension = os.path.splitext(entry.name)
                if extension.lower() not in IMAGE_EXTENSIONS:
                    continue
                if named is PER_DIVE:
                    return PER_DIVE
                if not stem.isdigit() or stem.startswith("0"):
                    return WHOLE_EVENT_SORTED
                widths.add(len(stem))
                if len(widths) > 1:
                    return WHOLE_EVENT_NUMBERED
    except OSError:
        return None  # an unreadable folder holds nothing we can use
    return named if widths else None


def _frame_folder(name: str, path: str) -> tuple[tuple[int, ...], _Layout] | None:
    """The event (or event and dive) and layout of a folder of frames, or None if it is not one."""
    for pattern, named in _FRAME_FOLDER_NAMES:
        match = pattern.fullmatch(name)
        layout = _frames_layout(path, named) if match else None
        if layout:
            return tuple(int(number) for number in match.groups()), layout
    return None


def _walk(root: Path) -> _Tree:
    """Find annotation files and frame sources under `root`, never listing a frame folder in full.

    Hidden folders are skipped; linked folders are followed once each.
    """
    tree = _Tree()
    for depth, entries, descend in walk_folders(root):
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                frame_folder = _frame_folder(entry.name, entry.path)
                if frame_folder:
                    key, layout = frame_folder
                    tree.add(key, _Candidate(layout, depth, entry.path))
                else:
                    descend.append(entry.path)
            elif entry.name == ANNOTATIONS_FILE:
                tree.annotation_files.append(Path(entry.path))
            else:
                stem, extension = os.path.splitext(entry.name)
                if extension.lower() in VIDEO_EXTENSIONS and _EVENT_VIDEO_STEM.fullmatch(stem):
                    tree.add((int(stem),), _Candidate(WHOLE_EVENT_VIDEO, depth, entry.path))
    return tree


def find_mtl_aqa_root(path: Path | str) -> Path | None:
    """`path` if an MTL-AQA annotation file lies anywhere under that folder, else None (for auto-detection)."""
    path = Path(path)
    if path.is_dir() and _walk(path).annotation_files:
        return path
    return None


def _annotation_folder(root: Path, annotation_files: list[Path]) -> Path:
    """The folder holding the annotations and both split pickles.

    The release ships the same three files for UNLV-Dive and for smaller training sets, all subsets of
    MTL-AQA: the largest annotation file wins, then the shallowest, then path order.
    """
    complete = [
        file
        for file in annotation_files
        if all((file.parent / name).is_file() for name in SPLIT_FILES.values())
    ]
    if complete:
        return min(complete, key=lambda file: (-file.stat().st_size, len(file.parts), str(file))).parent
    how_to_point = "point `aqa preprocess PATH` at the folder that holds the MTL-AQA annotations and frames"
    if annotation_files:
        raise AqaError(
            f"{min(annotation_files)} has no {' and '.join(SPLIT_FILES.values())} beside it: "
            f"copy them from the MTL-AQA release into that folder, or {how_to_point}"
        )
    raise AqaError(
        f"no MTL-AQA annotations under {root}: looked for {ANNOTATIONS_FILE} (with "
        f"{' and '.join(SPLIT_FILES.values())} beside it) in every folder; {how_to_point}"
    )


def _is_dive_key(key: Any) -> bool:
    return isinstance(key, tuple) and len(key) == 2 and all(isinstance(number, int) for number in key)


def _not_annotations(path: Path, why: str) -> AqaError:
    return AqaError(
        f"{path} is not an MTL-AQA annotation file ({why}): use the file from the official release"
    )


def _load_records(path: Path) -> dict[tuple[int, int], dict]:
    records = load_pickle(path)
    if not isinstance(records, dict):
        raise _not_annotations(path, f"it holds a {type(records).__name__}, not a dict of dives")
    for key, record in records.items():
        if not _is_dive_key(key):
            raise _not_annotations(path, f"key {key!r} is not an (event, dive) pair")
        if not isinstance(record, dict):
            raise _not_annotations(path, f"dive {key} is a {type(record).__name__}, not a record")
        missing = [name for name in (*SCORE_FIELDS, "end_frame") if name not in record]
        if missing:
            raise _not_annotations(path, f"dive {key} lacks {', '.join(missing)}")
    return records


def _load_split(path: Path) -> set[tuple[int, int]]:
    keys = load_pickle(path)
    if not isinstance(keys, (list, tuple, set)) or not all(_is_dive_key(key) for key in keys):
        raise _not_annotations(path, "it is not a list of (event, dive) pairs")
    return set(keys)


def _record_problem(record: dict) -> str | None:
    """Why a dive's record cannot be stored as it is (scores that are not finite numbers >= 0, an end
    frame that is not a whole number from 1, fields that are not plain data), or None."""
    for name in SCORE_FIELDS:
        value = record[name]
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and value >= 0):
            return f"its {name} {value!r} is not a finite number >= 0"
    end = record["end_frame"]
    if isinstance(end, bool) or not isinstance(end, numbers.Integral) or end < 1:
        return f"its end_frame {end!r} is not a frame number (a whole number from 1)"
    try:
        json.dumps(record, sort_keys=True)  # as the store will record it
    except (TypeError, ValueError) as exc:
        return f"its fields are not plain numbers and text ({exc})"
    return None


def _dive_id(event: int, dive: int) -> str:
    return f"{event:02d}_{dive:02d}"


@dataclass
class _Scan:
    """Turns each annotated dive into a sample, remembering which sources were used for the summary."""

    root: Path
    frames: int
    tree: _Tree
    folder: Path  # of the annotation pickles
    splits: dict[str, set[tuple[int, int]]]
    used: dict[_Layout, set[str]] = field(default_factory=dict)  # source paths per layout

    def frame_source(self, key: tuple[int, int], end_frame: int) -> tuple[_Candidate, int, int] | str:
        """The dive's source and frame window (first, last exclusive), or why it has none."""
        event = key[0]
        whole_event = self.tree.best((event,))
        if whole_event and end_frame >= self.frames:
            return whole_event, end_frame - self.frames, end_frame
        per_dive = self.tree.best(key)
        if per_dive:
            return per_dive, 0, self.frames
        if whole_event:
            return (
                f"its {self.frames}-frame window ends at frame {end_frame} of {whole_event.path}, "
                "so it would start before frame 1"
            )
        return f"no video or frame folder for event {event:02d} under {self.root} (looked for {LOOKED_FOR})"

    def dive(self, key: tuple[int, int], record: dict) -> Sample | str:
        """The dive's sample, or why it cannot be stored."""
        split, problem = official_split(key, self.splits, SPLIT_FILES, self.folder)
        if problem:
            return problem
        problem = _record_problem(record)
        if problem:
            return problem
        found = self.frame_source(key, int(record["end_frame"]))
        if isinstance(found, str):
            return found
        source, first, last = found
        self.used.setdefault(source.layout, set()).add(source.path)
        extra = {name: value for name, value in record.items() if name not in SCORE_FIELDS}
        return Sample(
            id=_dive_id(*key),
            source=source.path,
            source_kind=source.layout.kind,
            first=first,
            last=last,
            score=float(record["final_score"]),
            difficulty=float(record["difficulty"]),
            split=split,
            fit="tail",
            extra={**extra, "event": key[0], "dive": key[1]},
        )

    def summary(self, records: dict, problems: int) -> str:
        """One line: what the annotations hold, and where the frames come from."""
        events = {event for event, _ in records}
        parts = [f"{len(records)} dives in {len(events)} events (annotations in {self.folder})"]
        for layout in sorted(self.used, key=lambda layout: layout.preference):
            unit = "dives" if layout is PER_DIVE else "events"
            parts.append(f"{layout.label} for {len(self.used[layout])} {unit}")
        if problems:
            parts.append(f"{problems} dives without frames or split")
        return f"MTL-AQA at {self.root}: " + "; ".join(parts)


def scan_mtl_aqa(root: Path | str, frames: int = DIVE_FRAMES) -> SourceScan:
    """One `Sample` per annotated dive under `root` (sorted by event, then dive), or a problem saying why not."""
    root = Path(root).absolute()  # sources are then valid from any working folder
    if not root.is_dir():
        raise AqaError(f"{root} is not a folder: point `aqa preprocess PATH` at the MTL-AQA folder")
    if frames < 1:
        raise AqaError(f"--frames must be at least 1, not {frames}")
    tree = _walk(root)
    folder = _annotation_folder(root, tree.annotation_files)
    records = _load_records(folder / ANNOTATIONS_FILE)
    splits = {name: _load_split(folder / file) for name, file in SPLIT_FILES.items()}
    scan = _Scan(root, frames, tree, folder, splits)
    samples: list[Sample] = []
    problems: list[tuple[str, str]] = []
    for key in sorted(records):
        dive = scan.dive(key, records[key])
        if isinstance(dive, Sample):
            samples.append(dive)
        else:
            problems.append((_dive_id(*key), dive))
    return SourceScan(KIND, scan.summary(records, len(problems)), samples, problems)
