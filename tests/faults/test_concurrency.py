"""Two processes writing the same output at once: the second stops with one clear line, the first
finishes exactly as if it had been alone. (`aqa score` shares no state: both finish.)"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.faults.injection import (
    assert_clean_failure,
    assert_success,
    fault_count,
    finish,
    record,
    run,
    start,
    wait_for_lock,
)
from tests.faults.stages import Stage

LOCKING_STAGES = ["preprocess", "train", "eval", "extract", "merge", "experiment"]


@pytest.mark.parametrize("name", LOCKING_STAGES)
def test_a_second_writer_is_refused_and_the_first_completes(
    stages: dict[str, Stage], name: str, tmp_path: Path
) -> None:
    fault_count(int(name == "preprocess"), 1)
    stage = stages[name]
    stage.reference  # noqa: B018
    out = tmp_path / "shared"
    stage.prepare(out)
    started = time.monotonic()
    first = start(stage.command(out))
    assert wait_for_lock(out / stage.lock, first), f"{name} ended without taking {stage.lock}"
    os.killpg(first.pid, signal.SIGSTOP)  # it holds the lock for as long as the second one runs
    try:
        second = run(stage.command(out))
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert_clean_failure(second, "another aqa process is writing", code=2)
    result = finish(first, started)
    assert_success(result)
    stage.check_reference(out, result)
    record(name, "second writer at once", "second refused; first identical")


def test_two_scorers_at_once_both_finish_with_the_same_results(
    stages: dict[str, Stage], tmp_path: Path
) -> None:
    fault_count(0, 1)
    stage = stages["score"]
    stage.reference  # noqa: B018
    out = tmp_path / "shared"
    stage.prepare(out)
    started = time.monotonic()
    first, second = start(stage.command(out)), start(stage.command(out))
    for result in (finish(first, started), finish(second, started)):
        assert_success(result)
        stage.check_reference(out, result)
    record("score", "second writer at once", "both finished; identical")
