"""The recipes' weights by name, offline: the published records, files identified by their git blob
SHA-1 or pinned on first download (a loopback server serves small files in each published layout),
`aqa weights inspect` on Swin and I3D files, and `aqa recipes list`."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
import torch

from aqa_cli.models.recipes import build_feature_network, get_recipe, recipe_names
from aqa_cli.models.registry import builtin_records, cached_path, ensure_weights, lookup, pinned_sha256
from aqa_cli.util.errors import AqaError
from tests.helpers import run_aqa
from tests.test_recipes import NARROW_I3D, random_i3d, release_key, tiny_swin_reference
from tests.test_weights_registry import cache, register, server  # noqa: F401 - fixtures


def i3d_bytes(seed: int = 0) -> bytes:
    state = random_i3d().state_dict()
    if seed:
        state = {k: v + seed if v.is_floating_point() else v for k, v in state.items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def i3d_record(weights_server, file: str, **fields) -> dict:
    return {
        "family": "i3d",
        "depth": 0,
        "conv": "",
        "network": "i3d",
        "file": file,
        "url": weights_server.url(file),
        **fields,
    }


def test_every_recipe_names_weights_of_its_own_network():
    records = builtin_records()
    for name in recipe_names():
        recipe = get_recipe(name)
        if recipe.weights is None:
            continue
        record = records[recipe.weights]
        assert record.network in (recipe.network, "resnet"), name
        assert record.url.startswith("https://") and (
            record.sha256 or record.git_sha1 or record.trust_first_download
        )
    vst = records["vst-swin-b-k600"]
    assert vst.url == (
        "https://github.com/SwinTransformer/storage/releases/download/v1.0.4/"
        "swin_base_patch244_window877_kinetics600_22k.pth"
    )
    assert vst.classes == 600 and vst.trust_first_download
    assert records["i3d-kinetics-rgb-hassony2"].git_sha1 == "2a7c22e23e6c74f50a0166ce61110bccd2ab48bb"
    assert records["i3d-kinetics-rgb-piergiaj"].git_sha1 == "73a4fd1d87eb3dbd97f33a9779fa1caa3d28111a"
    assert records["i3d-kinetics-rgb-hassony2"].url.endswith(
        "kinetics_i3d_pytorch/raw/master/model/model_rgb.pth"
    )


def test_a_file_known_by_its_git_blob_is_checked_and_its_sha256_pinned(server, tmp_path, monkeypatch, cache):  # noqa: F811
    data = i3d_bytes()
    server.files["rgb_test.pt"] = data
    register(
        tmp_path, monkeypatch, {"test-i3d": i3d_record(server, "rgb_test.pt", git_sha1=git_blob_sha1(data))}
    )
    network, record = build_feature_network(get_recipe("i3d-tsa"), "test-i3d", overrides=NARROW_I3D)
    assert record["name"] == "test-i3d" and record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["layout"].startswith("piergiaj") and network.feature_dim == 64
    assert pinned_sha256(lookup("test-i3d")) == hashlib.sha256(data).hexdigest()
    assert (cache / ".rgb_test.pt.sha256").is_file()

    # the cached copy changes: it is not the file any more; offline, one line says so
    cached_path(lookup("test-i3d")).write_bytes(i3d_bytes(seed=1))
    monkeypatch.setenv("AQA_OFFLINE", "1")
    with pytest.raises(AqaError, match=r"is not the file test-i3d names .*recorded on first download"):
        ensure_weights(lookup("test-i3d"))


def test_a_download_with_another_git_blob_is_refused_and_nothing_kept(server, tmp_path, monkeypatch, cache):  # noqa: F811
    server.files["rgb_test.pt"] = i3d_bytes(seed=1)
    expected = git_blob_sha1(i3d_bytes())
    register(tmp_path, monkeypatch, {"test-i3d": i3d_record(server, "rgb_test.pt", git_sha1=expected)})
    with pytest.raises(AqaError, match=f"not test-i3d's git blob SHA-1 {expected}; nothing was kept"):
        ensure_weights(lookup("test-i3d"))
    assert not cached_path(lookup("test-i3d")).exists() and not pinned_sha256(lookup("test-i3d"))


def test_a_file_without_any_published_hash_is_trusted_once_then_pinned(server, tmp_path, monkeypatch, cache):  # noqa: F811
    server.files["rgb_test.pt"] = first = i3d_bytes()
    fields = i3d_record(server, "rgb_test.pt", trust_first_download=True)
    register(tmp_path, monkeypatch, {"test-i3d": fields})
    assert ensure_weights(lookup("test-i3d")).read_bytes() == first
    cached_path(lookup("test-i3d")).unlink()
    server.files["rgb_test.pt"] = i3d_bytes(seed=1)  # the server now holds another file
    with pytest.raises(AqaError, match="recorded on first download"):
        ensure_weights(lookup("test-i3d"))
    register(tmp_path, monkeypatch, {"test-i3d": {**fields, "trust_first_download": False}})
    with pytest.raises(AqaError, match="has no sha256 to check its download against"):
        ensure_weights(lookup("test-i3d"))


def test_weights_inspect_and_recipes_list_on_the_command_line(tmp_path):
    swin = tmp_path / "swin.pth"
    state = tiny_swin_reference().state_dict()
    torch.save({"state_dict": {release_key(k): v for k, v in state.items()}, "meta": {}}, swin)
    result = run_aqa("weights", "inspect", str(swin), "--json", check=0)
    summary = json.loads(result.stdout)
    assert summary["layout"] == "Video Swin release (backbone.*, cls_head.*)"
    assert summary["holds"].startswith("a Video Swin") and summary["tensors"] == len(state)

    rows = {row["name"]: row for row in json.loads(run_aqa("recipes", "list", "--json", check=0).stdout)}
    assert rows["vst-k600"]["spatial"]["crop"] == [224, 300] and rows["vst-k600"]["layout"] == {
        "rule": "trim_center"
    }
    assert rows["i3d-core"]["layout"]["starts"][-1] == 86 and rows["i3d-tsa"]["frames"]["count"] == 96
    assert rows["vst-k600"]["cached"] is False and rows["tiny-test"]["cached"] is None
