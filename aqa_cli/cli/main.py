"""The `aqa` entry point: turns errors, Ctrl-C and unexpected failures into one clear line."""

from __future__ import annotations

import os
import signal
import sys

import typer

import aqa_cli.cli.commands  # noqa: F401 - adds every command to the app
from aqa_cli.cli.app import app
from aqa_cli.util.errors import AqaError

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
