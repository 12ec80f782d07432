"""Preprocess throughput against ffmpeg decoding + scaling to raw RGB, both using the whole machine.

aqa: `aqa preprocess DIR --out STORE` with its defaults, wall time including start-up.
ffmpeg: `ffmpeg -i X -vf scale=171:128 -pix_fmt rgb24 -f rawvideo -` for every file, as many at once
as there are cores. Frames = every frame of every source (what ffmpeg outputs), the same count for both.
Also: --workers 1 vs 2, peak RSS for 10 and 100 videos, and `aqa --help` start-up time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
FRAME_BYTES = 171 * 128 * 3


def _aqa(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "aqa_cli", *args], check=True, capture_output=True)
    return time.perf_counter() - start


def _ffmpeg_frames(path: Path) -> int:
    command = [
        "ffmpeg",
        "-v",
        "error",
        "-i",
        str(path),
        "-vf",
        "scale=171:128",
        "-pix_fmt",
        "rgb24",
        "-f",
        "rawvideo",
        "-",
    ]
    output = subprocess.run(command, capture_output=True, check=True).stdout
    return len(output) // FRAME_BYTES


def _ffmpeg_all(videos: list[Path]) -> tuple[int, float]:
    start = time.perf_counter()
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        frames = sum(pool.map(_ffmpeg_frames, videos))
    return frames, time.perf_counter() - start


def _videos(work: Path) -> Path:
    """The real public test videos (when ../shared is present) plus the synthetic demo videos."""
    folder = work / "videos"
    folder.mkdir()
    if SHARED_VIDEOS.is_dir():
        for video in SHARED_VIDEOS.iterdir():
            if video.suffix != ".md" and "corrupted" not in video.name:
                shutil.copy(video, folder / video.name)
    subprocess.run(
        [sys.executable, "-m", "aqa_cli", "synth", str(work / "synth"), "--videos", "24"],
        check=True,
        capture_output=True,
    )
    for video in (work / "synth").glob("*.mp4"):
        shutil.copy(video, folder / video.name)
    return folder


def _peak_rss_mb(*args: str) -> float:
    """Peak resident memory of an aqa command and its worker processes (max over processes), in MB."""
    code = (
        "import resource, subprocess, sys;"
        f"subprocess.run([sys.executable, '-m', 'aqa_cli', *{list(args)!r}], check=True, capture_output=True);"
        "print(max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, 0))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(output.strip()) / 1024


def run() -> list[dict]:
    if shutil.which("ffmpeg") is None:
        return [
            {
                "name": "preprocess vs ffmpeg",
                "measure": "skipped: ffmpeg not installed (apt-get install ffmpeg)",
            }
        ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        videos = _videos(work)
        files = sorted(videos.iterdir())
        frames, ffmpeg_seconds = _ffmpeg_all(files)
        aqa_seconds = _aqa("preprocess", str(videos), "--out", str(work / "all.h5"))
        ratio = ffmpeg_seconds / aqa_seconds
        rows.append(
            {
                "name": f"preprocess vs ffmpeg ({len(files)} videos, {frames} frames)",
                "measure": "frames/s",
                "aqa": f"{frames / aqa_seconds:.0f}",
                "reference": f"{frames / ffmpeg_seconds:.0f}",
                "ratio": f"{ratio:.2f}x",
                "target": ">= 0.8x",
            }
        )
        one = _aqa("preprocess", str(videos), "--out", str(work / "w1.h5"), "--workers", "1")
        two = _aqa("preprocess", str(videos), "--out", str(work / "w2.h5"), "--workers", "2")
        rows.append(
            {
                "name": "preprocess --workers 1 vs 2",
                "measure": "frames/s",
                "aqa": f"{frames / two:.0f} (2)",
                "reference": f"{frames / one:.0f} (1)",
                "ratio": f"{one / two:.2f}x",
                "target": "> 1x",
            }
        )
        for count in (10, 100):
            many = work / f"many{count}"
            many.mkdir()
            synth = sorted((work / "synth").glob("*.mp4"))
            for i in range(count):
                os.link(synth[i % len(synth)], many / f"v{i:03d}.mp4")
            rss = _peak_rss_mb("preprocess", str(many), "--out", str(work / f"many{count}.h5"))
            rows.append(
                {
                    "name": f"preprocess peak RSS, {count} videos",
                    "measure": "MB (largest process)",
                    "aqa": f"{rss:.0f}",
                    "target": "flat in the count",
                }
            )
        helps = []
        for _ in range(5):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "aqa_cli", "--help"], check=True, capture_output=True)
            helps.append(time.perf_counter() - start)
        rows.append(
            {
                "name": "aqa --help start-up",
                "measure": "s (best of 5)",
                "aqa": f"{min(helps):.2f}",
                "target": "< 1 s",
            }
        )
    return rows
