"""Building a video ResNet feature extractor, at random or from a public checkpoint file loaded strictly.

A backbone maps normalized clips (N, 3, T, H, W) to the pooled features (N, 512) or (N, 2048) that the
published model's classifier would receive; the classifier itself is dropped.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from aqa_cli.models.architectures import (
    CONV_TYPES,
    DEFAULT_FAMILY,
    FAMILIES,
    LAYOUTS,
    VARIANTS,
    VideoResNetFeatures,
)
from aqa_cli.models.normalization import NORMALIZATIONS, Normalization
from aqa_cli.models.pretrained import PretrainedWeights, load_strictly, read_weights
from aqa_cli.util.errors import AqaError


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
            normalization or NORMALIZATIONS[FAMILIES[family].normalization],
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
        convs = list(FAMILIES[family].variants)
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
