"""Backbone architectures against the published figures, built on the meta device (no memory, no time)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torchvision.models.video import r2plus1d_18, r3d_18

from aqa_cli.models.architectures import LAYOUTS, VideoResNetFeatures
from aqa_cli.models.backbones import build_backbone
from aqa_cli.models.normalization import NORMALIZATIONS, Normalization
from aqa_cli.util.errors import AqaError


def on_meta(depth: int, conv: str, **options) -> VideoResNetFeatures:
    with torch.device("meta"):
        return build_backbone(depth, conv, **options)


def parameter_count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@pytest.mark.parametrize(
    ("family", "depth", "conv", "classes", "published"),
    [
        ("hara", 34, "3d", 700, 63_872_636),
        ("hara", 50, "3d", 700, 47_633_276),
        ("hara", 101, "3d", 700, 86_679_420),
        ("hara", 34, "2plus1d", 700, 63_901_400),
        ("hara", 50, "2plus1d", 700, 47_650_082),
        ("ig65m", 34, "2plus1d", 400, 63_697_175),
        ("torchvision", 18, "2plus1d", 400, 31_505_325),
        ("torchvision", 18, "3d", 400, 33_371_472),
    ],
)
def test_parameter_counts_match_the_published_models(
    family: str, depth: int, conv: str, classes: int, published: int
) -> None:
    backbone = on_meta(depth, conv, family=family)
    classifier = backbone.feature_dim * classes + classes
    assert parameter_count(backbone) + classifier == published


@pytest.mark.parametrize(("upstream", "conv"), [(r3d_18, "3d"), (r2plus1d_18, "2plus1d")])
def test_torchvision_family_has_torchvision_keys_and_shapes(upstream, conv: str) -> None:
    with torch.device("meta"):
        reference = {key: t.shape for key, t in upstream().state_dict().items() if not key.startswith("fc.")}
    ours = {key: t.shape for key, t in on_meta(18, conv, family="torchvision").state_dict().items()}
    assert ours == reference


def conv2plus1d_mids(backbone: nn.Module, stage: str) -> list[int]:
    """Mid widths of the (2+1)D convs of a stage, in order."""
    return [
        m[0].out_channels
        for name, m in getattr(backbone, stage).named_modules()
        if name.endswith(("conv1.0", "conv2.0"))
    ]


def test_ig65m_architecture() -> None:
    backbone = on_meta(34, "2plus1d", family="ig65m")
    assert [conv2plus1d_mids(backbone, stage)[:2] for stage in ("layer1", "layer2", "layer3", "layer4")] == [
        [144, 144],
        [230, 288],
        [460, 576],
        [921, 1152],
    ]
    norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm3d)]
    assert {(m.eps, m.momentum) for m in norms} == {(1e-3, 0.9)}
    assert not any(isinstance(m, nn.MaxPool3d) for m in backbone.modules())
    assert backbone.stem[0].out_channels == 45


def test_torchvision_r2plus1d_keeps_the_stock_mid_rule() -> None:
    # torchvision's BasicBlock reuses conv1's mid for conv2: 230, where own (128, 128) planes would give 288
    assert conv2plus1d_mids(on_meta(18, "2plus1d", family="torchvision"), "layer2") == [230, 230, 288, 288]


def test_hara_stems() -> None:
    r3d = on_meta(34, "3d")
    assert r3d.family == "hara"
    assert (r3d.stem[0].kernel_size, r3d.stem[0].stride) == ((7, 7, 7), (1, 2, 2))
    assert isinstance(r3d.stem[-1], nn.MaxPool3d)
    r2p1d = on_meta(34, "2plus1d")
    assert [r2p1d.stem[i].weight.shape for i in (0, 3)] == [(110, 3, 1, 7, 7), (64, 110, 7, 1, 1)]
    assert [type(r2p1d.stem[i]) for i in (2, 5, 6)] == [nn.ReLU, nn.ReLU, nn.MaxPool3d]


@pytest.mark.parametrize("depth", list(LAYOUTS))
@pytest.mark.parametrize("conv", ["3d", "2plus1d"])
def test_every_hara_depth_builds(depth: int, conv: str) -> None:
    backbone = on_meta(depth, conv)
    assert [len(getattr(backbone, f"layer{i}")) for i in range(1, 5)] == list(LAYOUTS[depth].blocks)
    assert backbone.feature_dim == (2048 if depth >= 50 else 512)
    assert not hasattr(backbone, "fc")


@pytest.mark.parametrize(
    ("depth", "conv", "family"), [(10, "3d", "hara"), (10, "2plus1d", "hara"), (50, "3d", "hara")]
)
def test_forward_gives_pooled_features(depth: int, conv: str, family: str) -> None:
    backbone = build_backbone(depth, conv, family=family).eval()
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, 8, 32, 32))
    assert features.shape == (2, backbone.feature_dim)
    assert (features >= 0).all()  # the pooled output of a ReLU


def test_grad_checkpoint_gives_the_same_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    plain = build_backbone(10, "2plus1d")
    checkpointed = build_backbone(10, "2plus1d", grad_checkpoint=True)
    checkpointed.load_state_dict(plain.state_dict())
    clip = torch.randn(2, 3, 4, 16, 16)
    results = []
    for backbone in (plain, checkpointed):
        output = backbone.train()(clip)
        output.square().sum().backward()
        norm = backbone.layer1[0].conv1[0][1]  # its running statistics: updated once per step, not twice
        results.append(
            (output, backbone.layer1[0].conv1[0][0].weight.grad, norm.running_mean, norm.num_batches_tracked)
        )
    torch.testing.assert_close(results[0], results[1])


@pytest.mark.parametrize(
    ("depth", "conv", "family", "fragment"),
    [
        (42, "3d", None, "no ResNet of depth 42"),
        (34, "2d", None, "unknown convolution type '2d'"),
        (34, "3d", "timm", "unknown backbone family 'timm'"),
        (34, "3d", "ig65m", "family ig65m has no 3d variant"),
    ],
)
def test_invalid_requests_fail_clearly(depth: int, conv: str, family: str | None, fragment: str) -> None:
    with pytest.raises(AqaError, match=fragment):
        on_meta(depth, conv, family=family)


def test_normalization_travels_with_the_backbone() -> None:
    assert on_meta(18, "3d").normalization == NORMALIZATIONS["hara"]
    assert on_meta(34, "2plus1d", family="ig65m").normalization.name == "kinetics400"
    assert on_meta(18, "3d", family="torchvision").normalization.mean == (0.43216, 0.394666, 0.37645)
    assert on_meta(18, "3d", normalization="imagenet").normalization.std == (0.229, 0.224, 0.225)
    with pytest.raises(AqaError, match="unknown normalization 'kinetics'"):
        on_meta(18, "3d", normalization="kinetics")


def test_normalization_round_trips_and_applies() -> None:
    norm = NORMALIZATIONS["imagenet"]
    assert Normalization.from_dict(json.loads(json.dumps(norm.to_dict()))) == norm
    frames = torch.randint(0, 256, (2, 3, 4, 5, 5), dtype=torch.uint8)
    normalized = norm.apply(frames)
    torch.testing.assert_close(normalized, norm.apply(frames.float() / 255))
    torch.testing.assert_close(normalized[:, 1] * 0.224 + 0.456, frames[:, 1].float() / 255)
