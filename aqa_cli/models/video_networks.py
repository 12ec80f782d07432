"""The recipes' networks as data, and published weights files read into them strictly.

Each `Network` builds the full classification model (so a published file, classifier included, loads
strictly) and names its classifier, which the feature network replaces by identity. A weights file is
read safely, its naming recognised (`LAYOUTS`: the Video Swin release, torchvision's state dicts,
hassony2's and piergiaj's I3D), renamed to the project's names, and loaded with every tensor used and
none missing. A file of another network is refused with a line naming what it holds.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aqa_cli.models.i3d import InceptionI3d, rename_hassony2
from aqa_cli.models.pretrained import MODULE_PREFIX, load_tensors_strictly, load_untrusted
from aqa_cli.util.errors import AqaError

SWIN_CONFIGS: dict[str, dict[str, Any]] = {
    "swin3d_t": {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24]},
    "swin3d_s": {"embed_dim": 96, "depths": [2, 2, 18, 2], "num_heads": [3, 6, 12, 24]},
    "swin3d_b": {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32]},
}
"""torchvision's Video Swin sizes (patch (2, 4, 4), window (8, 7, 7) for all three)."""


@dataclass(frozen=True)
class Network:
    name: str
    title: str  # what it is, in words ("Video Swin-B")
    build: Callable[[int, dict[str, Any]], nn.Module]  # (classes, overrides) -> the classification model
    classifier: str | None  # the attribute replaced by identity; None: the model gives features already


def _swin(name: str) -> Callable[[int, dict[str, Any]], nn.Module]:
    def build(classes: int, overrides: dict[str, Any]) -> nn.Module:
        from torchvision.models.video.swin_transformer import SwinTransformer3d

        config = {
            "patch_size": [2, 4, 4],
            "window_size": [8, 7, 7],
            "stochastic_depth_prob": 0.1,
            **SWIN_CONFIGS[name],
            **overrides,
        }
        return SwinTransformer3d(num_classes=classes, **config)

    return build


def _torchvision(name: str) -> Callable[[int, dict[str, Any]], nn.Module]:
    def build(classes: int, overrides: dict[str, Any]) -> nn.Module:
        from torchvision.models import get_model

        return get_model(name, weights=None, num_classes=classes, **overrides)

    return build


def _i3d(classes: int, overrides: dict[str, Any]) -> nn.Module:
    return InceptionI3d(num_classes=classes, **{"eps": 1e-5, **overrides})


class TinyVideoNet(nn.Module):
    """Two strided 3D convolutions and a mean over time and space: milliseconds per 32x32 clip."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(3, width // 2, kernel_size=3, stride=(1, 2, 2), padding=1),
            nn.ReLU(inplace=True),
            nn.Conv3d(width // 2, width, kernel_size=3, stride=(1, 2, 2), padding=1),
            nn.ReLU(inplace=True),
        )

    def forward(self, clips: Tensor) -> Tensor:
        return self.body(clips).mean(dim=(2, 3, 4))


NETWORKS: dict[str, Network] = {
    network.name: network
    for network in [
        Network("swin3d_t", "Video Swin-T", _swin("swin3d_t"), "head"),
        Network("swin3d_s", "Video Swin-S", _swin("swin3d_s"), "head"),
        Network("swin3d_b", "Video Swin-B", _swin("swin3d_b"), "head"),
        Network("i3d", "Inception-I3D", _i3d, "logits"),
        Network("r3d_18", "torchvision 3D ResNet-18", _torchvision("r3d_18"), "fc"),
        Network("mc3_18", "torchvision MC3-18", _torchvision("mc3_18"), "fc"),
        Network("r2plus1d_18", "torchvision R(2+1)D-18", _torchvision("r2plus1d_18"), "fc"),
        Network("s3d", "torchvision S3D", _torchvision("s3d"), "classifier"),
        Network("mvit_v1_b", "torchvision MViT-B v1", _torchvision("mvit_v1_b"), "head"),
        Network("mvit_v2_s", "torchvision MViT-S v2", _torchvision("mvit_v2_s"), "head"),
        Network("tiny", "tiny test network", lambda classes, overrides: TinyVideoNet(**overrides), None),
    ]
}
CLASSIFIER_KEYS = re.compile(r"(head|fc|classifier|logits)(\.\d+)?(\.conv3d)?\.(weight|bias)")
DEFAULT_CLASSES = 400


class FeatureNetwork(nn.Module):
    """A classification model whose classifier is identity: normalized clips (N, 3, T, h, w) -> (N, dim)."""

    def __init__(self, model: nn.Module, network: Network) -> None:
        super().__init__()
        self.feature_dim = classifier_inputs(model, network)
        if network.classifier is not None:
            setattr(model, network.classifier, nn.Identity())
        self.model = model
        self.network = network.name

    def forward(self, clips: Tensor) -> Tensor:
        return self.model(clips).flatten(1)


def classifier_inputs(model: nn.Module, network: Network) -> int:
    """The width of the classifier's input: the feature width."""
    if network.classifier is None:
        return int(model.body[-2].out_channels)
    layers = [m for m in getattr(model, network.classifier).modules() if isinstance(m, nn.Linear | nn.Conv3d)]
    last = layers[-1]
    return int(last.in_features if isinstance(last, nn.Linear) else last.in_channels)


