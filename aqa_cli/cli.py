"""The `aqa` command line: one thin function per command (parse, call the library, print).

Heavy modules (torch, av, h5py) are imported inside the commands so that `aqa --help` stays fast.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from aqa_cli import __version__
from aqa_cli.errors import AqaError
from aqa_cli.interrupts import ctrl_c_held

app = typer.Typer(
    name="aqa",
    help="Action quality assessment from video: preprocess, train, evaluate and score dives.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
weights_app = typer.Typer(help="Inspect pretrained backbone weight files.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
features_app = typer.Typer(
    help="Feature stores: import pre-extracted clip features, describe a store.", no_args_is_help=True
)
app.add_typer(features_app, name="features")


@weights_app.command("inspect")
def weights_inspect(
    path: Annotated[Path, typer.Argument(help="A Hara et al., IG-65M or torchvision .pth checkpoint.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Show what a checkpoint holds: family, depth, conv type, classes, parameters, normalization."""
    import json

    from rich.console import Console
    from rich.table import Table

    from aqa_cli.models import inspect_weights

    summary = inspect_weights(path)
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
        return
    norm = summary["normalization"]
    rows = {
        **summary,
        "parameters": f"{summary['parameters']:,}",
        "normalization": f"{norm['name']}: mean {norm['mean']}, std {norm['std']}",
        "key_prefix": summary["key_prefix"] or "none",
    }
    table = Table(title=str(path), show_header=False)
    for key, value in rows.items():
        table.add_row(key, str(value))
    Console().print(table)


_state = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"aqa {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug
    groups = {group.name for group in app.registered_groups}  # they import it once a command is given
    if ctx.invoked_subcommand not in TORCH_FREE_COMMANDS | groups | {None}:
        _import_torch()


TORCH_FREE_COMMANDS = {"preprocess", "info", "merge", "synth"}
"""Commands that never import torch (tests/test_interrupts.py checks it); every other one imports it up
front, with Ctrl-C held back, so that a new command is safe by default."""


@weights_app.callback()
@features_app.callback()
def _import_torch() -> None:
    """Import torch with Ctrl-C held back until it is done: a KeyboardInterrupt raised inside the
    initialisation of its native (pybind11) modules aborts the whole process (C++ terminate). Not for
    `--help`, which needs no torch (3 s of imports on 2 cores)."""
    if {"--help", "-h"} & set(sys.argv):
        return
    with ctrl_c_held():
        import torch  # noqa: F401
        import torchvision  # noqa: F401


@app.command()
def preprocess(
    source: Annotated[
        Path | None,
        typer.Argument(
            help="A CSV manifest, an MTL-AQA root (annotation pickles + videos or frame folders), "
            "a FineDiving root (its annotation pickles + the release's per-dive frame folders "
            "<video_name>/<instance_id>/NNNNN.jpg, or untrimmed videos <video_name>.mp4), an AQA-7 root "
            "(split_4_*_list.mat or consolidated_*_list.mat + <action>-out/NNN/img_NNNNN.jpg folders), "
            "or a folder of unlabeled videos. Default: look for an MTL-AQA layout under data/."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Store to write (default: data/<source>.h5).")
    ] = None,
    frames: Annotated[
        int | None,
        typer.Option(
            help="Frames kept per sample (default 103: MTL-AQA's window, enough for the 96-frame training "
            "window to end at any of the last 6 frames). Clips of another length are fitted by --fit; "
            "MTL-AQA dives always take the frames ending at the dive's end_frame."
        ),
    ] = None,
    fit: Annotated[
        str,
        typer.Option(
            help="How a clip of another length becomes --frames frames: 'uniform' (evenly spaced "
            "indices over the whole clip, repeating frames of short clips) or 'tail' (the last "
            "--frames frames; short clips repeat their first frame)."
        ),
    ] = "uniform",
    workers: Annotated[int | None, typer.Option(help="Decoding processes (default: CPU count).")] = None,
    compression: Annotated[
        str, typer.Option(help="Frame compression: none (fastest reads), lzf or gzip (smaller stores).")
    ] = "none",
    shard: Annotated[
        str | None, typer.Option(help="K/N: process only every N-th sample starting at K (0-based).")
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds a video may decode without finishing a clip before it is stopped and reported "
            "failed (a damaged file can make a decoder hang). (default: 900)"
        ),
    ] = None,
    action: Annotated[
        str | None,
        typer.Option(
            help="Keep one action's samples: an AQA-7 action (diving, gym_vault, ski_big_air, "
            "snowboard_big_air, sync_diving_3m, sync_diving_10m; one model per action is the usual "
            "protocol) or a FineDiving dive number (e.g. 207c)."
        ),
    ] = None,
) -> None:
    """Decode videos into a 171x128 uint8 HDF5 store (resumable: rerun to continue)."""
    from aqa_cli.preprocess import PreprocessOptions, run_preprocess

    options = PreprocessOptions(
        frames=frames,
        fit=fit,
        workers=workers,
        compression=compression,
        shard=shard,
        timeout=timeout,
        action=action,
    )
    report = run_preprocess(source, out, options)
    if report.failed:
        raise typer.Exit(1)


