"""The AQA model of the paper: clip layers, averaging and Weight-Decider, difficulty, clip batching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from aqa_cli.models.backbones import build_backbone
from aqa_cli.models.heads import AQAHead, AverageAggregation
from aqa_cli.models.model import AQAModel, ModelConfig, build_head, build_model
from aqa_cli.models.normalization import NORMALIZATIONS
from aqa_cli.util.errors import AqaError


class TinyBackbone(nn.Module):
    """A cheap stand-in that still mixes frames, channels and pixels, so misordered clips show."""

    feature_dim = 24

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, self.feature_dim, kernel_size=3, padding=1)

    def forward(self, clips: Tensor) -> Tensor:
        return self.conv(clips).relu().mean(dim=(2, 3, 4)) + clips[:, :, 0].mean(dim=(2, 3)).sum(
            1, keepdim=True
        )


def head(agg: str, feature_dim: int = 512, **options) -> AQAHead:
    torch.manual_seed(0)
    return AQAHead(feature_dim, agg, **options).eval()


def linear_shapes(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


@pytest.mark.parametrize(
    ("feature_dim", "widths"),
    [
        (512, [(512, 256), (256, 128)]),
        (2048, [(2048, 512), (512, 256), (256, 128)]),
        (40, [(40, 256), (256, 128)]),
    ],
)
def test_clip_layers_follow_the_paper(feature_dim: int, widths: list[tuple[int, int]]) -> None:
    aqa_head = AQAHead(feature_dim, "avg")
    assert linear_shapes(aqa_head.clip_layers) == widths
    assert [type(m) for m in aqa_head.clip_layers][1::2] == [nn.ReLU] * len(widths)
    assert linear_shapes(aqa_head.regressor) == [(128, 1)]


def test_weight_decider_architecture() -> None:
    decider = AQAHead(512, "wd", wd_dropout=0.25).aggregation
    assert linear_shapes(decider) == [(128, 64), (64, 32), (32, 64), (64, 128)]
    layers = list(decider.mlp)
    assert [type(m) for m in layers] == [nn.Linear, nn.ReLU, nn.Dropout] * 3 + [nn.Linear]
    assert {m.p for m in layers if isinstance(m, nn.Dropout)} == {0.25}


def test_wd_weights_are_positive_and_sum_to_one_over_clips_per_channel() -> None:
    weights = head("wd")(torch.randn(3, 6, 512)).clip_weights
    assert weights.shape == (3, 6, 128)
    assert (weights > 0).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3, 128))


@pytest.mark.parametrize("agg", ["avg", "wd"])
def test_masked_clips_have_no_influence(agg: str) -> None:
    aqa_head = head(agg)
    features = torch.randn(2, 5, 512)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    padded = features.clone()
    padded[1, 3:] = float("nan")  # whatever a padded slot holds must not matter
    output = aqa_head(padded, mask=mask)
    for sample, clips in [(0, 5), (1, 3)]:
        alone = aqa_head(features[sample : sample + 1, :clips])
        torch.testing.assert_close(output.quality[sample : sample + 1], alone.quality)
    if agg == "wd":
        assert (output.clip_weights[1, 3:] == 0).all()
        torch.testing.assert_close(output.clip_weights.sum(dim=1), torch.ones(2, 128))


def test_average_is_uniform_and_order_free() -> None:
    aqa_head = head("avg")
    features = torch.randn(2, 6, 512)
    output = aqa_head(features)
    assert output.clip_weights is None
    torch.testing.assert_close(
        output.quality, aqa_head.regressor(aqa_head.clip_layers(features).mean(1)).squeeze(-1)
    )
    torch.testing.assert_close(aqa_head(features[:, torch.randperm(6)]).quality, output.quality)


def test_weight_decider_weights_clips_unequally_and_follows_them_when_reordered() -> None:
    # The paper argues averaging loses clip order. The Weight-Decider as specified (eq. 1-3) does too:
    # each clip's weight comes from that clip's own features and the softmax runs across clips, so
    # reordering the clips reorders their weights identically and leaves the weighted sum unchanged.
    # What it adds is unequal, learned weights per clip and channel, where averaging uses 1/K for all.
    aqa_head = head("wd")
    features = torch.randn(2, 6, 512)
    output = aqa_head(features)
    assert output.clip_weights.std(dim=1).min() > 0
    assert not torch.allclose(output.clip_weights, torch.full_like(output.clip_weights, 1 / 6))
    order = torch.randperm(6)
    reordered = aqa_head(features[:, order])
    torch.testing.assert_close(reordered.clip_weights, output.clip_weights[:, order])
    torch.testing.assert_close(reordered.quality, output.quality)


def test_difficulty_scales_the_score() -> None:
    aqa_head = head("wd")
    features = torch.randn(3, 4, 512, requires_grad=True)
    difficulty = torch.tensor([3.2, float("nan"), 2.0])
    output = aqa_head(features, difficulty)
    torch.testing.assert_close(output.score, output.quality * torch.tensor([3.2, 1.0, 2.0]))
    output.score.sum().backward()
    assert torch.isfinite(features.grad).all()
    torch.testing.assert_close(aqa_head(features).score, output.quality)
    without = head("wd", use_difficulty=False)(features, difficulty)
    torch.testing.assert_close(without.score, without.quality)


def test_unknown_aggregation_fails_clearly() -> None:
    with pytest.raises(AqaError, match="unknown aggregation 'lstm'"):
        AQAHead(512, "lstm")


@pytest.mark.parametrize(("clip_len", "clips"), [(8, 12), (16, 6), (32, 3), (24, 4)])
def test_clips_go_through_the_backbone_as_one_batch_in_order(clip_len: int, clips: int) -> None:
    torch.manual_seed(0)
    backbone = TinyBackbone()
    model = AQAModel(backbone, AQAHead(backbone.feature_dim, "wd"), clip_len).eval()
    calls: list[tuple[int, ...]] = []
    backbone.register_forward_hook(lambda module, inputs, output: calls.append(tuple(inputs[0].shape)))
    video = torch.randn(2, 3, 96, 8, 8)

    with torch.no_grad():
        output = model(video)
        assert calls == [(2 * clips, 3, clip_len, 8, 8)]
        features = model.clip_features(video)
        for index in range(clips):
            clip = video[:, :, index * clip_len : (index + 1) * clip_len]
            torch.testing.assert_close(features[:, index], backbone(clip))
    assert output.score.shape == output.quality.shape == (2,)
    assert output.clip_weights.shape == (2, clips, 128)


def test_frames_not_divisible_by_the_clip_length_fail_clearly() -> None:
    model = AQAModel(TinyBackbone(), AQAHead(TinyBackbone.feature_dim, "avg"), 16)
    with pytest.raises(AqaError, match="--clip 16 does not divide --frames 90"):
        model.clip_features(torch.zeros(1, 3, 90, 8, 8))


def test_config_round_trips_and_rebuilds_the_same_model() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=10, conv="2plus1d", clip_len=8, agg="wd", wd_dropout=0.2)).eval()
    saved = json.loads(json.dumps(model.config.to_dict()))
    assert saved == {
        "depth": 10,
        "conv": "2plus1d",
        "family": "hara",
        "clip_len": 8,
        "agg": "wd",
        "wd_dropout": 0.2,
        "use_difficulty": True,
        "normalization": NORMALIZATIONS["hara"].to_dict(),
        "feature_dim": 512,
    }
    rebuilt = build_model(ModelConfig.from_dict(saved)).eval()
    rebuilt.load_state_dict(model.state_dict())
    video, difficulty = torch.randn(1, 3, 16, 32, 32), torch.tensor([2.5])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(video, difficulty).score, model(video, difficulty).score)
    assert rebuilt.backbone.normalization == NORMALIZATIONS["hara"]

    with pytest.raises(AqaError, match="unknown fields lr"):
        ModelConfig.from_dict({**saved, "lr": 1e-4})


def test_build_model_takes_family_and_normalization_from_the_weights(tmp_path: Path) -> None:
    path = tmp_path / "r3d_18.pth"
    torch.save(build_backbone(18, "3d", family="torchvision").state_dict(), path)
    model = build_model(ModelConfig(depth=18, conv="3d", agg="avg"), weights=path)
    assert model.config.family == "torchvision"
    assert model.config.normalization == NORMALIZATIONS["kinetics400"].to_dict()
    assert isinstance(model.head.aggregation, AverageAggregation)

    imagenet = ModelConfig(depth=18, conv="3d", normalization=NORMALIZATIONS["imagenet"].to_dict())
    assert build_model(imagenet, weights=path).backbone.normalization.name == "imagenet"
    with pytest.raises(AqaError, match="family hara requested, file has torchvision"):
        build_model(ModelConfig(depth=18, conv="3d", family="hara"), weights=path)


def test_head_alone_runs_on_cached_features() -> None:
    config = ModelConfig(depth=50, agg="wd", feature_dim=2048)
    output = build_head(config).eval()(torch.randn(2, 7, 2048), torch.tensor([1.0, 3.0]))
    assert output.score.shape == (2,) and output.clip_weights.shape == (2, 7, 128)
    assert build_head(ModelConfig(depth=34)).feature_dim == 512
