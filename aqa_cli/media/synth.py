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
import json
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


def _encode(path: Path, frames: np.ndarray, size: tuple[int, int] = (WIDTH, HEIGHT)) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(25))
        (stream.width, stream.height), stream.pix_fmt = size, "yuv420p"
        stream.options = {"qscale": "3"}
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


LONG_SIZE = (64, 48)  # (width, height) of the long programs: small, so that they extract in seconds
ELEMENT_FRAMES = 16


def write_synthetic_programs(
    out_dir: Path, n_videos: int = 40, min_frames: int = 80, max_frames: int = 240, seed: int = 0
) -> Path:
    """Long programs whose score comes from a few short elements at random times.

    A skater (a dark bar) glides back and forth over the ice for a random length; 1 to 3 elements of
    `ELEMENT_FRAMES` frames each appear at random times, each a disc whose size is its quality q (a
    small red one is a fall). The score is 10 x the mean quality of the program's elements, so it is
    independent of the length and of the number of elements: a model must find the elements. Writes
    the videos, `manifest.csv` (path,score,difficulty,split,id; difficulty empty) and `elements.json`
    (id -> [[start s, end s], ...] of its elements). Same seed, same bytes."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, elements = [], {}
    for i in range(n_videos):
        length = int(rng.integers(min_frames, max_frames + 1))
        count = int(rng.integers(1, 4))
        slots = rng.choice(length // ELEMENT_FRAMES, size=min(count, length // ELEMENT_FRAMES), replace=False)
        starts = sorted(int(slot) * ELEMENT_FRAMES + int(rng.integers(0, 4)) for slot in slots)
        starts = [min(start, length - ELEMENT_FRAMES) for start in starts]
        qualities = rng.uniform(0.0, 1.0, len(starts))
        name = f"program_{i:03d}"
        _encode(out_dir / f"{name}.mp4", render_program(length, starts, qualities, rng), LONG_SIZE)
        split = "test" if i % TEST_EVERY == TEST_EVERY - 1 else "train"
        rows.append(
            {
                "path": f"{name}.mp4",
                "score": f"{10 * qualities.mean():.3f}",
                "difficulty": "",
                "split": split,
                "id": name,
            }
        )
        elements[name] = [[start / 25, (start + ELEMENT_FRAMES) / 25] for start in starts]
    manifest = out_dir / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "score", "difficulty", "split", "id"])
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "elements.json").write_text(json.dumps(elements, indent=1) + "\n")
    return manifest


def render_program(
    length: int, starts: list[int], qualities: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(length, 48, 64, 3) uint8 frames: the gliding skater, and a disc per element."""
    width, height = LONG_SIZE
    ice = np.clip(rng.normal(215, 5, (height, width, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.empty((length, height, width, 3), np.uint8)
    phase = rng.uniform(0, 2 * np.pi)
    for t in range(length):
        frame = ice.copy()
        x = width / 2 + (width / 2 - 8) * np.sin(2 * np.pi * t / 60 + phase)
        frame[(np.abs(xx - x) < 2) & (yy > height // 2 - 8) & (yy < height // 2 + 8)] = (40, 40, 60)
        for start, quality in zip(starts, qualities, strict=True):
            if start <= t < start + ELEMENT_FRAMES:
                radius = 3 + 14 * quality
                colour = (240, 180, 20) if quality >= 0.25 else (220, 20, 20)
                frame[(xx - x) ** 2 + (yy - height / 2) ** 2 < radius**2] = colour
        frames[t] = frame
    return frames
