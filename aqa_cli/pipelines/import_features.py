"""`aqa features import`: per-video clip-feature files (.npy) plus a label file -> a feature store.

Accepted inputs (README, "Training on cached features"):

- features: one `<id>.npy` per video, a plain numeric array of shape (clips, dim) (or (dim,), one clip);
  any dim, any number of clips. Read with `allow_pickle=False`: a file holding Python objects is refused.
- labels: text files, fields separated by commas, tabs or whitespace (detected from the first line),
  one video per line. The id is the column named `id` (else the first column); a column named `split`
  (train/val/test) gives the split, else the file's name does (`train.txt`, `val.csv`, `test.tsv`); a
  column named `difficulty` is the difficulty; a column named `action` or `dive_number` is the sample's
  action (text: AQA-7's action, FineDiving's dive number; contrastive heads match exemplars by it); every
  other column is a score column (a possible training target; the first is the default). A header line is recognised by a non-numeric second field.
  Headerless files take their names from `--columns`; without it, one value column is `score`, and three
  are the GDLT Fis-V layout `id TES PCS deductions`.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aqa_cli.stores.feature_store import DTYPES, FeatureLabels, write_feature_store
from aqa_cli.util.errors import AqaError
from aqa_cli.util.safe_output import output_lock

SPLITS = ("train", "val", "test")
LABEL_SUFFIXES = (".txt", ".csv", ".tsv")
GDLT_FISV_COLUMNS = ("TES", "PCS", "deductions")
ACTION_COLUMNS = ("action", "dive_number")
"""Label columns read as the sample's action (text), not as a score."""


@dataclass
class LabelTable:
    """Rows of the label files, in file order."""

    files: list[Path]
    columns: list[str]  # all columns: id, then the file's order
    ids: list[str]
    splits: list[str]
    values: dict[str, list[float]]  # every column but id, split and the action
    actions: list[str] | None = None  # the `action` or `dive_number` column, when there is one


@dataclass
class ImportReport:
    out: Path
    samples: int
    feature_dim: int
    clips: tuple[int, int]  # fewest and most clips per video
    score_columns: list[str]
    splits: dict[str, int]
    seconds: float


def import_features(
    source: Path,
    out: Path | None = None,
    label_files: list[Path] | None = None,
    features_dir: Path | None = None,
    columns: list[str] | None = None,
    dtype: str = "float16",
) -> ImportReport:
    """Write a feature store from `<id>.npy` files and label files (see the module docstring)."""
    started = time.perf_counter()
    if dtype not in DTYPES:
        raise AqaError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    source = Path(source)
    if not source.is_dir():
        raise AqaError(f"{source} is not a folder; give the folder that holds the label files and .npy files")
    files = label_files or find_label_files(source)
    table = read_labels(files, columns)
    directory = features_dir or find_features_dir(source)
    paths = [directory / f"{sample_id}.npy" for sample_id in table.ids]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise AqaError(
            f"{len(missing)} of {len(paths)} labelled videos have no feature file in {directory} (e.g. "
            f"{missing[0].name}); pass --features-dir, or remove them from the labels"
        )
    shapes = [_npy_shape(path) for path in paths]
    dims = {shape[-1] for shape in shapes}
    if len(dims) > 1:
        odd = next(path for path, shape in zip(paths, shapes, strict=True) if shape[-1] != shapes[0][-1])
        raise AqaError(
            f"{odd} has features of width {_npy_shape(odd)[-1]} but {paths[0].name} has {shapes[0][-1]}: "
            "all videos need the same feature dim"
        )
    clips = np.array([shape[0] if len(shape) == 2 else 1 for shape in shapes], dtype=np.int32)
    dim = dims.pop()
    difficulty = table.values.get("difficulty", [math.nan] * len(table.ids))
    scores = {name: np.array(values) for name, values in table.values.items() if name != "difficulty"}
    if not scores:
        raise AqaError(f"{files[0]} has no score column besides id, split and difficulty; add one")
    labels = FeatureLabels(
        table.ids, table.splits, np.array(difficulty, dtype=np.float64), scores, table.actions
    )
    out = Path(out) if out is not None else Path("data") / f"{source.resolve().name}.features.h5"
    out.parent.mkdir(parents=True, exist_ok=True)
    attributes = {
        "source_kind": "import",
        "source_description": f"{len(paths)} videos' clip features from {directory.resolve()}",
        "default_target": next(iter(scores)),
        "dtype": dtype,
        "views": [{"shift": 0, "flip": False}],
        "source": {
            "features_dir": str(directory.resolve()),
            "label_files": [str(Path(f).resolve()) for f in table.files],
            "columns": table.columns,
        },
    }
    with output_lock(out):
        write_feature_store(
            out,
            attributes,
            labels,
            clips,
            (1, int(clips.max()), dim),
            dtype,
            (_load_features(path, dtype)[None, None] for path in paths),
        )
    return ImportReport(
        out=out,
        samples=len(paths),
        feature_dim=dim,
        clips=(int(clips.min()), int(clips.max())),
        score_columns=list(scores),
        splits={split: table.splits.count(split) for split in SPLITS if split in table.splits},
        seconds=time.perf_counter() - started,
    )


