"""The training stream: global batch k depends on (seed, k) alone, whatever the number of processes.

Batch k of a run is rows [b·i, b·(i + 1)) of epoch e's seeded permutation, e, i = divmod(k, n // b), with b the
global batch and n the training items (the last n mod b items of each permutation are left out, so every
batch is full). Process r of W takes rows r, r + W, r + 2W, ... of it. A run resumed at step s starts at
batch s (times the gradient-accumulation factor), so it sees the batches an uninterrupted run would have.
Each local batch also carries the rows' positions in the global batch and a per-batch seed, from which the
LightningModule draws t and ε for the whole global batch and keeps its rows: the same draws on 1 or 8 GPUs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DistributedSampler

from ddpm_signrelu.errors import ConfigError

_SEED_STRIDE = 2**32  # generator seed of (seed, j) is seed·2³² + j: distinct pairs, distinct seeds


@dataclass(frozen=True)
class LocalBatch:
    """The keys of one process's share of global batch ``number``: items, left-right flips, global positions."""

    number: int
    indices: torch.Tensor
    flips: torch.Tensor
    positions: torch.Tensor
    seed: int


class GlobalBatchSampler(DistributedSampler):
    """An endless stream of :class:`LocalBatch` keys, used with ``DataLoader(batch_size=None)``.

    It is a ``DistributedSampler`` so that Lightning keeps it instead of injecting its own under DDP.

    Args:
        num_items: training items n.  global_batch: b, the batch summed over all processes.
        num_replicas, rank: W and r (Lightning's ``trainer.world_size`` and ``trainer.global_rank``).
        seed: seeds the permutations, the flips and the per-batch draws.  hflip: draw a left-right flip per item.
        start: the first global batch to yield (resuming).
    """

    def __init__(self, num_items: int, global_batch: int, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 hflip: bool = False, start: int = 0):
        if global_batch % num_replicas:
            raise ConfigError(f"the batch size ({global_batch}) is the global batch and must be divisible by the "
                              f"number of processes ({num_replicas}, devices x nodes); change data.batch_size")
        if num_items < global_batch:
            raise ConfigError(f"the batch size ({global_batch}) is larger than the training split ({num_items} "
                              f"items); lower data.batch_size")
        super().__init__(range(num_items), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                         drop_last=True)
        self.num_items, self.global_batch, self.hflip, self.start = num_items, global_batch, hflip, start
        self.per_epoch = num_items // global_batch

    def __len__(self):  # endless: Lightning counts steps, not epochs
        raise TypeError("GlobalBatchSampler is endless")

    def set_epoch(self, epoch: int) -> None:
        """Ignored: the epoch follows from the batch number."""

    def epoch_keys(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Epoch ``epoch``'s permutation of the items and its flips."""
        g = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + epoch)
        perm = torch.randperm(self.num_items, generator=g)
        flips = torch.randint(0, 2, (self.num_items,), generator=g, dtype=torch.bool) if self.hflip else None
        return perm, flips

    def batch(self, number: int, keys: tuple[torch.Tensor, torch.Tensor] | None = None) -> LocalBatch:
        epoch, i = divmod(number, self.per_epoch)
        perm, flips = keys or self.epoch_keys(epoch)
        positions = torch.arange(self.rank, self.global_batch, self.num_replicas)
        rows = perm[i * self.global_batch + positions]
        return LocalBatch(number, rows, flips[rows] if flips is not None else torch.zeros(len(rows), dtype=torch.bool),
                          positions, self.seed * _SEED_STRIDE + number)

    def __iter__(self) -> Iterator[LocalBatch]:
        number, epoch, keys = self.start, None, None
        while True:
            if number // self.per_epoch != epoch:
                epoch = number // self.per_epoch
                keys = self.epoch_keys(epoch)
            yield self.batch(number, keys)
            number += 1
