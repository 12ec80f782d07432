"""Feature recipes: published weight layouts load strictly into the project's networks and give the
reference network's features; recipes take exactly the published frames, clips and pixels."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from aqa_cli.models.i3d import InceptionI3d, MaxPoolSame, Unit3D
from aqa_cli.models.recipes import (
    Recipe,
    build_feature_network,
    clip_starts,
    get_recipe,
    recipe_names,
    select_frames,
    spatial_plan,
    transform_frames,
)
from aqa_cli.util.errors import AqaError
from tests.helpers import read_number, read_video, write_number_video

TINY_SWIN = {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": [2, 4, 4]}
NARROW_I3D = {"width_divisor": 16}


def tiny_swin_reference() -> nn.Module:
    """torchvision's own SwinTransformer3d, random, in the tiny test configuration (600 classes, like the
    Kinetics-600 release)."""
    from torchvision.models.video.swin_transformer import SwinTransformer3d

    torch.manual_seed(1)
    model = SwinTransformer3d(patch_size=[2, 4, 4], num_classes=600, stochastic_depth_prob=0.1, **TINY_SWIN)
    for module in model.modules():  # random LayerNorm and bias values, so a swapped tensor shows
        if isinstance(module, nn.LayerNorm):
            nn.init.normal_(module.weight, 1.0, 0.2)
            nn.init.normal_(module.bias, 0.0, 0.2)
    return model.eval()


def release_key(key: str) -> str:
    """torchvision swin3d key -> the Video Swin release's, from the table in feature-recipes.md §1."""
    if key.startswith("head."):
        return "cls_head.fc_cls." + key.removeprefix("head.")
    if key.startswith(("patch_embed.", "norm.")):
        return "backbone." + key
    stage, rest = re.fullmatch(r"features\.(\d+)\.(.+)", key).groups()
    stage = int(stage)
    if stage % 2:  # patch merging between stages
        return f"backbone.layers.{stage // 2}.downsample.{rest}"
    block, rest = rest.split(".", 1)
    rest = rest.replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
    return f"backbone.layers.{stage // 2}.blocks.{block}.{rest}"


def test_video_swin_release_files_load_strictly_and_match_torchvision(tmp_path):
    reference = tiny_swin_reference()
    state = reference.state_dict()
    release = {release_key(k): v for k, v in state.items() if not k.endswith("relative_position_index")}
    assert len(release) == len(state) - 4  # one relative_position_index per block, computed on loading
    wrapped, bare, with_index = tmp_path / "wrapped.pth", tmp_path / "bare.pth", tmp_path / "index.pth"
    torch.save({"meta": {"env_info": "random"}, "state_dict": release}, wrapped)
    torch.save({k.removeprefix("backbone."): v for k, v in release.items()}, bare)
    torch.save({"state_dict": {release_key(k): v for k, v in state.items()}}, with_index)

    clips = torch.randn(2, 3, 4, 32, 32)
    reference.head = nn.Identity()
    with torch.inference_mode():
        expected = reference(clips)
        for path in (wrapped, bare, with_index):
            network, record = build_feature_network(get_recipe("vst-k600"), path, overrides=TINY_SWIN)
            assert record["layout"].startswith("Video Swin release")
            assert len(record["sha256"]) == 64 and record["path"] == str(path)
            features = network(clips)
            assert features.shape == (2, 16 * 8) == (2, network.feature_dim)
            torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-6)


def test_a_release_file_missing_a_tensor_is_refused(tmp_path):
    state = {release_key(k): v for k, v in tiny_swin_reference().state_dict().items()}
    del state["backbone.layers.1.blocks.0.mlp.fc2.bias"]
    torch.save({"state_dict": state}, tmp_path / "cut.pth")
    with pytest.raises(AqaError, match=r"missing, e\.g\. features\.2\.0\.mlp\.3\.bias"):
        build_feature_network(get_recipe("vst-k600"), tmp_path / "cut.pth", overrides=TINY_SWIN)


# --- Inception-I3D -----------------------------------------------------------------------------------------


