"""The long-video heads (`--agg attn`, `--agg gdlt`) through the package: AQAHead and checkpoints, `aqa train`
on features and end to end, per-head defaults, in-memory vs streamed features, resumption, `aqa experiment
--folds`, and `aqa score` (per-clip weights, the out-of-training-range line)."""

from __future__ import annotations

import csv
import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from aqa_cli.checkpoints.io import LAST, load_checkpoint, save_checkpoint
from aqa_cli.checkpoints.restore import load_head
from aqa_cli.data.datasets import FeatureClips, FeatureTensors
from aqa_cli.evaluation.evaluate import evaluate_checkpoint
from aqa_cli.evaluation.score import score_videos
from aqa_cli.models.heads import AQAHead
from aqa_cli.models.model import ModelConfig, build_model
from aqa_cli.training.config import GDLT_LAYOUTS, HEAD_OPTIONS, TrainConfig, resolve_head_defaults
from aqa_cli.training.dispatch import train
from tests.helpers import write_video
from tests.test_train import TINY

DIM, VIDEOS = 8, 64
LONG = ("attn", "gdlt")


def write_long_layout(root: Path) -> None:
    """VIDEOS videos of 6..20 clips of DIM noise channels; in every video one clip (anywhere) carries the
    score in channel 0, all others carry nothing about it. 30 train, 10 test; difficulty 2 or 3."""
    rng = np.random.default_rng(1)
    (root / "feats").mkdir(parents=True)
    lines = ["id,difficulty,score,split"]
    for k in range(VIDEOS):
        clips = 6 + k % 15
        quality = rng.uniform(0, 1)
        features = 0.3 * rng.normal(size=(clips, DIM)).astype(np.float32)
        features[:, 0] = rng.normal(-3, 0.2, size=clips)
        features[rng.integers(clips), 0] = 3 * quality + 1
        np.save(root / "feats" / f"v{k:02d}.npy", features)
        difficulty = 2 + k % 2
        lines.append(
            f"v{k:02d},{difficulty},{difficulty * (5 + 5 * quality):.4f},{'test' if k % 4 == 3 else 'train'}"
        )
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def long_store(tmp_path_factory) -> Path:
    from tests.helpers import run_aqa

    root = tmp_path_factory.mktemp("long")
    write_long_layout(root)
    out = root / "long.features.h5"
    run_aqa("features", "import", root, "--out", out, "--dtype", "float32", check=0)
    return out


def feature_config(store: Path, run: Path, agg: str, **settings) -> TrainConfig:
    return TrainConfig(features=str(store), out=str(run), agg=agg, device="cpu", **settings)


def same_state(a: dict, b: dict, exact: bool = True) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if exact:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
        else:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


# ------------------------------------------------------------------------------------------- the heads


