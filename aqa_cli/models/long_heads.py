"""Aggregation heads for long videos (hundreds of clips) on cached per-clip features, with exact padding masks.

Two aggregations, each usable alone on clip vectors (N, K, D) or inside a full head on raw features:

- `attn`: masked attention pooling. A small MLP gives every clip one scalar; a softmax over the real clips
  turns the scalars into weights; the video vector is the weighted sum of the clips. One weight per clip.
- `gdlt`: grade-decoupled queries (after Xu et al., "Likert Scoring with Grade Decoupling for Long-term
  Action Assessment", CVPR 2022). The clips are projected to a model width and go through a transformer
  encoder; Q learnable grade queries go through a transformer decoder that cross-attends to the encoded
  clips; each query's output gives the weight of one of Q fixed grade levels (linspace(0, 1, Q)); the
  score is the weight-averaged grade, in [0, 1] (scale targets to [0, 1] for training). The query weights
  follow GDLT (a sigmoid of each query's own logit, normalized to sum 1) or a softmax over the queries.
  An optional triplet term keeps the query outputs apart: `gdlt_hardest_triplet_loss` (GDLT's code) or
  `gdlt_triplet_loss` (a rolled-batch variant).

Masks are (N, K) bool, True for real clips. Padded slots may hold anything, even NaN or inf: the per-clip
layers run on the packed real clips only (`per_real_clip`, so padding reaches no BatchNorm statistics
either), padded slots are zero after them, and every attention gives them exactly zero weight (additive
-inf before the softmax), so a padded clip changes no output (up to float summation order). The attention is written out here
rather than taken from `nn.MultiheadAttention` / `nn.TransformerEncoder`, whose inference fast path
(nested tensors) changes numerics and fills padded positions with zeros; the computation is the same in
training and evaluation. Every video needs at least one real clip.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aqa_cli.util.errors import AqaError

LONG_HEADS = ("attn", "gdlt")


def _check_mask(features: Tensor, mask: Tensor | None) -> Tensor:
    """The mask as bool (N, K), all True when None; raises if a video has no real clip."""
    if mask is None:
        return torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
    if mask.shape != features.shape[:2]:
        raise AqaError(f"mask shape {tuple(mask.shape)} does not match clips {tuple(features.shape[:2])}")
    mask = mask.to(torch.bool)
    if not bool(mask.any(dim=1).all()):
        raise AqaError("every video needs at least one real clip (a mask row is all False)")
    return mask


def _zero_padded(features: Tensor, mask: Tensor) -> Tensor:
    """Padded slots set to 0, so that NaN/inf there can reach neither outputs nor gradients."""
    return features.masked_fill(~mask.unsqueeze(-1), 0.0)


def per_real_clip(layers: nn.Module, features: Tensor, mask: Tensor) -> Tensor:
    """`layers` on the real clips of features (N, K, D) only, packed (R, D); their outputs scattered back
    to (N, K, out), zero on padded slots."""
    packed = layers(features[mask])
    clips = packed.new_zeros((*mask.shape, packed.shape[-1]))
    clips[mask] = packed
    return clips


def masked_mean(clips: Tensor, mask: Tensor) -> Tensor:
    """The mean of the real clips, (N, D)."""
    weights = mask.to(clips.dtype).unsqueeze(-1)
    return (_zero_padded(clips, mask) * weights).sum(dim=1) / weights.sum(dim=1)


class MaskedAttentionPool(nn.Module):
    """Attention pooling with one scalar weight per clip: softmax over the real clips of MLP(clip).

    forward(clips (N, K, D), mask (N, K)) -> (video (N, D), weights (N, K)); the weights sum to 1 over
    the real clips and are exactly 0 on padded ones.
    """

    def __init__(self, dim: int, hidden: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        self.score = nn.Sequential(
            nn.Linear(dim, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, 1)
        )

    def forward(self, clips: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mask = _check_mask(clips, mask)
        clips = _zero_padded(clips, mask)
        logits = self.score(clips).squeeze(-1).float().masked_fill(~mask, float("-inf"))
        weights = logits.softmax(dim=1)
        video = torch.einsum("nk,nkd->nd", weights.to(clips.dtype), clips)
        return video, weights


class LongHeadOutput(NamedTuple):
    score: Tensor
    """(N,) the prediction (for `gdlt` the weight-averaged grade in [0, 1])."""
    clip_weights: Tensor
    """(N, K) per-clip weights, summing to 1 over the real clips, 0 on padded ones."""
    embed: Tensor | None
    """(N, Q, width) the grade queries' outputs (`gdlt` only; input of the triplet term)."""
    pooled: Tensor
    """(N, pooled_dim) the video's representation before the score (contrastive regression compares two)."""


