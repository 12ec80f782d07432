"""What every `aqa score` result shares, whichever model made it: the difficulty per video, the PNG
paths of `--explain`, the score rule and training range, and the entry of a video that failed."""

from __future__ import annotations

import math
from pathlib import Path

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
