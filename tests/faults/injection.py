"""Fault injection on the real `aqa` command line: start it, hurt it, then check how it failed and recovered.

Everything here acts on real processes, files and filesystems: `aqa` runs as a subprocess exactly as a
user runs it; SIGKILL goes to the main process alone (as `kill -9 PID` or the out-of-memory killer
would), SIGINT to the whole process group (as Ctrl-C in a terminal does); full and read-only disks are
real tmpfs and bind mounts (root only, else skipped); damage is real bits flipped and real truncation.

`AQA_FAULTS=full` (`make faults`) runs the exhaustive counts, otherwise a quick few run (`make test`).
With `AQA_FAULT_LOG=FILE` every injected fault and its outcome is appended to FILE as a JSON line;
`python tests/faults/summary.py FILE` tabulates them (docs/RELIABILITY.md quotes that table).
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

FULL = os.environ.get("AQA_FAULTS") == "full"
SCALE = int(os.environ.get("AQA_FAULT_SCALE", "1"))  # a harder full run: every count times SCALE
LOG = os.environ.get("AQA_FAULT_LOG")
full_only = pytest.mark.skipif(not FULL, reason="exhaustive fault run: `make faults`")
MESSAGE_PREFIXES = ("error:", "interrupted:")
# An `error: unexpected ...` verdict is the last line of defence in `aqa_cli.cli`: an unforeseen exception,
# never an answer to bad input, so it fails every fault test as a traceback does.
UNWANTED = (
    "Traceback",
    "Exception ignored",
    "Error in atexit",
    "Segmentation fault",
    "core dumped",
    "error: unexpected",
)


def fault_count(quick: int, full: int) -> int:
    """How many faults of a kind to inject: a few in `make test`, many in `make faults` (times
    AQA_FAULT_SCALE); a test that has none to inject in this run is skipped."""
    count = full * SCALE if FULL else quick
    if not count:
        pytest.skip("exhaustive fault run only: `make faults`")
    return count


def record(stage: str, fault: str, outcome: str, count: int = 1) -> None:
    """Log `count` injected faults with the same outcome (see the module docstring)."""
    if LOG:
        with open(LOG, "a") as log:
            entry = {"stage": stage, "fault": fault, "outcome": outcome, "count": count}
            log.write(json.dumps(entry) + "\n")


@dataclass
class Finished:
    """One `aqa` run: its exit status and output, and whether a signal was sent while it ran."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    signalled: bool = False
    session: int = 0

    def messages(self) -> list[str]:
        """The lines addressed to the user as a verdict (`error: ...`, `interrupted: ...`)."""
        return [line for line in self.stderr.splitlines() if line.startswith(MESSAGE_PREFIXES)]


