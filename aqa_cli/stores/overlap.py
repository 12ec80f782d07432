"""Shared FineDiving/MTL-AQA dives seen through stores: what `aqa info` and `aqa eval` say about them
(the rules are in `aqa_cli.media.sources.overlap`)."""

from __future__ import annotations

from pathlib import Path

from aqa_cli.media.sources.overlap import cross_store_leaks, store_notices
from aqa_cli.stores.video_store import VideoStore
from aqa_cli.util.errors import AqaError


def _splits_and_extras(path: str | Path) -> tuple[list[str], list[str]] | None:
    """A video store's split and extra columns, or None when it is not a readable video store."""
    if not Path(path).is_file():
        return None
    try:
        with VideoStore(path, check=False) as store:
            if not len(store):
                return [], []
            return list(store.column("split")), list(store.column("extra"))
    except AqaError:
        return None


def info_notices(path: str | Path) -> list[str]:
    """`aqa info`: the store's FineDiving dives that are MTL-AQA dives, and any both copies of a dive."""
    found = _splits_and_extras(path)
    return store_notices(*found) if found else []


def evaluation_notices(trained_on: dict | None, store_path: str | Path, split: str) -> list[str]:
    """`aqa eval`: evaluated dives that the model's training store holds in a training split."""
    training_path = (trained_on or {}).get("path")
    if not training_path:
        return []
    training, evaluated = _splits_and_extras(training_path), _splits_and_extras(store_path)
    if training is None or evaluated is None:
        return []
    notice = cross_store_leaks(training, evaluated, split)
    return [notice] if notice else []
