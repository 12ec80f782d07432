"""Feature recipes: everything that turns a raw video into clip features, as plain data.

A recipe names the network and its default weights, which decoded frames it takes (`frames`), the
spatial steps (`spatial`), the normalization, the clip length, step and layout, the pooling and the
feature width. Feature stores and checkpoints record `Recipe.to_dict()` verbatim, so `aqa score` can
replay it. The published recipes are described in `shared/docs/feature-recipes.md`:

- `vst-k600`: Video Swin-B, Kinetics-600 (the Fis-V / RG features of GDLT and its successors);
- `i3d-core`, `i3d-tsa`: the Inception-I3D of CoRe (MTL-AQA) and TSA (FineDiving);
- torchvision's video models with their weights' own transforms;
- `paper-*`: the paper's video ResNets over the video store's windows (the `aqa extract --store` path);
- `tiny-test`: a few-millisecond random network over 32x32 frames for tests and synthetic data.

The spatial steps are computed by `spatial_plan` as plain numbers and applied by `transform_frames`, the
reference. A decoding worker without torch computes the plan once per video and applies it with
`media.spatial.apply_spatial_plan` (uint8 (T, h, w, 3), within one grey level of the reference); the
process with the network then calls `normalize(recipe, frames.permute(3, 0, 1, 2))`. PyAV's BILINEAR
scaler at the plan's resize size is close enough only for the antialiased recipes (tests/test_recipes.py
states both tolerances).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aqa_cli.models.normalization import NORMALIZATIONS
from aqa_cli.util.errors import AqaError, unknown_fields

IMAGENET = NORMALIZATIONS["imagenet"]
KINETICS = NORMALIZATIONS["kinetics400"]
FRAME_RULES = ("all", "last", "linspace")
LAYOUT_RULES = ("windows", "trim_center", "starts")


@dataclass(frozen=True)
class Recipe:
    """How a video becomes clip features. Sizes in `spatial` are [height, width]."""

    name: str
    network: str  # a key of NETWORKS: what builds the backbone
    weights: str | None  # registry name of the default weights; None: random initialisation
    frames: dict  # {"rule": "all"} | {"rule": "last", "count": 103} | {"rule": "linspace", "count": 96}
    spatial: dict  # resize_short or resize [h, w], crop [h, w], final [h, w]; interpolation, antialias
    mean: tuple[float, float, float]  # on [0, 1] pixels
    std: tuple[float, float, float]
    clip: int  # frames per clip
    stride: int  # selected frames between clip starts ("windows" layout)
    layout: dict  # {"rule": "windows"} | {"rule": "trim_center"} | {"rule": "starts", "starts": [...]}
    pooling: str  # "mean": over time and space, the published feature
    feature_dim: int
    description: str = ""
    fixed_clip: bool = False  # the network takes only `clip` frames per clip (mvit); --clip is refused
    min_clip: int = 1  # the fewest frames per clip the network takes (s3d: 14)
    seed: int = 0  # the random initialisation's seed when there are no weights

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, recorded verbatim in feature stores and checkpoints."""
        data = dataclasses.asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        if unknown := unknown_fields(cls, data):
            raise AqaError(
                f"recipe record has unknown field(s) {unknown}: it was written by a newer aqa; upgrade aqa"
            )
        values = dict(data)
        values["mean"], values["std"] = tuple(map(float, data["mean"])), tuple(map(float, data["std"]))
        return cls(**values)


def _torchvision_recipe(name: str, dim: int, clip: int, description: str, fixed: bool = False) -> Recipe:
    """A torchvision video model over whole videos with its own weights' transform (`weights.transforms()`
    of the DEFAULT weights: resize, centre crop, mean, std, bilinear without antialiasing)."""
    from torchvision.models import get_model_weights

    weights = get_model_weights(name).DEFAULT
    transform = weights.transforms()
    resize = list(transform.resize_size)
    first = {"resize_short": resize[0]} if len(resize) == 1 else {"resize": resize}
    return Recipe(
        name=name,
        network=name,
        weights=name,
        frames={"rule": "all"},
        spatial={
            **first,
            "crop": list(transform.crop_size),
            "interpolation": transform.interpolation.value,
            "antialias": False,
        },
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        clip=clip,
        stride=clip,
        layout={"rule": "windows"},
        pooling="mean",
        feature_dim=dim,
        description=f"torchvision {description}, {weights.name} weights, over whole videos in clip windows",
        fixed_clip=fixed,
        min_clip=weights.meta.get("min_temporal_size") or 1,
    )


