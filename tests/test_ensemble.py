"""Ensembles (`--ensemble N`, with a blended ridge: `--ridge-blend W`) and contrastive checkpoints as one
model: eval and score from the checkpoint alone (a frozen backbone's features of synthetic dives), the
members' spread reported, resumption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aqa_cli.checkpoints.io import LAST, load_checkpoint
from aqa_cli.data.splits import SplitPlan, labelled_splits
from aqa_cli.evaluation.evaluate import evaluate_checkpoint
from aqa_cli.evaluation.metrics import metrics, score_span
from aqa_cli.evaluation.ridge import (
    RIDGE_LAMBDAS,
    difficulty_scale,
    fit_ridge,
    pooled_features,
    ridge_baseline,
)
from aqa_cli.models.heads import RidgeMember
from aqa_cli.pipelines.import_features import import_features
from aqa_cli.stores.feature_store import FeatureStore
from aqa_cli.training.config import TrainConfig
from aqa_cli.training.dispatch import train
from aqa_cli.training.ensemble import ridge_member
from aqa_cli.training.heads import with_target
from aqa_cli.util.errors import AqaError
from tests.test_action_exemplars import stores  # noqa: F401 - the fixture
from tests.test_features import dives, extracted  # noqa: F401 - the fixtures
from tests.test_long_integration import feature_config, long_store  # noqa: F401 - the fixture

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


def test_a_ridge_blend_is_the_heads_and_the_ridge_baseline_averaged_in_eval_and_score(
    dives: Path,  # noqa: F811
    extracted: Path,  # noqa: F811
    tmp_path: Path,
    aqa,
) -> None:
    """`--ridge-blend W`: every score is (1 - W) x the heads-only ensemble's + W x the ridge's; at W = 1 the
    checkpoint is the experiments' ridge baseline (fitted on train, quality x difficulty); `aqa score` of a
    video blends the same way, and the spread stays the learned members'."""
    import h5py

    video = sorted((dives.parent / "videos").glob("*.mp4"))[0]
    evaluated, scored = {}, {}
    for weight in ("0", "0.5", "1"):
        run = tmp_path / f"blend-{weight}"
        aqa(
            "train",
            "--features",
            extracted,
            "--out",
            run,
            "--ensemble",
            "2",
            "--ridge-blend",
            weight,
            *TRAIN,
            check=0,
        )
        evaluated[weight] = evaluate_checkpoint(run, None, None, "test", "cpu", 8)
        with h5py.File(evaluated[weight]["predictions"], "r") as f:
            evaluated[weight]["scores"] = f["score"][()]
        scored[weight] = json.loads(
            aqa(
                "score", video, "--difficulty", "2.5", "--run", run, "--json", "--device", "cpu", check=0
            ).stdout
        )[0]
    ridge = ridge_baseline(str(extracted), "", 0.0, seed=0)
    assert evaluated["1"]["rho"] == pytest.approx(ridge["rho"], abs=1e-6)
    assert evaluated["1"]["r_l2"] == pytest.approx(ridge["r_l2"], rel=1e-4)
    heads, linear = evaluated["0"]["scores"], evaluated["1"]["scores"]
    assert not np.allclose(heads, linear, atol=1e-2)  # two different predictors, so the blend is a real mix
    np.testing.assert_allclose(evaluated["0.5"]["scores"], (heads + linear) / 2, rtol=1e-5, atol=1e-4)
    assert evaluated["0.5"]["member_spread"] == pytest.approx(evaluated["0"]["member_spread"], rel=1e-5)
    assert scored["0.5"]["score"] == pytest.approx(
        (scored["0"]["score"] + scored["1"]["score"]) / 2, abs=1e-3
    )
    ridge_record = load_checkpoint(tmp_path / "blend-0.5" / LAST)["model_config"]["ridge"]
    assert ridge_record["weight"] == 0.5 and ridge_record["penalty"] in RIDGE_LAMBDAS
    assert "ridge" not in load_checkpoint(tmp_path / "blend-0" / LAST)["model_config"]

    with pytest.raises(AqaError, match="add --ensemble"):
        train(TrainConfig(features=str(extracted), ridge_blend=0.5, out=str(tmp_path / "alone")))


