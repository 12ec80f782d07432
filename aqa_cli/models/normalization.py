"""Input normalization: what a set of weights expects to see, and the one step from stored uint8 frames to
the model's input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from aqa_cli.util.errors import AqaError


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean/std for RGB frames in [0, 1]: what a set of weights expects to see."""

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def apply(self, frames: Tensor) -> Tensor:
        """Normalize frames with channels at dim -4 ((N,) 3, T, H, W): float in [0, 1] or uint8 0..255.

        (x / 255 - mean) / std is computed as x * scale + shift into one new tensor: the training loop
        calls this on every batch, and four full-size temporaries cost more than the arithmetic.
        """
        floating = frames.is_floating_point()
        std = torch.tensor(self.std, dtype=torch.float64)
        scale = (1 / std if floating else 1 / (255 * std)).view(3, 1, 1, 1)
        shift = (-torch.tensor(self.mean, dtype=torch.float64) / std).view(3, 1, 1, 1)
        dtype = frames.dtype if floating else torch.float32
        scale, shift = (t.to(device=frames.device, dtype=dtype) for t in (scale, shift))
        if floating:
            return torch.addcmul(shift, frames, scale)
        return frames.to(dtype).mul_(scale).add_(shift)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalization:
        return cls(str(data["name"]), tuple(map(float, data["mean"])), tuple(map(float, data["std"])))

    @classmethod
    def named(cls, name: str) -> Normalization:
        if name not in NORMALIZATIONS:
            raise AqaError(f"unknown normalization {name!r}; choose one of {', '.join(NORMALIZATIONS)}")
        return NORMALIZATIONS[name]


NORMALIZATIONS: dict[str, Normalization] = {
    "hara": Normalization("hara", (0.4345, 0.4051, 0.3775), (0.2768, 0.2713, 0.2737)),
    "kinetics400": Normalization("kinetics400", (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)),
    "imagenet": Normalization("imagenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
"""hara: Hara et al. code defaults; kinetics400: ig65m and torchvision video models; imagenet: what the
paper's code fed every backbone."""


def model_input(
    frames: Tensor, normalization: Normalization, device: torch.device, channels_last: bool = False
) -> Tensor:
    """Stored uint8 frames ((N,) 3, T, H, W) -> the normalized float input on `device`: copied as uint8 (a
    quarter of the bytes), normalized there, optionally in channels-last 3D memory format."""
    video = normalization.apply(frames.to(device, non_blocking=True))
    return video.contiguous(memory_format=torch.channels_last_3d) if channels_last else video
