"""Feature stores: `aqa extract` (exact, resumable after kill -9), head training on cached features,
scoring videos with such heads, and `aqa features import` (Fis-V as published, generated layouts)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from aqa_cli.checkpoints.io import load_checkpoint
from aqa_cli.checkpoints.restore import load_trained_model
from aqa_cli.data.windows import WindowConfig, centred_window
from aqa_cli.evaluation.evaluate import evaluate_checkpoint
from aqa_cli.models.model import clip_features
from aqa_cli.models.provenance import frozen_backbone
from aqa_cli.pipelines.extract import extract_features
from aqa_cli.pipelines.import_features import import_features
from aqa_cli.pipelines.options import ExtractOptions
from aqa_cli.stores.feature_store import FeatureStore
from aqa_cli.stores.video_store import VideoStore
from aqa_cli.training.config import TrainConfig
from aqa_cli.training.dispatch import train
from aqa_cli.util.errors import AqaError

SHARED_FISV = Path(__file__).resolve().parents[2] / "shared" / "data" / "features" / "fis-v"
BACKBONE = ["--depth", "10", "--conv", "3d", "--clip", "8", "--frames", "16", "--workers", "0"]


def synthetic_store(root: Path, videos: int, seed: int) -> Path:
    """`aqa synth` dives (every 4th in test) stored with their last 24 frames."""
    from tests.helpers import run_aqa

    run_aqa("synth", root / "videos", "--videos", str(videos), "--seed", str(seed), check=0)
    store = root / "dives.h5"
    manifest = root / "videos" / "manifest.csv"
    run_aqa("preprocess", manifest, "--out", store, "--frames", "24", "--fit", "tail", check=0)
    return store


@pytest.fixture(scope="module")
def dives(tmp_path_factory) -> Path:
    return synthetic_store(tmp_path_factory.mktemp("dives"), videos=32, seed=5)


@pytest.fixture(scope="module")
def extracted(dives: Path) -> Path:
    """A random-init ResNet-10's features of every dive: 2 clips of 8 frames at 112x112."""
    from tests.helpers import run_aqa

    out = dives.with_name("dives-r10.features.h5")
    run_aqa("extract", "--store", dives, "--out", out, *BACKBONE, "--crop", "112", check=0)
    return out


@pytest.fixture(scope="module")
def few_dives(tmp_path_factory) -> Path:
    """5 dives, for the slower extraction of augmented views."""
    return synthetic_store(tmp_path_factory.mktemp("few"), videos=5, seed=2)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def backbone_features(store_path: Path, rows: list[int], crop: int, shift: int = 0, flip: bool = False):
    """What the backbone computes for these rows' windows, without the feature store's code path."""
    backbone = frozen_backbone(10, "3d", None, None, None, seed=0)
    window = WindowConfig(16, crop=crop, flip=False)
    with VideoStore(store_path) as store:
        clips = np.stack([centred_window(store.frames(row), window, shift, flip) for row in rows])
    with torch.no_grad():
        return clip_features(backbone, backbone.normalization.apply(torch.from_numpy(clips)), 8).numpy()


def test_extracted_features_equal_the_backbones_output(dives: Path, extracted: Path) -> None:
    rows = [0, 5, 31]
    expected = backbone_features(dives, rows, crop=112)
    with FeatureStore(extracted) as features, VideoStore(dives) as videos:
        stored = np.stack([features.features(row) for row in rows])
        assert features.file["features"].dtype == np.float16
        assert features.file["features"].shape == (32, 1, 2, 512)
        for name in ("id", "split", "difficulty"):
            np.testing.assert_array_equal(features.column(name), videos.column(name))
        np.testing.assert_array_equal(features.scores("score"), videos.column("score"))
        attributes = features.attributes
    np.testing.assert_allclose(stored, expected, rtol=2e-3, atol=2e-3)
    backbone = attributes["backbone"]
    assert backbone["weights_sha256"] == "random init" and backbone["seed"] == 0
    assert backbone["normalization"]["name"] == "hara" and len(backbone["state_sha256"]) == 64
    assert attributes["window"] == {
        "frames": 16,
        "jitter": 6,
        "crop": 112,
        "flip": False,
        "crop_mode": "centre",
    }
    assert attributes["video_store"]["frames"] == 24


