"""Per-action evaluation: on a store with an `action` column, `aqa eval`'s metrics add rho per action
and their Fisher-z average (AQA-7's protocol), in the JSON and in the table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from aqa_cli.cli.output import print_evaluation
from aqa_cli.evaluation.evaluate import Predictions, report_predictions
from aqa_cli.evaluation.per_action import fisher_z_mean
from tests.test_store_optional_columns import sample, write_store

ACTIONS = ["diving"] * 4 + ["gym_vault"] * 4 + ["ski_big_air"] * 3


def test_fisher_z_mean_is_the_tanh_of_the_mean_arctanh() -> None:
    # arctanh(0.5) = 0.549306, arctanh(0.9) = 1.472219; their mean 1.010763; tanh of it 0.766077
    assert fisher_z_mean([0.5, 0.9]) == pytest.approx(0.766077, abs=1e-6)
    assert fisher_z_mean([0.5, math.nan]) == pytest.approx(0.5)  # an action with too few videos
    assert math.isnan(fisher_z_mean([]))
    assert 0.99 < fisher_z_mean([1.0, 0.9]) < 1.0  # a perfect action weighs, without making it 1


def predictions_for(store_rows: list[int], true: np.ndarray, pred: np.ndarray) -> Predictions:
    n = len(store_rows)
    return Predictions(
        rows=np.asarray(store_rows),
        ids=np.array([f"s{row}" for row in store_rows]),
        true=true,
        difficulty=np.full(n, np.nan),
        score=pred,
        quality=pred,
        clip_weights=None,
    )


@pytest.fixture
def action_store(tmp_path: Path) -> Path:
    samples = [sample(f"s{row}", row, action) for row, action in enumerate(ACTIONS)]
    return write_store(tmp_path, "actions", samples)


def test_eval_reports_rho_per_action_and_their_fisher_z_average(
    action_store: Path, tmp_path: Path, capsys
) -> None:
    rng = np.random.default_rng(0)
    rows = list(range(len(ACTIONS)))[::-1]  # predictions come in any order of store rows
    true = 50.0 + np.asarray(rows, dtype=float)  # the store's scores (`sample` gives row r 50 + r)
    pred = true + rng.normal(0, 3, len(rows))
    result = report_predictions(
        predictions_for(rows, true, pred), tmp_path / "run" / "best.pt", 3, action_store, "train", (50, 60)
    )
    actions = np.asarray(ACTIONS)[rows]
    expected = {
        action: spearmanr(pred[actions == action], true[actions == action]).statistic
        for action in set(ACTIONS)
    }
    assert set(result["per_action"]) == set(ACTIONS)
    for action, rho in expected.items():
        assert result["per_action"][action]["rho"] == pytest.approx(rho)
        assert result["per_action"][action]["samples"] == ACTIONS.count(action)
    rhos = np.array(list(expected.values()))
    assert result["rho_fisher_z"] == pytest.approx(np.tanh(np.arctanh(rhos).mean()))
    # each action's R-l2 uses its own score range over the store: diving 50 ... 53
    diving = actions == "diving"
    assert result["per_action"]["diving"]["r_l2"] == pytest.approx(
        100 * np.mean(((pred[diving] - true[diving]) / 3) ** 2)
    )
    print_evaluation(result, as_json=True)
    assert json.loads(capsys.readouterr().out)["per_action"]["gym_vault"]["samples"] == 4
    print_evaluation({**result, "notices": []})
    table = capsys.readouterr().out
    assert "Fisher-z average" in table and "ski_big_air" in table
    assert f"{result['rho_fisher_z']:.4f}" in table


def test_a_store_without_actions_has_no_per_action_report(tmp_path: Path) -> None:
    store = write_store(tmp_path, "plain", [sample(f"s{row}", row) for row in range(4)])
    true = 50.0 + np.arange(4.0)
    result = report_predictions(
        predictions_for([0, 1, 2, 3], true, true[::-1].copy()),
        tmp_path / "run" / "best.pt",
        1,
        store,
        "train",
        (50, 53),
    )
    assert "per_action" not in result and "rho_fisher_z" not in result
    assert result["rho"] == pytest.approx(-1.0)


def test_heads_on_features_get_the_actions_of_the_video_store_behind_them(
    action_store: Path, tmp_path: Path
) -> None:
    """A feature store records the video store it was extracted from; its ids are that store's."""
    import h5py

    from aqa_cli.evaluation.per_action import per_action_metrics
    from aqa_cli.stores.feature_store import FORMAT_NAME

    features = tmp_path / "f.features.h5"
    with h5py.File(features, "w") as f:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["video_store"] = json.dumps({"path": str(action_store)})
    ids = np.array([f"s{row}" for row in range(len(ACTIONS))])
    true = 50.0 + np.arange(len(ACTIONS), dtype=float)
    found = per_action_metrics(features, ids, true.copy(), true)
    assert {action: entry["samples"] for action, entry in found["per_action"].items()} == {
        "diving": 4,
        "gym_vault": 4,
        "ski_big_air": 3,
    }
    assert found["rho_fisher_z"] == pytest.approx(1.0, abs=1e-5)
    with h5py.File(features, "r+") as f:
        del f.attrs["video_store"]  # imported features: no video store, no per-action report
    assert per_action_metrics(features, ids, true, true) is None
