"""The video ResNets as data over torchvision's `VideoResNet`: one record per family (its variants' stems
and convolutions, BatchNorm settings, the normalization its weights expect), the depths' layouts, and the
feature extractor every record builds. A checkpoint's family is told by building each candidate on the
meta device and comparing tensor shapes (`closest_variants`), so no table of shapes is kept by hand."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.models.video.resnet import (
    BasicBlock,
    BasicStem,
    Bottleneck,
    Conv2Plus1D,
    Conv3DNoTemporal,
    Conv3DSimple,
    R2Plus1dStem,
    VideoResNet,
)

from aqa_cli.models.normalization import NORMALIZATIONS, Normalization

CONV_TYPES = ("3d", "2plus1d", "mc3")  # mc3: 3D convs in layer1, 2D (1x3x3) in layers 2-4
STAGES = ("layer1", "layer2", "layer3", "layer4")


class Layout(NamedTuple):
    """Blocks in each of the four residual stages, and whether they are Bottleneck blocks."""

    blocks: tuple[int, ...]
    bottleneck: bool


LAYOUTS: dict[int, Layout] = {
    10: Layout((1, 1, 1, 1), False),
    18: Layout((2, 2, 2, 2), False),
    34: Layout((3, 4, 6, 3), False),
    50: Layout((3, 4, 6, 3), True),
    101: Layout((3, 4, 23, 3), True),
    152: Layout((3, 8, 36, 3), True),
    200: Layout((3, 24, 36, 3), True),
}
"""The depths of the public video ResNets (Hara et al. have all of them)."""


def feature_dim(depth: int) -> int:
    """Width of the pooled features: 512 for BasicBlock nets, 2048 for Bottleneck nets."""
    return 2048 if LAYOUTS[depth].bottleneck else 512


class Conv2PlusOneDOwnMid(Conv2Plus1D):
    """(2+1)D convolution whose mid width comes from its own (in, out) planes, as in the Hara et al. and
    IG-65M models. torchvision's blocks pass a mid computed from the block input instead, which only
    fits torchvision's own r2plus1d_18 weights."""

    def __init__(
        self, in_planes: int, out_planes: int, midplanes: int | None = None, stride: int = 1, padding: int = 1
    ) -> None:
        own_mid = (in_planes * out_planes * 3 * 3 * 3) // (in_planes * 3 * 3 + 3 * out_planes)
        super().__init__(in_planes, out_planes, own_mid, stride, padding)


def hara_3d_stem() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(3, 64, kernel_size=(7, 7, 7), stride=(1, 2, 2), padding=(3, 3, 3), bias=False),
        nn.BatchNorm3d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=3, stride=2, padding=1),
    )


def hara_2plus1d_stem() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(3, 110, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        nn.BatchNorm3d(110),
        nn.ReLU(inplace=True),
        nn.Conv3d(110, 64, kernel_size=(7, 1, 1), stride=(1, 1, 1), padding=(3, 0, 0), bias=False),
        nn.BatchNorm3d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=3, stride=2, padding=1),
    )


@dataclass(frozen=True)
class Variant:
    """One conv type of a family: its stem and its convolutions (one for all stages, or one per stage)."""

    stem: Callable[[], nn.Module]
    conv_maker: type[nn.Module] | tuple[type[nn.Module], ...]

    def conv_makers(self) -> list[type[nn.Module]]:
        return list(self.conv_maker) if isinstance(self.conv_maker, tuple) else [self.conv_maker] * 4


@dataclass(frozen=True)
class Family:
    """Everything that tells one publisher's video ResNets from another's at the same depth."""

    name: str
    normalization: str  # a key of NORMALIZATIONS: what its published weights were trained with
    variants: dict[str, Variant] = field(default_factory=dict)  # by conv type
    batchnorm_eps: float = 1e-5
    batchnorm_momentum: float = 0.1


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            "hara",
            "hara",
            {
                "3d": Variant(hara_3d_stem, Conv3DSimple),
                "2plus1d": Variant(hara_2plus1d_stem, Conv2PlusOneDOwnMid),
            },
        ),
        # The IG-65M port keeps Caffe2's BatchNorm settings; they are not stored in the files.
        Family(
            "ig65m",
            "kinetics400",
            {"2plus1d": Variant(R2Plus1dStem, Conv2PlusOneDOwnMid)},
            batchnorm_eps=1e-3,
            batchnorm_momentum=0.9,
        ),
        Family(
            "torchvision",
            "kinetics400",
            {
                "3d": Variant(BasicStem, Conv3DSimple),
                "2plus1d": Variant(R2Plus1dStem, Conv2Plus1D),
                # Mixed convolutions (torchvision mc3_18): full 3D convolutions in layer1 only.
                "mc3": Variant(BasicStem, (Conv3DSimple,) + (Conv3DNoTemporal,) * 3),
            },
        ),
    )
}
DEFAULT_FAMILY = "hara"
VARIANTS = {(family.name, conv) for family in FAMILIES.values() for conv in family.variants}
"""Every (family, conv type) that can be built."""