def test_heads_learn_the_synthetic_dives_and_score_videos(
    dives: Path, extracted: Path, tmp_path: Path, aqa
) -> None:
    """Splash and entry angle carry the quality: heads on frozen random-init features must rank unseen dives
    far better than difficulty alone; the checkpoint plus the backbone's record then scores raw videos."""
    run = tmp_path / "run"
    train = [
        "train",
        "--features",
        extracted,
        "--out",
        run,
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
        "--seed",
        "0",
    ]
    aqa(*train, "--epochs", "60", "--no-test-curve", check=0)
    evaluation = evaluate_checkpoint(run, None, None, "test", "cpu", 8)
    baseline = evaluation["difficulty_baseline_rho"]
    assert evaluation["rho"] > max(0.75, baseline + 0.2), evaluation
    assert evaluation["store"] == str(extracted.resolve())

    with h5py.File(evaluation["predictions"], "r") as f:
        predicted = dict(zip(f["id"].asstr()[()], f["quality"][()], strict=True))
    videos = dives.parent / "videos"
    names = sorted(predicted)[:2]
    scored = json.loads(
        aqa("score", *(videos / f"{name}.mp4" for name in names), "--run", run, "--json", check=0).stdout
    )
    for name, result in zip(names, scored, strict=True):
        assert result["quality"] == pytest.approx(predicted[name], rel=2e-2, abs=0.05), (name, result)
        assert len(result["clips"]) == 2


def test_head_training_resumes_like_an_uninterrupted_run(extracted: Path, tmp_path: Path) -> None:
    config = TrainConfig(
        features=str(extracted), batch_size=4, lr=1e-3, val_fraction=0.25, agg="wd", epochs=4
    )
    train(dataclasses.replace(config, out=str(tmp_path / "whole")))
    train(dataclasses.replace(config, out=str(tmp_path / "parts"), epochs=2))
    train(dataclasses.replace(config, out=str(tmp_path / "parts")), resume=True)
    whole, parts = (
        load_checkpoint(tmp_path / "whole" / "last.pt"),
        load_checkpoint(tmp_path / "parts" / "last.pt"),
    )
    assert parts["epoch"] == 4 and parts["best"] == whole["best"]
    untimed = [
        [{k: v for k, v in row.items() if k != "seconds"} for row in run["metrics"]] for run in (whole, parts)
    ]
    assert untimed[0] == untimed[1]
    for key, tensor in whole["model"].items():
        torch.testing.assert_close(parts["model"][key], tensor, rtol=0, atol=0, msg=key)