def _builtin_recipes() -> list[Recipe]:
    recipes = [
        Recipe(
            name="vst-k600",
            network="swin3d_b",
            weights="vst-swin-b-k600",
            frames={"rule": "all"},
            spatial={
                "resize_short": 256,
                "crop": [224, 300],
                "final": [224, 224],
                "interpolation": "bilinear",
                "antialias": True,
            },
            mean=IMAGENET.mean,
            std=IMAGENET.std,
            clip=32,
            stride=32,
            layout={"rule": "trim_center"},
            pooling="mean",
            feature_dim=1024,
            description="Video Swin-B Kinetics-600, the published Fis-V/RG features (GDLT, CoFInAl, PAMFN)",
        ),
        Recipe(
            name="i3d-core",
            network="i3d",
            weights="i3d-kinetics-rgb-hassony2",
            frames={"rule": "last", "count": 103},
            spatial={
                "resize": [256, 455],
                "crop": [224, 224],
                "interpolation": "bilinear",
                "antialias": True,
            },
            mean=IMAGENET.mean,
            std=IMAGENET.std,
            clip=16,
            stride=10,
            layout={"rule": "starts", "starts": [0, 10, 20, 30, 40, 50, 60, 70, 80, 86]},
            pooling="mean",
            feature_dim=1024,
            description="Inception-I3D Kinetics-400 as CoRe uses it (MTL-AQA): last 103 frames, 10 clips",
        ),
        Recipe(
            name="i3d-tsa",
            network="i3d",
            weights="i3d-kinetics-rgb-hassony2",
            frames={"rule": "linspace", "count": 96},
            spatial={
                "resize": [112, 200],
                "crop": [112, 112],
                "interpolation": "bilinear",
                "antialias": True,
            },
            mean=IMAGENET.mean,
            std=IMAGENET.std,
            clip=16,
            stride=10,
            layout={"rule": "starts", "starts": [0, 10, 20, 30, 40, 50, 60, 70, 80]},
            pooling="mean",
            feature_dim=1024,
            description="Inception-I3D Kinetics-400 as TSA uses it (FineDiving): 96 frames spread, 9 clips",
        ),
        _torchvision_recipe("r3d_18", 512, 16, "3D ResNet-18"),
        _torchvision_recipe("mc3_18", 512, 16, "mixed-convolution ResNet-18"),
        _torchvision_recipe("r2plus1d_18", 512, 16, "R(2+1)D-18"),
        _torchvision_recipe("s3d", 1024, 16, "S3D"),
        _torchvision_recipe("mvit_v1_b", 768, 16, "MViT-B v1", fixed=True),
        _torchvision_recipe("mvit_v2_s", 768, 16, "MViT-S v2", fixed=True),
        _torchvision_recipe("swin3d_t", 768, 32, "Video Swin-T"),
        _torchvision_recipe("swin3d_s", 768, 32, "Video Swin-S"),
        _torchvision_recipe("swin3d_b", 1024, 32, "Video Swin-B"),
        Recipe(
            name="tiny-test",
            network="tiny",
            weights=None,
            frames={"rule": "all"},
            spatial={"resize": [32, 32], "crop": [32, 32], "interpolation": "bilinear", "antialias": True},
            mean=IMAGENET.mean,
            std=IMAGENET.std,
            clip=4,
            stride=4,
            layout={"rule": "windows"},
            pooling="mean",
            feature_dim=16,
            description="a few-millisecond random network over 32x32 frames (seed 0), for tests and synthetic data",
        ),
    ]
    return recipes + paper_recipes()


def paper_recipe(depth: int, conv: str, clip: int = 32, frames: int = 96, crop: int = 112) -> Recipe:
    """The paper's path as a recipe record: a video ResNet over the last `frames` frames the video store
    keeps (103, 171x128, see `aqa preprocess`), centre crop `crop`, contiguous clips. `aqa extract
    --store` runs it through its own code path; this record only describes it."""
    from aqa_cli.models.architectures import feature_dim

    return Recipe(
        name=f"paper-{conv}{depth}",
        network="resnet",
        weights=None,
        frames={"rule": "last", "count": frames, "from": "video store"},
        spatial={"resize": [128, 171], "crop": [crop, crop], "interpolation": "bilinear", "antialias": True},
        mean=KINETICS.mean,
        std=KINETICS.std,
        clip=clip,
        stride=clip,
        layout={"rule": "windows"},
        pooling="mean",
        feature_dim=feature_dim(depth),
        description=f"the paper's {conv} ResNet-{depth} over the video store's {frames}-frame windows "
        "(`aqa extract --store`; weights by --weights)",
    )