def find_label_files(source: Path) -> list[Path]:
    """train/val/test lists in `source` (any of .txt .csv .tsv), else one labels.* file with a split column."""
    per_split = [
        source / f"{split}{suffix}"
        for split in SPLITS
        for suffix in LABEL_SUFFIXES
        if (source / f"{split}{suffix}").is_file()
    ]
    if per_split:
        return per_split
    single = [
        source / f"labels{suffix}" for suffix in LABEL_SUFFIXES if (source / f"labels{suffix}").is_file()
    ]
    if len(single) == 1:
        return single
    raise AqaError(
        f"{source} has no label files: put train.txt/test.txt (and val.txt) or one labels.csv with a split "
        "column there, or pass --labels FILE"
    )


def find_features_dir(source: Path) -> Path:
    """`source` itself if it holds .npy files, else its only subfolder that does."""
    if any(source.glob("*.npy")):
        return source
    candidates = sorted(
        folder for folder in source.iterdir() if folder.is_dir() and any(folder.glob("*.npy"))
    )
    if len(candidates) != 1:
        found = ", ".join(folder.name for folder in candidates) or "none"
        raise AqaError(
            f"cannot tell which folder of {source} holds the <id>.npy files (candidates: {found}); "
            "pass --features-dir"
        )
    return candidates[0]


def read_labels(files: list[Path], columns: list[str] | None = None) -> LabelTable:
    """Parse label files (the formats in the module docstring) into one table."""
    table: LabelTable | None = None
    for path in files:
        names, rows = _read_label_file(Path(path), columns)
        if table is None:
            value_names = [name for name in names[1:] if name.lower() not in ("split", *ACTION_COLUMNS)]
            action_names = [name for name in names[1:] if name.lower() in ACTION_COLUMNS]
            if len(action_names) > 1:
                raise AqaError(
                    f"{path} has both {' and '.join(action_names)} columns: keep one (the sample's action)"
                )
            table = LabelTable([], names, [], [], {_canonical(name): [] for name in value_names})
            table.actions = [] if action_names else None
        elif names != table.columns:
            raise AqaError(
                f"{path} has columns {', '.join(names)} but {table.files[0]} has {', '.join(table.columns)}; "
                "give all label files the same columns"
            )
        table.files.append(Path(path))
        split_index = _index_of(names, "split")
        split_from_name = Path(path).stem.lower()
        for line_number, fields in rows:
            split = fields[split_index].lower() if split_index is not None else split_from_name
            if split not in SPLITS:
                where = "its split column" if split_index is not None else "its file name"
                raise AqaError(
                    f"{path}:{line_number}: split {split!r} (from {where}) is not one of {', '.join(SPLITS)}"
                )
            table.ids.append(fields[0])
            table.splits.append(split)
            for name, value in zip(names[1:], fields[1:], strict=True):
                if name.lower() in ACTION_COLUMNS:
                    table.actions.append(value)
                elif name.lower() != "split":
                    table.values[_canonical(name)].append(_number(value, path, line_number, name))
    seen: set[str] = set()
    for sample_id in table.ids:
        if sample_id in seen:
            raise AqaError(f"video id {sample_id} is listed more than once in {', '.join(map(str, files))}")
        seen.add(sample_id)
    if not table.ids:
        raise AqaError(f"{', '.join(map(str, files))}: no labelled videos found")
    return table


