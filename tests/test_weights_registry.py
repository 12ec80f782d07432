"""Pretrained weights by name, all offline: a loopback server serves checkpoints in each family's exact
keys and container (generated, small: ResNet-10s in float16); fetch, cache hits, refused hashes, refused
connections, AQA_OFFLINE, downloads killed half way or run twice at once, the user registry, and names in
train/extract end to end. TORCH_HOME points into each test's tmp_path: the real cache is never touched."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.video import MC3_18_Weights, R2Plus1D_18_Weights, R3D_18_Weights, mc3_18

from aqa_cli.models.architectures import VideoResNetFeatures
from aqa_cli.models.backbones import build_backbone
from aqa_cli.models.normalization import NORMALIZATIONS
from aqa_cli.models.registry import (
    HARA_PAGE,
    builtin_records,
    cache_dir,
    cached_path,
    ensure_weights,
    inspect_named,
    load_registry,
    lookup,
    named_record,
    resolve_weights,
)
from aqa_cli.training.config import toml_value
from aqa_cli.util.errors import AqaError
from tests.helpers import run_aqa
from tests.test_weights import HaraResNet, hara_container
from tests.weights_server import WeightsServer, refused_url

KINDS = {  # family, conv, classes of the generated ResNet-10 checkpoints
    "hara-3d": ("hara", "3d", 700),
    "hara-2plus1d": ("hara", "2plus1d", 700),
    "ig65m-2plus1d": ("ig65m", "2plus1d", 400),
    "torchvision-3d": ("torchvision", "3d", 400),
    "torchvision-mc3": ("torchvision", "mc3", 400),
    "torchvision-2plus1d": ("torchvision", "2plus1d", 400),
}


def halved(state: dict) -> dict:
    return {key: t.half() if t.is_floating_point() else t for key, t in state.items()}


@functools.cache
def checkpoint_bytes(kind: str) -> bytes:
    """A ResNet-10 checkpoint file of the family's published layout: Hara et al.'s {'state_dict': ...}
    container with their key names, else a plain state dict with torchvision's names (and fc)."""
    family, conv, classes = KINDS[kind]
    torch.manual_seed(0)
    if family == "hara":
        payload = hara_container(halved(HaraResNet(10, conv, classes).state_dict()), 10)
    else:
        backbone = VideoResNetFeatures(10, conv, family, NORMALIZATIONS["kinetics400"])
        fc = {"fc.weight": torch.randn(classes, 512) * 0.01, "fc.bias": torch.zeros(classes)}
        payload = halved({**backbone.state_dict(), **fc})
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_registry(path: Path, records: dict[str, dict], mirror: str | None = None) -> Path:
    lines = [f"mirror = {toml_value(mirror)}"] if mirror else []
    for name, fields in records.items():
        lines.append(f'[weights."{name}"]')
        lines += [f"{key} = {toml_value(value)}" for key, value in fields.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch) -> Path:
    """torch's checkpoint cache inside tmp_path, no user registry, online (commands inherit it)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("AQA_OFFLINE", raising=False)
    monkeypatch.delenv("AQA_WEIGHTS_REGISTRY", raising=False)
    monkeypatch.delenv("TORCH_HUB", raising=False)
    assert torch.hub._hub_dir is None  # torch.hub.set_dir would bypass TORCH_HOME
    folder = tmp_path / "torch-home" / "hub" / "checkpoints"
    assert cache_dir() == folder
    return folder


@pytest.fixture
def server():
    with WeightsServer() as running:
        yield running


def serve(server: WeightsServer, kind: str, name: str | None = None) -> tuple[str, str, bytes]:
    """Put a generated checkpoint on the server under a hash-prefixed file name; (record name, file, bytes)."""
    data = checkpoint_bytes(kind)
    file = f"test_{kind}-{sha256(data)[:8]}.pth"
    server.files[file] = data
    return name or f"test-{kind}", file, data


def register(tmp_path: Path, monkeypatch, records: dict[str, dict], mirror: str | None = None) -> Path:
    path = write_registry(tmp_path / "weights.toml", records, mirror)
    monkeypatch.setenv("AQA_WEIGHTS_REGISTRY", str(path))
    return path


def record_fields(server: WeightsServer, kind: str, file: str) -> dict:
    family, conv, classes = KINDS[kind]
    return {
        "family": family,
        "depth": 10,
        "conv": conv,
        "classes": classes,
        "file": file,
        "url": server.url(file),
    }


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob(".*.tmp")) if folder.is_dir() else []


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# --- the built-in records ------------------------------------------------------------------------------


def test_builtin_records_cover_the_public_checkpoints() -> None:
    records = builtin_records()
    ig65m = {
        "r2plus1d_34_8_kinetics": ("r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth", 8, 400),
        "r2plus1d_34_32_kinetics": ("r2plus1d_34_clip32_ft_kinetics_from_ig65m-ade133f1.pth", 32, 400),
        "r2plus1d_34_8_ig65m": ("r2plus1d_34_clip8_ig65m_from_scratch-9bae36ae.pth", 8, 487),
        "r2plus1d_34_32_ig65m": ("r2plus1d_34_clip32_ig65m_from_scratch-449a7af9.pth", 32, 359),
    }
    for name, (file, clip, classes) in ig65m.items():
        record = records[name]
        assert (record.family, record.depth, record.conv, record.clip, record.classes) == (
            "ig65m",
            34,
            "2plus1d",
            clip,
            classes,
        )
        assert record.file == file and record.sha256 == file.rsplit("-", 1)[1].removesuffix(".pth")
        assert record.url == f"https://github.com/moabitcoin/ig65m-pytorch/releases/download/v1.0.0/{file}"
        assert record.normalization == "kinetics400"
    for name, conv, enum in [
        ("r3d_18", "3d", R3D_18_Weights),
        ("mc3_18", "mc3", MC3_18_Weights),
        ("r2plus1d_18", "2plus1d", R2Plus1D_18_Weights),
    ]:
        record, weights = records[name], enum.KINETICS400_V1
        assert (record.family, record.depth, record.conv, record.classes) == ("torchvision", 18, conv, 400)
        assert record.url == weights.url and record.file == Path(weights.url).name
        assert weights.url.endswith(f"-{record.sha256}.pth") and len(record.sha256) == 8
        assert record.size_mb == weights.meta["_file_size"]
    hara = [f"r3d{d}_{m}_200ep" for d in (18, 34, 50, 101, 152, 200) for m in ("K", "KM")]
    hara += [f"r2p1d{d}_K_200ep" for d in (18, 34, 50)]
    for name in hara:
        record = records[name]
        assert record.family == "hara" and record.file == f"{name}.pth" and record.page == HARA_PAGE
        assert not record.downloadable and record.normalization == "hara"
        assert record.classes == (1039 if "_KM_" in name else 700)
        assert record.conv == ("2plus1d" if name.startswith("r2p1d") else "3d")


def test_the_cache_is_torchvisions_own(cache: Path) -> None:
    """torchvision's load_state_dict_from_url keeps <hub dir>/checkpoints/<file name of the URL>."""
    for name in ("r3d_18", "mc3_18", "r2plus1d_18"):
        url = lookup(name).url
        assert cached_path(lookup(name)) == Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


