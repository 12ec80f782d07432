"""Rebuilding the trained model a checkpoint describes, with the window and preprocessing it was trained on,
so that `eval` and `score` need no flags: end-to-end models from their config and weights, heads trained
on extracted features with their frozen backbone rebuilt from the feature store's record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from aqa_cli.checkpoints.io import load_checkpoint
from aqa_cli.data.windows import WindowConfig
from aqa_cli.models.heads import AQAHead
from aqa_cli.models.model import AQAModel, ModelConfig, build_head, build_model
from aqa_cli.models.provenance import rebuild_backbone
from aqa_cli.util.errors import AqaError


@dataclass
class TrainedModel:
    """A model rebuilt from a checkpoint, with what it needs to see the same pixels as in training."""

    model: AQAModel
    window: WindowConfig
    store: dict  # the training store's preprocessing: frames, fit, width, height
    path: Path
    payload: dict


def load_trained_model(path: Path) -> TrainedModel:
    return trained_model_from(load_checkpoint(path), path)


def trained_model_from(payload: dict, path: Path) -> TrainedModel:
    """The model a loaded checkpoint describes; heads trained on extracted features get their frozen
    backbone back from the record the feature store kept."""
    if "features" in payload:
        return model_from_head_checkpoint(payload, path)
    config = ModelConfig.from_dict(payload["model_config"])
    model = build_model(config)
    load_state(model, payload["model"], path)
    return TrainedModel(model, WindowConfig(**payload["window"]), payload["store"], path, payload)


def load_state(module: torch.nn.Module, state: dict, path: Path) -> None:
    """Load a checkpoint's weights into the module it describes (strictly), and set evaluation mode."""
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise AqaError(
            f"{path}: the weights do not fit the model it describes ({str(exc).splitlines()[0]})"
        ) from None
    module.eval()


def load_head(payload: dict, path: Path) -> AQAHead:
    head = build_head(ModelConfig.from_dict(payload["model_config"]))
    load_state(head, payload["model"], path)
    return head


def model_from_head_checkpoint(payload: dict, path: Path) -> TrainedModel:
    """The full model for videos: the frozen backbone rebuilt from its record, then the trained heads."""
    if payload.get("backbone") is None:
        raise AqaError(
            f"{path} holds heads trained on imported features ({payload['features']['path']}), with no "
            f"backbone to turn videos into features; evaluate it with `aqa eval --checkpoint {path}`, or score "
            "clip features of a new video with `aqa score FEATURES.npy`"
        )
    config = ModelConfig.from_dict(payload["model_config"])
    model = AQAModel(
        rebuild_backbone(payload["backbone"], path), load_head(payload, path), config.clip_len, config
    )
    return TrainedModel(model.eval(), WindowConfig(**payload["window"]), payload["store"], path, payload)
