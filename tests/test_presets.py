"""Presets (`--preset`): a named whole recipe resolves to its documented settings, flags override it, and a
preset run trains; the GDLT triplet term; the cosine schedule's floor."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch

from aqa_cli.checkpoints.io import LAST, load_checkpoint
from aqa_cli.checkpoints.restore import load_head
from aqa_cli.models.long_heads import gdlt_hardest_triplet_loss
from aqa_cli.training.config import GDLT_LAYOUTS, TrainConfig, resolve_config, resolve_head_defaults
from aqa_cli.training.presets import PRESETS
from aqa_cli.util.errors import AqaError
from tests.test_long_integration import long_store  # noqa: F401 - the fixture

GDLT_FISV = {
    "agg": "gdlt",
    "width": 256,
    "proj_hidden": 512,
    "encoder_layers": 1,
    "decoder_layers": 2,
    "queries": 4,
    "gdlt_layout": "code",
    "dropout": 0.7,
    "optimizer": "sgd",
    "lr": 0.01,
    "weight_decay": 1e-4,
    "schedule": "cosine",
    "min_lr": 1e-4,
    "batch_size": 32,
    "clip_crop": 124,
    "loss": "mse",
    "triplet": 0.5,
    "triplet_margin": 1.0,
    "triplet_mining": "hardest",
}


@pytest.mark.parametrize(
    ("target", "epochs", "scale"), [("TES", 320, 45.0), ("PCS", 400, 40.0), ("x", 320, 0)]
)
def test_the_gdlt_preset_is_the_published_recipe_for_each_target(
    target: str, epochs: int, scale: float
) -> None:
    config = resolve_head_defaults(resolve_config(None, {"preset": "gdlt-fisv", "target": target}))
    assert {name: getattr(config, name) for name in GDLT_FISV} == GDLT_FISV
    assert (config.epochs, config.label_scale) == (epochs, scale)


def test_flags_override_a_preset_and_its_head_options_follow_the_head() -> None:
    given = {"preset": "gdlt-fisv", "target": "TES", "agg": "attn", "lr": 0.002, "epochs": 5, "width": 64}
    config = resolve_head_defaults(resolve_config(None, given))
    assert (config.agg, config.lr, config.epochs, config.width) == ("attn", 0.002, 5, 64)
    assert (config.optimizer, config.label_scale, config.queries) == ("sgd", 45.0, -1)  # no queries in attn
    assert config.gdlt_layout == ""  # nor gdlt's layout


def test_a_preset_run_records_its_settings_and_trains(long_store: Path, tmp_path: Path, aqa) -> None:  # noqa: F811
    run = tmp_path / "run"
    args = ["--features", long_store, "--preset", "gdlt-fisv", "--out", run, "--device", "cpu"]
    aqa(
        "train",
        *args,
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--clip-crop",
        "5",
        "--label-scale",
        "20",
        check=0,
    )
    config = tomllib.loads((run / "config.toml").read_text())
    assert {**config, "batch_size": 32, "clip_crop": 124} | GDLT_FISV == {
        **config,
        "batch_size": 32,
        "clip_crop": 124,
    }
    assert (config["epochs"], config["batch_size"], config["clip_crop"], config["target"]) == (
        3,
        8,
        5,
        "score",
    )
    payload = load_checkpoint(run / LAST)
    options = payload["model_config"]["head_options"]
    assert (options["width"], options["proj_hidden"], options["queries"], options["dropout"]) == (
        256,
        512,
        4,
        0.7,
    )
    assert {name: options[name] for name in GDLT_LAYOUTS["code"]} == GDLT_LAYOUTS["code"]
    head = load_head(payload, run / LAST)
    assert any(isinstance(layer, torch.nn.BatchNorm1d) for layer in head.long.clip_layers)
    assert head.long.decoder[0].cross_attn.weight_dropout.p == 0.7  # dropout on the attention weights
    assert not head.standardize and head.feature_mean.abs().sum() == 0 and (head.feature_std == 1).all()
    assert load_head(payload, run / LAST).quality_range.tolist() == [0.0, 20.0]  # the fixed label scale
    assert payload["metrics"][-1]["lr"] == pytest.approx(1e-4)  # the cosine ends at min_lr
    assert all(row["train_loss"] > 0 for row in payload["metrics"])
    help_text = aqa("train", "--help", check=0).stdout
    assert "--preset" in help_text and "gdlt-fisv" in help_text
    wrong = aqa("train", *args, "--preset", "nope", check=2)
    assert "nope" in wrong.stderr and "Traceback" not in wrong.stderr


def test_every_preset_names_a_known_head_and_known_settings() -> None:
    known = {field for field in TrainConfig.__dataclass_fields__}
    for preset in PRESETS.values():
        assert set(preset.values("any")) | set(preset.run) <= known and preset.agg in (
            "avg",
            "wd",
            "attn",
            "gdlt",
        )


def test_the_hardest_triplet_term_is_zero_when_queries_are_apart_by_the_margin() -> None:
    queries = torch.eye(4, 8)  # 4 orthogonal query outputs, the same in every video: cosine distance 1
    embed = queries.expand(3, 4, 8).clone()
    assert gdlt_hardest_triplet_loss(embed, margin=1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert gdlt_hardest_triplet_loss(embed, margin=1.5).item() == pytest.approx(0.5, abs=1e-6)
    embed[0, 0] = queries[1]  # video 0's query 0 sits on query 1: its positive is far, its negative near
    assert gdlt_hardest_triplet_loss(embed, margin=1.0).item() > 0.1


def test_an_experiment_with_a_preset_runs_its_head_unless_agg_is_given() -> None:
    from aqa_cli.pipelines.experiment import resolve_grid

    grid = resolve_grid(None, {"features": "f.h5", "preset": "gdlt-fisv", "epochs": 3})
    assert grid.agg == ["gdlt"] and grid.train == {"preset": "gdlt-fisv", "epochs": 3}
    assert resolve_grid(None, {"features": "f.h5", "preset": "gdlt-fisv", "agg": ["attn"]}).agg == ["attn"]


def test_a_preset_sets_run_settings_unless_they_are_given() -> None:
    from aqa_cli.pipelines.experiment import resolve_grid

    config = resolve_config(None, {"preset": "attn-contrastive-ensemble"})
    assert (config.agg, config.contrastive, config.exemplars, config.ensemble) == ("attn", True, 10, 3)
    blended = resolve_config(None, {"preset": "attn-ridge-ensemble"})
    assert (blended.agg, blended.contrastive, blended.ensemble) == ("attn", False, 3)
    assert (blended.ridge_blend, blended.ridge_pool) == (0.5, "mean-max")
    auxiliary = {
        target: resolve_head_defaults(
            resolve_config(None, {"preset": "attn-ridge-aux-ensemble", "target": target})
        )
        for target in ("TES", "PCS", "score")
    }
    assert [auxiliary[target].aux_target for target in ("TES", "PCS", "score")] == ["PCS", "", ""]
    assert {(c.ensemble, c.ridge_blend, c.ridge_pool, c.aux_weight) for c in auxiliary.values()} == {
        (3, 0.5, "mean-max", 0.5)
    }
    given = resolve_config(None, {"preset": "attn-contrastive-ensemble", "contrastive": False, "ensemble": 2})
    assert (given.contrastive, given.exemplars, given.ensemble) == (False, 10, 2)
    grid = resolve_grid(None, {"features": "f.h5", "preset": "attn-contrastive-ensemble", "ensemble": 5})
    assert grid.agg == ["attn"]
    assert grid.train == {
        "preset": "attn-contrastive-ensemble",
        "contrastive": True,
        "exemplars": 10,
        "ensemble": 5,
    }


def test_the_ensembles_of_an_experiment_share_no_member(long_store: Path, tmp_path: Path, aqa) -> None:  # noqa: F811
    out = tmp_path / "grid"
    args = ["--features", long_store, "--agg", "attn", "--ensemble", "2", "--seeds", "2", "--epochs", "1"]
    aqa("experiment", *args, "--device", "cpu", "--out", out, check=0)
    members = {
        run.name: sorted(path.name for path in (run / "members").iterdir())
        for run in (out / "runs").iterdir()
    }
    assert sorted(members.values()) == [["seed0", "seed1"], ["seed2", "seed3"]]


def test_the_gdlt_layout_is_a_gdlt_setting_and_fills_its_head_options() -> None:
    from aqa_cli.training.config import head_options
    from aqa_cli.training.loop import check_optimisation

    code = resolve_head_defaults(resolve_config(None, {"agg": "gdlt", "gdlt_layout": "code"}))
    assert {name: head_options(code)[name] for name in GDLT_LAYOUTS["code"]} == GDLT_LAYOUTS["code"]
    ours = resolve_head_defaults(resolve_config(None, {"agg": "gdlt"}))
    assert {name: head_options(ours)[name] for name in GDLT_LAYOUTS["aqa"]} == GDLT_LAYOUTS["aqa"]
    with pytest.raises(AqaError, match="not a setting of --agg attn"):
        check_optimisation(
            resolve_head_defaults(resolve_config(None, {"agg": "attn", "gdlt_layout": "code"}))
        )
    with pytest.raises(AqaError, match="unknown --gdlt-layout"):
        check_optimisation(
            resolve_head_defaults(resolve_config(None, {"agg": "gdlt", "gdlt_layout": "paper"}))
        )