# --- fetching ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_family_fetches_verified_and_loads(kind: str, server, cache, tmp_path, monkeypatch) -> None:
    name, file, data = serve(server, kind)
    register(tmp_path, monkeypatch, {name: record_fields(server, kind, file)})
    record = lookup(name)
    assert record.sha256 == sha256(data)[:8]  # taken from the file name, like torch.hub
    calls = []
    path = ensure_weights(record, lambda r, done, total: calls.append((r.name, done, total)))

    assert path == cache / file and path.read_bytes() == data
    assert calls[0] == (name, 0, len(data)) and calls[-1] == (name, len(data), len(data))
    assert [done for _, done, _ in calls] == sorted(done for _, done, _ in calls)
    assert leftovers(cache) == [] and server.requests[file] == 1
    family, conv, classes = KINDS[kind]
    summary = inspect_named(record)
    assert (summary["family"], summary["conv"], summary["depth"], summary["classes"]) == (
        family,
        conv,
        10,
        classes,
    )
    assert summary["name"] == name and summary["sha256"] == sha256(data)
    backbone = build_backbone(10, conv, weights=resolve_weights(name).path)
    assert backbone.family == family and str(cache / file) in backbone.weights_summary

    assert ensure_weights(record) == path and server.requests[file] == 1  # a cache hit: no request


