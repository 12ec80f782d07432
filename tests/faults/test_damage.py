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
from injection import assert_clean_failure, assert_success, fault_count, flip_bit, record, run, truncate
from stages import PREPROCESS_OPTIONS, Stage

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


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_previous_store_is_repaired_or_refused(
    stages: dict[str, Stage], damage: str, tmp_path: Path
) -> None:
    stage = stages["preprocess"]
    count = damage_cases(damage, quick=True)
    stage.reference  # noqa: B018
    rng = random.Random(f"{damage} preprocess")
    for trial in range(count):
        out = tmp_path / f"trial{trial}"
        stage.prepare(out, previous=trial % 2 == 0)  # the earlier, smaller store, or a finished one
        if trial % 2:
            shutil.copy2(stage.reference_dir / "store.h5", out / "store.h5")
        DAMAGES[damage](out / "store.h5", rng)
        run_damaged(stage, out, (out / "store.h5").unlink, f"previous store: {damage}")
        shutil.rmtree(out)


@pytest.mark.parametrize("name", ["train", "eval", "extract"])
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_input_store_is_refused_or_harmless(
    stages: dict[str, Stage], name: str, damage: str, tmp_path: Path
) -> None:
    stage = stages[name]
    count = damage_cases(damage, quick=False)
    stage.reference  # noqa: B018
    rng = random.Random(f"{damage} store {name}")
    for trial in range(count):
        out = tmp_path / f"trial{trial}"
        stage.prepare(out)
        store = out / "input.h5"
        shutil.copy2(stage.inputs.store, store)
        DAMAGES[damage](store, rng)
        run_damaged(stage, out, partial(rebuild_store, stage, store), f"input store: {damage}")
        shutil.rmtree(out)


@pytest.mark.parametrize("name", ["eval", "score"])
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_is_refused_or_harmless(
    stages: dict[str, Stage], name: str, damage: str, tmp_path: Path
) -> None:
    stage = stages[name]
    count = damage_cases(damage, quick=False)
    stage.reference  # noqa: B018
    rng = random.Random(f"{damage} checkpoint {name}")
    for trial in range(count):
        out = tmp_path / f"trial{trial}"
        stage.prepare(out)
        checkpoint = stage.checkpoint_in(out)
        checkpoint.unlink()
        shutil.copy2(stage.checkpoint, checkpoint)  # a copy of its own, not a link to the shared one
        DAMAGES[damage](checkpoint, rng)
        copy_it_again = partial(shutil.copy2, stage.checkpoint, checkpoint)
        run_damaged(stage, out, copy_it_again, f"checkpoint: {damage}")
        shutil.rmtree(out)


@pytest.mark.parametrize("damage", DAMAGES)
def test_resuming_from_a_damaged_checkpoint_is_refused_or_harmless(
    stages: dict[str, Stage], damage: str, tmp_path: Path
) -> None:
    stage = stages["train"]
    count = damage_cases(damage, quick=False)
    stage.reference  # noqa: B018
    rng = random.Random(f"{damage} resume")
    for trial in range(count):
        out = tmp_path / f"trial{trial}"
        shutil.copytree(stage.halfway, out / "run")
        DAMAGES[damage](out / "run" / "last.pt", rng)
        resume = stage.rerun(out)  # `aqa train --out RUN --resume`
        start_over = partial(shutil.rmtree, out / "run")  # what the error says when there is no intact copy
        run_damaged(stage, out, start_over, f"checkpoint to resume: {damage}", resume)
        shutil.rmtree(out)