def random_i3d(eps: float = 1e-5) -> InceptionI3d:
    torch.manual_seed(2)
    model = InceptionI3d(eps=eps, **NARROW_I3D)
    for module in model.modules():  # non-trivial BatchNorm statistics, so eps and buffers matter
        if isinstance(module, nn.BatchNorm3d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.001, 0.01)
            module.weight.data.normal_(1, 0.1)
            module.bias.data.normal_(0, 0.1)
    return model.eval()


def hassony2_key(key: str) -> str:
    """The project's (piergiaj's) I3D key -> hassony2's `I3D` key, written from its src/i3dpt.py."""
    key = key.replace(".bn.", ".batch3d.")
    if key.startswith("logits."):
        return key.replace("logits.", "conv3d_0c_1x1.")
    if key.startswith("Conv3d_"):
        return "c" + key[1:]
    mixed, branch, rest = key.split(".", 2)
    branch = {"b0": "branch_0", "b1a": "branch_1.0", "b1b": "branch_1.1", "b2a": "branch_2.0"}.get(
        branch, {"b2b": "branch_2.1", "b3b": "branch_3.1"}.get(branch)
    )
    return f"{mixed.lower()}.{branch}.{rest}"


def test_i3d_files_in_both_namings_load_strictly_and_agree(tmp_path):
    state = random_i3d(eps=1e-3).state_dict()
    piergiaj, hassony2 = tmp_path / "rgb_imagenet.pt", tmp_path / "model_rgb.pth"
    torch.save(state, piergiaj)
    # hassony2's 2017 file has no num_batches_tracked counters
    torch.save({hassony2_key(k): v for k, v in state.items() if "num_batches" not in k}, hassony2)
    clips = torch.randn(1, 3, 16, 64, 64)
    recipe = get_recipe("i3d-tsa")
    features = {}
    with torch.inference_mode():
        for path in (piergiaj, hassony2):
            network, record = build_feature_network(recipe, path, overrides=NARROW_I3D)
            features[path.name] = network(clips)
            assert record["layout"].startswith(("piergiaj", "hassony2"))
        eps3, _ = build_feature_network(recipe, piergiaj, overrides={**NARROW_I3D, "eps": 1e-3})
        with_eps3 = eps3(clips)
    assert features["rgb_imagenet.pt"].shape == (1, 64)
    torch.testing.assert_close(features["rgb_imagenet.pt"], features["model_rgb.pth"], rtol=0, atol=0)
    # CoRe/TSA's copies run BatchNorm with eps 1e-5 whichever file: the features differ from 1e-3's
    assert not torch.allclose(features["rgb_imagenet.pt"], with_eps3, atol=1e-4)


def test_i3d_unit_pools_and_feature_are_tensorflow_same_and_the_mixed_5c_mean(tmp_path):
    """Hand-computed: "SAME" padding is (total // 2) before, the rest after; BatchNorm with eps 1e-5."""
    torch.manual_seed(3)
    unit = Unit3D(3, 4, (7, 7, 7), (2, 2, 2)).eval()
    unit.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(1, 3, 16, 12, 11)
    # T=16, stride 2: pad 5 -> (2, 3); H=12: (2, 3); W=11 (odd): pad 7 - 1 = 6 -> (3, 3)
    padded = F.pad(x, (3, 3, 2, 3, 2, 3))
    conv = F.conv3d(padded, unit.conv3d.weight, stride=2)
    bn = unit.bn
    scale = (bn.weight / torch.sqrt(bn.running_var + 1e-5)).view(1, -1, 1, 1, 1)
    expected = F.relu((conv - bn.running_mean.view(1, -1, 1, 1, 1)) * scale + bn.bias.view(1, -1, 1, 1, 1))
    with torch.inference_mode():
        torch.testing.assert_close(unit(x), expected)
        pool = MaxPoolSame((1, 3, 3), (1, 2, 2))
        y = torch.rand(1, 2, 3, 7, 8)
        assert pool(y).shape == (1, 2, 3, 4, 4)  # ceil(7 / 2), ceil(8 / 2): TF "SAME"
        torch.testing.assert_close(pool(y)[..., -1, -1], y[..., 5:7, 6:8].amax(dim=(-2, -1)))

        model = random_i3d()
        seen = {}
        model.Mixed_5c.register_forward_hook(lambda module, inputs, output: seen.update(out=output))
        clips = torch.randn(1, 3, 16, 112, 112)
        torch.save(model.state_dict(), tmp_path / "i3d.pt")
        network, _ = build_feature_network(get_recipe("i3d-tsa"), tmp_path / "i3d.pt", overrides=NARROW_I3D)
        features = network(clips)
        model(clips)
    assert seen["out"].shape[2:] == (2, 4, 4)  # FineDiving pools (2, 4, 4): the whole map
    torch.testing.assert_close(features, seen["out"].mean(dim=(2, 3, 4)))


