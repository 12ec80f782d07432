"""The AQA model of the paper (section III): clip features -> FC layers -> aggregation -> score.

A video of L frames is cut into K = L / clip_len contiguous clips; all clips go through the backbone as
one batch. Each clip's pooled features pass FC layers with ReLU down to 128 values, the K clip vectors
are aggregated by averaging (`avg`) or by the Weight-Decider (`wd`, eq. 1-3), and `Linear(128, 1)`
predicts the quality, multiplied by the dive's difficulty when it has one. The regressor and that product
run in fp32 even under autocast: bf16's 8-bit mantissa would round scores by up to half a point.

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
from aqa_cli.util.runtime import full_precision

CLIP_FEATURE_DIM = 128
WEIGHT_DECIDER_WIDTHS = (128, 64, 32, 64, 128)
PAPER_AGGREGATIONS = ("avg", "wd")
AGGREGATIONS = (*PAPER_AGGREGATIONS, *LONG_HEADS)
CONTRASTIVE_HIDDEN = 256
"""Hidden width of the difference MLP of contrastive (exemplar-based) regression."""
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


def quality_times_difficulty(quality: Tensor, difficulty: Tensor | None, use_difficulty: bool) -> Tensor:
    """The score: the quality times the difficulty where a sample has one (NaN: none), with `use_difficulty`."""
    if not use_difficulty or difficulty is None:
        return quality
    return quality * torch.nan_to_num(difficulty.float(), nan=1.0)


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
    pooled: Tensor | None = None
    """(N, pooled_dim) the video's representation before the regressor."""
    spread: Tensor | None = None
    """(N,) an ensemble's spread: the standard deviation (ddof 0) of its members' scores; None otherwise."""


