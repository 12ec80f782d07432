"""The decoder on damaged real videos: seeded byte mutations of real files, all preprocessed in one run.
Each video is stored or reported failed in one line; nothing crashes, hangs (every video has a timeout)
or grows memory without bound."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from aqa_cli.media.sources.folder import VIDEO_SUFFIXES
from aqa_cli.stores.video_store import VideoStore
from tests.faults.injection import UNWANTED, assert_success, fault_count, record, run, run_measuring_memory
from tests.helpers import SHARED_VIDEOS, write_number_video

TIMEOUT = 20  # seconds a mutated video may decode without finishing its clip
PEAK_MEMORY = 2 * 2**30  # bytes, any process of the run


def flip_bytes(data: bytearray, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 64)):
        data[rng.randrange(len(data))] = rng.randrange(256)


def zero_a_range(data: bytearray, rng: random.Random) -> None:
    start = rng.randrange(len(data))
    data[start : start + rng.randint(1, 4096)] = bytes(min(4096, len(data) - start))


def truncate(data: bytearray, rng: random.Random) -> None:
    del data[rng.randrange(1, len(data)) :]


def duplicate_a_range(data: bytearray, rng: random.Random) -> None:
    start, length = rng.randrange(len(data)), rng.randint(1, 8192)
    at = rng.randrange(len(data))
    data[at:at] = data[start : start + length]


def insert_garbage(data: bytearray, rng: random.Random) -> None:
    at = rng.randrange(len(data))
    data[at:at] = rng.randbytes(rng.randint(1, 2048))


def smash_the_header(data: bytearray, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 16)):
        data[rng.randrange(min(512, len(data)))] = rng.randrange(256)


MUTATIONS: list[Callable[[bytearray, random.Random], None]] = [
    flip_bytes,
    zero_a_range,
    truncate,
    duplicate_a_range,
    insert_garbage,
    smash_the_header,
]


def mutated(original: bytes, rng: random.Random) -> bytes:
    data = bytearray(original)
    for mutation in rng.sample(MUTATIONS, rng.randint(1, 3)):
        mutation(data, rng)
    return bytes(data) or b"\0"


def real_videos(folder: Path) -> list[Path]:
    """Videos encoded here in several codecs, plus the shared real-world files when present."""
    made = [
        write_number_video(folder / "numbers.mp4", 0, 30),
        write_number_video(folder / "numbers.mkv", 0, 30, codec="libx264"),
        write_number_video(folder / "numbers.webm", 0, 30, codec="libvpx"),
    ]
    shared = sorted(
        p for p in SHARED_VIDEOS.glob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.stat().st_size < 3e6
    )
    return made + shared


def test_mutated_real_videos_are_stored_or_fail_alone(tmp_path: Path) -> None:
    rng = random.Random(20241129)
    originals = real_videos(tmp_path / "originals")
    fuzz = tmp_path / "fuzz"
    fuzz.mkdir()
    per_video = fault_count(2, 20)
    for original in originals:
        content = original.read_bytes()
        for k in range(per_video):
            (fuzz / f"{original.stem}-{k:02d}{original.suffix}").write_bytes(mutated(content, rng))
    count = len(originals) * per_video
    out = tmp_path / "fuzz.h5"
    args = ["preprocess", fuzz, "--out", out, "--frames", "8", "--workers", "2", "--timeout", str(TIMEOUT)]
    result, peak = run_measuring_memory(args, timeout=count * TIMEOUT)
    text = result.stdout + result.stderr
    assert result.returncode in (0, 1), text[-3000:]
    assert not any(word in text for word in UNWANTED), text[-3000:]
    with VideoStore(out) as store:
        stored, failed = list(store.column("id")), dict(store.failed())
    assert len(stored) + len(failed) == count
    assert all("\n" not in reason for reason in failed.values())
    timed_out = sum("without progress" in reason for reason in failed.values())
    assert peak < PEAK_MEMORY, f"a process of the run reached {peak / 2**20:.0f} MiB"
    for outcome, number in (
        ("decoded and stored", len(stored)),
        ("reported failed", len(failed) - timed_out),
    ):
        record("preprocess", "mutated video", outcome, number)
    record("preprocess", "mutated video", "stopped by the timeout", timed_out)


def endless_video(path: Path) -> Path:
    """A real MPEG-TS video followed by 200 GiB of zeros (sparse: no disk used): the demuxer reads on and
    on looking for the next packet, the way a damaged or endless stream keeps a decoder busy."""
    write_number_video(path, 0, 20, codec="mpeg2video")
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size + 200 * 2**30)
    return path


def test_a_hanging_decode_is_stopped_and_reported_and_the_rest_stored(tmp_path: Path) -> None:
    write_number_video(tmp_path / "good.mp4", 0, 20)
    endless_video(tmp_path / "endless.ts")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,score,split\ngood.mp4,50,train\nendless.ts,60,train\n")
    out = tmp_path / "s.h5"
    result = run(["preprocess", manifest, "--out", out, "--frames", "4", "--timeout", "5"], timeout=300)
    assert result.returncode == 1 and result.seconds < 120, result.stderr[-2000:]
    with VideoStore(out) as store:
        assert list(store.column("id")) == ["good"]
        [(sample_id, reason)] = store.failed()
    assert sample_id == "endless" and "stopped after 5 s without progress" in reason
    record("preprocess", "decode that never ends", "stopped by the timeout; the rest stored")
    again = run(["preprocess", manifest, "--out", out, "--frames", "4", "--timeout", "5"], timeout=300)
    assert again.returncode == 1  # still failed, the good one kept
    assert_success(run(["info", out]))
