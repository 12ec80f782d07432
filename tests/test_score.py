"""`aqa score` on real videos with a tiny checkpoint built here (no training): formats and lengths,
difficulty, failures, explanations, determinism, and equality with `aqa eval`'s path through a store."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from aqa_cli.checkpoints.io import save_checkpoint
from aqa_cli.checkpoints.restore import load_trained_model
from aqa_cli.cli import output as report
from aqa_cli.cli.output import print_scores
from aqa_cli.evaluation.evaluate import predict
from aqa_cli.evaluation.score import difficulty_per_video, score_videos
from aqa_cli.media.fitting import stored_indices
from aqa_cli.models.model import ModelConfig, build_model
from aqa_cli.stores.video_store import VideoStore
from aqa_cli.util.errors import AqaError
from tests.helpers import SHARED_VIDEOS, number_frame, write_video

STORED_FRAMES, WINDOW_FRAMES, CLIP_LEN, CROP = 40, 32, 8, 48
CLIPS = WINDOW_FRAMES // CLIP_LEN
REAL_VIDEOS = {  # name: frames in the file
    "aqa_streamlit_054_diving.avi": 103,
    "decord_video_0.mov": 3,
    "decord_video_90.mov": 3,
    "mtlaqa_diving_sample.gif": 21,
    "moviepy_no_duration.webm": 74,
    "decord_flipping_a_pancake.mkv": 310,
}


def write_tiny_checkpoint(path: Path, agg: str, use_difficulty: bool = True) -> Path:
    """A ResNet-10 model saved as `aqa train` saves it, seeing 32 frames of 48x48 in clips of 8."""
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(depth=10, conv="3d", clip_len=CLIP_LEN, agg=agg, use_difficulty=use_difficulty)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        path,
        {
            "model_config": model.config.to_dict(),
            "window": {"frames": WINDOW_FRAMES, "jitter": 6, "crop": CROP, "flip": True},
            "store": {
                "path": "unused.h5",
                "frames": STORED_FRAMES,
                "fit": "uniform",
                "width": 171,
                "height": 128,
            },
            "train_config": {},
            "model": model.state_dict(),
            "epoch": 1,
        },
    )
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "tiny"
    write_tiny_checkpoint(run / "last.pt", "wd")
    return run


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    """Two videos encoded here: 60 frames of moving noise (mp4) and 12 frames (avi, shorter than 40)."""
    folder = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    noise = [np.roll(rng.integers(0, 256, (128, 176, 3), dtype=np.uint8), 4 * i, axis=1) for i in range(60)]
    return [
        write_video(folder / "noise.mp4", noise),
        write_video(folder / "numbers.avi", [number_frame(i) for i in range(12)]),
    ]


def real_videos() -> list[Path]:
    found = [SHARED_VIDEOS / name for name in REAL_VIDEOS if (SHARED_VIDEOS / name).is_file()]
    if not found:
        pytest.skip(f"no shared test videos under {SHARED_VIDEOS}")
    return found


def score_json(aqa, *args, check: int = 0) -> list[dict]:
    result = aqa("score", *map(str, args), "--json", "--device", "cpu", check=check)
    return json.loads(result.stdout)  # stdout holds the JSON and nothing else


def assert_well_formed(entry: dict, source_length: int | None = None) -> None:
    assert math.isfinite(entry["quality"]) and math.isfinite(entry["score"])
    assert entry["frames_sampled"] == STORED_FRAMES
    clips = entry["clips"]
    assert [c["window_frames"] for c in clips] == [[k * CLIP_LEN, (k + 1) * CLIP_LEN] for k in range(CLIPS)]
    assert sum(c["weight"] for c in clips) == pytest.approx(1, abs=1e-5)
    first, last = entry["source_frames"]
    assert first == clips[0]["source_frames"][0] and last == clips[-1]["source_frames"][1]
    for c in clips:
        assert first <= c["source_frames"][0] < c["source_frames"][1] <= last
    if source_length is not None:
        indices = stored_indices(source_length, STORED_FRAMES, "uniform")[-WINDOW_FRAMES:]
        assert entry["source_frames"] == [indices[0], indices[-1] + 1]


def test_real_videos_of_many_formats_and_lengths_score_on_cpu(aqa, run_dir: Path) -> None:
    paths = real_videos()
    entries = score_json(aqa, *paths, "--run", run_dir)
    assert [Path(e["path"]) for e in entries] == paths
    for path, entry in zip(paths, entries, strict=True):
        assert "error" not in entry, entry
        assert_well_formed(entry, REAL_VIDEOS[path.name])
        assert entry["score"] == entry["quality"] and entry["difficulty"] is None
        assert entry["score_rule"] == "quality (no difficulty given)"
        assert entry["weights"] == "weight-decider"


def test_difficulty_scales_the_score_exactly(run_dir: Path, videos: list[Path]) -> None:
    plain = score_videos(videos, [], run_dir)
    one_for_all = score_videos(videos, [3.2], run_dir)
    one_each = score_videos(videos, [2.0, 3.5], run_dir)
    for difficulties, scored in (([3.2, 3.2], one_for_all), ([2.0, 3.5], one_each)):
        for d, entry, reference in zip(difficulties, scored, plain, strict=True):
            assert entry["quality"] == reference["quality"]
            assert entry["difficulty"] == d and entry["score"] == entry["quality"] * d
            assert entry["score_rule"] == "quality x difficulty"


def test_difficulty_counts_and_values(aqa, run_dir: Path, videos: list[Path]) -> None:
    assert difficulty_per_video([], 2) == [None, None]
    assert difficulty_per_video([2.8], 3) == [2.8, 2.8, 2.8]
    for bad in ([0.0], [float("nan")], [-1.5]):
        with pytest.raises(AqaError, match="not a positive number"):
            difficulty_per_video(bad, 1)
    result = aqa("score", *videos, "--difficulty", 2, "--difficulty", 3, "--difficulty", 4, "--run", run_dir)
    assert result.returncode == 2 and not result.stdout
    assert result.stderr.strip().splitlines() == [
        "error: 3 --difficulty values for 2 videos: give one for all or one per video"
    ]


def test_unreadable_videos_fail_alone_and_exit_1(
    aqa, run_dir: Path, videos: list[Path], tmp_path: Path
) -> None:
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("judges' notes\n" * 100)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(videos[0].read_bytes()[:600])
    empty = tmp_path / "empty.avi"
    empty.touch()
    bad = [not_a_video, truncated, empty, tmp_path / "missing.mp4"]
    entries = score_json(aqa, videos[0], *bad, videos[1], "--run", run_dir, check=1)
    assert [Path(e["path"]) for e in entries] == [videos[0], *bad, videos[1]]
    for entry in (entries[0], entries[-1]):
        assert_well_formed(entry)
    for path, entry in zip(bad, entries[1:-1], strict=True):
        assert set(entry) == {"path", "checkpoint", "error"}
        assert str(path) in entry["error"] and "\n" not in entry["error"]
        assert "Traceback" not in entry["error"]


@pytest.mark.parametrize("where", ["empty run dir", "no runs/"])
def test_a_missing_model_is_one_line_and_exit_2(aqa, videos: list[Path], tmp_path: Path, where: str) -> None:
    args = ["--run", tmp_path] if where == "empty run dir" else []
    result = aqa("score", videos[0], *args, cwd=tmp_path, check=2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and not result.stdout
    assert ("holds no checkpoint" if where == "empty run dir" else "no trained model") in lines[0]


def test_missing_or_foreign_checkpoint_file(tmp_path: Path, videos: list[Path]) -> None:
    with pytest.raises(AqaError, match="checkpoint not found"):
        score_videos(videos, [], checkpoint=tmp_path / "none.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(AqaError, match="not an aqa training checkpoint"):
        score_videos(videos, [], checkpoint=foreign)


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = matplotlib.image.imread(path).shape[:2]
    assert 100 < height < 1000 and CLIPS * 100 < width < 3000  # one panel per clip, side by side


def test_explain_draws_one_png_per_video(aqa, run_dir: Path, videos: list[Path], tmp_path: Path) -> None:
    [one] = score_videos(videos[:1], [3.0], run_dir, explain=tmp_path / "one.png")
    assert one["explanation"] == str(tmp_path / "one.png")
    assert_png(tmp_path / "one.png")

    twice = [*videos, videos[0]]  # a repeated stem gets its position appended
    result = aqa(
        "score", *twice, "--run", run_dir, "--explain", tmp_path / "out" / "dive.png", check=0, fresh=True
    )
    expected = ["dive-noise.png", "dive-numbers.png", "dive-noise-3.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(expected)
    for name in expected:
        assert_png(tmp_path / "out" / name)
        assert name in result.stdout  # the table's notes name each picture


def test_table_shows_scores_weights_and_failures(
    run_dir: Path, videos: list[Path], tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(report.console, "width", 120)  # room for the table; the failure line never wraps
    results = score_videos([videos[0], tmp_path / "gone.mp4"], [], run_dir)
    print_scores(results, as_json=False)
    out = capsys.readouterr().out
    weights = " ".join(f"{c['weight']:.2f}" for c in results[0]["clips"])
    assert weights in out and f"{results[0]['quality']:.2f}" in out
    assert "score = quality (no difficulty given)" in out
    assert f"failed: {tmp_path / 'gone.mp4'}: no such file" in out


def test_scoring_is_deterministic(run_dir: Path, videos: list[Path]) -> None:
    first = score_videos([videos[0], videos[0]], [2.5], run_dir)
    again = score_videos(videos[:1], [2.5], run_dir)
    assert first[0] == first[1] == again[0]


def test_avg_model_weighs_clips_uniformly_and_may_ignore_difficulty(
    tmp_path: Path, videos: list[Path]
) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "avg.pt", "avg", use_difficulty=False)
    [entry] = score_videos(videos[:1], [3.0], checkpoint=checkpoint)
    assert entry["weights"] == "uniform" and [c["weight"] for c in entry["clips"]] == [1 / CLIPS] * CLIPS
    assert entry["score"] == entry["quality"] and entry["difficulty"] is None
    assert "difficulty not used" in entry["score_rule"]


def test_same_numbers_as_eval_through_a_preprocessed_store(
    aqa, run_dir: Path, videos: list[Path], tmp_path: Path
) -> None:
    """The same code path: `aqa preprocess` then `predict` (what `aqa eval` runs) on the stored row equals
    `score` on the video itself."""
    video = videos[0]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path,score,split,difficulty\n{video},61.5,test,2.7\n")
    store = tmp_path / "one.h5"
    aqa("preprocess", manifest, "--frames", STORED_FRAMES, "--out", store, "--workers", 1, check=0)
    trained = load_trained_model(run_dir / "last.pt")
    evaluated = predict(trained.model, store, [0], trained.window, torch.device("cpu"))
    # fp32 as predict (score's "auto" is bf16 on a CPU with native bf16)
    [scored] = score_videos([video], [2.7], run_dir, device="cpu", precision="fp32")
    assert scored["quality"] == pytest.approx(float(evaluated.quality[0]), rel=1e-5, abs=1e-6)
    assert scored["score"] == pytest.approx(float(evaluated.score[0]), rel=1e-5, abs=1e-6)
    with VideoStore(store) as stored:
        window_indices = stored.file["samples/frame_index"][0][-WINDOW_FRAMES:]
    assert scored["source_frames"] == [window_indices[0], window_indices[-1] + 1]
    mean_weights = evaluated.clip_weights[0].mean(axis=-1)
    np.testing.assert_allclose([c["weight"] for c in scored["clips"]], mean_weights, rtol=1e-5, atol=1e-7)
