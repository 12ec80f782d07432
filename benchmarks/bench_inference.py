"""CPU inference, fp32 vs bf16 side by side: what `aqa score` and `aqa extract` cost without a GPU.

* score latency of one real dive (`../shared/data/videos/aqa_streamlit_054_diving.avi`): decoded as
  `aqa score` decodes it (103 frames, the last 96, centre crop 112), then one forward pass of the paper's
  model, R(2+1)D-34 (IG-65M architecture, random weights: the speed is the same) on 3 clips of 32 frames;
* extraction throughput: the same backbone's clips/s (what `aqa extract` spends per clip);
* the bf16 error: the score of the small demo model (ResNet-10 3D, 4 clips of 8 frames) on that dive in
  bf16 autocast vs fp32, relative (bf16 is emulated, so this is measured on any CPU).

bf16 with channels-last 3D is what `--precision auto` runs on CPUs with native bf16 (AVX-512 BF16 or
AMX); without it, bf16 is emulated and many times slower, so the R(2+1)D-34 bf16 rows are measured only
there (AQA_CPU_BF16=1 forces them).
"""

from __future__ import annotations

import statistics
import time

import torch
from common import SHARED_VIDEOS, log

DIVE = SHARED_VIDEOS / "aqa_streamlit_054_diving.avi"


def _dive_window() -> torch.Tensor:
    """The dive as `aqa score` feeds it: (1, 3, 96, 112, 112) uint8."""
    from aqa_cli.data.windows import WindowConfig, check_window, select_window
    from aqa_cli.media.clips import ClipShape, decode_clip

    shape = ClipShape(103, 171, 128)
    frames, _, _ = decode_clip(DIVE, shape, "uniform")
    window = check_window(WindowConfig(96, crop=112), shape.frames, shape.height, shape.width, DIVE)
    return torch.from_numpy(select_window(frames, window, rng=None))[None]


def _forward_seconds(model, frames: torch.Tensor, precision: str, repeats: int) -> tuple[float, float]:
    """Median seconds of one scoring forward pass (after one warm-up) and the score, as `aqa score` runs."""
    from aqa_cli.models.normalization import model_input
    from aqa_cli.util.runtime import Inference

    run = Inference(torch.device("cpu"), precision, precision == "bf16")
    run.prepare(model.eval())
    times, score = [], float("nan")
    for _ in range(repeats + 1):
        started = time.perf_counter()
        with torch.inference_mode(), run.autocast():
            video = model_input(frames, model.backbone.normalization, run.device, run.channels_last)
            score = float(model(video, torch.tensor([3.0])).score[0])
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:]), score


def run() -> list[dict]:
    from aqa_cli.models.model import ModelConfig, build_model
    from aqa_cli.util.runtime import native_bf16_cpu

    if not DIVE.is_file():
        return [{"name": "CPU inference fp32 vs bf16", "measure": f"skipped: {DIVE} is absent"}]
    frames = _dive_window()
    native = native_bf16_cpu()
    rows = []
    torch.manual_seed(0)
    small = build_model(ModelConfig(depth=10, conv="3d", clip_len=8))
    small_frames = frames[:, :, -32:]
    fp32_time, fp32_score = _forward_seconds(small, small_frames, "fp32", 3)
    bf16_time, bf16_score = _forward_seconds(
        small, small_frames, "bf16", 3 if native else 1
    )  # emulated: slow
    rows.append(
        {
            "name": "demo model (ResNet-10 3D, 4 x 8 frames) on a real dive: score, bf16 vs fp32",
            "measure": "s per video (relative score difference)",
            "aqa": f"bf16 {bf16_time:.2f}",
            "reference": f"fp32 {fp32_time:.2f}",
            "ratio": f"{fp32_time / bf16_time:.2f}x",
            "target": f"|d| {abs(bf16_score - fp32_score) / abs(fp32_score):.2e}",
        }
    )
    log("inference: R(2+1)D-34 fp32")
    paper = build_model(ModelConfig(depth=34, conv="2plus1d", family="ig65m", clip_len=32))
    seconds, _ = _forward_seconds(paper, frames, "fp32", 2)
    found = {"fp32": seconds}
    if native:
        log("inference: R(2+1)D-34 bf16")
        found["bf16"], _ = _forward_seconds(paper, frames, "bf16", 2)
    for precision, seconds in found.items():
        rows.append(
            {
                "name": f"score one real dive, R(2+1)D-34 3 x 32 frames, {precision}",
                "measure": "s per video (extraction: clips/s)",
                "aqa": f"{seconds:.2f} ({3 / seconds:.2f} clips/s)",
            }
        )
    if not native:
        rows.append(
            {
                "name": "score one real dive, R(2+1)D-34, bf16",
                "measure": "skipped: this CPU has no native bf16 (AVX-512 BF16 / AMX); `auto` runs fp32",
            }
        )
    return rows
