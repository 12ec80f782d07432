"""Orders of samples per epoch, fixed by (seed, epoch), so that a resumed run repeats an epoch exactly."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler


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