def paper_recipes() -> list[Recipe]:
    return [paper_recipe(depth, conv) for depth, conv in [(34, "2plus1d"), (18, "3d"), (50, "3d")]]


_RECIPES: dict[str, Recipe] | None = None


def _recipes() -> dict[str, Recipe]:
    global _RECIPES
    if _RECIPES is None:
        _RECIPES = {recipe.name: recipe for recipe in _builtin_recipes()}
    return _RECIPES


def recipe_names() -> list[str]:
    return list(_recipes())


def get_recipe(name: str, *, clip: int | None = None, stride: int | None = None) -> Recipe:
    """The recipe called `name`, with another clip length or step where the recipe allows one
    (the default step is the clip length: windows that do not overlap)."""
    recipes = _recipes()
    if name not in recipes:
        raise AqaError(f"unknown recipe {name!r}; known recipes: {', '.join(recipes)}")
    recipe = recipes[name]
    if clip is None and stride is None:
        return recipe
    if recipe.layout["rule"] != "windows":
        raise AqaError(
            f"recipe {name} has the published clip layout ({_layout_text(recipe)}); --clip and --stride "
            "apply only to window recipes"
        )
    if clip is not None and clip != recipe.clip and recipe.fixed_clip:
        raise AqaError(f"recipe {name}: the network takes exactly {recipe.clip}-frame clips; drop --clip")
    new_clip = recipe.clip if clip is None else clip
    new_stride = new_clip if stride is None else stride
    if new_clip < recipe.min_clip or new_stride < 1:
        raise AqaError(
            f"recipe {name} takes clips of at least {recipe.min_clip} frames and a --stride of at least 1 "
            f"(got --clip {new_clip}, --stride {new_stride})"
        )
    return dataclasses.replace(recipe, clip=new_clip, stride=new_stride)


def _layout_text(recipe: Recipe) -> str:
    rule = recipe.layout["rule"]
    if rule == "starts":
        return f"{recipe.clip}-frame clips starting at {', '.join(map(str, recipe.layout['starts']))}"
    if rule == "trim_center":
        return f"non-overlapping {recipe.clip}-frame clips, remainder trimmed half head, half tail"
    return f"{recipe.clip}-frame windows every {recipe.stride} frames"


def describe_recipe(recipe: Recipe) -> dict[str, str]:
    """Its frames, spatial steps and clip layout in words (what `aqa recipes list` shows)."""
    frames = recipe.frames
    frame_text = {
        "all": "every decoded frame",
        "last": f"the last {frames.get('count')}",
        "linspace": f"{frames.get('count')} spread evenly (truncated linspace)",
    }[frames["rule"]]
    spatial = recipe.spatial
    steps = (
        [f"short side {spatial['resize_short']}"]
        if "resize_short" in spatial
        else [f"resize {spatial['resize'][1]}x{spatial['resize'][0]}"]
    )
    steps.append(f"centre crop {spatial['crop'][1]}x{spatial['crop'][0]}")
    if "final" in spatial:
        steps.append(f"resize {spatial['final'][1]}x{spatial['final'][0]}")
    return {
        "frames_text": frame_text,
        "spatial_text": " -> ".join(steps),
        "layout_text": _layout_text(recipe),
    }


def recipe_rows() -> list[dict[str, Any]]:
    """Every recipe as a row of `aqa recipes list`: its record, in words, and whether its default weights
    are in torch's cache (None: random initialisation, or the weights come from --weights)."""
    from aqa_cli.models.registry import is_cached_and_valid, load_registry

    records = load_registry()
    rows = []
    for recipe in _recipes().values():
        record = records.get(recipe.weights) if recipe.weights else None
        cached = is_cached_and_valid(record) if record is not None else None
        rows.append({**recipe.to_dict(), **describe_recipe(recipe), "cached": cached})
    return rows


# --- frames and clips ----------------------------------------------------------------------------------


