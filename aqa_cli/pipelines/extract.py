"""`aqa extract`: run a frozen backbone over every sample of a video store once, into a feature store.

Crash-safe and resumable like `aqa preprocess`: each block of `batch_size` samples is written to
`OUT.partial/` as its own file (`PartialWork`) and skipped when rerun. Blocks sit at fixed rows, so a
resumed run computes every block exactly as an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from aqa_cli.data.datasets import ViewBlocks
from aqa_cli.data.windows import View, WindowConfig, check_window, extraction_views
from aqa_cli.models.architectures import VideoResNetFeatures
from aqa_cli.models.model import clip_count, clip_features
from aqa_cli.models.normalization import model_input
from aqa_cli.models.provenance import backbone_record, frozen_backbone
from aqa_cli.models.registry import resolve_weights
from aqa_cli.pipelines.options import ExtractOptions
from aqa_cli.stores.feature_store import DTYPES, FeatureLabels, FeatureStore, write_feature_store
from aqa_cli.stores.video_store import VideoStore
from aqa_cli.util.errors import AqaError
from aqa_cli.util.runtime import inference
from aqa_cli.util.safe_output import PartialWork, output_lock


@dataclass
class ExtractReport:
    out: Path
    samples: int
    computed: int  # samples whose features were computed by this run
    reused: int  # samples found finished in OUT.partial/ (or the whole store, when up to date)
    seconds: float
    up_to_date: bool = False
    attributes: dict = dataclasses.field(default_factory=dict)


@dataclass
class _Extraction:
    """Everything an extraction needs, resolved from the options and the video store."""

    out: Path
    labels: FeatureLabels
    window: WindowConfig
    views: list[View]
    backbone: VideoResNetFeatures
    precision: str
    attributes: dict  # the feature store's root attributes; also what a resumed run must match


def extract_features(
    options: ExtractOptions, progress: Callable[[str, int, int], None] | None = None
) -> ExtractReport:
    """Run the frozen backbone over every sample of a video store once and write a feature store.

    `progress(last_id, samples, total)` is called after every block with the samples it finished.
    Rerunning resumes from `OUT.partial/`; a store already made with the same settings is left as it is.
    """
    started = time.perf_counter()
    plan = _plan_extraction(options)
    out, count, attributes = plan.out, len(plan.labels.ids), plan.attributes
    with output_lock(out):
        if out.exists():
            with FeatureStore(out) as existing:
                made_with = {key: existing.attributes.get(key) for key in attributes}
            if made_with == json.loads(json.dumps(attributes)):
                return ExtractReport(out, count, 0, count, time.perf_counter() - started, True, attributes)
            raise AqaError(
                f"{out} holds features made with other settings ({_differences(made_with, attributes)}); "
                "choose another --out, or delete it to extract again"
            )
        partial = BlockPartial(out, attributes)
        starts = list(range(0, count, options.batch_size))
        reused = sum(min(options.batch_size, count - start) for start in starts if partial.has(start))
        if progress is not None and reused:
            progress("(already extracted)", reused, count)
        _extract_blocks(
            options, plan, [start for start in starts if not partial.has(start)], partial, progress
        )
        clips = options.frames // options.clip
        write_feature_store(
            out,
            attributes,
            plan.labels,
            np.full(count, clips, dtype=np.int32),
            (len(plan.views), clips, plan.backbone.feature_dim),
            options.dtype,
            (partial.read(start) for start in starts),
        )
        partial.remove()
    return ExtractReport(out, count, count - reused, reused, time.perf_counter() - started, False, attributes)


def _plan_extraction(options: ExtractOptions) -> _Extraction:
    if options.dtype not in DTYPES:
        raise AqaError(f"unknown --dtype {options.dtype!r}; choose one of {', '.join(DTYPES)}")
    if options.batch_size < 1:
        raise AqaError("--batch-size must be at least 1")
    clip_count(options.frames, options.clip)
    with VideoStore(options.store) as store:
        config = store.config
        labels = FeatureLabels(
            ids=store.column("id").tolist(),
            splits=store.column("split").tolist(),
            difficulty=store.column("difficulty"),
            scores={"score": store.column("score")},
            actions=store.column("action").tolist(),
        )
        video_store = {
            "path": str(store.path.resolve()),
            "samples": len(store),
            "frames": config.frames,
            "fit": config.fit,
            "width": config.width,
            "height": config.height,
            "labels_sha256": labels.digest(),
        }
    if not labels.ids:
        raise AqaError(f"{options.store} holds no samples; preprocess videos into it first")
    window = WindowConfig(options.frames, crop=options.crop, flip=False)
    window = check_window(window, config.frames, config.height, config.width, options.store)
    views = extraction_views(window.jitter, options.views)
    precision = inference(options.device, options.precision).precision
    resolved = resolve_weights(options.weights) if options.weights else None  # a name: found or downloaded
    weights = str(resolved.path) if resolved is not None else None
    backbone = frozen_backbone(
        options.depth,
        options.conv,
        weights,
        options.family or None,
        options.normalization or None,
        options.seed,
    )
    attributes = {
        "source_kind": "extract",
        "source_description": f"{backbone.weights_summary} over {len(labels.ids)} samples of {video_store['path']}",
        "default_target": "score",
        "dtype": options.dtype,
        "clip_len": options.clip,
        "window": dataclasses.asdict(window),
        "views": [dataclasses.asdict(view) for view in views],
        "backbone": backbone_record(backbone, weights, options.seed, resolved and resolved.name),
        "video_store": video_store,
        "batch_size": options.batch_size,
        "precision": precision,
    }
    return _Extraction(options.out_path(), labels, window, views, backbone, precision, attributes)


def _extract_blocks(
    options: ExtractOptions,
    plan: _Extraction,
    starts: list[int],
    partial: BlockPartial,
    progress: Callable[[str, int, int], None] | None,
) -> None:
    """Features of the blocks of rows beginning at `starts`, each written to `partial` when done."""
    run = inference(options.device, plan.precision)
    device = run.device
    backbone = run.prepare(plan.backbone)
    loader = DataLoader(
        ViewBlocks(options.store, plan.window, plan.views, starts, options.batch_size),
        batch_size=None,
        num_workers=min(options.workers, len(starts)),
        pin_memory=device.type == "cuda",
    )
    with torch.inference_mode():
        for start, block in loader:
            rows, views = block.shape[:2]
            video = model_input(block.flatten(0, 1), backbone.normalization, device, run.channels_last)
            with run.autocast():
                found = clip_features(backbone, video, options.clip)
            found = found.float().cpu().numpy().astype(options.dtype)
            partial.write(int(start), found.reshape(rows, views, *found.shape[1:]))
            if progress is not None:
                progress(plan.labels.ids[int(start) + rows - 1], rows, len(plan.labels.ids))


def _differences(made_with: dict, wanted: dict) -> str:
    wanted = json.loads(json.dumps(wanted))
    keys = [key for key in wanted if made_with.get(key) != wanted[key]]
    return "differs in " + ", ".join(keys)


class BlockPartial:
    """`OUT.partial/` of an extraction: one .npy file per finished block of rows (`PartialWork`)."""

    def __init__(self, out: Path, attributes: dict):
        self.work = PartialWork(out, attributes, lambda earlier: _differences(earlier, attributes)).open()

    def _name(self, start: int) -> str:
        return f"rows-{start:09d}.npy"

    def has(self, start: int) -> bool:
        return self.work.path(self._name(start)).is_file()

    def write(self, start: int, features: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, features, allow_pickle=False)
        self.work.write(self._name(start), buffer.getvalue())

    def read(self, start: int) -> np.ndarray:
        return np.load(self.work.path(self._name(start)), allow_pickle=False)

    def remove(self) -> None:
        self.work.remove()
