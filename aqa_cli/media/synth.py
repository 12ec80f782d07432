"""The built-in demo dataset: synthetic dives whose score is visible in the motion.

Each video shows a diver (a bright bar) leaving a platform, somersaulting along a parabola and entering
the water. Hidden quality q in [0, 1] controls what judges look at: a poor dive wobbles sideways in
flight, enters the water tilted by up to 60 degrees, and throws a splash whose size grows with (1 - q).
Difficulty (2.0 ... 3.6) sets how many somersaults are turned. The label follows the real rule:
score = difficulty x (3 judges x judge mark), the mark being 10 q rounded to half points, so that
score / difficulty is learnable from pixels while difficulty alone explains only part of the score.

Same seed, same videos, same manifest. Videos are MPEG-4 Part 2 in .mp4 (any PyAV build encodes it).
"""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

WIDTH, HEIGHT = 160, 120
DIFFICULTIES = (2.0, 2.4, 2.8, 3.2, 3.6)
WATER_LINE = 78
TEST_EVERY = 4  # every 4th video is in the test split


def write_synthetic_dataset(out_dir: Path, n_videos: int = 48, n_frames: int = 110, seed: int = 0) -> Path:
    """Write `n_videos` videos and `manifest.csv` (path,score,difficulty,split,id) into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_videos):
        quality = float(rng.uniform(0.15, 1.0))
        difficulty = float(rng.choice(DIFFICULTIES))
        name = f"dive_{i:03d}.mp4"
        frames = render_dive(quality, difficulty, n_frames, rng)
        _encode(out_dir / name, frames)
        mark = round(quality * 20) / 2
        split = "test" if i % TEST_EVERY == TEST_EVERY - 1 else "train"
        rows.append(
            {
                "path": name,
                "score": f"{difficulty * 3 * mark:.2f}",
                "difficulty": f"{difficulty}",
                "split": split,
                "id": f"dive_{i:03d}",
            }
        )
    manifest = out_dir / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "score", "difficulty", "split", "id"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def render_dive(quality: float, difficulty: float, n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """(n_frames, HEIGHT, WIDTH, 3) uint8 RGB frames of one dive."""
    background = _background(rng)
    entry = int(n_frames * 0.75)
    flaw = 1.0 - quality
    turns = 1.0 + (difficulty - 2.0) * 1.25  # somersaults in flight
    tilt = np.deg2rad(60.0) * flaw * rng.choice([-1.0, 1.0])
    wobble_phase = rng.uniform(0, 2 * np.pi)
    frames = np.empty((n_frames, HEIGHT, WIDTH, 3), np.uint8)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    for t in range(n_frames):
        frame = background.copy()
        s = min(t / entry, 1.0)  # progress of the flight
        x = 30 + 50 * s + 10 * flaw * np.sin(6 * np.pi * s + wobble_phase)
        y = 22 - 40 * s + 96 * s * s  # up, then down into the water at the centre of the frame
        angle = 2 * np.pi * turns * s + tilt * s
        if t <= entry + 4:
            depth = max(0, t - entry) / 4  # the body disappears under the water after entry
            _draw_bar(frame, xx, yy, x, y, angle, visible_below=WATER_LINE + 12 * (1 - depth))
        if t >= entry:
            _draw_splash(frame, xx, yy, x, (t - entry) / max(1, n_frames - entry), flaw)
        frames[t] = frame
    return frames


def _background(rng: np.random.Generator) -> np.ndarray:
    frame = np.zeros((HEIGHT, WIDTH, 3), np.float32)
    frame[:WATER_LINE] = (70, 90, 120)  # hall
    frame[WATER_LINE:] = (20, 70, 160)  # pool
    frame[24:28, :34] = (200, 200, 200)  # platform
    frame += rng.normal(0, 4, frame.shape)
    return np.clip(frame, 0, 255).astype(np.uint8)


def _draw_bar(frame, xx, yy, x, y, angle, visible_below) -> None:
    u = (xx - x) * np.cos(angle) + (yy - y) * np.sin(angle)
    v = -(xx - x) * np.sin(angle) + (yy - y) * np.cos(angle)
    body = (np.abs(u) < 3) & (np.abs(v) < 10) & (yy < visible_below)
    frame[body] = (250, 220, 180)


def _draw_splash(frame, xx, yy, x, phase, flaw) -> None:
    radius = (4 + 26 * flaw) * np.sin(np.pi / 2 * min(phase * 3, 1.0)) * (1 - 0.4 * phase)
    height = radius * 0.8
    splash = ((xx - x) / max(radius, 1e-3)) ** 2 + ((yy - WATER_LINE) / max(height, 1e-3)) ** 2 < 1
    frame[splash & (yy <= WATER_LINE + 2)] = (245, 245, 255)


def _encode(path: Path, frames: np.ndarray) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"qscale": "3"}
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