def select_frames(recipe: Recipe, frame_count: int, span: tuple[int, int] | None = None) -> np.ndarray:
    """Indices of the decoded frames the recipe uses, in order (TSA's linspace may repeat frames on short
    actions). `span` = (start, end): the action's decoded frames [start, end) in a dataset's annotation
    (CoRe: the `count` frames before MTL-AQA's end_frame, `image_list[end - count : end]`; TSA:
    `linspace(start, end - 1, count)`); None: the whole video is the action."""
    start, end = span if span is not None else (0, frame_count)
    start, end = max(0, start), min(end, frame_count)
    rule = recipe.frames["rule"]
    if rule == "all":
        return np.arange(start, end, dtype=np.int64)
    count = int(recipe.frames["count"])
    if rule == "last":
        return np.arange(max(0, end - count), end, dtype=np.int64)
    if rule == "linspace":
        if end <= start:
            return np.zeros(0, dtype=np.int64)
        return np.linspace(start, end - 1, count).astype(np.int64)
    raise AqaError(f"recipe {recipe.name}: unknown frame rule {rule!r}; known: {', '.join(FRAME_RULES)}")


def clip_starts(recipe: Recipe, selected: int) -> np.ndarray:
    """Start offsets into the selected frames, one per clip (empty when fewer frames than one clip)."""
    rule, clip = recipe.layout["rule"], recipe.clip
    if rule == "windows":
        return np.arange(0, max(selected - clip + 1, 0), recipe.stride, dtype=np.int64)
    if rule == "trim_center":
        clips = selected // clip
        head = (selected - clips * clip) // 2
        return head + clip * np.arange(clips, dtype=np.int64)
    if rule == "starts":
        starts = np.asarray(recipe.layout["starts"], dtype=np.int64)
        return starts[starts + clip <= selected]
    raise AqaError(f"recipe {recipe.name}: unknown clip layout {rule!r}; known: {', '.join(LAYOUT_RULES)}")


# --- the spatial steps ---------------------------------------------------------------------------------


def spatial_plan(recipe: Recipe, width: int, height: int) -> dict[str, Any]:
    """The spatial steps as numbers for a source of this display size, all (width, height) or
    (left, top, width, height): `resize` the whole frame, then `crop` that box of the resized frame
    (a box reaching outside it, at a negative start, is black there, as torchvision pads), then resize it
    to `final` (equal to the crop's size when the recipe has no final resize).

    Short-side resizing follows torchvision: the long side becomes int(short_side * long / short)."""
    spatial = recipe.spatial
    if "resize_short" in spatial:
        short = int(spatial["resize_short"])
        if width <= height:
            size = (short, int(short * height / width))
        else:
            size = (int(short * width / height), short)
    else:
        resize_h, resize_w = spatial["resize"]
        size = (int(resize_w), int(resize_h))
    crop_h, crop_w = (int(v) for v in spatial["crop"])
    return {
        "resize": size,
        "crop": (_crop_start(size[0], crop_w), _crop_start(size[1], crop_h), crop_w, crop_h),
        "final": tuple(int(v) for v in reversed(spatial.get("final", [crop_h, crop_w]))),
        "interpolation": spatial.get("interpolation", "bilinear"),
        "antialias": bool(spatial.get("antialias", True)),
    }