# --- reading published files ------------------------------------------------------------------------------


def _swin_release_key(key: str) -> str | None:
    """A Video Swin release key (`backbone.` already removed) under torchvision's name; None if not one."""
    if key.startswith("cls_head.fc_cls."):
        return "head." + key.removeprefix("cls_head.fc_cls.")
    if re.fullmatch(r"(patch_embed\.(proj|norm)|norm)\.(weight|bias)", key):
        return key
    block = re.fullmatch(r"layers\.(\d+)\.blocks\.(\d+)\.(.+)", key)
    if block:
        stage, index, rest = int(block.group(1)), block.group(2), block.group(3)
        rest = re.sub(r"^mlp\.fc1\.", "mlp.0.", re.sub(r"^mlp\.fc2\.", "mlp.3.", rest))
        return f"features.{2 * stage}.{index}.{rest}"
    down = re.fullmatch(r"layers\.(\d+)\.downsample\.((norm|reduction)\.(weight|bias))", key)
    if down:
        return f"features.{2 * int(down.group(1)) + 1}.{down.group(2)}"
    return None


def _rename_swin_release(state: dict[str, Tensor]) -> dict[str, Tensor] | None:
    renamed = {}
    for key, tensor in state.items():
        new_key = _swin_release_key(key.removeprefix("backbone."))
        if new_key is None:
            return None
        renamed[new_key] = tensor
    return renamed


@dataclass(frozen=True)
class Layout:
    """One published file naming: how to recognise it and rename it to the project's names."""

    name: str
    family: str  # the networks it fits (FAMILY_OF): "swin", "i3d", "resnet", "s3d", "mvit"
    recognise: Callable[[dict[str, Tensor]], bool]
    rename: Callable[[dict[str, Tensor]], dict[str, Tensor] | None]