def test_the_blended_ridge_sees_no_test_video(stores: dict[str, Path]) -> None:  # noqa: F811
    """The ridge a checkpoint carries is fitted on training videos only: with the test split's features and
    scores replaced by noise, its penalty and every weight are the same, bit for bit."""
    fits = [
        ridge_member(
            with_target(
                TrainConfig(features=str(stores[name]), ensemble=2, ridge_blend=0.5, ridge_pool="mean-max")
            )
        )
        for name in ("actions", "poisoned")
    ]
    assert (
        fits[0][0] == fits[1][0] == {"weight": 0.5, "penalty": fits[0][0]["penalty"], "pooling": "mean-max"}
    )
    assert fits[0][1].keys() == {"ridge.mean", "ridge.std", "ridge.weights", "ridge.bias"}
    for key, tensor in fits[0][1].items():
        assert torch.equal(tensor, fits[1][1][key]), key
    assert fits[0][1]["ridge.weights"].abs().sum() > 0


@pytest.mark.parametrize("pooling", ["mean", "mean-max"])
def test_the_blended_ridge_of_videos_of_any_length_is_the_ridge_fitted_on_their_pooled_clips(
    long_store: Path,  # noqa: F811
    tmp_path: Path,
    pooling: str,
) -> None:
    """`--ridge-pool`: the checkpoint's ridge (`--ridge-blend 1`) on padded batches of 6-20 clip videos
    predicts what the ridge fitted on the stores' pooled clips predicts; in this store one clip per video
    carries the score, which the clips' maximum finds and their mean dilutes."""
    run = tmp_path / pooling
    settings = {"ensemble": 2, "ridge_blend": 1.0, "ridge_pool": pooling, "epochs": 1, "test_curve": False}
    train(feature_config(long_store, run, "attn", **settings))
    evaluated = evaluate_checkpoint(run, None, None, "test", "cpu", 8)
    with FeatureStore(long_store) as store:
        pooled, scores = pooled_features(store, pooling), store.scores("score")
        scale, split = difficulty_scale(store.column("difficulty")), store.column("split")
        span = score_span(scores, long_store, "score")
    train_rows = [row for row, name in enumerate(split) if name == "train"]
    test = np.array([row for row, name in enumerate(split) if name == "test"])
    expected = metrics(
        fit_ridge(pooled, scores, scale, train_rows, [], span).quality(pooled[test]) * scale[test],
        scores[test],
        span,
    )
    assert evaluated["rho"] == pytest.approx(expected["rho"], abs=1e-6)
    assert evaluated["r_l2"] == pytest.approx(expected["r_l2"], rel=1e-4)
    assert (evaluated["rho"] > 0.9) == (pooling == "mean-max")


def test_the_ridge_member_pools_only_the_real_clips() -> None:
    """Padded slots (here 100s) change neither the mean nor the maximum the ridge reads."""
    torch.manual_seed(0)
    ridge = RidgeMember(4, "mean-max")
    ridge.weights.normal_()
    videos = [torch.randn(clips, 4) for clips in (2, 5)]
    padded = torch.full((2, 5, 4), 100.0)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    for index, video in enumerate(videos):
        padded[index, : len(video)], mask[index, : len(video)] = video, True
    alone = torch.cat([ridge(video[None]) for video in videos])
    torch.testing.assert_close(ridge(padded, mask), alone)
    assert not torch.allclose(ridge(padded), alone)


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