def start(args: list, cwd: Path | None = None, launcher: list[str] = ()) -> subprocess.Popen:
    """`aqa ARGS` in its own session (its own process group), as from a terminal; `launcher` is a
    command that runs it (it gets `python -m aqa_cli ARGS` as its arguments)."""
    return subprocess.Popen(
        [*launcher, sys.executable, "-m", "aqa_cli", *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        start_new_session=True,
    )


def run(args: list, cwd: Path | None = None, timeout: float = 900) -> Finished:
    return run_with_signal(args, None, None, cwd, timeout)


def run_with_signal(
    args: list,
    when: float | Callable[[], bool] | None,
    signum: int | None,
    cwd: Path | None = None,
    timeout: float = 900,
) -> Finished:
    """Run `aqa ARGS` and, if it is still running after `when` seconds (or once the condition `when`
    holds: progress, not time, so that a fast machine cannot finish first), send `signum`: SIGKILL to the
    main process only, any other signal to the whole process group."""
    started = time.monotonic()
    process = start(args, cwd)
    signalled = False
    if signum is not None and _wait_until(process, when):
        if signum == signal.SIGKILL:
            process.kill()
        else:
            os.killpg(process.pid, signum)
        signalled = True
    return finish(process, started, timeout, signalled)


def _wait_until(process: subprocess.Popen, when: float | Callable[[], bool]) -> bool:
    """Whether `process` is still running when `when` comes (a delay in seconds, or a condition)."""
    if not callable(when):
        try:
            process.wait(timeout=when)
            return False
        except subprocess.TimeoutExpired:
            return True
    while process.poll() is None:
        if when():
            return True
        time.sleep(0.005)
    return False


def finish(
    process: subprocess.Popen, started: float, timeout: float = 900, signalled: bool = False
) -> Finished:
    """Wait for a process from `start` and collect what it printed."""
    stdout, stderr = process.communicate(timeout=timeout)
    return Finished(
        process.args[process.args.index("aqa_cli") + 1 :],
        process.returncode,
        stdout,
        stderr,
        time.monotonic() - started,
        signalled,
        process.pid,
    )


def run_measuring_memory(args: list, timeout: float = 900) -> tuple[Finished, int]:
    """Run `aqa ARGS` under a fresh parent that reports the largest resident memory (bytes) that any
    process of the run reached, workers included."""
    measure = (
        "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
        "sys.stderr.write(f'\\n{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n'); "
        "sys.exit(done.returncode)"
    )
    started = time.monotonic()
    result = finish(start(args, launcher=[sys.executable, "-c", measure]), started, timeout)
    result.stderr, peak_kib = result.stderr.rstrip().rsplit("\n", 1)
    return result, int(peak_kib) * 1024


def wait_for_lock(lock_file: Path, process: subprocess.Popen, timeout: float = 600) -> bool:
    """Wait until some process holds a flock on `lock_file` (read from /proc/locks, without touching the
    lock); False if `process` ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if lock_file.exists():
            inode = f":{lock_file.stat().st_ino} "
            if any(
                "FLOCK" in line and inode in line for line in Path("/proc/locks").read_text().splitlines()
            ):
                return True
        time.sleep(0.02)
    return False


def run_in_process(args: list) -> Finished:
    """`aqa ARGS` in this process, through the same `main` as the installed command (no interpreter and
    torch to start: for the many runs of property tests)."""
    from aqa_cli.cli.main import main

    stdout, stderr = io.StringIO(), io.StringIO()
    started = time.monotonic()
    code = 0
    with (
        mock.patch.object(sys, "argv", ["aqa", *map(str, args)]),
        redirect_stdout(stdout),
        redirect_stderr(stderr),
    ):
        ctrl_c = signal.getsignal(signal.SIGINT)
        try:
            main()
        except SystemExit as done:
            code = int(done.code or 0)
        finally:
            signal.signal(signal.SIGINT, ctrl_c)  # `main` ignores Ctrl-C once done; children would inherit it
    return Finished(
        [str(a) for a in args], code, stdout.getvalue(), stderr.getvalue(), time.monotonic() - started
    )


def assert_clean_failure(result: Finished, *fragments: str, code: int | None = None) -> str:
    """A failure as users must see it: a non-zero exit, exactly one verdict line (containing every
    fragment), and no traceback anywhere. Returns that line."""
    text = result.stdout + result.stderr
    assert not any(word in text for word in UNWANTED), text[-3000:]
    assert result.returncode != 0, f"exit 0 where a failure was expected\n{text[-3000:]}"
    if code is not None:
        assert result.returncode == code, f"exit {result.returncode} != {code}\n{text[-3000:]}"
    lines = result.messages()
    assert len(lines) == 1, f"expected one error line, got {lines}\n{result.stderr[-3000:]}"
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def assert_success(result: Finished) -> None:
    text = result.stdout + result.stderr
    assert result.returncode == 0, f"{result.args} exit {result.returncode}\n{text[-4000:]}"
    assert not any(word in text for word in UNWANTED), text[-3000:]


def assert_killed_cleanly(result: Finished) -> None:
    """After SIGKILL of the main process: nothing of the run is left running (workers die with it)."""
    assert result.returncode == -signal.SIGKILL
    assert leftover_processes(result.session) == [], "processes outlived their killed parent"


def assert_interrupted_cleanly(result: Finished) -> None:
    """After Ctrl-C: exit 130, one `interrupted:` line, no traceback (workers included)."""
    assert_clean_failure(result, "interrupted", code=130)
    assert leftover_processes(result.session) == []


def leftover_processes(session: int, grace: float = 10.0) -> list[str]:
    """Running processes (not zombies) still in `session`, after up to `grace` seconds for them to go."""
    deadline = time.monotonic() + grace
    while True:
        alive = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # it ended while we looked
            state, process_session = fields[0], int(fields[3])
            if process_session == session and state != "Z":
                alive.append(f"{stat.parent.name} ({(stat.parent / 'comm').read_text().strip()})")
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def signal_delays(rng: random.Random, duration: float, count: int, earliest: float = 0.0) -> Iterator[float]:
    """Moments to signal a run that takes about `duration` seconds undisturbed: first `count` of them
    spread over it, each at random within its own slice (startup, middle and the final writes are all
    hit), then as many more at random as the caller needs (runs vary in length; some end first)."""
    span = max(0.8 * duration - earliest, 0.1)
    for k in range(count):
        yield earliest + span * (k + rng.random()) / count
    while True:
        yield earliest + span * rng.random()


def flip_bit(path: Path, rng: random.Random, start: int = 0, end: int | None = None) -> int:
    """Flip one random bit of `path` between byte offsets `start` and `end`; returns the offset."""
    data = bytearray(path.read_bytes())
    offset = rng.randrange(start, len(data) if end is None else end)
    data[offset] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return offset


def truncate(path: Path, rng: random.Random) -> int:
    """Cut `path` at a random length (at least one byte shorter); returns the new length."""
    size = rng.randrange(path.stat().st_size)
    with open(path, "r+b") as f:
        f.truncate(size)
    return size


def _mount(*args: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting filesystems needs root")
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")


@contextmanager
def small_disk(mount_point: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "2m") at `mount_point`, unmounted afterwards; `grow` enlarges it."""
    mount_point.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point))
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def grow(mount_point: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount_point)], check=True)


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """`folder` made read-only for everyone, root included (a read-only bind mount over itself), until
    the block ends."""
    _mount("--bind", str(folder), str(folder))
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
