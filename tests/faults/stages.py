"""The pipeline's stages as the fault tests see them: how to run each, what it writes, and how to compare
that with an undisturbed run.

Every stage runs the real command line on small real inputs (encoded videos, a preprocessed store, a
trained tiny model). Its `reference` is what an undisturbed run produced; `check_reference` asserts that
a rerun after a fault produced exactly that, and `check_intact` that a disturbed run left only complete
outputs: each one is the previous good state or the reference (training: a checkpoint of an earlier
epoch, identical to the undisturbed run's at that epoch).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from functools import cached_property
from pathlib import Path

import numpy as np

from aqa_cli.checkpoints.io import load_checkpoint
from tests.faults.injection import assert_success, run
from tests.helpers import store_content, write_number_video

VIDEOS = 8
TRAIN_EPOCHS = 2
TINY_MODEL = ["--depth", "10", "--conv", "3d", "--clip", "8", "--frames", "8", "--crop", "32"]
TRAIN_OPTIONS = [
    *TINY_MODEL,
    *["--batch-size", "4", "--workers", "1", "--lr", "3e-3", "--seed", "0"],
    *["--val-fraction", "0.25", "--no-test-curve", "--device", "cpu", "--epochs", str(TRAIN_EPOCHS)],
]
PREPROCESS_OPTIONS = ["--frames", "12", "--fit", "tail", "--workers", "2"]


def first_difference(a: object, b: object, where: str = "") -> str | None:
    """Where two contents differ (None: equal); arrays compare exactly, NaN equal to NaN."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{where}: keys {sorted(a.keys() ^ b.keys())} in one only"
        return next((d for k in a if (d := first_difference(a[k], b[k], f"{where}/{k}"))), None)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return f"{where}: {len(a)} items != {len(b)}"
        return next(
            (
                d
                for i, (x, y) in enumerate(zip(a, b, strict=True))
                if (d := first_difference(x, y, f"{where}[{i}]"))
            ),
            None,
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        same = a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        return None if same else f"{where}: arrays differ"
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return None
    return None if a == b else f"{where}: {str(a)[:80]!r} != {str(b)[:80]!r}"


def place(source: Path, target: Path) -> None:
    """A hard link where possible (inputs are only read), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def tree_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


class Inputs:
    """The real inputs every stage starts from, built once per test session under `root`."""

    def __init__(self, root: Path):
        self.root = root
        rows = ["path,score,difficulty,split,id"]
        for i in range(VIDEOS):
            write_number_video(root / "videos" / f"v{i}.mp4", 100 * i, 40)
            split = "test" if i >= VIDEOS - 2 else "train"
            rows.append(f"v{i}.mp4,{30 + 5 * i},{2.0 + 0.2 * i:.1f},{split},v{i}")
        self.manifest = root / "videos" / "manifest.csv"
        self.manifest.write_text("\n".join(rows) + "\n")
        self.earlier_manifest = root / "videos" / "earlier.csv"  # the first half: a previous, smaller store
        self.earlier_manifest.write_text("\n".join(rows[: 1 + VIDEOS // 2]) + "\n")
        self.videos = [root / "videos" / "v0.mp4", root / "videos" / f"v{VIDEOS - 1}.mp4"]

    @cached_property
    def store(self) -> Path:
        store = self.root / "store.h5"
        assert_success(run(["preprocess", self.manifest, "--out", store, *PREPROCESS_OPTIONS]))
        return store

    @cached_property
    def shards(self) -> list[Path]:
        """The inputs preprocessed as two shards (`--shard K/2`), for `aqa merge`."""
        shards = [self.root / f"shard{k}.h5" for k in range(2)]
        for k, shard in enumerate(shards):
            args = ["preprocess", self.manifest, "--out", shard, *PREPROCESS_OPTIONS, "--shard", f"{k}/2"]
            assert_success(run(args))
        return shards

    @cached_property
    def features(self) -> Path:
        """A small imported feature store: 16 videos of 3-6 clips of 8 values, the score in their mean."""
        folder = self.root / "features"
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        lines = {"train": [], "test": []}
        for i in range(16):
            clips = rng.normal(size=(3 + i % 4, 8)).astype(np.float32)
            np.save(folder / f"f{i}.npy", clips)
            lines["test" if i >= 12 else "train"].append(f"f{i},{50 + 10 * clips[:, 0].mean():.3f}")
        for split, rows in lines.items():
            (folder / f"{split}.csv").write_text("id,score\n" + "\n".join(rows) + "\n")
        store = self.root / "features.h5"
        assert_success(run(["features", "import", folder, "--out", store]))
        return store

    def preprocess_into(self, store: Path, manifest: Path | None = None) -> None:
        """Write (or repair) `store` from the inputs, as a user whose store was damaged would."""
        args = ["preprocess", manifest or self.manifest, "--out", store, *PREPROCESS_OPTIONS]
        assert_success(run(args))


class Stage:
    """One command of the pipeline under fault injection."""

    name = ""
    lock = ""  # the lock file the command holds while it writes, relative to its output folder

    def __init__(self, inputs: Inputs, root: Path):
        self.inputs = inputs
        self.root = root

    @cached_property
    def reference(self) -> dict:
        """What an undisturbed run produces (built on first use; also times it)."""
        out = self.root / f"reference-{self.name}"
        self.prepare(out)
        prepared = tree_bytes(out)
        result = run(self.command(out))
        assert_success(result)
        self.duration = result.seconds
        self.written = tree_bytes(out) - prepared
        self.reference_dir = out
        return self.content(out, result)

    def prepare(self, out: Path, previous: bool = False) -> None:
        """Lay out what the command starts from in `out`; with `previous`, also a previous good output."""
        out.mkdir(parents=True, exist_ok=True)

    def command(self, out: Path) -> list:
        raise NotImplementedError

    def rerun(self, out: Path) -> list:
        """How a user continues after a failure: the same command, unless the stage says otherwise."""
        return self.command(out)

    def outputs(self, out: Path) -> dict:
        """Every output present in `out`, as comparable content (missing outputs are left out)."""
        raise NotImplementedError

    def printed(self, result) -> dict:
        """What the command printed that matters (machine-readable output)."""
        return {}

    def content(self, out: Path, result) -> dict:
        return {**self.outputs(out), **self.printed(result)}

    def check_reference(self, out: Path, result) -> None:
        difference = first_difference(self.content(out, result), self.reference)
        assert difference is None, f"{self.name}: rerun differs from an undisturbed run at {difference}"

    def check_intact(self, out: Path, before: dict) -> None:
        for key, value in self.outputs(out).items():
            assert first_difference(value, self.reference[key]) is None or (
                key in before and first_difference(value, before[key]) is None
            ), f"{self.name}: {key} is neither the previous state nor the finished one"

    def store_input(self, out: Path) -> Path:
        """The video store the command reads: a private copy in `out` when a test made one to damage."""
        private = out / "input.h5"
        return private if private.exists() else self.inputs.store


def h5_content(path: Path, paths: dict[str, str]) -> dict:
    """An HDF5 file's datasets and attributes (not `created`), with the given paths replaced by names, so
    that outputs made from inputs at other places compare equal."""
    content = store_content(path)
    attributes = content.pop("attrs")
    for value, name in paths.items():
        attributes = {key: text.replace(value, name) for key, text in attributes.items()}
    return {**content, "attrs": attributes}


class Preprocess(Stage):
    name = "preprocess"
    lock = "store.h5.lock"

    @cached_property
    def earlier_store(self) -> Path:
        store = self.root / "earlier.h5"
        self.inputs.preprocess_into(store, self.inputs.earlier_manifest)
        return store

    def prepare(self, out: Path, previous: bool = False) -> None:
        super().prepare(out)
        if previous:
            shutil.copy2(self.earlier_store, out / "store.h5")

    def command(self, out: Path) -> list:
        return ["preprocess", self.inputs.manifest, "--out", out / "store.h5", *PREPROCESS_OPTIONS]

    def outputs(self, out: Path) -> dict:
        store = out / "store.h5"
        return {"store": h5_content(store, {})} if store.exists() else {}

    def check_intact(self, out: Path, before: dict) -> None:
        super().check_intact(out, {"store": h5_content(self.earlier_store, {}), **before})


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]


class Train(Stage):
    name = "train"
    lock = "run/train.lock"

    @cached_property
    def halfway(self) -> Path:
        """A run stopped after its first epoch (to resume to the reference's last)."""
        out = self.root / "halfway-train"
        assert_success(run([*self.command(out), "--epochs", "1"]))
        return out / "run"

    def command(self, out: Path) -> list:
        return ["train", "--store", self.store_input(out), "--out", out / "run", *TRAIN_OPTIONS]

    def rerun(self, out: Path) -> list:
        run_dir = out / "run"
        return (
            ["train", "--out", run_dir, "--resume"] if (run_dir / "last.pt").exists() else self.command(out)
        )

    def outputs(self, out: Path) -> dict:
        run_dir = out / "run"
        found = {}
        for name in ("last.pt", "best.pt"):
            if (run_dir / name).exists():
                payload = load_checkpoint(run_dir / name)  # checks every tensor's checksum
                found[name] = {
                    "tensors": payload["integrity"]["tensors"],
                    "epoch": payload["epoch"],
                    "metrics": without_seconds(payload.get("metrics", [])),
                }
        if (run_dir / "metrics.csv").exists():
            with open(run_dir / "metrics.csv") as f:
                found["metrics.csv"] = without_seconds(list(csv.DictReader(f)))
        if (run_dir / "config.toml").exists():
            lines = (run_dir / "config.toml").read_text().splitlines()
            found["config.toml"] = [line for line in lines if not line.startswith(("store =", "out ="))]
        if (run_dir / "curves.png").exists():
            found["curves.png"] = (run_dir / "curves.png").read_bytes()
        return found

    def check_intact(self, out: Path, before: dict) -> None:
        """Every checkpoint loads intact, and the run so far is the undisturbed run's first epochs."""
        found = self.outputs(out)
        reference_metrics = self.reference["last.pt"]["metrics"]
        if "last.pt" in found:
            epoch = found["last.pt"]["epoch"]
            assert found["last.pt"]["metrics"] == reference_metrics[:epoch]
            if epoch == TRAIN_EPOCHS:
                assert first_difference(found["last.pt"], self.reference["last.pt"]) is None
        if "metrics.csv" in found:
            rows = found["metrics.csv"]
            assert rows == self.reference["metrics.csv"][: len(rows)]
        if "config.toml" in found:
            assert found["config.toml"] == self.reference["config.toml"]


class Evaluate(Stage):
    name = "eval"
    lock = "run/predictions-test.lock"

    def __init__(self, inputs: Inputs, root: Path, trained: Train):
        super().__init__(inputs, root)
        self.trained = trained

    @property
    def checkpoint(self) -> Path:
        self.trained.reference  # noqa: B018 - trains the reference run on first use
        return self.trained.reference_dir / "run" / "best.pt"

    def checkpoint_in(self, out: Path) -> Path:
        """Where the command reads its checkpoint."""
        return out / "run" / "best.pt"

    def prepare(self, out: Path, previous: bool = False) -> None:
        place(self.checkpoint, self.checkpoint_in(out))
        if previous:
            for name in ("predictions-test.h5", "scatter-test.png"):
                shutil.copy2(self.reference_dir / "run" / name, out / "run" / name)

    def command(self, out: Path) -> list:
        run_dir = out / "run"
        return ["eval", "--run", run_dir, "--store", self.store_input(out), "--json", "--device", "cpu"]

    def outputs(self, out: Path) -> dict:
        run_dir, found = out / "run", {}
        if (run_dir / "predictions-test.h5").exists():
            content = store_content(run_dir / "predictions-test.h5")
            found["predictions"] = {key: value for key, value in content.items() if key != "attrs"}
        if (run_dir / "scatter-test.png").exists():
            found["scatter"] = (run_dir / "scatter-test.png").read_bytes()
        return found

    def printed(self, result) -> dict:
        printed = json.loads(result.stdout)
        return {
            "json": {
                k: v for k, v in printed.items() if k not in ("checkpoint", "store", "predictions", "plot")
            }
        }


class Score(Evaluate):
    name = "score"
    lock = ""  # scoring writes no shared state; its pictures are replaced atomically

    def checkpoint_in(self, out: Path) -> Path:
        return out / "model.pt"

    def prepare(self, out: Path, previous: bool = False) -> None:
        place(self.checkpoint, self.checkpoint_in(out))
        if previous:
            for picture in self.reference_dir.glob("explain-*.png"):
                shutil.copy2(picture, out / picture.name)

    def command(self, out: Path) -> list:
        return [
            "score",
            *self.inputs.videos,
            *[
                "--checkpoint",
                self.checkpoint_in(out),
                "--difficulty",
                "2.5",
                "--explain",
                out / "explain.png",
            ],
            *["--json", "--device", "cpu"],
        ]

    def outputs(self, out: Path) -> dict:
        return {picture.name: picture.read_bytes() for picture in sorted(out.glob("explain-*.png"))}

    def printed(self, result) -> dict:
        entries = json.loads(result.stdout)
        return {
            "json": [{k: v for k, v in e.items() if k not in ("checkpoint", "explanation")} for e in entries]
        }


class Extract(Stage):
    name = "extract"
    lock = "features.h5.lock"

    def command(self, out: Path) -> list:
        return [
            "extract",
            *["--store", self.store_input(out), "--out", out / "features.h5", *TINY_MODEL],
            *["--batch-size", "2", "--device", "cpu", "--workers", "0"],
        ]

    def outputs(self, out: Path) -> dict:
        features = out / "features.h5"
        if not features.exists():
            return {}
        inputs = {str(self.store_input(out).resolve()): "STORE", str(self.inputs.store.resolve()): "STORE"}
        return {"features": h5_content(features, inputs)}


class Merge(Stage):
    name = "merge"
    lock = "store.h5.lock"

    def prepare(self, out: Path, previous: bool = False) -> None:
        super().prepare(out)
        for shard in self.inputs.shards:
            place(shard, out / shard.name)  # a merged store reads its shards beside it
        if previous:
            shutil.copy2(self.reference_dir / "store.h5", out / "store.h5")

    def command(self, out: Path) -> list:
        return ["merge", *(out / shard.name for shard in self.inputs.shards), "--out", out / "store.h5"]

    def outputs(self, out: Path) -> dict:
        store = out / "store.h5"
        return {"store": h5_content(store, {str(out): "OUT"})} if store.exists() else {}


class Experiment(Stage):
    """A grid on a small imported feature store: one aggregation and the ridge baseline, two seeds."""

    name = "experiment"
    lock = "experiment/experiment.lock"

    def prepare(self, out: Path, previous: bool = False) -> None:
        super().prepare(out)
        if previous:
            shutil.copytree(self.reference_dir / "experiment", out / "experiment")

    def command(self, out: Path) -> list:
        return [
            *["experiment", "--features", self.inputs.features, "--agg", "avg", "--seeds", "2"],
            *["--epochs", "2", "--batch-size", "4", "--val-fraction", "0.25", "--device", "cpu"],
            *["--out", out / "experiment"],
        ]

    def outputs(self, out: Path) -> dict:
        folder, found = out / "experiment", {}
        for name in ("table.md", "table.csv", "experiment.toml"):
            if (folder / name).exists():
                found[name] = (folder / name).read_text().replace(str(out), "OUT")
        if (folder / "results.csv").exists():
            with open(folder / "results.csv") as f:
                found["results.csv"] = [
                    {**row, "run_dir": row["run_dir"].replace(str(out), "OUT")}
                    for row in without_seconds(list(csv.DictReader(f)))
                ]
        for checkpoint in sorted(folder.glob("runs/*/last.pt")):
            payload = load_checkpoint(checkpoint)  # checks every tensor's checksum
            found[f"runs/{checkpoint.parent.name}"] = {
                "tensors": payload["integrity"]["tensors"],
                "epoch": payload["epoch"],
                "metrics": without_seconds(payload["metrics"]),
            }
        return found

    def check_intact(self, out: Path, before: dict) -> None:
        """Whole files only: every table is the previous one or the finished one, results.csv lists the
        first runs of the finished one, and every run so far is its run's first epochs."""
        for key, value in self.outputs(out).items():
            reference = self.reference.get(key)
            if key in before and first_difference(value, before[key]) is None:
                continue  # as it was before the run
            if key == "results.csv":
                difference = first_difference(value, reference[: len(value)])
                assert difference is None, (
                    f"experiment: results.csv is not the finished one's start: {difference}"
                )
            elif key.startswith("runs/"):
                assert value["metrics"] == reference["metrics"][: value["epoch"]], key
                assert value["epoch"] < len(reference["metrics"]) or value == reference, key
            else:
                assert value in (reference, before.get(key)), f"experiment: {key} is neither state"


def all_stages(inputs: Inputs, root: Path) -> dict[str, Stage]:
    trained = Train(inputs, root)
    stages = [
        Preprocess(inputs, root),
        trained,
        Evaluate(inputs, root, trained),
        Score(inputs, root, trained),
        Extract(inputs, root),
        Merge(inputs, root),
        Experiment(inputs, root),
    ]
    return {stage.name: stage for stage in stages}