@pytest.mark.parametrize("agg", ["avg", "wd", *LONG])
def test_a_padded_clip_changes_no_output_of_any_head(agg: str) -> None:
    torch.manual_seed(0)
    options = {**HEAD_OPTIONS[agg], "dropout": 0.3} if agg in LONG else None
    head = AQAHead(DIM, agg, head_options=options).eval()
    if agg in LONG:
        head.set_standardization(torch.randn(DIM), torch.rand(DIM) + 0.5)
        head.set_quality_range(4.0, 11.0)
    features = torch.randn(3, 7, DIM)
    clips = torch.tensor([7, 4, 2])
    mask = torch.arange(7)[None] < clips[:, None]
    padded = torch.cat([features, torch.full((3, 5, DIM), float("nan"))], dim=1)
    padded[~torch.cat([mask, torch.zeros(3, 5, dtype=torch.bool)], 1)] = float("inf")
    padded_mask = torch.cat([mask, torch.zeros(3, 5, dtype=torch.bool)], dim=1)
    difficulty = torch.tensor([2.0, float("nan"), 3.5])
    with torch.no_grad():
        out = head(features.masked_fill(~mask[..., None], 0), difficulty, mask)
        more = head(padded, difficulty, padded_mask)
        alone = [head(features[i : i + 1, : clips[i]], difficulty[i : i + 1]) for i in range(3)]
    torch.testing.assert_close(more.score, out.score)
    torch.testing.assert_close(more.quality, out.quality)
    for i in range(3):
        torch.testing.assert_close(alone[i].score, out.score[i : i + 1], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(more.score).all()
    if agg in LONG:  # one weight per clip, summing to 1 over the real ones, 0 on padded ones
        assert more.clip_weights.shape == (3, 12)
        torch.testing.assert_close(more.clip_weights[:, :7], out.clip_weights)
        assert (more.clip_weights[~padded_mask] == 0).all()
        torch.testing.assert_close(more.clip_weights.sum(1), torch.ones(3))
        # the quality is the head's [0, 1] output scaled back to the training range, times difficulty
        assert torch.equal(more.score[1], more.quality[1])
        torch.testing.assert_close(more.score[0], more.quality[0] * 2.0)


def test_the_paper_heads_keep_their_defaults_and_the_long_heads_get_the_research_ones() -> None:
    for agg in ("avg", "wd"):
        config = resolve_head_defaults(TrainConfig(agg=agg))
        assert (config.optimizer, config.lr, config.weight_decay, config.schedule) == (
            "adam",
            1e-4,
            0.0,
            "constant",
        )
        assert (config.epochs, config.batch_size, config.loss, config.clip_crop, config.warmup) == (
            50,
            2,
            "l1+l2",
            0,
            0,
        )
    for agg, dropout in (("attn", 0.0), ("gdlt", 0.3)):
        config = resolve_head_defaults(TrainConfig(agg=agg))
        assert (config.optimizer, config.lr, config.weight_decay, config.schedule) == (
            "adamw",
            3e-4,
            0.01,
            "cosine",
        )
        assert (config.epochs, config.batch_size, config.loss, config.clip_crop) == (60, 16, "mse", 64)
        assert config.dropout == dropout
    given = resolve_head_defaults(TrainConfig(agg="attn", lr=0.01, optimizer="sgd", clip_crop=0, warmup=2))
    assert (given.lr, given.optimizer, given.clip_crop, given.warmup) == (0.01, "sgd", 0, 2)
    # the paper's heads' state dicts are unchanged: no buffers added
    assert set(AQAHead(512, "wd").state_dict()) == {
        *(f"clip_layers.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")),
        *(f"aggregation.mlp.{i}.{p}" for i in (0, 3, 6, 9) for p in ("weight", "bias")),
        "regressor.weight",
        "regressor.bias",
    }


# ------------------------------------------------------------------------------ training on features


@pytest.mark.parametrize("agg", LONG)
def test_each_long_head_learns_the_one_clip_that_carries_the_score(
    long_store: Path, tmp_path: Path, agg: str
) -> None:
    """attn generalizes to the test split; gdlt (a transformer, on 38 training videos) fits train only."""
    from tests.helpers import run_aqa

    run = tmp_path / "run"
    schedule = {
        "attn": ["--epochs", "30", "--lr", "3e-3"],
        "gdlt": ["--epochs", "60", "--lr", "1e-3", "--dropout", "0"],
    }
    args = ["--features", long_store, "--out", run, "--agg", agg, *schedule[agg], "--val-fraction", "0.2"]
    run_aqa("train", *args, "--device", "cpu", check=0)
    config = tomllib.loads((run / "config.toml").read_text())  # the resolved head defaults, recorded
    assert (config["optimizer"], config["schedule"], config["loss"], config["clip_crop"]) == (
        "adamw",
        "cosine",
        "mse",
        64,
    )
    assert config["batch_size"] == 16 and config["weight_decay"] == 0.01 and config["warmup"] == 0
    payload = load_checkpoint(run / LAST)
    assert payload["model_config"]["agg"] == agg
    layout = GDLT_LAYOUTS["aqa"] if agg == "gdlt" else {}  # our gdlt layout by default
    assert payload["model_config"]["head_options"] == {
        **HEAD_OPTIONS[agg],
        **layout,
        "dropout": config["dropout"],
    }
    quality = payload["training_range"]["quality"]
    assert 5 <= quality[0] < quality[1] <= 10  # score / difficulty of the training split
    head = load_head(payload, run / LAST)  # the checkpoint alone rebuilds the head, range included
    assert head.quality_range.tolist() == pytest.approx(quality)
    if agg == "attn":
        assert evaluate_checkpoint(run, None, None, "test", "cpu", 8)["rho"] > 0.75
    else:
        assert evaluate_checkpoint(None, run / LAST, None, "train", "cpu", 8)["rho"] > 0.9
    with FeatureClipsBatch(long_store, list(range(VIDEOS))) as (batch, clips):
        mask = torch.arange(batch["features"].shape[1])[None] < clips[:, None]
        out = head(batch["features"], batch["difficulty"], mask)
    torch.testing.assert_close(out.clip_weights.sum(1), torch.ones(VIDEOS))
    assert (out.clip_weights[~mask] == 0).all()
    if agg == "attn":  # the weight goes to the clip that carries the score (channel 0 high)
        carrier = batch["features"][:, :, 0].argmax(1)
        assert (out.clip_weights.argmax(1) == carrier).float().mean() > 0.6