class AQAHead(nn.Module):
    """Everything after the backbone, usable on cached clip features (N, K, D) of any width D.

    `head_options` are the options of the long heads (`attn`, `gdlt`: see `models.long_heads`), plus
    `standardize` (default True: the long head sees every channel standardized with the training clips'
    statistics; False: raw features, as GDLT's code); the paper's `avg` and `wd` take none.

    `contrastive` (exemplar-based regression, any aggregation): {"exemplars": K, "bank": [M, clips, D], ...}.
    The head then holds a bank of M training videos' features and qualities (`set_exemplars`), and a
    difference MLP on (query, exemplar, query - exemplar) pooled representations predicts the quality
    difference in units of the training quality range; a video's quality is the mean over its exemplars
    (the bank entries of its action, else of its difficulty, else the bank's seeded fallback entries:
    `exemplar_weights`) of exemplar quality + predicted difference. With `contrastive["actions"]` (the
    bank's action names: rule "action") the head also holds each entry's action (`bank_action`, an index
    into those names, -1 for entries chosen by difficulty or as fallback); older banks have none.
    """

    def __init__(
        self,
        feature_dim: int,
        agg: str = "wd",
        wd_dropout: float = WD_DROPOUT,
        use_difficulty: bool = True,
        head_options: dict | None = None,
        contrastive: dict | None = None,
    ) -> None:
        super().__init__()
        if agg not in AGGREGATIONS:
            raise AqaError(f"unknown aggregation {agg!r}; choose one of {', '.join(AGGREGATIONS)}")
        self.feature_dim = feature_dim
        self.use_difficulty = use_difficulty
        self.agg = agg
        if agg in LONG_HEADS or contrastive:  # the [0, 1] units of the long heads and of differences
            self.register_buffer("quality_range", torch.tensor([0.0, 1.0]))
        self.standardize = True
        if agg in LONG_HEADS:
            options = dict(head_options or {})
            self.standardize = bool(options.pop("standardize", True))
            self.long = build_long_head(agg, feature_dim, **options)
            self.register_buffer("feature_mean", torch.zeros(feature_dim))
            self.register_buffer("feature_std", torch.ones(feature_dim))
            pooled_dim = self.long.pooled_dim
        else:
            if head_options:
                raise AqaError(f"--agg {agg} takes no head options (got {', '.join(sorted(head_options))})")
            self.clip_layers = mlp(clip_layer_widths(feature_dim), relu_after_last=True)
            self.aggregation = WeightDecider(wd_dropout) if agg == "wd" else AverageAggregation()
            self.regressor = nn.Linear(CLIP_FEATURE_DIM, 1)
            pooled_dim = CLIP_FEATURE_DIM
        self.contrastive = contrastive
        if contrastive:
            self.difference = mlp((3 * pooled_dim, CONTRASTIVE_HIDDEN, 1), relu_after_last=False)
            bank, clips, dim = contrastive["bank"]
            self.register_buffer("bank_features", torch.zeros(bank, clips, dim))
            self.register_buffer("bank_clips", torch.ones(bank, dtype=torch.int64))
            self.register_buffer("bank_quality", torch.zeros(bank))
            self.register_buffer("bank_group", torch.full((bank,), float("nan")))
            self.exemplar_actions: list[str] = list(contrastive.get("actions", []))
            if self.exemplar_actions:
                self.register_buffer("bank_action", torch.full((bank,), -1, dtype=torch.int64))

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
        self,
        features: Tensor,
        difficulty: Tensor | None = None,
        mask: Tensor | None = None,
        actions: Sequence[str] | None = None,
    ) -> AQAOutput:
        """features (N, K, D); difficulty (N,), NaN where unknown; mask (N, K) bool, True for real clips;
        actions: N action names ("" where unknown), which a contrastive head matches exemplars by."""
        quality, clip_weights, embed, pooled = self.direct(features, mask)
        with full_precision(quality.device):
            quality = quality.float()
            if self.contrastive:
                quality = self.quality_from_exemplars(pooled.float(), difficulty, actions)
            score = quality_times_difficulty(quality, difficulty, self.use_difficulty)
        return AQAOutput(score, quality, clip_weights, embed, pooled)

    def direct(
        self, features: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:
        """(quality from the head's own regressor, clip weights, query outputs, pooled representation)."""
        if self.is_long:
            return self._long_quality(features, mask)
        clips = self.clip_layers(features)
        if mask is not None:  # padded slots may hold anything, even NaN
            clips = clips.masked_fill(~mask.unsqueeze(-1), 0.0)
        video, clip_weights = self.aggregation(clips, mask)
        with full_precision(video.device):  # bf16 keeps 8 bits: 3.3 would be 3.296875
            return self.regressor(video.float()).squeeze(-1), clip_weights, None, video

    def set_exemplars(
        self, features: Tensor, clips: Tensor, quality: Tensor, group: Tensor, action: Tensor | None = None
    ) -> None:
        """The exemplar bank: padded features (M, K, D) of M training videos, their clip counts, qualities,
        groups (their difficulty; NaN: the fallback entries, used by a video whose group has none) and,
        for a bank with actions, each entry's action index (-1: an entry of a difficulty or a fallback)."""
        with torch.no_grad():
            self.bank_features.copy_(features)
            self.bank_clips.copy_(clips)
            self.bank_quality.copy_(quality)
            self.bank_group.copy_(group)
            if self.exemplar_actions:
                self.bank_action.copy_(action)

    def pair_differences(self, query: Tensor, exemplar: Tensor) -> Tensor:
        """(N, M) predicted quality differences query - exemplar, in units of the training quality range,
        from pooled representations query (N, P) and exemplar (M, P)."""
        q = query.float().unsqueeze(1).expand(-1, exemplar.shape[0], -1)
        e = exemplar.float().unsqueeze(0).expand(query.shape[0], -1, -1)
        return self.difference(torch.cat([q, e, q - e], dim=-1)).squeeze(-1)

    def exemplar_weights(
        self, difficulty: Tensor | None, count: int, actions: Sequence[str] | None = None
    ) -> Tensor:
        """(count, M): for each video, 1 / n on the n bank entries of its action (banks with actions),
        else on those of its difficulty, else on the fallback entries (no group, no action). An unknown
        action (""), or one the bank has no entry of, falls back the same way."""
        group = self.bank_group
        fallback = torch.isnan(group)
        if self.exemplar_actions:
            fallback = fallback & (self.bank_action < 0)
        chosen = fallback.expand(count, -1)
        if difficulty is not None:
            same = group[None, :] == difficulty.to(group.device, group.dtype)[:, None]
            chosen = torch.where(same.any(dim=1, keepdim=True), same, chosen)
        if actions is not None and self.exemplar_actions:
            index = {name: position for position, name in enumerate(self.exemplar_actions)}
            codes = torch.tensor([index.get(name, -1) for name in actions], device=group.device)
            same = (self.bank_action[None, :] == codes[:, None]) & (codes[:, None] >= 0)
            chosen = torch.where(same.any(dim=1, keepdim=True), same, chosen)
        chosen = chosen.float()
        return chosen / chosen.sum(dim=1, keepdim=True)

    def quality_from_exemplars(
        self, pooled: Tensor, difficulty: Tensor | None, actions: Sequence[str] | None = None
    ) -> Tensor:
        """The mean over each video's exemplars of exemplar quality + predicted difference."""
        mask = (
            torch.arange(self.bank_features.shape[1], device=pooled.device)[None] < self.bank_clips[:, None]
        )
        bank = self.direct(self.bank_features, mask)[3]
        low, high = self.quality_range[0], self.quality_range[1]
        estimates = self.bank_quality[None, :] + self.pair_differences(pooled, bank) * (high - low)
        return (self.exemplar_weights(difficulty, len(pooled), actions) * estimates).sum(dim=1)

    def _long_quality(
        self, features: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """The long head on standardized features."""
        standardized = (features - self.feature_mean.to(features.dtype)) / self.feature_std.to(features.dtype)
        out = self.long(standardized, mask)
        low, high = self.quality_range[0], self.quality_range[1]
        with full_precision(features.device):
            return out.score.float() * (high - low) + low, out.clip_weights, out.embed, out.pooled


class RidgeMember(nn.Module):
    """Ridge regression on the mean of a video's real clip features (`pooling` "mean-max": the mean and
    the channel-wise maximum), standardized with the training videos' statistics: the linear baseline,
    fitted in closed form by the trainer (`evaluation.ridge.fit_ridge`), that an ensemble may blend in.
    Its quality is multiplied by the difficulty as the heads' is."""

    def __init__(self, feature_dim: int, pooling: str = "mean") -> None:
        super().__init__()
        width = 2 * feature_dim if pooling == "mean-max" else feature_dim
        self.pooling = pooling
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))
        self.register_buffer("weights", torch.zeros(width))
        self.register_buffer("bias", torch.zeros(()))
        self.average = AverageAggregation()

    def forward(self, features: Tensor, mask: Tensor | None = None) -> Tensor:
        """(N,) the quality of each video of padded features (N, K, D)."""
        with full_precision(features.device):
            features = features.float()
            pooled, _ = self.average(features, mask)
            if self.pooling == "mean-max":
                real = features if mask is None else features.masked_fill(~mask.unsqueeze(-1), float("-inf"))
                pooled = torch.cat([pooled, real.amax(dim=1)], dim=-1)
            return ((pooled - self.mean) / self.std) @ self.weights + self.bias


