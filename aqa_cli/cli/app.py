"""The Typer app and its groups, before any command is added (`cli.commands` adds them).

Heavy modules (torch, av, h5py) are imported inside the commands so that `aqa --help` stays fast.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from aqa_cli import __version__
from aqa_cli.util.interrupts import ctrl_c_held

app = typer.Typer(
    name="aqa",
    help="Action quality assessment from video: preprocess, train, evaluate and score dives.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
weights_app = typer.Typer(
    help="Pretrained backbone weights: list the public ones by name, fetch them into torch's cache, inspect "
    "a file. AQA_OFFLINE=1 forbids downloads; AQA_WEIGHTS_REGISTRY names a TOML file of extra records.",
    no_args_is_help=True,
)
app.add_typer(weights_app, name="weights")
recipes_app = typer.Typer(
    help="Feature recipes: the published ways of turning a video into clip features (network, weights, "
    "frames, transform, clip layout).",
    no_args_is_help=True,
)
app.add_typer(recipes_app, name="recipes")
features_app = typer.Typer(
    help="Feature stores: import pre-extracted clip features, describe a store.", no_args_is_help=True
)
app.add_typer(features_app, name="features")


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
