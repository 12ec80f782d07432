"""Where a model's tensors came from, as fingerprints: one tensor hash for checkpoints and backbones, the
record of an extracting backbone, and rebuilding that backbone later (the same weights file, checked by
sha256, or the same random initialisation, checked by its state's sha256)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from aqa_cli.models.architectures import VideoResNetFeatures
from aqa_cli.models.backbones import build_backbone
from aqa_cli.models.normalization import Normalization
from aqa_cli.util.errors import AqaError
from aqa_cli.util.hashing import file_sha256


def update_with_tensor(digest, tensor: torch.Tensor, label: str) -> None:
    """Feed `label` (what names the tensor: dtype, shape, maybe its key) and then the tensor's bytes (on the
    CPU, contiguous) to `digest`: the one way the toolkit hashes a tensor."""
    data = tensor.detach().cpu().contiguous()
    digest.update(label.encode())
    digest.update(data.reshape(-1).view(torch.uint8).numpy())


def tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 of one tensor: its dtype and shape, then its bytes (what checkpoints record per tensor)."""
    digest = hashlib.sha256()
    update_with_tensor(digest, tensor, f"{tensor.dtype}{tuple(tensor.shape)}")
    return digest.hexdigest()


def state_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's parameters and buffers (names, dtypes and values), in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        update_with_tensor(digest, tensor, f"{name}:{tensor.dtype}:{tuple(tensor.shape)}")
    return digest.hexdigest()


def frozen_backbone(
    depth: int,
    conv: str,
    weights: str | None,
    family: str | None,
    normalization: Normalization | str | None,
    seed: int,
) -> VideoResNetFeatures:
    """A backbone in evaluation mode; a random initialisation is drawn from `seed` (same seed and torch,
    same weights) without touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = build_backbone(depth, conv, weights, family=family, normalization=normalization)
    return backbone.eval()


def backbone_record(
    backbone: VideoResNetFeatures, weights: str | None, seed: int, weights_name: str | None = None
) -> dict:
    """Everything needed to rebuild the backbone and to tell whether a rebuilt one is the same;
    `weights_name`: the registry name the weights file came from (recorded only when there is one)."""
    named = {"weights_name": weights_name} if weights_name else {}
    return {
        **named,
        "depth": backbone.depth,
        "conv": backbone.conv,
        "family": backbone.family,
        "feature_dim": backbone.feature_dim,
        "normalization": backbone.normalization.to_dict(),
        "weights": str(Path(weights).resolve()) if weights else None,
        "weights_sha256": file_sha256(weights) if weights else "random init",
        "seed": None if weights else seed,
        "summary": backbone.weights_summary,
        "state_sha256": state_sha256(backbone),
        "torch_version": torch.__version__,
    }


def rebuild_backbone(record: dict, where: Path) -> VideoResNetFeatures:
    """The backbone an extraction used, from its record: the same weights file (checked by sha256), or
    the same random initialisation (checked by the state's sha256: it depends on the torch version)."""
    weights = record["weights"]
    if weights is not None:
        if not Path(weights).is_file():
            fetch = f" (`aqa weights fetch {record['weights_name']}`)" if record.get("weights_name") else ""
            raise AqaError(
                f"{where}: its backbone weights {weights} are missing; put that file (sha256 "
                f"{record['weights_sha256'][:16]}...) back at that path{fetch} to score videos"
            )
        if file_sha256(weights) != record["weights_sha256"]:
            raise AqaError(
                f"{where}: {weights} is not the weights file the features were extracted with (sha256 "
                f"differs); restore the original file"
            )
    backbone = frozen_backbone(
        record["depth"],
        record["conv"],
        weights,
        record["family"],
        Normalization.from_dict(record["normalization"]),
        record["seed"] or 0,
    )
    if weights is None and state_sha256(backbone) != record["state_sha256"]:
        raise AqaError(
            f"{where}: the random-init backbone (seed {record['seed']}, torch {record['torch_version']}) "
            f"cannot be rebuilt by torch {torch.__version__}; use that torch version, or extract with --weights"
        )
    return backbone
