"""Training step on one GPU: R(2+1)D-34, 3 clips of 32 frames (112x112) per video, batch 2.

Self-contained: needs torch, torchvision, h5py and numpy only, and synthetic input. Run it from the
root of a checkout (`python benchmarks/gpu_step.py`): it uses the toolkit's model and data loader
(`aqa_cli.models`, `aqa_cli.data.windows`) when they import, else torchvision's building blocks of the same
shape and a plain HDF5 loader doing the same work.

Measures, on the first CUDA device:
* training steps/s (forward, L1 + L2 loss, backward, Adam step) in fp32 and under bf16 autocast, each
  with and without channels-last 3D memory format, after warm-up (cudnn autotuning on, as `aqa train`
  sets it), with the peak memory allocated (`torch.cuda.max_memory_allocated`);
* next to it, the training data loader's samples/s on the same machine: a synthetic store of 103-frame
  171x128 samples (written here, uncompressed with Fletcher-32, like `aqa preprocess`'s default), read through a
  torch DataLoader (batch 2, pinned memory) with 0, 2 (`aqa train`'s default) and 8 workers, copied to
  the GPU and normalized there, so that it is clear whether loading keeps up with training.

"fp32" steps run cuDNN's convolutions in TF32 on Ampere and later GPUs (torch's default), and are
labelled so. Prints a table and writes JSON (after every variant and loader setting) to `--json PATH`, else `$OUT/gpu_step.json` when $OUT is set, else
`benchmarks/gpu_step.json`. Without a CUDA device it says so and exits 0 (nothing measured); `--smoke`
runs every code path on the CPU with tiny sizes, to check the script itself. `--budget S` (default 200)
caps the time spent on timed steps (at most 100 per variant), so that the whole run, warm-up and
autotuning included, stays well within 6 minutes on an H200.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FULL = dict(
    depth=34,
    clip=32,
    frames=96,
    crop=112,
    batch=2,
    stored=103,
    height=128,
    width=171,
    samples=64,
    warmup=3,
    steps=10,
)
SMOKE = dict(  # no dimension shrinks to one: see gpu_check.SMOKE
    depth=10,
    clip=16,
    frames=16,
    crop=32,
    batch=2,
    stored=20,
    height=36,
    width=36,
    samples=4,
    warmup=1,
    steps=2,
)
MEAN, STD = (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)  # kinetics400, IG-65M's


# ----------------------------------------------------------------------------------------- the model


def build(depth: int, clip: int) -> tuple[nn.Module, str]:
    """The AQA model (IG-65M R(2+1)D of `depth`, Weight-Decider), and where it came from."""
    try:
        from aqa_cli.models.model import ModelConfig, build_model

        family = "ig65m" if depth == 34 else "hara"
        model = build_model(ModelConfig(depth=depth, conv="2plus1d", family=family, clip_len=clip))
        return model, "aqa_cli.models.build_model"
    except Exception as exc:  # noqa: BLE001 - any import problem: use the stand-in
        return _Standin(depth, clip), f"torchvision stand-in ({type(exc).__name__}: {exc})"


def _standin_backbone(depth: int) -> nn.Module:
    from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet

    class OwnMid(Conv2Plus1D):  # the IG-65M model's mid widths
        def __init__(self, in_planes, out_planes, midplanes=None, stride=1, padding=1):
            mid = (in_planes * out_planes * 27) // (in_planes * 9 + 3 * out_planes)
            super().__init__(in_planes, out_planes, mid, stride, padding)

    blocks = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}[depth]
    net = VideoResNet(BasicBlock, [OwnMid] * 4, blocks, R2Plus1dStem)
    net.fc = nn.Identity()
    return net


class _Standin(nn.Module):
    """Same backbone shape, the paper's FC layers and a Weight-Decider-sized MLP, built from torchvision."""

    def __init__(self, depth: int, clip: int):
        super().__init__()
        self.clip = clip
        self.backbone = _standin_backbone(depth)
        self.clip_layers = nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU())
        widths = (128, 64, 32, 64, 128)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False)):
            layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
        self.decider = nn.Sequential(*layers)
        self.regressor = nn.Linear(128, 1)

    def forward(self, video, difficulty):
        n, c, length, h, w = video.shape
        k = length // self.clip
        clips = video.reshape(n, c, k, self.clip, h, w).transpose(1, 2).reshape(n * k, c, self.clip, h, w)
        features = self.clip_layers(self.backbone(clips).reshape(n, k, -1))
        weights = self.decider(features).softmax(dim=1)
        quality = self.regressor((features * weights).sum(dim=1)).squeeze(-1)
        return quality * difficulty


