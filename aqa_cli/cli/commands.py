"""One thin function per command: parse, call the library, print (through `cli.output`)."""

from __future__ import annotations

import dataclasses
import os
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from aqa_cli.cli.app import app, features_app, recipes_app, weights_app
from aqa_cli.evaluation.ridge import RIDGE_POOLINGS
from aqa_cli.pipelines.options import (
    DEFAULT_FRAMES,
    DEFAULT_TIMEOUT,
    ExperimentGrid,
    ExtractOptions,
    PreprocessOptions,
    StreamExtractOptions,
)
from aqa_cli.training.config import GDLT_LAYOUTS, TrainConfig, head_default_text
from aqa_cli.training.presets import PRESETS
from aqa_cli.util.errors import AqaError

AGG_HELP = (
    "Clip aggregation: wd (Weight-Decider), avg (the paper's), attn (attention pooling) or gdlt "
    "(grade-decoupled queries; these two for long videos: one weight per clip)"
)


def choices(name: str, values) -> type[Enum]:
    """A string Enum of `values`, which Typer shows as the option's [a|b|…] choices."""
    return Enum(name, {value: value for value in values}, type=str)


PresetName = choices("PresetName", PRESETS)
GdltLayout = choices("GdltLayout", GDLT_LAYOUTS)
RidgePool = choices("RidgePool", RIDGE_POOLINGS)

PresetOption = Annotated[
    PresetName | None,
    typer.Option(
        help="A named whole recipe (head, options, training) for any --target; flags given override its "
        "settings. "
        + "; ".join(f"{name}: {preset.description}" for name, preset in PRESETS.items())
        + ". (default: none)"
    ),
]
LabelScaleOption = Annotated[
    float | None,
    typer.Option(
        help="attn/gdlt: train on targets divided by this fixed maximum (0: the training split's range "
        f"mapped to [0, 1]). (default: {head_default_text('label_scale')})"
    ),
]
MinLrOption = Annotated[
    float | None,
    typer.Option(help=f"Where the cosine schedule ends. (default: {head_default_text('min_lr')})"),
]
TripletOption = Annotated[
    float | None,
    typer.Option(
        help=f"gdlt: weight of the triplet term on the grade queries' outputs. (default: {head_default_text('triplet')})"
    ),
]
TripletMarginOption = Annotated[
    float | None, typer.Option(help=f"(default: {head_default_text('triplet_margin')})")
]
TripletMiningOption = Annotated[
    str | None,
    typer.Option(
        help="hardest (GDLT's code: hardest positive and negative over the batch, cosine distance) or rolled "
        f"(same query of the next video, other queries of the same one). (default: {head_default_text('triplet_mining')})"
    ),
]
GdltLayoutOption = Annotated[
    GdltLayout | None,
    typer.Option(
        help="gdlt details: aqa (standardized features, LayerNorm after the projection, small query init, "
        "PyTorch's init) or code (GDLT's released code: raw features, BatchNorm after both projection layers, "
        "N(0, 1) queries, final encoder and decoder LayerNorms, nn.Transformer's and nn.Linear's init, "
        "dropout on the attention weights). (default: aqa)",
    ),
]
WidthOption = Annotated[int | None, typer.Option(help="attn/gdlt model width. (default: 128)")]
ProjHiddenOption = Annotated[
    int | None, typer.Option(help="gdlt: hidden width of the input projection (0: one Linear). (default: 0)")
]
EncoderLayersOption = Annotated[int | None, typer.Option(help="gdlt encoder layers. (default: 1)")]
DecoderLayersOption = Annotated[int | None, typer.Option(help="gdlt decoder layers. (default: 2)")]
QueriesOption = Annotated[int | None, typer.Option(help="gdlt grade queries. (default: 4)")]
ContrastiveOption = Annotated[
    bool | None,
    typer.Option(
        "--contrastive/--direct",
        help="With --features: exemplar-based regression, any --agg: predict the quality difference to "
        "training exemplars (the checkpoint carries them) and average exemplar + difference. (default: direct)",
    ),
]
ResplitOption = Annotated[
    int | None,
    typer.Option(
        help="Re-draw the store's train/test partition by this seed (>= 1): train and test of the same sizes "
        "from their union, a partition no one tuned on; recorded, so `aqa eval` uses it. (default: 0, the "
        "store's split)"
    ),
]
EnsembleOption = Annotated[
    int | None,
    typer.Option(
        help="With --features: train N heads (seeds seed..seed+N-1, or the K folds of --folds, N = K) and "
        "write one checkpoint averaging them; eval and score report the members' spread. (default: off)"
    ),
]
RidgeBlendOption = Annotated[
    float | None,
    typer.Option(
        help="With --ensemble: blend in ridge regression on the mean-pooled features, fitted on the training "
        "split (penalty by 5-fold cross-validation inside train, or on --val-fraction's videos), with this "
        "share of the score: 0.5 averages the heads' mean and the ridge. (default: 0, off)"
    ),
]
RidgePoolOption = Annotated[
    RidgePool | None,
    typer.Option(
        help="With --ridge-blend: the ridge's input, the mean of the clip features or their mean and "
        "channel-wise maximum side by side (mean-max). (default: mean)"
    ),
]
AuxTargetOption = Annotated[
    str | None,
    typer.Option(
        help="With --ensemble: also train it on this other score column of the store (e.g. PCS for TES) and "
        "average that ensemble's prediction, mapped onto the target by the line through the training "
        "videos' two labels, into the score with --aux-weight's share. (default: none)"
    ),
]
AuxWeightOption = Annotated[
    float | None,
    typer.Option(help="With --aux-target: its share of the score. (default: 0.5)"),
]
ExemplarsOption = Annotated[
    int | None,
    typer.Option(
        help="With --contrastive: exemplars per video, from the training split only: of the video's "
        "action (the store's action column: AQA-7's action, FineDiving's dive number) where every training "
        "video has one, else of its difficulty where the store has difficulties, else drawn by the seed. "
        f"(default: {TrainConfig.exemplars})"
    ),
]


