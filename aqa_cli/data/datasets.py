"""Torch datasets over the stores: video windows as uint8 tensors, cached clip features, extraction blocks.

Frames stay uint8 until they reach the model's device, where `models.normalization.model_input` turns
them into the floats the backbone's weights expect: a quarter of the bytes through the loader and the copy.

Randomness (window end, crop, flip, feature view) comes from a generator seeded by (seed, epoch, sample),
so an epoch is the same whatever the number of loader workers or processes, and a resumed run repeats it
exactly. The epoch travels with each index (`samplers.EpochTagged`), not in the dataset: persistent
loader workers keep their own copy of the dataset, and would otherwise repeat the first epoch's draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from aqa_cli.data.windows import View, WindowConfig, centred_window, check_window, select_window
from aqa_cli.stores.feature_store import FeatureStore
from aqa_cli.stores.video_store import VideoStore


class EpochRows(Dataset):
    """Some rows of a store, indexed by position or by (epoch, position) (`EpochTagged`); in training a
    sample's randomness comes from a generator seeded by (seed, epoch, row), so that an epoch is the same
    in any worker or process and when resumed."""

    def __init__(self, rows: Sequence[int], train: bool, seed: int):
        self.rows = list(rows)
        self.train = train
        self.seed = seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        epoch, i = item if isinstance(item, tuple) else (0, item)
        row = self.rows[i]
        return self.sample(row, np.random.default_rng([self.seed, epoch, row]) if self.train else None)

    def sample(self, row: int, rng: np.random.Generator | None) -> dict:
        """Row `row` as the model's input; `rng` draws its augmentation (None in evaluation)."""
        raise NotImplementedError


class StoreClips(EpochRows):
    """Rows of a store as dicts: `video` uint8 (3, frames, crop, crop), `score`, `difficulty`, `row`.

    The HDF5 file is opened lazily in each process (h5py handles must not cross a fork).
    """

    def __init__(self, store_path, rows: Sequence[int], window: WindowConfig, train: bool, seed: int = 0):
        super().__init__(rows, train, seed)
        self.store_path = store_path
        with VideoStore(store_path) as store:
            config = store.config
            self.scores = store.column("score").astype(np.float32)
            self.difficulties = store.column("difficulty").astype(np.float32)
        self.window = check_window(window, config.frames, config.height, config.width, store_path)
        self._store: VideoStore | None = None

    def sample(self, row: int, rng: np.random.Generator | None) -> dict:
        if self._store is None:
            self._store = VideoStore(self.store_path)
        frames = self._store.verified_frames(row)
        video = select_window(frames, self.window, rng)
        return {
            "video": torch.from_numpy(video),
            "score": torch.tensor(self.scores[row]),
            "difficulty": torch.tensor(self.difficulties[row]),
            "row": row,
        }


class FeatureClips(EpochRows):
    """Rows of a feature store as dicts: `features` float32 (max clips, dim) of one view, zero-padded,
    `clips` (how many are real), `score` (the target column), `difficulty`, `row`."""

    def __init__(self, store_path, rows: list[int], target: str, train: bool, seed: int = 0):
        super().__init__(rows, train, seed)
        self.store_path = store_path
        with FeatureStore(store_path) as store:
            self.scores = store.scores(target).astype(np.float32)
            self.difficulties = store.column("difficulty").astype(np.float32)
            self.clips = store.column("clips")
            self.views = store.view_count
        self._store: FeatureStore | None = None

    def sample(self, row: int, rng: np.random.Generator | None) -> dict:
        if self._store is None:
            self._store = FeatureStore(self.store_path)
        view = int(rng.integers(self.views)) if rng is not None else 0
        return {
            "features": torch.from_numpy(self._store.padded_features(row, view)),
            "clips": int(self.clips[row]),
            "score": torch.tensor(self.scores[row]),
            "difficulty": torch.tensor(self.difficulties[row]),
            "row": row,
        }


class ViewBlocks(Dataset):
    """Blocks of consecutive store rows as uint8 (rows, views, 3, frames, crop, crop)."""

    def __init__(
        self, store_path: str, window: WindowConfig, views: list[View], starts: list[int], size: int
    ):
        self.store_path, self.window, self.views = store_path, window, views
        self.starts, self.size = starts, size
        self._store: VideoStore | None = None

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray]:
        if self._store is None:
            self._store = VideoStore(self.store_path)
        start = self.starts[i]
        rows = range(start, min(start + self.size, len(self._store)))
        block = [
            [
                centred_window(self._store.verified_frames(row), self.window, v.shift, v.flip)
                for v in self.views
            ]
            for row in rows
        ]
        return start, np.stack([np.stack(views) for views in block])
