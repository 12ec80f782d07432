"""Checksums in stores and checkpoints: damage is found and named, everywhere it is read, in one line;
files written before checksums existed are still read."""

from __future__ import annotations

import json
import random
import shutil
import struct
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from aqa_cli.checkpoints.io import FORMAT_NAME, INTEGRITY, load_checkpoint, save_checkpoint
from aqa_cli.data.datasets import StoreClips
from aqa_cli.data.windows import WindowConfig
from aqa_cli.stores.video_store import VideoStore
from aqa_cli.util.errors import AqaError
from tests.faults.injection import assert_success, run, run_in_process
from tests.helpers import write_number_video

SAMPLES = 4


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("integrity")
    rows = ["path,score,difficulty,split,id"]
    for i in range(SAMPLES):
        write_number_video(root / f"v{i}.mp4", 50 * i, 10)
        rows.append(f"v{i}.mp4,{40 + i},2.5,train,v{i}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    assert_success(run(["preprocess", root / "manifest.csv", "--out", root / "store.h5", "--frames", "6"]))
    return root / "store.h5"


def flip_bit_at(path: Path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def damaged_copy(store: Path, folder: Path) -> Path:
    """The store with a bit flipped inside sample 1's frames chunk and in sample 3's score."""
    copy = folder / "damaged.h5"
    shutil.copy2(store, copy)
    with h5py.File(copy, "r") as f:
        chunk = f["frames"].id.get_chunk_info(1)
        score = f["samples/score"].id.get_offset()
    flip_bit_at(copy, chunk.byte_offset + chunk.size // 2, 3)
    flip_bit_at(copy, score + 8 * 3 + 7, 0)  # the low bit of the exponent: 43.0 becomes 86.0
    return copy


def test_verify_names_every_damaged_sample_and_exits_1(store: Path, tmp_path: Path, aqa) -> None:
    intact = aqa("info", store, "--verify", check=0)
    assert f"verified {SAMPLES} samples (chunk checksums and per-sample sha256): all intact" in intact.stdout
    damaged = damaged_copy(store, tmp_path)
    result = aqa("info", damaged, "--verify", check=1)
    assert "2 damaged" in result.stdout
    assert "v1 (row 1): its frames fail their chunk checksum (Fletcher-32)" in result.stdout
    assert "v3 (row 3): its metadata do not match their sha256" in result.stdout
    as_json = json.loads(aqa("info", damaged, "--verify", "--json", check=1).stdout)["verify"]
    assert [(entry["id"], entry["row"]) for entry in as_json["damaged"]] == [("v1", 1), ("v3", 3)]


def test_frames_replaced_with_a_valid_chunk_are_caught_by_their_sha256(
    store: Path, tmp_path: Path, aqa
) -> None:
    """A chunk rewritten whole passes Fletcher-32 (it is recomputed); the per-sample sha256 still differs."""
    copy = tmp_path / "rewritten.h5"
    shutil.copy2(store, copy)
    with h5py.File(copy, "a") as f:
        f["frames"][2] = 255 - f["frames"][2]
    result = aqa("info", copy, "--verify", check=1)
    assert "v2 (row 2): its frames do not match their sha256" in result.stdout
    with VideoStore(copy) as reader, pytest.raises(AqaError, match=r"sample v2 \(row 2\) is damaged"):
        reader.verified_frames(2)


def test_readers_refuse_damaged_metadata_in_one_line(store: Path, tmp_path: Path) -> None:
    damaged = damaged_copy(store, tmp_path)
    with pytest.raises(AqaError, match=r"the metadata of 1 sample\(s\) \(v3 \(row 3\)\)") as caught:
        VideoStore(damaged)
    assert "\n" not in str(caught.value)
    result = run_in_process(
        ["train", "--store", damaged, "--depth", "10", "--conv", "3d", "--clip", "2", "--frames", "4"]
    )
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [f"error: {caught.value}"]


def test_a_damaged_sample_read_in_a_loader_worker_is_one_line(store: Path, tmp_path: Path) -> None:
    """A loader worker's error comes back as torch's 'Caught ... Original Traceback' text; the user
    still sees the one line that names the sample."""
    damaged = tmp_path / "frames-damaged.h5"
    shutil.copy2(store, damaged)
    with h5py.File(damaged, "r") as f:
        chunk = f["frames"].id.get_chunk_info(2)
    flip_bit_at(damaged, chunk.byte_offset + 10)
    dataset = StoreClips(damaged, range(SAMPLES), WindowConfig(frames=4, jitter=1, crop=32), train=False)
    with pytest.raises(AqaError) as caught:
        list(DataLoader(dataset, batch_size=1, num_workers=1))
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(f"{damaged}: the frames of sample v2 (row 2) cannot be read")


def test_stores_without_checksums_are_read_and_preprocess_adds_them(store: Path, tmp_path: Path, aqa) -> None:
    legacy = tmp_path / "legacy.h5"
    shutil.copy2(store, legacy)
    with h5py.File(legacy, "a") as f:
        del f["samples/frames_sha256"], f["samples/meta_sha256"]
    with VideoStore(legacy) as reader:
        assert not reader.has_checksums
        np.testing.assert_array_equal(reader.verified_frames(0), VideoStore(store).frames(0))
    result = aqa("info", legacy, "--verify", check=0)
    assert "chunk checksums only: this store records no per-sample sha256" in result.stdout
    manifest = store.parent / "manifest.csv"
    aqa("preprocess", manifest, "--out", legacy, "--frames", "6", check=0)  # every sample kept, now checked
    with VideoStore(legacy) as upgraded, VideoStore(store) as original:
        assert upgraded.has_checksums
        for name in ("frames_sha256", "meta_sha256", "id", "score"):
            np.testing.assert_array_equal(upgraded.column(name), original.column(name))


def tensor_records(path: Path) -> dict[int, str]:
    """Byte offset of each tensor's data in a torch zip checkpoint, by its size in bytes."""
    found = {}
    with zipfile.ZipFile(path) as archive:
        data = path.read_bytes()
        for info in archive.infolist():
            if "/data/" in info.filename:
                name_length, extra_length = struct.unpack(
                    "<HH", data[info.header_offset + 26 : info.header_offset + 30]
                )
                found[info.file_size] = info.header_offset + 30 + name_length + extra_length
    return found


def test_a_damaged_checkpoint_names_its_damaged_tensors(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    weights = {"head.weight": torch.randn(7, 5), "head.bias": torch.randn(3)}
    optimizer = {
        "state": {0: {"exp_avg": torch.randn(11)}},
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.99)}],
    }
    save_checkpoint(path, {"model": weights, "optimizer": optimizer, "epoch": 3})
    assert load_checkpoint(path)["epoch"] == 3
    offsets = tensor_records(path)
    rng = random.Random(0)
    flip_bit_at(path, offsets[7 * 5 * 4] + rng.randrange(7 * 5 * 4), rng.randrange(8))
    flip_bit_at(path, offsets[11 * 4] + rng.randrange(11 * 4), rng.randrange(8))
    with pytest.raises(AqaError) as caught:
        load_checkpoint(path)
    assert str(caught.value).startswith(
        f"{path} is damaged: model/head.weight, optimizer/state/0/exp_avg no longer match the checksums"
    )


def test_changed_settings_in_a_checkpoint_are_named(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "epoch": 3})
    payload = torch.load(path, weights_only=True)
    payload["epoch"] = 4  # what a flipped bit in the pickled settings would do, kept loadable
    torch.save(payload, path)
    with pytest.raises(AqaError, match="is damaged: its settings and metadata no longer match"):
        load_checkpoint(path)


def test_checkpoints_without_checksums_still_load(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save({"format": FORMAT_NAME, "format_version": 1, "model": {"w": torch.ones(2)}, "epoch": 1}, path)
    payload = load_checkpoint(path)
    assert INTEGRITY not in payload and payload["epoch"] == 1
