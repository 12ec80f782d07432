"""SIGKILL and SIGINT at random seeded moments of every stage, then the rerun a user would type."""

from __future__ import annotations

import random
import shutil
import signal
from pathlib import Path

import pytest

from tests.faults.injection import (
    assert_interrupted_cleanly,
    assert_killed_cleanly,
    assert_success,
    fault_count,
    flip_bit,
    record,
    run,
    run_with_signal,
    signal_delays,
)
from tests.faults.stages import Stage

STAGES = ["preprocess", "train", "eval", "score", "extract", "merge", "experiment"]
CTRL_C_STAGES = [name for name in STAGES if name != "merge"]  # merge ends within 0.1 s of its start-up
STARTUP = 0.5  # Ctrl-C before Python has imported the command line prints Python's own traceback


def damage_a_finished_sample(out: Path, rng: random.Random) -> bool:
    """Flip a bit in one of the samples a killed preprocess left in STORE.partial/ (if it left any)."""
    finished = sorted((out / "store.h5.partial").glob("*.h5"))
    if not finished:
        return False
    flip_bit(rng.choice(finished), rng)
    return True


def disturb_then_rerun(stage: Stage, out: Path, delay: float, signum: int, rng: random.Random) -> str:
    """Run the stage, send `signum` after `delay` s, check the failure and what it left, rerun; returns
    the outcome for the log."""
    before = stage.outputs(out)
    result = run_with_signal(stage.command(out), delay, signum)
    outcome = "finished before the signal"
    if result.signalled and result.returncode == 0:
        # the signal came as it was exiting: the work was done (a process that has exited cannot be
        # killed, and a finished command ignores a late Ctrl-C)
        assert_success(result)
        stage.check_reference(out, result)
        outcome = "finished as the signal came; result identical"
    elif result.signalled:
        if signum == signal.SIGKILL:
            assert_killed_cleanly(result)
        else:
            assert_interrupted_cleanly(result)
        stage.check_intact(out, before)
        outcome = "stopped; rerun identical"
        if stage.name == "preprocess" and damage_a_finished_sample(out, rng):
            outcome = "stopped, a finished sample then damaged; rerun identical"
    rerun = run(stage.rerun(out))
    assert_success(rerun)
    stage.check_reference(out, rerun)
    return outcome


def signal_until(stage: Stage, signum: int, count: int, earliest: float, tmp_path: Path) -> None:
    """Signal runs of `stage` until `count` signals have stopped a running process (runs that end first,
    or finish as the signal comes, are logged too); half of the runs start from a previous good output."""
    rng = random.Random(f"{signal.Signals(signum).name} {stage.name}")
    hits = 0
    for trial, delay in enumerate(signal_delays(rng, stage.duration, count, earliest)):
        if hits == count:
            break
        assert trial < 3 * count, f"{stage.name}: only {hits} of {trial} runs were stopped by the signal"
        out = tmp_path / f"trial{trial}"
        stage.prepare(out, previous=trial % 2 == 1)
        outcome = disturb_then_rerun(stage, out, delay, signum, rng)
        record(stage.name, signal.Signals(signum).name, outcome)
        hits += outcome.startswith("stopped")  # a command deaf to Ctrl-C would finish every time
        shutil.rmtree(out)


@pytest.mark.parametrize("name", STAGES)
def test_kill_9_at_random_moments_then_rerun(stages: dict[str, Stage], name: str, tmp_path: Path) -> None:
    count = fault_count(int(name == "preprocess"), 20)
    stages[name].reference  # noqa: B018 - the undisturbed run, timed
    signal_until(stages[name], signal.SIGKILL, count, 0.0, tmp_path)


@pytest.mark.parametrize("name", CTRL_C_STAGES)
def test_ctrl_c_at_random_moments_then_rerun(stages: dict[str, Stage], name: str, tmp_path: Path) -> None:
    count = fault_count(int(name == "preprocess"), 5)
    stages[name].reference  # noqa: B018
    signal_until(stages[name], signal.SIGINT, count, STARTUP, tmp_path)
