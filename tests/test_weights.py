"""Public checkpoint files: every container loads strictly and gives the upstream model's features.

The references are the upstream models themselves: torchvision's r3d_18 / r2plus1d_18, the IG-65M port
(torchvision blocks patched as moabitcoin/ig65m-pytorch does), and below a small faithful rewrite of
Hara et al.'s models/resnet.py and models/resnet2p1d.py with their own key names.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torchvision.models.video import r2plus1d_18, r3d_18
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet
from typer.testing import CliRunner

from aqa_cli.cli.commands import app
from aqa_cli.models.architectures import VideoResNetFeatures
from aqa_cli.models.backbones import build_backbone
from aqa_cli.models.normalization import NORMALIZATIONS
from aqa_cli.models.pretrained import inspect_weights, read_weights
from aqa_cli.util.errors import AqaError

CLIP = (1, 3, 8, 32, 32)


# --- Hara et al. reference (kenshohara/3D-ResNets-PyTorch), with the upstream attribute names ---------


def conv(in_planes: int, out_planes: int, kernel, stride=1, padding=0) -> nn.Conv3d:
    return nn.Conv3d(in_planes, out_planes, kernel, stride=stride, padding=padding, bias=False)


def hara_mid(in_planes: int, planes: int) -> int:
    return (in_planes * planes * 3 * 3 * 3) // (in_planes * 3 * 3 + 3 * planes)


class HaraBlock(nn.Module):
    """What all four upstream blocks share: a shortcut (type B when the shape changes), added before ReLU."""

    def __init__(self, downsample: nn.Module | None) -> None:
        super().__init__()
        self.relu, self.downsample = nn.ReLU(inplace=True), downsample

    def add_shortcut(self, out: Tensor, x: Tensor) -> Tensor:
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class HaraBasicBlock3D(HaraBlock):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__(downsample)
        self.conv1, self.bn1 = conv(in_planes, planes, 3, stride, 1), nn.BatchNorm3d(planes)
        self.conv2, self.bn2 = conv(planes, planes, 3, 1, 1), nn.BatchNorm3d(planes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.add_shortcut(out, x)


class HaraBottleneck3D(HaraBlock):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__(downsample)
        self.conv1, self.bn1 = conv(in_planes, planes, 1), nn.BatchNorm3d(planes)
        self.conv2, self.bn2 = conv(planes, planes, 3, stride, 1), nn.BatchNorm3d(planes)
        self.conv3, self.bn3 = conv(planes, planes * 4, 1), nn.BatchNorm3d(planes * 4)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.add_shortcut(out, x)


def conv1x3x3(in_planes: int, mid: int, stride: int = 1) -> nn.Conv3d:
    return conv(in_planes, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1))


def conv3x1x1(mid: int, planes: int, stride: int = 1) -> nn.Conv3d:
    return conv(mid, planes, (3, 1, 1), (stride, 1, 1), (1, 0, 0))


class HaraBasicBlock2p1D(HaraBlock):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__(downsample)
        mid1, mid2 = hara_mid(in_planes, planes), hara_mid(planes, planes)
        self.conv1_s, self.bn1_s = conv1x3x3(in_planes, mid1, stride), nn.BatchNorm3d(mid1)
        self.conv1_t, self.bn1_t = conv3x1x1(mid1, planes, stride), nn.BatchNorm3d(planes)
        self.conv2_s, self.bn2_s = conv1x3x3(planes, mid2), nn.BatchNorm3d(mid2)
        self.conv2_t, self.bn2_t = conv3x1x1(mid2, planes), nn.BatchNorm3d(planes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1_s(self.conv1_s(x)))
        out = self.relu(self.bn1_t(self.conv1_t(out)))
        out = self.relu(self.bn2_s(self.conv2_s(out)))
        out = self.bn2_t(self.conv2_t(out))
        return self.add_shortcut(out, x)


class HaraBottleneck2p1D(HaraBlock):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__(downsample)
        mid = hara_mid(planes, planes)
        self.conv1, self.bn1 = conv(in_planes, planes, 1), nn.BatchNorm3d(planes)
        self.conv2_s, self.bn2_s = conv1x3x3(planes, mid, stride), nn.BatchNorm3d(mid)
        self.conv2_t, self.bn2_t = conv3x1x1(mid, planes, stride), nn.BatchNorm3d(planes)
        self.conv3, self.bn3 = conv(planes, planes * 4, 1), nn.BatchNorm3d(planes * 4)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2_s(self.conv2_s(out)))
        out = self.relu(self.bn2_t(self.conv2_t(out)))
        out = self.bn3(self.conv3(out))
        return self.add_shortcut(out, x)


HARA_LAYERS = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3]}


class HaraResNet(nn.Module):
    """Hara's ResNet (conv1_t_size 7, conv1_t_stride 1, max-pool, shortcut B) as the 200ep files use it."""

    def __init__(self, depth: int, conv_type: str, n_classes: int = 700):
        super().__init__()
        bottleneck = depth >= 50
        if conv_type == "3d":
            block = HaraBottleneck3D if bottleneck else HaraBasicBlock3D
            self.conv1 = conv(3, 64, (7, 7, 7), (1, 2, 2), (3, 3, 3))
            self.bn1 = nn.BatchNorm3d(64)
        else:
            block = HaraBottleneck2p1D if bottleneck else HaraBasicBlock2p1D
            stem_mid = (3 * 64 * 7 * 7 * 7) // (3 * 7 * 7 + 7 * 64)
            self.conv1_s, self.bn1_s = (
                conv(3, stem_mid, (1, 7, 7), (1, 2, 2), (0, 3, 3)),
                nn.BatchNorm3d(stem_mid),
            )
            self.conv1_t, self.bn1_t = conv(stem_mid, 64, (7, 1, 1), (1, 1, 1), (3, 0, 0)), nn.BatchNorm3d(64)
        self.two_plus_one = conv_type == "2plus1d"
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self.in_planes = 64
        for index, (planes, blocks) in enumerate(zip([64, 128, 256, 512], HARA_LAYERS[depth], strict=True)):
            setattr(
                self, f"layer{index + 1}", self._make_layer(block, planes, blocks, 1 if index == 0 else 2)
            )
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = nn.Linear(512 * block.expansion, n_classes)

    def _make_layer(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_planes != planes * block.expansion:
            downsample = nn.Sequential(
                conv(self.in_planes, planes * block.expansion, 1, stride),
                nn.BatchNorm3d(planes * block.expansion),
            )
        layers = [block(self.in_planes, planes, stride, downsample)]
        self.in_planes = planes * block.expansion
        layers += [block(self.in_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def features(self, x: Tensor) -> Tensor:
        if self.two_plus_one:
            x = self.relu(self.bn1_s(self.conv1_s(x)))
            x = self.relu(self.bn1_t(self.conv1_t(x)))
        else:
            x = self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).view(x.size(0), -1)


# --- references with the other families' upstream code ------------------------------------------------


def ig65m_r2plus1d_34(num_classes: int = 400) -> VideoResNet:
    """moabitcoin/ig65m-pytorch's r2plus1d_34: torchvision blocks with Caffe2 mids and BatchNorm."""
    model = VideoResNet(BasicBlock, [Conv2Plus1D] * 4, [3, 4, 6, 3], R2Plus1dStem)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    model.layer2[0].conv2[0] = Conv2Plus1D(128, 128, 288)
    model.layer3[0].conv2[0] = Conv2Plus1D(256, 256, 576)
    model.layer4[0].conv2[0] = Conv2Plus1D(512, 512, 1152)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.eps, module.momentum = 1e-3, 0.9
    return model


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm parameters and statistics too, so that any mix-up of tensors shows; eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm3d):
                size = module.num_features
                module.weight.copy_(0.5 + torch.rand(size, generator=generator))
                module.bias.copy_(0.1 * torch.randn(size, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(size, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(size, generator=generator))
                module.num_batches_tracked.fill_(1000)
            elif isinstance(module, nn.Linear):
                module.weight.normal_(0, 0.01, generator=generator)
    return model.eval()


def hara_container(state: dict[str, Tensor], depth: int) -> dict:
    return {
        "epoch": 200,
        "arch": f"resnet-{depth}",
        "state_dict": state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]},
        "scheduler": {"last_epoch": 200, "_step_count": 201},
    }


def with_module_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"module.{key}": tensor for key, tensor in state.items()}