def _choice_values(options: dict) -> None:
    """The choice options (--preset, --gdlt-layout) as their names (typer gives the enum members)."""
    for name, value in options.items():
        if isinstance(value, Enum):
            options[name] = value.value


def shown(settings: type, name: str) -> str:
    """A setting's default as help texts show it, read from its dataclass."""
    field = next(field for field in dataclasses.fields(settings) if field.name == name)
    value = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


@weights_app.command("inspect")
def weights_inspect(
    path: Annotated[
        str,
        typer.Argument(
            help="A Hara et al., IG-65M or torchvision .pth checkpoint, a Video Swin or Inception-I3D file, "
            "or a weights name from `aqa weights list` (downloaded first if need be)."
        ),
    ],
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Show what a checkpoint holds: family, depth, conv type, classes, parameters, normalization (video
    ResNets), or the network and file layout (Video Swin, Inception-I3D, torchvision's video models)."""
    from aqa_cli.cli.output import print_weights
    from aqa_cli.models.registry import inspect_named, named_record
    from aqa_cli.models.video_networks import inspect_any_weights

    record = named_record(path)
    _fetch_named(path)
    summary = inspect_named(record) if record is not None else inspect_any_weights(path)
    print_weights(summary, str(path), as_json=json_out)


@weights_app.command("list")
def weights_list(
    json_out: Annotated[bool, typer.Option("--json", help="Print every record as JSON.")] = False,
) -> None:
    """List the weights known by name (built in, and from AQA_WEIGHTS_REGISTRY): what each is, its size,
    and whether it is in torch's cache."""
    from aqa_cli.cli.output import print_weights_list
    from aqa_cli.models.registry import load_registry

    print_weights_list(load_registry(), as_json=json_out)


@recipes_app.command("list")
def recipes_list(
    json_out: Annotated[
        bool, typer.Option("--json", help="Print every recipe's full record as JSON.")
    ] = False,
) -> None:
    """List the feature recipes: network, default weights (and whether they are in torch's cache),
    frames, spatial steps, clip layout and feature width."""
    from aqa_cli.cli.output import print_recipes
    from aqa_cli.models.recipes import recipe_rows

    print_recipes(recipe_rows(), as_json=json_out)


@weights_app.command("fetch")
def weights_fetch(
    names: Annotated[list[str], typer.Argument(help="Weights names from `aqa weights list`.")],
) -> None:
    """Download weights by name into torch's cache (<torch hub dir>/checkpoints), hash-checked and atomic;
    a cached file is kept. Files with no direct link (Hara et al.'s shared drive) get instructions
    instead: exit 1 unless every named file is then in the cache."""
    from aqa_cli.cli.output import print_by_hand, print_fetched
    from aqa_cli.models.registry import file_sha256, is_cached_and_valid, lookup, manual_instructions

    records = [lookup(name) for name in names]  # an unknown name stops before any download
    by_hand = 0
    for record in records:
        if not record.downloadable and not is_cached_and_valid(record):
            print_by_hand(manual_instructions(record))
            by_hand += 1
            continue
        path, downloaded = _fetch_one(record)
        print_fetched(record, file_sha256(path), downloaded)
    if by_hand:
        raise typer.Exit(1)


def _fetch_one(record) -> tuple[Path, bool]:
    """The record's file, downloaded with a progress bar if need be; and whether it was downloaded."""
    from aqa_cli.cli.output import download_progress
    from aqa_cli.models.registry import ensure_weights

    reported = []  # the registry reports progress only while it downloads
    with download_progress() as progress:

        def update(*args) -> None:
            reported.append(True)
            progress(*args)

        path = ensure_weights(record, update)
    return path, bool(reported)


def _fetch_named(*values: str) -> None:
    """Download what --weights values name (with a progress bar) before a command does any work; a path
    is left to the command. An unknown name, or a missing file offline, stops here with one line."""
    from aqa_cli.models.registry import named_record

    for value in values:
        record = named_record(value) if value else None
        if record is not None:
            _fetch_one(record)


@app.command()
def preprocess(
    source: Annotated[
        Path | None,
        typer.Argument(
            help="A CSV manifest, an MTL-AQA root (annotation pickles + videos or frame folders), "
            "a FineDiving root (its annotation pickles + the release's per-dive frame folders "
            "<video_name>/<instance_id>/NNNNN.jpg, or untrimmed videos <video_name>.mp4), an AQA-7 root "
            "(split_4_*_list.mat or consolidated_*_list.mat + <action>-out/NNN/img_NNNNN.jpg folders), "
            "or a folder of unlabeled videos. Default: look for an MTL-AQA layout under data/."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Store to write (default: data/<source>.h5).")
    ] = None,
    frames: Annotated[
        int | None,
        typer.Option(
            help=f"Frames kept per sample (default {DEFAULT_FRAMES}: MTL-AQA's window, enough for the 96-frame training "
            "window to end at any of the last 6 frames). Clips of another length are fitted by --fit; "
            "MTL-AQA dives always take the frames ending at the dive's end_frame."
        ),
    ] = None,
    fit: Annotated[
        str,
        typer.Option(
            help="How a clip of another length becomes --frames frames: 'uniform' (evenly spaced "
            "indices over the whole clip, repeating frames of short clips) or 'tail' (the last "
            "--frames frames; short clips repeat their first frame)."
        ),
    ] = PreprocessOptions.fit,
    workers: Annotated[int | None, typer.Option(help="Decoding processes (default: CPU count).")] = None,
    compression: Annotated[
        str, typer.Option(help="Frame compression: none (fastest reads), lzf or gzip (smaller stores).")
    ] = PreprocessOptions.compression,
    shard: Annotated[
        str | None, typer.Option(help="K/N: process only every N-th sample starting at K (0-based).")
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds a video may decode without finishing a clip before it is stopped and reported "
            f"failed (a damaged file can make a decoder hang). (default: {DEFAULT_TIMEOUT:g})"
        ),
    ] = None,
    action: Annotated[
        str | None,
        typer.Option(
            help="Keep one action's samples: an AQA-7 action (diving, gym_vault, ski_big_air, "
            "snowboard_big_air, sync_diving_3m, sync_diving_10m; one model per action is the usual "
            "protocol) or a FineDiving dive number (e.g. 207c)."
        ),
    ] = None,
) -> None:
    """Decode videos into a 171x128 uint8 HDF5 store (resumable: rerun to continue)."""
    from aqa_cli.cli.output import print_preprocess_report, sample_progress
    from aqa_cli.pipelines.preprocess import run_preprocess

    options = PreprocessOptions(
        frames=frames,
        fit=fit,
        workers=workers,
        compression=compression,
        shard=shard,
        timeout=timeout,
        action=action,
    )
    with sample_progress("preprocess") as advance:
        report = run_preprocess(source, out, options, advance)
    print_preprocess_report(report)
    if report.failed:
        raise typer.Exit(1)


@app.command()
def info(
    store: Annotated[Path, typer.Argument(help="A store written by `aqa preprocess` or `aqa merge`.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Read every sample and check its checksums; list damaged samples (exit 1 if any).",
        ),
    ] = False,
) -> None:
    """Summarize a store: samples per split, score and difficulty ranges, frames, size on disk."""
    from aqa_cli.cli.output import print_summary, print_verification
    from aqa_cli.stores.overlap import info_notices
    from aqa_cli.stores.video_store import summarize, verify_store

    summary = summarize(store)
    summary["notices"] = info_notices(store)
    verification = verify_store(store) if verify else None
    if json_out and verification is not None:
        summary["verify"] = verification
    print_summary(summary, as_json=json_out)
    if verification is not None and not json_out:
        print_verification(verification)
    if verification is not None and verification["damaged"]:
        raise typer.Exit(1)


@app.command()
def merge(
    shards: Annotated[list[Path], typer.Argument(help="Shard stores written with --shard K/N.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The merged store to write.")],
) -> None:
    """Join shard stores into one store through HDF5 virtual datasets (no frame data is copied)."""
    from aqa_cli.cli.output import print_summary
    from aqa_cli.stores.merge import merge_stores
    from aqa_cli.stores.video_store import summarize

    merge_stores(shards, out)
    print_summary(summarize(out), as_json=False)


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the videos and manifest.csv into.")],
    videos: Annotated[int, typer.Option(help="How many videos.")] = 48,
    frames: Annotated[int, typer.Option(help="Frames per video (with --long: the longest program).")] = 110,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 0,
    long: Annotated[
        bool,
        typer.Option(
            "--long",
            help="Long programs of different lengths (frames/3 to --frames) whose score is the quality of "
            "1 to 3 short elements at random times, listed in elements.json: a model must find them.",
        ),
    ] = False,
) -> None:
    """Write a small synthetic diving dataset whose score is visible in the motion (or, with --long,
    synthetic long programs)."""
    from aqa_cli.media.synth import write_synthetic_dataset, write_synthetic_programs

    if long:
        manifest = write_synthetic_programs(out_dir, videos, max(16, frames // 3), frames, seed)
    else:
        manifest = write_synthetic_dataset(out_dir, n_videos=videos, n_frames=frames, seed=seed)
    typer.echo(f"wrote {videos} videos and {manifest}")


@app.command()
def train(
    config: Annotated[
        Path | None, typer.Option(help="TOML file of settings (a run's config.toml repeats it).")
    ] = None,
    store: Annotated[
        str | None, typer.Option(help=f"Video store to train on. (default: {shown(TrainConfig, 'store')})")
    ] = None,
    out: Annotated[str | None, typer.Option(help="Run directory. (default: runs/<model>-<time>)")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    features: Annotated[
        str | None,
        typer.Option(
            help="Train only the heads on this feature store (`aqa extract`, `aqa features import`); "
            "backbone, window and loader options are then unused."
        ),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(help="With --features: the score column to predict. (default: the store's first)"),
    ] = None,
    depth: Annotated[
        int | None,
        typer.Option(
            help=f"ResNet depth: 10, 18, 34, 50, 101 (152, 200). (default: {shown(TrainConfig, 'depth')})"
        ),
    ] = None,
    conv: Annotated[
        str | None,
        typer.Option(help=f"3d, 2plus1d or mc3 (torchvision). (default: {shown(TrainConfig, 'conv')})"),
    ] = None,
    clip: Annotated[
        int | None,
        typer.Option(
            help=f"Frames per clip: 8, 16 or 32 (12, 6, 3 clips). (default: {shown(TrainConfig, 'clip')})"
        ),
    ] = None,
    agg: Annotated[
        str | None, typer.Option(help=f"{AGG_HELP}. (default: {shown(TrainConfig, 'agg')})")
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            help="Pretrained backbone: a name from `aqa weights list` (downloaded once), or a .pth file "
            "(Hara, IG-65M, torchvision)."
        ),
    ] = None,
    family: Annotated[
        str | None, typer.Option(help="Backbone variant without --weights: hara, ig65m, torchvision.")
    ] = None,
    normalization: Annotated[
        str | None, typer.Option(help="Override input normalization: hara, ig65m, torchvision, imagenet.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help=f"(default: {head_default_text('epochs')})")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help=f"(default: {head_default_text('batch_size')})")
    ] = None,
    accumulate: Annotated[
        int | None,
        typer.Option(help=f"Gradient accumulation steps. (default: {shown(TrainConfig, 'accumulate')})"),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help=f"Learning rate of new modules (and a random backbone). (default: {head_default_text('lr')})"
        ),
    ] = None,
    backbone_lr: Annotated[
        float | None,
        typer.Option(
            help=f"Learning rate of a pretrained backbone. (default: {shown(TrainConfig, 'backbone_lr')})"
        ),
    ] = None,
    loss: Annotated[
        str | None,
        typer.Option(
            help="l1+l2, l1, l2 or mse (= l2) on the final score (attn/gdlt: on the quality scaled to [0, 1] "
            f"by the training range). (default: {head_default_text('loss')})"
        ),
    ] = None,
    optimizer: Annotated[
        str | None, typer.Option(help=f"adam, adamw or sgd. (default: {head_default_text('optimizer')})")
    ] = None,
    weight_decay: Annotated[
        float | None, typer.Option(help=f"(default: {head_default_text('weight_decay')})")
    ] = None,
    schedule: Annotated[
        str | None,
        typer.Option(
            help=f"Learning rate per step: constant or cosine (to 0). (default: {head_default_text('schedule')})"
        ),
    ] = None,
    warmup: Annotated[
        int | None,
        typer.Option(
            help=f"Epochs of linear learning-rate warm-up. (default: {head_default_text('warmup')})"
        ),
    ] = None,
    dropout: Annotated[
        float | None,
        typer.Option(help=f"Dropout of the attn and gdlt heads. (default: {head_default_text('dropout')})"),
    ] = None,
    clip_crop: Annotated[
        int | None,
        typer.Option(
            help="Train on a random contiguous run of N clips of each longer video (0: all; evaluation "
            f"always sees all). (default: {head_default_text('clip_crop')})"
        ),
    ] = None,
    preset: PresetOption = None,
    label_scale: LabelScaleOption = None,
    min_lr: MinLrOption = None,
    triplet: TripletOption = None,
    triplet_margin: TripletMarginOption = None,
    triplet_mining: TripletMiningOption = None,
    width: WidthOption = None,
    proj_hidden: ProjHiddenOption = None,
    encoder_layers: EncoderLayersOption = None,
    decoder_layers: DecoderLayersOption = None,
    queries: QueriesOption = None,
    gdlt_layout: GdltLayoutOption = None,
    contrastive: ContrastiveOption = None,
    exemplars: ExemplarsOption = None,
    ensemble: EnsembleOption = None,
    ridge_blend: RidgeBlendOption = None,
    ridge_pool: RidgePoolOption = None,
    aux_target: AuxTargetOption = None,
    aux_weight: AuxWeightOption = None,
    stream: Annotated[
        bool | None,
        typer.Option(
            "--stream/--no-stream",
            help="With --features: read every batch from the store, even when it fits in memory (under "
            "2 GiB as float32, read once and batched on the device). (default: off)",
        ),
    ] = None,
    frames: Annotated[
        int | None,
        typer.Option(help=f"Frames per video seen by the model. (default: {shown(TrainConfig, 'frames')})"),
    ] = None,
    jitter: Annotated[
        int | None,
        typer.Option(
            help=f"Training windows end at one of the last N stored frames. (default: {shown(TrainConfig, 'jitter')})"
        ),
    ] = None,
    crop: Annotated[
        int | None,
        typer.Option(help=f"Square crop of the 171x128 frames. (default: {shown(TrainConfig, 'crop')})"),
    ] = None,
    crop_mode: Annotated[
        str | None,
        typer.Option(
            help="Training crops: centre (the paper's, and its authors' loader) or random (anywhere in the "
            f"frame; evaluation always takes the centre). (default: {shown(TrainConfig, 'crop_mode')})"
        ),
    ] = None,
    flip: Annotated[
        bool | None,
        typer.Option(
            "--flip/--no-flip", help=f"Random horizontal flips. (default: {shown(TrainConfig, 'flip')})"
        ),
    ] = None,
    wd_dropout: Annotated[
        float | None,
        typer.Option(
            help=f"Dropout inside the Weight-Decider. (default: {shown(TrainConfig, 'wd_dropout')})"
        ),
    ] = None,
    use_difficulty: Annotated[
        bool | None,
        typer.Option(
            "--use-difficulty/--no-difficulty",
            help=f"Multiply by difficulty. (default: {shown(TrainConfig, 'use_difficulty')})",
        ),
    ] = None,
    val_fraction: Annotated[
        float | None,
        typer.Option(
            help=f"Hold out this part of train to choose the best epoch. (default: {shown(TrainConfig, 'val_fraction')})"
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help=f"(default: {shown(TrainConfig, 'seed')})")] = None,
    resplit: ResplitOption = None,
    device: Annotated[
        str | None,
        typer.Option(help=f"auto, cpu, cuda, cuda:1 ... (default: {shown(TrainConfig, 'device')})"),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="auto, fp32, bf16, fp16 (autocast, on the CPU too; fp16 with a gradient scaler). auto: bf16 on "
            "GPUs with native bf16 (A100/H100 class), else fp32; with --features always fp32 (bf16 there is "
            f"faster on CPUs with native bf16). (default: {shown(TrainConfig, 'precision')})"
        ),
    ] = None,
    channels_last: Annotated[
        str | None,
        typer.Option(
            help=f"auto, on, off (channels-last 3D). (default: {shown(TrainConfig, 'channels_last')})"
        ),
    ] = None,
    grad_checkpoint: Annotated[
        bool | None,
        typer.Option(
            "--grad-checkpoint/--no-grad-checkpoint", help="Recompute activations to save GPU memory."
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help=f"Data loader processes. (default: {shown(TrainConfig, 'workers')})")
    ] = None,
    test_curve: Annotated[
        bool | None,
        typer.Option(
            "--test-curve/--no-test-curve",
            help=f"Evaluate test each epoch for the curves (never for selection). (default: {shown(TrainConfig, 'test_curve')})",
        ),
    ] = None,
) -> None:
    """Fine-tune backbone, FC layers, Weight-Decider and regressor end to end (torchrun for many GPUs).

    With --features, only the heads train, on cached clip features: seconds per epoch on a CPU.
    """
    overrides = {key: value for key, value in locals().items() if key not in ("config", "resume")}
    _choice_values(overrides)
    from aqa_cli.cli.output import print_training_summary, training_progress
    from aqa_cli.training.config import resolve_config
    from aqa_cli.training.dispatch import train as run_training

    if resume and config is None and out is not None and (Path(out) / "config.toml").is_file():
        config = Path(out) / "config.toml"
    settings = resolve_config(config, overrides)
    if (
        os.environ.get("RANK", "0") == "0" and not settings.features
    ):  # one process says it, however many train
        from aqa_cli.cli.output import print_notices
        from aqa_cli.stores.overlap import info_notices

        print_notices(info_notices(settings.store))  # test dives shared with another dataset's train
    if not resume and not settings.features:
        _fetch_named(settings.weights)
    with training_progress() as progress:
        result = run_training(settings, resume=resume, progress=progress)
    print_training_summary(result)


@app.command()
def extract(
    source: Annotated[
        str | None,
        typer.Argument(
            help="With --recipe: raw videos, as `aqa preprocess` takes them (a folder, a CSV manifest with "
            "scores and splits, a dataset root). Without it: a video store (as --store)."
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="Extract from raw video with this feature recipe (e.g. vst-k600, i3d-core, r3d_18): no "
            "frames are written, memory stays flat in video length."
        ),
    ] = None,
    stride: Annotated[
        int | None,
        typer.Option(help="With --recipe: frames between clip starts. (default: the recipe's, or --clip)"),
    ] = None,
    resize: Annotated[
        str | None,
        typer.Option(
            help="With --recipe: how the decode workers resize: exact (torchvision's resize, in numpy, within "
            "one grey level) or ffmpeg (FFmpeg's scaler while converting colours: about 4x faster on HD "
            "video, a few grey levels off). (default: exact)"
        ),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(
            help="With --recipe: K/N, extract only every N-th video starting at K (0-based); join the "
            "shards with `aqa features merge`."
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help=f"With --recipe: seconds a video may decode without progress. (default: {DEFAULT_TIMEOUT:g})"
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(help=f"Video store to extract from. (default: {shown(ExtractOptions, 'store')})"),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(help="Feature store to write. (default: <store>-<conv><depth>-clip<clip>.features.h5)"),
    ] = None,
    depth: Annotated[
        int | None, typer.Option(help=f"ResNet depth. (default: {shown(ExtractOptions, 'depth')})")
    ] = None,
    conv: Annotated[
        str | None,
        typer.Option(help=f"3d, 2plus1d or mc3 (torchvision). (default: {shown(ExtractOptions, 'conv')})"),
    ] = None,
    clip: Annotated[
        int | None, typer.Option(help=f"Frames per clip. (default: {shown(ExtractOptions, 'clip')})")
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            help="Pretrained backbone: a name from `aqa weights list` or a .pth file; without it a random "
            "init drawn from --seed."
        ),
    ] = None,
    family: Annotated[str | None, typer.Option(help="Backbone variant without --weights.")] = None,
    normalization: Annotated[str | None, typer.Option(help="Override the input normalization.")] = None,
    frames: Annotated[
        int | None,
        typer.Option(help=f"Frames per video window. (default: {shown(ExtractOptions, 'frames')})"),
    ] = None,
    crop: Annotated[
        int | None, typer.Option(help=f"Centre crop size. (default: {shown(ExtractOptions, 'crop')})")
    ] = None,
    views: Annotated[
        bool | None,
        typer.Option(
            "--views/--no-views",
            help="Also store the mirrored window and the earliest-ending window (plain and mirrored): "
            f"head training then picks one of the 4 views per sample and epoch. (default: {shown(ExtractOptions, 'views')})",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help=f"Seed of a random-init backbone. (default: {shown(ExtractOptions, 'seed')})"),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help=f"Videos per forward pass (and per resumable block). (default: {shown(ExtractOptions, 'batch_size')})"
        ),
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help=f"float16 or float32. (default: {shown(ExtractOptions, 'dtype')})")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help=f"auto, cpu, cuda ... (default: {shown(ExtractOptions, 'device')})")
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="auto, fp32, bf16, fp16 (autocast). auto: bf16 on GPUs and CPUs with native bf16 (AVX-512 BF16, "
            f"AMX), else fp32. (default: {shown(ExtractOptions, 'precision')})"
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help=f"Frame loading processes. (default: {shown(ExtractOptions, 'workers')})"),
    ] = None,
) -> None:
    """Run a frozen backbone once: per-clip features to a feature store (resumable).

    With --recipe, from raw videos of any length (decoded in worker processes, never stored); without it,
    over a video store with the paper's ResNet windows. Rerun the same command to continue an interrupted
    extraction; an up-to-date store is left as it is.
    """
    given = {key: value for key, value in locals().items() if value is not None}
    from aqa_cli.cli.output import print_extract_report, sample_progress

    if recipe is not None:
        _extract_with_recipe(given)
        return
    from aqa_cli.pipelines.extract import extract_features

    recipe_only = sorted({"stride", "resize", "shard", "timeout"} & given.keys())
    if recipe_only:
        raise AqaError(
            f"--{recipe_only[0]} applies to extraction with --recipe; add --recipe NAME or drop it"
        )
    if "source" in given:
        if "store" in given:
            raise AqaError("give the video store once: as SOURCE or as --store")
        given["store"] = given.pop("source")
    options = ExtractOptions(**given)
    _fetch_named(options.weights)
    with sample_progress("extract") as advance:
        report = extract_features(options, advance)
    print_extract_report(report)