def write_two_score_layout(root: Path) -> Path:
    """60 videos (45 train, 15 test) of 4..9 clips whose channel 0 carries a quality q; two score columns:
    `noisy` = 10 q + N(0, 3) (the target) and `clean` = 10 q + N(0, 0.2) (its auxiliary, as PCS is for TES)."""
    rng = np.random.default_rng(3)
    (root / "feats").mkdir(parents=True)
    lines = ["id,noisy,clean,split"]
    for k in range(60):
        quality = rng.uniform(0, 1)
        features = rng.normal(size=(4 + k % 6, 8)).astype(np.float32)
        features[:, 0] = quality + 0.1 * rng.normal(size=len(features))
        np.save(root / "feats" / f"v{k:02d}.npy", features)
        noisy, clean = 10 * quality + rng.normal(0, 3), 10 * quality + rng.normal(0, 0.2)
        lines.append(f"v{k:02d},{noisy:.4f},{clean:.4f},{'test' if k % 4 == 3 else 'train'}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return import_features(root, root / "store.h5", dtype="float32").out


def test_an_auxiliary_target_is_its_own_ensemble_mapped_by_the_training_labels_line(
    tmp_path: Path, aqa
) -> None:
    """`--aux-target clean`: the same ensemble trained on the other score column (RUN/auxiliary/), its quality
    mapped onto the target by the least-squares line through the TRAINING videos' two labels, averaged in with
    --aux-weight's share; eval from the checkpoint alone (the command line, no flags) gives exactly that.
    Ridge-only ensembles (--ridge-blend 1) make both predictors closed-form: the cleaner label must help."""
    store = write_two_score_layout(tmp_path / "layout")
    settings = dict(ensemble=2, ridge_blend=1.0, epochs=1, batch_size=8, test_curve=False, target="noisy")
    train(feature_config(store, tmp_path / "alone", "attn", **settings))
    train(feature_config(store, tmp_path / "aux", "attn", aux_target="clean", aux_weight=0.5, **settings))
    alone = evaluate_checkpoint(tmp_path / "alone", None, None, "test", "cpu", 8)
    blended = json.loads(aqa("eval", "--run", tmp_path / "aux", "--json", check=0).stdout)
    auxiliary = evaluate_checkpoint(tmp_path / "aux" / "auxiliary", None, None, "test", "cpu", 8)
    import h5py

    scores = {}
    for name, found in (("alone", alone), ("blended", blended), ("auxiliary", auxiliary)):
        with h5py.File(found["predictions"], "r") as f:
            scores[name] = f["score"][()]
    record = load_checkpoint(tmp_path / "aux" / LAST)["model_config"]["auxiliary"]
    assert (record["target"], record["weight"]) == ("clean", 0.5)
    assert record["model_config"]["ridge"]["weight"] == 1.0 and len(record["model_config"]["members"]) == 2
    with FeatureStore(store) as opened:
        rows = labelled_splits(opened, "noisy", SplitPlan())
        noisy, clean = opened.scores("noisy"), opened.scores("clean")
    slope, intercept = np.polyfit(clean[rows["train"]], noisy[rows["train"]], 1)
    assert record["line"] == pytest.approx([intercept, slope], rel=1e-6)
    every = rows["train"] + rows["test"]  # a line that had seen the test videos would differ
    assert not np.allclose(np.polyfit(clean[every], noisy[every], 1), [slope, intercept], rtol=1e-3)
    expected = 0.5 * scores["alone"] + 0.5 * (intercept + slope * scores["auxiliary"])
    np.testing.assert_allclose(scores["blended"], expected, rtol=1e-5, atol=1e-4)
    assert blended["rho"] > alone["rho"] + 0.05, (blended["rho"], alone["rho"])
    with h5py.File(blended["predictions"], "r") as f:
        sample, score = f["id"][0].decode(), float(f["score"][0])
    feature_file = tmp_path / "layout" / "feats" / f"{sample}.npy"  # `aqa score` of the clip features
    scored = json.loads(aqa("score", feature_file, "--run", tmp_path / "aux", "--json", check=0).stdout)[0]
    assert scored["score"] == pytest.approx(score, abs=1e-4)

    for wrong, message in (("noisy", "name another score column"), ("PCS", "name another score column")):
        with pytest.raises(AqaError, match=message):
            train(feature_config(store, tmp_path / wrong, "attn", aux_target=wrong, **settings))
    with pytest.raises(AqaError, match="add --ensemble"):
        train(feature_config(store, tmp_path / "single", "attn", aux_target="clean", target="noisy"))