class EnsembleHead(nn.Module):
    """Several trained heads (an ensemble's members: seeds or folds) as one: the mean of their scores,
    qualities and clip weights, and the spread (std, ddof 0) of their scores. With a `ridge` member, the
    score and quality are (1 - ridge_weight) x the heads' mean + ridge_weight x the ridge's. With an
    `auxiliary` ensemble (trained on another score column), its quality mapped onto this target's by
    `auxiliary_line` (intercept, slope) then takes the share auxiliary_weight of that. The spread
    stays the learned heads'."""

    def __init__(
        self,
        members: list[AQAHead],
        ridge: RidgeMember | None = None,
        ridge_weight: float = 0.0,
        auxiliary: EnsembleHead | None = None,
        auxiliary_weight: float = 0.0,
        auxiliary_line: Sequence[float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.agg, self.use_difficulty = members[0].agg, members[0].use_difficulty
        self.ridge, self.ridge_weight = ridge, ridge_weight
        self.auxiliary, self.auxiliary_weight = auxiliary, auxiliary_weight
        if auxiliary is not None:  # from the record (ModelConfig.auxiliary["line"]), not the state dict
            self.register_buffer("auxiliary_line", torch.tensor(list(auxiliary_line)), persistent=False)

    @property
    def is_long(self) -> bool:
        return self.members[0].is_long

    def forward(
        self,
        features: Tensor,
        difficulty: Tensor | None = None,
        mask: Tensor | None = None,
        actions: Sequence[str] | None = None,
    ) -> AQAOutput:
        outputs = [member(features, difficulty, mask, actions) for member in self.members]
        scores = torch.stack([out.score.float() for out in outputs])
        quality = torch.stack([out.quality.float() for out in outputs]).mean(dim=0)
        weights = None
        if outputs[0].clip_weights is not None:
            weights = torch.stack([out.clip_weights.float() for out in outputs]).mean(dim=0)
        score = scores.mean(dim=0)
        if self.ridge is not None:
            ridge_quality = self.ridge(features, mask)
            ridge_score = quality_times_difficulty(ridge_quality, difficulty, self.use_difficulty)
            score = torch.lerp(score, ridge_score, self.ridge_weight)
            quality = torch.lerp(quality, ridge_quality, self.ridge_weight)
        if self.auxiliary is not None:
            mapped = (
                self.auxiliary_line[0]
                + self.auxiliary_line[1] * self.auxiliary(features, difficulty, mask, actions).quality
            )
            mapped_score = quality_times_difficulty(mapped, difficulty, self.use_difficulty)
            score = torch.lerp(score, mapped_score, self.auxiliary_weight)
            quality = torch.lerp(quality, mapped, self.auxiliary_weight)
        return AQAOutput(score, quality, weights, spread=scores.std(dim=0, unbiased=False))
