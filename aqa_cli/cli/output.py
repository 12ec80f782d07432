"""What commands print: rich progress bars and tables on the terminal, or JSON for machines."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from aqa_cli.models.registry import Progress as ProgressCallback
from aqa_cli.models.registry import WeightsRecord, cache_dir, cached_path

console = Console()
status_console = Console(stderr=True)
MAX_LISTED_FAILURES = 20


def print_json(value) -> None:
    """`value` as JSON on stdout; a NaN or infinite number (a rho of constant predictions, a baseline
    without difficulties) is written as null, which every JSON reader accepts."""
    print(json.dumps(_finite(value), indent=2, allow_nan=False))


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


@contextmanager
def sample_progress(label: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """A bar of samples with their rate; yields `advance(last_id, count=1, total=None)` (a total given
    there replaces the first one). Without a total the bar appears with the first work reported, so a
    command that stops early prints only its error."""
    progress = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} clips/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[last]}"),
        console=status_console,
        transient=False,
    )
    task = progress.add_task(label, total=total, rate="-", last="")
    started = []  # stopping a bar that never started would still print its empty line

    def start() -> None:
        if not started:
            progress.start()
            started.append(True)

    if total is not None:
        start()

    def advance(sample_id: str, count: int = 1, total: int | None = None) -> None:
        start()
        progress.update(task, advance=count, **({"total": total} if total is not None else {}))
        elapsed = progress.tasks[task].elapsed or 0.0
        done = progress.tasks[task].completed
        progress.update(task, rate=f"{done / elapsed:.1f}" if elapsed else "-", last=sample_id[-30:])

    try:
        yield advance
    finally:
        if started:
            progress.stop()


def print_preprocess_report(report) -> None:
    table = Table(title=f"{report.out}", show_header=True)
    table.add_column("outcome")
    table.add_column("clips", justify="right")
    table.add_row("stored now", str(report.stored))
    table.add_row("already stored (skipped)", str(report.kept))
    table.add_row("failed", str(len(report.failed)), style="red" if report.failed else None)
    table.add_row("in the store", str(report.in_store), style="bold")
    console.print(table)
    if report.damaged:
        console.print(
            "damaged in the earlier store, so decoded again: "
            + ", ".join(report.damaged[:MAX_LISTED_FAILURES]),
            highlight=False,
        )
    if report.frames_lost:
        console.print(
            f"{report.frames_lost} corrupt packets were skipped while decoding (see frames_lost per sample)"
        )
    for sample_id, reason in _rarest_first(report.failed)[:MAX_LISTED_FAILURES]:
        console.print(f"[red]failed[/red] {sample_id}: {reason}", markup=True, highlight=False)
    if len(report.failed) > MAX_LISTED_FAILURES:
        console.print(
            f"... and {len(report.failed) - MAX_LISTED_FAILURES} more (all listed by `aqa info --json`)"
        )
    for notice in getattr(report, "notices", ()):
        console.print(f"[yellow]notice[/yellow] {notice}", markup=True, highlight=False)
    if not getattr(report, "written", True):
        console.print(
            f"no sample could be stored, so no store was written at {report.out}: fix the failures above "
            "and rerun",
            highlight=False,
        )
    console.print(f"done in {report.seconds:.1f} s")


def _rarest_first(failed: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Failures whose reason few samples share first (a bad folder among thousands of dives that simply
    have no frames yet), otherwise in source order."""
    counts = Counter(reason for _, reason in failed)
    return sorted(failed, key=lambda failure: counts[failure[1]])


