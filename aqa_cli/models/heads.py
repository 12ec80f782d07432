"""The AQA model of the paper (section III): clip features -> FC layers -> aggregation -> score.

A video of L frames is cut into K = L / clip_len contiguous clips; all clips go through the backbone as
one batch. Each clip's pooled features pass FC layers with ReLU down to 128 values, the K clip vectors
are aggregated by averaging (`avg`) or by the Weight-Decider (`wd`, eq. 1-3), and `Linear(128, 1)`
predicts the quality, multiplied by the dive's difficulty when it has one.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import NamedTuple

import torch
from torch import Tensor, nn

from aqa_cli.util.errors import AqaError

CLIP_FEATURE_DIM = 128
WEIGHT_DECIDER_WIDTHS = (128, 64, 32, 64, 128)
AGGREGATIONS = ("avg", "wd")
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
    """(N, K, 128) Weight-Decider weights (each channel sums to 1 over clips); None for `avg`."""


class AQAHead(nn.Module):
    """Everything after the backbone, usable on cached clip features (N, K, D) of any width D."""

    def __init__(
        self, feature_dim: int, agg: str = "wd", wd_dropout: float = WD_DROPOUT, use_difficulty: bool = True
    ) -> None:
        super().__init__()
        if agg not in AGGREGATIONS:
            raise AqaError(f"unknown aggregation {agg!r}; choose one of {', '.join(AGGREGATIONS)}")
        self.feature_dim = feature_dim
        self.use_difficulty = use_difficulty
        self.clip_layers = mlp(clip_layer_widths(feature_dim), relu_after_last=True)
        self.aggregation = WeightDecider(wd_dropout) if agg == "wd" else AverageAggregation()
        self.regressor = nn.Linear(CLIP_FEATURE_DIM, 1)

    def forward(
        self, features: Tensor, difficulty: Tensor | None = None, mask: Tensor | None = None
    ) -> AQAOutput:
        """features (N, K, D); difficulty (N,), NaN where unknown; mask (N, K) bool, True for real clips."""
        clips = self.clip_layers(features)
        if mask is not None:  # padded slots may hold anything, even NaN
            clips = clips.masked_fill(~mask.unsqueeze(-1), 0.0)
        video, clip_weights = self.aggregation(clips, mask)
        quality = self.regressor(video).squeeze(-1)
        score = quality
        if self.use_difficulty and difficulty is not None:
            score = quality * torch.nan_to_num(difficulty.to(quality.dtype), nan=1.0)
        return AQAOutput(score, quality, clip_weights)