def relative_error(ours: Tensor, reference: Tensor) -> float:
    return ((ours - reference).norm() / reference.norm()).item()


def check_features_match(
    path: Path, depth: int, conv_type: str, reference: Callable[[Tensor], Tensor]
) -> VideoResNetFeatures:
    backbone = build_backbone(depth, conv_type, weights=path).eval()
    clip = torch.randn(*CLIP, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, expected = backbone(clip), reference(clip)
    assert ours.shape == expected.shape == (1, backbone.feature_dim)
    assert relative_error(ours, expected) < 1e-5
    return backbone


@pytest.mark.parametrize(
    ("depth", "conv_type", "container"),
    [
        (18, "3d", "hara"),
        (18, "2plus1d", "hara"),
        (50, "3d", "hara"),
        (50, "2plus1d", "hara"),
        (10, "3d", "hara+module."),
        (10, "2plus1d", "legacy hara"),
        (10, "2plus1d", "plain"),
    ],
)
def test_hara_file_gives_upstream_features(
    tmp_path: Path, depth: int, conv_type: str, container: str
) -> None:
    reference = randomize(HaraResNet(depth, conv_type))
    state = reference.state_dict()
    path = tmp_path / f"r{conv_type}{depth}_K_200ep.pth"
    if container == "plain":
        torch.save(state, path)
    else:
        state = with_module_prefix(state) if "module." in container else state
        torch.save(
            hara_container(state, depth), path, _use_new_zipfile_serialization="legacy" not in container
        )

    check_features_match(path, depth, conv_type, reference.features)
    weights = read_weights(path)
    assert (weights.family, weights.depth, weights.conv, weights.classes) == ("hara", depth, conv_type, 700)
    assert weights.key_prefix == ("module." if "module." in container else "")
    assert weights.normalization == NORMALIZATIONS["hara"]


def test_ig65m_file_gives_upstream_features(tmp_path: Path) -> None:
    reference = randomize(ig65m_r2plus1d_34())
    path = tmp_path / "r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth"
    torch.save(with_module_prefix(reference.state_dict()), path)
    reference.fc = nn.Identity()

    backbone = check_features_match(path, 34, "2plus1d", reference)
    assert backbone.family == "ig65m" and backbone.normalization == NORMALIZATIONS["kinetics400"]
    assert {m.eps for m in backbone.modules() if isinstance(m, nn.BatchNorm3d)} == {1e-3}
    assert "ig65m 2plus1d ResNet-34, 400 classes" in backbone.weights_summary


@pytest.mark.parametrize(("upstream", "conv_type"), [(r3d_18, "3d"), (r2plus1d_18, "2plus1d")])
def test_torchvision_file_gives_upstream_features(tmp_path: Path, upstream, conv_type: str) -> None:
    reference = randomize(upstream())
    path = tmp_path / f"{upstream.__name__}.pth"
    torch.save(reference.state_dict(), path)
    reference.fc = nn.Identity()

    check_features_match(path, 18, conv_type, reference)
    assert read_weights(path).family == "torchvision"


@pytest.fixture(scope="module")
def hara_r3d10_state() -> dict[str, Tensor]:
    return HaraResNet(10, "3d").state_dict()


def save_hara(tmp_path: Path, state: dict[str, Tensor], name: str = "r3d10_K_200ep.pth") -> Path:
    path = tmp_path / name
    torch.save(hara_container(state, 10), path)
    return path


def raises_one_line(*fragments: str) -> Callable[..., None]:
    def check(call: Callable[..., object], *args, **kwargs) -> None:
        with pytest.raises(AqaError) as caught:
            call(*args, **kwargs)
        message = str(caught.value)
        assert "\n" not in message
        for fragment in fragments:
            assert fragment in message

    return check


@pytest.mark.parametrize(
    ("request_options", "fragments"),
    [
        ({"depth": 34, "conv": "3d"}, ["depth 34 requested, file has 10"]),
        ({"depth": 10, "conv": "2plus1d"}, ["conv 2plus1d requested, file has 3d"]),
        (
            {"depth": 10, "conv": "3d", "family": "torchvision"},
            ["family torchvision requested, file has hara"],
        ),
    ],
)
def test_file_not_matching_the_request_is_refused(
    tmp_path: Path, hara_r3d10_state: dict, request_options: dict, fragments: list[str]
) -> None:
    path = save_hara(tmp_path, hara_r3d10_state)
    raises_one_line(str(path), *fragments)(build_backbone, weights=path, **request_options)


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (
            lambda s: s.update({"layer2.0.conv1.weight": torch.zeros(128, 64, 3, 3, 1)}),
            ["wrong shapes", "layer2.0"],
        ),
        (lambda s: s.pop("layer3.0.bn2.running_var"), ["missing", "layer3.0.conv2.1.running_var"]),
        (lambda s: s.update({"layer1.0.extra.weight": torch.zeros(1)}), ["'layer1.0.extra.weight'"]),
        (lambda s: s.update({"fc.weight": torch.zeros(700, 2048)}), ["fc.weight"]),
        (lambda s: s.update({"layer4.1.conv1.weight": torch.zeros(512, 512, 3, 3, 3)}), ["[1, 1, 1, 2]"]),
        (
            lambda s: s.update({"conv1.weight": torch.zeros(64, 3, 3, 7, 7)}),
            ["Hara et al. key names", "(64, 3, 3, 7, 7)"],
        ),
    ],
    ids=["wrong-shape", "missing", "unknown-key", "classifier", "no-such-depth", "unpublished-hara-stem"],
)
def test_damaged_file_is_refused_before_loading(
    tmp_path: Path, hara_r3d10_state: dict, edit, fragments
) -> None:
    state = dict(hara_r3d10_state)
    edit(state)
    path = save_hara(tmp_path, state)
    raises_one_line(str(path), *fragments)(build_backbone, 10, "3d", weights=path)