@pytest.mark.parametrize("agg", LONG)
def test_heads_train_under_bf16_autocast_when_asked_and_eval_repeats_it(
    long_store: Path, tmp_path: Path, agg: str
) -> None:
    """`--precision bf16` on features: the heads run under autocast (a different run from fp32's, still
    learning), the run records bf16, and `aqa eval` predicts in it, giving the val rho of metrics.csv."""
    settings = {
        "epochs": 30,
        "lr": 3e-3,
        "val_fraction": 0.2,
        "seed": 0,
        "triplet": 0.5 if agg == "gdlt" else 0,
    }
    runs = {
        precision: train(
            feature_config(long_store, tmp_path / precision, agg, precision=precision, **settings)
        )
        for precision in ("auto", "bf16")
    }
    assert tomllib.loads((tmp_path / "auto" / "config.toml").read_text())["precision"] == "fp32"
    assert tomllib.loads((tmp_path / "bf16" / "config.toml").read_text())["precision"] == "bf16"
    assert runs["bf16"].metrics[-1]["train_loss"] != runs["auto"].metrics[-1]["train_loss"]
    assert runs["bf16"].metrics[-1]["train_loss"] < 0.5 * runs["bf16"].metrics[0]["train_loss"]
    evaluation = evaluate_checkpoint(None, tmp_path / "bf16" / LAST, None, "val", "cpu", 8)
    assert evaluation["precision"] == "bf16"
    assert evaluation["rho"] == pytest.approx(runs["bf16"].metrics[-1]["val_rho"], abs=1e-6)
    if agg == "attn":
        assert evaluate_checkpoint(tmp_path / "bf16", None, None, "test", "cpu", 8)["rho"] > 0.75


class FeatureClipsBatch:
    """All rows of a feature store as one evaluation batch (view 0)."""

    def __init__(self, store: Path, rows: list[int]):
        self.data = FeatureTensors(store, "score", torch.device("cpu"))
        self.rows = rows

    def __enter__(self):
        batch = self.data.evaluation_batch(self.rows)
        return batch, batch["clips"]

    def __exit__(self, *exc) -> None:
        pass


