"""Model step on the CPU: the toolkit's AQA model against a plain torchvision `VideoResNet` of the same
shape, run on the same clips, batch 1, training mode.

aqa: `build_model(ModelConfig(...))` on a normalized video (1, 3, L, S, S): the backbone over its L/clip
clips as one batch, the per-clip FC layers, the Weight-Decider, the regressor, times the difficulty;
loss L1 + L2 on the score. reference: `torchvision.models.video.resnet.VideoResNet` built from
torchvision's own blocks with the same stem, convolutions and layer counts (its 400-class classifier
kept), on the same clips (K, 3, clip, S, S); loss the mean of its logits. The toolkit's backbone weights
are loaded into it (strictly, but for the classifier), which proves the shapes are the same.

Each repetition is one training step, forward then backward, timed apart (forward = the forward pass
with autograd recording, as in training). After warm-up, the two models run in pairs of steps back to
back (alternating which goes first); the times are medians, the overhead is the median of the paired
ratios, so that a change in the machine's load hits both sides of a pair. One torch thread throughout
(`AQA_BENCH_THREADS` to change it): on the shared 2-core machine these figures were first taken on, two
OpenMP threads made every step 2-7x slower and 5x noisier whenever other processes were running,
because each parallel region waits for a thread that is not scheduled. The overhead of the wrapper, FC heads and Weight-Decider must stay under 5 %; what the head
alone costs (`head_share` in results.json) is the part of it that is not noise.
"""

from __future__ import annotations

import os
import time

import torch
from common import log, median, row
from torch import nn
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, Conv3DSimple, R2Plus1dStem, VideoResNet

# name, ModelConfig fields, frames, crop, warm-up steps (0: one forward pass), timed pairs of steps
CASES = [
    ("ResNet-10 3D, clip 8, 16 frames, 64x64 (tests)", dict(depth=10, conv="3d", clip_len=8), 16, 64, 2, 21),
    (
        "ResNet-10 3D, clip 8, 32 frames, 112x112 (demo)",
        dict(depth=10, conv="3d", clip_len=8),
        32,
        112,
        2,
        11,
    ),
    (
        "R(2+1)D-34 (IG-65M), 3 clips of 32 frames, 112x112",
        dict(depth=34, conv="2plus1d", family="ig65m", clip_len=32),
        96,
        112,
        0,
        2,
    ),
]
BLOCKS = {10: [1, 1, 1, 1], 34: [3, 4, 6, 3]}
TARGET = 0.05


class OwnMidConv2Plus1D(Conv2Plus1D):
    """torchvision's (2+1)D convolution with the mid width of the IG-65M / Hara models (from its own in
    and out planes; torchvision's blocks pass one computed from the block's input)."""

    def __init__(self, in_planes, out_planes, midplanes=None, stride=1, padding=1):
        mid = (in_planes * out_planes * 27) // (in_planes * 9 + 3 * out_planes)
        super().__init__(in_planes, out_planes, mid, stride, padding)


def hara_3d_stem() -> nn.Sequential:
    """The Hara et al. 3D ResNet stem (7x7x7 convolution), from plain torch.nn layers."""
    return nn.Sequential(
        nn.Conv3d(3, 64, kernel_size=7, stride=(1, 2, 2), padding=3, bias=False),
        nn.BatchNorm3d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=3, stride=2, padding=1),
    )


def reference_model(depth: int, conv: str) -> VideoResNet:
    if conv == "3d":
        return VideoResNet(BasicBlock, [Conv3DSimple] * 4, BLOCKS[depth], hara_3d_stem)
    return VideoResNet(BasicBlock, [OwnMidConv2Plus1D] * 4, BLOCKS[depth], R2Plus1dStem)


def _step(model, inputs, loss_of) -> tuple[float, float, float]:
    """(forward seconds, forward + backward seconds, forward + backward CPU seconds) of one training
    step. With one thread the CPU time leaves out the time other processes held the core."""
    model.zero_grad(set_to_none=True)
    cpu = time.process_time()
    start = time.perf_counter()
    out = model(*inputs)
    forward = time.perf_counter() - start
    loss_of(out).backward()
    return forward, time.perf_counter() - start, time.process_time() - cpu


