"""The `aqa` command line: one thin function per command (parse, call the library, print).

Heavy modules (torch, av, h5py) are imported inside the commands so that `aqa --help` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from aqa_cli import __version__
from aqa_cli.errors import AqaError

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

_state = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"aqa {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


@app.command()
def preprocess(
    source: Annotated[
        Optional[Path],
        typer.Argument(
            help="A CSV manifest, an MTL-AQA root (annotation pickles + videos or frame folders), "
            "or a folder of unlabeled videos. Default: look for an MTL-AQA layout under data/."
        ),
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Store to write (default: data/<source>.h5).")
    ] = None,
    frames: Annotated[
        Optional[int],
        typer.Option(
            help="Frames kept per sample (default 103 for MTL-AQA, else 103). Longer or shorter clips "
            "are resampled to this many frames by --fit."
        ),
    ] = None,
    fit: Annotated[
        str,
        typer.Option(help="How a clip of another length becomes --frames frames: 'uniform' (evenly spaced "
                     "indices over the whole clip, repeating frames of short clips) or 'tail' (the last "
                     "--frames frames; short clips repeat their first frame)."),
    ] = "uniform",
    workers: Annotated[Optional[int], typer.Option(help="Decoding processes (default: CPU count).")] = None,
    compression: Annotated[str, typer.Option(help="Frame compression: lzf, gzip or none.")] = "lzf",
    shard: Annotated[
        Optional[str], typer.Option(help="K/N: process only every N-th sample starting at K (0-based).")
    ] = None,
) -> None:
    """Decode videos into a 171x128 uint8 HDF5 store (resumable: rerun to continue)."""
    from aqa_cli.preprocess import PreprocessOptions, run_preprocess

    options = PreprocessOptions(frames=frames, fit=fit, workers=workers, compression=compression, shard=shard)
    report = run_preprocess(source, out, options)
    if report.failed:
        raise typer.Exit(1)


@app.command()
def info(
    store: Annotated[Path, typer.Argument(help="A store written by `aqa preprocess` or `aqa merge`.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Summarize a store: samples per split, score and difficulty ranges, frames, size on disk."""
    from aqa_cli.store import summarize
    from aqa_cli.report import print_summary

    print_summary(summarize(store), as_json=json_out)


@app.command()
def merge(
    shards: Annotated[list[Path], typer.Argument(help="Shard stores written with --shard K/N.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The merged store to write.")],
) -> None:
    """Join shard stores into one store through HDF5 virtual datasets (no frame data is copied)."""
    from aqa_cli.store import merge_stores
    from aqa_cli.report import print_summary
    from aqa_cli.store import summarize

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


def main() -> None:
    """Entry point: turns AqaError, Ctrl-C and unexpected failures into one clear line."""
    debug = "--debug" in sys.argv[1:]
    try:
        app()
    except SystemExit as exc:
        if exc.code == 130:
            typer.echo("interrupted: completed work is kept; rerun the same command to resume", err=True)
        raise
    except AqaError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - the last line of defence for the user
        if debug:
            raise
        typer.echo(
            f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True
        )
        sys.exit(1)
