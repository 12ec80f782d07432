"""Video ResNet feature extractors: every public variant is data passed to torchvision's `VideoResNet`.

A backbone maps normalized clips (N, 3, T, H, W) to the pooled features (N, 512) or (N, 2048) that the
published model's classifier would receive; the classifier itself is dropped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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

from aqa_cli.models.pretrained import (
    FAMILY_NORMALIZATION,
    LAYOUTS,
    NORMALIZATIONS,
    Normalization,
    PretrainedWeights,
    feature_dim,
    load_strictly,
    read_weights,
)
from aqa_cli.util.errors import AqaError

DEFAULT_FAMILY = "hara"
CONV_TYPES = ("3d", "2plus1d", "mc3")  # mc3: 3D convs in layer1, 2D (1x3x3) in layers 2-4
STAGES = ("layer1", "layer2", "layer3", "layer4")


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
    """What distinguishes one family's video ResNet from another's at the same depth."""

    stem: Callable[[], nn.Module]
    conv_maker: type[nn.Module] | tuple[type[nn.Module], ...]  # one for all stages, or one per stage
    batchnorm_eps: float = 1e-5
    batchnorm_momentum: float = 0.1


VARIANTS: dict[tuple[str, str], Variant] = {
    ("hara", "3d"): Variant(hara_3d_stem, Conv3DSimple),
    ("hara", "2plus1d"): Variant(hara_2plus1d_stem, Conv2PlusOneDOwnMid),
    # The IG-65M port keeps Caffe2's BatchNorm settings; they are not stored in the files.
    ("ig65m", "2plus1d"): Variant(
        R2Plus1dStem, Conv2PlusOneDOwnMid, batchnorm_eps=1e-3, batchnorm_momentum=0.9
    ),
    ("torchvision", "3d"): Variant(BasicStem, Conv3DSimple),
    ("torchvision", "2plus1d"): Variant(R2Plus1dStem, Conv2Plus1D),
    # Mixed convolutions (torchvision mc3_18): full 3D convolutions in layer1 only.
    ("torchvision", "mc3"): Variant(BasicStem, (Conv3DSimple,) + (Conv3DNoTemporal,) * 3),
}
FAMILIES = tuple(dict.fromkeys(family for family, _ in VARIANTS))


class VideoResNetFeatures(VideoResNet):
    """A torchvision `VideoResNet` without its classifier: forward returns the flattened pooled features.

    State dict keys are torchvision's (`stem.*`, `layer1.*` ... `layer4.*`). With `grad_checkpoint`, the
    residual stages are recomputed in the backward pass instead of keeping their activations (less GPU
    memory when training; BatchNorm running statistics then update twice per step).
    """

    def __init__(
        self,
        depth: int,
        conv: str,
        family: str,
        normalization: Normalization,
        grad_checkpoint: bool = False,
    ) -> None:
        variant, layout = VARIANTS[family, conv], LAYOUTS[depth]
        block = Bottleneck if layout.bottleneck else BasicBlock
        makers = variant.conv_maker if isinstance(variant.conv_maker, tuple) else (variant.conv_maker,) * 4
        super().__init__(block, list(makers), list(layout.blocks), variant.stem)
        del self.fc
        for module in self.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.eps, module.momentum = variant.batchnorm_eps, variant.batchnorm_momentum
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
            x = checkpoint(layer, x, use_reentrant=False) if checkpointing else layer(x)
        return self.avgpool(x).flatten(1)


def build_backbone(
    depth: int,
    conv: str,
    weights: str | Path | None = None,
    *,
    family: str | None = None,
    normalization: Normalization | str | None = None,
    grad_checkpoint: bool = False,
) -> VideoResNetFeatures:
    """Build a video ResNet feature extractor, optionally loading a public checkpoint file strictly.

    depth: 10, 18, 34, 50, 101, 152 or 200; conv: "3d", "2plus1d" or "mc3" (torchvision family only).
    weights: a local Hara et al., IG-65M or torchvision checkpoint; its family, depth and conv type are
        read from the file and must match the request.
    family: "hara", "ig65m" or "torchvision". Default: the file's family, else "hara" (Hara et al. have
        every depth in both conv types, and the paper's 16-frame backbones are theirs).
    normalization: the input normalization to carry (a `Normalization` or one of `NORMALIZATIONS`);
        default: the one the family's weights were trained with.
    grad_checkpoint: recompute the residual stages in the backward pass to save memory.
    """
    pretrained = read_weights(weights) if weights is not None else None
    if pretrained is not None:
        _check_request(pretrained, depth, conv, family)
    family = pretrained.family if pretrained is not None else family or DEFAULT_FAMILY
    check_architecture(depth, conv, family)
    if isinstance(normalization, str):
        normalization = Normalization.named(normalization)
    # With weights to load, build on the meta device: initialising the tensors would be wasted work.
    with torch.device("meta") if pretrained is not None else contextlib.nullcontext():
        backbone = VideoResNetFeatures(
            depth,
            conv,
            family,
            normalization or NORMALIZATIONS[FAMILY_NORMALIZATION[family]],
            grad_checkpoint=grad_checkpoint,
        )
    if pretrained is not None:
        load_strictly(backbone, pretrained)
        backbone.weights_summary = pretrained.describe()
    return backbone


def check_architecture(depth: int, conv: str, family: str) -> None:
    if depth not in LAYOUTS:
        raise AqaError(f"no ResNet of depth {depth}; choose one of {', '.join(map(str, LAYOUTS))}")
    if conv not in CONV_TYPES:
        raise AqaError(f"unknown convolution type {conv!r}; choose one of {', '.join(CONV_TYPES)}")
    if family not in FAMILIES:
        raise AqaError(f"unknown backbone family {family!r}; choose one of {', '.join(FAMILIES)}")
    if (family, conv) not in VARIANTS:
        convs = [c for f, c in VARIANTS if f == family]
        raise AqaError(f"family {family} has no {conv} variant; use conv {' or '.join(convs)}")


def _check_request(pretrained: PretrainedWeights, depth: int, conv: str, family: str | None) -> None:
    requested = {"depth": depth, "conv": conv, "family": family or pretrained.family}
    held = {"depth": pretrained.depth, "conv": pretrained.conv, "family": pretrained.family}
    mismatches = [
        f"{name} {requested[name]} requested, file has {held[name]}"
        for name in held
        if requested[name] != held[name]
    ]
    if mismatches:
        raise AqaError(
            f"{pretrained.path} holds {pretrained.family} {pretrained.conv} ResNet-{pretrained.depth} weights "
            f"({'; '.join(mismatches)}); request depth {pretrained.depth} conv {pretrained.conv}, "
            "or pass a file that matches"
        )