def test_fetch_command_downloads_once_then_finds_the_cache(server, cache, tmp_path, monkeypatch) -> None:
    name, file, data = serve(server, "torchvision-3d")
    register(tmp_path, monkeypatch, {name: record_fields(server, "torchvision-3d", file)})
    first = run_aqa("weights", "fetch", name, check=0)
    assert f"{name}: downloaded to {cache / file}" in first.stdout
    assert (cache / file).read_bytes() == data and server.requests[file] == 1
    second = run_aqa("weights", "fetch", name, check=0)
    assert f"{name}: already in the cache: {cache / file}" in second.stdout and server.requests[file] == 1

    listed = {row["name"]: row for row in json.loads(run_aqa("weights", "list", "--json", check=0).stdout)}
    assert listed[name]["cached"] is True and listed[name]["path"] == str(cache / file)
    assert listed["r2plus1d_34_8_kinetics"]["cached"] is False and "r3d50_KM_200ep" in listed
    inspected = json.loads(run_aqa("weights", "inspect", name, "--json", check=0).stdout)
    assert inspected["name"] == name and inspected["family"] == "torchvision" and inspected["depth"] == 10


def test_a_wrong_hash_is_refused_and_nothing_is_kept(server, cache, tmp_path, monkeypatch) -> None:
    name, file, data = serve(server, "hara-3d")
    fields = {**record_fields(server, "hara-3d", file), "sha256": sha256(b"another file")}
    register(tmp_path, monkeypatch, {name: fields})
    result = run_aqa("weights", "fetch", name, check=2)
    line = one_line_error(result)
    assert "sha256" in line and server.url(file) in line and "nothing was kept" in line
    assert not (cache / file).exists() and leftovers(cache) == [] and server.requests[file] == 1


def test_a_broken_off_download_is_refused_and_nothing_is_kept(server, cache, tmp_path, monkeypatch) -> None:
    name, file, data = serve(server, "torchvision-2plus1d")
    register(tmp_path, monkeypatch, {name: record_fields(server, "torchvision-2plus1d", file)})
    server.stop_after = len(data) // 2
    with pytest.raises(AqaError) as caught:
        ensure_weights(lookup(name))
    assert server.url(file) in str(caught.value) and "rerun" in str(caught.value)
    assert not (cache / file).exists() and leftovers(cache) == []
    server.stop_after = None
    assert ensure_weights(lookup(name)).read_bytes() == data


def test_a_refused_connection_gives_the_offline_line_before_any_work(cache, tmp_path, monkeypatch) -> None:
    url = refused_url("weights-1a2b3c4d.pth")
    register(
        tmp_path,
        monkeypatch,
        {
            "lab-r3d": {
                "family": "hara",
                "depth": 10,
                "conv": "3d",
                "file": "weights-1a2b3c4d.pth",
                "url": url,
            }
        },
    )
    run = tmp_path / "run"
    result = run_aqa("train", "--weights", "lab-r3d", "--store", tmp_path / "none.h5", "--out", run, check=2)
    line = one_line_error(result)
    assert "weights-1a2b3c4d.pth" in line and url in line and f"{cache}/" in line
    assert not run.exists() and leftovers(cache) == [] and not (cache / "weights-1a2b3c4d.pth").exists()


