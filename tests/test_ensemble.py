"""Ensembles (`--ensemble N`) and contrastive checkpoints as one model: eval and score from the checkpoint
alone (a frozen backbone's features of synthetic dives), the members' spread reported, resumption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aqa_cli.checkpoints.io import LAST, load_checkpoint
from aqa_cli.evaluation.evaluate import evaluate_checkpoint
from tests.test_features import dives, extracted  # noqa: F401 - the fixtures

TRAIN = ["--batch-size", "4", "--lr", "1e-3", "--epochs", "1", "--no-test-curve", "--device", "cpu"]


def test_an_ensemble_is_one_checkpoint_that_evaluates_scores_and_resumes(
    dives: Path,  # noqa: F811
    extracted: Path,  # noqa: F811
    tmp_path: Path,
    aqa,
) -> None:
    run = tmp_path / "ensemble"
    aqa("train", "--features", extracted, "--out", run, "--ensemble", "2", "--seed", "3", *TRAIN, check=0)
    payload = load_checkpoint(run / LAST)
    assert payload["ensemble"]["members"] == 2 and payload["ensemble"]["seeds"] == [3, 4]
    assert len(payload["model_config"]["members"]) == 2
    result = json.loads(aqa("eval", "--run", run, "--json", "--device", "cpu", check=0).stdout)
    members = [
        evaluate_checkpoint(run / "members" / f"seed{seed}", None, None, "test", "cpu", 8) for seed in (3, 4)
    ]
    import h5py

    scores = []
    for found in (result, *members):
        with h5py.File(found["predictions"], "r") as f:
            scores.append(f["score"][()])
    np.testing.assert_allclose(scores[0], (scores[1] + scores[2]) / 2, rtol=1e-5, atol=1e-5)
    spread = np.abs(scores[1] - scores[2]) / 2  # the std (ddof 0) of two members
    assert result["member_spread"]["mean"] == pytest.approx(spread.mean(), rel=1e-4, abs=1e-5)
    assert result["member_spread"]["max"] > 0

    video = dives.parent / "videos" / "dive_000.mp4"
    if not video.is_file():
        video = sorted((dives.parent / "videos").glob("*.mp4"))[0]
    scored = json.loads(aqa("score", video, "--run", run, "--json", "--device", "cpu", check=0).stdout)[0]
    assert scored["member_spread"] >= 0 and np.isfinite(scored["score"])

    before = (run / LAST).stat().st_mtime_ns
    again = aqa(
        "train", "--features", extracted, "--out", run, "--ensemble", "2", "--seed", "3", *TRAIN, check=2
    )
    assert "already holds a run" in again.stderr  # without --resume an ensemble is never overwritten
    aqa("train", "--out", run, "--resume", check=0)  # finished members are kept: the same ensemble again
    resumed = load_checkpoint(run / LAST)
    assert (run / LAST).stat().st_mtime_ns != before
    for key, tensor in payload["model"].items():
        assert np.array_equal(tensor.numpy(), resumed["model"][key].numpy(), equal_nan=True), key


def test_a_contrastive_checkpoint_scores_a_video_from_the_checkpoint_alone(
    dives: Path,  # noqa: F811
    extracted: Path,  # noqa: F811
    tmp_path: Path,
    aqa,
) -> None:
    run = tmp_path / "contrastive"
    aqa("train", "--features", extracted, "--out", run, "--contrastive", "--exemplars", "2", *TRAIN, check=0)
    evaluation = evaluate_checkpoint(run, None, None, "test", "cpu", 8)
    import h5py

    with h5py.File(evaluation["predictions"], "r") as f:
        predicted = dict(zip(f["id"].asstr()[()], f["quality"][()], strict=True))
        difficulty = dict(zip(f["id"].asstr()[()], f["difficulty"][()], strict=True))
    name = sorted(predicted)[0]
    scored = json.loads(
        aqa(
            "score",
            dives.parent / "videos" / f"{name}.mp4",
            "--difficulty",
            str(difficulty[name]),
            "--run",
            run,
            "--json",
            "--device",
            "cpu",
            check=0,
        ).stdout
    )[0]
    assert scored["quality"] == pytest.approx(predicted[name], rel=2e-2, abs=0.05)