@app.command()
def info(
    store: Annotated[Path, typer.Argument(help="A store written by `aqa preprocess` or `aqa merge`.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Read every sample and check its checksums; list damaged samples (exit 1 if any).",
        ),
    ] = False,
) -> None:
    """Summarize a store: samples per split, score and difficulty ranges, frames, size on disk."""
    from aqa_cli.report import print_summary, print_verification
    from aqa_cli.store import summarize, verify_store
    from aqa_cli.store_overlap import info_notices

    summary = summarize(store)
    summary["notices"] = info_notices(store)
    verification = verify_store(store) if verify else None
    if json_out and verification is not None:
        summary["verify"] = verification
    print_summary(summary, as_json=json_out)
    if verification is not None and not json_out:
        print_verification(verification)
    if verification is not None and verification["damaged"]:
        raise typer.Exit(1)


@app.command()
def merge(
    shards: Annotated[list[Path], typer.Argument(help="Shard stores written with --shard K/N.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The merged store to write.")],
) -> None:
    """Join shard stores into one store through HDF5 virtual datasets (no frame data is copied)."""
    from aqa_cli.report import print_summary
    from aqa_cli.store import merge_stores, summarize

    merge_stores(shards, out)
    print_summary(summarize(out), as_json=False)


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the videos and manifest.csv into.")],
    videos: Annotated[int, typer.Option(help="How many videos.")] = 48,
    frames: Annotated[int, typer.Option(help="Frames per video.")] = 110,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 0,
) -> None:
    """Write a small synthetic diving dataset whose score is visible in the motion."""
    from aqa_cli.synth import write_synthetic_dataset

    manifest = write_synthetic_dataset(out_dir, n_videos=videos, n_frames=frames, seed=seed)
    typer.echo(f"wrote {videos} videos and {manifest}")