@pytest.mark.parametrize("agg", ["wd", *LONG])
def test_in_memory_and_streamed_features_train_the_same(long_store: Path, tmp_path: Path, agg: str) -> None:
    settings = {"epochs": 3, "batch_size": 8, "val_fraction": 0.2, "clip_crop": 5, "lr": 1e-3}
    memory = train(feature_config(long_store, tmp_path / "memory", agg, **settings))
    streamed = train(feature_config(long_store, tmp_path / "stream", agg, stream=True, **settings))
    for a, b in zip(memory.metrics, streamed.metrics, strict=True):
        for key in ("train_loss", "val_rho", "val_r_l2", "test_rho", "test_r_l2", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    same_state(
        load_checkpoint(tmp_path / "memory" / LAST)["model"],
        load_checkpoint(tmp_path / "stream" / LAST)["model"],
        exact=agg == "wd",  # the paper's heads: the very same numbers (the batches are the same)
    )


def test_the_in_memory_batches_are_the_streamed_ones(long_store: Path) -> None:
    from torch.utils.data import DataLoader

    from aqa_cli.data.datasets import FeatureBatches
    from aqa_cli.data.samplers import EpochTagged, SeededShuffle

    rows = list(range(0, VIDEOS, 2))
    dataset = FeatureClips(long_store, rows, "score", train=True, seed=4, clip_crop=7)
    sampler = EpochTagged(SeededShuffle(dataset, 4))
    memory = FeatureBatches(FeatureTensors(long_store, "score", torch.device("cpu")), rows, sampler, 6, 4, 7)
    sampler.set_epoch(3)
    streamed, held = list(DataLoader(dataset, batch_size=6, sampler=sampler)), list(memory)
    assert len(streamed) == len(held) == len(memory)
    for a, b in zip(streamed, held, strict=True):
        longest = int(a["clips"].max())
        assert torch.equal(a["features"][:, :longest], b["features"])
        for key in ("clips", "score", "difficulty", "row"):
            assert torch.equal(a[key], b[key]), key
    assert any(int(b["clips"].max()) == 7 for b in held)  # cropped


class Stopped(Exception):
    pass


class StopAfter:
    """A training progress that stops the run once epoch `epoch` is written (the cosine schedule of a
    4-epoch run is not a 2-epoch run's: the run is interrupted, not shortened)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def step(self, loss: float, samples: int) -> None:
        pass

    def end_epoch(self, row: dict) -> None:
        if row["epoch"] == self.epoch:
            raise Stopped


@pytest.mark.parametrize("agg", LONG)
def test_a_resumed_long_head_run_ends_as_an_uninterrupted_one(long_store: Path, tmp_path: Path, agg) -> None:
    settings = {"batch_size": 8, "val_fraction": 0.2, "clip_crop": 5, "dropout": 0.2, "warmup": 1}
    train(feature_config(long_store, tmp_path / "straight", agg, epochs=4, **settings))
    with pytest.raises(Stopped):  # stopped after epoch 2's checkpoint, as a kill there would
        train(
            feature_config(long_store, tmp_path / "resumed", agg, epochs=4, **settings), progress=StopAfter(2)
        )
    assert load_checkpoint(tmp_path / "resumed" / LAST)["epoch"] == 2
    train(feature_config(long_store, tmp_path / "resumed", agg, epochs=4, **settings), resume=True)
    straight, resumed = (
        load_checkpoint(tmp_path / "straight" / LAST),
        load_checkpoint(tmp_path / "resumed" / LAST),
    )
    same_state(straight["model"], resumed["model"])
    assert straight["metrics"] == [
        {**row, "seconds": straight["metrics"][i]["seconds"]} for i, row in enumerate(resumed["metrics"])
    ]
    steps = straight["scheduler"]["last_epoch"]
    assert steps == resumed["scheduler"]["last_epoch"] == 4 * math.ceil(38 / 8)  # 4 epochs of 38 videos


def test_experiment_folds_cross_validate_inside_train(long_store: Path, tmp_path: Path, aqa) -> None:
    out = tmp_path / "cv"
    args = ["--features", long_store, "--out", out, "--agg", "attn", "--agg", "avg", "--folds", "3"]
    args += ["--seeds", "2", "--epochs", "2", "--weight-decay", "0.001", "--device", "cpu"]
    result = aqa("experiment", *args, check=0)
    assert "held-out fold rho" in result.stdout
    with open(out / "results.csv") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 2 * 3 * 2 and {r["agg"] for r in runs} == {"attn", "avg"}  # no ridge
    assert sorted({r["fold"] for r in runs}) == ["0", "1", "2"] and not any(r["error"] for r in runs)
    for fold in range(3):
        payload = load_checkpoint(out / "runs" / f"features-attn-fold{fold}-seed0" / LAST)
        config = payload["train_config"]
        assert (config["folds"], config["fold"], config["test_curve"]) == (3, fold, False)
        assert (config["weight_decay"], config["optimizer"], config["epochs"]) == (0.001, "adamw", 2)
        assert "test_rho" not in payload["metrics"][-1]  # the test split was never evaluated
        row = next(r for r in runs if r["agg"] == "attn" and r["fold"] == str(fold) and r["seed"] == "0")
        assert float(row["rho"]) == pytest.approx(payload["metrics"][-1]["val_rho"])
    table = (out / "table.md").read_text()
    assert "3-fold cross-validation" in table and "test split was not used" in table
    rhos = [float(r["rho"]) for r in runs if r["agg"] == "attn"]
    mean, std = np.mean(rhos), np.std(rhos, ddof=1)
    assert f"{mean:.4f} ± {std:.4f}" in table
    help_text = aqa("experiment", "--help", check=0).stdout
    assert "--folds" in help_text and "cross-validation" in help_text


def test_folds_partition_the_training_split(long_store: Path) -> None:
    from aqa_cli.data.splits import SplitPlan, labelled_splits
    from aqa_cli.stores.feature_store import FeatureStore

    with FeatureStore(long_store) as store:
        plain = labelled_splits(store, "score", SplitPlan())
        folds = [
            labelled_splits(store, "score", SplitPlan(0.3, seed, 3, k)) for k in range(3) for seed in (0, 5)
        ]
    vals = [set(f["val"]) for f in folds]
    assert vals[0] == vals[1]  # the run's seed does not change the folds
    assert set().union(*vals) == set(plain["train"]) and sum(len(v) for v in vals[::2]) == len(plain["train"])
    for f in folds:
        assert f["test"] == plain["test"] and not set(f["train"]) & set(f["val"])
        assert sorted(f["train"] + f["val"]) == plain["train"]


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    """12 synthetic dives stored with 24 frames each, as tests/test_train.py's."""
    from tests.helpers import run_aqa

    root = tmp_path_factory.mktemp("small")
    run_aqa("synth", root / "videos", "--videos", "12", "--seed", "3", check=0)
    store = root / "small.h5"
    run_aqa(
        "preprocess",
        root / "videos" / "manifest.csv",
        "--out",
        store,
        "--frames",
        "24",
        "--fit",
        "tail",
        check=0,
    )
    return store


@pytest.fixture(scope="module")
def score_video(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    frames = [np.roll(rng.integers(0, 256, (128, 176, 3), dtype=np.uint8), 4 * i, axis=1) for i in range(30)]
    return write_video(tmp_path_factory.mktemp("video") / "noise.mp4", frames)


def test_a_clip_crop_is_a_contiguous_run_of_the_training_window(small_store: Path) -> None:
    from aqa_cli.data.datasets import StoreClips
    from aqa_cli.data.windows import WindowConfig

    window = WindowConfig(16, 6, 64, True, "centre")
    whole = StoreClips(small_store, range(12), window, train=True, seed=2)
    cropped = StoreClips(small_store, range(12), window, train=True, seed=2, clip_len=4, clip_crop=2)
    starts = set()
    for i in range(12):
        full, part = whole[(3, i)]["video"], cropped[(3, i)]["video"]
        assert full.shape[1] == 16 and part.shape[1] == 8  # 2 of the 4 clips of 4 frames
        matches = [k for k in range(3) if torch.equal(full[:, 4 * k : 4 * k + 8], part)]
        assert matches  # the same window (drawn first), then the crop
        starts.add(matches[0])
        assert torch.equal(cropped[(3, i)]["video"], part)  # drawn from the sample's seeded generator
    assert len(starts) > 1
    evaluation = StoreClips(small_store, range(12), window, train=False, clip_len=4, clip_crop=2)
    assert evaluation[0]["video"].shape[1] == 16  # evaluation sees every clip


@pytest.mark.parametrize("agg", LONG)
def test_end_to_end_training_of_a_long_head_then_score_explain(
    small_store: Path,
    tmp_path: Path,
    score_video: Path,
    aqa,
    agg: str,
) -> None:
    run = tmp_path / "run"
    aqa(
        "train",
        "--store",
        small_store,
        "--out",
        run,
        "--epochs",
        "2",
        "--agg",
        agg,
        *TINY,
        "--clip-crop",
        "1",
        check=0,
    )
    payload = load_checkpoint(run / LAST)
    assert payload["model_config"]["agg"] == agg and payload["train_config"]["optimizer"] == "adamw"
    assert payload["training_range"]["score"][0] <= payload["training_range"]["score"][1]
    png = tmp_path / "explain.png"
    entry = json.loads(
        aqa("score", score_video, "--run", run, "--json", "--device", "cpu", "--explain", png, check=0).stdout
    )[0]
    assert entry["weights"] == {"attn": "attention", "gdlt": "grade-query attention"}[agg]
    assert len(entry["clips"]) == 2 and sum(c["weight"] for c in entry["clips"]) == pytest.approx(1, abs=1e-5)
    assert png.is_file() and math.isfinite(entry["score"])
    assert "outside_training_range" in entry


def test_an_end_to_end_attn_run_resumes_exactly(small_store: Path, tmp_path: Path) -> None:
    tiny = {"depth": 10, "conv": "3d", "clip": 8, "frames": 16, "crop": 64, "batch_size": 4, "workers": 0}
    settings = {**tiny, "lr": 3e-3, "store": str(small_store), "agg": "attn", "clip_crop": 1, "dropout": 0.2}
    settings.update(device="cpu", epochs=3, val_fraction=0.25)
    train(TrainConfig(**settings, out=str(tmp_path / "straight")))
    with pytest.raises(Stopped):
        train(TrainConfig(**settings, out=str(tmp_path / "resumed")), progress=StopAfter(1))
    train(TrainConfig(**settings, out=str(tmp_path / "resumed")), resume=True)
    straight, resumed = (
        load_checkpoint(tmp_path / "straight" / LAST),
        load_checkpoint(tmp_path / "resumed" / LAST),
    )
    same_state(straight["model"], resumed["model"])
    assert straight["train_config"]["schedule"] == "cosine" and straight["scheduler"]["last_epoch"] == 3 * 2


# -------------------------------------------------------------------------------------------- aqa score


def tiny_long_checkpoint(path: Path, agg: str, training_range: dict | None) -> Path:
    """A ResNet-10 model with a long head, saved as `aqa train` saves it (32 frames of 48x48, clips of 8)."""
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(
            depth=10, conv="3d", clip_len=8, agg=agg, head_options={**HEAD_OPTIONS[agg], "dropout": 0.1}
        )
    )
    model.head.set_quality_range(5.0, 10.0)
    payload = {
        "model_config": model.config.to_dict(),
        "window": {"frames": 32, "jitter": 6, "crop": 48, "flip": True},
        "store": {"path": "unused.h5", "frames": 40, "fit": "uniform", "width": 171, "height": 128},
        "train_config": {},
        "model": model.state_dict(),
        "epoch": 1,
    }
    if training_range is not None:
        payload["training_range"] = training_range
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, payload)
    return path


