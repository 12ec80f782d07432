"""Public pretrained video ResNet checkpoints: read a local file safely, tell what it holds, load it strictly.

The public files and their layouts: README, "Pretrained weights". A checkpoint is untrusted
input, so it is always read with `torch.load(..., weights_only=True)`; Hara et al. key names are renamed to
torchvision `VideoResNet` names, so every family loads into the same modules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aqa_cli.models.architectures import FAMILIES, LAYOUTS, Layout, closest_variants, feature_dim, stem_shapes
from aqa_cli.models.normalization import NORMALIZATIONS, Normalization
from aqa_cli.util.errors import AqaError

HARA_RENAMES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(pattern), replacement)
    for pattern, replacement in [
        (r"conv1\.weight", "stem.0.weight"),
        (r"bn1\.(\w+)", r"stem.1.\1"),
        (r"conv1_s\.weight", "stem.0.weight"),
        (r"bn1_s\.(\w+)", r"stem.1.\1"),
        (r"conv1_t\.weight", "stem.3.weight"),
        (r"bn1_t\.(\w+)", r"stem.4.\1"),
        (r"(layer\d\.\d+\.conv\d)_s\.weight", r"\1.0.0.weight"),
        (r"(layer\d\.\d+)\.bn(\d)_s\.(\w+)", r"\1.conv\2.0.1.\3"),
        (r"(layer\d\.\d+\.conv\d)_t\.weight", r"\1.0.3.weight"),
        (r"(layer\d\.\d+)\.bn(\d)_t\.(\w+)", r"\1.conv\2.1.\3"),
        (r"(layer\d\.\d+\.conv\d)\.weight", r"\1.0.weight"),
        (r"(layer\d\.\d+)\.bn(\d)\.(\w+)", r"\1.conv\2.1.\3"),
        (r"(layer\d\.\d+\.downsample\.[01]\.\w+)", r"\1"),
        (r"(fc\.(?:weight|bias))", r"\1"),
    ]
]
"""Hara et al. key -> torchvision VideoResNet key, for 3D and (2+1)D models (patterns match whole keys)."""

BATCHNORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
FC_KEYS = ("fc.weight", "fc.bias")
HARA_CONTAINER = "{'state_dict': ...} (Hara et al.)"
PLAIN_CONTAINER = "plain state dict"
MODULE_PREFIX = "module."


@dataclass(frozen=True)
class PretrainedWeights:
    """What a checkpoint file holds, with its tensors under torchvision VideoResNet names."""

    path: Path
    family: str
    conv: str
    depth: int
    classes: int | None
    container: str
    key_prefix: str
    state_dict: dict[str, Tensor]
    """Backbone tensors only: the classifier (`fc.*`) is checked and counted, then left out."""
    parameter_count: int
    """Learnable parameters of the published model, classifier included."""

    @property
    def normalization(self) -> Normalization:
        return NORMALIZATIONS[FAMILIES[self.family].normalization]

    def describe(self) -> str:
        classes = f", {self.classes} classes" if self.classes else ""
        return f"{self.family} {self.conv} ResNet-{self.depth}{classes} from {self.path}"


def read_weights(path: str | Path) -> PretrainedWeights:
    """Read a public checkpoint file and tell its family, depth and conv type from its keys and shapes."""
    path = Path(path)
    state, container = _tensor_state_dict(load_untrusted(path), path)
    key_prefix = MODULE_PREFIX if all(key.startswith(MODULE_PREFIX) for key in state) else ""
    state = {key.removeprefix(key_prefix): tensor for key, tensor in state.items()}
    hara_names = "conv1.weight" in state or "conv1_s.weight" in state
    if hara_names:
        state = _rename_hara_keys(state, path)
    candidates = _stem_candidates(state, path)
    depth = _depth(state, path)
    family, conv = _family_and_conv(state, depth, candidates, path)
    if hara_names and family != "hara":
        raise AqaError(
            f"{path} has Hara et al. key names but a stem of shape {tuple(state['stem.0.weight'].shape)}, "
            "unlike their published 200ep models; pass one of those files"
        )
    classes = _check_classifier(state, depth, path)
    return PretrainedWeights(
        path=path,
        family=family,
        conv=conv,
        depth=depth,
        classes=classes,
        container=container,
        key_prefix=key_prefix,
        state_dict={key: tensor for key, tensor in state.items() if key not in FC_KEYS},
        parameter_count=sum(
            tensor.numel() for key, tensor in state.items() if not key.endswith(BATCHNORM_BUFFERS)
        ),
    )


def inspect_weights(path: str | Path) -> dict[str, Any]:
    """A plain-JSON summary of a checkpoint file (what `aqa weights inspect` prints)."""
    weights = read_weights(path)
    return {
        "path": str(weights.path),
        "family": weights.family,
        "depth": weights.depth,
        "conv": weights.conv,
        "classes": weights.classes,
        "parameters": weights.parameter_count,
        "normalization": weights.normalization.to_dict(),
        "container": weights.container,
        "key_prefix": weights.key_prefix,
    }


def load_strictly(module: nn.Module, weights: PretrainedWeights) -> None:
    """Load every tensor of `weights` into `module`, or raise naming the first keys and shapes that differ."""
    what = f"a {weights.family} {weights.conv} ResNet-{weights.depth}"
    load_tensors_strictly(module, weights.state_dict, str(weights.path), what)


def load_tensors_strictly(module: nn.Module, state: dict[str, Tensor], source: str, what: str) -> None:
    """Load every tensor of `state` into `module`, or raise naming the first keys and shapes that differ
    (`source`: the file, `what`: the network, for the message).

    The tensors are assigned, not copied, so `module` may be built on the meta device (no wasted
    initialisation). `num_batches_tracked` may be absent (files saved by older PyTorch): it starts at 0.
    """
    expected = module.state_dict()
    absent = [key for key in expected if key not in state]
    missing_counters = [key for key in absent if key.endswith("num_batches_tracked")]
    missing = [key for key in absent if key not in missing_counters]
    unexpected = [key for key in state if key not in expected]
    wrong_shapes = [
        f"{key} {tuple(tensor.shape)} (expected {tuple(expected[key].shape)})"
        for key, tensor in state.items()
        if key in expected and tensor.shape != expected[key].shape
    ]
    for problem, keys in [("wrong shapes", wrong_shapes), ("missing", missing), ("unexpected", unexpected)]:
        if keys:
            raise AqaError(
                f"{source} does not fit {what}: {len(keys)} tensors {problem}, e.g. {', '.join(keys[:3])}; "
                "the file is damaged or not a published checkpoint, so pass the original file"
            )
    counters = {key: torch.zeros((), dtype=torch.long) for key in missing_counters}
    loaded = {key: tensor.to(expected[key].dtype) for key, tensor in state.items()}
    module.load_state_dict({**counters, **loaded}, strict=True, assign=True)


def load_untrusted(path: Path) -> Any:
    if not path.is_file():
        raise AqaError(f"{path}: no such file; pass the path of a downloaded .pth checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to parse an untrusted file is the user's to fix
        message = str(exc).strip()
        refusal = re.search(
            r"WeightsUnpickler error:\s*(.+?)(?: was not an allowed|$)", message, re.MULTILINE
        )
        if refusal and "Unsupported global" in refusal.group(1):
            raise AqaError(
                f"{path}: refused to load: besides tensors the file holds Python objects that could run code "
                f"({refusal.group(1)}); use the checkpoint as published, or re-save only its state dict of "
                "tensors from a copy you trust"
            ) from exc
        first_sentence = message.splitlines()[0].split(". ")[0] if message else ""
        detail = refusal.group(1) if refusal else f"{type(exc).__name__}: {first_sentence}".rstrip(": ")
        raise AqaError(
            f"{path} is not a readable PyTorch checkpoint ({detail}); the file may be truncated or of "
            "another kind, so download it again"
        ) from exc


def _tensor_state_dict(loaded: Any, path: Path) -> tuple[dict[str, Tensor], str]:
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        state, container = loaded["state_dict"], HARA_CONTAINER
    else:
        state, container = loaded, PLAIN_CONTAINER
    if not isinstance(state, dict) or not state or not all(isinstance(t, Tensor) for t in state.values()):
        raise AqaError(
            f"{path} holds no state dict of tensors (found {type(loaded).__name__}); pass a published "
            "checkpoint: a state dict, or a {'state_dict': ...} container"
        )
    return dict(state), container


def _rename_hara_keys(state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    renamed = {}
    for key, tensor in state.items():
        new_key = next((rule.sub(repl, key) for rule, repl in HARA_RENAMES if rule.fullmatch(key)), None)
        if new_key is None:
            raise AqaError(
                f"{path}: key {key!r} is not part of a Hara et al. 3D or (2+1)D ResNet; "
                "pass the published file unmodified"
            )
        renamed[new_key] = tensor
    return renamed


def _stem_candidates(state: dict[str, Tensor], path: Path) -> list[tuple[str, str]]:
    """The (family, conv) variants whose first convolution has the file's shape."""
    stem = state.get("stem.0.weight")
    candidates = stem_shapes().get(tuple(stem.shape)) if stem is not None else None
    if not candidates:
        raise AqaError(
            f"{path} is not a video ResNet this toolkit knows (first convolution "
            f"{tuple(stem.shape) if stem is not None else 'missing'}); pass a Hara et al., IG-65M or "
            "torchvision r3d/mc3/r2plus1d checkpoint"
        )
    return candidates


