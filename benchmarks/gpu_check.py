"""The prepared device check: every CUDA branch of `aqa` run once on a machine with one NVIDIA GPU.

    python3 benchmarks/gpu_check.py            # on the GPU machine, from the root of a checkout
    python3 benchmarks/gpu_check.py --smoke    # the same sections, tiny, on the CPU (run by `make test`)

Needs only torch, torchvision, numpy, h5py, scipy, typer and rich: no install (`python3 -m aqa_cli` from
the checkout) and no PyAV (the synthetic video store is written through the store writer API from numpy
frames, not decoded from videos). In order, each a section of the report:

* environment: torch, CUDA, the GPU, its compute capability, native bf16, TF32 settings, PyAV present;
* store: a synthetic video store whose quality shows in the frames (a bright square's size);
* train-fp32 (channels-last off), train-bf16 (channels-last on), resume-bf16, train-fp16-resume (the bf16
  run resumed in fp16: a fresh gradient scaler), resume-fp16 (its scaler state carried on),
  train-bf16-checkpoint-accumulate (--grad-checkpoint
  --accumulate 2);
* eval: `aqa eval --split val` of the fp16 run's last.pt, checked against its metrics.csv val rho;
* extract: `aqa extract` (the inference precision it chose is recorded), then heads: `aqa train --features`;
* ddp-1: `torchrun --nproc_per_node=1` (a one-process NCCL group; gloo with --smoke), then a resume;
* step: `benchmarks/gpu_step.py` (training steps/s fp32 vs bf16, channels-last, the loader's headroom).

The JSON report (`gpu_check.json`, and gpu_step's `gpu_step.json`) is written after every section into
--out, else $OUT when set, else benchmarks/gpu_check/; a failing section is recorded and the next one
runs. A table at the end. About 5 minutes on an H200 (--step-budget sets the step benchmark's share).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FULL = dict(
    samples=48,
    stored=40,
    height=128,
    width=171,
    depth=18,
    conv="2plus1d",
    clip=16,
    frames=32,
    crop=112,
    batch=4,
)
# bf16 and fp16 convolutions on a CPU without native bf16 take seconds per step even this small. No
# dimension shrinks to one (16 frames -> 2, 32 pixels -> 2 after the stem and three stride-2 stages): with
# 4-frame clips torch 2.14.1's CPU bf16 backward of a stride-2 3D convolution on one frame corrupted the heap
# on a CPU with native bf16, and with 8 frames and 16 pixels (layer4 on 2 -> 1) an fp16 resume read a nan
# loss on CI's CPU but not on ours.
SMOKE = dict(
    samples=8, stored=20, height=36, width=36, depth=10, conv="3d", clip=16, frames=16, crop=32, batch=6
)


def write_store(path: Path, size: dict) -> None:
    """A video store written as `aqa preprocess` writes one, from numpy frames: noise plus a bright
    square whose side grows with the sample's quality (so a model has something to learn)."""
    from aqa_cli.stores.video_store import (
        SamplePartial,
        StoreAttributes,
        StoreConfig,
        StoredSample,
        assemble_store,
    )

    config = StoreConfig(size["stored"], "uniform", size["width"], size["height"], "none")
    partial = SamplePartial(path, config).open()
    rng = np.random.default_rng(0)
    ids = []
    for index in range(size["samples"]):
        quality = float(rng.uniform(5, 10))
        frames = rng.integers(0, 96, config.frame_shape(), dtype=np.uint8)
        side = int(min(size["height"], size["width"]) * quality / 12)
        frames[:, :side, :side] = 230
        sample_id = f"s{index:03d}"
        split = "test" if index % 6 == 5 else "train"
        difficulty = 3.0 + (index % 3) * 0.2
        partial.write(
            StoredSample(
                id=sample_id,
                frames=frames,
                frame_index=np.arange(size["stored"], dtype=np.int64),
                split=split,
                score=quality * difficulty,
                difficulty=difficulty,
                source=f"synthetic/{sample_id}",
                frame_first=0,
                frame_last=size["stored"],
                orig_width=size["width"],
                orig_height=size["height"],
                fps=25.0,
                frames_lost=0,
                index=index,
            )
        )
        ids.append(sample_id)
    rows = [(sample_id, partial.path_of(sample_id), -1) for sample_id in ids]
    assemble_store(path, config, StoreAttributes("synthetic", "benchmarks/gpu_check.py"), rows)
    partial.remove()


