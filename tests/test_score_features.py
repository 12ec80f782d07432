"""`aqa score FEATURES.npy`: heads trained on cached features score a video from its clip features file,
an ensemble of contrastive heads included, exactly as `aqa eval` predicts the same video from the store."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.helpers import run_aqa
from tests.test_long_integration import write_long_layout


def test_an_ensemble_of_contrastive_heads_scores_clip_features_as_eval_predicts_them(tmp_path: Path) -> None:
    write_long_layout(tmp_path)
    store, run = tmp_path / "store.h5", tmp_path / "run"
    run_aqa("features", "import", tmp_path, "--out", store, "--dtype", "float32", check=0)
    args = ["--agg", "attn", "--contrastive", "--exemplars", "2", "--ensemble", "2", "--epochs", "2"]
    run_aqa("train", "--features", store, "--out", run, *args, "--device", "cpu", check=0)
    run_aqa("eval", "--run", run, check=0)
    with h5py.File(run / "predictions-test.h5") as f:
        sample, quality, difficulty = f["id"][0].decode(), float(f["quality"][0]), float(f["difficulty"][0])
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((5, 3), dtype=np.float32))
    feature_file = tmp_path / "feats" / f"{sample}.npy"
    found = run_aqa(
        "score",
        feature_file,
        wrong,
        "--run",
        run,
        "--difficulty",
        difficulty,
        "--difficulty",
        2,
        "--json",
        check=1,
    )
    scored, failed = json.loads(found.stdout)
    assert scored["quality"] == pytest.approx(quality, abs=1e-5)
    assert scored["score"] == pytest.approx(quality * difficulty, abs=1e-4)
    assert scored["member_spread"] >= 0 and scored["clips_given"] == len(np.load(feature_file))
    assert sum(clip["weight"] for clip in scored["clips"]) == pytest.approx(1.0, abs=1e-5)
    assert "(clips, 8)" in failed["error"] and "Traceback" not in found.stderr

    mixed = run_aqa("score", feature_file, tmp_path / "dive.mp4", "--run", run, check=2)
    assert "not both" in mixed.stderr and "Traceback" not in mixed.stderr