def _score(out):
    return out.score if hasattr(out, "score") else out


@functools.cache
def _normalization():
    try:
        from aqa_cli.models.normalization import NORMALIZATIONS

        return NORMALIZATIONS["kinetics400"].apply
    except Exception:  # noqa: BLE001 - any import problem: the same arithmetic here

        def apply(frames: torch.Tensor) -> torch.Tensor:
            std = torch.tensor(STD, device=frames.device).view(3, 1, 1, 1)
            mean = torch.tensor(MEAN, device=frames.device).view(3, 1, 1, 1)
            return frames.float().mul_(1 / (255 * std)).sub_(mean / std)

        return apply


def normalize(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, T, H, W) -> normalized float, as `Normalization.apply` does on the model's device."""
    return _normalization()(frames)


# ------------------------------------------------------------------------------------ training steps


def train_steps(
    size: dict, device: torch.device, precision: str, channels_last: bool, seconds: float
) -> dict:
    """Steps/s of forward + loss + backward + Adam on a fixed synthetic batch, and the peak memory."""
    torch.manual_seed(0)
    model, source = build(size["depth"], size["clip"])
    model.to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    shape = (size["batch"], 3, size["frames"], size["crop"], size["crop"])
    video_u8 = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    difficulty = torch.full((size["batch"],), 3.0, device=device)
    target = torch.full((size["batch"],), 60.0, device=device)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step() -> float:
        video = normalize(video_u8)
        if channels_last:
            video = video.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            score = _score(model(video, difficulty))
        error = score.float() - target
        loss = error.abs().mean() + error.pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for _ in range(size["warmup"]):  # cudnn autotuning, allocator
        step()
    _sync(device)
    warmup = time.perf_counter() - started
    steps, started = 0, time.perf_counter()
    while steps < size["steps"] or (time.perf_counter() - started < seconds and steps < 100):
        step()
        steps += 1
        if steps % 5 == 0:
            _sync(device)
    _sync(device)
    elapsed = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    model = optimizer = step = None  # free the GPU memory before the next variant
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "precision": precision,
        "math": math_label(precision, device),
        "channels_last": channels_last,
        "steps": steps,
        "steps_per_s": steps / elapsed,
        "samples_per_s": steps * size["batch"] / elapsed,
        "peak_gib": peak,
        "warmup_s": warmup,
        "model": source,
    }


def math_label(precision: str, device: torch.device) -> str:
    """What the convolutions compute in: "fp32" steps on an Ampere-or-later GPU run cuDNN convolutions in
    TF32 (torch's default `cudnn.allow_tf32`), so they are labelled tf32."""
    if precision != "fp32" or device.type != "cuda":
        return precision
    tf32 = torch.backends.cudnn.allow_tf32 and torch.cuda.get_device_capability(device) >= (8, 0)
    return "tf32 (fp32 weights, TF32 convolutions)" if tf32 else "fp32"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------- loader


