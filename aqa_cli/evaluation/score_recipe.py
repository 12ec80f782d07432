"""`aqa score` for heads trained on a recipe's features: a raw video of any length, extracted exactly as
the feature store was (`models.streamed.stream_video_features`: the recorded recipe, weights, batch size
and precision, the features rounded to the store's dtype), then the heads; each clip keeps its start and
end time, so the weights can be drawn along the performance (`--explain`: `plots.plot_timeline`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from aqa_cli.checkpoints.restore import load_head
from aqa_cli.evaluation.plots import plot_timeline
from aqa_cli.evaluation.score_common import (
    clip_weights,
    difficulty_tensor,
    failure_entry,
    member_spread,
    score_fields,
)
from aqa_cli.media.decoder import VideoDecoder
from aqa_cli.media.sources.base import Sample
from aqa_cli.models.recipes import Recipe, clip_starts, rebuild_feature_network, select_frames
from aqa_cli.models.streamed import VideoFeatures, stream_video_features
from aqa_cli.util.errors import AqaError
from aqa_cli.util.runtime import resolve_device

THUMBNAILS = 4  # the most weighted clips shown under the timeline
THUMBNAIL_WIDTH = 160


def score_with_recipe(
    videos: list[Path],
    difficulties: list[float | None],
    actions: list[str],
    payload: dict,
    path: Path,
    device: str,
    explain: list[Path | None],
    progress: Callable[[str, int, int], None] | None = None,
) -> list[dict]:
    """One result per video (see `score.score_videos`): path, frames, frames_lost, fps, recipe, the score
    fields, weights (their kind) and clips (clip, start, end in seconds, weight); or an `error` entry."""
    extraction = payload["extraction"]
    recipe = Recipe.from_dict(extraction["recipe"])
    network = rebuild_feature_network(recipe, extraction["recipe_weights"], path).eval()
    target = resolve_device(device)
    network.to(target)
    head = load_head(payload, path).to(target)
    results = []
    done = 0  # clips of the videos before this one, for `progress(video, clips, total so far)`
    for video, difficulty, action, png in zip(videos, difficulties, actions, explain, strict=True):
        sample = Sample(id=video.stem, source=str(video))

        def advance(clips: int, total: int, name: str = video.name, before: int = done) -> None:
            if progress is not None:
                progress(name, clips, before + total)

        try:
            found = stream_video_features(
                sample,
                recipe,
                network,
                target,
                extraction["precision"],
                int(extraction["batch_size"]),
                extraction["resize"],
                progress=advance,
            )
        except AqaError as exc:
            results.append(failure_entry(video, path, str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - one unreadable video must not stop the others
            results.append(
                failure_entry(video, path, f"unexpected {type(exc).__name__} while decoding {video}: {exc}")
            )
            continue
        done += len(found.features)
        stored = found.features.astype(extraction["dtype"]).astype(np.float32)  # as the store held them
        with torch.inference_mode():
            output = head(
                torch.from_numpy(stored)[None].to(target),
                difficulty_tensor(difficulty, target),
                actions=[action],
            )
        weights = clip_weights(output.clip_weights, len(stored))
        result = {
            "path": str(video),
            "frames": found.frames,
            "frames_lost": found.frames_lost,
            "fps": found.fps,
            "recipe": recipe.name,
            **score_fields(payload, path, float(output.quality[0]), difficulty, head.use_difficulty, action),
            **member_spread(output),
            "weights": weights[1],
            "clips": [
                {"clip": k, "start": float(start), "end": float(end), "weight": float(weight)}
                for k, (start, end, weight) in enumerate(
                    zip(found.clip_start, found.clip_end, weights[0], strict=True)
                )
            ],
        }
        if png is not None:
            result["explanation"] = str(_timeline(video, recipe, found, result, png))
        results.append(result)
    return results


def _timeline(video: Path, recipe: Recipe, found: VideoFeatures, result: dict, png: Path) -> Path:
    """The weights along the time axis, with the middle frames of the most weighted clips (decoded again,
    only those frames, at a thumbnail's size)."""
    weights = np.array([clip["weight"] for clip in result["clips"]])
    top = sorted(np.argsort(-weights, kind="stable")[:THUMBNAILS].tolist())
    selected = np.asarray(select_frames(recipe, found.frames))
    starts = clip_starts(recipe, len(selected))
    middles = {int(selected[int(starts[k]) + recipe.clip // 2]): k for k in top}
    thumbnails: dict[int, np.ndarray] = {}
    with VideoDecoder(video, None) as probe:
        width, height = probe.info.width, probe.info.height
    size = (THUMBNAIL_WIDTH, max(2, round(THUMBNAIL_WIDTH * height / width / 2) * 2))
    with VideoDecoder(video, size) as decoder:
        for index, frame in decoder.frames(wanted=middles.__contains__):
            if frame is not None:
                thumbnails[middles[index]] = frame
            if len(thumbnails) == len(middles):
                break
    title = f"{video.name}: score {result['score']:.2f} ({recipe.name}, {len(weights)} clips)"
    return plot_timeline(result["clips"], [(k, thumbnails[k]) for k in top if k in thumbnails], title, png)
