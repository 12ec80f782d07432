"""Torch datasets over a video store: the paper's 96-frame windows, flips and crops, as uint8 tensors.

Frames stay uint8 until they reach the model's device, where `Normalization.apply` turns them into
the floats the backbone's weights expect: a quarter of the bytes through the loader and the copy.

Randomness (window end, crop, flip) comes from a generator seeded by (seed, epoch, sample), so an epoch
is the same whatever the number of loader workers or processes, and a resumed run repeats it exactly.
The epoch travels with each index (`EpochTagged`), not in the dataset: persistent loader workers keep
their own copy of the dataset, and would otherwise repeat the first epoch's draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from aqa_cli.errors import AqaError
from aqa_cli.store import VideoStore


@dataclass(frozen=True)
class WindowConfig:
    """How a stored sample becomes the model's input."""

    frames: int = 96  # frames the model sees
    jitter: int = 6  # training windows end at a random one of the last `jitter` stored frames
    crop: int = 112  # square crop; random in training, centred in evaluation
    flip: bool = True  # random horizontal flip in training


def check_window(
    window: WindowConfig, stored_frames: int, height: int, width: int, store_path
) -> WindowConfig:
    """The window that fits the store, or a clear error; shrinks `jitter` to what the store allows."""
    if stored_frames < window.frames:
        raise AqaError(
            f"{store_path} keeps {stored_frames} frames per sample but the model needs {window.frames}: "
            f"preprocess again with --frames {window.frames + window.jitter - 1} or train with --frames "
            f"{stored_frames}"
        )
    if window.crop > min(height, width):
        raise AqaError(f"--crop {window.crop} is larger than the stored {width}x{height} frames")
    jitter = min(window.jitter, stored_frames - window.frames + 1)
    return WindowConfig(window.frames, max(jitter, 1), window.crop, window.flip)


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


def select_window(frames: np.ndarray, window: WindowConfig, rng: np.random.Generator | None) -> np.ndarray:
    """(T, H, W, 3) stored frames -> (3, frames, crop, crop) uint8 model input.

    Evaluation (`rng` None): the last `frames` frames, centre crop. Training: the window ends at a random
    one of the last `jitter` frames, with a random crop and a random horizontal flip.
    """
    if rng is None:
        return centred_window(frames, window)
    stored, height, width, _ = frames.shape
    w = window
    end = stored - int(rng.integers(w.jitter))
    top = int(rng.integers(height - w.crop + 1))
    left = int(rng.integers(width - w.crop + 1))
    flip = w.flip and bool(rng.integers(2))
    return _cut_window(frames, w, end, top, left, flip)


def centred_window(
    frames: np.ndarray, window: WindowConfig, shift: int = 0, flip: bool = False
) -> np.ndarray:
    """The evaluation window (the last frames, centre crop), or the one ending `shift` frames earlier,
    optionally flipped: the fixed views that `aqa extract --views` stores."""
    stored, height, width, _ = frames.shape
    top, left = (height - window.crop) // 2, (width - window.crop) // 2
    return _cut_window(frames, window, stored - shift, top, left, flip)


def _cut_window(
    frames: np.ndarray, window: WindowConfig, end: int, top: int, left: int, flip: bool
) -> np.ndarray:
    clip = frames[end - window.frames : end, top : top + window.crop, left : left + window.crop]
    if flip:
        clip = clip[:, :, ::-1]
    return np.ascontiguousarray(clip.transpose(3, 0, 1, 2))


def split_rows(store_path, val_fraction: float, seed: int) -> dict[str, list[int]]:
    """Rows per split: train, val (the store's val split plus `val_fraction` of train held out) and test."""
    with VideoStore(store_path) as store:
        return split_by_column(store.column("split"), val_fraction, seed)


def split_by_column(splits: np.ndarray, val_fraction: float, seed: int) -> dict[str, list[int]]:
    """`split_rows` for a column of split names (any store that has one)."""
    rows = {name: np.flatnonzero(splits == name).tolist() for name in ("train", "val", "test")}
    if val_fraction > 0:
        if not 0 < val_fraction < 1:
            raise AqaError(f"--val-fraction must be between 0 and 1 (got {val_fraction})")
        shuffled = np.random.default_rng(seed).permutation(rows["train"]).tolist()
        held = max(1, round(len(shuffled) * val_fraction))
        rows["val"] = sorted(rows["val"] + shuffled[:held])
        rows["train"] = sorted(shuffled[held:])
    return rows


class SeededShuffle(Sampler[int]):
    """A new random order every epoch, fixed by (seed, epoch): resuming at an epoch repeats its order."""

    def __init__(self, dataset: Dataset, seed: int):
        self.size = len(dataset)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


class EpochTagged(Sampler[tuple[int, int]]):
    """(epoch, index) pairs in the order of `sampler` (a SeededShuffle or DistributedSampler), for an
    `EpochRows` dataset: the epoch each sample is drawn for reaches the worker that loads it."""

    def __init__(self, sampler: SeededShuffle | DistributedSampler):
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        epoch = self.sampler.epoch
        return ((epoch, i) for i in self.sampler)
