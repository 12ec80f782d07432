"""Ctrl-C at the instants the tool holds it back: while a worker process starts, while torch imports.

Each case runs in its own Python process (a real SIGINT to a real process; pytest's own handler stays
out of it) and reports what happened on stdout."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PREAMBLE = """
import multiprocessing, os, signal, sys
from aqa_cli.util.interrupts import ctrl_c_held
from aqa_cli.media.worker_pool import WorkerPool
from jobs import double

def ctrl_c_as_workers_start(main_process_too):
    # each new worker gets SIGINT right after its start, before it could install any handler
    start = WorkerPool._start
    def start_under_ctrl_c(self):
        worker = start(self)
        os.kill(worker.process.pid, signal.SIGINT)
        if main_process_too:
            os.kill(os.getpid(), signal.SIGINT)
        return worker
    WorkerPool._start = start_under_ctrl_c
"""


def run_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    # the job function lives in a module of its own: workers import it by name, never the caller's script
    (tmp_path / "jobs.py").write_text("def double(job, emit):\n    emit(job * 2)\n")
    script = tmp_path / "case.py"
    script.write_text(
        PREAMBLE + "\nif __name__ == '__main__':\n" + textwrap.indent(textwrap.dedent(body), "    ")
    )
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)


def test_ctrl_c_inside_the_block_is_raised_after_it(tmp_path):
    result = run_script(
        tmp_path,
        """
        try:
            with ctrl_c_held():
                os.kill(os.getpid(), signal.SIGINT)
                print("block finished")
        except KeyboardInterrupt:
            print("interrupted after")
        """,
    )
    assert result.stdout.split() == ["block", "finished", "interrupted", "after"], result.stderr


def test_ctrl_c_while_a_worker_starts_stops_the_pool_and_leaves_no_worker(tmp_path):
    # the terminal's Ctrl-C reaches the main process and the starting worker at once
    result = run_script(
        tmp_path,
        """
        ctrl_c_as_workers_start(main_process_too=True)
        try:
            WorkerPool(2, timeout=60)
            print("not interrupted")
        except KeyboardInterrupt:
            print("interrupted")
        print("left", len(multiprocessing.active_children()))
        """,
    )
    assert result.stdout.split() == ["interrupted", "left", "0"], result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_a_worker_that_got_ctrl_c_while_starting_ignores_it_and_works(tmp_path):
    result = run_script(
        tmp_path,
        """
        ctrl_c_as_workers_start(main_process_too=False)
        results = []
        with WorkerPool(2, timeout=60) as pool:
            pool.run([1, 2, 3], double, results.append, lambda job, why: print("failed", job, why), lambda job: None)
        print(*sorted(results))
        """,
    )
    assert result.stdout.split() == ["2", "4", "6"], result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_the_commands_said_to_be_torch_free_never_import_torch(tmp_path):
    # every other command imports torch up front with Ctrl-C held back; these must not need to
    script = f"""
import sys
from aqa_cli.cli.app import TORCH_FREE_COMMANDS
from aqa_cli.cli.commands import app
runs = [
    ["synth", "{tmp_path}/videos", "--videos", "4", "--frames", "20"],
    *[["preprocess", "{tmp_path}/videos/manifest.csv", "--out", f"{tmp_path}/part{{k}}.h5", "--frames", "8",
       "--workers", "1", "--shard", f"{{k}}/2"] for k in range(2)],
    ["merge", "{tmp_path}/part0.h5", "{tmp_path}/part1.h5", "--out", "{tmp_path}/all.h5"],
    ["info", "{tmp_path}/all.h5", "--verify"],
]
assert {{run[0] for run in runs}} == TORCH_FREE_COMMANDS
for args in runs:
    app(args, standalone_mode=False)
print("torch imported:", "torch" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "torch imported: False", result.stdout


def test_a_ctrl_c_held_while_ignored_stays_ignored(tmp_path):
    # after a command's outcome, a late Ctrl-C is ignored: a hold in clean-up must not revive it
    result = run_script(
        tmp_path,
        """
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with ctrl_c_held():
            os.kill(os.getpid(), signal.SIGINT)
        print("still here")
        """,
    )
    assert result.stdout.split() == ["still", "here"], result.stderr


def test_ctrl_c_while_a_checkpoint_is_written_ends_in_a_whole_checkpoint(tmp_path):
    # torch's zip writer calls back into Python to write; a KeyboardInterrupt there used to surface as
    # "unexpected RuntimeError: [enforce fail at inline_container.cc] unexpected pos"
    result = run_script(
        tmp_path,
        f"""
        import threading, time
        from pathlib import Path
        import torch
        from aqa_cli.checkpoints.io import load_checkpoint, save_checkpoint
        path = Path("{tmp_path}") / "last.pt"
        def ctrl_c_once_writing():
            temp = path.with_name(f".{{path.name}}.{{os.getpid()}}.tmp")
            while not (temp.exists() and temp.stat().st_size > 0):
                time.sleep(0.0005)
            os.kill(os.getpid(), signal.SIGINT)
        threading.Thread(target=ctrl_c_once_writing, daemon=True).start()
        try:
            save_checkpoint(path, {{"weights": torch.ones(50_000_000)}})
            print("not interrupted")
        except KeyboardInterrupt:
            print("interrupted")
        print(int(load_checkpoint(path)["weights"].sum()))
        """,
    )
    assert result.stdout.split() == ["interrupted", "50000000"], result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "held"),
    [
        (["features", "info", "missing.h5"], True),
        (["weights", "inspect", "missing.pth"], True),
        (["eval", "--run", "missing"], True),
        (["features"], False),  # only its help: no torch to import
        (["weights"], False),
        (["eval", "--help"], False),
    ],
)
def test_torch_is_imported_under_the_hold_exactly_when_a_command_will_run(monkeypatch, args, held):
    import contextlib

    import aqa_cli.cli.commands  # noqa: F401 - adds the commands to the app
    from aqa_cli.cli import app as cli

    holds = []
    monkeypatch.setattr(cli, "ctrl_c_held", lambda: holds.append(args) or contextlib.nullcontext())
    monkeypatch.setattr(sys, "argv", ["aqa", *args])
    with contextlib.suppress(Exception, SystemExit):
        cli.app(args, standalone_mode=False)
    assert bool(holds) == held
