"""The AQA model of the paper (section III): clip features -> FC layers -> aggregation -> score.

A video of L frames is cut into K = L / clip_len contiguous clips; all clips go through the backbone as
one batch. Each clip's pooled features pass FC layers with ReLU down to 128 values, the K clip vectors
are aggregated by averaging (`avg`) or by the Weight-Decider (`wd`, eq. 1-3), and `Linear(128, 1)`
predicts the quality, multiplied by the dive's difficulty when it has one.

Two heads for long videos (hundreds of clips) come from `models.long_heads`: `attn` (masked attention
pooling) and `gdlt` (grade-decoupled queries). Inside `AQAHead` they see features standardized per
channel (`feature_mean`, `feature_std`: the training clips' statistics, set by the trainer; identity
otherwise), their per-clip layers run on the packed real clips only, their output is a quality on [0, 1]
scaled back by the training split's quality range (`quality_range`), and the difficulty multiplies it as
for `avg` and `wd`. They report one weight per clip (N, K), summing to 1 over the real clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import NamedTuple

import torch
from torch import Tensor, nn

from aqa_cli.models.long_heads import LONG_HEADS, build_long_head
from aqa_cli.util.errors import AqaError

CLIP_FEATURE_DIM = 128
WEIGHT_DECIDER_WIDTHS = (128, 64, 32, 64, 128)
PAPER_AGGREGATIONS = ("avg", "wd")
AGGREGATIONS = (*PAPER_AGGREGATIONS, *LONG_HEADS)
WD_DROPOUT = 0.1
"""Dropout after each hidden ReLU of the Weight-Decider, as in the authors' code."""


def mlp(widths: Sequence[int], *, relu_after_last: bool, dropout: float = 0.0) -> nn.Sequential:
    """Linear layers through `widths`, each followed by ReLU (and dropout if > 0), the last one optionally."""
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(pairwise(widths)):
        layers.append(nn.Linear(width_in, width_out))
        if relu_after_last or index < len(widths) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def clip_layer_widths(feature_dim: int) -> tuple[int, ...]:
    """The paper's per-clip FC widths: 512->256->128 for BasicBlock nets, 2048->512->256->128 for Bottleneck
    nets; other widths (cached features) take the first path up to 512, the second above."""
    hidden = (512, 256) if feature_dim > 512 else (256,)
    return (feature_dim, *hidden, CLIP_FEATURE_DIM)


class AverageAggregation(nn.Module):
    """The mean of the clip vectors (over the real clips only when a mask is given)."""

    def forward(self, clips: Tensor, mask: Tensor | None = None) -> tuple[Tensor, None]:
        if mask is None:
            return clips.mean(dim=1), None
        weights = mask.to(clips.dtype).unsqueeze(-1)
        return (clips * weights).sum(dim=1) / weights.sum(dim=1), None


