"""CSV manifest: `path,score,difficulty,split[,id][,start,end][,action]`, one row per clip.

- `path`: a video file or a folder of frame images (sorted names), relative to the CSV's folder or absolute.
- `score`: the judges' score (empty: unlabeled). `difficulty`: optional column, may be empty.
- `split`: train, val or test (empty: unlabeled).
- `id`: optional, unique; default the path without its suffix.
- `start`, `end`: optional frame range, 0-based decode indices with `end` exclusive (Python slicing);
  either may be empty (the start / the end of the video).
- `action`: optional, the clip's action or dive number (the store's `action` column; empty: unknown).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

from aqa_cli.media.sources.base import IMAGES_SORTED, SPLITS, VIDEO, Sample, SourceScan
from aqa_cli.util.errors import AqaError

REQUIRED = ("path", "score", "split")
KNOWN = (*REQUIRED, "difficulty", "id", "start", "end", "action")


def scan_manifest(csv_path: Path, fit: str) -> SourceScan:
    """Read a manifest; rows that are wrong become problems (id, reason), the rest samples."""
    base = csv_path.parent
    samples: list[Sample] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for line, row in _read_rows(csv_path):
        path_text = (row.get("path") or "").strip()
        sample_id = (row.get("id") or "").strip() or _default_id(path_text)
        try:
            if not path_text:
                raise ValueError("empty path")
            if not sample_id.isprintable():
                raise ValueError(f"id {sample_id!r} holds control characters")
            if sample_id in seen:
                raise ValueError(f"duplicate id {sample_id!r}")
            path = (base / path_text).resolve()
            score = _number(row, "score", allow_empty=True)
            difficulty = _number(row, "difficulty", allow_empty=True)
            split = (row.get("split") or "").strip().lower() or "unlabeled"
            if split not in SPLITS:
                raise ValueError(f"unknown split {split!r} (use train, val or test)")
            if split != "unlabeled" and math.isnan(score):
                raise ValueError(f"split {split} needs a score")
            first, last = _frame(row, "start"), _frame(row, "end")
            action = (row.get("action") or "").strip()
            if not action.isprintable():
                raise ValueError(f"action {action!r} holds control characters")
            if first is not None and last is not None and last <= first:
                raise ValueError(f"end {last} must be greater than start {first}")
        except ValueError as exc:
            problems.append((sample_id or f"line {line}", f"{csv_path.name} line {line}: {exc}"))
            continue
        seen.add(sample_id)
        samples.append(
            Sample(
                id=sample_id,
                source=str(path),
                source_kind=IMAGES_SORTED if path.is_dir() else VIDEO,
                first=first,
                last=last,
                score=score,
                difficulty=difficulty,
                split=split,
                fit=fit,
                action=action,
            )
        )
    if not samples and not problems:
        raise AqaError(f"{csv_path} has a header but no rows")
    description = f"CSV manifest {csv_path.resolve()}: {len(samples)} clips"
    return SourceScan("manifest", description, samples, problems)


def _default_id(path_text: str) -> str:
    """The path without its suffix (a path with no file name, like `.` or `/`, as it is)."""
    path = Path(path_text)
    return str(path.with_suffix("")) if path.name else path_text


def _read_rows(csv_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for every row, read as a stream (a huge manifest is never held whole)."""
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as file:
            reader = csv.DictReader(file)
            columns = [c.strip().lower() for c in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED if c not in columns]
            if missing:
                raise AqaError(
                    f"{csv_path} lacks column(s) {', '.join(missing)}; a manifest needs a header "
                    f"path,score,split (optional: difficulty,id,start,end,action), found: "
                    f"{', '.join(columns) or 'no header'}"
                )
            reader.fieldnames = columns
            for row in reader:
                yield reader.line_num, row
    except FileNotFoundError:
        raise AqaError(f"manifest not found: {csv_path}") from None
    except UnicodeDecodeError as exc:
        raise AqaError(
            f"{csv_path} is not UTF-8 text ({exc.reason} at byte {exc.start}): save it as UTF-8"
        ) from None
    except csv.Error as exc:
        raise AqaError(f"{csv_path} is not a readable CSV file ({exc}, line {reader.line_num})") from None


def _number(row: dict[str, str], column: str, allow_empty: bool) -> float:
    text = (row.get(column) or "").strip()
    if not text and allow_empty:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{column} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{column} {text!r} must be a finite number >= 0")
    return value


def _frame(row: dict[str, str], column: str) -> int | None:
    text = (row.get(column) or "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{column} {text!r} is not a whole frame number") from None
    if value < 0:
        raise ValueError(f"{column} {value} is negative")
    return value
