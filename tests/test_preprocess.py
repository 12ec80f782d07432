"""`aqa preprocess` end to end on real encoded videos: windows, resume, kill -9, bad input, shards."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from aqa_cli.media.fitting import stored_indices
from aqa_cli.stores.video_store import VideoStore, store_lock
from tests.helpers import (
    assert_same_content,
    number_frame,
    read_number,
    store_content,
    write_image,
    write_number_video,
)


def write_manifest(path: Path, rows: list[dict]) -> Path:
    columns = ["path", "score", "difficulty", "split", "id", "start", "end"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows([{c: row.get(c, "") for c in columns} for row in rows])
    return path


def stored_numbers(store: VideoStore, i: int) -> list[int]:
    return [read_number(frame) for frame in store.frames(i)]


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    """Three clips: longer than, equal to and shorter than 24 frames, plus one with a frame range."""
    write_number_video(tmp_path / "long.mp4", 0, 60)
    write_number_video(tmp_path / "exact.mkv", 100, 24, codec="libx264")
    write_number_video(tmp_path / "short.webm", 200, 10, codec="libvpx")
    write_number_video(tmp_path / "ranged.avi", 300, 40, codec="mjpeg", pix_fmt="yuvj420p")
    return write_manifest(
        tmp_path / "manifest.csv",
        [
            {"path": "long.mp4", "score": "50.5", "difficulty": "2.0", "split": "train"},
            {"path": "exact.mkv", "score": "60", "split": "test", "id": "exact"},
            {"path": "short.webm", "score": "70.25", "difficulty": "3.1", "split": "val"},
            {
                "path": "ranged.avi",
                "score": "80",
                "difficulty": "3.3",
                "split": "train",
                "start": "5",
                "end": "29",
            },
        ],
    )


def test_manifest_windows_are_exact(clips: Path, tmp_path: Path, aqa) -> None:
    out = tmp_path / "clips.h5"
    aqa("preprocess", clips, "--out", out, "--frames", "24", "--workers", "2", check=0)
    with VideoStore(out) as store:
        ids = list(store.column("id"))
        assert ids == ["long", "exact", "short", "ranged"]
        assert store.frames(0).shape == (24, 128, 171, 3)
        assert stored_numbers(store, 0) == list(stored_indices(60, 24, "uniform"))
        assert stored_numbers(store, 1) == list(range(100, 124))
        assert stored_numbers(store, 2) == [200 + i for i in stored_indices(10, 24, "uniform")]
        assert stored_numbers(store, 3) == list(range(305, 329))
        np.testing.assert_array_equal(store.file["samples/frame_index"][3], np.arange(5, 29))
        assert list(store.column("split")) == ["train", "test", "val", "train"]
        np.testing.assert_allclose(store.column("score"), [50.5, 60, 70.25, 80])
        assert np.isnan(store.column("difficulty")[1])
        assert list(store.column("orig_width")) == [176] * 4
        assert store.column("fps")[0] == pytest.approx(25)
        assert store.file.attrs["format_version"] == 1
    summary = json.loads(aqa("info", out, "--json", check=0).stdout)
    assert summary["samples"] == 4
    assert summary["splits"]["train"]["samples"] == 2
    assert summary["splits"]["train"]["score"] == {"min": 50.5, "max": 80.0, "mean": 65.25}
    assert summary["frames_per_sample"] == 24


def test_tail_fit_keeps_the_last_frames(clips: Path, tmp_path: Path, aqa) -> None:
    out = tmp_path / "tail.h5"
    aqa("preprocess", clips, "--out", out, "--frames", "16", "--fit", "tail", "--workers", "1", check=0)
    with VideoStore(out) as store:
        assert stored_numbers(store, 0) == list(range(44, 60))
        assert stored_numbers(store, 2) == [200] * 6 + list(range(200, 210))


def test_rerun_resumes_and_changes_nothing(clips: Path, tmp_path: Path, aqa) -> None:
    out = tmp_path / "clips.h5"
    aqa("preprocess", clips, "--out", out, "--frames", "24", check=0)
    first = store_content(out)
    again = aqa("preprocess", clips, "--out", out, "--frames", "24", check=0)
    assert "already stored (skipped) │     4" in again.stdout or "already stored (skipped)" in again.stdout
    assert "stored now               │     0" in again.stdout or "│ stored now" in again.stdout
    second = store_content(out)
    for key in first:
        if isinstance(first[key], np.ndarray):
            np.testing.assert_array_equal(first[key], second[key])


def test_other_settings_on_an_existing_store_are_refused(clips: Path, tmp_path: Path, aqa) -> None:
    out = tmp_path / "clips.h5"
    aqa("preprocess", clips, "--out", out, "--frames", "24", check=0)
    result = aqa("preprocess", clips, "--out", out, "--frames", "12", check=2)
    assert "already exists and was made with other settings (--frames 24 (now 12))" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_videos_are_reported_and_the_rest_stored(tmp_path: Path, aqa) -> None:
    write_number_video(tmp_path / "good.mp4", 0, 30)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 100)
    garbage = bytearray((tmp_path / "good.mp4").read_bytes())
    random.Random(0).shuffle(garbage)
    (tmp_path / "shuffled.mp4").write_bytes(bytes(garbage))
    manifest = write_manifest(
        tmp_path / "m.csv",
        [
            {"path": name, "score": "10", "split": "train"}
            for name in ["good.mp4", "empty.mp4", "text.mp4", "shuffled.mp4", "missing.mp4"]
        ]
        + [{"path": "good.mp4", "score": "nan", "split": "train", "id": "bad-score"}],
    )
    out = tmp_path / "s.h5"
    result = aqa("preprocess", manifest, "--out", out, "--frames", "8", check=1)
    assert "Traceback" not in result.stderr + result.stdout
    with VideoStore(out) as store:
        assert list(store.column("id")) == ["good"]
        failed = dict(store.failed())
    assert set(failed) == {"empty", "text", "shuffled", "missing", "bad-score"}
    assert "missing.mp4" in failed["missing"]
    assert "score" in failed["bad-score"]
    for reason in failed.values():
        assert "\n" not in reason


def test_kill_9_at_random_moments_then_rerun_gives_the_same_store(tmp_path: Path, aqa) -> None:
    videos = tmp_path / "videos"
    for i in range(10):
        write_number_video(videos / f"v{i:02d}.mp4", i * 100, 40)
    reference = tmp_path / "reference.h5"
    aqa("preprocess", videos, "--out", reference, "--frames", "16", check=0)
    rng = random.Random(1234)
    for attempt in range(3):
        out = tmp_path / f"killed{attempt}.h5"
        process = subprocess.Popen(
            [sys.executable, "-m", "aqa_cli", "preprocess", str(videos), "--out", str(out), "--frames", "16"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(rng.uniform(0.3, 2.0))
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if out.exists():
            with h5py.File(out, "r"):
                pass
        aqa("preprocess", videos, "--out", out, "--frames", "16", check=0)
        assert_same_content(out, reference)


def test_a_second_writer_is_refused(clips: Path, tmp_path: Path, aqa) -> None:
    out = tmp_path / "locked.h5"
    with store_lock(out):
        result = aqa("preprocess", clips, "--out", out, "--frames", "8", check=2)
    assert "another aqa process is writing" in result.stderr


def test_shards_merge_into_the_unsharded_store(tmp_path: Path, aqa) -> None:
    videos = tmp_path / "videos"
    for i in range(5):
        write_number_video(videos / f"v{i}.mp4", i * 50, 20)
    whole = tmp_path / "whole.h5"
    aqa("preprocess", videos, "--out", whole, "--frames", "8", check=0)
    shards = [tmp_path / f"part{k}.h5" for k in range(2)]
    for k, shard in enumerate(shards):
        aqa("preprocess", videos, "--out", shard, "--frames", "8", "--shard", f"{k}/2", check=0)
    merged = tmp_path / "merged.h5"
    aqa("merge", *shards, "--out", merged, check=0)
    with VideoStore(whole) as a, VideoStore(merged) as b:
        assert b.file["frames"].is_virtual
        assert list(a.column("id")) == list(b.column("id"))
        np.testing.assert_array_equal(a.file["frames"][()], b.file["frames"][()])
        np.testing.assert_array_equal(a.column("index"), b.column("index"))
    odd = tmp_path / "odd.h5"
    aqa("preprocess", videos, "--out", odd, "--frames", "6", "--shard", "1/2", check=0)
    refused = aqa("merge", shards[0], odd, "--out", tmp_path / "mixed.h5", check=2)
    assert "cannot be merged" in refused.stderr and f"{odd}: --frames 6, --fit uniform" in refused.stderr


@pytest.mark.parametrize("compression", ["gzip", "lzf"])
def test_compression_choices_store_the_same_frames(
    clips: Path, tmp_path: Path, aqa, compression: str
) -> None:
    reference, other = tmp_path / "default.h5", tmp_path / f"{compression}.h5"
    aqa("preprocess", clips, "--out", reference, "--frames", "8", check=0)
    aqa("preprocess", clips, "--out", other, "--frames", "8", "--compression", compression, check=0)
    with VideoStore(reference) as a, VideoStore(other) as b:
        np.testing.assert_array_equal(a.file["frames"][()], b.file["frames"][()])
        assert b.config.compression == compression


def test_folder_of_videos_and_frame_folders_is_unlabeled(tmp_path: Path, aqa) -> None:
    folder = tmp_path / "incoming"
    write_number_video(folder / "a.mp4", 0, 12)
    for i in range(6):
        write_image(folder / "b" / f"img_{i:03d}.jpg", number_frame(500 + i))
    out = tmp_path / "incoming.h5"
    aqa("preprocess", folder, "--out", out, "--frames", "6", check=0)
    with VideoStore(out) as store:
        assert list(store.column("id")) == ["a", "b"]
        assert set(store.column("split")) == {"unlabeled"}
        assert np.isnan(store.column("score")).all()
        assert stored_numbers(store, 1) == list(range(500, 506))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["preprocess", "nowhere"], "source not found: nowhere"),
        (["preprocess", "{videos}", "--fit", "middle"], "unknown --fit 'middle'"),
        (["preprocess", "{videos}", "--shard", "3/2"], "--shard 3/2"),
        (["preprocess", "{videos}", "--frames", "0"], "--frames must be at least 1"),
        (["preprocess", "{videos}", "--compression", "zstd"], "unknown --compression 'zstd'"),
        (["preprocess"], "no MTL-AQA layout found under"),
        (["info", "nothing.h5"], "store not found: nothing.h5"),
        (["info", "{videos}/v.mp4"], "cannot open"),
    ],
)
def test_bad_arguments_give_one_clear_line(tmp_path: Path, aqa, args: list[str], message: str) -> None:
    videos = tmp_path / "videos"
    write_number_video(videos / "v.mp4", 0, 5)
    result = aqa(*[a.format(videos=videos) for a in args], cwd=tmp_path, check=2)
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.fixture
def small_filesystem(tmp_path: Path):
    """A 1 MiB tmpfs the test can fill up (needs root; skipped elsewhere)."""
    mount_point = tmp_path / "smallfs"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_is_one_clear_error_and_the_old_store_survives(
    tmp_path: Path, small_filesystem: Path, aqa
) -> None:
    videos = tmp_path / "videos"
    write_number_video(videos / "a.mp4", 0, 12)
    out = small_filesystem / "store.h5"
    aqa("preprocess", videos, "--out", out, "--frames", "4", "--compression", "none", check=0)
    before = store_content(out)
    for i in range(8):  # 8 more clips of 4 raw frames: about 2 MB, more than fits
        write_number_video(videos / f"more{i}.mp4", 100 * i, 24)
    result = aqa("preprocess", videos, "--out", out, "--frames", "4", "--compression", "none", check=2)
    assert "disk full" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()[-1:]) == 1
    after = store_content(out)
    for key, value in before.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, after[key])
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_filesystem)], check=True)
    aqa("preprocess", videos, "--out", out, "--frames", "4", "--compression", "none", check=0)
    with VideoStore(out) as store:
        assert len(store) == 9
