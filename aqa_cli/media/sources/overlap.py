"""FineDiving and MTL-AQA share dives: FineDiving's 1,369 dives of its two-digit videos ('01' ... '26')
are MTL-AQA dives (`('01', 1)` is MTL-AQA `(1, 1)`), and the two splits cross (FineDiving test ∩ MTL-AQA
train = 249 dives, FineDiving train ∩ MTL-AQA test = 268 with the official files). Training on one's
training split and testing on the other's test split tests on training dives.

These functions find the shared dives from what a scan or a store records per sample (`extra`:
FineDiving's `mtl_aqa` key, MTL-AQA's `event` and `dive`) and say so in one line; they only read plain
values, so the adapters, `aqa info` and `aqa eval` share them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from aqa_cli.util.errors import AqaError
from aqa_cli.util.safe_pickle import load_pickle

MTL_AQA_SPLIT_FILES = {"train": "train_split_0.pkl", "test": "test_split_0.pkl"}
TRAINING = ("train", "val")  # splits a model learns from (val is held out of train)
MTL_AQA_VIDEO = re.compile(r"\d\d")  # FineDiving's names of the MTL-AQA event videos


def mtl_aqa_dive(extra: dict | str) -> tuple[str, tuple[int, int]] | None:
    """(dataset, MTL-AQA key) of a sample from its `extra` (a dict or the store's JSON), or None."""
    if isinstance(extra, str):
        try:
            extra = json.loads(extra or "{}")
        except ValueError:
            return None
    if not isinstance(extra, dict):
        return None
    key = extra.get("mtl_aqa")
    if "video_name" in extra and isinstance(key, list) and len(key) == 2:
        return "FineDiving", (int(key[0]), int(key[1]))
    if isinstance(extra.get("event"), int) and isinstance(extra.get("dive"), int):
        return "MTL-AQA", (extra["event"], extra["dive"])
    return None


def _mtl_aqa_splits(annotation_files: Iterable[Path]) -> tuple[Path, dict[str, set]] | None:
    """MTL-AQA's official split, from the split pickles beside one of its annotation files (if any)."""
    for file in sorted(annotation_files, key=lambda path: (len(path.parts), str(path))):
        paths = {name: file.parent / split_file for name, split_file in MTL_AQA_SPLIT_FILES.items()}
        if all(path.is_file() for path in paths.values()):
            try:
                return file.parent, {name: set(load_pickle(path)) for name, path in paths.items()}
            except (AqaError, TypeError):
                continue  # not a readable split: the notice then gives no counts
    return None


def finediving_notice(
    splits: dict[str, set[tuple[str, int]]], samples: list, mtl_aqa_annotations: Iterable[Path] = ()
) -> str | None:
    """What `aqa preprocess` says about FineDiving's MTL-AQA dives, given its official split (video name,
    instance id keys) and the samples stored: None if none of them is one; with MTL-AQA's split files
    under the same root, how many dives each split puts on the other side."""
    split_of = {
        (int(video), int(instance)): split
        for split, keys in splits.items()
        for video, instance in keys
        if MTL_AQA_VIDEO.fullmatch(video)
    }
    stored = sum(1 for sample in samples if mtl_aqa_dive(sample.extra))
    if not stored:
        return None
    line = (
        f"{len(split_of)} FineDiving dives (the two-digit videos; {stored} of them among the dives with frames here) are MTL-AQA "
        "dives, and FineDiving's split crosses MTL-AQA's"
    )
    mtl = _mtl_aqa_splits(mtl_aqa_annotations)
    if mtl:
        folder, mtl_splits = mtl
        test_in_train = sum(
            1 for key, split in split_of.items() if split == "test" and key in mtl_splits["train"]
        )
        train_in_test = sum(
            1 for key, split in split_of.items() if split == "train" and key in mtl_splits["test"]
        )
        line += (
            f" (MTL-AQA's split in {folder}, which this run leaves alone: point `aqa preprocess` at MTL-AQA's"
            f" own root (without FineDiving's files) to preprocess it): {test_in_train} FineDiving test dives are MTL-AQA "
            f"training dives and {train_in_test} FineDiving training dives are MTL-AQA test dives"
        )
    return line + (
        "; never train (or pretrain) on one and test on the other: `aqa info` and `aqa eval` say when a "
        "store or an evaluation combines them"
    )


def store_notices(splits: Iterable[str], extras: Iterable[str]) -> list[str]:
    """What `aqa info` says about a store's MTL-AQA/FineDiving dives: shared dives within the store (a
    merge of both datasets) and which of them are training dives on one side and test dives on the other."""
    copies: dict[tuple[int, int], list[tuple[str, str]]] = {}
    for split, extra in zip(splits, extras, strict=True):
        found = mtl_aqa_dive(extra)
        if found:
            copies.setdefault(found[1], []).append((found[0], split))
    if not copies:
        return []
    datasets = {dataset for entries in copies.values() for dataset, _ in entries}
    if datasets == {"MTL-AQA"}:
        return []
    twice = {key: entries for key, entries in copies.items() if len({d for d, _ in entries}) > 1}
    if not twice:
        fine = sum(1 for entries in copies.values() for dataset, _ in entries if dataset == "FineDiving")
        return [
            f"{fine} of its FineDiving dives are MTL-AQA dives, and the two datasets' splits cross: do not "
            "train on one and test on the other (`aqa eval --store` warns when it sees it)"
        ]
    leaks = [
        key
        for key, entries in twice.items()
        if {split for _, split in entries} & set(TRAINING) and "test" in {split for _, split in entries}
    ]
    line = f"{len(twice)} dives are in this store twice, as a FineDiving and as an MTL-AQA sample"
    if leaks:
        example = "{:02d}_{:02d}".format(*sorted(leaks)[0])
        line += (
            f"; {len(leaks)} of them are test dives on one side and training dives on the other (e.g. "
            f"MTL-AQA {example}): a model trained on this store sees those test dives; keep one copy of each"
        )
    return [line]


def cross_store_leaks(
    trained_on: tuple[Iterable[str], Iterable[str]],
    evaluated: tuple[Iterable[str], Iterable[str]],
    split: str,
) -> str | None:
    """A notice when the samples of `split` in one store are dives that another store (the model's
    training store) holds in a training split; each argument is (splits, extras) of a store."""
    training = {
        found[1]
        for s, extra in zip(*trained_on, strict=True)
        if s in TRAINING and (found := mtl_aqa_dive(extra))
    }
    seen = [
        found
        for s, extra in zip(*evaluated, strict=True)
        if s == split and (found := mtl_aqa_dive(extra)) and found[1] in training
    ]
    if not seen:
        return None
    return (
        f"{len(seen)} of the {split} dives evaluated are MTL-AQA/FineDiving dives that the model's training "
        "store holds in its training split (the two datasets share dives and their splits cross): this "
        "result is not a test result"
    )