# --- refusals ------------------------------------------------------------------------------------------------


def test_a_file_of_another_network_is_refused_naming_what_it_holds(tmp_path):
    torch.save(
        {"state_dict": {release_key(k): v for k, v in tiny_swin_reference().state_dict().items()}},
        tmp_path / "swin.pth",
    )
    with pytest.raises(
        AqaError, match=r"holds a Video Swin.* state dict \(Video Swin release.*not an Inception-I3D"
    ):
        build_feature_network(get_recipe("i3d-core"), tmp_path / "swin.pth", overrides=NARROW_I3D)
    torch.save(random_i3d().state_dict(), tmp_path / "i3d.pt")
    with pytest.raises(AqaError, match=r"holds an Inception-I3D state dict \(piergiaj.*not a Video Swin-B"):
        build_feature_network(get_recipe("vst-k600"), tmp_path / "i3d.pt", overrides=TINY_SWIN)
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(AqaError, match="no network this toolkit knows"):
        build_feature_network(get_recipe("i3d-core"), tmp_path / "other.pth")


def test_unknown_recipes_and_fixed_clips_are_refused():
    with pytest.raises(AqaError, match=r"unknown recipe 'vst'; known recipes: vst-k600, i3d-core, i3d-tsa"):
        get_recipe("vst")
    with pytest.raises(AqaError, match="exactly 16-frame clips"):
        get_recipe("mvit_v2_s", clip=32)
    with pytest.raises(AqaError, match="recipe s3d takes clips of at least 14 frames"):
        get_recipe("s3d", clip=8)
    with pytest.raises(AqaError, match="published clip layout"):
        get_recipe("i3d-core", clip=8)
    assert get_recipe("r3d_18", clip=8) == get_recipe("r3d_18", clip=8, stride=8)
    assert get_recipe("swin3d_t", stride=16).clip == 32


def test_recipes_round_trip_through_their_records():
    import json

    for name in recipe_names():
        recipe = get_recipe(name)
        assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    with pytest.raises(AqaError, match="newer aqa"):
        Recipe.from_dict({**get_recipe("vst-k600").to_dict(), "sampling": "dense"})


def test_tiny_recipe_is_seeded_and_fast():
    recipe = get_recipe("tiny-test")
    first, record = build_feature_network(recipe)
    second, again = build_feature_network(recipe)
    assert record["sha256"] == "random init" and record["state_sha256"] == again["state_sha256"]
    clips = transform_frames(recipe, torch.randint(0, 256, (8, 48, 64, 3), dtype=torch.uint8))[None]
    with torch.inference_mode():
        torch.testing.assert_close(first(clips[:, :, :4]), second(clips[:, :, :4]))
    assert first(clips[:, :, :4]).shape == (1, recipe.feature_dim)


# --- frames, clips and pixels --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def numbered_frames(tmp_path_factory) -> np.ndarray:
    """The frame numbers read back from a real encoded video of 120 numbered frames."""
    path = write_number_video(tmp_path_factory.mktemp("numbers") / "numbers.mp4", 0, 120)
    frames, _, _ = read_video(path, None)
    numbers = np.array([read_number(frame) for frame in frames])
    assert numbers.tolist() == list(range(120))
    return numbers


def clip_frames(recipe: Recipe, numbers: np.ndarray) -> list[list[int]]:
    chosen = numbers[select_frames(recipe, len(numbers))]
    return [chosen[start : start + recipe.clip].tolist() for start in clip_starts(recipe, len(chosen))]


