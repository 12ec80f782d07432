"""Presets: named whole recipes (head, head options, training) for `aqa train --preset` and `aqa experiment
--preset`. A preset is data: the aggregation it is made for, and settings that fill whatever the user did not
give (flags and --config files always win). A setting may depend on the target (`per_target`, with "*" for
any other target), so one preset serves every score column of a store.

`gdlt-fisv` is GDLT's recipe for Fis-V (Xu et al., CVPR 2022; its released code, xuangch/CVPR22_GDLT):
features projected 1024 -> 512 -> 256, 1 encoder and 2 decoder layers, 4 grade queries, dropout 0.7; labels
divided by a fixed maximum (TES 45, PCS 40); training on random 124-clip runs, evaluation on the whole
video; SGD lr 0.01, momentum 0.9, weight decay 1e-4, batch 32, cosine decay to 1e-4; 320 epochs for TES, 400
for PCS; MSE plus 0.5 x the hardest-mining triplet term on the query outputs (margin 1, cosine distance, as
the code computes it); the code's layout of the head (`--gdlt-layout code`: raw features, BatchNorm after
both projection layers, with statistics of the real clips only, N(0, 1) grade queries, final encoder and
decoder LayerNorms, the transformer and the score logits started as nn.Transformer and nn.Linear start them,
dropout on the attention weights). The one difference from the code: the cosine schedule per step instead of
per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ANY_TARGET = "*"


@dataclass(frozen=True)
class Preset:
    agg: str
    description: str
    settings: dict = field(default_factory=dict)
    """TrainConfig settings (head-default ones: they fill only what the user left unset)."""
    per_target: dict = field(default_factory=dict)
    """setting -> {target: value, "*": the value for any other target}."""
    run: dict = field(default_factory=dict)
    """Settings of the whole run, the same for every target (contrastive, exemplars, ensemble): filled in
    when the config is read, unless given."""

    def fixed(self) -> dict:
        """What the preset sets before the target is known: its head and run settings."""
        return {"agg": self.agg, **self.run}

    def values(self, target: str) -> dict:
        """The preset's settings for one target."""
        chosen = {name: table.get(target, table[ANY_TARGET]) for name, table in self.per_target.items()}
        return {**self.settings, **chosen}


PRESETS = {
    "gdlt-fisv": Preset(
        agg="gdlt",
        description="GDLT's Fis-V recipe: width 256, 1+2 layers, 4 queries, dropout 0.7, SGD 0.01 cosine to "
        "1e-4, batch 32, 124-clip crops, labels / 45 (TES) or / 40 (PCS), triplet 0.5, 320/400 epochs",
        settings={
            "width": 256,
            "proj_hidden": 512,
            "encoder_layers": 1,
            "decoder_layers": 2,
            "queries": 4,
            "gdlt_layout": "code",
            "dropout": 0.7,
            "optimizer": "sgd",
            "lr": 0.01,
            "weight_decay": 1e-4,
            "schedule": "cosine",
            "min_lr": 1e-4,
            "warmup": 0,
            "batch_size": 32,
            "clip_crop": 124,
            "loss": "mse",
            "triplet": 0.5,
            "triplet_margin": 1.0,
            "triplet_mining": "hardest",
        },
        per_target={
            "epochs": {"TES": 320, "PCS": 400, ANY_TARGET: 320},
            "label_scale": {"TES": 45.0, "PCS": 40.0, ANY_TARGET: 0.0},
        },
    ),
    "attn-ensemble": Preset(
        agg="attn",
        description="three attn heads (issue 12's cross-validated defaults) averaged as one checkpoint",
        run={"ensemble": 3},
    ),
    "attn-ridge-ensemble": Preset(
        agg="attn",
        description="three attn heads (issue 12's cross-validated defaults) averaged, then averaged with ridge "
        "regression on the clip features' mean and maximum (--ridge-blend 0.5 --ridge-pool mean-max), as one "
        "checkpoint",
        run={"ensemble": 3, "ridge_blend": 0.5, "ridge_pool": "mean-max"},
    ),
    "attn-ridge-aux-ensemble": Preset(
        agg="attn",
        description="attn-ridge-ensemble; for TES, the same ensemble trained on PCS averaged in, mapped onto TES "
        "by the line through the training labels (--aux-target PCS --aux-weight 0.5; Fis-V's TES only)",
        per_target={"aux_target": {"TES": "PCS", ANY_TARGET: ""}},
        run={"ensemble": 3, "ridge_blend": 0.5, "ridge_pool": "mean-max"},
    ),
    "attn-contrastive-ensemble": Preset(
        agg="attn",
        description="three attn heads (issue 12's cross-validated defaults) as contrastive regression against 10 "
        "training exemplars, averaged as one checkpoint",
        run={"contrastive": True, "exemplars": 10, "ensemble": 3},
    ),
}
"""Every preset by name (`aqa train --help` lists them)."""
