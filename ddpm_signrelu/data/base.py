"""Data modules over in-memory tensors, with a seeded train / held-out split."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ddpm_signrelu.errors import ConfigError


class IndexedTensorDataset(Dataset):
    """Items are (x, index): the index lets evaluation draw fixed noise per item. ``hflip``: flip each image
    left-right with probability ½ (training augmentation; the flips come from torch's global generator, which
    Lightning seeds per worker)."""

    def __init__(self, data: torch.Tensor, hflip: bool = False):
        self.data, self.hflip = data, hflip

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        x = self.data[index]
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, index


def levels_to_unit(levels: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Map integer levels u ∈ {0..L−1} to x = 2u/(L − 1) − 1 ∈ [−1, 1] (theory.md §1)."""
    return levels.float() * (2.0 / (num_levels - 1)) - 1.0


class TensorDataModule(L.LightningDataModule):
    """Base class: subclasses implement :meth:`load` returning all items in [−1, 1], shape (N, *data_shape), split
    here by seed; or :meth:`load_splits` returning (train, held-out) where the data come with a test split.

    ``data_shape`` and ``num_levels`` (None for continuous data) describe the data to the model. ``hflip`` flips
    training images left-right at random; the flipped copies then belong to the training measure, so
    :attr:`reference_data` (the atoms of D*_n in the risk metrics, theory.md §6.1) holds both.
    """

    data_shape: tuple[int, ...]
    num_levels: int | None

    def __init__(self, batch_size: int = 128, val_size: int = 500, seed: int = 0, num_workers: int = 0,
                 hflip: bool = False):
        super().__init__()
        if batch_size < 1 or val_size < 1:
            raise ConfigError(f"batch_size and val_size must be >= 1, got {batch_size}, {val_size}")
        self.batch_size, self.val_size, self.seed, self.num_workers = batch_size, val_size, seed, num_workers
        self.hflip = hflip
        self.train_data: torch.Tensor | None = None
        self.val_data: torch.Tensor | None = None

    def load(self) -> torch.Tensor:
        raise NotImplementedError

    def load_splits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, held-out): by default a seeded split of :meth:`load` with ``val_size`` held out."""
        data = self.load()
        if self.val_size >= len(data):
            raise ConfigError(f"val_size ({self.val_size}) must be smaller than the dataset ({len(data)} items)")
        perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(self.seed))
        return data[perm[self.val_size:]], data[perm[: self.val_size]]

    def setup(self, stage: str | None = None) -> None:
        if self.train_data is None:
            self.train_data, self.val_data = self.load_splits()

    @property
    def reference_data(self) -> torch.Tensor:
        """The training measure's atoms: the training split, with its mirror images under ``hflip``."""
        return torch.cat([self.train_data, self.train_data.flip(-1)]) if self.hflip else self.train_data

    def _loader(self, data: torch.Tensor, shuffle: bool, hflip: bool = False) -> DataLoader:
        return DataLoader(IndexedTensorDataset(data, hflip), batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_data, shuffle=True, hflip=self.hflip)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_data, shuffle=False)
