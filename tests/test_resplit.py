"""`--resplit`: a store's train/test partition re-drawn by a seed (same sizes, from their union), recorded
in the run so that `aqa eval` measures the same test videos, with contrastive exemplars from its train."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from aqa_cli.checkpoints.io import LAST, load_checkpoint
from aqa_cli.data.splits import SplitPlan, split_by_column
from aqa_cli.stores.feature_store import FeatureStore
from tests.helpers import run_aqa
from tests.test_long_integration import write_long_layout

COLUMN = np.array(["train"] * 30 + ["test"] * 10 + ["val"] * 4)


def test_a_redrawn_partition_keeps_the_sizes_and_the_val_split_and_depends_on_its_seed() -> None:
    store_split = split_by_column(COLUMN, SplitPlan())
    first = split_by_column(COLUMN, SplitPlan(resplit=1))
    assert first == split_by_column(COLUMN, SplitPlan(resplit=1))  # drawn by the seed alone
    assert first != split_by_column(COLUMN, SplitPlan(resplit=2))
    assert (len(first["train"]), len(first["test"])) == (30, 10)
    assert sorted(first["train"] + first["test"]) == list(range(40))
    assert first["val"] == store_split["val"] == list(range(40, 44))
    assert set(first["test"]) - set(store_split["test"])  # not the store's own partition
    held = split_by_column(COLUMN, SplitPlan(val_fraction=0.2, resplit=1))
    assert held["test"] == first["test"] and len(held["val"]) == 4 + 6
    assert sorted(held["train"] + sorted(set(held["val"]) - set(first["val"]))) == sorted(
        first["train"]
    )  # the validation videos are held out of the re-drawn train
    assert SplitPlan.of({"val_fraction": 0.2, "seed": 3}) == SplitPlan(0.2, 3)  # a run from before resplit


def test_a_resplit_run_is_evaluated_on_its_own_test_videos_with_exemplars_from_its_train(
    tmp_path: Path,
) -> None:
    write_long_layout(tmp_path)
    store = tmp_path / "store.h5"
    run_aqa("features", "import", tmp_path, "--out", store, "--dtype", "float32", check=0)
    run = tmp_path / "run"
    args = ["--agg", "attn", "--contrastive", "--exemplars", "2", "--epochs", "2", "--device", "cpu"]
    run_aqa("train", "--features", store, "--out", run, "--resplit", "4", *args, check=0)
    with FeatureStore(store) as features:
        ids, column = features.column("id"), features.column("split")
    rows = split_by_column(column, SplitPlan(resplit=4))
    redrawn_test, redrawn_train = set(ids[rows["test"]].tolist()), set(ids[rows["train"]].tolist())
    assert redrawn_test - set(ids[column == "test"].tolist())  # the partition really changed

    run_aqa("eval", "--run", run, check=0)
    with h5py.File(run / "predictions-test.h5") as f:
        evaluated = {name.decode() for name in f["id"][()]}
    assert evaluated == redrawn_test
    payload = load_checkpoint(run / LAST)
    assert payload["train_config"]["resplit"] == 4
    assert set(payload["model_config"]["contrastive"]["ids"]) <= redrawn_train


def test_a_negative_resplit_is_one_clear_line(tmp_path: Path) -> None:
    found = run_aqa("train", "--features", tmp_path / "x.h5", "--resplit", "-1", check=2)
    assert "--resplit must be a seed >= 1" in found.stderr and "Traceback" not in found.stderr