def _extract_with_recipe(given: dict) -> None:
    from aqa_cli.cli.output import print_stream_extract_report, sample_progress
    from aqa_cli.pipelines.stream_extract import extract_from_videos

    video_store_only = sorted(
        given.keys() - {f.name for f in dataclasses.fields(StreamExtractOptions)} - {"store"}
    )
    if video_store_only:
        name = video_store_only[0].replace("_", "-")
        raise AqaError(
            f"--{name} sets the paper's video-store extraction; the recipe decides it with --recipe"
        )
    if "store" in given or "source" not in given:
        raise AqaError(
            "--recipe reads raw videos: give them as SOURCE (a folder, a CSV manifest or a dataset root); a "
            "video store (--store) holds frames already shrunk to 171x128, so extract it without --recipe"
        )
    options = StreamExtractOptions(**given)
    _fetch_named(options.weights)
    with sample_progress("extract") as advance:
        report = extract_from_videos(options, advance)
    print_stream_extract_report(report)
    if report.failed:
        raise typer.Exit(1)


@features_app.command("import")
def features_import(
    source: Annotated[
        Path,
        typer.Argument(help="Folder with the label files and the <id>.npy files (or a subfolder of them)."),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Feature store to write. (default: data/<folder>.features.h5)"),
    ] = None,
    labels: Annotated[
        list[Path] | None,
        typer.Option(
            help="Label file(s) (default: train/val/test .txt/.csv/.tsv or labels.csv in SOURCE); "
            "a file named train/val/test gives its rows that split unless it has a split column."
        ),
    ] = None,
    features_dir: Annotated[
        Path | None, typer.Option(help="Folder of <id>.npy files. (default: found in SOURCE)")
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option(help="Names of the columns of headerless label files, e.g. id,score,difficulty."),
    ] = None,
    dtype: Annotated[str, typer.Option(help="float16 or float32.")] = "float16",
) -> None:
    """Turn per-video clip features (.npy, (clips, dim) each) plus labels into a feature store."""
    from aqa_cli.cli.output import print_import_report
    from aqa_cli.pipelines.import_features import import_features

    column_names = [name.strip() for name in columns.split(",")] if columns else None
    print_import_report(import_features(source, out, labels, features_dir, column_names, dtype))


