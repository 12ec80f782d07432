"""Test fixtures made of real bytes: videos and images encoded here with PyAV.

Frame numbers are written into the pixels as 10 wide black/white bars (binary, most significant bit
first), so that after lossy encoding, resizing and decoding a test can read back exactly which source
frame a stored frame came from.
"""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import h5py
import numpy as np

from aqa_cli.media.decoder import FRAME_SIZE, VideoDecoder, VideoInfo
from tests.cli_process import run_cli

NUMBER_BITS = 12
SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_VIDEOS = SHARED / "data" / "videos"
SHARED_MTL_AQA = SHARED / "data" / "mtl-aqa"


def number_frame(n: int, width: int = 176, height: int = 128) -> np.ndarray:
    """An RGB frame (H, W, 3) whose vertical bars spell `n` in binary."""
    bits = [(n >> (NUMBER_BITS - 1 - b)) & 1 for b in range(NUMBER_BITS)]
    columns = np.repeat(np.array(bits, dtype=np.uint8) * 255, int(np.ceil(width / NUMBER_BITS)))[:width]
    return np.broadcast_to(columns[None, :, None], (height, width, 3)).copy()


def read_number(frame: np.ndarray) -> int:
    """Inverse of `number_frame` for a decoded (and possibly resized) frame."""
    height, width = frame.shape[:2]
    gray = frame[height // 4 : 3 * height // 4].mean(axis=(0, 2))
    n = 0
    for b in range(NUMBER_BITS):
        lo = int(b * width / NUMBER_BITS)
        hi = int((b + 1) * width / NUMBER_BITS)
        centre = gray[lo + (hi - lo) // 4 : hi - (hi - lo) // 4]
        n = (n << 1) | int(centre.mean() > 127)
    return n


def write_video(
    path: Path,
    frames: np.ndarray | list[np.ndarray],
    codec: str = "mpeg4",
    fps: int = 25,
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
) -> Path:
    """Encode RGB frames (T, H, W, 3) into `path` with PyAV; the container follows the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = list(frames)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if options:
            stream.options = options
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def store_content(path: Path) -> dict:
    """Everything in a store but its creation time, for comparing two runs."""
    content = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: content.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
        )
        content["attrs"] = {k: str(v) for k, v in f.attrs.items() if k != "created"}
    return content


def assert_same_content(a: Path, b: Path) -> None:
    ca, cb = store_content(a), store_content(b)
    assert ca.keys() == cb.keys()
    for key in ca:
        if isinstance(ca[key], np.ndarray):
            np.testing.assert_array_equal(ca[key], cb[key], err_msg=key)
        else:
            assert ca[key] == cb[key], key


def write_number_video(path: Path, first: int, count: int, **kwargs) -> Path:
    """A video whose i-th frame (0-based) shows the number first + i."""
    return write_video(path, [number_frame(first + i) for i in range(count)], **kwargs)


def write_image(path: Path, rgb: np.ndarray) -> Path:
    """Write one RGB image (JPEG or PNG by suffix) through PyAV's encoders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = "png" if path.suffix.lower() == ".png" else "mjpeg"
    pix_fmt = "rgb24" if codec == "png" else "yuvj444p"
    height, width = rgb.shape[:2]
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream(codec, rate=1)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return path


def run_aqa(*args, cwd=None, check=None, timeout=900, fresh=False) -> subprocess.CompletedProcess:
    """Run the real `aqa` command line in a process of its own, as a user would: forked from a server that
    has imported the package (tests/cli_process.py), or with `fresh` a new interpreter, `python -m aqa_cli`,
    which also checks that the command imports all it uses."""
    env = {**os.environ, "COLUMNS": "200"}
    args = [str(arg) for arg in args]
    if fresh:
        command = [sys.executable, "-m", "aqa_cli", *args]
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    else:
        result = run_cli(args, cwd, env, timeout)
    if check is not None and result.returncode != check:
        raise AssertionError(
            f"exit {result.returncode} != {check}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def read_video(
    path: str | Path, size: tuple[int, int] | None = FRAME_SIZE
) -> tuple[np.ndarray, VideoInfo, int]:
    """All frames of a video through the decoder as (T, H, W, 3) uint8, with its info and the packets lost."""
    with VideoDecoder(path, size) as decoder:
        frames = np.stack([frame for _, frame in decoder.frames()])
        return frames, decoder.info, decoder.frames_lost