def write_store(path: Path, size: dict) -> None:
    """A store of `samples` synthetic samples in the layout `aqa preprocess` writes (docs/FORMAT.md):
    smooth moving gradients plus noise, like real video (it matters with --compression lzf or gzip)."""
    import h5py

    n, t, h, w = size["samples"], size["stored"], size["height"], size["width"]
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.attrs.update(
            {
                "format": "aqa-video-store",
                "format_version": 1,
                "tool_version": "gpu_step",
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "source_kind": "synthetic",
                "source_description": "benchmarks/gpu_step.py",
                "resize": np.array([w, h], dtype=np.int32),
                "frames_per_sample": t,
                "fit": "uniform",
                "compression": "none",
                "failed": "[]",
                "shard": "",
            }
        )
        frames = f.create_dataset(
            "frames", (n, t, h, w, 3), np.uint8, chunks=(1, t, h, w, 3), fletcher32=True
        )
        y, x = np.mgrid[0:h, 0:w]
        for i in range(n):
            phase = (np.arange(t)[:, None, None] * 3 + i * 7 + x[None] + y[None] // 2) % 256
            base = np.repeat(phase[..., None], 3, axis=3).astype(np.int16)
            noisy = base + rng.integers(-12, 13, base.shape, dtype=np.int16)
            frames[i] = np.clip(noisy, 0, 255).astype(np.uint8)
        text = h5py.string_dtype("utf-8")
        columns = {
            "id": ([f"s{i:03d}" for i in range(n)], text),
            "split": (["train"] * n, text),
            "score": (np.full(n, 60.0), np.float64),
            "difficulty": (np.full(n, 3.0), np.float64),
            "source": (["synthetic"] * n, text),
            "frame_first": (np.zeros(n), np.int64),
            "frame_last": (np.full(n, t), np.int64),
            "orig_width": (np.full(n, w), np.int32),
            "orig_height": (np.full(n, h), np.int32),
            "fps": (np.full(n, 25.0), np.float64),
            "frames_lost": (np.zeros(n), np.int32),
            "index": (np.arange(n), np.int64),
            "extra": (["{}"] * n, text),
        }
        for name, (values, dtype) in columns.items():
            f.create_dataset(
                f"samples/{name}", data=np.array(values, dtype=object if dtype is text else dtype)
            )
        f.create_dataset("samples/frame_index", data=np.tile(np.arange(t, dtype=np.int64), (n, 1)))


class _PlainClips(torch.utils.data.Dataset):
    """What `StoreClips` does (whole-sample read, random window, crop, flip; uint8), for a checkout whose
    `aqa_cli.data.windows` does not import."""

    def __init__(self, path: Path, size: dict):
        self.path, self.size, self.file = path, size, None

    def __len__(self) -> int:
        return self.size["samples"]

    def __getitem__(self, i: int) -> dict:
        import h5py

        if self.file is None:
            self.file = h5py.File(self.path, "r")
        frames = self.file["frames"][i]
        s, rng = self.size, np.random.default_rng([0, 0, i])
        end = s["stored"] - int(rng.integers(min(6, s["stored"] - s["frames"] + 1)))
        top, left = (
            int(rng.integers(s["height"] - s["crop"] + 1)),
            int(rng.integers(s["width"] - s["crop"] + 1)),
        )
        clip = frames[end - s["frames"] : end, top : top + s["crop"], left : left + s["crop"]]
        if rng.integers(2):
            clip = clip[:, :, ::-1]
        return {"video": torch.from_numpy(np.ascontiguousarray(clip.transpose(3, 0, 1, 2)))}


def dataset(path: Path, size: dict) -> tuple[torch.utils.data.Dataset, str]:
    try:
        from aqa_cli.data.datasets import StoreClips
        from aqa_cli.data.windows import WindowConfig

        window = WindowConfig(frames=size["frames"], crop=size["crop"])
        return StoreClips(path, range(size["samples"]), window, train=True), "aqa_cli.data.StoreClips"
    except Exception as exc:  # noqa: BLE001
        return _PlainClips(path, size), f"plain h5py loader ({type(exc).__name__}: {exc})"


def loader_rate(data, size: dict, device: torch.device, workers: int, epochs: int = 2) -> dict:
    """Samples/s through a DataLoader, to the device, normalized there (the first epoch is warm-up)."""
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=size["batch"],
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    times = []
    for _ in range(epochs + 1):
        started, seen = time.perf_counter(), 0
        for batch in loader:
            video = normalize(batch["video"].to(device, non_blocking=True))
            seen += len(video)
        _sync(device)
        times.append(time.perf_counter() - started)
    del loader
    best = min(times[1:])
    return {"workers": workers, "samples_per_s": seen / best, "epoch_s": [round(t, 3) for t in times]}


# --------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: check the script itself")
    parser.add_argument("--json", type=Path, help="where to write the results (default: $OUT/gpu_step.json)")
    parser.add_argument("--budget", type=float, default=200.0, help="seconds for all timed steps together")
    parser.add_argument("--workers", type=int, nargs="+", help="loader workers to try (default: 0 2 8)")
    args = parser.parse_args(argv)
    args.workers = args.workers or ([0, 2] if args.smoke else [0, 2, 8])
    out = args.json or (Path(os.environ["OUT"]) / "gpu_step.json" if os.environ.get("OUT") else None)
    out = out or Path(__file__).with_name("gpu_step.json")
    results = {
        "script": "benchmarks/gpu_step.py",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **_versions(),
    }

    if args.smoke:
        device, size = torch.device("cpu"), SMOKE
        results["note"] = "smoke run on the CPU with tiny sizes: checks the script, measures nothing useful"
    elif torch.cuda.is_available():
        device, size = torch.device("cuda"), FULL
        torch.backends.cudnn.benchmark = True
        results["gpu"] = torch.cuda.get_device_name(device)
        results["tf32"] = {
            "cudnn": torch.backends.cudnn.allow_tf32,
            "matmul": torch.backends.cuda.matmul.allow_tf32,
        }
    else:
        results["skipped"] = "no CUDA device: nothing measured (run this on a GPU machine)"
        print(f"gpu_step: {results['skipped']}")
        _write(out, results)
        return 0
    results["size"] = size
    started = time.perf_counter()
    variants = [(p, cl) for p in ("fp32", "bf16") for cl in (False, True)]
    per_variant = args.budget / len(variants) if not args.smoke else 0.0
    results["train"] = []
    for precision, channels_last in variants:
        print(f"gpu_step: training steps, {precision}, channels_last={channels_last}", flush=True)
        results["train"].append(train_steps(size, device, precision, channels_last, per_variant))
        _write(out, results)  # after every variant: a late failure keeps what was measured
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.h5"
        print("gpu_step: writing the synthetic store", flush=True)
        write_store(path, size)
        data, results["loader_dataset"] = dataset(path, size)
        results["loader"] = []
        for workers in args.workers:
            print(f"gpu_step: loader, {workers} workers", flush=True)
            results["loader"].append(loader_rate(data, size, device, workers))
            _write(out, results)
    results["seconds"] = round(time.perf_counter() - started, 1)
    _print(results)
    _write(out, results)
    return 0


def _versions() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpus": os.cpu_count(),
    }


