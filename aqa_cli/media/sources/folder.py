"""A folder of unlabeled videos (for scoring later): every video file, and every folder of frame images."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from aqa_cli.media.sources.base import IMAGES_SORTED, VIDEO, Sample, SourceScan
from aqa_cli.util.errors import AqaError

VIDEO_SUFFIXES = {
    ".mp4",
    ".m4v",
    ".mov",
    ".avi",
    ".mkv",
    ".webm",
    ".gif",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".flv",
    ".ts",
    ".mts",
    ".3gp",
    ".ogv",
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def scan_folder(folder: Path, fit: str) -> SourceScan:
    """All videos below `folder` (recursively), plus each folder that directly holds frame images."""
    samples = []
    for directory, subdirs, files in os.walk(folder):
        subdirs.sort()
        here = Path(directory)
        if any(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in files):
            samples.append(_sample(folder, here, IMAGES_SORTED, fit))
        for name in sorted(files):
            if Path(name).suffix.lower() in VIDEO_SUFFIXES:
                samples.append(_sample(folder, here / name, VIDEO, fit))
    if not samples:
        raise AqaError(
            f"no videos or frame folders found under {folder} (looked for {', '.join(sorted(VIDEO_SUFFIXES))} "
            "files and folders of images); point preprocess at a CSV manifest, an MTL-AQA root or a video folder"
        )
    ids = Counter(sample.id for sample in samples)
    for sample in samples:  # a.mp4 beside a.mkv (or a folder a/): the videos keep their suffix
        if ids[sample.id] > 1 and sample.source_kind == VIDEO:
            sample.id += Path(sample.source).suffix
    return SourceScan("folder", f"folder of videos {folder.resolve()}: {len(samples)} clips", samples)


def _sample(root: Path, path: Path, kind: str, fit: str) -> Sample:
    relative = path.relative_to(root)
    sample_id = (
        str(relative.with_suffix(""))
        if kind == VIDEO
        else (str(relative) if str(relative) != "." else root.name)
    )
    return Sample(id=sample_id, source=str(path.resolve()), source_kind=kind, fit=fit)
