"""`aqa train` / `aqa eval` end to end on tiny configurations: learning, resume, kill -9, DDP, errors."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from aqa_cli.checkpoints.io import load_checkpoint
from aqa_cli.evaluation.evaluate import evaluate_checkpoint

TINY = [
    "--depth",
    "10",
    "--conv",
    "3d",
    "--clip",
    "8",
    "--frames",
    "16",
    "--crop",
    "64",
    "--batch-size",
    "4",
    "--workers",
    "0",
    "--lr",
    "3e-3",
    "--seed",
    "0",
]


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    """12 synthetic dives stored with 24 frames each (enough for 16-frame windows with jitter)."""
    from tests.helpers import run_aqa

    root = tmp_path_factory.mktemp("small")
    run_aqa("synth", root / "videos", "--videos", "12", "--seed", "3", check=0)
    run_aqa(
        "preprocess",
        root / "videos" / "manifest.csv",
        "--out",
        root / "small.h5",
        "--frames",
        "24",
        "--fit",
        "tail",
        check=0,
    )
    return root / "small.h5"


@pytest.fixture(scope="module")
def trained_run(small_store: Path, tmp_path_factory) -> Path:
    """A finished 2-epoch run with validation and test curves, shared by the tests that only read it (or
    a copy of it)."""
    from tests.helpers import run_aqa

    run = tmp_path_factory.mktemp("trained") / "run"
    args = ["--store", small_store, "--out", run, "--epochs", "2", "--val-fraction", "0.25", *TINY]
    run_aqa("train", *args, check=0)
    return run


def same_weights(a: Path, b: Path) -> None:
    first, second = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0, msg=key)


def metrics_without_time(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_training_writes_a_self_describing_run(trained_run: Path, tmp_path: Path, aqa) -> None:
    run = trained_run
    assert {p.name for p in run.iterdir()} >= {
        "config.toml",
        "last.pt",
        "best.pt",
        "metrics.csv",
        "curves.png",
    }
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert all(row["val_rho"] and row["test_rho"] and float(row["train_loss"]) > 0 for row in rows)
    payload = load_checkpoint(run / "last.pt")
    assert payload["model_config"]["depth"] == 10
    assert payload["model_config"]["normalization"]["name"] == "hara"
    assert payload["window"] == {"frames": 16, "jitter": 6, "crop": 64, "flip": True, "crop_mode": "centre"}
    assert payload["store"]["frames"] == 24 and len(payload["store"]["labels_sha256"]) == 64
    assert payload["epoch"] == 2 and "optimizer" in payload and "rng" in payload
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = tmp_path / "again"
    aqa("train", "--config", run / "config.toml", "--out", again, check=0)
    same_weights(run / "last.pt", again / "last.pt")


@pytest.mark.parametrize("workers", ["0", "1"])  # 1: a persistent loader worker
def test_resume_after_kill_9_ends_like_an_uninterrupted_run(
    small_store: Path, trained_run: Path, tmp_path: Path, aqa, workers: str
) -> None:
    reference = trained_run  # the same settings, never interrupted (with no loader worker)
    killed = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "aqa_cli",
        "train",
        "--store",
        str(small_store),
        "--out",
        str(killed),
        "--epochs",
        "2",
        "--val-fraction",
        "0.25",
        *TINY,
        "--workers",
        workers,
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 240
    while not (killed / "last.pt").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert load_checkpoint(killed / "last.pt")["epoch"] < 2, "the run finished before it could be killed"
    aqa("train", "--out", killed, "--resume", check=0)
    same_weights(reference / "last.pt", killed / "last.pt")
    assert metrics_without_time(reference) == metrics_without_time(killed)


def test_eval_is_deterministic_and_writes_predictions(trained_run: Path, tmp_path: Path, aqa) -> None:
    run = tmp_path / "runs" / "tiny"
    shutil.copytree(trained_run, run)
    first = json.loads(aqa("eval", "--json", cwd=tmp_path, check=0).stdout)  # the latest run under runs/
    second = json.loads(aqa("eval", "--run", run, "--json", check=0).stdout)
    for key in ("rho", "r_l2", "mae", "difficulty_baseline_rho", "samples"):
        assert first[key] == second[key]
    assert first["split"] == "test" and first["samples"] == 3
    assert Path(first["predictions"]).is_file()
    import h5py

    with h5py.File(first["predictions"], "r") as f:
        assert f["score"].shape == (3,) and f["clip_weights"].shape == (3, 2, 128)


def test_two_cpu_processes_with_torchrun(small_store: Path, tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    run = tmp_path / "ddp"
    command = [
        torchrun,
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "aqa_cli",
        "train",
        "--store",
        str(small_store),
        "--out",
        str(run),
        "--epochs",
        "2",
        "--device",
        "cpu",
        *TINY,
        "--accumulate",  # two batches per step: the first under DDP's no_sync
        "2",
        "--val-fraction",  # 3 validation videos: each rank predicts its share, gathered in order
        "0.25",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = load_checkpoint(run / "last.pt")
    assert payload["epoch"] == 2
    assert len(payload["rank_rng"]) == 2  # each rank resumes with its own random states
    with open(run / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert last["epoch"] == "2"
    for split in ("val", "test"):  # the sharded evaluation is what one process measures
        alone = evaluate_checkpoint(None, run / "last.pt", None, split, "cpu", 2)
        assert float(last[f"{split}_rho"]) == pytest.approx(alone["rho"], abs=1e-6), split
        assert float(last[f"{split}_r_l2"]) == pytest.approx(alone["r_l2"], rel=1e-4), split
    assert not list(run.glob("*.tmp")) and not (run / "train.lock").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--store", "missing.h5"], "store not found: missing.h5"),
        (["train", "--store", "{store}", "--clip", "7"], "--clip 7 does not divide --frames 16"),
        (
            ["train", "--store", "{store}", "--frames", "200"],
            "keeps 24 frames per sample but the model needs 200",
        ),
        (["train", "--store", "{store}", "--agg", "max"], "unknown aggregation 'max'"),
        (["train", "--store", "{store}", "--out", "{tmp}/none", "--resume"], "nothing to resume"),
        (["train", "--config", "{tmp}/bad.toml"], "unknown setting(s) colour"),
        (["train", "--store", "{store}", "--weights", "{tmp}/bad.toml"], "bad.toml"),
        (["eval", "--run", "{tmp}"], "holds no checkpoint"),
        (["eval", "--split", "dev", "--run", "{tmp}"], "unknown --split 'dev'"),
    ],
)
def test_bad_training_input_gives_one_clear_line(
    small_store: Path, tmp_path: Path, aqa, args, message
) -> None:
    (tmp_path / "bad.toml").write_text('colour = "blue"\n')
    filled = [a.format(store=small_store, tmp=tmp_path) for a in args]
    if filled[0] == "train":  # the tiny settings first: options given later win
        filled = [filled[0], *TINY, *filled[1:]]
    result = aqa(*filled, cwd=tmp_path, check=2)
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_tiny_model_learns_the_synthetic_dives(tmp_path: Path, aqa) -> None:
    """Splash size and entry angle carry the quality: a ResNet-10 must rank 12 unseen dives far better than
    difficulty alone (an untrained model stays near that baseline)."""
    aqa("synth", tmp_path / "videos", "--videos", "48", "--seed", "5", check=0)
    aqa(  # the main job's commands in new interpreters, as a user's shell starts them
        "preprocess",
        tmp_path / "videos" / "manifest.csv",
        "--out",
        tmp_path / "s.h5",
        "--frames",
        "40",
        "--fit",
        "tail",
        check=0,
        fresh=True,
    )
    tiny = [
        "--store",
        tmp_path / "s.h5",
        "--depth",
        "10",
        "--conv",
        "3d",
        "--clip",
        "8",
        "--frames",
        "16",
        "--crop",
        "32",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--no-test-curve",
    ]
    aqa(
        "train", *tiny, "--out", tmp_path / "untrained", "--epochs", "1", "--lr", "0", check=0
    )  # BN stats only
    aqa(
        "train",
        *tiny,
        "--out",
        tmp_path / "run",
        "--epochs",
        "12",
        "--lr",
        "3e-3",
        check=0,
        timeout=1800,
        fresh=True,
    )
    untrained = json.loads(aqa("eval", "--run", tmp_path / "untrained", "--json", check=0).stdout)
    trained = json.loads(aqa("eval", "--run", tmp_path / "run", "--json", check=0, fresh=True).stdout)
    baseline = trained["difficulty_baseline_rho"]
    assert trained["rho"] > max(0.75, baseline + 0.2), (trained, baseline)
    assert trained["rho"] > untrained["rho"] + 0.15
    assert trained["r_l2"] < untrained["r_l2"]


def test_persistent_loader_workers_draw_each_epochs_own_windows(small_store: Path) -> None:
    """Loader workers keep their dataset copy across epochs; the epoch reaches them with each index, so
    every epoch draws new windows, and the same ones with 2 persistent workers as with none."""
    from torch.utils.data import DataLoader

    from aqa_cli.data.datasets import StoreClips
    from aqa_cli.data.samplers import EpochTagged, SeededShuffle
    from aqa_cli.data.windows import WindowConfig

    def epochs(workers: int, which: list[int]) -> list[dict[int, torch.Tensor]]:
        dataset = StoreClips(small_store, range(12), WindowConfig(frames=16, crop=64), train=True, seed=5)
        sampler = EpochTagged(SeededShuffle(dataset, seed=5))
        loader = DataLoader(
            dataset, batch_size=4, sampler=sampler, num_workers=workers, persistent_workers=workers > 0
        )
        drawn = []
        for epoch in which:
            sampler.set_epoch(epoch)
            videos = {}
            for batch in loader:
                videos.update(zip(batch["row"].tolist(), batch["video"], strict=True))
            drawn.append(videos)
        return drawn

    with_workers = epochs(2, [1, 2, 3])
    assert [sorted(videos) for videos in with_workers] == [list(range(12))] * 3
    for later in with_workers[1:]:
        assert any(not torch.equal(with_workers[0][row], later[row]) for row in range(12))
    for alone, together in zip(epochs(0, [1, 3]), [with_workers[0], with_workers[2]], strict=True):
        for row in range(12):
            assert torch.equal(alone[row], together[row]), row


def test_resuming_from_a_damaged_checkpoint_says_how_to_start_over(
    trained_run: Path, tmp_path: Path, aqa
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    payload = torch.load(run / "last.pt", weights_only=True)
    name = next(iter(payload["model"]))
    payload["model"][name] = payload["model"][name] + 1  # as if bits changed on disk; checksums kept
    torch.save(payload, run / "last.pt")
    result = aqa("train", "--out", run, "--resume", check=2)
    assert f"{run / 'last.pt'} is damaged: model/{name}" in result.stderr
    assert f"restore an intact copy of it, or delete {run} to train from the start" in result.stderr


def test_channels_last_and_gradient_checkpointing_train_as_the_plain_layout(
    small_store: Path, tmp_path: Path, aqa
) -> None:
    """With --lr 0 the weights stay and the batch-norm statistics record every forward pass: the same
    (up to summation order) in channels-last 3D with gradient checkpointing. (After Adam steps, weights
    whose gradients are near zero differ by up to lr either way; test_backbones compares gradients.)"""
    common = ["--store", small_store, *TINY, "--crop", "16", "--epochs", "1", "--lr", "0", "--no-test-curve"]
    aqa("train", *common, "--out", tmp_path / "plain", "--channels-last", "off", check=0)
    aqa("train", *common, "--out", tmp_path / "cl", "--channels-last", "on", "--grad-checkpoint", check=0)
    plain, other = (load_checkpoint(tmp_path / name / "last.pt") for name in ("plain", "cl"))
    assert other["train_config"]["channels_last"] == "on" and other["train_config"]["grad_checkpoint"]
    for key, value in plain["model"].items():
        torch.testing.assert_close(other["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    loss = [float(metrics_without_time(tmp_path / name)[0]["train_loss"]) for name in ("plain", "cl")]
    assert loss[1] == pytest.approx(loss[0], rel=1e-5)


def test_score_in_bf16_records_it_and_stays_close_to_fp32(trained_run: Path, small_store: Path, aqa) -> None:
    video = small_store.parent / "videos" / "dive_000.mp4"
    found = {
        precision: json.loads(
            aqa(
                "score",
                video,
                "--difficulty",
                "3.0",
                "--run",
                trained_run,
                "--json",
                "--precision",
                precision,
                check=0,
            ).stdout
        )[0]
        for precision in ("fp32", "bf16")
    }
    assert [found[p]["precision"] for p in ("fp32", "bf16")] == ["fp32", "bf16"]
    assert found["bf16"]["score"] != found["fp32"]["score"]  # autocast really ran
    assert abs(found["bf16"]["score"] - found["fp32"]["score"]) < 0.01 * abs(found["fp32"]["score"])