class Check:
    """Runs the sections, keeps the report and writes it after each."""

    def __init__(self, out: Path, smoke: bool, work: Path):
        self.out, self.smoke, self.work = out, smoke, work
        self.size = SMOKE if smoke else FULL
        self.device = "cpu" if smoke else "cuda"
        self.workers = 0 if smoke else 2  # loader processes: on the CPU they only cost start-up time
        self.report: dict = {
            "script": "benchmarks/gpu_check.py",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "smoke": smoke,
            "size": self.size,
            "sections": {},
        }
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        }
        self.env.pop("RANK", None)  # the checks start torchrun themselves

    def section(self, name: str, run: Callable[[], dict]) -> None:
        print(f"gpu_check: {name} ...", flush=True)
        started = time.perf_counter()
        try:
            found, ok = run() or {}, True
        except Exception as exc:  # noqa: BLE001 - record it, go on with the next section
            found, ok = {"error": f"{type(exc).__name__}: {exc}"[-2000:]}, False
        self.report["sections"][name] = {
            "ok": ok,
            "seconds": round(time.perf_counter() - started, 1),
            **found,
        }
        self.write()
        print(f"gpu_check: {name} {'ok' if ok else 'FAILED: ' + found['error'][-300:]}", flush=True)

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        temp = self.out / "gpu_check.json.tmp"
        temp.write_text(json.dumps(self.report, indent=2, default=str) + "\n")
        temp.replace(self.out / "gpu_check.json")  # never a half-written report

    def command(self, *args, launcher: list[str] | None = None, timeout: float = 600) -> str:
        """Run a command of the checkout (`python3 -m aqa_cli ...`); its stdout, or an error with its end.
        With --smoke, in this process (a torchrun launcher becomes a one-process gloo group here): the
        same code, without a dozen interpreter start-ups."""
        if self.smoke:
            return in_process([str(arg) for arg in args], distributed=launcher is not None)
        command = [sys.executable, *(launcher or []), "-m", "aqa_cli", *map(str, args)]
        result = subprocess.run(
            command, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        self.report.setdefault("commands", []).append(shlex.join(command[1:]))
        if result.returncode != 0:
            raise RuntimeError(
                f"exit {result.returncode}: {shlex.join(command[1:])}: {result.stderr[-1500:]}"
            )
        return result.stdout

    def model_args(self) -> list[str]:
        s = self.size
        return [
            *("--depth", s["depth"], "--conv", s["conv"], "--clip", s["clip"], "--frames", s["frames"]),
            *("--crop", s["crop"], "--device", self.device),
        ]

    def train(self, run: str, *extra, launcher: list[str] | None = None) -> dict:
        """`aqa train` into work/RUN; the last metrics row, the recorded precision, seconds per epoch."""
        args = [
            *("train", "--store", self.work / "store.h5", "--out", self.work / run, *self.model_args()),
            *(
                "--batch-size",
                self.size["batch"],
                "--lr",
                "1e-3",
                "--val-fraction",
                "0.25",
                "--workers",
                self.workers,
            ),
            *map(str, extra),
        ]
        started = time.perf_counter()
        self.command(*args, launcher=launcher)
        payload = torch.load(self.work / run / "last.pt", weights_only=True)
        rows = metrics(self.work / run)
        return {
            "precision": payload["train_config"]["precision"],
            "channels_last": payload["train_config"]["channels_last"],
            "epoch": payload["epoch"],
            "last_row": rows[-1],
            "scaler": {key: payload["scaler"].get(key) for key in ("scale", "_growth_tracker")},
            "ranks_with_rng": len(payload.get("rank_rng", [])),
            "wall_s": round(time.perf_counter() - started, 1),
        }


def in_process(args: list[str], distributed: bool) -> str:
    """`aqa ARGS` in this process, its stdout; with `distributed`, as rank 0 of 1 (torchrun's variables)."""
    import contextlib
    import io
    import socket

    import aqa_cli.cli.commands  # noqa: F401 - adds every command to the app
    from aqa_cli.cli.app import app

    saved = dict(os.environ)
    if distributed:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        os.environ.update(
            RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
        )
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            app(args, standalone_mode=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return stdout.getvalue()


def metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def environment(smoke: bool) -> dict:
    found = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpus": os.cpu_count(),
        "pyav": _imports("av"),
        "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
        # which CPU kernels the smoke's bf16 and fp16 sections ran on (oneDNN's native ones, or emulation)
        "cpu": {
            "capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_bf16": torch.ops.mkldnn._is_mkldnn_bf16_supported(),
            "onednn_fp16": torch.ops.mkldnn._is_mkldnn_fp16_supported(),
        },
    }
    if torch.cuda.is_available():
        from aqa_cli.util.runtime import native_bf16_gpu

        device = torch.device("cuda")
        found.update(
            gpu=torch.cuda.get_device_name(device),
            capability=list(torch.cuda.get_device_capability(device)),
            native_bf16=native_bf16_gpu(device),
            memory_gib=round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1),
            nccl=str(torch.cuda.nccl.version()),
        )
    elif not smoke:
        raise RuntimeError("no CUDA device is visible to torch")
    return found


