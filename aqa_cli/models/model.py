"""The whole AQA model: a video ResNet over all clips of a video at once, then the heads; and the config
that rebuilds it (stored in every training checkpoint)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from aqa_cli.models.architectures import feature_dim
from aqa_cli.models.backbones import build_backbone
from aqa_cli.models.heads import WD_DROPOUT, AQAHead, AQAOutput, EnsembleHead, RidgeMember
from aqa_cli.models.normalization import Normalization
from aqa_cli.util.errors import AqaError, unknown_fields


@dataclasses.dataclass
class ModelConfig:
    """Everything needed to rebuild an `AQAModel` (plain JSON types, stored in training checkpoints).

    family, normalization and feature_dim may be left None: `build_model` fills them in from the
    backbone (the weights file or the default family) in the model's `config`.
    """

    depth: int = 34
    conv: str = "3d"
    family: str | None = None
    clip_len: int = 16
    agg: str = "wd"
    wd_dropout: float = WD_DROPOUT
    use_difficulty: bool = True
    normalization: dict[str, Any] | None = None
    feature_dim: int | None = None
    head_options: dict[str, Any] | None = None
    """The options of an `attn` or `gdlt` head (`models.long_heads`), dropout included; None for avg/wd."""
    contrastive: dict[str, Any] | None = None
    """Exemplar-based regression (`AQAHead`): exemplars per video, rule, seed, bank shape and the bank's
    sample ids (all from the training split); None: direct regression."""
    members: list[dict[str, Any]] | None = None
    """An ensemble: its members' configs (the head is their `EnsembleHead`); None: one head."""
    ridge: dict[str, Any] | None = None
    """An ensemble's blended ridge member: {"weight": its share of the score, "penalty": the one chosen,
    "pooling": "mean" or "mean-max" (absent: mean)}; None: no ridge."""
    auxiliary: dict[str, Any] | None = None
    """An ensemble's auxiliary ensemble, trained on another score column of the store: {"target": that
    column, "weight": its share of the score, "line": [intercept, slope] mapping its quality onto this
    target's (least squares over the training videos' two labels), "model_config": its config}; None: none."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; `head_options` only where set, so avg/wd configs stay as they were."""
        data = dataclasses.asdict(self)
        for name in ("head_options", "contrastive", "members", "ridge", "auxiliary"):
            if data[name] is None:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        if unknown := unknown_fields(cls, data):
            raise AqaError(
                f"model config has unknown fields {unknown}; it was written by another version "
                "of aqa, so use that version or retrain"
            )
        return cls(**data)


class AQAModel(nn.Module):
    """Backbone over all clips of a video at once, then the `AQAHead`."""

    def __init__(self, backbone: nn.Module, head: AQAHead, clip_len: int, config: ModelConfig | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.clip_len = clip_len
        self.config = config

    def clip_features(self, video: Tensor) -> Tensor:
        """Backbone features (N, K, D) of the K contiguous clips of a normalized video (N, 3, L, H, W)."""
        return clip_features(self.backbone, video, self.clip_len)

    def forward(
        self,
        video: Tensor,
        difficulty: Tensor | None = None,
        mask: Tensor | None = None,
        actions: Sequence[str] | None = None,
    ) -> AQAOutput:
        return self.head(self.clip_features(video), difficulty, mask, actions)


def clip_count(frames: int, clip_len: int) -> int:
    """How many contiguous clips of `clip_len` frames a window of `frames` frames holds, or the one-line
    error when they do not divide it (checked before training or extraction starts, and again here)."""
    if clip_len < 1 or frames % clip_len:
        raise AqaError(f"--clip {clip_len} does not divide --frames {frames}: use 8, 16 or 32 for 96 frames")
    return frames // clip_len


def clip_features(backbone: nn.Module, video: Tensor, clip_len: int) -> Tensor:
    """Features (N, K, D) of the K contiguous clips of a normalized video (N, 3, L, H, W), all clips of
    all videos through the backbone as one batch."""
    batch, channels, frames, height, width = video.shape
    clips = clip_count(frames, clip_len)
    batched = (
        video.reshape(batch, channels, clips, clip_len, height, width)
        .transpose(1, 2)
        .reshape(batch * clips, channels, clip_len, height, width)
    )
    return backbone(batched).reshape(batch, clips, -1)


def build_head(config: ModelConfig) -> AQAHead | EnsembleHead:
    """The head alone, e.g. for cached features; its width is `config.feature_dim`, else the depth's; an
    ensemble's members averaged."""
    if config.members:
        members = [build_head(ModelConfig.from_dict(member)) for member in config.members]
        ridge = auxiliary = None
        if config.ridge:
            ridge = RidgeMember(members[0].feature_dim, config.ridge.get("pooling", "mean"))
        if config.auxiliary:
            auxiliary = build_head(ModelConfig.from_dict(config.auxiliary["model_config"]))
        return EnsembleHead(
            members,
            ridge,
            config.ridge["weight"] if config.ridge else 0.0,
            auxiliary,
            config.auxiliary["weight"] if config.auxiliary else 0.0,
            config.auxiliary["line"] if config.auxiliary else (0.0, 1.0),
        )
    width = config.feature_dim or feature_dim(config.depth)
    return AQAHead(
        width, config.agg, config.wd_dropout, config.use_difficulty, config.head_options, config.contrastive
    )


def build_model(
    config: ModelConfig, weights: str | Path | None = None, *, grad_checkpoint: bool = False
) -> AQAModel:
    """Build the model a config describes, the backbone loaded from a public checkpoint file if given.

    The returned model's `config` has family, normalization and feature_dim resolved, so saving it with
    the state dict is enough to rebuild the model later.
    """
    normalization = Normalization.from_dict(config.normalization) if config.normalization else None
    backbone = build_backbone(
        config.depth,
        config.conv,
        weights,
        family=config.family,
        normalization=normalization,
        grad_checkpoint=grad_checkpoint,
    )
    if config.feature_dim not in (None, backbone.feature_dim):
        raise AqaError(
            f"model config says features of width {config.feature_dim}, but a ResNet-{config.depth} gives "
            f"{backbone.feature_dim}; fix the config or leave feature_dim unset"
        )
    resolved = dataclasses.replace(
        config,
        family=backbone.family,
        normalization=backbone.normalization.to_dict(),
        feature_dim=backbone.feature_dim,
    )
    return AQAModel(backbone, build_head(resolved), config.clip_len, resolved)
