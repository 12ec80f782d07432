"""AQA-7 (Parmar & Morris, WACV 2019), split 4: the six actions every paper uses, with their lists.

The lists are MATLAB files with one (N, 3) array: action class (1-6), sample index within the class
(1-based), final score. They are found anywhere under the root, under either name:

- `split_4_train_list.mat` / `split_4_test_list.mat` (`Seven/Split_4/` of the release, what CoRe and
  its followers read): raw scores;
- `consolidated_train_list.mat` / `consolidated_test_list.mat` (the authors' C3D-LSTM repository): the
  same split with scores x 100.

Which scale a list uses is read from its values, not its name: raw scores of split 4 are at most about
105, scores x 100 at least 800, so a list whose largest score is above `SCALED_ABOVE` is divided by 100
(and rounded to 2 decimals, removing float noise such as 1667.0000000000002); the scan says so.

Frames: each sample is a folder of images `img_NNNNN.jpg` numbered from 1, as the release ships them,
`<class>-out/<index:03d>/` (`diving-out/001/`), or the C3D-LSTM layout
`<class>_samples_lstm_103/frames/<index:03d>/` (diving: `diving_v1_samples_lstm_103`). All its frames
are the clip, fitted to the store's frame count by `--fit` (103 frames each in the release: kept as
they are). The class name is the store's `action` column; `--action NAME` keeps one action (the usual
protocol trains one model per action and averages rho with Fisher's z, as `aqa eval` reports).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aqa_cli.media.sources.base import IMAGES_SORTED, Sample, SourceScan, walk_folders
from aqa_cli.util.errors import AqaError

KIND = "aqa-7"
ACTIONS = ("diving", "gym_vault", "ski_big_air", "snowboard_big_air", "sync_diving_3m", "sync_diving_10m")
LIST_NAMES = {  # split -> file names, in order of preference
    "train": ("split_4_train_list.mat", "consolidated_train_list.mat"),
    "test": ("split_4_test_list.mat", "consolidated_test_list.mat"),
}
VARIABLES = {"train": "consolidated_train_list", "test": "consolidated_test_list"}
SCALED_ABOVE = 200.0
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_FRAME_NAME = re.compile(r"(?:img_)?(\d+)")  # the release's img_00001; plain numbers in other copies
_CLASS_FOLDERS = (
    re.compile(r"(?P<action>[a-z0-9_]+)-out"),
    re.compile(r"(?P<action>[a-z0-9_]+)_samples_lstm_\d+"),
)
_ALIASES = {"diving_v1": "diving"}
LOOKED_FOR = "<action>-out/NNN/img_NNNNN.jpg, <action>_samples_lstm_103/frames/NNN/"


def _class_folder(name: str) -> str | None:
    """The action whose samples a folder of that name holds, or None."""
    for pattern in _CLASS_FOLDERS:
        match = pattern.fullmatch(name)
        if match:
            action = _ALIASES.get(match["action"], match["action"])
            return action if action in ACTIONS else None
    return None


@dataclass
class _Tree:
    lists: dict[str, list[Path]] = field(default_factory=dict)  # file name -> paths
    classes: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # action -> (depth, folder)


def _walk(root: Path, lists_only: bool = False) -> _Tree:
    """The list files and the class folders under `root`; never lists a frame folder beyond its first
    image, and never descends into a class folder (its sample folders are looked up by name)."""
    tree = _Tree()
    names = {name for pair in LIST_NAMES.values() for name in pair}
    for depth, entries, descend in walk_folders(root):
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                descend.clear()
                break  # a frame folder
            if entry.name in names and entry.is_file():
                tree.lists.setdefault(entry.name, []).append(Path(entry.path))
            elif entry.is_dir():
                action = _class_folder(entry.name)
                if action and not lists_only:
                    tree.classes.setdefault(action, []).append((depth, entry.path))
                elif not action:
                    descend.append(entry.path)
    return tree


def find_aqa7_root(path: Path | str) -> Path | None:
    """`path` if an AQA-7 split-4 train list lies anywhere under that folder, else None."""
    path = Path(path)
    if not path.is_dir():
        return None
    tree = _walk(path, lists_only=True)
    return path if any(name in tree.lists for name in LIST_NAMES["train"]) else None


def _list_file(tree: _Tree, root: Path, split: str) -> Path:
    for name in LIST_NAMES[split]:
        if name in tree.lists:
            return min(tree.lists[name], key=lambda path: (len(path.parts), str(path)))
    raise AqaError(
        f"no AQA-7 {split} list under {root}: looked for {' or '.join(LIST_NAMES[split])}; copy it from "
        "the release (Seven/Split_4/) into the folder that holds the train list"
    )


def _not_a_list(path: Path, why: str) -> AqaError:
    return AqaError(f"{path} is not an AQA-7 split-4 list ({why}): use the list from the release")


def _read_list(path: Path, split: str) -> tuple[np.ndarray, bool]:
    """The list's rows as a float (N, 3) array, and whether its scores were x 100 (now divided)."""
    import scipy.io

    try:
        content = scipy.io.loadmat(str(path))
    except Exception as exc:  # noqa: BLE001 - scipy raises many types on files that are not MAT-files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _not_a_list(path, f"not a readable MAT-file: {reason}") from None
    variables = {name: value for name, value in content.items() if not name.startswith("__")}
    if VARIABLES[split] in variables:
        rows = variables[VARIABLES[split]]
    elif len(variables) == 1:
        rows = next(iter(variables.values()))
    else:
        raise _not_a_list(path, f"no variable {VARIABLES[split]} among {', '.join(variables) or 'none'}")
    if (
        not isinstance(rows, np.ndarray)
        or rows.ndim != 2
        or rows.shape[1] != 3
        or rows.dtype.kind not in "fiu"
    ):
        shape = getattr(rows, "shape", None)
        raise _not_a_list(path, f"its list is {shape}, not rows of (class, index, score) numbers")
    rows = rows.astype(np.float64)
    finite = rows[:, 2][np.isfinite(rows[:, 2])]
    scaled = bool(len(finite) and finite.max() > SCALED_ABOVE)
    if scaled:
        rows = rows.copy()
        rows[:, 2] = np.round(rows[:, 2] / 100, 2)
    return rows, scaled


