"""`aqa experiment`: the paper's Tables I and II as one command, over a grid of runs.

The grid is depths x conv types x clip lengths x aggregations x targets x seeds. By default the backbone
is frozen: each (depth, conv, clip) cell is extracted once (`aqa extract`, resumable) and every
aggregation and seed trains only the heads on those features; `--finetune` trains each run end to end.
On a given feature store (`--features`, e.g. imported ones) the grid is aggregations x targets x seeds.
In the frozen modes a ridge regression on mean-pooled features is measured next to the heads.

Every run selects its model on validation (held out from train by `val_fraction`, drawn by the seed) and
is evaluated on the test split once, at the end. A failed run is recorded with its error and the others
go on. Rerunning with the same `--out` reuses finished extractions and runs and resumes unfinished ones.
An ensemble (`ensemble = N` in the train settings) counts as one run: run k trains the members of seeds
kN .. kN+N-1, so the seeds' ensembles share no member. `resplit` measures every run and the ridge on a
re-drawn train/test partition.

With `--folds K` the grid is run K times per seed, once per fold of a K-fold split of train (drawn by
a fixed seed, `data.splits.FOLD_SEED`): each run trains on the other folds, selects on and is measured
on its held-out fold (the last epoch's rho there: no selection on the number reported), and the test
split is never used; the table reports rho mean ± std over folds x seeds, and no ridge column.

Output folder: experiment.toml (the resolved grid: `aqa experiment --config` repeats it), results.csv
(one line per run), table.md / table.csv (rho mean +- std over seeds, and R-l2, per cell), table.png,
features/ and runs/.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from itertools import product
from pathlib import Path
from typing import Protocol

import numpy as np

from aqa_cli.checkpoints.io import LAST, RUNS_DIR, load_checkpoint
from aqa_cli.evaluation.evaluate import evaluate_checkpoint
from aqa_cli.evaluation.plots import plot_experiment
from aqa_cli.evaluation.ridge import ridge_baseline
from aqa_cli.models.pretrained import read_weights
from aqa_cli.models.registry import weights_path
from aqa_cli.pipelines.options import ExperimentGrid
from aqa_cli.training.config import (
    TrainConfig,
    preset_fixed,
    read_toml,
    resolve_config,
    resolve_head_defaults,
)
from aqa_cli.training.dispatch import train
from aqa_cli.training.heads import with_target
from aqa_cli.training.loop import check_optimisation
from aqa_cli.util.errors import AqaError
from aqa_cli.util.safe_output import OutputError, atomic_write, writer_lock

RIDGE = "ridge"


def resolve_grid(config_file: Path | None, options: dict) -> ExperimentGrid:
    """Defaults < the TOML file < options given (None or [] = not given). Options that are not grid
    settings are train settings (the file's [train] table), checked like `aqa train`'s."""
    values = read_toml(config_file) if config_file is not None else {}
    known = {item.name for item in dataclasses.fields(ExperimentGrid)}
    train_known = {item.name for item in dataclasses.fields(TrainConfig)}
    given = {key: value for key, value in options.items() if value not in (None, [])}
    values.update({key: value for key, value in given.items() if key in known})
    train = {**values.get("train", {}), **{key: value for key, value in given.items() if key not in known}}
    unknown = sorted(set(values) - known) + sorted(set(train) - train_known)
    if unknown:
        raise AqaError(f"{config_file}: unknown setting(s) {', '.join(unknown)}; see `aqa experiment --help`")
    resolved = resolve_config(None, train)  # mistyped or impossible train settings fail here, before any work
    fixed = preset_fixed(resolved.preset)
    if fixed and not values.get("agg"):
        values["agg"] = [fixed["agg"]]  # the preset's head, unless --agg is given
    train = {**{name: value for name, value in fixed.items() if name != "agg"}, **train}  # recorded
    for agg in values.get("agg") or ExperimentGrid().agg:
        check_optimisation(resolve_head_defaults(dataclasses.replace(resolved, agg=agg)))
    grid = ExperimentGrid(**{**values, "train": {key: getattr(resolved, key) for key in train}})
    if grid.seeds < 1:
        raise AqaError("--seeds must be at least 1")
    if grid.folds == 1 or grid.folds < 0:
        raise AqaError("--folds must be at least 2 (or 0: off)")
    if grid.finetune and grid.features:
        raise AqaError("--finetune trains from videos; it cannot be combined with --features")
    return grid


@dataclass(frozen=True)
class Cell:
    """One row of the table: the backbone and clip length (or the feature store) and the target."""

    depth: int | None
    conv: str | None
    clip: int | None
    target: str

    @property
    def name(self) -> str:
        parts = [f"{self.conv}{self.depth}-clip{self.clip}"] if self.depth is not None else ["features"]
        return "-".join(parts + ([self.target] if self.target else []))


@dataclass
class RunResult:
    cell: Cell
    agg: str
    seed: int
    fold: int | None = None  # with --folds
    rho: float = math.nan
    r_l2: float = math.nan
    epoch: int | None = None  # the selected epoch (ridge: None)
    seconds: float = 0.0
    run_dir: str = ""
    error: str = ""


class ExperimentReporter(Protocol):
    """How `run_experiment` tells about progress (the CLI prints; tests may pass nothing)."""

    def extraction(self, name: str) -> AbstractContextManager[Callable[[str, int, int], None]]:
        """A context giving the `progress` callback of one `extract_features`."""

    def finished(self, result: RunResult, done: int, total: int) -> None: ...


def run_experiment(grid: ExperimentGrid, reporter: ExperimentReporter | None = None) -> dict:
    """Run the grid (see the module docstring); returns the paths written and every run's result."""
    out = Path(grid.out) if grid.out else RUNS_DIR / f"experiment-{datetime.now():%Y%m%d-%H%M%S}"
    with writer_lock(out / "experiment.lock", out):  # one process writes an experiment at a time
        return _run_grid(grid, out, reporter)


def _run_grid(grid: ExperimentGrid, out: Path, reporter: ExperimentReporter | None) -> dict:
    atomic_write(out / "experiment.toml", dataclasses.replace(grid, out=str(out)).to_toml())
    train_settings = TrainConfig(**grid.train)
    cells = _cells(grid)
    aggregations = list(grid.agg) + ([] if grid.finetune or grid.folds else [RIDGE])
    folds: list[int | None] = list(range(grid.folds)) if grid.folds else [None]
    total = len(cells) * len(aggregations) * grid.seeds * len(folds)
    results: list[RunResult] = []
    features_for: dict[tuple, str | Exception] = {}
    for cell in cells:
        for agg, fold, seed in product(aggregations, folds, range(grid.seeds)):
            started = time.perf_counter()
            result = RunResult(cell, agg, seed, fold)
            try:
                if grid.finetune:
                    _finetune(grid, cell, agg, seed, out, result)
                else:
                    features = _features_of(grid, cell, out, features_for, reporter)
                    if agg == RIDGE:
                        found = ridge_baseline(
                            features, cell.target, train_settings.val_fraction, seed, train_settings.resplit
                        )
                        result.rho, result.r_l2 = found["rho"], found["r_l2"]
                    else:
                        _train_heads(grid, features, cell.target, agg, seed, out, result)
            except (KeyboardInterrupt, OutputError):  # a full or read-only disk fails every run: stop
                raise
            except Exception as exc:  # noqa: BLE001 - a failed run is reported and the grid goes on
                message = str(exc) if isinstance(exc, AqaError) else f"{type(exc).__name__}: {exc}"
                result.error = " ".join(message.split())
            result.seconds = round(time.perf_counter() - started, 2)
            results.append(result)
            _write_results(out / "results.csv", results)
            if reporter is not None:
                reporter.finished(result, len(results), total)
    summary = summarize(results, aggregations)
    mode = "end-to-end fine-tuning" if grid.finetune else "frozen features"
    title = f"aqa experiment ({mode}): test Spearman rho, mean ± std over {grid.seeds} seed(s)"
    if grid.folds:
        title = (
            f"aqa experiment ({mode}): {grid.folds}-fold cross-validation inside train, held-out-fold "
            f"Spearman rho, mean ± std over {grid.folds} folds x {grid.seeds} seed(s) (test not used)"
        )
    if train_settings.resplit:
        title += f"; train/test re-drawn by --resplit {train_settings.resplit}"
    atomic_write(out / "table.md", markdown_table(summary, aggregations, title, results))
    atomic_write(out / "table.csv", _csv_text(summary))
    plot = plot_experiment(summary, aggregations, title, out / "table.png")
    return {"out": out, "results": results, "summary": summary, "aggregations": aggregations, "plot": plot}


def _cells(grid: ExperimentGrid) -> list[Cell]:
    if grid.features:
        return [Cell(None, None, None, target) for target in grid.target]
    return [
        Cell(depth, conv, clip, target)
        for depth, conv, clip, target in product(grid.depth, grid.conv, grid.clip, grid.target)
    ]


def _features_of(
    grid: ExperimentGrid, cell: Cell, out: Path, done: dict, reporter: ExperimentReporter | None
) -> str:
    """The cell's feature store: the given one, or the cell's extraction (once; a failure is kept)."""
    if grid.features:
        return grid.features
    key = (cell.depth, cell.conv, cell.clip)
    if key not in done:
        from aqa_cli.pipelines.extract import extract_features
        from aqa_cli.pipelines.options import ExtractOptions

        train = TrainConfig(**grid.train)
        options = ExtractOptions(
            store=train.store,
            out=str(out / "features" / f"{cell.conv}{cell.depth}-clip{cell.clip}.features.h5"),
            depth=cell.depth,
            conv=cell.conv,
            clip=cell.clip,
            family=train.family,
            normalization=train.normalization,
            frames=train.frames,
            crop=train.crop,
            views=grid.views,
            device=train.device,
            precision=train.precision,
            workers=train.workers,
        )
        try:
            options.weights = weights_for(cell, grid.weights)
            Path(options.out).parent.mkdir(parents=True, exist_ok=True)
            with reporter.extraction(cell.name) if reporter else nullcontext(None) as progress:
                done[key] = str(extract_features(options, progress).out)
        except OutputError:
            raise
        except AqaError as exc:
            done[key] = exc
    if isinstance(done[key], Exception):
        raise done[key]
    return done[key]


def weights_for(cell: Cell, files: list[str]) -> str:
    """The --weights file for a cell: the one holding a ResNet of the cell's depth and conv type; among
    several, the one named for the clip length (`clip32`), else the one naming none. No files at all:
    "" (random initialisation)."""
    if not files:
        return ""
    held = {value: read_weights(weights_path(value)) for value in files}  # a name: its cached file
    matches = [path for path, w in held.items() if (w.depth, w.conv) == (cell.depth, cell.conv)]
    if len(matches) > 1:
        named = [path for path in matches if f"clip{cell.clip}" in held[path].path.name]
        unnamed = [path for path in matches if not re.search(r"clip\d+", held[path].path.name)]
        matches = named or unnamed
    if len(matches) != 1:
        which = "no" if not matches else "more than one"
        raise AqaError(
            f"{which} --weights file holds a {cell.conv} ResNet-{cell.depth} for {cell.clip}-frame clips; "
            "give one per cell (name clip-specific files ...clip<N>...)"
        )
    return matches[0]


def _run_dir(out: Path, cell: Cell, agg: str, seed: int, fold: int | None = None) -> Path:
    folded = "" if fold is None else f"-fold{fold}"
    return out / "runs" / f"{cell.name}-{agg}{folded}-seed{seed}"


def _fold_settings(grid: ExperimentGrid, result: RunResult) -> dict:
    """The train settings of a cross-validation run: its fold as validation, no test curve."""
    if result.fold is None:
        return {}
    return {"folds": grid.folds, "fold": result.fold, "test_curve": False}


def _train_and_test(config: TrainConfig, result: RunResult) -> None:
    """Train (or resume, or reuse a finished run), then evaluate the selected checkpoint on test; with
    folds, read the last epoch's rho on the held-out fold instead."""
    config = resolve_head_defaults(config)  # the aggregation's defaults where the grid gives none
    run_dir = Path(config.out)
    result.run_dir = str(run_dir)
    finished = (run_dir / LAST).is_file() and load_checkpoint(run_dir / LAST)["epoch"] >= config.epochs
    if not finished:
        train(config, resume=(run_dir / LAST).is_file())
    if config.folds:
        last = load_checkpoint(run_dir / LAST)["metrics"][-1]
        result.rho, result.r_l2, result.epoch = last["val_rho"], last["val_r_l2"], last["epoch"]
        return
    evaluation = evaluate_checkpoint(run_dir, None, None, "test", config.device, config.batch_size)
    result.rho, result.r_l2, result.epoch = evaluation["rho"], evaluation["r_l2"], evaluation["epoch"]


def _train_heads(
    grid: ExperimentGrid, features: str, target: str, agg: str, seed: int, out: Path, result: RunResult
) -> None:
    run_dir = _run_dir(out, result.cell, agg, seed, result.fold)
    members = grid.train.get("ensemble", 0)
    settings = {
        "features": features,
        "target": target,
        "agg": agg,
        "seed": seed * members if members >= 2 and not grid.folds else seed,  # disjoint members' seeds
        **_fold_settings(grid, result),
    }
    config = with_target(TrainConfig(**{**grid.train, **settings}))
    _train_and_test(dataclasses.replace(config, out=str(run_dir)), result)


def _finetune(grid: ExperimentGrid, cell: Cell, agg: str, seed: int, out: Path, result: RunResult) -> None:
    settings = {
        **grid.train,
        "depth": cell.depth,
        "conv": cell.conv,
        "clip": cell.clip,
        "agg": agg,
        "seed": seed,
        "weights": weights_for(cell, grid.weights),
        "out": str(_run_dir(out, cell, agg, seed, result.fold)),
        **_fold_settings(grid, result),
    }
    _train_and_test(TrainConfig(**settings), result)


RESULT_COLUMNS = (
    "depth",
    "conv",
    "clip",
    "target",
    "agg",
    "seed",
    "fold",
    "rho",
    "r_l2",
    "epoch",
    "seconds",
    "run_dir",
    "error",
)


def _write_results(path: Path, results: list[RunResult]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS)
    writer.writeheader()
    for r in results:
        row = {**dataclasses.asdict(r.cell), **{key: getattr(r, key) for key in RESULT_COLUMNS[4:]}}
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    atomic_write(path, buffer.getvalue())


def summarize(results: list[RunResult], aggregations: list[str]) -> list[dict]:
    """Per cell and aggregation: rho and R-l2 mean and std (ddof 1) over the seeds that ran, and failures."""
    cells = list(dict.fromkeys(r.cell for r in results))
    summary = []
    for cell in cells:
        row = {"cell": cell}
        for agg in aggregations:
            runs = [r for r in results if r.cell == cell and r.agg == agg]
            good = [r for r in runs if not r.error and math.isfinite(r.rho)]
            row[agg] = {
                "rho": _mean_std([r.rho for r in good]),
                "r_l2": _mean_std([r.r_l2 for r in good]),
                "seeds": len(good),
                "failed": len(runs) - len(good),
                "rho_per_seed": [r.rho for r in good],
            }
        summary.append(row)
    return summary


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _cell_columns(summary: list[dict]) -> list[str]:
    """The cell fields that say something: those set in some cell."""
    names = ("depth", "conv", "clip", "target")
    return [name for name in names if any(getattr(row["cell"], name) for row in summary)] or ["target"]


def _format(stats: dict, key: str, digits: int) -> str:
    mean, std = stats[key]
    if not stats["seeds"]:
        return "failed"
    text = f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if stats["seeds"] > 1 else "")
    return text + (f" ({stats['failed']} failed)" if stats["failed"] else "")


