"""`aqa` in a process of its own, forked from a server that has already imported torch, torchvision and the
package: the real command line, its exit code and its stdout and stderr, without paying the 5-6 s import of
torch and torchvision for each of the suite's calls (which made up half of `make test`'s time when each
was a fresh interpreter). Each call is a new process with the caller's environment and working directory, so a test
sees what a user's shell would; tests of signals, interpreter start-up or a hidden module still launch
`python -m aqa_cli` themselves.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PRELOAD = ["tests.cli_preload"]


def _context() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)  # only read when this process starts its server
    return context


def _run_cli(args: list[str], cwd: str, env: dict[str, str], stdout_path: str, stderr_path: str) -> None:
    """In the forked child: the environment, directory and output files of a fresh `python -m aqa_cli`."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, path in ((1, stdout_path), (2, stderr_path)):
        file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(file, fd)
        os.close(file)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", write_through=False)
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
    )
    sys.argv = [os.path.join(os.path.dirname(sys.modules["aqa_cli"].__file__), "__main__.py"), *args]
    from rich.console import Console

    from aqa_cli.cli import output
    from aqa_cli.cli.main import main

    # the CLI's consoles read COLUMNS and the terminal when created: create them as a fresh process would
    output.console, output.status_console = Console(), Console(stderr=True)
    main()  # ends in SystemExit (its code is the process's exit code) or os._exit


def run_cli(args: list[str], cwd, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run `aqa ARGS` in a forked process; a CompletedProcess as `subprocess.run(..., text=True)` gives."""
    with tempfile.TemporaryDirectory(prefix="aqa-cli-") as scratch:
        stdout_path, stderr_path = Path(scratch) / "stdout", Path(scratch) / "stderr"
        process = _context().Process(
            target=_run_cli, args=(args, str(cwd or os.getcwd()), env, str(stdout_path), str(stderr_path))
        )
        process.start()
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired(["aqa", *args], timeout)
        code = process.exitcode
        process.close()
        return subprocess.CompletedProcess(
            ["aqa", *args],
            code,
            stdout_path.read_text(encoding="utf-8", errors="replace"),
            stderr_path.read_text(encoding="utf-8", errors="replace"),
        )
