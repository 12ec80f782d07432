"""Stores and checkpoints truncated or with a bit flipped on disk, as input to every stage that reads them.

Each outcome is one of: the damage did not matter (the bits were unused: the result is identical to an
undisturbed run), the stage repaired it (preprocess decodes damaged samples again), or the stage refused
with one clear line and, after the remedy that line names, a rerun is identical to an undisturbed run.
A successful run with a different result would be silent corruption: that fails the test.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from tests.faults.injection import (
    assert_clean_failure,
    assert_success,
    fault_count,
    flip_bit,
    record,
    run,
    truncate,
)
from tests.faults.stages import PREPROCESS_OPTIONS, Stage

DAMAGES: dict[str, Callable[[Path, random.Random], int]] = {"bit flip": flip_bit, "truncation": truncate}
COUNTS = {"bit flip": (1, 12), "truncation": (1, 4)}  # (make test, make faults) per case
REASONS = {  # what the refusal said, by a phrase of it
    "cannot open": "file unreadable",
    "frames of sample": "a sample's frames named",
    "frames do not match": "a sample's frames named",
    "metadata of": "samples' metadata named",
    "no longer match the checksums": "damaged tensors named",
    "cannot be read": "store structure damaged",
    "not a torch checkpoint": "checkpoint unreadable",
    "refusing to load": "checkpoint unreadable (pickle)",
}


def damage_cases(damage: str, quick: bool) -> int:
    """How many cases to run (none in `make test` unless `quick`)."""
    quick_count, full_count = COUNTS[damage]
    return fault_count(quick_count if quick else 0, full_count)


def run_damaged(
    stage: Stage, out: Path, remedy: Callable[[], None], fault: str, command: list | None = None
) -> None:
    """Run the stage (or `command`) on damaged input: identical result, or one clear line then (after
    `remedy`) the rerun a user would type, identical to an undisturbed run."""
    result = run(command or stage.command(out))
    if result.returncode == 0:
        stage.check_reference(out, result)
        repaired = "damaged in the earlier store" in result.stdout
        record(
            stage.name, fault, "repaired by decoding again" if repaired else "unused bytes: result identical"
        )
        return
    line = assert_clean_failure(result)
    reason = next((reason for phrase, reason in REASONS.items() if phrase in line), line)
    remedy()
    rerun = run(stage.rerun(out))
    assert_success(rerun)
    stage.check_reference(out, rerun)
    record(stage.name, fault, f"refused: {reason}; after the remedy identical")


def rebuild_store(stage: Stage, store: Path) -> None:
    """What the error says: `aqa preprocess` again (and, for an unreadable file, delete it first)."""
    repair = run(["preprocess", stage.inputs.manifest, "--out", store, *PREPROCESS_OPTIONS])
    if repair.returncode:
        assert_clean_failure(repair, "delete it")
        store.unlink()
        stage.inputs.preprocess_into(store)


Arrange = Callable[[Path, int], tuple[Path, Callable[[], None], list | None]]


def damage_trials(
    stage: Stage, damage: str, target: str, count: int, tmp_path: Path, arrange: Arrange
) -> None:
    """`count` runs of `stage`, each in a folder of its own that `arrange(out, trial)` prepares; it returns
    the file to damage, the remedy a refusal names, and the command (None: the stage's own)."""
    stage.reference  # noqa: B018 - the undisturbed run to compare with
    rng = random.Random(f"{damage} {target} {stage.name}")
    for trial in range(count):
        out = tmp_path / f"trial{trial}"
        damaged, remedy, command = arrange(out, trial)
        DAMAGES[damage](damaged, rng)
        run_damaged(stage, out, remedy, f"{target}: {damage}", command)
        shutil.rmtree(out)


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_previous_store_is_repaired_or_refused(
    stages: dict[str, Stage], damage: str, tmp_path: Path
) -> None:
    stage = stages["preprocess"]

    def arrange(out: Path, trial: int) -> tuple[Path, Callable[[], None], None]:
        stage.prepare(out, previous=trial % 2 == 0)  # the earlier, smaller store, or a finished one
        if trial % 2:
            shutil.copy2(stage.reference_dir / "store.h5", out / "store.h5")
        return out / "store.h5", (out / "store.h5").unlink, None

    damage_trials(stage, damage, "previous store", damage_cases(damage, quick=True), tmp_path, arrange)


@pytest.mark.parametrize("name", ["train", "eval", "extract"])
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_input_store_is_refused_or_harmless(
    stages: dict[str, Stage], name: str, damage: str, tmp_path: Path
) -> None:
    stage = stages[name]

    def arrange(out: Path, trial: int) -> tuple[Path, Callable[[], None], None]:
        stage.prepare(out)
        store = out / "input.h5"
        shutil.copy2(stage.inputs.store, store)
        return store, partial(rebuild_store, stage, store), None

    damage_trials(stage, damage, "input store", damage_cases(damage, quick=False), tmp_path, arrange)


@pytest.mark.parametrize("name", ["eval", "score"])
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_is_refused_or_harmless(
    stages: dict[str, Stage], name: str, damage: str, tmp_path: Path
) -> None:
    stage = stages[name]

    def arrange(out: Path, trial: int) -> tuple[Path, Callable[[], None], None]:
        stage.prepare(out)
        checkpoint = stage.checkpoint_in(out)
        checkpoint.unlink()
        shutil.copy2(stage.checkpoint, checkpoint)  # a copy of its own, not a link to the shared one
        return checkpoint, partial(shutil.copy2, stage.checkpoint, checkpoint), None

    damage_trials(stage, damage, "checkpoint", damage_cases(damage, quick=False), tmp_path, arrange)


@pytest.mark.parametrize("damage", DAMAGES)
def test_resuming_from_a_damaged_checkpoint_is_refused_or_harmless(
    stages: dict[str, Stage], damage: str, tmp_path: Path
) -> None:
    stage = stages["train"]

    def arrange(out: Path, trial: int) -> tuple[Path, Callable[[], None], list]:
        shutil.copytree(stage.halfway, out / "run")
        start_over = partial(shutil.rmtree, out / "run")  # what the error says when there is no intact copy
        return out / "run" / "last.pt", start_over, stage.rerun(out)  # `aqa train --out RUN --resume`

    damage_trials(stage, damage, "checkpoint to resume", damage_cases(damage, quick=False), tmp_path, arrange)
