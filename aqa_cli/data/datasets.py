"""Torch datasets over the stores: video windows as uint8 tensors, cached clip features, extraction blocks.

Frames stay uint8 until they reach the model's device, where `models.normalization.model_input` turns
them into the floats the backbone's weights expect: a quarter of the bytes through the loader and the copy.

Randomness (window end, crop, flip, feature view) comes from a generator seeded by (seed, epoch, sample),
so an epoch is the same whatever the number of loader workers or processes, and a resumed run repeats it
exactly. The epoch travels with each index (`samplers.EpochTagged`), not in the dataset: persistent
loader workers keep their own copy of the dataset, and would otherwise repeat the first epoch's draws.

`--clip-crop N` (training only): a random contiguous run of N clips of a longer video, its start drawn
from the same generator, after the window / view (videos of N clips or fewer are kept whole).

`FeatureTensors` / `FeatureBatches`: a feature store small enough (MEMORY_LIMIT) read once into tensors on
the training device and batched by index, with the same per-sample draws as `FeatureClips`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from aqa_cli.data.windows import View, WindowConfig, centred_window, check_window, select_window
from aqa_cli.stores.feature_store import ACTION, FeatureStore
from aqa_cli.stores.video_store import VideoStore
from aqa_cli.util.errors import AqaError

MEMORY_LIMIT = 2 * 1024**3
"""A feature store whose features take less than this as float32 is held in memory for head training."""


def crop_start(rng: np.random.Generator | None, clips: int, crop: int) -> tuple[int, int]:
    """(first clip, clip count) of a training crop of `crop` clips out of `clips` (0 or a short video:
    all of them, no draw)."""
    if rng is None or not crop or clips <= crop:
        return 0, clips
    return int(rng.integers(clips - crop + 1)), crop


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
    """Rows of a store as dicts: `video` uint8 (3, frames, crop, crop), `score`, `difficulty`, `action`
    ("" where unknown), `row`.

    The HDF5 file is opened lazily in each process (h5py handles must not cross a fork).
    """

    def __init__(
        self,
        store_path,
        rows: Sequence[int],
        window: WindowConfig,
        train: bool,
        seed: int = 0,
        clip_len: int = 0,
        clip_crop: int = 0,
    ):
        super().__init__(rows, train, seed)
        self.store_path = store_path
        self.clip_len, self.clip_crop = clip_len, clip_crop
        with VideoStore(store_path) as store:
            config = store.config
            self.scores = store.column("score").astype(np.float32)
            self.difficulties = store.column("difficulty").astype(np.float32)
            self.actions = store.column("action")
        self.window = check_window(window, config.frames, config.height, config.width, store_path)
        self._store: VideoStore | None = None

    def sample(self, row: int, rng: np.random.Generator | None) -> dict:
        if self._store is None:
            self._store = VideoStore(self.store_path)
        frames = self._store.verified_frames(row)
        video = select_window(frames, self.window, rng)
        if self.clip_crop and self.clip_len:
            first, count = crop_start(rng, video.shape[1] // self.clip_len, self.clip_crop)
            video = video[:, first * self.clip_len : (first + count) * self.clip_len]
        return {
            "video": torch.from_numpy(video),
            "score": torch.tensor(self.scores[row]),
            "difficulty": torch.tensor(self.difficulties[row]),
            "action": str(self.actions[row]),
            "row": row,
        }


class FeatureClips(EpochRows):
    """Rows of a feature store as dicts: `features` float32 (max clips, dim) of one view, zero-padded,
    `clips` (how many are real), `score` (the target column), `difficulty`, `action` ("" where unknown),
    `row`."""

    def __init__(
        self, store_path, rows: list[int], target: str, train: bool, seed: int = 0, clip_crop: int = 0
    ):
        super().__init__(rows, train, seed)
        self.store_path = store_path
        self.clip_crop = clip_crop
        with FeatureStore(store_path) as store:
            self.scores = store.scores(target).astype(np.float32)
            self.difficulties = store.column("difficulty").astype(np.float32)
            self.actions = store.column(ACTION)
            self.clips = store.column("clips")
            self.views = store.view_count
        self._store: FeatureStore | None = None

    def sample(self, row: int, rng: np.random.Generator | None) -> dict:
        if self._store is None:
            self._store = FeatureStore(self.store_path)
        view = int(rng.integers(self.views)) if rng is not None else 0
        features = self._store.padded_features(row, view)
        first, count = crop_start(rng, int(self.clips[row]), self.clip_crop)
        if count != int(self.clips[row]):
            cropped = np.zeros_like(features)
            cropped[:count] = features[first : first + count]
            features = cropped
        return {
            "features": torch.from_numpy(features),
            "clips": count,
            "score": torch.tensor(self.scores[row]),
            "difficulty": torch.tensor(self.difficulties[row]),
            "action": str(self.actions[row]),
            "row": row,
        }


def fits_in_memory(store_path) -> bool:
    """Whether a feature store's features take less than MEMORY_LIMIT as float32."""
    with FeatureStore(store_path) as store:
        return math.prod(store.file["features"].shape) * 4 < MEMORY_LIMIT