def _print(results: dict) -> None:
    print(
        f"\n{results.get('gpu', 'CPU (smoke)')}, torch {results['torch']}; model: {results['train'][0]['model']}"
    )
    print(f"{'training step':<34}{'steps/s':>10}{'samples/s':>12}{'peak GiB':>10}")
    for r in results["train"]:
        name = f"{r['math']}{', channels-last' if r['channels_last'] else ''}"
        print(f"{name:<34}{r['steps_per_s']:>10.2f}{r['samples_per_s']:>12.1f}{r['peak_gib']:>10.1f}")
    print(f"\n{'data loader (' + results['loader_dataset'].split(' (')[0] + ')':<34}{'samples/s':>22}")
    for r in results["loader"]:
        print(f"{str(r['workers']) + ' workers':<34}{r['samples_per_s']:>22.1f}")
    fastest = max(r["samples_per_s"] for r in results["train"])
    default = next((r for r in results["loader"] if r["workers"] == 2), results["loader"][-1])
    verdict = "keeps up" if default["samples_per_s"] >= fastest else "does NOT keep up"
    print(
        f"\nloader with {default['workers']} workers {verdict} with the fastest step ({fastest:.1f} samples/s)"
    )
    results["loader_keeps_up_with_2_workers"] = default["samples_per_s"] >= fastest


def _write(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(results, indent=2, default=float) + "\n")
    temp.replace(path)  # never a half-written report
    print(f"gpu_step: wrote {path}")


def run() -> list[dict]:
    """For `make bench`: measured only where a CUDA device is present."""
    if not torch.cuda.is_available():
        return [
            {
                "name": "GPU training step (benchmarks/gpu_step.py)",
                "measure": "skipped: no CUDA device here; run `python benchmarks/gpu_step.py` on a GPU machine",
            }
        ]
    path = Path(tempfile.mkdtemp()) / "gpu_step.json"
    main(["--json", str(path)])
    results = json.loads(path.read_text())
    rows = [
        {
            "name": f"GPU step {r['math']}{' channels-last' if r['channels_last'] else ''} ({results['gpu']})",
            "measure": "samples/s (peak GiB)",
            "aqa": f"{r['samples_per_s']:.1f} ({r['peak_gib']:.1f})",
        }
        for r in results["train"]
    ]
    rows += [
        {
            "name": f"GPU machine loader, {r['workers']} workers",
            "measure": "samples/s",
            "aqa": f"{r['samples_per_s']:.1f}",
        }
        for r in results["loader"]
    ]
    return rows


if __name__ == "__main__":
    sys.exit(main())