def test_other_architectures_are_refused(tmp_path: Path) -> None:
    odd_stem = tmp_path / "odd.pth"
    torch.save({"stem.0.weight": torch.zeros(32, 3, 3, 7, 7)}, odd_stem)
    raises_one_line(str(odd_stem), "(32, 3, 3, 7, 7)")(read_weights, odd_stem)


class CreatesFileWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_payload_is_refused_without_running(tmp_path: Path, hara_r3d10_state: dict) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "r3d10_K_200ep.pth"
    torch.save({**hara_container(hara_r3d10_state, 10), "extra": CreatesFileWhenUnpickled(marker)}, path)

    raises_one_line(str(path), "refused", "io.open")(build_backbone, 10, "3d", weights=path)
    raises_one_line(str(path), "refused")(inspect_weights, path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is live: an unsafe load would have run it
    assert marker.exists()


def test_unreadable_files_are_refused(tmp_path: Path, hara_r3d10_state: dict) -> None:
    good = save_hara(tmp_path, hara_r3d10_state)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    for path in [truncated, text, empty]:
        raises_one_line(str(path), "not a readable PyTorch checkpoint")(read_weights, path)

    raises_one_line("no such file")(read_weights, tmp_path / "missing.pth")
    tensor_only = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_only)
    raises_one_line(str(tensor_only), "no state dict")(read_weights, tensor_only)


def test_inspect_reports_the_file(tmp_path: Path, hara_r3d10_state: dict) -> None:
    path = tmp_path / "r3d10_K_200ep.pth"
    torch.save(hara_container(with_module_prefix(hara_r3d10_state), 10), path)
    summary = inspect_weights(path)
    backbone = build_backbone(10, "3d", weights=path)
    classifier = 700 * 512 + 700
    assert summary == {
        "path": str(path),
        "family": "hara",
        "depth": 10,
        "conv": "3d",
        "classes": 700,
        "parameters": sum(p.numel() for p in backbone.parameters()) + classifier,
        "normalization": NORMALIZATIONS["hara"].to_dict(),
        "container": "{'state_dict': ...} (Hara et al.)",
        "key_prefix": "module.",
    }

    runner = CliRunner()
    as_json = runner.invoke(app, ["weights", "inspect", str(path), "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.output) == summary
    as_table = runner.invoke(app, ["weights", "inspect", str(path)])
    assert (
        as_table.exit_code == 0
        and "hara" in as_table.output
        and f"{summary['parameters']:,}" in as_table.output
    )