def markdown_table(summary: list[dict], aggregations: list[str], title: str, results: list[RunResult]) -> str:
    columns = _cell_columns(summary)
    header = [*columns, *(f"{agg} rho" for agg in aggregations), *(f"{agg} R-l2" for agg in aggregations)]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary:
        cells = [str(getattr(row["cell"], name) or "default") for name in columns]
        cells += [_format(row[agg], "rho", 4) for agg in aggregations]
        cells += [_format(row[agg], "r_l2", 3) for agg in aggregations]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if any(r.fold is not None for r in results):
        lines.append(
            "rho: Spearman's rank correlation on each run's held-out fold of train, at its last epoch; "
            "R-l2: 100 x mean squared error over the squared score range. The test split was not used."
        )
    else:
        lines.append(
            "rho: Spearman's rank correlation on the test split; R-l2: 100 x mean squared error over the "
            "squared score range. Each run selected on its validation split; ridge: closed-form ridge "
            "regression on mean-pooled clip features, penalty chosen on the same validation split (without "
            "one: by 5-fold cross-validation inside train)."
        )
    failures = [r for r in results if r.error]
    if failures:
        lines += ["", "## Failed runs", ""]
        lines += [
            f"- {r.cell.name} {r.agg}{'' if r.fold is None else f' fold {r.fold}'} seed {r.seed}: {r.error}"
            for r in failures
        ]
    return "\n".join(lines) + "\n"


def _csv_text(summary: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        [
            "depth",
            "conv",
            "clip",
            "target",
            "agg",
            "seeds",
            "failed",
            "rho_mean",
            "rho_std",
            "r_l2_mean",
            "r_l2_std",
            "rho_per_seed",
        ]
    )
    for row in summary:
        cell = row["cell"]
        for agg, stats in row.items():
            if agg == "cell":
                continue
            writer.writerow(
                [
                    *("" if value is None else value for value in dataclasses.astuple(cell)),
                    agg,
                    stats["seeds"],
                    stats["failed"],
                    *stats["rho"],
                    *stats["r_l2"],
                    " ".join(f"{rho:.4f}" for rho in stats["rho_per_seed"]),
                ]
            )
    return buffer.getvalue()