def print_verification(verification: dict) -> None:
    """`aqa info --verify`: how many samples were read and checked, and which are damaged."""
    checks = "chunk checksums and per-sample sha256"
    if not verification["checksums"]:
        checks = (
            "chunk checksums only: this store records no per-sample sha256 (it was written before they "
            "existed; rerunning `aqa preprocess` on it adds them)"
        )
    damaged = verification["damaged"]
    console.print(
        f"verified {verification['samples']} samples ({checks}): "
        + (f"{len(damaged)} damaged" if damaged else "all intact"),
        highlight=False,
    )
    for entry in damaged[:MAX_LISTED_FAILURES]:
        console.print(
            f"[red]damaged[/red] {entry['id']} (row {entry['row']}): {entry['problem']}", highlight=False
        )
    if len(damaged) > MAX_LISTED_FAILURES:
        console.print(f"... and {len(damaged) - MAX_LISTED_FAILURES} more (all listed by `--json`)")
    if damaged:
        console.print(
            "rerun `aqa preprocess` with the same source and --out to decode the damaged samples again",
            highlight=False,
        )


def print_summary(summary: dict, as_json: bool) -> None:
    if as_json:
        print_json(summary)
        return
    table = Table(title=f"{summary['path']}  ({_size(summary['size_bytes'])})")
    for column in (
        "split",
        "clips",
        "score min",
        "score max",
        "score mean",
        "difficulty min",
        "difficulty max",
    ):
        table.add_column(column, justify="left" if column == "split" else "right")
    rows = [*summary["splits"].items(), ("all", {**summary["all"], "samples": summary["samples"]})]
    for split, info in rows:
        score, difficulty = info["score"] or {}, info["difficulty"] or {}
        table.add_row(
            split,
            str(info["samples"]),
            *(_number(score.get(k)) for k in ("min", "max", "mean")),
            *(_number(difficulty.get(k)) for k in ("min", "max")),
            style="bold" if split == "all" else None,
        )
    console.print(table)
    width, height = summary["frame_size"]
    console.print(
        f"{summary['frames_per_sample']} frames of {width}x{height} per clip (fit: {summary['fit']}), "
        f"compression {summary['compression']}, store format {summary['format_version']} "
        f"written by aqa {summary['tool_version']} on {summary['created']}"
    )
    console.print(f"source: {summary['source']}", highlight=False)
    if summary.get("actions"):
        console.print(
            f"{len(summary['actions'])} actions: {_actions_listed(summary['actions'])}", highlight=False
        )
    for notice in summary.get("notices", ()):
        console.print(f"[yellow]notice[/yellow] {notice}", markup=True, highlight=False)
    if summary["failed"] or summary["frames_lost"]:
        console.print(f"{summary['failed']} clips failed, {summary['frames_lost']} corrupt packets skipped")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class TrainingProgress:
    """`training.loop.TrainingProgress` on the terminal: one bar per epoch (steps, running loss,
    samples/s) and a line of metrics when an epoch ends."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.task = None
        self.samples = 0
        self.started = 0.0

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.samples, self.started = 0, time.perf_counter()
        self.task = self.progress.add_task(f"epoch {epoch}/{epochs}", total=steps, loss="-", rate="-")

    def step(self, loss: float, samples: int) -> None:
        self.samples += samples
        rate = self.samples / max(time.perf_counter() - self.started, 1e-9)
        shown = f"{loss:.3f}" if math.isfinite(loss) else "..."  # NaN: no look at the loss yet
        self.progress.update(self.task, advance=1, loss=shown, rate=f"{rate:.2f}")

    def end_epoch(self, row: dict) -> None:
        parts = [f"epoch {row['epoch']}", f"train loss {row['train_loss']:.3f}"]
        for split in ("val", "test"):
            if f"{split}_rho" in row:
                parts.append(f"{split} rho {row[f'{split}_rho']:.4f} R-l2 {row[f'{split}_r_l2']:.3f}")
        parts.append(f"{row['seconds']:.1f} s")
        self.progress.console.print(" | ".join(parts), highlight=False, soft_wrap=True)


@contextmanager
def training_progress() -> Iterator[TrainingProgress]:
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[rate]} samples/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=status_console,
    )
    with progress:
        yield TrainingProgress(progress)


def print_notices(notices: list[str]) -> None:
    for notice in notices:
        console.print(f"[yellow]notice[/yellow] {notice}", markup=True, highlight=False)


def print_training_summary(result) -> None:
    if result.already_finished:
        status_console.print(
            f"{result.run_dir} already finished {result.already_finished} epochs: nothing to train (raise "
            "--epochs to train longer); metrics.csv and curves.png written again",
            highlight=False,
        )
    if not result.metrics:
        return
    last = result.metrics[-1]
    console.print(f"run: {result.run_dir}", highlight=False)
    if result.best_epoch is not None:
        console.print(
            f"best epoch on validation: {result.best_epoch} (saved as best.pt; last.pt is the final epoch)"
        )
    else:
        console.print(
            "no validation split: the final epoch (last.pt) is the model; use --val-fraction to select"
        )
    if "test_rho" in last:
        console.print(
            f"final epoch test rho {last['test_rho']:.4f} (reported, never used to choose anything)"
        )
    console.print(f"evaluate with: aqa eval --run {result.run_dir}", highlight=False)


def print_evaluation(result: dict, as_json: bool = False) -> None:
    if as_json:
        print_json(result)
        return
    table = Table(title=f"{result['split']} split of {result['store']} ({result['samples']} videos)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("Spearman rho", f"{result['rho']:.4f}", style="bold")
    table.add_row("R-l2 (x100)", f"{result['r_l2']:.4f}")
    table.add_row("MAE", f"{result['mae']:.3f}")
    baseline = result["difficulty_baseline_rho"]
    table.add_row(
        "difficulty-only baseline rho", "n/a (no difficulties)" if baseline is None else f"{baseline:.4f}"
    )
    if "member_spread" in result:
        spread = result["member_spread"]
        table.add_row("ensemble members' spread (std)", f"mean {spread['mean']:.3f}, max {spread['max']:.3f}")
    console.print(table)
    _print_per_action(result)
    for notice in result.get("notices", ()):
        console.print(f"[yellow]notice[/yellow] {notice}", markup=True, highlight=False)
    console.print(f"checkpoint {result['checkpoint']} (epoch {result['epoch']})", highlight=False)
    console.print(f"predictions: {result['predictions']}", highlight=False)
    if result["plot"]:
        console.print(f"scatter plot: {result['plot']}", highlight=False)


MAX_ACTION_ROWS = 12  # more actions (FineDiving's dive numbers) are listed by `--json` only


def _print_per_action(result: dict) -> None:
    """Rho per action and their Fisher-z average (stores with an `action` column)."""
    per_action = result.get("per_action")
    if not per_action:
        return
    if len(per_action) > MAX_ACTION_ROWS:
        console.print(
            f"rho averaged over {len(per_action)} actions with Fisher's z: {result['rho_fisher_z']:.4f} "
            "(per action: `aqa eval --json`)",
            highlight=False,
        )
        return
    table = Table(title="per action")
    for column in ("action", "videos", "Spearman rho", "R-l2 (x100)", "MAE"):
        table.add_column(column, justify="left" if column == "action" else "right")
    for action, entry in per_action.items():
        table.add_row(
            action,
            str(entry["samples"]),
            f"{entry['rho']:.4f}",
            f"{entry['r_l2']:.4f}",
            f"{entry['mae']:.3f}",
        )
    table.add_row("Fisher-z average", "", f"{result['rho_fisher_z']:.4f}", "", "", style="bold")
    console.print(table)


def print_scores(results: list[dict], as_json: bool) -> None:
    """`aqa score`: a table of quality, difficulty, score and clip weights per video, then failures."""
    from rich.text import Text

    if as_json:
        print_json(results)
        return
    table = Table(title=f"scores by {results[0]['checkpoint']}" if results else "scores")
    table.add_column("video", overflow="fold")
    for column in ("quality", "difficulty", "score"):
        table.add_column(column, justify="right")
    table.add_column("clip weights")
    scored = [result for result in results if "error" not in result]
    for result in results:
        if "error" in result:
            table.add_row(Text(result["path"]), "-", "-", Text("failed", style="red"), "")
            continue
        difficulty = result["difficulty"]
        table.add_row(
            Text(result["path"]),
            f"{result['quality']:.2f}",
            "-" if difficulty is None else f"{difficulty:g}",
            f"{result['score']:.2f}",
            _weights_text(result["clips"]),
        )
    console.print(table)
    if any("start" not in result["clips"][0] for result in scored):
        console.print(
            "clip weights: one per clip of the model's window (or of the features), in time order (they sum to 1)"
        )
    if any("start" in result["clips"][0] for result in scored):
        console.print(
            f"clip weights: the {TOP_CLIPS} most weighted clips of the whole video (all with --json)"
        )
    for rule in sorted({result["score_rule"] for result in scored}):
        console.print(f"score = {rule}", highlight=False)
    if any(result["weights"] == "uniform" for result in scored):
        console.print("clip weights are uniform: the model averages its clips (--agg avg)")
    for result in scored:
        outside = result.get("outside_training_range")
        if outside:
            side = "above" if outside["value"] > outside["high"] else "below"
            console.print(
                f"{Path(result['path']).name}: the predicted {outside['of']} {outside['value']:.2f} is "
                f"{side} the model's training range [{outside['low']:.2f}, {outside['high']:.2f}] by "
                f"{outside['by']:.2f}: an extrapolation, take it with care",
                style="yellow",
                highlight=False,
            )
    for result in scored:
        if "member_spread" in result:
            console.print(
                f"{Path(result['path']).name}: the ensemble's members score it {result['score']:.2f} ± "
                f"{result['member_spread']:.2f} (std)",
                highlight=False,
            )
    for result in scored:
        if "explanation" in result:
            console.print(f"clip weights drawn in {result['explanation']}", highlight=False)
    for result in results:
        if "error" in result:
            console.print(
                Text(f"failed: {result['error']}", style="red"), soft_wrap=True
            )  # the error names the file


TOP_CLIPS = 3


def _weights_text(clips: list[dict]) -> str:
    """Every clip's weight; for a timed (long) video, its most weighted clips with their times."""
    if "start" not in clips[0]:
        return " ".join(f"{clip['weight']:.2f}" for clip in clips)
    top = sorted(clips, key=lambda clip: -clip["weight"])[:TOP_CLIPS]
    return ", ".join(f"{clip['start']:.1f}-{clip['end']:.1f} s: {clip['weight']:.2f}" for clip in top)