class VideoResNetFeatures(VideoResNet):
    """A torchvision `VideoResNet` without its classifier: forward returns the flattened pooled features.

    State dict keys are torchvision's (`stem.*`, `layer1.*` ... `layer4.*`). With `grad_checkpoint`, the
    residual stages are recomputed in the backward pass instead of keeping their activations (less GPU
    memory when training); the recomputation leaves BatchNorm's running statistics as the forward pass
    set them, so a checkpointed run trains as a plain one.
    """

    def __init__(
        self,
        depth: int,
        conv: str,
        family: str,
        normalization: Normalization,
        grad_checkpoint: bool = False,
    ) -> None:
        record, layout = FAMILIES[family], LAYOUTS[depth]
        variant = record.variants[conv]
        block = Bottleneck if layout.bottleneck else BasicBlock
        super().__init__(block, variant.conv_makers(), list(layout.blocks), variant.stem)
        del self.fc
        for module in self.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.eps, module.momentum = record.batchnorm_eps, record.batchnorm_momentum
        self.depth, self.conv, self.family = depth, conv, family
        self.feature_dim = feature_dim(depth)
        self.normalization = normalization
        self.grad_checkpoint = grad_checkpoint
        self.weights_summary = f"random init ({family} {conv} ResNet-{depth})"

    def forward(self, clips: Tensor) -> Tensor:
        x = self.stem(clips)
        checkpointing = self.grad_checkpoint and self.training and torch.is_grad_enabled()
        for stage in STAGES:
            layer = getattr(self, stage)
            x = (
                checkpoint(layer, x, use_reentrant=False, context_fn=_recompute_keeps_norm_statistics(layer))
                if checkpointing
                else layer(x)
            )
        return self.avgpool(x).flatten(1)


def _recompute_keeps_norm_statistics(module: nn.Module):
    """`checkpoint`'s context_fn: nothing around the forward pass; around the recomputation in the backward
    pass, the module's BatchNorm running statistics restored afterwards (it runs in training mode again
    and would otherwise update them a second time per step)."""

    @contextlib.contextmanager
    def keep_statistics():
        norms = [
            m
            for m in module.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        ]
        saved = [
            (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms
        ]
        try:
            yield
        finally:
            with torch.no_grad():
                for norm, (mean, var, count) in zip(norms, saved, strict=True):
                    norm.running_mean.copy_(mean)
                    norm.running_var.copy_(var)
                    norm.num_batches_tracked.copy_(count)

    return lambda: (contextlib.nullcontext(), keep_statistics())


def closest_variants(
    shapes: dict[str, tuple[int, ...]], depth: int, candidates: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Of `candidates` (family, conv), those whose ResNet-`depth` differs from these tensor shapes
    (torchvision names) in the fewest tensors: the file's own architecture, even when one of its tensors
    is damaged (loading then names it). Each is built on the meta device: no memory, no initialisation."""
    differences = {}
    for family, conv in candidates:
        with torch.device("meta"):
            model = VideoResNetFeatures(depth, conv, family, NORMALIZATIONS[FAMILIES[family].normalization])
        expected = {
            key: tuple(tensor.shape)
            for key, tensor in model.state_dict().items()
            if not key.endswith("num_batches_tracked")
        }
        differences[family, conv] = sum(shapes.get(key) != shape for key, shape in expected.items())
    fewest = min(differences.values(), default=None)
    return [variant for variant, count in differences.items() if count == fewest]


def stem_shapes() -> dict[tuple[int, ...], list[tuple[str, str]]]:
    """The shape of each variant's first convolution (`stem.0.weight`), and the variants that have it."""
    shapes: dict[tuple[int, ...], list[tuple[str, str]]] = {}
    for family, conv in sorted(VARIANTS):
        with torch.device("meta"):
            stem = FAMILIES[family].variants[conv].stem()
        shapes.setdefault(tuple(stem[0].weight.shape), []).append((family, conv))
    return shapes