def _read_label_file(path: Path, columns: list[str] | None) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(column names with the id first, [(line number, fields with the id first)])."""
    try:
        lines = [(n, line.strip()) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise AqaError(f"cannot read label file {path}: {exc}") from None
    if not lines:
        raise AqaError(f"label file {path} is empty")
    first = lines[0][1]
    delimiter = "," if "," in first else "\t" if "\t" in first else None
    rows = [(n, _fields(line, delimiter)) for n, line in lines]
    header = len(rows[0][1]) > 1 and not _is_number(rows[0][1][1])
    if header:
        names, rows = rows[0][1], rows[1:]
    else:
        names = list(columns) if columns else _default_columns(len(rows[0][1]), path)
    id_index = _index_of(names, "id") or 0
    order = [id_index, *[i for i in range(len(names)) if i != id_index]]
    for n, fields in rows:
        if len(fields) != len(names):
            raise AqaError(f"{path}:{n}: {len(fields)} fields, expected {len(names)} ({' '.join(names)})")
    return [names[i] for i in order], [(n, [fields[i] for i in order]) for n, fields in rows]


def _fields(line: str, delimiter: str | None) -> list[str]:
    fields = next(csv.reader([line], delimiter=delimiter)) if delimiter else line.split()
    return [field.strip() for field in fields]


def _default_columns(fields: int, path: Path) -> list[str]:
    if fields == 2:
        return ["id", "score"]
    if fields == 1 + len(GDLT_FISV_COLUMNS):
        return ["id", *GDLT_FISV_COLUMNS]
    raise AqaError(
        f"{path} has no header line and {fields} fields per line: name them with --columns "
        "(e.g. --columns id,score,difficulty) or add a header line"
    )


def _index_of(names: list[str], wanted: str) -> int | None:
    lowered = [name.lower() for name in names]
    return lowered.index(wanted) if wanted in lowered else None


def _canonical(name: str) -> str:
    return "difficulty" if name.lower() == "difficulty" else name


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _number(text: str, path: Path, line: int, column: str) -> float:
    if text == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise AqaError(f"{path}:{line}: {column} {text!r} is not a number") from None


def _npy_shape(path: Path) -> tuple[int, ...]:
    """The array's shape, read from the .npy header only."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise AqaError(f"{path} is not a plain numeric .npy array ({exc}); save it with np.save") from None
    if array.ndim not in (1, 2) or array.shape[0] == 0 or array.shape[-1] == 0:
        raise AqaError(f"{path} holds an array of shape {array.shape}; expected (clips, dim) or (dim,)")
    if array.dtype.kind not in "fiu":
        raise AqaError(f"{path} holds {array.dtype} values; expected numbers")
    return array.shape


def _load_features(path: Path, dtype: str) -> np.ndarray:
    array = np.load(path, allow_pickle=False)
    features = np.atleast_2d(array).astype(dtype)
    if not np.isfinite(features).all():
        hint = " (values too large for float16: use --dtype float32)" if np.isfinite(array).all() else ""
        raise AqaError(f"{path} holds NaN or infinite values{hint}; fix or remove that video")
    return features
