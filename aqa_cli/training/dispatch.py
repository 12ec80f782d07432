"""The one entry to training: end to end from a video store, or the heads alone on a feature store."""

from __future__ import annotations

from aqa_cli.training.config import TrainConfig
from aqa_cli.training.end_to_end import train_end_to_end
from aqa_cli.training.ensemble import train_ensemble
from aqa_cli.training.heads import train_heads
from aqa_cli.training.loop import TrainingProgress, TrainResult
from aqa_cli.util.errors import AqaError


def train(config: TrainConfig, resume: bool = False, progress: TrainingProgress | None = None) -> TrainResult:
    """Train as the config says (`config.features`: only the heads, on that feature store); with `resume`,
    continue the run in `config.out` from its last epoch; `config.ensemble`: N heads as one checkpoint."""
    if (config.contrastive or config.ensemble) and not config.features:
        raise AqaError("--contrastive and --ensemble train heads on cached features: add --features")
    if config.ridge_blend and not config.ensemble:
        raise AqaError(
            "--ridge-blend blends ridge regression into an ensemble's score: add --ensemble N (N >= 2)"
        )
    if config.aux_target and not config.ensemble:
        raise AqaError(
            "--aux-target averages an ensemble on another score into an ensemble's score: add --ensemble N (N >= 2)"
        )
    if config.ensemble:
        return train_ensemble(config, resume, progress)
    if config.features:
        return train_heads(config, resume, progress)
    return train_end_to_end(config, resume, progress)
