"""`aqa extract SOURCE --recipe`: raw videos straight to a recipe's clip features (tiny-test recipe, small
videos), its failures, kill -9 and rerun, shards and `aqa features merge`; and the synthetic long programs
end to end: extract -> `attn` learns -> `aqa score` on a raw video repeats the store and explains itself."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from aqa_cli.checkpoints.io import find_checkpoint, load_checkpoint
from aqa_cli.checkpoints.restore import load_head
from aqa_cli.media.synth import write_synthetic_programs
from aqa_cli.models.recipes import get_recipe, transform_frames
from aqa_cli.pipelines.options import StreamExtractOptions
from aqa_cli.pipelines.stream_extract import extract_from_videos
from aqa_cli.stores.feature_store import FeatureStore
from tests.helpers import read_video

# fp32: the reference features below are computed in fp32 ("auto" is bf16 on a CPU with native bf16)
TINY = ["--recipe", "tiny-test", "--clip", "8", "--batch-size", "32", "--workers", "2", "--precision", "fp32"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> Path:
    """32 long programs (24 train, 8 test) of 40 to 120 frames."""
    return write_synthetic_programs(
        tmp_path_factory.mktemp("programs"), n_videos=32, min_frames=40, max_frames=120
    )


@pytest.fixture(scope="module")
def extracted(programs: Path, tmp_path_factory) -> Path:
    from tests.helpers import run_aqa

    out = tmp_path_factory.mktemp("extracted") / "programs.features.h5"
    run_aqa("extract", programs, *TINY, "--out", out, check=0)
    return out


def test_features_and_times_are_the_recipe_applied_to_every_decoded_frame(
    programs: Path, extracted: Path
) -> None:
    from aqa_cli.models.recipes import build_feature_network

    recipe = get_recipe("tiny-test", clip=8)
    network, _ = build_feature_network(recipe)
    with FeatureStore(extracted) as store:
        assert (
            store.attributes["recipe"] == recipe.to_dict()
            and store.attributes["recipe_weights"]["sha256"] == "random init"
        )
        assert list(store.column("id")) == [f"program_{i:03d}" for i in range(32)]  # the source's order
        row = 5
        features, (starts, ends) = store.features(row), store.clip_times(row)
    frames, info, _ = read_video(programs.parent / "program_005.mp4", None)  # independently decoded
    clips = len(frames) // 8
    assert features.shape == (clips, 16) and len(starts) == clips
    np.testing.assert_allclose(starts, np.arange(clips) * 8 / 25)
    np.testing.assert_allclose(ends, (np.arange(clips) * 8 + 8) / 25)
    video = transform_frames(recipe, torch.from_numpy(frames[: clips * 8]))  # (3, T, h, w)
    with torch.inference_mode():
        expected = network(torch.stack(video.split(8, dim=1)))
    # the workers resize in numpy, the reference with torchvision: equal within a grey level
    expected = expected.numpy()
    np.testing.assert_allclose(features, expected, rtol=0, atol=1e-3 * np.abs(expected).max())


def test_long_programs_learn_and_a_raw_video_is_scored_as_its_stored_features(
    programs: Path, extracted: Path, tmp_path: Path
) -> None:
    from tests.helpers import run_aqa

    run = tmp_path / "run"
    args = ["--agg", "attn", "--epochs", "40", "--lr", "3e-3", "--val-fraction", "0.2", "--device", "cpu"]
    run_aqa("train", "--features", extracted, "--out", run, *args, check=0)
    evaluation = json.loads(run_aqa("eval", "--run", run, "--json", check=0).stdout)
    rows = [row for row in csv.DictReader(programs.open()) if row["split"] == "test"]
    lengths = [len(read_video(programs.parent / row["path"], (8, 8))[0]) for row in rows]
    length_rho = abs(spearmanr(lengths, [float(row["score"]) for row in rows])[0])
    assert evaluation["rho"] > 0.5 and evaluation["rho"] > length_rho + 0.3, (evaluation["rho"], length_rho)

    videos = [programs.parent / row["path"] for row in rows[:4]]
    scored = run_aqa(
        "score", *videos, "--run", run, "--json", "--explain", tmp_path / "timeline.png", check=0
    )
    results = json.loads(scored.stdout)  # stdout holds the JSON alone
    elements = json.loads((programs.parent / "elements.json").read_text())
    path = find_checkpoint(run, None)
    head = load_head(load_checkpoint(path), path)
    on_element = 0
    with FeatureStore(extracted) as store:
        ids = list(store.column("id"))
        for row, result in zip(rows[:4], results, strict=True):
            stored = store.features(ids.index(row["id"]))
            with torch.inference_mode():
                quality = head(torch.from_numpy(stored)[None], torch.tensor([float("nan")])).quality
            assert result["score"] == pytest.approx(float(quality[0]), abs=1e-5)
            assert [clip["start"] for clip in result["clips"]] == pytest.approx(
                store.clip_times(ids.index(row["id"]))[0]
            )
            top = max(result["clips"], key=lambda clip: clip["weight"])
            on_element += any(top["start"] < end and top["end"] > start for start, end in elements[row["id"]])
            assert Path(result["explanation"]).stat().st_size > 5000
    assert on_element >= 3, "the most weighted clips should fall on the elements"


def write_small_set(folder: Path) -> Path:
    """Four good programs, one shorter than a clip, one corrupt file."""
    manifest = write_synthetic_programs(folder, n_videos=4, min_frames=30, max_frames=60, seed=3)
    from tests.helpers import write_video

    write_video(folder / "short.mp4", np.zeros((5, 48, 64, 3), np.uint8))
    (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    with manifest.open("a") as f:
        f.write("short.mp4,5,,train,short\ncorrupt.mp4,6,,train,corrupt\n")
    return manifest


def test_a_short_and_a_corrupt_video_fail_on_their_own_lines_and_the_others_are_stored(
    tmp_path: Path,
) -> None:
    from tests.helpers import run_aqa

    manifest = write_small_set(tmp_path / "videos")
    out = tmp_path / "small.h5"
    result = run_aqa("extract", manifest, *TINY, "--resize", "ffmpeg", "--out", out, check=1)
    failures = [line for line in result.stdout.splitlines() if line.startswith("failed")]
    assert len(failures) == 2, result.stdout
    assert any("short" in line and "fewer than one clip" in line for line in failures)
    assert any("corrupt" in line and "corrupt.mp4" in line for line in failures)
    with FeatureStore(out) as store:
        assert list(store.column("id")) == [f"program_{i:03d}" for i in range(4)]
        assert store.attributes["resize"] == "ffmpeg" and store.features(0).any()
    unknown = run_aqa("extract", manifest, "--recipe", "no-such-recipe", check=2)
    assert "unknown recipe 'no-such-recipe'" in unknown.stderr and "vst-k600" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_killed_extraction_reruns_to_the_same_bytes_and_shards_merge_to_them(
    programs: Path, extracted: Path, tmp_path: Path
) -> None:
    from tests.helpers import run_aqa

    killed = tmp_path / "killed.h5"
    command = [sys.executable, "-m", "aqa_cli", "extract", str(programs), *TINY, "--out", str(killed)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    partial = Path(str(killed) + ".partial")
    deadline = time.time() + 120
    while len(list(partial.glob("video-*.npz"))) < 3 and time.time() < deadline and process.poll() is None:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not killed.exists() and len(list(partial.glob("video-*.npz"))) < 32, "finished before the kill"
    options = StreamExtractOptions(
        str(programs), "tiny-test", clip=8, batch_size=32, workers=2, precision="fp32"
    )
    rerun = extract_from_videos(dataclasses.replace(options, out=str(killed)))
    assert rerun.reused >= 3 and rerun.computed == 32 - rerun.reused and sha256(killed) == sha256(extracted)
    assert not partial.exists()
    assert extract_from_videos(dataclasses.replace(options, out=str(killed))).up_to_date

    shards = [tmp_path / f"shard{k}.h5" for k in range(2)]
    for k, shard in enumerate(shards):
        extract_from_videos(dataclasses.replace(options, out=str(shard), shard=f"{k}/2"))
    with FeatureStore(shards[1]) as store:
        assert list(store.column("id")) == [f"program_{i:03d}" for i in range(1, 32, 2)]
    merged = tmp_path / "merged.h5"
    run_aqa("features", "merge", *shards, "--out", merged, check=0)
    assert sha256(merged) == sha256(extracted)  # as the unsharded run wrote it


def test_a_frame_count_that_decoding_contradicts_is_recounted(programs: Path) -> None:
    """The probe's demuxed count is a guess: a stream job made for another count ends with `Recount`
    (its true count), never with features of the wrong clips."""
    from aqa_cli.media.sources.base import Sample
    from aqa_cli.media.streaming import FrameChunk, Recount, StreamWork, probe_sample
    from aqa_cli.models.streamed import plan_stream

    recipe = get_recipe("tiny-test", clip=8)
    sample = Sample(id="program_001", source=str(programs.parent / "program_001.mp4"))
    probe = probe_sample(sample)
    true_count = len(read_video(sample.source, (8, 8))[0])
    assert probe.frames == true_count
    messages: list = []
    StreamWork()(plan_stream(recipe, sample, true_count + 5, probe.width, probe.height), messages.append)
    assert messages[-1] == Recount("program_001", true_count)
    assert all(isinstance(message, FrameChunk) for message in messages[:-1])


def test_samples_of_one_video_are_decoded_in_one_pass_to_what_each_alone_gets(
    programs: Path, monkeypatch
) -> None:
    """Like MTL-AQA's dives of one event video: ranges of one file (overlapping, one past its end) are one
    decode, and each gets exactly the chunks and the ending it gets when streamed alone."""
    import aqa_cli.media.streaming as streaming
    from aqa_cli.media.sources.base import Sample
    from aqa_cli.models.streamed import plan_stream

    recipe = get_recipe("tiny-test", clip=8)
    source = str(programs.parent / "program_007.mp4")
    count = len(read_video(source, (8, 8))[0])
    ranges = {
        "early": (0, 24),
        "late": (count - 30, count),
        "overlap": (10, 50),
        "beyond": (count - 16, count + 8),
    }
    probe = streaming.probe_sample(Sample(id="whole", source=source))
    jobs = [
        plan_stream(
            recipe,
            Sample(id=name, source=source, first=first, last=last),
            last - first,
            probe.width,
            probe.height,
        )
        for name, (first, last) in ranges.items()
    ]
    opened: list[str] = []

    class CountingDecoder(streaming.VideoDecoder):
        def __init__(self, path, *args, **kwargs):
            opened.append(path)
            super().__init__(path, *args, **kwargs)

    monkeypatch.setattr(streaming, "VideoDecoder", CountingDecoder)
    (group,) = streaming.group_streams(jobs)
    together: list = []
    streaming.StreamWork(chunk=5)(group, together.append)
    assert opened == [source]

    def by_sample(messages: list) -> dict[str, tuple]:
        out = {}
        for name in ranges:
            mine = [m for m in messages if m.id == name]
            chunks = [m for m in mine if isinstance(m, streaming.FrameChunk)]
            frames = np.concatenate([c.frames for c in chunks]) if chunks else None
            times = np.concatenate([c.times for c in chunks]) if chunks else None
            out[name] = (frames, times, [c.position for c in chunks], mine[-1])
        return out

    alone: list = []
    for job in jobs:
        streaming.StreamWork(chunk=5)(job, alone.append)
    grouped, separate = by_sample(together), by_sample(alone)
    for name in ("early", "late", "overlap"):
        assert isinstance(grouped[name][3], streaming.Finished), grouped[name][3]
        np.testing.assert_array_equal(grouped[name][0], separate[name][0])
        np.testing.assert_array_equal(grouped[name][1], separate[name][1])
        assert grouped[name][2:] == separate[name][2:]
        assert len(grouped[name][0]) == len(jobs[list(ranges).index(name)].selected)
    assert grouped["beyond"][3] == separate["beyond"][3]
    assert (
        isinstance(grouped["beyond"][3], streaming.Failure)
        and f"has {count} frames" in grouped["beyond"][3].reason
    )


def test_an_extracted_range_of_a_video_is_the_range_streamed_alone(programs: Path, tmp_path: Path) -> None:
    """`aqa extract` of a manifest with three ranges of one video (one decode) stores each range's features
    as scoring that range alone computes them."""
    from aqa_cli.media.sources.base import Sample
    from aqa_cli.models.recipes import build_feature_network
    from aqa_cli.models.streamed import stream_video_features
    from tests.helpers import run_aqa

    source = programs.parent / "program_003.mp4"
    count = len(read_video(source, (8, 8))[0])
    ranges = [(0, 32), (8, 40), (count - 24, count)]
    manifest = tmp_path / "ranges.csv"
    lines = ["path,score,split,id,start,end"]
    lines += [f"{source},{i + 1},train,range_{i},{first},{last}" for i, (first, last) in enumerate(ranges)]
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ranges.h5"
    run_aqa("extract", manifest, *TINY, "--out", out, check=0)
    recipe = get_recipe("tiny-test", clip=8)
    network, _ = build_feature_network(recipe)
    with FeatureStore(out) as store:
        assert list(store.column("id")) == ["range_0", "range_1", "range_2"]
        precision = store.attributes["precision"]  # what "auto" chose on this machine
        for row, (first, last) in enumerate(ranges):
            alone = stream_video_features(
                Sample(id="alone", source=str(source), first=first, last=last),
                recipe,
                network,
                torch.device("cpu"),
                precision,
                32,
            )
            assert store.features(row).shape == ((last - first) // 8, 16)
            np.testing.assert_array_equal(store.features(row), alone.features)