@features_app.command("merge")
def features_merge(
    shards: Annotated[
        list[Path], typer.Argument(help="Feature stores written with --recipe ... --shard K/N.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The merged feature store to write.")],
) -> None:
    """Join the shards of a recipe extraction into one feature store, in source order."""
    from aqa_cli.cli.output import print_feature_summary
    from aqa_cli.stores.feature_store import summarize_features
    from aqa_cli.stores.merge import merge_feature_stores

    merge_feature_stores(shards, out)
    print_feature_summary(summarize_features(out), as_json=False)


@features_app.command("info")
def features_info(
    path: Annotated[Path, typer.Argument(help="A feature store.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Summarize a feature store: samples per split, feature shape, score columns, backbone and weights."""
    from aqa_cli.cli.output import print_feature_summary
    from aqa_cli.stores.feature_store import summarize_features

    print_feature_summary(summarize_features(path), as_json=json_out)


@app.command()
def experiment(
    config: Annotated[
        Path | None, typer.Option(help="TOML grid (an experiment's experiment.toml repeats it).")
    ] = None,
    depth: Annotated[list[int] | None, typer.Option(help="ResNet depth (repeat for a grid).")] = None,
    conv: Annotated[list[str] | None, typer.Option(help="3d or 2plus1d (repeatable).")] = None,
    clip: Annotated[list[int] | None, typer.Option(help="Frames per clip (repeatable).")] = None,
    agg: Annotated[
        list[str] | None,
        typer.Option(help=f"avg, wd, attn or gdlt (repeatable). (default: {shown(ExperimentGrid, 'agg')})"),
    ] = None,
    target: Annotated[
        list[str] | None, typer.Option(help="Score column of the feature store (repeatable).")
    ] = None,
    seeds: Annotated[
        int | None,
        typer.Option(help=f"Seeds per cell: 0 .. N-1. (default: {shown(ExperimentGrid, 'seeds')})"),
    ] = None,
    folds: Annotated[
        int | None,
        typer.Option(
            help="K-fold cross-validation inside the training split: the folds are drawn once (fixed seed), "
            "every run trains on K-1 folds and is measured on the held-out one (its validation set, at the "
            "last epoch); the test split is not used. The table gives rho mean ± std over folds x seeds. "
            "(default: off)"
        ),
    ] = None,
    finetune: Annotated[
        bool | None,
        typer.Option("--finetune/--frozen", help="Train every run end to end. (default: frozen features)"),
    ] = None,
    features: Annotated[
        str | None, typer.Option(help="Train on this feature store (e.g. imported): aggregations x seeds.")
    ] = None,
    weights: Annotated[
        list[str] | None,
        typer.Option(
            help="Backbone files or weights names (repeatable), matched to cells by depth, conv and "
            "clip<N> in the file name."
        ),
    ] = None,
    views: Annotated[
        bool | None, typer.Option("--views/--no-views", help="Extract augmented views too.")
    ] = None,
    resplit: ResplitOption = None,
    out: Annotated[str | None, typer.Option(help="Output folder. (default: runs/experiment-<time>)")] = None,
    store: Annotated[
        str | None, typer.Option(help=f"Video store. (default: {shown(TrainConfig, 'store')})")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help=f"(default: {head_default_text('epochs')})")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help=f"(default: {head_default_text('batch_size')})")
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(help=f"Learning rate of new modules. (default: {head_default_text('lr')})"),
    ] = None,
    backbone_lr: Annotated[
        float | None, typer.Option(help=f"With --finetune. (default: {shown(TrainConfig, 'backbone_lr')})")
    ] = None,
    val_fraction: Annotated[
        float | None, typer.Option(help="Part of train held out to select each run (and the ridge penalty).")
    ] = None,
    frames: Annotated[int | None, typer.Option(help=f"(default: {shown(TrainConfig, 'frames')})")] = None,
    crop: Annotated[int | None, typer.Option(help=f"(default: {shown(TrainConfig, 'crop')})")] = None,
    loss: Annotated[
        str | None, typer.Option(help=f"l1+l2, l1, l2 or mse. (default: {head_default_text('loss')})")
    ] = None,
    optimizer: Annotated[
        str | None, typer.Option(help=f"adam, adamw or sgd. (default: {head_default_text('optimizer')})")
    ] = None,
    weight_decay: Annotated[
        float | None, typer.Option(help=f"(default: {head_default_text('weight_decay')})")
    ] = None,
    schedule: Annotated[
        str | None, typer.Option(help=f"constant or cosine. (default: {head_default_text('schedule')})")
    ] = None,
    warmup: Annotated[
        int | None, typer.Option(help=f"Warm-up epochs. (default: {head_default_text('warmup')})")
    ] = None,
    dropout: Annotated[
        float | None, typer.Option(help=f"attn/gdlt dropout. (default: {head_default_text('dropout')})")
    ] = None,
    clip_crop: Annotated[
        int | None,
        typer.Option(help=f"Training crop of N clips (0: all). (default: {head_default_text('clip_crop')})"),
    ] = None,
    preset: PresetOption = None,
    label_scale: LabelScaleOption = None,
    min_lr: MinLrOption = None,
    triplet: TripletOption = None,
    triplet_margin: TripletMarginOption = None,
    triplet_mining: TripletMiningOption = None,
    width: WidthOption = None,
    proj_hidden: ProjHiddenOption = None,
    encoder_layers: EncoderLayersOption = None,
    decoder_layers: DecoderLayersOption = None,
    queries: QueriesOption = None,
    gdlt_layout: GdltLayoutOption = None,
    contrastive: ContrastiveOption = None,
    exemplars: ExemplarsOption = None,
    ensemble: EnsembleOption = None,
    ridge_blend: RidgeBlendOption = None,
    ridge_pool: RidgePoolOption = None,
    aux_target: AuxTargetOption = None,
    aux_weight: AuxWeightOption = None,
    stream: Annotated[
        bool | None,
        typer.Option(
            "--stream/--no-stream", help="Stream features from the store even when they fit in memory."
        ),
    ] = None,
    use_difficulty: Annotated[
        bool | None,
        typer.Option(
            "--use-difficulty/--no-difficulty", help=f"(default: {shown(TrainConfig, 'use_difficulty')})"
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help=f"auto, cpu, cuda ... (default: {shown(TrainConfig, 'device')})")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help=f"Loader processes. (default: {shown(TrainConfig, 'workers')})")
    ] = None,
) -> None:
    """Run a grid of trainings and write a table like the paper's Tables I and II (rho mean +- std).

    Depths x conv types x clip lengths x aggregations x seeds, on frozen features extracted once per
    backbone (default) or end to end (--finetune); or aggregations x targets x seeds on --features.
    Writes table.md, table.csv, table.png and results.csv; failed runs are listed, not fatal.
    Training settings not given take each aggregation's defaults (see `aqa train --help`).

    --folds K: K-fold cross-validation inside the training split instead of a test evaluation: folds
    drawn once by a fixed seed, each run validated (and measured at its last epoch) on its held-out
    fold, the test split untouched; the table reports rho mean ± std over folds x seeds.
    """
    options = {key: value for key, value in locals().items() if key != "config"}
    _choice_values(options)
    from aqa_cli.cli.output import ExperimentReporter, print_experiment
    from aqa_cli.pipelines.experiment import resolve_grid, run_experiment

    grid = resolve_grid(config, options)
    if not grid.features:
        _fetch_named(*grid.weights)
    print_experiment(run_experiment(grid, ExperimentReporter()))


