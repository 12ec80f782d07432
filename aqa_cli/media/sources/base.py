"""What every source adapter yields: one `Sample` per stored clip, all fed to the same writer."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "test", "unlabeled")

# How a sample's frames are found on disk.
VIDEO = "video"  # a video file PyAV opens (mp4, avi, mkv, webm, mov, gif, ...)
IMAGES_SORTED = "images-sorted"  # a folder of images; frame i (0-based) is the i-th file in sorted order
IMAGES_NUMBERED = (
    "images-numbered"  # a folder of images named by 1-based frame number: frame i is f"{i+1}.jpg"
)


@dataclass
class Sample:
    """One clip to store.

    `first`/`last` are 0-based frame indices in decode order (`last` exclusive); None means the start
    or the end of the source. `fit` says how the clip becomes the store's fixed frame count (see
    `aqa_cli.media.fitting.stored_indices`): MTL-AQA uses 'tail' (the frames ending at the dive's last
    frame), other sources the user's --fit.
    """

    id: str
    source: str
    source_kind: str = VIDEO
    first: int | None = None
    last: int | None = None
    score: float = math.nan
    difficulty: float = math.nan
    split: str = "unlabeled"
    fit: str | None = None
    extra: dict = field(default_factory=dict)
    action: str = ""  # the store's `action` column: AQA-7's action, FineDiving's dive number ("": unknown)
    # A label per source frame first ... last-1 (FineDiving's sub-action ids), or None: the store keeps
    # the labels of the frames it stores (`frame_labels`).
    frame_labels: list[int] | None = None


@dataclass
class SourceScan:
    """What an adapter found: the samples to store, and those it could not (id, one-line reason)."""

    kind: str  # "mtl-aqa" | "manifest" | "folder"
    description: str  # one line for the store's attributes and the report, e.g. "MTL-AQA at /data/mtl"
    samples: list[Sample]
    problems: list[tuple[str, str]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # one line each, printed by preprocess (e.g. overlaps)


def walk_folders(root: Path | str) -> Iterator[tuple[int, Iterator[os.DirEntry], list[str]]]:
    """Every folder the caller descends into below `root` (itself first), each once (a linked folder is
    followed once): yields (depth, its entries, descend), and the caller appends to `descend` the paths
    of the subfolders to visit. Unreadable folders are skipped; a caller that reads only the first
    entries of a huge frame folder never lists it in full."""
    pending, visited = [(str(root), 0)], set()
    while pending:
        folder, depth = pending.pop()
        real = os.path.realpath(folder)
        if real in visited:
            continue
        visited.add(real)
        try:
            scanned = os.scandir(folder)
        except OSError:
            continue  # an unreadable folder holds nothing we can use
        descend: list[str] = []
        with scanned as entries:
            yield depth, entries, descend
        pending.extend((path, depth + 1) for path in descend)


def official_split(
    key: object, splits: dict[str, set], files: dict[str, str], folder: Path
) -> tuple[str, str]:
    """(split, "") for a sample listed in exactly one of the official split files, else ("", why): the
    official split is the one every paper uses, so a sample listed in none or several is not stored."""
    listed_in = [name for name, keys in splits.items() if key in keys]
    if len(listed_in) == 1:
        return listed_in[0], ""
    named = [files[name] for name in listed_in] or [f"neither {' nor '.join(files.values())}"]
    return "", f"it is listed in {' and '.join(named)} in {folder}, so its split is unknown"
