"""What every `aqa score` result shares, whichever model made it: the difficulty per video, the PNG
paths of `--explain`, the score rule and training range, the clip weights of heads, an ensemble's member
spread, and the entry of a video that failed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from aqa_cli.util.errors import AqaError

TIMES_DIFFICULTY = "quality x difficulty"


def difficulty_per_video(difficulties: list[float], count: int) -> list[float | None]:
    """None for every video, one value for all, or one per video."""
    for value in difficulties:
        if not (math.isfinite(value) and value > 0):
            raise AqaError(f"--difficulty {value} is not a positive number (a dive's degree of difficulty)")
    return _per_video(difficulties, count, "--difficulty")


def action_per_video(actions: list[str], count: int) -> list[str]:
    """Each video's action or dive number (what a contrastive head matches exemplars by): "" (unknown)
    for every video, one value for all, or one per video."""
    for value in actions:
        if not value.strip():
            raise AqaError("--action is empty: give an action name or dive number (e.g. diving, 207C)")
    return [value or "" for value in _per_video(actions, count, "--action")]


def _per_video(values: list, count: int, option: str) -> list:
    """None for every video, one value for all, or one per video; another count is an error."""
    if not values:
        return [None] * count
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise AqaError(f"{len(values)} {option} values for {count} videos: give one for all or one per video")
    return list(values)


def explanation_paths(explain: Path | None, videos: list[Path]) -> list[Path | None]:
    """`--explain PNG` as given for one video; for several, PNG_stem-<video stem>.png beside it (a video
    stem that comes twice gets its position appended)."""
    if explain is None:
        return [None] * len(videos)
    if len(videos) == 1:
        return [explain]
    paths: list[Path | None] = []
    for position, video in enumerate(videos, 1):
        path = explain.with_name(f"{explain.stem}-{video.stem}{explain.suffix}")
        if path in paths:
            path = explain.with_name(f"{explain.stem}-{video.stem}-{position}{explain.suffix}")
        paths.append(path)
    return paths


def score_fields(
    payload: dict, path: Path, quality: float, difficulty: float | None, use_difficulty: bool, action: str
) -> dict:
    """checkpoint, quality, difficulty, action (null when not given), score, score_rule and
    outside_training_range of one video."""
    if not use_difficulty:
        score, rule = quality, "quality (this model predicts the final score; difficulty not used)"
        difficulty = None
    elif difficulty is None:
        score, rule = quality, "quality (no difficulty given)"
    else:
        score, rule = quality * difficulty, TIMES_DIFFICULTY
    recorded = payload.get("training_range")
    if rule.startswith("quality (no difficulty"):
        outside = outside_range(quality, recorded and recorded.get("quality"), "quality")
    else:
        outside = outside_range(score, recorded and recorded.get("score"), "score")
    return {
        "checkpoint": str(path),
        "quality": quality,
        "difficulty": difficulty,
        "action": action or None,
        "score": score,
        "score_rule": rule,
        "outside_training_range": outside,
    }


def outside_range(value: float, recorded: list[float] | None, of: str) -> dict | None:
    """{of, value, low, high, by} when `value` lies outside the recorded [low, high], else None (also
    when nothing was recorded)."""
    if not recorded:
        return None
    low, high = recorded
    if low <= value <= high:
        return None
    by = low - value if value < low else value - high
    return {"of": of, "value": value, "low": low, "high": high, "by": by}


def failure_entry(video: Path, checkpoint: Path, reason: str) -> dict:
    return {"path": str(video), "checkpoint": str(checkpoint), "error": " ".join(reason.split())}


def clip_weights(weights: torch.Tensor | None, clips: int) -> tuple[np.ndarray, str]:
    """One weight per clip of a heads' output for one video, and their kind."""
    if weights is None:
        return np.full(clips, 1 / clips), "uniform"
    if weights.dim() == 2:
        return weights[0].float().cpu().numpy(), "per clip"
    return weights[0].float().mean(dim=-1).cpu().numpy(), "weight-decider"  # averaged over channels


def member_spread(output) -> dict:
    """{"member_spread": the std of an ensemble's members' scores} for one video; {} for one model."""
    if output.spread is None:
        return {}
    return {"member_spread": float(output.spread[0])}


def difficulty_tensor(difficulty: float | None, device) -> torch.Tensor:
    """A heads' difficulty input for one video: NaN when not given (a contrastive head then compares with
    exemplars of any difficulty)."""
    return torch.tensor([np.nan if difficulty is None else difficulty], dtype=torch.float32, device=device)