def print_extract_report(report) -> None:
    if report.up_to_date:
        console.print(
            f"{report.out} is up to date ({report.samples} samples); nothing to do", highlight=False
        )
        return
    rate = report.computed / report.seconds if report.seconds else 0.0
    console.print(
        f"wrote {report.out}: {report.samples} samples ({report.computed} computed now, {report.reused} "
        f"found done) in {report.seconds:.1f} s, {rate:.1f} samples/s",
        highlight=False,
    )
    backbone = report.attributes["backbone"]
    console.print(
        f"backbone: {backbone['summary']}; weights {backbone['weights_sha256'][:16]}"
        + (f" (seed {backbone['seed']})" if backbone["seed"] is not None else "")
        + f"; normalization {backbone['normalization']['name']}",
        highlight=False,
    )
    console.print(f"train the heads with: aqa train --features {report.out}", highlight=False)


def print_stream_extract_report(report) -> None:
    """`aqa extract --recipe`: the store written (or up to date), the recipe and weights, each failure."""
    if report.up_to_date:
        console.print(f"{report.out} is up to date ({report.samples} videos); nothing to do", highlight=False)
        return
    if report.written:
        console.print(
            f"wrote {report.out}: {report.samples} videos ({report.computed} extracted now, {report.reused} "
            f"found done) in {report.seconds:.1f} s",
            highlight=False,
        )
        weights = report.attributes["recipe_weights"]
        sha = weights.get("sha256") or weights.get("weights_sha256") or ""
        console.print(
            f"recipe: {report.attributes['recipe']['name']}; weights {weights.get('name', '')} {sha[:16]}",
            highlight=False,
        )
    else:
        console.print(f"no video could be extracted: no store written at {report.out}", highlight=False)
    for sample_id, reason in _rarest_first(report.failed)[:MAX_LISTED_FAILURES]:
        console.print(f"[red]failed[/red] {sample_id}: {reason}", markup=True, highlight=False)
    if len(report.failed) > MAX_LISTED_FAILURES:
        console.print(f"... and {len(report.failed) - MAX_LISTED_FAILURES} more", highlight=False)
    if report.written:
        console.print(f"train the heads with: aqa train --features {report.out}", highlight=False)