class WeightDecider(nn.Module):
    """The Weight-Decider: an MLP proposes a weight per clip and channel; a softmax across the clips, for
    each channel separately, makes them sum to 1; the video vector is the weighted sum (eq. 1-3).

    Masked clips (mask False) get weight 0. Note that the weights of a clip depend on that clip alone, so
    like averaging the result does not depend on the order of the clips.
    """

    def __init__(self, dropout: float = WD_DROPOUT) -> None:
        super().__init__()
        self.mlp = mlp(WEIGHT_DECIDER_WIDTHS, relu_after_last=False, dropout=dropout)

    def forward(self, clips: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logits = self.mlp(clips)
        if mask is not None:
            logits = logits.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        weights = logits.softmax(dim=1)
        return (clips * weights).sum(dim=1), weights


class AQAOutput(NamedTuple):
    score: Tensor
    """(N,) quality times difficulty where the sample has one, else the quality."""
    quality: Tensor
    """(N,) the regressor's output."""
    clip_weights: Tensor | None
    """(N, K, 128) Weight-Decider weights (each channel sums to 1 over clips); (N, K) for `attn` and
    `gdlt` (one weight per clip, summing to 1 over the real clips); None for `avg`."""
    embed: Tensor | None = None
    """(N, Q, width) the grade queries' outputs (`gdlt` only: the input of the triplet term)."""


class AQAHead(nn.Module):
    """Everything after the backbone, usable on cached clip features (N, K, D) of any width D.

    `head_options` are the options of the long heads (`attn`, `gdlt`: see `models.long_heads`); the
    paper's `avg` and `wd` take none.
    """

    def __init__(
        self,
        feature_dim: int,
        agg: str = "wd",
        wd_dropout: float = WD_DROPOUT,
        use_difficulty: bool = True,
        head_options: dict | None = None,
    ) -> None:
        super().__init__()
        if agg not in AGGREGATIONS:
            raise AqaError(f"unknown aggregation {agg!r}; choose one of {', '.join(AGGREGATIONS)}")
        self.feature_dim = feature_dim
        self.use_difficulty = use_difficulty
        self.agg = agg
        if agg in LONG_HEADS:
            self.long = build_long_head(agg, feature_dim, **(head_options or {}))
            self.register_buffer("feature_mean", torch.zeros(feature_dim))
            self.register_buffer("feature_std", torch.ones(feature_dim))
            self.register_buffer("quality_range", torch.tensor([0.0, 1.0]))
            return
        if head_options:
            raise AqaError(f"--agg {agg} takes no head options (got {', '.join(sorted(head_options))})")
        self.clip_layers = mlp(clip_layer_widths(feature_dim), relu_after_last=True)
        self.aggregation = WeightDecider(wd_dropout) if agg == "wd" else AverageAggregation()
        self.regressor = nn.Linear(CLIP_FEATURE_DIM, 1)

    @property
    def is_long(self) -> bool:
        return self.agg in LONG_HEADS

    def set_standardization(self, mean: Tensor, std: Tensor) -> None:
        """Standardize every feature channel with these statistics (the training clips') before the head."""
        with torch.no_grad():
            self.feature_mean.copy_(mean)
            self.feature_std.copy_(std)

    def set_quality_range(self, low: float, high: float) -> None:
        """The training split's quality range: the long heads predict on [0, 1] and are scaled back to it."""
        if not high > low:
            high = low + 1.0  # all training qualities equal: any positive scale keeps the one value exact
        with torch.no_grad():
            self.quality_range.copy_(torch.tensor([low, high]))

    def normalized_quality(self, quality: Tensor) -> Tensor:
        """A quality in the units the long heads are trained in: the training range mapped to [0, 1]."""
        low, high = self.quality_range[0], self.quality_range[1]
        return (quality - low) / (high - low)

    def forward(
        self, features: Tensor, difficulty: Tensor | None = None, mask: Tensor | None = None
    ) -> AQAOutput:
        """features (N, K, D); difficulty (N,), NaN where unknown; mask (N, K) bool, True for real clips."""
        embed = None
        if self.is_long:
            quality, clip_weights, embed = self._long_quality(features, mask)
        else:
            clips = self.clip_layers(features)
            if mask is not None:  # padded slots may hold anything, even NaN
                clips = clips.masked_fill(~mask.unsqueeze(-1), 0.0)
            video, clip_weights = self.aggregation(clips, mask)
            quality = self.regressor(video).squeeze(-1)
        score = quality
        if self.use_difficulty and difficulty is not None:
            score = quality * torch.nan_to_num(difficulty.to(quality.dtype), nan=1.0)
        return AQAOutput(score, quality, clip_weights, embed)

    def _long_quality(self, features: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """The long head on standardized features, its per-clip layers on the packed real clips only."""
        if mask is None:
            mask = torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
        mask = mask.to(torch.bool)
        if not bool(mask.any(dim=1).all()):
            raise AqaError("every video needs at least one real clip (a mask row is all False)")
        real = (features[mask] - self.feature_mean.to(features.dtype)) / self.feature_std.to(features.dtype)
        packed = self.long.clip_layers(real)
        clips = packed.new_zeros((*mask.shape, packed.shape[-1]))
        clips[mask] = packed
        out = self.long(features, mask, clips=clips)
        low, high = self.quality_range[0], self.quality_range[1]
        return out.score * (high - low) + low, out.clip_weights, out.embed