def measure(name: str, fields: dict, frames: int, crop: int, warmup: int, steps: int) -> list[dict]:
    from aqa_cli.models.model import ModelConfig, build_model

    torch.manual_seed(0)
    ours = build_model(ModelConfig(**fields)).train()
    theirs = reference_model(fields["depth"], fields["conv"]).train()
    result = theirs.load_state_dict(ours.backbone.state_dict(), strict=False)
    assert set(result.missing_keys) == {"fc.weight", "fc.bias"} and not result.unexpected_keys, result
    clip = fields["clip_len"]
    clips = frames // clip
    video = torch.randn(1, 3, frames, crop, crop)
    batched = video.reshape(1, 3, clips, clip, crop, crop).transpose(1, 2).reshape(clips, 3, clip, crop, crop)
    batched = batched.contiguous()
    difficulty, target = torch.tensor([2.8]), torch.tensor([60.0])

    def our_loss(out):
        error = out.score - target
        return error.abs().mean() + error.pow(2).mean()

    runs = {
        "aqa": (ours, (video, difficulty), our_loss),
        "reference": (theirs, (batched,), lambda logits: logits.mean()),
    }
    # Warm-up (oneDNN primitives are cached by shape, so the reference's convolutions are warm too),
    # then pairs of steps back to back, in alternating order: a pair sees the same machine load.
    for _ in range(warmup):
        _step(*runs["aqa"])
    if not warmup:  # a forward pass only: most of a step's one-time work, at a third of its cost
        ours(video, difficulty)
    times: dict[str, list[tuple[float, float, float]]] = {"aqa": [], "reference": []}
    for step in range(steps):
        for key in ("reference", "aqa") if step % 2 == 0 else ("aqa", "reference"):
            times[key].append(_step(*runs[key]))
    head = _head_seconds(ours, clips)
    pairs = zip(times["aqa"], times["reference"], strict=True)
    cpu_overhead = median([a[2] / r[2] for a, r in pairs]) - 1  # forward + backward, CPU seconds
    rows = []
    for part, index in (("forward", 0), ("forward+backward", 1)):
        ours_s = [t[index] for t in times["aqa"]]
        theirs_s = [t[index] for t in times["reference"]]
        overhead = median([a / r for a, r in zip(ours_s, theirs_s, strict=True)]) - 1
        rows.append(
            row(
                f"{name}: {part}",
                f"s per step, median of {steps} (overhead: of the paired ratios)",
                f"{median(ours_s):.3f}",
                f"{median(theirs_s):.3f}",
                f"{overhead * 100:+.1f}%",
                "< +5%",
                ok=overhead < TARGET,
                aqa_s=[round(t, 4) for t in ours_s],
                reference_s=[round(t, 4) for t in theirs_s],
                step_cpu_overhead=f"{cpu_overhead * 100:+.1f}%",
                head_alone_s=round(head[index], 5),
                head_share=f"{head[index] / median(theirs_s) * 100:.3f}%",
                threads=torch.get_num_threads(),
            )
        )
    return rows


def _head_seconds(model, clips: int, repeats: int = 20) -> tuple[float, float]:
    """(forward, forward + backward) of the head alone (FC layers, Weight-Decider, regressor) on
    features (1, K, D): what the toolkit adds to the backbone's work."""
    features = torch.randn(1, clips, model.head.feature_dim, requires_grad=True)
    difficulty = torch.tensor([2.8])
    forward, both = [], []
    for _ in range(repeats):
        model.head.zero_grad(set_to_none=True)
        start = time.perf_counter()
        out = model.head(features, difficulty)
        forward.append(time.perf_counter() - start)
        out.score.sum().backward()
        both.append(time.perf_counter() - start)
    return median(forward), median(both)


def run() -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("AQA_BENCH_THREADS", "1")))
    rows = []
    try:
        for case in CASES:
            log(f"model: {case[0]}")
            rows.extend(measure(*case))
    finally:
        torch.set_num_threads(threads)
    return rows