class AttnHead(nn.Module):
    """Raw clip features -> per-clip MLP (D -> hidden -> width, ReLU) -> masked attention pooling
    (optionally concatenated with the masked mean of the clips: `mean_path`) -> Linear -> score."""

    def __init__(
        self,
        feature_dim: int,
        hidden: int = 256,
        width: int = 128,
        attn_hidden: int = 64,
        dropout: float = 0.0,
        mean_path: bool = False,
    ) -> None:
        super().__init__()
        self.clip_layers = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(feature_dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, width),
            nn.ReLU(),
        )
        self.pool = MaskedAttentionPool(width, attn_hidden, dropout)
        self.mean_path = mean_path
        self.pooled_dim = width * (2 if mean_path else 1)
        self.regressor = nn.Linear(self.pooled_dim, 1)

    def forward(self, features: Tensor, mask: Tensor | None = None) -> LongHeadOutput:
        """features (N, K, D), mask (N, K)."""
        mask = _check_mask(features, mask)
        clips = per_real_clip(self.clip_layers, features, mask)
        video, weights = self.pool(clips, mask)
        if self.mean_path:
            video = torch.cat([video, masked_mean(clips, mask)], dim=-1)
        return LongHeadOutput(self.regressor(video).squeeze(-1).float(), weights, None, video)


def _attention(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, heads: int, weight_dropout: nn.Module | None = None
) -> tuple[Tensor, Tensor]:
    """Multi-head scaled dot-product attention. q (N, Lq, E), k/v (N, Lk, E), key_mask (N, Lk) True=real.
    Returns (out (N, Lq, E), weights (N, heads, Lq, Lk)), weights exactly 0 on padded keys. With
    `weight_dropout` the values are mixed by dropped-out weights (as nn.MultiheadAttention's dropout); the
    weights returned are the undropped ones, so the clip weights we report stay a distribution."""
    n, lq, e = q.shape
    lk = k.shape[1]
    d = e // heads
    q = q.view(n, lq, heads, d).transpose(1, 2)
    k = k.view(n, lk, heads, d).transpose(1, 2)
    v = v.view(n, lk, heads, d).transpose(1, 2)
    logits = (q @ k.transpose(-1, -2)).float() / math.sqrt(d)
    logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    weights = logits.softmax(dim=-1)
    mixing = weights if weight_dropout is None else weight_dropout(weights)
    out = (mixing.to(v.dtype) @ v).transpose(1, 2).reshape(n, lq, e)
    return out, weights


class _MHA(nn.Module):
    """Multi-head attention with dropout on its output and, with `attention_dropout`, on its weights too."""

    def __init__(self, width: int, heads: int, dropout: float, attention_dropout: bool = False) -> None:
        super().__init__()
        if width % heads:
            raise AqaError(f"model width {width} is not a multiple of the number of heads {heads}")
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.dropout = nn.Dropout(dropout)
        self.weight_dropout = nn.Dropout(dropout) if attention_dropout else None

    def projections(self) -> tuple[nn.Linear, ...]:
        return self.q, self.k, self.v, self.o

    def forward(self, query: Tensor, memory: Tensor, key_mask: Tensor) -> tuple[Tensor, Tensor]:
        out, weights = _attention(
            self.q(query), self.k(memory), self.v(memory), key_mask, self.heads, self.weight_dropout
        )
        return self.dropout(self.o(out)), weights


def _transformer_init(layer: nn.Module) -> None:
    """nn.Transformer's initialisation of a layer: every weight matrix Xavier-uniform, the query, key and
    value projections drawn as nn.MultiheadAttention's one fused (3 * width, width) matrix (a bound sqrt(2)
    smaller than three separate squares), the attention's biases zero as nn.MultiheadAttention starts them,
    the feed-forward biases nn.Linear's default."""
    attentions = [module for module in layer.modules() if isinstance(module, _MHA)]
    projections = {id(linear) for attention in attentions for linear in attention.projections()}
    for module in layer.modules():
        if isinstance(module, nn.Linear) and id(module) not in projections:
            nn.init.xavier_uniform_(module.weight)
    for attention in attentions:
        fused = torch.empty(3 * attention.q.out_features, attention.q.in_features)
        nn.init.xavier_uniform_(fused)
        nn.init.xavier_uniform_(attention.o.weight)
        with torch.no_grad():
            for linear, part in zip((attention.q, attention.k, attention.v), fused.chunk(3), strict=True):
                linear.weight.copy_(part)
            for linear in attention.projections():
                linear.bias.zero_()


