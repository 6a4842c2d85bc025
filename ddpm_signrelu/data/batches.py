"""The training stream: global batch k depends on (seed, k) alone, whatever the number of processes (docs/runs.md):
global batch k is positions [b·k, b·(k + 1)) of a stream of seeded permutations of the items, one per epoch."""

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count

import torch
from torch.utils.data import DistributedSampler

from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.seeding import generator, mix_seed

EPOCHS, DRAWS = 0, 1  # the two seeded streams: epoch k's permutation and flips, batch k's diffusion draws


@dataclass(frozen=True)
class LocalBatch:
    """The keys of one process's share of global batch ``number``: items, left-right flips, global positions."""

    number: int
    indices: torch.Tensor
    flips: torch.Tensor
    positions: torch.Tensor
    seed: int


class GlobalBatchSampler(DistributedSampler):
    """An endless stream of :class:`LocalBatch` keys for ``DataLoader(batch_size=None)`` from global batch ``start``
    on, a ``DistributedSampler`` so that Lightning keeps it under DDP. ``global_batch``: summed over ``num_replicas``
    processes (this one ``rank``); ``seed``: of the permutations, flips and per-batch draws; ``hflip``: random flips."""

    def __init__(self, num_items: int, global_batch: int, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 hflip: bool = False, start: int = 0):
        if global_batch % num_replicas:
            raise ConfigError(f"the batch size ({global_batch}) is the global batch and must be divisible by the "
                              f"number of processes ({num_replicas}, devices x nodes); change data.batch_size")
        if num_items < 1:
            raise ConfigError("the training split is empty")
        super().__init__(range(num_items), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.num_items, self.global_batch, self.hflip, self.start = num_items, global_batch, hflip, start
        self._keys: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self):  # endless: Lightning counts steps, not epochs
        raise TypeError("GlobalBatchSampler is endless")

    def set_epoch(self, epoch: int) -> None:
        """Ignored: epochs follow from the batch number."""

    def epoch_keys(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Epoch ``epoch``'s permutation of the items and its left-right flips (kept for the last two epochs)."""
        if epoch not in self._keys:
            g = generator(self.seed, EPOCHS, epoch)
            perm = torch.randperm(self.num_items, generator=g)
            flips = torch.randint(0, 2, (self.num_items,), generator=g, dtype=torch.bool) if self.hflip else \
                torch.zeros(self.num_items, dtype=torch.bool)
            self._keys = {e: k for e, k in self._keys.items() if e >= epoch - 1} | {epoch: (perm, flips)}
        return self._keys[epoch]

    def batch(self, number: int) -> LocalBatch:
        """This process's share of global batch ``number``."""
        positions = torch.arange(self.rank, self.global_batch, self.num_replicas)
        stream = number * self.global_batch + positions
        epochs, rows = stream // self.num_items, stream % self.num_items
        indices, flips = torch.empty_like(rows), torch.empty(len(rows), dtype=torch.bool)
        for epoch in epochs.unique().tolist():
            at = epochs == epoch
            perm, epoch_flips = self.epoch_keys(epoch)
            indices[at] = perm[rows[at]]
            flips[at] = epoch_flips[indices[at]]
        return LocalBatch(number, indices, flips, positions, mix_seed(self.seed, DRAWS, number))

    def __iter__(self) -> Iterator[LocalBatch]:
        return map(self.batch, count(self.start))
