"""Inception-I3D (Carreira and Zisserman 2017), the backbone of CoRe, TSA/FineDiving and their successors.

One class loads both published PyTorch conversions of the DeepMind Kinetics-400 RGB weights strictly:
piergiaj's naming (`rgb_imagenet.pt`, class `InceptionI3d`), which this class uses as its own, and
hassony2's (`model_rgb.pth`, class `I3D`), renamed by `HASSONY2_RENAMES`. Convolutions and max pools pad
like TensorFlow's "SAME" (computed from the input size, zeros, more after than before when the padding
is odd), as both conversions do; on the even input sizes of the published recipes (224, 112) hassony2's
fixed paddings give the same numbers. The feature is the mean of Mixed_5c's output over time and space
(CoRe pools (2, 7, 7) at 224, FineDiving (2, 4, 4) at 112: the whole map in both).

BatchNorm eps: 1e-3 in the converters' classes, PyTorch's default 1e-5 in the copies inside CoRe and
FineDiving, whose features the published recipes are; so `eps` is a parameter.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIXED: list[tuple[str, tuple[int, int, int, int, int, int]]] = [
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("MaxPool3d_4a_3x3", ()),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("MaxPool3d_5a_2x2", ()),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
]
"""Inception blocks in order, with their branch widths (b0, b1a, b1b, b2a, b2b, b3b); () = a max pool."""
POOLS = {"MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)), "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2))}

HASSONY2_RENAMES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(pattern), replacement)
    for pattern, replacement in [
        (r"conv3d_(1a_7x7|2b_1x1|2c_3x3)\.conv3d\.(\w+)", r"Conv3d_\1.conv3d.\2"),
        (r"conv3d_(1a_7x7|2b_1x1|2c_3x3)\.batch3d\.(\w+)", r"Conv3d_\1.bn.\2"),
        (r"mixed_(\w\w)\.branch_0\.conv3d\.(\w+)", r"Mixed_\1.b0.conv3d.\2"),
        (r"mixed_(\w\w)\.branch_0\.batch3d\.(\w+)", r"Mixed_\1.b0.bn.\2"),
        (r"mixed_(\w\w)\.branch_([12])\.0\.conv3d\.(\w+)", r"Mixed_\1.b\2a.conv3d.\3"),
        (r"mixed_(\w\w)\.branch_([12])\.0\.batch3d\.(\w+)", r"Mixed_\1.b\2a.bn.\3"),
        (r"mixed_(\w\w)\.branch_([12])\.1\.conv3d\.(\w+)", r"Mixed_\1.b\2b.conv3d.\3"),
        (r"mixed_(\w\w)\.branch_([12])\.1\.batch3d\.(\w+)", r"Mixed_\1.b\2b.bn.\3"),
        (r"mixed_(\w\w)\.branch_3\.1\.conv3d\.(\w+)", r"Mixed_\1.b3b.conv3d.\2"),
        (r"mixed_(\w\w)\.branch_3\.1\.batch3d\.(\w+)", r"Mixed_\1.b3b.bn.\2"),
        (r"conv3d_0c_1x1\.conv3d\.(\w+)", r"logits.conv3d.\1"),
    ]
]
"""hassony2 `I3D` key -> this class's (piergiaj's) key; the patterns match whole keys."""


def same_padding(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    """TensorFlow "SAME" padding of a (T, H, W) input, as F.pad's (w0, w1, h0, h1, t0, t1)."""
    pads: list[int] = []
    for length, k, s in zip(reversed(size), reversed(kernel), reversed(stride), strict=True):
        total = max(k - (length % s or s), 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


class Unit3D(nn.Module):
    """Convolution with "SAME" padding, BatchNorm (none in the classifier), ReLU (none in the classifier)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        eps: float = 1e-5,
        classifier: bool = False,
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.classifier = kernel, stride, classifier
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, bias=classifier)
        if not classifier:
            self.bn = nn.BatchNorm3d(out_channels, eps=eps, momentum=0.01)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(F.pad(x, same_padding(tuple(x.shape[2:]), self.kernel, self.stride)))
        return x if self.classifier else F.relu(self.bn(x))


class MaxPoolSame(nn.Module):
    """Max pool with "SAME" zero padding (its inputs follow a ReLU, so zeros never win)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, same_padding(tuple(x.shape[2:]), self.kernel, self.stride))
        return F.max_pool3d(x, self.kernel, self.stride)


class InceptionModule(nn.Module):
    def __init__(self, in_channels: int, widths: tuple[int, ...], eps: float) -> None:
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3b = widths
        self.b0 = Unit3D(in_channels, b0, eps=eps)
        self.b1a = Unit3D(in_channels, b1a, eps=eps)
        self.b1b = Unit3D(b1a, b1b, (3, 3, 3), eps=eps)
        self.b2a = Unit3D(in_channels, b2a, eps=eps)
        self.b2b = Unit3D(b2a, b2b, (3, 3, 3), eps=eps)
        self.b3a = MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, b3b, eps=eps)
        self.out_channels = b0 + b1b + b2b + b3b

    def forward(self, x: Tensor) -> Tensor:
        branches = [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))]
        return torch.cat(branches, dim=1)


class InceptionI3d(nn.Module):
    """Inception-I3D with piergiaj's module names. `forward` gives the logits (averaged over time);
    `features` the 1024-d mean of Mixed_5c. `width_divisor` > 1 builds a narrow copy for tests."""

    def __init__(self, num_classes: int = 400, eps: float = 1e-5, width_divisor: int = 1) -> None:
        super().__init__()

        def narrow(channels: int) -> int:
            return max(1, channels // width_divisor)

        self.eps = eps
        self.Conv3d_1a_7x7 = Unit3D(3, narrow(64), (7, 7, 7), (2, 2, 2), eps=eps)
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(narrow(64), narrow(64), eps=eps)
        self.Conv3d_2c_3x3 = Unit3D(narrow(64), narrow(192), (3, 3, 3), eps=eps)
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        channels = narrow(192)
        self.blocks = [
            "Conv3d_1a_7x7",
            "MaxPool3d_2a_3x3",
            "Conv3d_2b_1x1",
            "Conv3d_2c_3x3",
            "MaxPool3d_3a_3x3",
        ]
        for name, widths in MIXED:
            if widths:
                block = InceptionModule(channels, tuple(narrow(w) for w in widths), eps)
                channels = block.out_channels
            else:
                block = MaxPoolSame(*POOLS[name])
            self.add_module(name, block)
            self.blocks.append(name)
        self.feature_dim = channels
        self.logits = Unit3D(channels, num_classes, classifier=True)

    def features(self, x: Tensor) -> Tensor:
        for name in self.blocks:
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3, 4))

    def forward(self, x: Tensor) -> Tensor:
        return self.logits(self.features(x)[:, :, None, None, None]).flatten(1)


def rename_hassony2(state: dict[str, Tensor]) -> dict[str, Tensor] | None:
    """hassony2's keys renamed to this class's, or None when a key is not one of hassony2's."""
    renamed = {}
    for key, tensor in state.items():
        new_key = next((rule.sub(repl, key) for rule, repl in HASSONY2_RENAMES if rule.fullmatch(key)), None)
        if new_key is None:
            return None
        renamed[new_key] = tensor
    return renamed
