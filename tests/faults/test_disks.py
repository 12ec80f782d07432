"""A full disk and a read-only output location for every stage: one clear line, the previous state
intact, and once there is room (or write access) again, a rerun identical to an undisturbed run."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.faults.injection import (
    assert_clean_failure,
    assert_success,
    fault_count,
    grow,
    read_only,
    record,
    run,
    small_disk,
)
from tests.faults.stages import Stage

STAGES = ["preprocess", "train", "eval", "score", "extract", "merge", "experiment"]
ROOMY = "2g"  # tmpfs holds only what is written into it


def used_bytes(mount_point: Path) -> int:
    stats = os.statvfs(mount_point)
    return (stats.f_blocks - stats.f_bfree) * stats.f_frsize


@pytest.mark.parametrize("name", STAGES)
def test_full_disk_then_rerun_with_room(stages: dict[str, Stage], name: str, tmp_path: Path) -> None:
    count = fault_count(int(name == "preprocess"), 4)
    stage = stages[name]
    stage.reference  # noqa: B018 - the undisturbed run, and how much it writes
    rng = random.Random(f"full disk {name}")
    for trial in range(count):
        with small_disk(tmp_path / f"disk{trial}", ROOMY) as out:
            stage.prepare(out, previous=trial % 2 == 1)
            before = stage.outputs(out)
            room = used_bytes(out) + int(stage.written * rng.uniform(0.05, 0.9))
            grow(out, f"{room // 1024 + 4}k")
            result = run(stage.command(out))
            if result.returncode == 0:
                outcome = "fitted after all"
            else:
                assert_clean_failure(result, "disk full")
                stage.check_intact(out, before)
                outcome = "refused: disk full; rerun identical"
            grow(out, ROOMY)
            rerun = run(stage.rerun(out))
            assert_success(rerun)
            stage.check_reference(out, rerun)
            record(name, "full disk", outcome)


@pytest.mark.parametrize("name", STAGES)
@pytest.mark.parametrize("previous", [False, True], ids=["fresh", "over previous output"])
def test_read_only_output_then_rerun(
    stages: dict[str, Stage], name: str, previous: bool, tmp_path: Path
) -> None:
    fault_count(int(name == "preprocess"), 1)
    stage = stages[name]
    stage.reference  # noqa: B018
    out = tmp_path / "out"
    stage.prepare(out, previous)
    before = stage.outputs(out)
    with read_only(out):
        result = run(stage.command(out))
        assert_clean_failure(result, "Read-only file system")
    stage.check_intact(out, before)
    assert stage.outputs(out).keys() == before.keys()
    rerun = run(stage.rerun(out))
    assert_success(rerun)
    stage.check_reference(out, rerun)
    record(name, "read-only output", "refused: read-only; rerun identical")