def test_recipes_take_the_published_frames_and_clips(numbered_frames):
    # VST: n = 120 // 32 = 3 clips, 24 left over: 12 dropped from the head, 12 from the tail
    vst = clip_frames(get_recipe("vst-k600"), numbered_frames)
    assert [c[0] for c in vst] == [12, 44, 76] and vst[-1][-1] == 107
    assert all(c == list(range(c[0], c[0] + 32)) for c in vst)
    # CoRe: the last 103 frames (17..119), clips of 16 at 0, 10, ..., 80 and 86
    core = clip_frames(get_recipe("i3d-core"), numbered_frames)
    assert [c[0] for c in core] == [17, 27, 37, 47, 57, 67, 77, 87, 97, 103] and core[-1][-1] == 118
    # TSA: np.linspace(first, last, 96).astype(int), clips at 0, 10, ..., 80
    tsa = clip_frames(get_recipe("i3d-tsa"), numbered_frames)
    spread = np.linspace(0, 119, 96).astype(int)
    assert len(tsa) == 9 and tsa[0] == spread[:16].tolist() and tsa[-1] == spread[80:96].tolist()
    # torchvision windows: every `stride` frames, the last partial window dropped
    windows = clip_frames(get_recipe("r3d_18", clip=16, stride=24), numbered_frames)
    assert [c[0] for c in windows] == [0, 24, 48, 72, 96] and windows[-1][-1] == 111


def test_dataset_spans_choose_the_action_frames(numbered_frames):
    core = numbered_frames[select_frames(get_recipe("i3d-core"), 120, span=(30, 110))]
    assert core.tolist() == list(range(7, 110))  # CoRe: image_list[end_frame - 103 : end_frame]
    tsa = numbered_frames[select_frames(get_recipe("i3d-tsa"), 120, span=(10, 60))]
    assert tsa.tolist() == np.linspace(10, 59, 96).astype(int).tolist()
    assert select_frames(get_recipe("vst-k600"), 120, span=(100, 130)).tolist() == list(range(100, 120))


def test_short_videos_give_no_clips_or_repeat_frames():
    assert clip_starts(get_recipe("vst-k600"), 31).size == 0
    assert clip_starts(get_recipe("r3d_18"), 15).size == 0
    assert select_frames(get_recipe("i3d-tsa"), 50)[:4].tolist() == [0, 0, 1, 1]  # truncated linspace
    assert select_frames(get_recipe("i3d-core"), 40).tolist() == list(range(40))


