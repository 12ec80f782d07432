"""Video ResNet backbones, public pretrained weights, and the AQA model with the Weight-Decider."""

from aqa_cli.models.aqa import (
    AGGREGATIONS,
    AQAHead,
    AQAModel,
    AQAOutput,
    AverageAggregation,
    ModelConfig,
    WeightDecider,
    build_head,
    build_model,
)
from aqa_cli.models.backbones import CONV_TYPES, DEFAULT_FAMILY, FAMILIES, VideoResNetFeatures, build_backbone
from aqa_cli.models.weights import (
    LAYOUTS,
    NORMALIZATIONS,
    Normalization,
    PretrainedWeights,
    feature_dim,
    inspect_weights,
    read_weights,
)

__all__ = [
    "AGGREGATIONS",
    "AQAHead",
    "AQAModel",
    "AQAOutput",
    "AverageAggregation",
    "CONV_TYPES",
    "DEFAULT_FAMILY",
    "FAMILIES",
    "LAYOUTS",
    "NORMALIZATIONS",
    "ModelConfig",
    "Normalization",
    "PretrainedWeights",
    "VideoResNetFeatures",
    "WeightDecider",
    "build_backbone",
    "build_head",
    "build_model",
    "feature_dim",
    "inspect_weights",
    "read_weights",
]