def test_extract_killed_with_sigkill_resumes_to_the_same_file(few_dives: Path, tmp_path: Path, aqa) -> None:
    views = [*BACKBONE, "--crop", "48", "--views", "--batch-size", "1"]
    reference = tmp_path / "reference.h5"
    aqa("extract", "--store", few_dives, "--out", reference, *views, check=0)
    killed = tmp_path / "killed.h5"
    command = [
        sys.executable,
        "-m",
        "aqa_cli",
        "extract",
        "--store",
        str(few_dives),
        "--out",
        str(killed),
        *views,
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    partial = Path(str(killed) + ".partial")
    deadline = time.time() + 120
    while len(list(partial.glob("rows-*.npy"))) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not killed.exists() and len(list(partial.glob("rows-*.npy"))) < 5, "finished before the kill"
    rerun = aqa("extract", "--store", few_dives, "--out", killed, *views, check=0)
    assert "found done" in rerun.stdout and sha256(killed) == sha256(reference)
    assert not partial.exists()
    options = ExtractOptions(
        str(few_dives), str(killed), 10, "3d", 8, frames=16, crop=48, views=True, batch_size=1, workers=0
    )
    assert extract_features(options).up_to_date and sha256(killed) == sha256(reference)
    with pytest.raises(AqaError, match=r"holds features made with other settings \(differs in batch_size\)"):
        extract_features(dataclasses.replace(options, batch_size=2))

    with FeatureStore(reference) as store:  # the 4 views: evaluation window, mirrored, 5 frames earlier, both
        assert store.attributes["views"] == [
            {"shift": 0, "flip": False},
            {"shift": 0, "flip": True},
            {"shift": 5, "flip": False},
            {"shift": 5, "flip": True},
        ]
        stored = [store.features(3, view) for view in range(4)]
        stored_row0 = [store.features(0, view) for view in range(4)]
    for view, (shift, flip) in enumerate([(0, False), (0, True), (5, False), (5, True)]):
        expected = backbone_features(few_dives, [3], crop=48, shift=shift, flip=flip)[0]
        np.testing.assert_allclose(stored[view], expected, rtol=2e-3, atol=2e-3, err_msg=f"view {view}")

    from aqa_cli.training.heads import FeatureClips

    training = FeatureClips(reference, [0, 1, 2, 4], "score", train=True, seed=0)
    views_of_row0 = []
    for epoch in range(1, 9):  # one view per sample and epoch, the same one when read again
        features = training[epoch, 0]["features"][:2].numpy()
        np.testing.assert_array_equal(features, training[epoch, 0]["features"][:2].numpy())
        views_of_row0.append(next(v for v in range(4) if np.array_equal(features, stored_row0[v])))
    assert len(set(views_of_row0)) > 1
    evaluation = FeatureClips(reference, [0], "score", train=False)
    np.testing.assert_array_equal(evaluation[0]["features"][:2], stored_row0[0])


def write_layout(root: Path, dims: int = 7) -> dict[str, np.ndarray]:
    """12 videos with 1..5 clips each (one saved as a 1-D vector), labels.csv with a header and split."""
    rng = np.random.default_rng(0)
    arrays, lines = {}, ["id,difficulty,score,execution,split"]
    for k in range(12):
        name = f"video_{k:02d}"
        quality = rng.uniform(0, 1)
        clips = 1 + k % 5
        features = rng.normal(size=(clips, dims)).astype(np.float32) + quality
        arrays[name] = features
        np.save(root / "feats" / f"{name}.npy", features[0] if k == 3 else features)
        split = "test" if k % 4 == 3 else "train"
        lines.append(f"{name},{2 + k % 3},{(2 + k % 3) * quality * 10:.3f},{quality:.3f},{split}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    arrays["video_03"] = arrays["video_03"][:1]
    return arrays


def test_a_generated_layout_imports_with_variable_clip_counts(tmp_path: Path, aqa) -> None:
    (tmp_path / "feats").mkdir()
    arrays = write_layout(tmp_path)
    out = tmp_path / "gen.features.h5"
    result = aqa("features", "import", tmp_path, "--out", out, "--dtype", "float32", check=0)
    assert "12 videos (9 train, 3 test)" in result.stdout
    with FeatureStore(out) as store:
        assert store.score_columns == ["score", "execution"] and store.attributes["default_target"] == "score"
        assert store.file["features"].shape == (12, 1, 5, 7)
        ids = store.column("id").tolist()
        for row, name in enumerate(ids):
            np.testing.assert_array_equal(store.features(row), arrays[name])
            assert not store.file["features"][row, 0, len(arrays[name]) :].any()  # zero padding
        assert store.column("clips").tolist() == [len(arrays[name]) for name in ids]
        assert store.column("difficulty")[0] == 2.0
    run = tmp_path / "run"
    train(
        TrainConfig(features=str(out), target="execution", out=str(run), epochs=3, batch_size=4),
    )
    payload = load_checkpoint(run / "last.pt")
    assert payload["features"]["target"] == "execution" and payload["backbone"] is None
    assert evaluate_checkpoint(run, None, None, "test", "cpu", 4)["samples"] == 3
    with pytest.raises(AqaError, match="holds heads trained on imported features"):
        load_trained_model(run / "last.pt")


def test_a_damaged_feature_chunk_names_its_sample(tmp_path: Path, aqa) -> None:
    (tmp_path / "feats").mkdir()
    write_layout(tmp_path)
    out = tmp_path / "gen.features.h5"
    aqa("features", "import", tmp_path, "--out", out, check=0)
    with FeatureStore(out) as store:
        row = store.column("id").tolist().index("video_04")
        chunk = store.file["features"].id.get_chunk_info_by_coord((row, 0, 0, 0))
    data = bytearray(out.read_bytes())
    data[chunk.byte_offset + chunk.size // 2] ^= 0x10  # one bit of that sample's stored bytes
    out.write_bytes(bytes(data))
    result = aqa("train", "--features", out, "--out", tmp_path / "run", "--epochs", "1", check=2)
    assert f"{out}: the features of sample video_04 (row {row}) cannot be read" in result.stderr
    assert "Traceback" not in result.stderr


def test_headerless_train_and_test_lists_take_column_names(tmp_path: Path) -> None:
    (tmp_path / "npy").mkdir()
    for k in range(6):
        np.save(tmp_path / "npy" / f"{k}.npy", np.full((2, 3), k, dtype=np.float16))
    (tmp_path / "train.txt").write_text("0 1.0 2.5\n1 2.0 2.0\n2 3.0 1.5\n3 4.0 1.0\n")
    (tmp_path / "test.txt").write_text("4 5.0 0.5\n5 6.0 0.0\n")
    with pytest.raises(AqaError, match="has no header line and 3 fields per line: name them with --columns"):
        import_features(tmp_path, tmp_path / "x.h5")
    import_features(tmp_path, tmp_path / "x.h5", columns=["id", "score", "difficulty"])
    with FeatureStore(tmp_path / "x.h5") as store:
        assert store.column("split").tolist() == ["train"] * 4 + ["test"] * 2
        assert store.scores("score").tolist() == [1, 2, 3, 4, 5, 6]
        assert store.column("difficulty").tolist() == [2.5, 2.0, 1.5, 1.0, 0.5, 0.0]


def bad_layout(root: Path, problem: str) -> None:
    (root / "npy").mkdir()
    for k in range(6):
        np.save(root / "npy" / f"v{k}.npy", np.zeros((2, 4), dtype=np.float32))
    rows = [f"v{k},{k}.5,{'test' if k == 5 else 'train'}" for k in range(6)]
    if problem == "missing":
        (root / "npy" / "v2.npy").unlink()
    elif problem == "pickle":
        np.save(root / "npy" / "v2.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    elif problem == "width":
        np.save(root / "npy" / "v2.npy", np.zeros((2, 5), dtype=np.float32))
    elif problem == "split":
        rows[2] = "v2,2.5,dev"
    elif problem == "score":
        rows[2] = "v2,high,train"
    (root / "labels.csv").write_text("id,score,split\n" + "\n".join(rows) + "\n")


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("missing", "1 of 6 labelled videos have no feature file in .*npy \\(e.g. v2.npy\\)"),
        ("pickle", "v2.npy is not a plain numeric .npy array"),
        ("width", "v2.npy has features of width 5 but v0.npy has 4: all videos need the same feature dim"),
        ("split", "labels.csv:4: split 'dev' \\(from its split column\\) is not one of train, val, test"),
        ("score", "labels.csv:4: score 'high' is not a number"),
    ],
)
def test_bad_imports_name_the_file_and_the_fix(tmp_path: Path, problem: str, message: str) -> None:
    bad_layout(tmp_path, problem)
    with pytest.raises(AqaError, match=message):
        import_features(tmp_path, tmp_path / "f.h5")
    assert not (tmp_path / "f.h5").exists()


def test_a_bad_import_is_one_line_on_the_command_line(tmp_path: Path, aqa) -> None:
    bad_layout(tmp_path, "pickle")
    result = aqa("features", "import", tmp_path, "--out", tmp_path / "f.h5", check=2)
    assert result.stderr.startswith("error: ") and "refus" not in result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.skipif(
    not SHARED_FISV.is_dir(), reason="the Fis-V features are in ../shared/data/features/fis-v"
)
def test_the_fisv_release_imports_as_is(tmp_path: Path, aqa) -> None:
    """As published: <id>.npy of (clips, 1024) float16 and headerless `id TES PCS deductions` lists."""
    out = tmp_path / "fis-v.features.h5"
    aqa("features", "import", SHARED_FISV, "--out", out, check=0)
    with FeatureStore(out) as store:
        assert len(store) == 500 and store.feature_dim == 1024
        assert store.score_columns == ["TES", "PCS", "deductions"]
        splits, ids, clips = store.column("split"), store.column("id").tolist(), store.column("clips")
        assert (splits == "train").sum() == 400 and (splits == "test").sum() == 100
        assert clips.min() == 124 and clips.max() == 302
        first = ids.index("1")
        assert store.scores("TES")[first] == 28.71 and store.scores("PCS")[first] == 29.36
        original = np.load(SHARED_FISV / "swintx_avg_fps25_clip32_fp16" / "1.npy")
        np.testing.assert_array_equal(store.file["features"][first, 0, : len(original)], original)
        assert not store.file["features"][first, 0, len(original) :].any()