class _EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer (as nn.TransformerEncoderLayer's default), masked keys."""

    def __init__(self, width: int, heads: int, ff: int, dropout: float, attention_dropout: bool) -> None:
        super().__init__()
        self.attn = _MHA(width, heads, dropout, attention_dropout)
        self.ff = nn.Sequential(nn.Linear(width, ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff, width))
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = self.norm1(x + self.attn(x, x, mask)[0])
        return self.norm2(x + self.dropout(self.ff(x)))


class _DecoderLayer(nn.Module):
    """Post-norm transformer decoder layer: query self-attention, cross-attention to the clips, FFN."""

    def __init__(self, width: int, heads: int, ff: int, dropout: float, attention_dropout: bool) -> None:
        super().__init__()
        self.self_attn = _MHA(width, heads, dropout, attention_dropout)
        self.cross_attn = _MHA(width, heads, dropout, attention_dropout)
        self.ff = nn.Sequential(nn.Linear(width, ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff, width))
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, q: Tensor, memory: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        all_queries = torch.ones(q.shape[:2], dtype=torch.bool, device=q.device)
        q = self.norm1(q + self.self_attn(q, q, all_queries)[0])
        attended, weights = self.cross_attn(q, memory, mask)
        q = self.norm2(q + attended)
        return self.norm3(q + self.dropout(self.ff(q))), weights


class GDLTHead(nn.Module):
    """Grade-decoupled Likert scoring on raw clip features (N, K, D) with a padding mask (N, K).

    Projection D -> proj_hidden -> width (ReLU between, no dropout) with `projection_norm` "layer" (one
    LayerNorm at the end) or "batch" (BatchNorm after both layers, GDLT's code; its statistics come from the
    real clips only), `encoder_layers` transformer encoder layers over the clips, `decoder_layers` decoder
    layers for `queries` learnable grade queries (initialised N(0, query_std^2)), with `final_norm` a
    LayerNorm after the encoder and after the decoder, a per-query logit from each query's output, the query
    weights (`weighting`: "sigmoid" = GDLT's sigmoid(logit) / sum, "softmax" = softmax over the queries),
    and the score sum_q weight_q * grade_q with grade_q = linspace(0, 1, queries). `xavier`: nn.Transformer's
    initialisation (`_transformer_init`) and the query logits as nn.Linear(width, queries) starts them,
    instead of PyTorch's Linear default and N(0, 1 / width) logit weights with zero biases.
    `attention_dropout`: dropout on the attention weights as well as on the attention outputs
    (nn.MultiheadAttention's, which GDLT's code uses with its 0.7). Per-clip weights: the last decoder
    layer's cross-attention averaged over queries and heads. `training.config.GDLT_LAYOUTS` names two sets
    of these details: ours (the defaults) and GDLT's code's.
    """

    def __init__(
        self,
        feature_dim: int,
        width: int = 256,
        proj_hidden: int | None = 512,
        heads: int = 1,
        encoder_layers: int = 1,
        decoder_layers: int = 2,
        queries: int = 4,
        ff_mult: int = 3,
        dropout: float = 0.3,
        weighting: str = "sigmoid",
        projection_norm: str = "layer",
        query_std: float = 0.02,
        final_norm: bool = False,
        xavier: bool = False,
        attention_dropout: bool = False,
    ) -> None:
        super().__init__()
        if weighting not in ("sigmoid", "softmax"):
            raise AqaError(f"unknown query weighting {weighting!r}; choose sigmoid or softmax")
        if projection_norm not in ("layer", "batch"):
            raise AqaError(f"unknown projection norm {projection_norm!r}; choose layer or batch")
        if queries < 2:
            raise AqaError("gdlt needs at least 2 grade queries")
        layers: list[nn.Module] = []
        if proj_hidden:
            layers.append(nn.Linear(feature_dim, proj_hidden))
            if projection_norm == "batch":
                layers.append(nn.BatchNorm1d(proj_hidden))
            layers.append(nn.ReLU())  # no dropout here, as GDLT's code
        layers.append(nn.Linear(proj_hidden or feature_dim, width))
        layers.append(nn.BatchNorm1d(width) if projection_norm == "batch" else nn.LayerNorm(width))
        self.clip_layers = nn.Sequential(*layers)
        self.encoder = nn.ModuleList(
            _EncoderLayer(width, heads, ff_mult * width, dropout, attention_dropout)
            for _ in range(encoder_layers)
        )
        self.decoder = nn.ModuleList(
            _DecoderLayer(width, heads, ff_mult * width, dropout, attention_dropout)
            for _ in range(decoder_layers)
        )
        self.encoder_norm = nn.LayerNorm(width) if final_norm else nn.Identity()
        self.decoder_norm = nn.LayerNorm(width) if final_norm else nn.Identity()
        if xavier:
            for module in (*self.encoder, *self.decoder):
                _transformer_init(module)
        # The queries are drawn between the two `xavier` steps so that a seed gives the weights it always gave.
        self.queries = nn.Parameter(torch.randn(queries, width) * query_std)
        if xavier:  # GDLT's code: nn.Linear(width, queries), one logit per query from its diagonal
            bound = 1 / math.sqrt(width)
            self.query_logit = nn.Parameter(torch.empty(queries, width).uniform_(-bound, bound))
            self.query_bias = nn.Parameter(torch.empty(queries).uniform_(-bound, bound))
        else:
            self.query_logit = nn.Parameter(torch.randn(queries, width) / math.sqrt(width))
            self.query_bias = nn.Parameter(torch.zeros(queries))
        self.weighting = weighting
        self.pooled_dim = queries * width
        self.register_buffer("grades", torch.linspace(0.0, 1.0, queries), persistent=False)

    def forward(self, features: Tensor, mask: Tensor | None = None) -> LongHeadOutput:
        """As AttnHead.forward."""
        mask = _check_mask(features, mask)
        x = per_real_clip(self.clip_layers, features, mask)
        for layer in self.encoder:
            x = layer(x, mask)
        x = self.encoder_norm(x)
        q = self.queries.unsqueeze(0).expand(x.shape[0], -1, -1).to(x.dtype)
        weights = None
        for layer in self.decoder:
            q, weights = layer(q, x, mask)
        q = self.decoder_norm(q)
        logits = (q.float() * self.query_logit).sum(-1) + self.query_bias  # one logit per query, own weights
        if self.weighting == "sigmoid":
            grade_weights = torch.sigmoid(logits)
            grade_weights = grade_weights / grade_weights.sum(dim=1, keepdim=True)
        else:
            grade_weights = logits.softmax(dim=1)
        score = (grade_weights * self.grades).sum(dim=1)
        if weights is None:  # no decoder layer: uniform over the real clips
            clip_weights = mask.float() / mask.float().sum(dim=1, keepdim=True)
        else:
            clip_weights = weights.mean(dim=(1, 2))
        return LongHeadOutput(score, clip_weights, q, q.flatten(1))


def gdlt_triplet_loss(embed: Tensor, margin: float = 1.0) -> Tensor:
    """Triplet term on the grade queries' outputs (N, Q, E): query i of a video (anchor) should be nearer
    to query i of another video of the batch (positive: the batch rolled by one) than to any other query
    j != i of the same video (negative), by `margin`, on L2-normalized outputs. 0 for a batch of one."""
    n, q, _ = embed.shape
    if n < 2:
        return embed.sum() * 0.0
    e = F.normalize(embed.float(), dim=-1)
    positive = (e - e.roll(1, dims=0)).norm(dim=-1)  # (N, Q)
    pairwise = torch.cdist(e, e)  # (N, Q, Q)
    off_diagonal = ~torch.eye(q, dtype=torch.bool, device=e.device)
    losses = F.relu(margin + positive.unsqueeze(-1) - pairwise).masked_select(off_diagonal.expand(n, q, q))
    return losses.mean()


def gdlt_hardest_triplet_loss(embed: Tensor, margin: float = 1.0) -> Tensor:
    """The triplet term of GDLT's released code: over all query outputs (N, Q, E) of the batch, each one's
    hardest positive (the farthest output of the same query in another video) and hardest negative (the
    nearest output of another query, in any video), in cosine distance; mean of relu(pos - neg + margin)."""
    n, q, e = embed.shape
    flat = F.normalize(embed.float().reshape(n * q, e), dim=-1)
    distance = 1 - flat @ flat.T
    query = torch.arange(q, device=embed.device).repeat(n)
    same = query[:, None] == query[None, :]
    positive = (distance * (same & ~torch.eye(n * q, dtype=torch.bool, device=embed.device))).amax(dim=1)
    negative = distance.masked_fill(same, float("inf")).amin(dim=1)
    return F.relu(positive - negative + margin).mean()


def build_long_head(kind: str, feature_dim: int, **options: object) -> AttnHead | GDLTHead:
    """`attn` or `gdlt`, with the options of AttnHead / GDLTHead."""
    if kind == "attn":
        return AttnHead(feature_dim, **options)  # type: ignore[arg-type]
    if kind == "gdlt":
        return GDLTHead(feature_dim, **options)  # type: ignore[arg-type]
    raise AqaError(f"unknown long head {kind!r}; choose one of {', '.join(LONG_HEADS)}")