def print_import_report(report) -> None:
    splits = ", ".join(f"{count} {split}" for split, count in report.splits.items())
    console.print(
        f"wrote {report.out}: {report.samples} videos ({splits}), features of width {report.feature_dim}, "
        f"{report.clips[0]}-{report.clips[1]} clips per video, score columns "
        f"{', '.join(report.score_columns)} (default target {report.score_columns[0]}), "
        f"in {report.seconds:.1f} s",
        highlight=False,
    )
    console.print(f"train the heads with: aqa train --features {report.out} --target COLUMN", highlight=False)


def _actions_listed(actions: dict[str, int]) -> str:
    """Samples per action, the first MAX_ACTION_ROWS of them."""
    listed = ", ".join(f"{action} {count}" for action, count in list(actions.items())[:MAX_ACTION_ROWS])
    return listed + (f" and {len(actions) - MAX_ACTION_ROWS} more" if len(actions) > MAX_ACTION_ROWS else "")


def print_feature_summary(summary: dict, as_json: bool) -> None:
    if as_json:
        print_json(summary)
        return
    table = Table(title=f"{summary['path']}  ({_size(summary['size_bytes'])})", show_header=False)
    clips = summary["clips"] or {}
    rows = {
        "samples": f"{summary['samples']} ({', '.join(f'{n} {s}' for s, n in summary['splits'].items())})",
        "features": f"{summary['dtype']}, width {summary['feature_dim']}, "
        f"{clips.get('min')}-{clips.get('max')} clips, {len(summary['views'])} view(s)",
        "score columns": f"{', '.join(summary['score_columns'])} (default {summary['default_target']})",
        "source": summary["source"],
    }
    if summary["actions"]:
        rows["actions"] = f"{len(summary['actions'])}: {_actions_listed(summary['actions'])}"
    if summary["backbone"]:
        backbone = summary["backbone"]
        rows["backbone"] = f"{backbone['summary']}, normalization {backbone['normalization']['name']}"
        rows["weights"] = backbone["weights"] or f"random init, seed {backbone['seed']}"
        if backbone.get("weights_name"):
            rows["weights name"] = backbone["weights_name"]
        rows["weights sha256"] = backbone["weights_sha256"]
    recipe = summary["attributes"].get("recipe")
    if recipe:
        weights = summary["attributes"]["recipe_weights"]
        rows["recipe"] = (
            f"{recipe['name']}: {recipe['description']}" if recipe.get("description") else recipe["name"]
        )
        rows["weights"] = weights.get("name") or weights.get("path") or "random init"
        rows["weights sha256"] = weights.get("sha256")
    for key, value in rows.items():
        table.add_row(key, str(value))
    console.print(table)