def test_offline_stops_before_any_request(server, cache, tmp_path, monkeypatch) -> None:
    name, file, _ = serve(server, "ig65m-2plus1d")
    register(tmp_path, monkeypatch, {name: record_fields(server, "ig65m-2plus1d", file)})
    monkeypatch.setenv("AQA_OFFLINE", "1")
    out = tmp_path / "features.h5"
    for command in (
        ["weights", "fetch", name],
        ["extract", "--weights", name, "--store", tmp_path / "x.h5", "--out", out],
    ):
        line = one_line_error(run_aqa(*command, check=2))
        assert "AQA_OFFLINE=1" in line and server.url(file) in line and f"{cache}/ as {file}" in line
    assert server.requests[file] == 0 and not out.exists() and not cache.exists()


def test_files_without_a_direct_link_get_instructions(cache, tmp_path, monkeypatch) -> None:
    result = run_aqa("weights", "fetch", "r3d34_K_200ep", "r2p1d50_K_200ep", check=1)
    for file in ("r3d34_K_200ep.pth", "r2p1d50_K_200ep.pth"):
        assert f"download {file} and put it in {cache}/" in result.stdout
    assert HARA_PAGE in result.stdout and not cache.exists()
    with pytest.raises(AqaError, match="has no direct download"):
        resolve_weights("r3d34_K_200ep")

    # put there by hand (a user-registered record of the same kind, as a ResNet-10), it is found offline
    monkeypatch.setenv("AQA_OFFLINE", "1")
    data = checkpoint_bytes("hara-3d")
    register(
        tmp_path,
        monkeypatch,
        {
            "hara-r3d10": {
                "family": "hara",
                "depth": 10,
                "conv": "3d",
                "file": "r3d10_K_200ep.pth",
                "page": HARA_PAGE,
            }
        },
    )
    cache.mkdir(parents=True)
    (cache / "r3d10_K_200ep.pth").write_bytes(data)
    resolved = resolve_weights("hara-r3d10")
    assert resolved.path == cache / "r3d10_K_200ep.pth" and resolved.sha256 == sha256(data)
    assert resolved.name == "hara-r3d10"


