"""`aqa score`: a trained model's predicted quality and final score for raw videos, with clip weights.

How a video of any length becomes the model's input (stated in `aqa score --help` too):

1. It is decoded exactly as `aqa preprocess` stores a clip in the model's training store
   (`media.clips.decode_clip`: same decoder, rotation, 171x128 resize and fit rule) into that store's T
   frames (103 for MTL-AQA). With fit 'uniform' these are the centres of T equal bins over the whole
   video (`sampling.stored_indices`): a longer video is subsampled evenly, a shorter one repeats frames
   evenly. With fit 'tail' they are its last T frames, the first one repeated if it is shorter.
2. The model's evaluation window, as in `aqa eval`: the last 96 (the window's length) of those frames,
   centre crop; it is cut into K clips of `clip_len` frames.
3. The checkpoint's normalization and one forward pass per video: fp32, or bf16 autocast with `--precision
   bf16`, the default (`auto`) on GPUs and CPUs with native bf16 (recorded in each result's `precision`).
   The regressor and the difficulty product stay fp32 (see `models.heads`).

Difficulty: none given -> the score is the quality; one value -> every video; else one per video.
Action (AQA-7's action, FineDiving's dive number), given the same way: a contrastive head compares the
video with its bank's exemplars of that action (else of its difficulty, else its fallback exemplars).
A clip's weight is the Weight-Decider's weight averaged over its 128 channels (each channel's weights
sum to 1 over the clips, so these do too); an `attn` or `gdlt` model gives one weight per clip directly
(its attention pooling, or its grade queries' cross-attention averaged over queries and heads); an `avg`
model weighs its K clips uniformly, 1/K.
A prediction outside the range of the model's training split (recorded in checkpoints at training time)
is reported, with by how much (`outside_training_range`; null when inside, or for a checkpoint with no
record); it is never clamped. The final score is compared with the training scores; a quality alone
(difficulty not given), with the training qualities.
A video that cannot be decoded becomes an entry with an `error` line; the others are still scored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from aqa_cli.checkpoints.io import find_checkpoint, load_checkpoint
from aqa_cli.checkpoints.restore import TrainedModel, trained_model_from
from aqa_cli.data.windows import check_window, select_window
from aqa_cli.evaluation.plots import plot_clip_explanation
from aqa_cli.evaluation.score_common import (
    TIMES_DIFFICULTY,
    action_per_video,
    difficulty_per_video,
    explanation_paths,
    failure_entry,
    member_spread,
    score_fields,
)
from aqa_cli.evaluation.score_features import is_feature_file, score_feature_files
from aqa_cli.evaluation.score_recipe import score_with_recipe
from aqa_cli.media.clips import ClipShape, decode_clip
from aqa_cli.models.normalization import model_input
from aqa_cli.util.errors import AqaError
from aqa_cli.util.runtime import Inference, inference

WEIGHT_DECIDER, UNIFORM = "weight-decider", "uniform"
PER_CLIP = {"attn": "attention", "gdlt": "grade-query attention"}


def score_videos(
    videos: list[Path],
    difficulties: list[float],
    run: Path | None = None,
    checkpoint: Path | None = None,
    device: str = "auto",
    explain: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    precision: str = "auto",
    actions: list[str] | None = None,
) -> list[dict]:
    """One JSON-able dict per video, in order: path, frames_sampled (T), frames_lost, checkpoint, quality,
    difficulty, score, score_rule, source_frames ([first, last) of the window in the video), weights
    (weight-decider or uniform), clips (window_frames, source_frames, weight each) and explanation (the
    PNG, with `explain`); or path, checkpoint and `error` (one line) for a video that cannot be read.
    Heads trained on a recipe's features score videos of any length instead (`score_recipe`: per clip
    start, end and weight; `explain` draws a timeline), calling `progress(video, clips, total)`; heads
    trained on features score .npy files of clip features (`score_features`). `actions`: none, one for all
    or one per video (see the module docstring)."""
    per_video = difficulty_per_video(difficulties, len(videos))
    action_of = action_per_video(actions or [], len(videos))
    path = find_checkpoint(run, checkpoint)
    payload = load_checkpoint(path)
    feature_files = [is_feature_file(video) for video in videos]
    if any(feature_files):  # clip features already extracted: the heads alone
        if not all(feature_files):
            raise AqaError("give either videos or .npy files of clip features to score, not both at once")
        if explain is not None:
            raise AqaError("--explain draws a video's frames; .npy clip features have none: drop --explain")
        return score_feature_files(videos, per_video, action_of, payload, path, device)
    if payload.get("extraction") is not None:  # heads on a recipe's features: any length, timed clips
        paths = explanation_paths(explain, videos)
        return score_with_recipe(videos, per_video, action_of, payload, path, device, paths, progress)
    trained = trained_model_from(payload, path)
    store = trained.store
    shape = ClipShape(store["frames"], store["width"], store["height"])
    window = check_window(trained.window, shape.frames, shape.height, shape.width, trained.path)
    run_as = inference(device, precision)
    run_as.prepare(trained.model)
    results = []
    for video, difficulty, action, png in zip(
        videos, per_video, action_of, explanation_paths(explain, videos), strict=True
    ):
        try:
            frames, indices, meta = decode_clip(video, shape, store["fit"])
        except AqaError as exc:
            results.append(failure_entry(video, trained.path, str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - one unreadable video must not stop the others
            results.append(
                failure_entry(
                    video, trained.path, f"unexpected {type(exc).__name__} while decoding {video}: {exc}"
                )
            )
            continue
        clip = select_window(frames, window, rng=None)
        result = {
            "path": str(video),
            "frames_sampled": len(indices),
            "frames_lost": int(meta["frames_lost"]),
            **_score_clip(trained, clip, indices, difficulty, action, run_as),
        }
        if png is not None:
            result["explanation"] = str(_explain(clip, result, trained.model.clip_len, png))
        results.append(result)
    return results


def _score_clip(
    trained: TrainedModel,
    clip: np.ndarray,
    indices: np.ndarray,
    difficulty: float | None,
    action: str,
    run_as: Inference,
) -> dict:
    """Quality, score and per-clip weights of one (3, frames, crop, crop) uint8 window."""
    model = trained.model
    frames = torch.from_numpy(clip)[None]
    with torch.inference_mode(), run_as.autocast():
        video = model_input(frames, model.backbone.normalization, run_as.device, run_as.channels_last)
        given = None if difficulty is None else torch.tensor([difficulty], device=run_as.device)
        output = model(video, given, actions=[action])  # a contrastive head's exemplars: by these
    quality = float(output.quality[0])
    if output.clip_weights is None:
        clip_count = clip.shape[1] // model.clip_len
        weights, kind = np.full(clip_count, 1 / clip_count), UNIFORM
    elif output.clip_weights.dim() == 2:  # one weight per clip (attn, gdlt)
        weights, kind = output.clip_weights[0].float().cpu().numpy(), PER_CLIP[model.head.agg]
    else:
        weights, kind = output.clip_weights[0].float().mean(dim=-1).cpu().numpy(), WEIGHT_DECIDER
    window_start = len(indices) - clip.shape[1]  # the window is the last frames of the stored ones
    return {
        **score_fields(trained.payload, trained.path, quality, difficulty, model.head.use_difficulty, action),
        "precision": run_as.precision,
        **member_spread(output),
        "source_frames": [int(indices[window_start]), int(indices[-1]) + 1],
        "weights": kind,
        "clips": [
            _clip_entry(k, model.clip_len, indices[window_start:], float(weight))
            for k, weight in enumerate(weights)
        ],
    }


def _clip_entry(k: int, clip_len: int, window_indices: np.ndarray, weight: float) -> dict:
    """Clip k's [first, last) frames in the window and in the source video (indices ascend)."""
    first, last = k * clip_len, (k + 1) * clip_len
    return {
        "clip": k,
        "window_frames": [first, last],
        "source_frames": [int(window_indices[first]), int(window_indices[last - 1]) + 1],
        "weight": weight,
    }


def _explain(clip: np.ndarray, result: dict, clip_len: int, path: Path) -> Path:
    """The middle frame of every clip with its weight under it; the score in the title."""
    middles = [entry["window_frames"][0] + clip_len // 2 for entry in result["clips"]]
    frames = [clip[:, t].transpose(1, 2, 0) for t in middles]
    title = f"{Path(result['path']).name}: score {result['score']:.2f} = {result['score_rule']}"
    if result["score_rule"] == TIMES_DIFFICULTY:
        title += f" ({result['quality']:.2f} x {result['difficulty']:g})"
    return plot_clip_explanation(frames, [entry["weight"] for entry in result["clips"]], title, path)