def _keep(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return state


LAYOUTS: list[Layout] = [
    Layout(
        "Video Swin release (backbone.*, cls_head.*)",
        "swin",
        lambda s: any(k.startswith("backbone.layers.") for k in s),
        _rename_swin_release,
    ),
    Layout(
        "Video Swin release, without the backbone. prefix",
        "swin",
        lambda s: any(re.match(r"layers\.\d+\.blocks\.", k) for k in s),
        _rename_swin_release,
    ),
    Layout(
        "torchvision Video Swin",
        "swin",
        lambda s: "patch_embed.proj.weight" in s and any(k.startswith("features.0.0.attn.") for k in s),
        _keep,
    ),
    Layout(
        "hassony2 I3D (model_rgb.pth)", "i3d", lambda s: "conv3d_1a_7x7.conv3d.weight" in s, rename_hassony2
    ),
    Layout(
        "piergiaj InceptionI3d (rgb_imagenet.pt)", "i3d", lambda s: "Conv3d_1a_7x7.conv3d.weight" in s, _keep
    ),
    Layout(
        "video ResNet",
        "resnet",
        lambda s: ("stem.0.weight" in s or "conv1.weight" in s) and any(k.startswith("layer1.") for k in s),
        _keep,
    ),
    Layout(
        "torchvision S3D",
        "s3d",
        lambda s: "features.0.0.0.weight" in s and "classifier.1.weight" in s,
        _keep,
    ),
    Layout(
        "torchvision MViT",
        "mvit",
        lambda s: "conv_proj.weight" in s and "pos_encoding.class_token" in s,
        _keep,
    ),
]
FAMILY_OF = {
    **{name: "swin" for name in SWIN_CONFIGS},
    "i3d": "i3d",
    "r3d_18": "resnet",
    "mc3_18": "resnet",
    "r2plus1d_18": "resnet",
    "s3d": "s3d",
    "mvit_v1_b": "mvit",
    "mvit_v2_s": "mvit",
    "tiny": "tiny",
}


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a weights file: a state dict, or one under 'state_dict' (beside 'meta') or 'model'."""
    loaded = load_untrusted(path)
    state = loaded
    if isinstance(loaded, dict):
        for container in ("state_dict", "model"):
            if isinstance(loaded.get(container), dict):
                state = loaded[container]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(t, Tensor) for t in state.values()):
        raise AqaError(
            f"{path} holds no state dict of tensors (found {type(loaded).__name__}); pass a published weights "
            "file: a state dict, or a {'state_dict': ...} container"
        )
    if all(key.startswith(MODULE_PREFIX) for key in state):
        state = {key.removeprefix(MODULE_PREFIX): tensor for key, tensor in state.items()}
    return dict(state)


def recognise(state: dict[str, Tensor]) -> Layout | None:
    return next((layout for layout in LAYOUTS if layout.recognise(state)), None)


def describe_state(state: dict[str, Tensor], layout: Layout | None) -> str:
    """What a state dict holds, in words ("a Video Swin-B state dict (Video Swin release ...)")."""
    if layout is None:
        return "a state dict of no network this toolkit knows"
    if layout.family == "swin":
        renamed = layout.rename(state) or state
        embed = renamed.get("patch_embed.proj.weight")
        blocks = len({k.split(".")[2] for k in renamed if k.startswith("features.4.")})
        size = {(128, 18): "Swin-B", (96, 18): "Swin-S", (96, 6): "Swin-T"}.get(
            (int(embed.shape[0]) if embed is not None else 0, blocks), "Swin (non-standard size)"
        )
        return f"a Video {size} state dict ({layout.name})"
    if layout.family == "i3d":
        return f"an Inception-I3D state dict ({layout.name})"
    return f"a {layout.name} state dict"


def load_network_weights(network: Network, path: Path, overrides: dict[str, Any]) -> tuple[nn.Module, str]:
    """The classification model of `network` with the file's tensors, loaded strictly; and the file's
    layout name. Refuses a file of another network, naming what it holds."""
    state = read_state_dict(path)
    layout = recognise(state)
    renamed = layout.rename(state) if layout is not None else None
    if layout is None or renamed is None or layout.family != FAMILY_OF[network.name]:
        raise AqaError(
            f"{path} holds {describe_state(state, layout)}, not {_article(network.title)} {network.title}; "
            "pass a weights file of that network (or another recipe)"
        )
    # built on the meta device (initialising Swin-B's tensors would take seconds), every tensor then
    # assigned from the file; Swin's relative position index is computed, whether the file carries it or not
    with torch.device("meta"):
        model = network.build(_classes(renamed), overrides)
    for module in model.modules():
        if hasattr(module, "define_relative_position_index"):
            module.define_relative_position_index()
    renamed = {key: tensor for key, tensor in renamed.items() if not key.endswith("relative_position_index")}
    computed = {k: t for k, t in model.state_dict().items() if k.endswith("relative_position_index")}
    load_tensors_strictly(model, {**renamed, **computed}, f"{path} ({layout.name})", network.title)
    return model, layout.name


def inspect_network_weights(path: str | Path, network: str | None = None) -> dict[str, Any]:
    """A plain-JSON summary of a recipe network's weights file (what `aqa weights inspect` prints); with
    `network`, the file must load strictly into it (a file of another network is refused, naming it)."""
    path = Path(path)
    state = read_state_dict(path)
    layout = recognise(state)
    summary: dict[str, Any] = {
        "path": str(path),
        "holds": describe_state(state, layout),
        "layout": layout.name if layout is not None else None,
        "tensors": len(state),
        "parameters": sum(t.numel() for k, t in state.items() if not k.endswith(BUFFERS)),
    }
    if network is not None:
        model, _ = load_network_weights(network_named(network), path, {})
        summary.update(network=network, classes=_classes(model.state_dict()))
    return summary


def inspect_any_weights(path: str | Path) -> dict[str, Any]:
    """`aqa weights inspect FILE`: a video ResNet checkpoint as `inspect_weights` tells it, any other
    recognised file (Video Swin, I3D, torchvision's video models) by its layout."""
    from aqa_cli.models.pretrained import inspect_weights

    layout = recognise(read_state_dict(Path(path)))
    if layout is None or layout.family == "resnet":
        return inspect_weights(path)
    return inspect_network_weights(path)


BUFFERS = ("running_mean", "running_var", "num_batches_tracked", "relative_position_index")


def _article(title: str) -> str:
    return "an" if title[0].lower() in "aeiou" else "a"


def _classes(state: dict[str, Tensor]) -> int:
    """The file's class count: rows of its classifier's last weight."""
    weights = [
        tensor for key, tensor in state.items() if CLASSIFIER_KEYS.fullmatch(key) and key.endswith("weight")
    ]
    return int(weights[-1].shape[0]) if weights else DEFAULT_CLASSES


def network_named(name: str) -> Network:
    if name not in NETWORKS:
        raise AqaError(f"unknown network {name!r}; known: {', '.join(NETWORKS)}")
    return NETWORKS[name]


def random_model(network: Network, seed: int, overrides: dict[str, Any]) -> nn.Module:
    """The network at random, drawn from `seed` without touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return network.build(DEFAULT_CLASSES, overrides)