def _imports(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def run_check(check: Check, step_budget: float) -> None:
    size = check.size
    check.section("environment", lambda: environment(check.smoke))
    if not check.report["sections"]["environment"]["ok"]:
        return

    def store() -> dict:
        write_store(check.work / "store.h5", size)
        return {"samples": size["samples"], "frames": size["stored"]}

    check.section("store", store)
    check.section(
        "train-fp32",
        lambda: check.train("fp32", "--precision", "fp32", "--channels-last", "off", "--epochs", 2),
    )
    check.section(
        "train-bf16",
        lambda: check.train("bf16", "--precision", "bf16", "--channels-last", "on", "--epochs", 1),
    )
    check.section("resume-bf16", lambda: check.train("bf16", "--resume", "--epochs", 2))
    check.section(
        "train-fp16-resume", lambda: check.train("bf16", "--resume", "--precision", "fp16", "--epochs", 3)
    )
    check.section(
        "resume-fp16", lambda: check.train("bf16", "--resume", "--epochs", 4)
    )  # its scaler carried on
    check.section(
        "train-bf16-checkpoint-accumulate",
        lambda: check.train(
            "ckpt",
            "--precision",
            "bf16",
            "--grad-checkpoint",
            "--accumulate",
            2,
            "--batch-size",
            size["batch"] // 2,  # two batches per step
            "--epochs",
            1,
        ),
    )

    def evaluate() -> dict:
        result = json.loads(
            check.command(
                "eval",
                "--checkpoint",
                check.work / "bf16" / "last.pt",
                "--split",
                "val",
                "--json",
                "--device",
                check.device,
            )
        )
        recorded = float(metrics(check.work / "bf16")[-1]["val_rho"])
        return {
            "rho": result["rho"],
            "metrics_val_rho": recorded,
            "precision": result["precision"],
            "val_rho_matches_metrics": result["rho"] == recorded,
        }

    check.section("eval", evaluate)

    def extract() -> dict:
        out = check.work / "features.h5"
        started = time.perf_counter()
        check.command(
            "extract",
            "--store",
            check.work / "store.h5",
            "--out",
            out,
            *check.model_args(),
            "--batch-size",
            size["batch"],
            "--workers",
            check.workers,
        )
        seconds = time.perf_counter() - started
        from aqa_cli.stores.feature_store import FeatureStore

        with FeatureStore(out) as features:
            precision = features.attributes["precision"]
        return {"precision": precision, "samples_per_s_with_startup": round(size["samples"] / seconds, 2)}

    check.section("extract", extract)

    def heads() -> dict:
        check.command(
            "train",
            "--features",
            check.work / "features.h5",
            "--out",
            check.work / "heads",
            "--agg",
            "wd",
            "--epochs",
            3,
            "--val-fraction",
            "0.25",
            "--device",
            check.device,
        )
        result = json.loads(
            check.command("eval", "--run", check.work / "heads", "--json", "--device", check.device)
        )
        return {"test_rho": result["rho"], "samples": result["samples"]}

    check.section("heads", heads)
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]

    def ddp() -> dict:
        first = check.train("ddp", "--epochs", 1, launcher=torchrun)
        resumed = check.train("ddp", "--resume", "--epochs", 2, launcher=torchrun)
        if resumed["ranks_with_rng"] != 1:
            raise RuntimeError(f"the checkpoint kept {resumed['ranks_with_rng']} ranks' random states, not 1")
        return {"first": first, "resumed": resumed, "backend": "gloo" if check.smoke else "nccl"}

    check.section("ddp-1", ddp)

    def step() -> dict:
        json_path = check.out / "gpu_step.json"
        args = ["--smoke", "--workers", "0"] if check.smoke else ["--budget", str(step_budget)]
        command = [sys.executable, str(REPO / "benchmarks" / "gpu_step.py"), *args, "--json", str(json_path)]
        if check.smoke:
            sys.path.insert(0, str(REPO / "benchmarks"))
            import gpu_step

            gpu_step.main(command[2:])
        else:
            result = subprocess.run(
                command, cwd=REPO, env=check.env, capture_output=True, text=True, timeout=600
            )
            if result.returncode != 0:
                raise RuntimeError(f"exit {result.returncode}: {result.stderr[-1500:]}")
        found = json.loads(json_path.read_text())
        return {"train": found.get("train"), "loader": found.get("loader"), "json": str(json_path)}

    check.section("step", step)


def print_table(report: dict) -> None:
    print(f"\n{'section':<36}{'ok':>4}{'seconds':>9}  details")
    for name, section in report["sections"].items():
        details = {k: v for k, v in section.items() if k not in ("ok", "seconds", "commands")}
        text = json.dumps(details, default=str)
        print(f"{name:<36}{'ok' if section['ok'] else 'FAIL':>4}{section['seconds']:>9.1f}  {text[:150]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny, on the CPU (gloo for DDP): checks the script"
    )
    parser.add_argument("--out", type=Path, help="report folder (default: $OUT, else benchmarks/gpu_check/)")
    parser.add_argument("--step-budget", type=float, default=120.0, help="seconds of timed training steps")
    args = parser.parse_args(argv)
    out = args.out or (
        Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "benchmarks" / "gpu_check"
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as work:
        check = Check(out, args.smoke, Path(work))
        run_check(check, args.step_budget)
    check.report["seconds"] = round(time.perf_counter() - started, 1)
    check.write()
    print_table(check.report)
    failed = [name for name, section in check.report["sections"].items() if not section["ok"]]
    print(
        f"\ngpu_check: {len(failed)} of {len(check.report['sections'])} sections failed"
        if failed
        else "\ngpu_check: every section ok",
        f"({check.report['seconds']:.0f} s); wrote {out / 'gpu_check.json'}",
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
