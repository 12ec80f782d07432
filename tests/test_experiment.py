"""`aqa experiment`: a tiny grid gives a complete Table I/II-shaped table; failed cells are reported, not
fatal; reruns reuse what is done; imported features, fine-tuning, weights matching and the ridge baseline."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from aqa_cli.evaluation.ridge import ridge_fit
from aqa_cli.pipelines.experiment import Cell, resolve_grid, run_experiment, weights_for
from aqa_cli.util.errors import AqaError

TINY = ["--depth", "10", "--conv", "3d", "--clip", "8", "--frames", "16", "--crop", "48", "--workers", "0"]
TRAIN = ["--epochs", "2", "--batch-size", "4", "--lr", "1e-3", "--val-fraction", "0.25"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from tests.test_features import synthetic_store

    return synthetic_store(tmp_path_factory.mktemp("grid"), videos=12, seed=3)


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_tiny_grid_gives_the_table_and_reports_a_failed_cell(store: Path, tmp_path: Path, aqa) -> None:
    out = tmp_path / "grid"
    grid = [
        "experiment",
        "--store",
        store,
        "--out",
        out,
        *TINY,
        "--depth",
        "11",
        "--agg",
        "avg",
        "--agg",
        "wd",
    ]
    result = aqa(*grid, "--seeds", "2", *TRAIN, check=0)
    assert {p.name for p in out.iterdir()} >= {
        "table.md",
        "table.csv",
        "table.png",
        "results.csv",
        "experiment.toml",
    }
    table = (out / "table.md").read_text()
    assert "| depth | conv | clip | avg rho | wd rho | ridge rho | avg R-l2 | wd R-l2 | ridge R-l2 |" in table
    good = next(line for line in table.splitlines() if line.startswith("| 10 | 3d | 8 |"))
    assert good.count("±") == 6 and "failed" not in good
    bad = next(line for line in table.splitlines() if line.startswith("| 11 | 3d | 8 |"))
    assert bad.count("failed") == 6
    assert "no ResNet of depth 11" in table and good in result.stdout
    rows = read_csv(out / "table.csv")
    assert [(r["depth"], r["agg"], r["seeds"], r["failed"]) for r in rows] == [
        ("10", "avg", "2", "0"),
        ("10", "wd", "2", "0"),
        ("10", "ridge", "2", "0"),
        ("11", "avg", "0", "2"),
        ("11", "wd", "0", "2"),
        ("11", "ridge", "0", "2"),
    ]
    runs = read_csv(out / "results.csv")
    assert len(runs) == 12 and all(-1 <= float(r["rho"]) <= 1 for r in runs if r["depth"] == "10")
    assert len(list((out / "features").glob("*.features.h5"))) == 1  # extracted once for 2 aggs x 2 seeds

    again = run_experiment(resolve_grid(out / "experiment.toml", {}))  # everything is reused
    assert [(r.rho, r.r_l2) for r in again["results"] if not r.error] == [
        (float(r["rho"]), float(r["r_l2"])) for r in runs if not r["error"]
    ]
    assert all(r.seconds < 5 for r in again["results"])


def test_imported_features_grid_over_targets_aggregations_and_seeds(tmp_path: Path) -> None:
    from aqa_cli.pipelines.import_features import import_features
    from tests.test_features import write_layout

    (tmp_path / "feats").mkdir()
    write_layout(tmp_path)
    features = import_features(tmp_path, tmp_path / "f.h5").out
    options = {"features": str(features), "agg": ["avg", "wd"], "target": ["score", "execution"], "seeds": 2}
    train = {"epochs": 2, "batch_size": 4, "val_fraction": 0.3, "device": "cpu"}
    outcome = run_experiment(resolve_grid(None, {**options, **train, "out": str(tmp_path / "grid")}))
    assert [row["cell"].target for row in outcome["summary"]] == ["score", "execution"]
    assert all(row[agg]["seeds"] == 2 for row in outcome["summary"] for agg in ("avg", "wd", "ridge"))
    table = (tmp_path / "grid" / "table.md").read_text()
    assert "| target | avg rho | wd rho | ridge rho |" in table and "| execution |" in table


def test_finetune_trains_each_run_end_to_end(store: Path, tmp_path: Path) -> None:
    options = dict(zip(TINY[::2], TINY[1::2], strict=True))
    grid = {key.removeprefix("--"): [int(v)] if v.isdigit() else v for key, v in options.items()}
    grid = {**grid, "conv": ["3d"], "crop": 48, "frames": 16, "workers": 0, "agg": ["avg"], "seeds": 1}
    outcome = run_experiment(
        resolve_grid(None, {**grid, "finetune": True, "store": str(store), "epochs": 1, "out": str(tmp_path)})
    )
    (result,) = outcome["results"]
    assert not result.error and np.isfinite(result.rho) and outcome["aggregations"] == ["avg"]
    assert (Path(result.run_dir) / "last.pt").is_file() and not (tmp_path / "features").exists()


def test_grid_settings_are_checked_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "grid.toml").write_text('depth = [34]\ncolour = "blue"\n[train]\nepochs = 2\n')
    with pytest.raises(AqaError, match="unknown setting\\(s\\) colour"):
        resolve_grid(tmp_path / "grid.toml", {})
    with pytest.raises(AqaError, match="setting epochs = 'two' should be a int"):
        resolve_grid(None, {"epochs": "two"})
    with pytest.raises(AqaError, match="cannot be combined with --features"):
        resolve_grid(None, {"finetune": True, "features": "f.h5"})
    (tmp_path / "grid.toml").write_text("depth = [34]\nseeds = 5\n[train]\nepochs = 2\n")
    grid = resolve_grid(tmp_path / "grid.toml", {"depth": [50], "seeds": 2})
    assert grid.depth == [50] and grid.seeds == 2 and grid.train == {"epochs": 2}


def test_weights_are_matched_to_cells_by_architecture_and_clip_length(monkeypatch) -> None:
    held = {
        "ig65m_r2plus1d_34_clip8.pth": (34, "2plus1d"),
        "ig65m_r2plus1d_34_clip32.pth": (34, "2plus1d"),
        "r2p1d34_K_200ep.pth": (34, "2plus1d"),
        "r3d50_K_200ep.pth": (50, "3d"),
    }
    monkeypatch.setattr("aqa_cli.pipelines.experiment.weights_path", lambda value: value)  # no registry
    monkeypatch.setattr(
        "aqa_cli.pipelines.experiment.read_weights",
        lambda path: SimpleNamespace(depth=held[path][0], conv=held[path][1], path=Path(path)),
    )
    files = list(held)
    assert weights_for(Cell(34, "2plus1d", 32, ""), files) == "ig65m_r2plus1d_34_clip32.pth"
    assert weights_for(Cell(34, "2plus1d", 16, ""), files) == "r2p1d34_K_200ep.pth"
    assert weights_for(Cell(50, "3d", 16, ""), files) == "r3d50_K_200ep.pth"
    assert weights_for(Cell(34, "3d", 16, ""), []) == ""
    with pytest.raises(AqaError, match="no --weights file holds a 3d ResNet-34"):
        weights_for(Cell(34, "3d", 16, ""), files)


def test_ridge_recovers_a_linear_rule() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + 7.0
    weights, bias = ridge_fit(x, y, 1e-6)
    np.testing.assert_allclose(weights, [1.0, -2.0, 0.5, 0.0, 3.0], atol=1e-6)
    assert bias == pytest.approx(7.0)
    shrunk, _ = ridge_fit(x, y, 1e4)
    assert np.abs(shrunk).sum() < np.abs(weights).sum() / 5


def test_ridge_without_a_validation_split_chooses_its_penalty_by_folds_inside_train(tmp_path: Path) -> None:
    """Quality is a linear function of the mean clip features: ridge finds it with its penalty chosen by
    5 folds of the 30 training videos when no validation split is held out (test is only predicted)."""
    from aqa_cli.evaluation.ridge import ridge_baseline
    from aqa_cli.pipelines.import_features import import_features

    rng = np.random.default_rng(1)
    direction = rng.normal(size=8)
    lines = ["id,score,split"]
    (tmp_path / "feats").mkdir()
    for k in range(40):
        clips = rng.normal(size=(2 + k % 4, 8)) + rng.normal(size=8)
        np.save(tmp_path / "feats" / f"v{k}.npy", clips.astype(np.float32))
        lines.append(
            f"v{k},{50 + 5 * clips.mean(axis=0) @ direction:.4f},{'test' if k % 4 == 3 else 'train'}"
        )
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    features = str(import_features(tmp_path, tmp_path / "f.h5").out)
    by_folds = ridge_baseline(features, "score", 0.0, seed=0)
    on_validation = ridge_baseline(features, "score", 0.25, seed=0)
    assert by_folds["rho"] > 0.9 and on_validation["rho"] > 0.8
    assert by_folds != on_validation  # fitted on all 30 training videos, not on 22