def smooth_frames(count: int, height: int, width: int) -> np.ndarray:
    """Frames with gradients and edges (what resizing filters differ on), not noise."""
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    for t in range(count):
        r = (x * 255 / width + 20 * t) % 256
        g = 128 + 100 * np.sin((x + 2 * y + 7 * t) / 9)
        b = np.where((x // 17 + y // 13) % 2, 220, 30)
        frames.append(np.stack([r, g, b], axis=-1))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def pil_recipe(frames: np.ndarray, plan: dict) -> np.ndarray:
    """The published PIL pipeline (GDLT/CoRe): resize bilinear, centre crop, resize; uint8 (T, h, w, 3)."""
    out = []
    for frame in frames:
        image = Image.fromarray(frame).resize(plan["resize"], Image.BILINEAR)
        left, top, width, height = plan["crop"]
        image = image.crop((left, top, left + width, top + height)).resize(plan["final"], Image.BILINEAR)
        out.append(np.asarray(image))
    return np.stack(out)


def unnormalize(recipe: Recipe, video: torch.Tensor) -> np.ndarray:
    """(3, T, h, w) normalized -> (T, h, w, 3) pixel values 0..255."""
    mean, std = torch.tensor(recipe.mean).view(3, 1, 1, 1), torch.tensor(recipe.std).view(3, 1, 1, 1)
    return ((video * std + mean) * 255).permute(1, 2, 3, 0).numpy()


@pytest.mark.parametrize(
    ("name", "width", "height"), [("vst-k600", 640, 360), ("i3d-core", 480, 270), ("vst-k600", 270, 480)]
)
def test_transform_matches_the_published_pil_pipeline(name, width, height):
    """PIL's bilinear (antialiased when shrinking) against torchvision's tensor resize: within 1.5 grey
    levels on average, 12 at worst (on edges), after the same rounding to uint8 at each step."""
    recipe = get_recipe(name)
    frames = smooth_frames(3, height, width)
    plan = spatial_plan(recipe, width, height)
    expected = pil_recipe(frames, plan).astype(np.float64)
    found = unnormalize(recipe, transform_frames(recipe, torch.from_numpy(frames)))
    assert found.shape == expected.shape == (3, 224, 224, 3)
    difference = np.abs(found - expected)
    assert difference.mean() < 1.5 and difference.max() <= 12


def test_spatial_plan_is_the_published_geometry():
    assert spatial_plan(get_recipe("vst-k600"), 640, 360) == {
        "resize": (455, 256),  # short side 256, long int(256 * 640 / 360)
        "crop": (78, 16, 300, 224),
        "final": (224, 224),
        "interpolation": "bilinear",
        "antialias": True,
    }
    assert spatial_plan(get_recipe("i3d-tsa"), 1920, 1080)["resize"] == (200, 112)  # 200 wide, 112 high
    assert spatial_plan(get_recipe("i3d-tsa"), 1920, 1080)["crop"] == (44, 0, 112, 112)
    # portrait: 256 wide after resizing, narrower than the 300-wide crop: 22 black columns each side
    assert spatial_plan(get_recipe("vst-k600"), 270, 480)["crop"] == (-22, 116, 300, 224)


@pytest.mark.parametrize("name", ["r3d_18", "swin3d_t", "mvit_v2_s"])
def test_torchvision_recipes_apply_their_weights_own_transform(name):
    from torchvision.models import get_model_weights

    recipe = get_recipe(name)
    frames = torch.from_numpy(smooth_frames(4, 180, 320))
    reference = get_model_weights(name).DEFAULT.transforms()(frames.permute(0, 3, 1, 2))
    torch.testing.assert_close(transform_frames(recipe, frames), reference, rtol=0, atol=1e-5)


SOURCES = [
    ("vst-k600", 640, 360),
    ("vst-k600", 270, 480),  # portrait: the 300-wide crop is padded black
    ("i3d-core", 480, 270),
    ("i3d-tsa", 1280, 720),
    ("r3d_18", 320, 240),  # torchvision: plain bilinear, no antialiasing
    ("swin3d_t", 100, 60),  # enlarged
]


@pytest.mark.parametrize(("name", "width", "height"), SOURCES)
def test_numpy_spatial_steps_match_transform_frames_within_one_grey_level(name, width, height):
    """What a torch-free decoding worker computes (media/spatial.py) against the reference."""
    from aqa_cli.media.spatial import apply_spatial_plan

    recipe = get_recipe(name)
    frames = smooth_frames(3, height, width)
    expected = unnormalize(recipe, transform_frames(recipe, torch.from_numpy(frames)))
    found = apply_spatial_plan(frames, spatial_plan(recipe, width, height)).astype(np.float64)
    difference = np.abs(found - expected)
    assert difference.max() <= 1.001 and difference.mean() < 0.01


@pytest.mark.parametrize(("name", "width", "height"), [s for s in SOURCES if s[0] in ("vst-k600", "i3d-tsa")])
def test_pyav_scaler_is_close_for_antialiased_recipes(name, width, height):
    """PyAV's BILINEAR scaler to the plan's resize size, then a numpy crop: within 0.35 grey levels on
    average and 2 at the 99th percentile (9 at worst on edges, shrinking 1280x720 to 200x112). Recipes
    without antialiasing (torchvision's) differ on edges by tens of levels: not for those."""
    import av

    from aqa_cli.media.spatial import crop, resize

    recipe = get_recipe(name)
    frames = smooth_frames(3, height, width)
    plan = spatial_plan(recipe, width, height)
    scaled = np.stack(
        [
            av.VideoFrame.from_ndarray(frame, format="rgb24")
            .reformat(width=plan["resize"][0], height=plan["resize"][1], interpolation="BILINEAR")
            .to_ndarray()
            for frame in frames
        ]
    )
    found = resize(crop(scaled, *plan["crop"]), *plan["final"], antialias=True).astype(np.float64)
    expected = unnormalize(recipe, transform_frames(recipe, torch.from_numpy(frames)))
    difference = np.abs(found - expected)
    assert difference.mean() < 0.35 and np.percentile(difference, 99) <= 2.001


def test_full_size_video_swin_b_release_keys_map_one_to_one_onto_torchvision():
    """Every tensor of a full-size Swin-B release file has its torchvision key and shape (built on the
    meta device: no memory, no time), so the real 350 MB file loads strictly."""
    from torchvision.models.video import swin3d_b

    from aqa_cli.models.video_networks import LAYOUTS

    with torch.device("meta"):
        reference = swin3d_b(num_classes=600)
    state = reference.state_dict()
    release = {release_key(k): v for k, v in state.items()}
    layout = next(layout for layout in LAYOUTS if layout.recognise(release))
    assert layout.name.startswith("Video Swin release")
    renamed = layout.rename(release)
    assert {k: tuple(v.shape) for k, v in renamed.items()} == {k: tuple(v.shape) for k, v in state.items()}
    assert "backbone.layers.2.blocks.17.mlp.fc2.weight" in release
    assert (
        "backbone.layers.2.downsample.reduction.weight" in release
        and "backbone.layers.3.downsample.norm.weight" not in release
    )


full_size = pytest.mark.skipif(
    os.environ.get("AQA_FULL_NETWORKS") != "1",
    reason="full-size networks are slow on CPUs; AQA_FULL_NETWORKS=1 runs them",
)


@full_size
@pytest.mark.parametrize(
    "name", ["vst-k600", "i3d-core", "i3d-tsa", "r3d_18", "s3d", "mvit_v2_s", "swin3d_t"]
)
def test_full_size_recipes_give_their_feature_width(name):
    recipe = get_recipe(name)
    network, record = build_feature_network(recipe, None)
    frames = torch.from_numpy(smooth_frames(recipe.clip, 270, 480))
    with torch.inference_mode():
        features = network(transform_frames(recipe, frames)[None])
    assert features.shape == (1, recipe.feature_dim) == (1, network.feature_dim)
    assert torch.isfinite(features).all() and record["sha256"] == "random init"


def test_a_network_is_rebuilt_from_its_record_or_refused(tmp_path):
    from aqa_cli.models.recipes import rebuild_feature_network

    torch.save(random_i3d().state_dict(), tmp_path / "i3d.pt")
    recipe = get_recipe("i3d-tsa")
    network, record = build_feature_network(recipe, tmp_path / "i3d.pt", overrides=NARROW_I3D)
    clips = torch.randn(1, 3, 16, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(rebuild_feature_network(recipe, record, "run.pt")(clips), network(clips))
    other = {
        key: tensor + 1 if tensor.is_floating_point() else tensor
        for key, tensor in random_i3d().state_dict().items()
    }
    torch.save(other, tmp_path / "i3d.pt")  # another file at the same path
    with pytest.raises(AqaError, match=r"run.pt: .*i3d.pt is not the weights file .* \(sha256 differs\)"):
        rebuild_feature_network(recipe, record, "run.pt")
    tiny, record = build_feature_network(get_recipe("tiny-test"))
    assert (
        rebuild_feature_network(get_recipe("tiny-test"), record, "run.pt").state_dict().keys()
        == tiny.state_dict().keys()
    )
    with pytest.raises(AqaError, match="cannot be rebuilt by torch"):
        rebuild_feature_network(get_recipe("tiny-test"), {**record, "state_sha256": "0" * 64}, "run.pt")


def test_torchvision_state_dicts_load_strictly_and_give_the_classifier_input(tmp_path):
    from torchvision.models import get_model

    torch.manual_seed(4)
    reference = get_model("mc3_18", num_classes=400).eval()
    torch.save(reference.state_dict(), tmp_path / "mc3_18-random.pth")
    swin = tiny_swin_reference()
    torch.save(swin.state_dict(), tmp_path / "swin3d-random.pth")
    with torch.inference_mode():
        network, record = build_feature_network(get_recipe("mc3_18"), tmp_path / "mc3_18-random.pth")
        assert record["layout"] == "video ResNet" and network.feature_dim == 512
        clips = torch.randn(1, 3, 4, 32, 32)
        reference.fc = nn.Identity()
        torch.testing.assert_close(network(clips), reference(clips))
        network, record = build_feature_network(
            get_recipe("swin3d_b"), tmp_path / "swin3d-random.pth", overrides=TINY_SWIN
        )
        assert record["layout"] == "torchvision Video Swin"
        swin.head = nn.Identity()
        torch.testing.assert_close(network(clips), swin(clips))