class ExperimentReporter:
    """`aqa experiment` on the terminal: a bar per extraction, a line per finished run."""

    def extraction(self, name: str):
        return sample_progress(f"extract {name}")

    def finished(self, result, done: int, total: int) -> None:
        fold = "" if result.fold is None else f" fold {result.fold}"
        where = f"[{done}/{total}] {result.cell.name} {result.agg}{fold} seed {result.seed}"
        measured = "test" if result.fold is None else "held-out fold"
        if result.error:
            console.print(f"{where}: [red]failed[/red]: {result.error}", highlight=False)
        else:
            console.print(
                f"{where}: {measured} rho {result.rho:.4f}, R-l2 {result.r_l2:.3f} ({result.seconds:.1f} s)",
                highlight=False,
            )


def print_experiment(outcome: dict) -> None:
    out = outcome["out"]
    console.print((out / "table.md").read_text(), highlight=False, markup=False, soft_wrap=True)
    written = ["table.md", "table.csv", "results.csv", "experiment.toml"]
    if outcome["plot"]:
        written.append("table.png")
    console.print(f"wrote {', '.join(str(out / name) for name in written)}", highlight=False)


def print_weights(summary: dict, title: str, as_json: bool) -> None:
    """`aqa weights inspect`: what a pretrained checkpoint holds."""
    if as_json:
        print_json(summary)
        return
    rows = {**summary, "parameters": f"{summary['parameters']:,}"}
    if "normalization" in summary:  # a video ResNet checkpoint
        norm = summary["normalization"]
        rows["normalization"] = f"{norm['name']}: mean {norm['mean']}, std {norm['std']}"
        rows["key_prefix"] = summary["key_prefix"] or "none"
    table = Table(title=title, show_header=False)
    for key, value in rows.items():
        table.add_row(key, str(value))
    console.print(table)