def _wait_for_partial(folder: Path, process: subprocess.Popen, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        partials = list(folder.glob(".*.tmp")) if folder.is_dir() else []
        if partials and partials[0].stat().st_size > 0:
            return partials[0]
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError("the download never started")


def test_a_download_killed_half_way_leaves_nothing_and_a_rerun_completes(
    server, cache, tmp_path, monkeypatch
) -> None:
    name, file, data = serve(server, "torchvision-3d")
    register(tmp_path, monkeypatch, {name: record_fields(server, "torchvision-3d", file)})
    server.trickle_s = 0.05  # ~25 s for the whole file: it is killed long before
    fetch = subprocess.Popen(
        [sys.executable, "-m", "aqa_cli", "weights", "fetch", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    partial = _wait_for_partial(cache, fetch)
    os.kill(fetch.pid, signal.SIGKILL)
    fetch.communicate()
    assert fetch.returncode == -signal.SIGKILL
    assert not (cache / file).exists() and 0 < partial.stat().st_size < len(data)

    server.trickle_s = 0.0
    rerun = run_aqa("weights", "fetch", name, check=0)
    assert f"downloaded to {cache / file}" in rerun.stdout
    assert (cache / file).read_bytes() == data and leftovers(cache) == [] and server.requests[file] == 2


def test_two_fetches_at_once_download_once(server, cache, tmp_path, monkeypatch) -> None:
    name, file, data = serve(server, "torchvision-3d")
    register(tmp_path, monkeypatch, {name: record_fields(server, "torchvision-3d", file)})
    server.trickle_s = 0.005  # a few seconds for the whole file
    first = subprocess.Popen(
        [sys.executable, "-m", "aqa_cli", "weights", "fetch", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_for_partial(cache, first)
    second: dict = {}

    def fetch_too() -> None:
        try:
            second["path"] = ensure_weights(lookup(name))
        except Exception as exc:  # noqa: BLE001 - reported below
            second["error"] = exc

    thread = threading.Thread(target=fetch_too)
    thread.start()  # while the first is downloading: it waits for the lock, then finds the file
    out, err = first.communicate(timeout=300)
    thread.join(timeout=300)
    assert first.returncode == 0, err
    assert f"{name}: downloaded to {cache / file}" in out.decode()
    assert "error" not in second and second["path"] == cache / file
    assert (cache / file).read_bytes() == data and server.requests[file] == 1 and leftovers(cache) == []


# --- the user registry ---------------------------------------------------------------------------------


def test_a_mirror_serves_builtin_names_in_the_public_format(server, cache, tmp_path, monkeypatch) -> None:
    """mc3_18 from a lab mirror (its file generated here, torchvision's own layout at full size): found by
    torchvision itself afterwards, and the backbone is bit-identical to torchvision's mc3_18."""
    torch.manual_seed(0)
    reference = mc3_18().eval()
    buffer = io.BytesIO()
    torch.save(reference.state_dict(), buffer)
    data = buffer.getvalue()
    file = lookup("mc3_18").file
    server.files[file] = data
    path = register(tmp_path, monkeypatch, {"mc3_18": {"sha256": sha256(data)}}, mirror=server.base + "/")
    record = lookup("mc3_18")
    assert record.url == server.url(file) and record.source == str(path)
    assert (record.family, record.conv, record.depth) == ("torchvision", "mc3", 18)
    assert load_registry()["r3d_18"].url == server.url(lookup("r3d_18").file)

    resolved = resolve_weights("mc3_18")
    assert resolved.path == cache / file and resolved.sha256 == sha256(data)
    backbone = build_backbone(18, "mc3", weights=resolved.path).eval()
    # torchvision finds the same file in its cache (no download: there is no network)
    again = mc3_18(weights=MC3_18_Weights.KINETICS400_V1).eval()
    reference.fc = again.fc = nn.Identity()
    clip = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(backbone(clip), reference(clip)) and torch.equal(again(clip), reference(clip))


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (
            '[weights.x]\nfamily = "hara"\ndepth = 10\nconv = "3d"\nfile = "x.pth"\nurl = "http://h/x.pth"\ncolour = "red"',
            "unknown field(s) colour",
        ),
        ('[weights.x]\nfamily = "hara"\ndepth = 10\nfile = "x.pth"', "lacks conv, url (or page)"),
        (
            '[weights.x]\nfamily = "hara"\ndepth = "ten"\nconv = "3d"\nfile = "x.pth"\npage = "p"',
            "depth must be an integer",
        ),
        (
            '[weights.x]\nfamily = "hara"\ndepth = 10\nconv = "mc3"\nfile = "x.pth"\npage = "p"',
            "family/conv hara/mc3",
        ),
        ('[weights.x]\nfamily = "hara"\ndepth = 12\nconv = "3d"\nfile = "../x.pth"\npage = "p"', "depth 12"),
        (
            '[weights.x]\nfamily = "hara"\ndepth = 10\nconv = "3d"\nfile = "../x.pth"\npage = "p"',
            "plain file name",
        ),
        ('[weights.r3d_18]\nsha256 = "xyz"', "hex digits"),
        ("mirror = 3", "mirror must be a URL"),
        ("[weights", "not valid TOML"),
    ],
)
def test_a_bad_user_registry_is_one_line_naming_it(
    tmp_path: Path, monkeypatch, content: str, fragment: str
) -> None:
    path = tmp_path / "weights.toml"
    path.write_text(content + "\n")
    monkeypatch.setenv("AQA_WEIGHTS_REGISTRY", str(path))
    with pytest.raises(AqaError) as caught:
        load_registry()
    message = str(caught.value)
    assert fragment in message and str(path) in message and "\n" not in message


def test_weights_values_are_names_or_paths(tmp_path: Path, monkeypatch) -> None:
    assert named_record("r3d_18").name == "r3d_18"
    assert named_record("weights/r3d_18.pth") is None and named_record("missing.pth") is None
    local = tmp_path / "r3d_18"
    local.write_bytes(b"a file wins over a name")
    monkeypatch.chdir(tmp_path)
    assert named_record("r3d_18") is None
    with pytest.raises(AqaError, match="neither a file nor a weights name"):
        named_record("r3d_19")
    with pytest.raises(AqaError, match="no such file"):
        resolve_weights(tmp_path / "missing.pth")


def test_experiment_matches_named_weights_to_cells(server, cache, tmp_path, monkeypatch) -> None:
    from aqa_cli.pipelines.experiment import Cell, weights_for

    records = {}
    for kind in ("torchvision-3d", "hara-2plus1d"):
        name, file, _ = serve(server, kind)
        records[name] = record_fields(server, kind, file)
    register(tmp_path, monkeypatch, records)
    names = list(records)
    assert weights_for(Cell(10, "3d", 8, ""), names) == "test-torchvision-3d"
    assert weights_for(Cell(10, "2plus1d", 8, ""), names) == "test-hara-2plus1d"
    assert sum(server.requests.values()) == 2


# --- names end to end ----------------------------------------------------------------------------------

TINY = ["--depth", "10", "--conv", "3d", "--clip", "8", "--frames", "8", "--crop", "32", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    run_aqa("synth", root / "videos", "--videos", "8", "--frames", "40", "--seed", "5", check=0)
    manifest = root / "videos" / "manifest.csv"
    run_aqa(
        "preprocess",
        manifest,
        "--out",
        root / "tiny.h5",
        "--frames",
        "12",
        "--fit",
        "tail",
        "--workers",
        "2",
        check=0,
    )
    return root / "tiny.h5"


def test_a_name_trains_and_extracts_end_to_end_and_eval_needs_no_network(
    tiny_store: Path, server, cache, tmp_path, monkeypatch
) -> None:
    from aqa_cli.checkpoints.io import load_checkpoint
    from aqa_cli.stores.feature_store import FeatureStore

    name, file, data = serve(server, "torchvision-3d", "lab-r3d10")
    register(
        tmp_path,
        monkeypatch,
        {name: {**record_fields(server, "torchvision-3d", file), "sha256": sha256(data)}},
    )
    run = tmp_path / "run"
    train = ["--epochs", "1", "--batch-size", "4", "--workers", "0", "--no-test-curve"]
    run_aqa("train", "--store", tiny_store, "--out", run, "--weights", name, *TINY, *train, check=0)
    assert server.requests[file] == 1 and (cache / file).read_bytes() == data
    payload = load_checkpoint(run / "last.pt")
    assert payload["backbone_weights"] == {"name": name, "path": str(cache / file), "sha256": sha256(data)}
    assert payload["model_config"]["family"] == "torchvision" and payload["train_config"]["weights"] == name

    features = tmp_path / "features.h5"
    run_aqa(
        "extract",
        "--store",
        tiny_store,
        "--out",
        features,
        "--weights",
        name,
        *TINY,
        "--workers",
        "0",
        check=0,
    )
    assert server.requests[file] == 1  # found in the cache
    with FeatureStore(features) as store:
        backbone = store.backbone
    assert backbone["weights_name"] == name and backbone["weights_sha256"] == sha256(data)
    assert backbone["weights"] == str(cache / file) and backbone["family"] == "torchvision"
    assert re.search(rf"weights name +│ {name} ", run_aqa("features", "info", features, check=0).stdout)

    monkeypatch.setenv("AQA_OFFLINE", "1")
    (cache / file).unlink()  # the checkpoint holds the backbone: eval needs neither the file nor a network
    evaluation = json.loads(run_aqa("eval", "--run", run, "--device", "cpu", "--json", check=0).stdout)
    assert "rho" in evaluation
    offline = run_aqa(
        "train", "--store", tiny_store, "--out", tmp_path / "again", "--weights", name, *TINY, *train, check=2
    )
    assert "AQA_OFFLINE=1" in one_line_error(offline) and not (tmp_path / "again").exists()
