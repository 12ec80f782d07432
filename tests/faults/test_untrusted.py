"""Untrusted files: pickles that would run code are refused before they can, in one line; paths and ids
in a manifest cannot make preprocess write outside its output."""

from __future__ import annotations

import os
import pickle
import signal
import uuid
from pathlib import Path

import pytest
import torch

from aqa_cli.checkpoints.io import FORMAT_NAME
from aqa_cli.stores.video_store import VideoStore
from aqa_cli.util.safe_output import partial_folder
from tests.faults.injection import assert_clean_failure, assert_success, run, run_in_process, run_with_signal
from tests.helpers import write_number_video
from tests.mtl_aqa_trees import build_videos, synthetic_annotations, write_annotations


class RunsAShellCommand:
    """What an attacker pickles: an object whose reduction calls os.system."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return os.system, (self.command,)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("untrusted")
    write_number_video(root / "v.mp4", 0, 12)
    (root / "manifest.csv").write_text("path,score,split\nv.mp4,50,train\n")
    assert_success(run(["preprocess", root / "manifest.csv", "--out", root / "s.h5", "--frames", "8"]))
    return root / "s.h5"


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint that looks like aqa's but runs `touch marker` when unpickled unsafely."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT_NAME, "format_version": 1, "epoch": 1, "model": {"w": torch.zeros(2)}}
    torch.save({**payload, "extra": RunsAShellCommand(f"touch {marker}")}, path)
    return path


@pytest.mark.parametrize("command", ["eval", "score", "train --resume"])
def test_a_code_executing_training_checkpoint_is_refused(
    command: str, tiny_store: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "payload-ran"
    run_dir = tmp_path / "run"
    checkpoint = malicious_checkpoint(run_dir / "last.pt", marker)
    args = {
        "eval": ["eval", "--checkpoint", checkpoint, "--store", tiny_store],
        "score": ["score", tiny_store.parent / "v.mp4", "--checkpoint", checkpoint],
        "train --resume": [
            "train",
            "--store",
            tiny_store,
            "--out",
            run_dir,
            "--resume",
            "--frames",
            "8",
            "--clip",
            "8",
        ],
    }[command]
    result = run_in_process(args)
    assert_clean_failure(result, f"refusing to load {checkpoint}", "may be malicious", code=2)
    assert not marker.exists()
    torch.load(checkpoint, weights_only=False)  # the payload is live: an unsafe load would have run it
    assert marker.exists()


def test_a_code_executing_annotation_pickle_is_refused_by_preprocess(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    records, train, test = synthetic_annotations({(1, 1): 103})
    root = write_annotations(tmp_path / "mtl", (records, train, test))
    build_videos(root, {(1, 1): 103})
    with open(root / "final_annotations_dict.pkl", "wb") as file:
        pickle.dump({(1, 1): {**records[(1, 1)], "note": RunsAShellCommand(f"touch {marker}")}}, file)
    result = run(["preprocess", root, "--out", tmp_path / "s.h5"])
    assert_clean_failure(result, "refusing to load", "system", "may be malicious", code=2)
    assert not marker.exists() and not (tmp_path / "s.h5").exists()


def all_files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


@pytest.mark.parametrize("killed", [False, True], ids=["finished", "killed mid-run"])
def test_manifest_paths_and_ids_cannot_write_outside_the_output(killed: bool, tmp_path: Path) -> None:
    write_number_video(tmp_path / "videos" / "v.mp4", 0, 240)  # long enough to be killed mid-run
    escape = Path("/tmp") / f"aqa-escape-{uuid.uuid4().hex}"
    ids = [
        "../../escape",
        "../escape",
        str(escape),
        "sub/../../../x",
        "..",
        ".",
        "~/x",
        "$HOME/x",
        "a\\..\\b",
    ]
    sources = [str(tmp_path / "videos" / "v.mp4"), "../../videos/v.mp4"]  # reading any video is allowed
    rows = [f"{sources[k % 2]},{10 + k},train,{sample_id}" for k, sample_id in enumerate(ids)]
    manifest = tmp_path / "sandbox" / "in" / "manifest.csv"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("path,score,split,id\n" + "\n".join(rows) + "\n")
    out = tmp_path / "sandbox" / "out" / "store.h5"
    before = all_files(tmp_path)
    args = ["preprocess", manifest, "--out", out, "--frames", "4", "--workers", "2"]
    if killed:

        def first_sample_done() -> bool:
            return any(partial_folder(out).glob("*.h5"))

        assert run_with_signal(args, first_sample_done, signal.SIGKILL).signalled, "it finished first"
        written = all_files(tmp_path) - before
        assert all(out.parent in path.parents for path in written), written
    assert_success(run(args))
    assert all_files(tmp_path) - before == {out}  # and no lock file left
    assert not escape.exists() and not (Path.home() / "x").exists()
    with VideoStore(out) as store:
        assert list(store.column("id")) == ids  # stored as given, never used as a path