def _crop_start(length: int, crop: int) -> int:
    """torchvision's centre crop: int(round((length - crop) / 2)); a crop larger than the frame is padded
    with black around it first (negative start)."""
    if crop > length:
        return -((crop - length) // 2)
    return int(round((length - crop) / 2.0))


def crop_frames(video: Tensor, left: int, top: int, width: int, height: int) -> Tensor:
    """The box of (..., H, W) frames; parts outside the frame are black (0), as torchvision pads."""
    pad = [
        max(0, -left),
        max(0, left + width - video.shape[-1]),
        max(0, -top),
        max(0, top + height - video.shape[-2]),
    ]
    if any(pad):
        video = F.pad(video, pad)
        left, top = left + pad[0], top + pad[2]
    return video[..., top : top + height, left : left + width]


def _resize(frames: Tensor, size: tuple[int, int], plan: dict[str, Any]) -> Tensor:
    """uint8 (T, 3, H, W) -> uint8 (T, 3, h, w) at size (w, h), rounded back to uint8 as PIL and
    torchvision's video transforms do."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    if tuple(frames.shape[-2:]) == (size[1], size[0]):
        return frames
    mode = InterpolationMode(plan["interpolation"])
    return TF.resize(frames, [size[1], size[0]], interpolation=mode, antialias=plan["antialias"])


def transform_frames(recipe: Recipe, frames: Tensor) -> Tensor:
    """uint8 (T, H, W, 3) display-oriented frames -> float (3, T, h, w) normalized: exactly the recipe's
    spatial steps (resize, centre crop, final resize, each in uint8), then mean/std on [0, 1] pixels."""
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise AqaError(
            f"transform_frames takes uint8 (T, H, W, 3) frames, not {frames.dtype} {tuple(frames.shape)}"
        )
    plan = spatial_plan(recipe, int(frames.shape[2]), int(frames.shape[1]))
    video = _resize(frames.permute(0, 3, 1, 2), plan["resize"], plan)
    video = _resize(crop_frames(video, *plan["crop"]), plan["final"], plan)
    return normalize(recipe, video.permute(1, 0, 2, 3))


def normalize(recipe: Recipe, video: Tensor) -> Tensor:
    """uint8 (3, T, h, w) (or with a leading batch axis) -> float32 (x / 255 - mean) / std."""
    shape = (3, 1, 1, 1)
    mean = torch.tensor(recipe.mean, dtype=torch.float32, device=video.device).view(shape)
    std = torch.tensor(recipe.std, dtype=torch.float32, device=video.device).view(shape)
    return (video.float() / 255 - mean) / std


# --- the network ---------------------------------------------------------------------------------------


def build_feature_network(
    recipe: Recipe, weights: str | Path | None = "default", *, overrides: dict | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The recipe's feature network in evaluation mode, and the record of the weights it holds.

    weights: "default" (the recipe's own, by registry name: found in torch's cache or downloaded,
        hash-checked), a registry name, a file in the network's published layout (loaded strictly), or
        None for a random initialisation drawn from the recipe's seed.
    overrides: constructor arguments that build a small network of the same class for tests (Video
        Swin: {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]}; I3D:
        {"width_divisor": 16}; tiny: {"width": 8}).
    The module maps normalized clips (N, 3, T, h, w) to (N, feature_dim); the record holds `name` (the
    registry name or None), `path`, `sha256` of the file ("random init" without one), `layout` (the file's
    naming as recognised), `seed`, `state_sha256` and `overrides`.
    """
    from aqa_cli.models.provenance import state_sha256
    from aqa_cli.models.registry import resolve_weights
    from aqa_cli.models.video_networks import (
        FeatureNetwork,
        load_network_weights,
        network_named,
        random_model,
    )

    if recipe.network == "resnet":
        raise AqaError(
            f"recipe {recipe.name} is the paper's path: run it with `aqa extract --store` (its ResNet comes "
            "from --depth, --conv and --weights)"
        )
    network = network_named(recipe.network)
    overrides = dict(overrides or {})
    value = recipe.weights if weights == "default" else weights
    if value is None:
        model = random_model(network, recipe.seed, overrides)
        record: dict[str, Any] = {"name": None, "path": None, "sha256": "random init", "layout": None}
        record["seed"] = recipe.seed
    else:
        resolved = resolve_weights(value)
        model, layout = load_network_weights(network, resolved.path, overrides)
        record = {**resolved.to_dict(), "layout": layout, "seed": None}
    module = FeatureNetwork(model, network).eval()
    record.update(state_sha256=state_sha256(module), overrides=overrides, network=network.name)
    return module, record


def rebuild_feature_network(recipe: Recipe, record: dict[str, Any], where: str | Path) -> nn.Module:
    """The network an extraction used, from its recipe and weights record (`build_feature_network`'s):
    the same file, checked by sha256 (found again by its registry name when it moved), or the same
    random initialisation, checked by the state's sha256 (it depends on the torch version)."""
    from aqa_cli.models.registry import resolve_weights
    from aqa_cli.util.hashing import file_sha256

    overrides = record.get("overrides") or {}
    if record.get("path") is None:
        network, again = build_feature_network(recipe, None, overrides=overrides)
        if again["state_sha256"] != record["state_sha256"]:
            raise AqaError(
                f"{where}: the random-init {recipe.network} (seed {record.get('seed')}) cannot be rebuilt "
                f"by torch {torch.__version__}; use the torch version that extracted it, or extract with weights"
            )
        return network
    path = Path(record["path"])
    if not path.is_file() and record.get("name"):
        path = resolve_weights(record["name"]).path
    if not path.is_file():
        raise AqaError(
            f"{where}: its weights {record['path']} are missing; put that file (sha256 "
            f"{record['sha256'][:16]}...) back at that path to score videos"
        )
    if file_sha256(path) != record["sha256"]:
        raise AqaError(
            f"{where}: {path} is not the weights file the features were extracted with (sha256 differs); "
            "restore the original file"
        )
    network, _ = build_feature_network(recipe, path, overrides=overrides)
    return network