def _row_problem(action_number: float, index: float, score: float) -> str | None:
    if not (math.isfinite(action_number) and action_number.is_integer() and 1 <= action_number <= 6):
        return f"its class {action_number:g} is not one of split 4's actions 1-6"
    if not (math.isfinite(index) and index.is_integer() and index >= 1):
        return f"its sample index {index:g} is not a whole number from 1"
    if not (math.isfinite(score) and score >= 0):
        return f"its score {score:g} is not a finite number >= 0"
    return None


def _frames_problem(folder: str) -> str | None:
    """Why a sample folder cannot be stored (no images, names other than img_NNNNN, gaps), or None."""
    try:
        names = sorted(n for n in os.listdir(folder) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
    except OSError as exc:
        return f"cannot read its frame folder {folder} ({exc.strerror or exc})"
    if not names:
        return f"its frame folder {folder} holds no images"
    numbers = []
    for name in names:
        match = _FRAME_NAME.fullmatch(os.path.splitext(name)[0])
        if not match:
            return f"its frame folder {folder} holds {name!r}, not named by frame number (img_NNNNN.jpg)"
        numbers.append(int(match[1]))
    base = 0 if numbers[0] == 0 else 1
    if numbers != list(range(base, base + len(numbers))) and sorted(numbers) == list(
        range(base, base + len(numbers))
    ):
        return (
            f"its frame folder {folder} holds frames whose names sort out of frame order (numbers of "
            "different widths); name them with the same number of digits (img_00001.jpg ...)"
        )
    if numbers != list(range(base, base + len(numbers))):
        missing = sorted(set(range(base, max(numbers) + 1)) - set(numbers))
        first = f"frame {missing[0]}" if missing else "none, but a number occurs twice"
        return (
            f"its frame folder {folder} holds {len(numbers)} frames that are not numbered {base} ... "
            f"{base + len(numbers) - 1} without gaps (first missing: {first}); extract the sample again"
        )
    return None


def scan_aqa7(root: Path | str, fit: str, action: str | None = None) -> SourceScan:
    """One `Sample` per row of the split-4 lists (by action, then index), or a problem saying why not;
    with `action`, only that action's rows."""
    root = Path(root).absolute()
    if not root.is_dir():
        raise AqaError(f"{root} is not a folder: point `aqa preprocess PATH` at the AQA-7 folder")
    if action is not None and action not in ACTIONS:
        raise AqaError(f"unknown --action {action!r}: AQA-7's split 4 has {', '.join(ACTIONS)}")
    tree = _walk(root)
    files = {split: _list_file(tree, root, split) for split in LIST_NAMES}
    listed: dict[tuple[int, int], list[tuple[str, float]]] = {}
    scaled = []
    problems: list[tuple[str, str]] = []
    for split, path in files.items():
        rows, was_scaled = _read_list(path, split)
        if was_scaled:
            scaled.append(path.name)
        for line, (number, index, score) in enumerate(rows.tolist(), start=1):
            problem = _row_problem(number, index, score)
            if problem:
                problems.append((f"{path.name} row {line}", f"{path} row {line}: {problem}"))
                continue
            listed.setdefault((int(number), int(index)), []).append((split, score))
    samples: list[Sample] = []
    for (number, index), entries in sorted(listed.items()):
        name = ACTIONS[number - 1]
        if action is not None and name != action:
            continue
        sample_id = f"{name}/{index:03d}"
        if len(entries) > 1:
            where = " and ".join(f"the {split} list" for split, _ in entries)
            problems.append(
                (sample_id, f"it is listed {len(entries)} times ({where}), so its split is unknown")
            )
            continue
        split, score = entries[0]
        folders = sorted(tree.classes.get(name, ()))
        folder = next(
            (
                path
                for _, base in folders
                for name in dict.fromkeys((f"{index:03d}", str(index)))  # the release pads to 3 digits
                for path in (os.path.join(base, name), os.path.join(base, "frames", name))
                if os.path.isdir(path)
            ),
            None,
        )
        if folder is None:
            problems.append((sample_id, f"no frame folder for it under {root} (looked for {LOOKED_FOR})"))
            continue
        problem = _frames_problem(folder)
        if problem:
            problems.append((sample_id, problem))
            continue
        samples.append(
            Sample(
                id=sample_id,
                source=folder,
                source_kind=IMAGES_SORTED,
                score=score,
                split=split,
                fit=fit,
                extra={"action_class": number, "sample_index": index},
                action=name,
            )
        )
    kept = f"action {action}" if action else f"{len({s.action for s in samples})} actions"
    scale = f"; scores x 100 in {', '.join(scaled)}: divided by 100" if scaled else ""
    description = (
        f"AQA-7 split 4 at {root}: {len(samples)} samples of {kept} (lists {files['train']} and "
        f"{files['test'].name}{scale})"
    )
    if problems:
        description += f"; {len(problems)} without frames or split"
    notices = [f"the scores of {', '.join(scaled)} are x 100: divided by 100"] if scaled else []
    return SourceScan(KIND, description, samples, problems, notices)