class FeatureTensors:
    """A feature store's features, scores, difficulties and clip counts as tensors on `device`, read once
    (h5py checks every chunk's Fletcher-32 checksum on this one read)."""

    def __init__(self, store_path, target: str, device: torch.device):
        with FeatureStore(store_path) as store:
            try:
                features = store.file["features"][()]
            except Exception as exc:  # noqa: BLE001 - h5py raises several types for a damaged chunk
                for row in range(len(store)):  # name the damaged sample, as the streaming path would
                    for view in range(store.view_count):
                        store.padded_features(row, view)
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise AqaError(
                    f"{store_path}: the features cannot be read ({reason}): the file is damaged; make it again "
                    "with the `aqa extract` or `aqa features import` that wrote it"
                ) from None
            self.scores = store.scores(target).astype(np.float32)
            self.difficulties = store.column("difficulty").astype(np.float32)
            self.actions = store.column(ACTION)
            self.clips = store.column("clips").astype(np.int64)
            self.views = store.view_count
        self.features = torch.from_numpy(features).to(device=device, dtype=torch.float32)  # (R, V, K, D)
        self.device = device

    def batch(self, rows: Sequence[int], views: Sequence[int], firsts: Sequence[int], counts: Sequence[int]):
        """The batch dict `FeatureClips` would give (features cut to the longest), on the device."""
        longest = max(counts)
        features = self.features.new_zeros((len(rows), longest, self.features.shape[-1]))
        for i, (row, view, first, count) in enumerate(zip(rows, views, firsts, counts, strict=True)):
            features[i, :count] = self.features[row, view, first : first + count]
        return {
            "features": features,
            "clips": torch.tensor(list(counts)),
            "score": torch.from_numpy(self.scores[list(rows)]),
            "difficulty": torch.from_numpy(self.difficulties[list(rows)]),
            "action": [str(self.actions[row]) for row in rows],
            "row": torch.tensor(list(rows)),
        }

    def evaluation_batch(self, rows: Sequence[int]) -> dict:
        """All `rows` as one batch: view 0, every clip."""
        rows = list(rows)
        return self.batch(rows, [0] * len(rows), [0] * len(rows), [int(self.clips[row]) for row in rows])


class FeatureBatches:
    """Training batches of `FeatureTensors` in the order of an `EpochTagged` sampler over `rows`, with the
    view and crop each sample draws from its (seed, epoch, row) generator exactly as `FeatureClips` does:
    the batches a DataLoader over FeatureClips would give, without reading the store."""

    def __init__(self, data: FeatureTensors, rows: list[int], sampler, batch_size: int, seed: int, crop: int):
        self.data, self.rows, self.sampler = data, list(rows), sampler
        self.batch_size, self.seed, self.crop = batch_size, seed, crop

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        # A DataLoader draws its workers' base seed from the global generator at every epoch; so do we,
        # so that dropout draws the same numbers on both paths.
        torch.empty((), dtype=torch.int64).random_()
        order = list(self.sampler)
        for start in range(0, len(order), self.batch_size):
            rows, views, firsts, counts = [], [], [], []
            for epoch, i in order[start : start + self.batch_size]:
                row = self.rows[i]
                rng = np.random.default_rng([self.seed, epoch, row])
                view = int(rng.integers(self.data.views))
                first, count = crop_start(rng, int(self.data.clips[row]), self.crop)
                rows.append(row)
                views.append(view)
                firsts.append(first)
                counts.append(count)
            yield self.data.batch(rows, views, firsts, counts)


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