@app.command(name="eval")
def evaluate(
    run: Annotated[Path | None, typer.Option(help="Run directory. (default: the latest under runs/)")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="A checkpoint file (instead of --run).")] = None,
    store: Annotated[
        Path | None, typer.Option(help="Store to evaluate on. (default: the training store)")
    ] = None,
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Videos per forward pass.")] = 4,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Spearman rho, R-l2 and MAE on a split, next to the difficulty-only baseline; writes predictions."""
    from aqa_cli.cli.output import print_evaluation
    from aqa_cli.evaluation.evaluate import evaluate_checkpoint

    print_evaluation(evaluate_checkpoint(run, checkpoint, store, split, device, batch_size), as_json=json_out)


@app.command(
    help="Predict the quality and final score of dives from raw videos, with each clip's weight.\n\n"
    "A video is decoded exactly as `aqa preprocess` stores it for the model's training store: T frames "
    "(103 for MTL-AQA) at the centres of T equal bins over the whole video (fit 'uniform': a longer video "
    "is subsampled evenly, a shorter one repeats frames evenly), or its last T frames (fit 'tail'). "
    "The model sees the last 96 of them (its window), centre-cropped, as in `aqa eval`, cut into clips. "
    "Exits 1 if any video could not be read; the others are still scored."
)
def score(
    videos: Annotated[
        list[Path],
        typer.Argument(
            help="Videos in any format FFmpeg reads, or folders of frame images; or, for heads trained with "
            "`aqa train --features`, .npy files of (clips, dim) clip features of the same backbone."
        ),
    ],
    difficulty: Annotated[
        list[float] | None,
        typer.Option(
            help="Degree of difficulty: once for all videos, or once per video in order. "
            "Without it the score is the predicted quality."
        ),
    ] = None,
    action: Annotated[
        list[str] | None,
        typer.Option(
            help="Action or dive number (e.g. diving, 207C): once for all videos, or once per video in "
            "order. A contrastive model compares each video with training exemplars of its action; "
            "without it, of its difficulty, else its seeded fallback exemplars."
        ),
    ] = None,
    run: Annotated[Path | None, typer.Option(help="Run directory (default: the latest under runs/).")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="A checkpoint file (instead of --run).")] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print a JSON list, one object per video, and nothing else.")
    ] = False,
    explain: Annotated[
        Path | None,
        typer.Option(
            help="Draw each clip's middle frame with its weight to this PNG; with several videos, "
            "to PNG_stem-<video stem>.png each."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    precision: Annotated[
        str,
        typer.Option(
            help="auto, fp32, bf16, fp16. auto: bf16 autocast on GPUs and CPUs with native bf16 (AVX-512 BF16, "
            "AMX), else fp32; fp32 forces full precision."
        ),
    ] = "auto",
) -> None:
    from aqa_cli.cli.output import print_scores, sample_progress
    from aqa_cli.evaluation.score import score_videos

    with sample_progress("score") as advance:  # on stderr; shown only for long videos (recipe heads)
        results = score_videos(
            videos, difficulty or [], run, checkpoint, device, explain, advance, precision, action or []
        )
    print_scores(results, as_json=json_out)
    if any("error" in result for result in results):
        raise typer.Exit(1)