@app.command()
def train(
    config: Annotated[
        Path | None, typer.Option(help="TOML file of settings (a run's config.toml repeats it).")
    ] = None,
    store: Annotated[
        str | None, typer.Option(help="Video store to train on. (default: data/mtl_aqa.h5)")
    ] = None,
    out: Annotated[str | None, typer.Option(help="Run directory. (default: runs/<model>-<time>)")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    features: Annotated[
        str | None,
        typer.Option(
            help="Train only the heads on this feature store (`aqa extract`, `aqa features import`); "
            "backbone, window and loader options are then unused."
        ),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(help="With --features: the score column to predict. (default: the store's first)"),
    ] = None,
    depth: Annotated[
        int | None, typer.Option(help="ResNet depth: 10, 18, 34, 50, 101 (152, 200). (default: 34)")
    ] = None,
    conv: Annotated[str | None, typer.Option(help="3d or 2plus1d. (default: 2plus1d)")] = None,
    clip: Annotated[
        int | None, typer.Option(help="Frames per clip: 8, 16 or 32 (12, 6, 3 clips). (default: 32)")
    ] = None,
    agg: Annotated[
        str | None, typer.Option(help="Clip aggregation: wd (Weight-Decider) or avg. (default: wd)")
    ] = None,
    weights: Annotated[
        str | None, typer.Option(help="Pretrained backbone file (Hara, IG-65M, torchvision).")
    ] = None,
    family: Annotated[
        str | None, typer.Option(help="Backbone variant without --weights: hara, ig65m, torchvision.")
    ] = None,
    normalization: Annotated[
        str | None, typer.Option(help="Override input normalization: hara, ig65m, torchvision, imagenet.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="(default: 50)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="(default: 2)")] = None,
    accumulate: Annotated[int | None, typer.Option(help="Gradient accumulation steps. (default: 1)")] = None,
    lr: Annotated[
        float | None,
        typer.Option(help="Learning rate of new modules (and a random backbone). (default: 1e-4)"),
    ] = None,
    backbone_lr: Annotated[
        float | None, typer.Option(help="Learning rate of a pretrained backbone. (default: 1e-5)")
    ] = None,
    loss: Annotated[
        str | None, typer.Option(help="l1+l2, l1 or l2 on the final score. (default: l1+l2)")
    ] = None,
    frames: Annotated[
        int | None, typer.Option(help="Frames per video seen by the model. (default: 96)")
    ] = None,
    jitter: Annotated[
        int | None, typer.Option(help="Training windows end at one of the last N stored frames. (default: 6)")
    ] = None,
    crop: Annotated[
        int | None, typer.Option(help="Square crop of the 171x128 frames. (default: 112)")
    ] = None,
    flip: Annotated[
        bool | None, typer.Option("--flip/--no-flip", help="Random horizontal flips. (default: flip)")
    ] = None,
    wd_dropout: Annotated[
        float | None, typer.Option(help="Dropout inside the Weight-Decider. (default: 0.1)")
    ] = None,
    use_difficulty: Annotated[
        bool | None,
        typer.Option("--use-difficulty/--no-difficulty", help="Multiply by difficulty. (default: use)"),
    ] = None,
    val_fraction: Annotated[
        float | None, typer.Option(help="Hold out this part of train to choose the best epoch. (default: 0)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="(default: 0)")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 ... (default: auto)")] = None,
    precision: Annotated[
        str | None, typer.Option(help="auto, fp32, bf16, fp16 (autocast on CUDA). (default: auto)")
    ] = None,
    channels_last: Annotated[
        str | None, typer.Option(help="auto, on, off (channels-last 3D). (default: auto)")
    ] = None,
    grad_checkpoint: Annotated[
        bool | None,
        typer.Option(
            "--grad-checkpoint/--no-grad-checkpoint", help="Recompute activations to save GPU memory."
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Data loader processes. (default: 2)")] = None,
    test_curve: Annotated[
        bool | None,
        typer.Option(
            "--test-curve/--no-test-curve",
            help="Evaluate test each epoch for the curves (never for selection). (default: on)",
        ),
    ] = None,
) -> None:
    """Fine-tune backbone, FC layers, Weight-Decider and regressor end to end (torchrun for many GPUs).

    With --features, only the heads train, on cached clip features: seconds per epoch on a CPU.
    """
    overrides = {key: value for key, value in locals().items() if key not in ("config", "resume")}
    from aqa_cli.config import resolve_config
    from aqa_cli.report import print_training_summary
    from aqa_cli.train import train as run_training

    if resume and config is None and out is not None and (Path(out) / "config.toml").is_file():
        config = Path(out) / "config.toml"
    resolved = resolve_config(config, overrides)
    if os.environ.get("RANK", "0") == "0":  # one process says it, however many train
        from aqa_cli.report import print_notices
        from aqa_cli.store_overlap import info_notices

        print_notices(info_notices(resolved.store) if resolved.store else [])  # shared test dives
    result = run_training(resolved, resume=resume)
    print_training_summary(result)


@app.command()
def extract(
    store: Annotated[
        str | None, typer.Option(help="Video store to extract from. (default: data/mtl_aqa.h5)")
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(help="Feature store to write. (default: <store>-<conv><depth>-clip<clip>.features.h5)"),
    ] = None,
    depth: Annotated[int | None, typer.Option(help="ResNet depth. (default: 34)")] = None,
    conv: Annotated[str | None, typer.Option(help="3d or 2plus1d. (default: 2plus1d)")] = None,
    clip: Annotated[int | None, typer.Option(help="Frames per clip. (default: 32)")] = None,
    weights: Annotated[
        str | None,
        typer.Option(help="Pretrained backbone file; without it a random init drawn from --seed."),
    ] = None,
    family: Annotated[str | None, typer.Option(help="Backbone variant without --weights.")] = None,
    normalization: Annotated[str | None, typer.Option(help="Override the input normalization.")] = None,
    frames: Annotated[int | None, typer.Option(help="Frames per video window. (default: 96)")] = None,
    crop: Annotated[int | None, typer.Option(help="Centre crop size. (default: 112)")] = None,
    views: Annotated[
        bool | None,
        typer.Option(
            "--views/--no-views",
            help="Also store the mirrored window and the earliest-ending window (plain and mirrored): "
            "head training then picks one of the 4 views per sample and epoch. (default: no)",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of a random-init backbone. (default: 0)")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Videos per forward pass (and per resumable block). (default: 4)")
    ] = None,
    dtype: Annotated[str | None, typer.Option(help="float16 or float32. (default: float16)")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda ... (default: auto)")] = None,
    precision: Annotated[
        str | None, typer.Option(help="auto, fp32, bf16, fp16 (autocast on CUDA). (default: auto)")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Frame loading processes. (default: 2)")] = None,
) -> None:
    """Run a frozen backbone over a video store once: per-clip features to a feature store (resumable).

    Rerun the same command to continue an interrupted extraction; an up-to-date store is left as it is.
    """
    given = {key: value for key, value in locals().items() if value is not None}
    from aqa_cli.features import ExtractOptions, extract_features
    from aqa_cli.report import print_extract_report, sample_progress

    options = ExtractOptions(**given)
    with sample_progress("extract") as advance:
        report = extract_features(options, advance)
    print_extract_report(report)


@features_app.command("import")
def features_import(
    source: Annotated[
        Path,
        typer.Argument(help="Folder with the label files and the <id>.npy files (or a subfolder of them)."),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Feature store to write. (default: data/<folder>.features.h5)"),
    ] = None,
    labels: Annotated[
        list[Path] | None,
        typer.Option(
            help="Label file(s) (default: train/val/test .txt/.csv/.tsv or labels.csv in SOURCE); "
            "a file named train/val/test gives its rows that split unless it has a split column."
        ),
    ] = None,
    features_dir: Annotated[
        Path | None, typer.Option(help="Folder of <id>.npy files. (default: found in SOURCE)")
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option(help="Names of the columns of headerless label files, e.g. id,score,difficulty."),
    ] = None,
    dtype: Annotated[str, typer.Option(help="float16 or float32.")] = "float16",
) -> None:
    """Turn per-video clip features (.npy, (clips, dim) each) plus labels into a feature store."""
    from aqa_cli.feature_import import import_features
    from aqa_cli.report import print_import_report

    column_names = [name.strip() for name in columns.split(",")] if columns else None
    print_import_report(import_features(source, out, labels, features_dir, column_names, dtype))


@features_app.command("info")
def features_info(
    path: Annotated[Path, typer.Argument(help="A feature store.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Summarize a feature store: samples per split, feature shape, score columns, backbone and weights."""
    from aqa_cli.features import summarize_features
    from aqa_cli.report import print_feature_summary

    print_feature_summary(summarize_features(path), as_json=json_out)


@app.command()
def experiment(
    config: Annotated[
        Path | None, typer.Option(help="TOML grid (an experiment's experiment.toml repeats it).")
    ] = None,
    depth: Annotated[list[int] | None, typer.Option(help="ResNet depth (repeat for a grid).")] = None,
    conv: Annotated[list[str] | None, typer.Option(help="3d or 2plus1d (repeatable).")] = None,
    clip: Annotated[list[int] | None, typer.Option(help="Frames per clip (repeatable).")] = None,
    agg: Annotated[list[str] | None, typer.Option(help="avg or wd (repeatable). (default: both)")] = None,
    target: Annotated[
        list[str] | None, typer.Option(help="Score column of the feature store (repeatable).")
    ] = None,
    seeds: Annotated[int | None, typer.Option(help="Seeds per cell: 0 .. N-1. (default: 3)")] = None,
    finetune: Annotated[
        bool | None,
        typer.Option("--finetune/--frozen", help="Train every run end to end. (default: frozen features)"),
    ] = None,
    features: Annotated[
        str | None, typer.Option(help="Train on this feature store (e.g. imported): aggregations x seeds.")
    ] = None,
    weights: Annotated[
        list[str] | None,
        typer.Option(
            help="Backbone files (repeatable), matched to cells by depth, conv and clip<N> in the name."
        ),
    ] = None,
    views: Annotated[
        bool | None, typer.Option("--views/--no-views", help="Extract augmented views too.")
    ] = None,
    out: Annotated[str | None, typer.Option(help="Output folder. (default: runs/experiment-<time>)")] = None,
    store: Annotated[str | None, typer.Option(help="Video store. (default: data/mtl_aqa.h5)")] = None,
    epochs: Annotated[int | None, typer.Option(help="(default: 50)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="(default: 2)")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate of new modules. (default: 1e-4)")] = None,
    backbone_lr: Annotated[float | None, typer.Option(help="With --finetune. (default: 1e-5)")] = None,
    val_fraction: Annotated[
        float | None, typer.Option(help="Part of train held out to select each run (and the ridge penalty).")
    ] = None,
    frames: Annotated[int | None, typer.Option(help="(default: 96)")] = None,
    crop: Annotated[int | None, typer.Option(help="(default: 112)")] = None,
    loss: Annotated[str | None, typer.Option(help="l1+l2, l1 or l2. (default: l1+l2)")] = None,
    use_difficulty: Annotated[
        bool | None, typer.Option("--use-difficulty/--no-difficulty", help="(default: use)")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda ... (default: auto)")] = None,
    workers: Annotated[int | None, typer.Option(help="Loader processes. (default: 2)")] = None,
) -> None:
    """Run a grid of trainings and write a table like the paper's Tables I and II (rho mean +- std).

    Depths x conv types x clip lengths x aggregations x seeds, on frozen features extracted once per
    backbone (default) or end to end (--finetune); or aggregations x targets x seeds on --features.
    Writes table.md, table.csv, table.png and results.csv; failed runs are listed, not fatal.
    """
    options = {key: value for key, value in locals().items() if key != "config"}
    from aqa_cli.experiment import resolve_grid, run_experiment
    from aqa_cli.report import ExperimentReporter, print_experiment

    print_experiment(run_experiment(resolve_grid(config, options), ExperimentReporter()))


@app.command(name="eval")
def evaluate(
    run: Annotated[Path | None, typer.Option(help="Run directory. (default: the latest under runs/)")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="A checkpoint file (instead of --run).")] = None,
    store: Annotated[
        Path | None, typer.Option(help="Store to evaluate on. (default: the training store)")
    ] = None,
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Videos per forward pass.")] = 4,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Spearman rho, R-l2 and MAE on a split, next to the difficulty-only baseline; writes predictions."""
    from aqa_cli.evaluate import evaluate_checkpoint
    from aqa_cli.report import print_evaluation

    print_evaluation(evaluate_checkpoint(run, checkpoint, store, split, device, batch_size), as_json=json_out)


@app.command(
    help="Predict the quality and final score of dives from raw videos, with each clip's weight.\n\n"
    "A video is decoded exactly as `aqa preprocess` stores it for the model's training store: T frames "
    "(103 for MTL-AQA) at the centres of T equal bins over the whole video (fit 'uniform': a longer video "
    "is subsampled evenly, a shorter one repeats frames evenly), or its last T frames (fit 'tail'). "
    "The model sees the last 96 of them (its window), centre-cropped, as in `aqa eval`, cut into clips. "
    "Exits 1 if any video could not be read; the others are still scored."
)
def score(
    videos: Annotated[
        list[Path], typer.Argument(help="Videos in any format FFmpeg reads, or folders of frame images.")
    ],
    difficulty: Annotated[
        list[float] | None,
        typer.Option(
            help="Degree of difficulty: once for all videos, or once per video in order. "
            "Without it the score is the predicted quality."
        ),
    ] = None,
    run: Annotated[Path | None, typer.Option(help="Run directory (default: the latest under runs/).")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="A checkpoint file (instead of --run).")] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print a JSON list, one object per video, and nothing else.")
    ] = False,
    explain: Annotated[
        Path | None,
        typer.Option(
            help="Draw each clip's middle frame with its weight to this PNG; with several videos, "
            "to PNG_stem-<video stem>.png each."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
) -> None:
    from aqa_cli.report import print_scores
    from aqa_cli.score import score_videos

    results = score_videos(videos, difficulty or [], run, checkpoint, device, explain)
    print_scores(results, as_json=json_out)
    if any("error" in result for result in results):
        raise typer.Exit(1)


INTERRUPTED = "interrupted: completed work is kept; rerun the same command to resume"


def main() -> None:
    """Entry point: turns AqaError, Ctrl-C and unexpected failures into one clear line.

    Once the outcome is decided, Ctrl-C is ignored, so that a late one cannot interrupt the interpreter's
    teardown. After an interruption the process ends at once: a KeyboardInterrupt that reached native
    code (an extension's import, a loader thread) can make CPython's teardown end in SIGINT or abort, and
    every output is crash-safe by design, so there is nothing to clean up.
    """
    try:
        code = _run(debug="--debug" in sys.argv[1:])
    except KeyboardInterrupt:  # outside what Typer handles, or while an outcome was being reported
        typer.echo(INTERRUPTED, err=True)
        code = 130
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


def _run(debug: bool) -> int | str | None:
    """Run the command line; the exit code (a message string for Click's own usage errors)."""
    try:
        app()
    except SystemExit as exc:
        if exc.code == 130:
            typer.echo(INTERRUPTED, err=True)
        return exc.code
    except AqaError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        return 2
    except Exception as exc:  # noqa: BLE001 - the last line of defence for the user
        if debug:
            raise
        typer.echo(
            f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True
        )
        return 1
    return 0
