"""Data modules over in-memory tensors, with a seeded train / held-out split."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ddpm_signrelu.errors import ConfigError


class IndexedTensorDataset(Dataset):
    """Items are (x, index): the index lets evaluation draw fixed noise per item."""

    def __init__(self, data: torch.Tensor):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        return self.data[index], index


def levels_to_unit(levels: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Map integer levels u ∈ {0..L−1} to x = 2u/(L − 1) − 1 ∈ [−1, 1] (theory.md §1)."""
    return levels.float() * (2.0 / (num_levels - 1)) - 1.0


class TensorDataModule(L.LightningDataModule):
    """Base class: subclasses implement :meth:`load` returning all items in [−1, 1], shape (N, *data_shape).

    ``data_shape`` and ``num_levels`` (None for continuous data) describe the data to the model.
    """

    data_shape: tuple[int, ...]
    num_levels: int | None

    def __init__(self, batch_size: int = 128, val_size: int = 500, seed: int = 0, num_workers: int = 0):
        super().__init__()
        if batch_size < 1 or val_size < 1:
            raise ConfigError(f"batch_size and val_size must be >= 1, got {batch_size}, {val_size}")
        self.batch_size, self.val_size, self.seed, self.num_workers = batch_size, val_size, seed, num_workers
        self.train_data: torch.Tensor | None = None
        self.val_data: torch.Tensor | None = None

    def load(self) -> torch.Tensor:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_data is not None:
            return
        data = self.load()
        if self.val_size >= len(data):
            raise ConfigError(f"val_size ({self.val_size}) must be smaller than the dataset ({len(data)} items)")
        perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(self.seed))
        self.val_data, self.train_data = data[perm[: self.val_size]], data[perm[self.val_size:]]

    def _loader(self, data: torch.Tensor, shuffle: bool) -> DataLoader:
        return DataLoader(IndexedTensorDataset(data), batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_data, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_data, shuffle=False)