# `aqa weights`: the registry table, download progress bars, fetch outcomes.


def registry_rows(records: dict[str, WeightsRecord]) -> list[dict]:
    """Each record as plain JSON, with where its file goes and whether it is there."""
    return [
        {**record.to_dict(), "path": str(cached_path(record)), "cached": cached_path(record).is_file()}
        for record in records.values()
    ]


def print_weights_list(records: dict[str, WeightsRecord], as_json: bool) -> None:
    rows = registry_rows(records)
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"pretrained weights (cache: {cache_dir()})")
    table.add_column("name", no_wrap=True)
    table.add_column("what it is")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("cached", no_wrap=True)
    for row in rows:
        size = f"~{row['size_mb']:.0f} MB" if row["size_mb"] else "?"
        cached = "yes" if row["cached"] else "no" if row["url"] else "no (by hand)"
        table.add_row(row["name"], row["description"], size, cached)
    console.print(table)


def print_recipes(rows: list[dict], as_json: bool) -> None:
    """`aqa recipes list`."""
    if as_json:
        print_json(rows)
        return
    table = Table(title="feature recipes (aqa extract --recipe NAME)")
    for column in ("name", "network", "weights", "frames", "spatial", "clips", "dim"):
        table.add_column(column, no_wrap=column in ("name", "dim"))
    for row in rows:
        cached = {True: "cached", False: "not cached", None: ""}[row["cached"]]
        weights = f"{row['weights']} ({cached})" if row["weights"] else "random init / --weights"
        table.add_row(
            row["name"],
            row["network"],
            weights,
            row["frames_text"],
            row["spatial_text"],
            row["layout_text"],
            str(row["feature_dim"]),
        )
    console.print(table)


@contextmanager
def download_progress() -> Iterator[ProgressCallback]:
    """A rich download bar per file (on stderr); yields the callback the registry calls as it downloads."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=status_console,
        transient=True,  # the line printed afterwards (or the error) says how it went
    )
    tasks: dict[str, int] = {}

    def update(record: WeightsRecord, done: int, total: int | None) -> None:
        if record.name not in tasks:
            progress.start()
            tasks[record.name] = progress.add_task(f"download {record.name}", total=total)
        progress.update(tasks[record.name], completed=done, total=total)

    try:
        yield update
    finally:
        progress.stop()


def print_fetched(record: WeightsRecord, sha256: str, downloaded: bool) -> None:
    what = "downloaded to" if downloaded else "already in the cache:"
    console.print(
        f"{record.name}: {what} {cached_path(record)} (sha256 {sha256[:16]}...)",
        highlight=False,
        soft_wrap=True,
    )


def print_by_hand(instructions: str) -> None:
    console.print(instructions, highlight=False, soft_wrap=True)