def _family_and_conv(
    state: dict[str, Tensor], depth: int, candidates: list[tuple[str, str]], path: Path
) -> tuple[str, str]:
    """Of the candidates, the one whose architecture fits the file's tensor shapes best (ig65m and
    torchvision (2+1)D differ in their mid widths, torchvision 3d and mc3 in the kernels of layers 2-4)."""
    shapes = {key: tuple(tensor.shape) for key, tensor in state.items() if key not in FC_KEYS}
    closest = closest_variants(shapes, depth, candidates)
    if len(closest) != 1:
        raise AqaError(
            f"{path} fits {' and '.join(f'{family} {conv}' for family, conv in closest)} ResNet-{depth} "
            "equally well; pass the published file unmodified"
        )
    return closest[0]


def _depth(state: dict[str, Tensor], path: Path) -> int:
    blocks = [0, 0, 0, 0]
    for key in state:
        match = re.match(r"layer([1-4])\.(\d+)\.", key)
        if match:
            stage = int(match.group(1)) - 1
            blocks[stage] = max(blocks[stage], int(match.group(2)) + 1)
    bottleneck = any(re.match(r"layer\d\.\d+\.conv3\.", key) for key in state)
    layout = Layout(tuple(blocks), bottleneck)
    depth = next((depth for depth, known in LAYOUTS.items() if known == layout), None)
    if depth is None:
        raise AqaError(
            f"{path}: {blocks} {'bottleneck' if bottleneck else 'basic'} blocks per stage is no known ResNet "
            f"depth ({', '.join(map(str, LAYOUTS))}); pass a published checkpoint"
        )
    return depth


def _check_classifier(state: dict[str, Tensor], depth: int, path: Path) -> int | None:
    """The class count from `fc.weight`, after checking the classifier reads the pooled features."""
    fc_weight, fc_bias = state.get("fc.weight"), state.get("fc.bias")
    if fc_weight is None and fc_bias is None:
        return None
    fits = (
        fc_weight is not None
        and fc_bias is not None
        and fc_weight.dim() == 2
        and fc_weight.shape[1] == feature_dim(depth)
        and tuple(fc_bias.shape) == (fc_weight.shape[0],)
    )
    if not fits:
        raise AqaError(
            f"{path}: classifier fc.weight/fc.bias do not fit ResNet-{depth} features of width "
            f"{feature_dim(depth)}; pass the published file unmodified"
        )
    return fc_weight.shape[0]
