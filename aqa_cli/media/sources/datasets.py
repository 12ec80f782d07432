"""Which published dataset a folder holds (FineDiving, AQA-7), detected from its annotation files.

MTL-AQA, CSV manifests and plain folders are recognised by `aqa_cli.pipelines.preprocess.resolve_source` after
these: a root holding FineDiving's annotations is FineDiving even where MTL-AQA's files lie beside them
(its scan then says how the two splits cross).
"""

from __future__ import annotations

from pathlib import Path

from aqa_cli.media.sources.base import SourceScan
from aqa_cli.util.errors import AqaError


def resolve_dataset(
    source: Path | None, frames: int, fit: str, action: str | None
) -> tuple[SourceScan, str] | None:
    """The scan of a FineDiving or AQA-7 root and its default store name, or None if `source` is neither."""
    from aqa_cli.media.sources.aqa7 import find_aqa7_root, scan_aqa7
    from aqa_cli.media.sources.finediving import find_finediving_root, scan_finediving

    if source is None or not source.is_dir():
        return None
    finediving = find_finediving_root(source)
    aqa7 = find_aqa7_root(source)
    if finediving and aqa7:
        raise AqaError(
            f"{source} holds both FineDiving and AQA-7 annotations: point `aqa preprocess` at the folder "
            "of one of them"
        )
    if finediving:
        scan = scan_finediving(finediving, frames, fit, action)
        return scan, "finediving" if action is None else f"finediving_{action}"
    if aqa7:
        return scan_aqa7(aqa7, fit, action), "aqa7" if action is None else f"aqa7_{action}"
    return None