@pytest.mark.parametrize("agg", LONG)
def test_score_rebuilds_a_long_head_from_the_checkpoint_alone(tmp_path: Path, score_video: Path, agg) -> None:
    checkpoint = tiny_long_checkpoint(tmp_path / "last.pt", agg, None)
    [entry] = score_videos(
        [score_video], [2.5], checkpoint=checkpoint, device="cpu", explain=tmp_path / "x.png"
    )
    weights = [c["weight"] for c in entry["clips"]]
    assert len(weights) == 4 and sum(weights) == pytest.approx(1, abs=1e-6) and min(weights) > 0
    assert 5.0 <= entry["quality"] <= 10.0 or agg == "attn"  # gdlt's [0, 1] output scaled to the range
    assert entry["score"] == entry["quality"] * 2.5
    assert entry["outside_training_range"] is None  # no range recorded: no warning
    assert (tmp_path / "x.png").is_file()


def test_score_says_when_a_prediction_lies_outside_the_training_range(
    tmp_path: Path, score_video: Path, aqa
) -> None:
    checkpoint = tiny_long_checkpoint(
        tmp_path / "last.pt", "gdlt", {"score": [100.0, 200.0], "quality": [50.0, 60.0]}
    )
    [with_difficulty] = json.loads(
        aqa(
            "score",
            score_video,
            "--checkpoint",
            checkpoint,
            "--difficulty",
            "2",
            "--json",
            "--device",
            "cpu",
            check=0,
        ).stdout
    )
    outside = with_difficulty["outside_training_range"]
    assert outside["of"] == "score" and (outside["low"], outside["high"]) == (100.0, 200.0)
    assert outside["by"] == pytest.approx(100.0 - with_difficulty["score"])
    [alone] = score_videos([score_video], [], checkpoint=checkpoint, device="cpu")
    assert alone["outside_training_range"]["of"] == "quality"
    assert alone["outside_training_range"]["by"] == pytest.approx(50.0 - alone["quality"])
    assert alone["score"] == alone["quality"]  # never clamped
    table = aqa("score", score_video, "--checkpoint", checkpoint, "--device", "cpu", check=0).stdout
    assert "below the model's training range [50.00, 60.00] by" in table
    inside = tiny_long_checkpoint(
        tmp_path / "in.pt", "gdlt", {"score": [0.0, 100.0], "quality": [0.0, 100.0]}
    )
    assert (
        score_videos([score_video], [], checkpoint=inside, device="cpu")[0]["outside_training_range"] is None
    )
