"""LLaVA's `group_by_modality_length`: every batch is image samples only or text-only samples only, and the
samples that go through the model at the same time (one batch per rank) have similar lengths.

Indices come out as "megabatches" of world_size x batch_size samples of one modality, longest first, each cut into
world_size batches of balanced total length; Trainer's data loader hands consecutive batches to consecutive ranks.
A modality whose count is not a multiple of batch_size is topped up with repeats of its own samples (as
DistributedSampler pads), so batches never mix modalities. The order depends only on the seed and the epoch:
every rank computes the same one, and a resumed run sees the same order as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import Sampler


class ModalityLengthGroupedSampler(Sampler[int]):
    def __init__(self, lengths: list[int], has_image: list[bool], batch_size: int, world_size: int = 1,
                 seed: int = 0):
        self.lengths, self.batch_size, self.world_size, self.seed = lengths, batch_size, world_size, seed
        self.groups = [[i for i, image in enumerate(has_image) if image],
                       [i for i, image in enumerate(has_image) if not image]]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(math.ceil(len(group) / self.batch_size) * self.batch_size for group in self.groups)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        megabatches = [mb for group in self.groups if group for mb in self._megabatches(group, generator)]
        order = torch.randperm(len(megabatches), generator=generator).tolist()
        return iter([index for m in order for index in self._balanced(megabatches[m])])

    def _megabatches(self, group: list[int], generator: torch.Generator) -> list[list[int]]:
        """The group shuffled, topped up to whole batches, cut into megabatches of world_size batches."""
        shuffled = [group[i] for i in torch.randperm(len(group), generator=generator).tolist()]
        size = math.ceil(len(group) / self.batch_size) * self.batch_size
        shuffled = (shuffled * math.ceil(size / len(shuffled)))[:size]
        step = self.batch_size * self.world_size
        return [shuffled[start:start + step] for start in range(0, size, step)]

    def _balanced(self, megabatch: list[int]) -> list[int]:
        """The megabatch as consecutive batches: longest samples first, each given to the batch with the least
        total length that still has room."""
        batches: list[list[int]] = [[] for _ in range(len(megabatch) // self.batch_size)]
        totals = [0] * len(batches)
        for index in sorted(megabatch, key=lambda i: self.lengths[i], reverse=True):
            b = min((b for b in range(len(batches)) if len(batches[b]) < self.batch_size), key=lambda b: totals[b])
            batches[b].append(index)
            totals[b] += self.lengths[index]
        return [index for batch in batches for index in batch]
