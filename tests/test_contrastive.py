"""Contrastive (exemplar-based) regression: it learns on a generated store with any aggregation, its
exemplars come from the training split only (recorded in the checkpoint, and proven by poisoning the
test split), and eval runs from the checkpoint alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from aqa_cli.checkpoints.io import LAST, load_checkpoint
from aqa_cli.checkpoints.restore import load_head
from aqa_cli.evaluation.evaluate import evaluate_checkpoint
from aqa_cli.stores.feature_store import FeatureStore
from aqa_cli.training.contrastive import choose_exemplars
from tests.helpers import run_aqa
from tests.test_long_integration import write_long_layout

TRAIN = ["--contrastive", "--exemplars", "3", "--epochs", "20", "--lr", "3e-3", "--device", "cpu"]


def import_layout(root: Path) -> Path:
    run_aqa("features", "import", root, "--out", root / "store.h5", "--dtype", "float32", check=0)
    return root / "store.h5"


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[Path, Path]:
    """The generated layout, and a copy whose test videos' features and scores are replaced by noise."""
    clean = tmp_path_factory.mktemp("clean")
    write_long_layout(clean)
    poisoned = tmp_path_factory.mktemp("poisoned")
    shutil.copytree(clean, poisoned, dirs_exist_ok=True)
    lines = (poisoned / "labels.csv").read_text().splitlines()
    rng = np.random.default_rng(5)
    for i, line in enumerate(lines[1:], start=1):
        sample, difficulty, _, split = line.split(",")
        if split == "test":
            path = poisoned / "feats" / f"{sample}.npy"
            np.save(path, 50 * rng.normal(size=np.load(path).shape).astype(np.float32))
            lines[i] = f"{sample},{difficulty},{rng.uniform(0, 30):.4f},{split}"
    (poisoned / "labels.csv").write_text("\n".join(lines) + "\n")
    return import_layout(clean), import_layout(poisoned)


@pytest.mark.parametrize("agg", ["attn"])
def test_contrastive_regression_learns_and_its_exemplars_are_training_videos(
    stores: tuple[Path, Path], tmp_path: Path, agg: str
) -> None:
    store = stores[0]
    run = tmp_path / "run"
    run_aqa("train", "--features", store, "--out", run, "--agg", agg, *TRAIN, check=0)
    payload = load_checkpoint(run / LAST)
    contrastive = payload["model_config"]["contrastive"]
    assert (contrastive["exemplars"], contrastive["rule"], contrastive["seed"]) == (3, "difficulty", 0)
    with FeatureStore(store) as features:
        train_ids = set(features.column("id")[features.column("split") == "train"].tolist())
    assert set(contrastive["ids"]) <= train_ids  # 3 fallback + 3 per difficulty (2 and 3)
    assert contrastive["bank"][0] == len(contrastive["ids"]) == 9
    head = load_head(payload, run / LAST)  # the checkpoint alone carries the bank
    assert head.bank_group.isnan().sum() == 3 and sorted(set(head.bank_group[3:].tolist())) == [2.0, 3.0]
    assert evaluate_checkpoint(None, run / LAST, None, "test", "cpu", 8)["rho"] > 0.6


def test_no_exemplar_and_no_gradient_comes_from_the_test_split(
    stores: tuple[Path, Path], tmp_path: Path
) -> None:
    """Poisoned test videos (features and scores) change neither the trained weights nor the bank, so
    the predictions for the training videos are the same bit for bit."""
    runs = []
    for name, store in zip(("clean", "poisoned"), stores, strict=True):
        run = tmp_path / name
        run_aqa("train", "--features", store, "--out", run, "--agg", "avg", *TRAIN, "--epochs", "2", check=0)
        runs.append(load_checkpoint(run / LAST))
    clean, poisoned = runs
    assert clean["model_config"]["contrastive"] == poisoned["model_config"]["contrastive"]
    for key, value in clean["model"].items():
        assert np.array_equal(value.numpy(), poisoned["model"][key].numpy(), equal_nan=True), key


def test_the_bank_draws_only_the_given_rows() -> None:
    difficulties = np.array([2.0, 3.0, 2.0, 3.0, 2.0, 9.0, 9.0, 9.0])
    bank = choose_exemplars([0, 1, 2, 3], difficulties, 2, seed=4)
    assert set(bank["rows"]) <= {0, 1, 2, 3} and bank["rule"] == "difficulty"
    assert sorted(g for g in bank["groups"] if g == g) == [2.0, 2.0, 3.0, 3.0]
    assert choose_exemplars([0, 1, 2], np.full(8, np.nan), 5, seed=4)["rule"] == "seed"


def test_a_resumed_contrastive_run_ends_as_an_uninterrupted_one(
    stores: tuple[Path, Path], tmp_path: Path
) -> None:
    from aqa_cli.training.dispatch import train
    from tests.test_long_integration import StopAfter, Stopped, feature_config

    settings = {"contrastive": True, "exemplars": 2, "batch_size": 8, "epochs": 3, "lr": 3e-3}
    train(feature_config(stores[0], tmp_path / "straight", "attn", **settings))
    with pytest.raises(Stopped):
        train(feature_config(stores[0], tmp_path / "resumed", "attn", **settings), progress=StopAfter(1))
    train(feature_config(stores[0], tmp_path / "resumed", "attn", **settings), resume=True)
    straight = load_checkpoint(tmp_path / "straight" / LAST)["model"]
    resumed = load_checkpoint(tmp_path / "resumed" / LAST)["model"]
    assert straight.keys() == resumed.keys()
    for key in straight:  # the bank's fallback groups are NaN
        assert np.array_equal(straight[key].numpy(), resumed[key].numpy(), equal_nan=True), key
