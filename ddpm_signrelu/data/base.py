"""Data modules over in-memory tensors, with a seeded train / held-out split."""

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from ddpm_signrelu.data.batches import GlobalBatchSampler, LocalBatch
from ddpm_signrelu.errors import ConfigError


def levels_to_unit(levels: torch.Tensor, num_levels: int, dtype: torch.dtype = torch.float32,
                   device: torch.device | None = None) -> torch.Tensor:
    """Levels u ∈ {0..L−1} as x = 2u/(L − 1) − 1 ∈ [−1, 1] (theory.md §1): a new tensor, ``dtype`` on ``device``."""
    return levels.to(device=device, dtype=dtype, copy=True).mul_(2.0 / (num_levels - 1)).sub_(1.0)


def stored_to_unit(data: torch.Tensor, num_levels: int | None) -> torch.Tensor:
    """Stored rows as float32: uint8 levels through :func:`levels_to_unit`, continuous data (None) as they are."""
    return data if num_levels is None else levels_to_unit(data, num_levels)


class IndexedTensorDataset(Dataset):
    """Items (x, index); a :class:`LocalBatch` key gives a batch (x, indices, positions, seed), flipped as it says."""

    def __init__(self, data: torch.Tensor, num_levels: int | None):
        self.data, self.num_levels = data, num_levels

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: int | LocalBatch):
        if not isinstance(key, LocalBatch):
            return stored_to_unit(self.data[key], self.num_levels), key
        x = self.data[key.indices]
        if key.flips.any():
            x = torch.where(key.flips.view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)
        return stored_to_unit(x, self.num_levels), key.indices, key.positions, key.seed  # seed: int, on the host


class TensorDataModule(L.LightningDataModule):
    """Base class: subclasses set ``data_shape`` and ``num_levels`` (None: continuous data) and implement :meth:`load`
    (all items, (N, *data_shape), split here by seed) or :meth:`load_splits` (train, held-out). ``batch_size``: the
    global batch over the W processes (docs/runs.md); ``val_size``: held-out items; ``seed`` fixes the split, batch
    order, flips and diffusion draws; ``hflip``: random left-right flips of training images (theory.md §6.1)."""

    data_shape: tuple[int, ...]
    num_levels: int | None
    mixture = None  # the data's known density (a GaussianMixture) where there is one: exact D* and population draws

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
            train, held = self.load_splits()
            if train.dtype != self.storage_dtype or held.dtype != self.storage_dtype:
                raise ConfigError(f"{type(self).__name__} loaded {train.dtype} / {held.dtype} data, but data with "
                                  f"num_levels={self.num_levels} are held as {self.storage_dtype}: return integer "
                                  f"levels 0..L-1 as uint8 for quantized data, float32 values for continuous data")
            self.train_data, self.val_data = train, held

    def labelled_splits(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(train images, labels, test images, labels), uint8 and int64, for :mod:`ddpm_signrelu.metrics.domain`."""
        raise self._no_labels()

    def _no_labels(self) -> ConfigError:
        return ConfigError(f"{type(self).__name__} has no class labels, so no domain classifier: use another feature "
                           f"extractor (features: inception)")

    @property
    def classifier_path(self) -> Path:
        """Where the domain classifier of this data set is cached: next to its files."""
        raise self._no_labels()

    @property
    def storage_dtype(self) -> torch.dtype:
        """The dtype of ``train_data`` and ``val_data``: uint8 levels for quantized data, else float32."""
        return torch.float32 if self.num_levels is None else torch.uint8

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Stored rows ``x`` (of ``train_data`` or ``val_data``) as float32, in [−1, 1] for quantized data."""
        return stored_to_unit(x, self.num_levels)

    def _loader_options(self) -> dict:
        cuda = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0, "pin_memory": cuda}

    def train_dataloader(self) -> DataLoader:
        """The endless :class:`GlobalBatchSampler` stream; a resumed run continues at the batch of its step."""
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        start = trainer.global_step * trainer.accumulate_grad_batches if trainer is not None else 0
        sampler = GlobalBatchSampler(len(self.train_data), self.batch_size, world, rank, self.seed, self.hflip, start)
        dataset = IndexedTensorDataset(self.train_data, self.num_levels)
        return DataLoader(dataset, sampler=sampler, batch_size=None, **self._loader_options())

    def val_dataloader(self) -> DataLoader:
        """Held-out items in order, sharded over the processes with no item repeated, ``batch_size / W`` each."""
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        dataset = IndexedTensorDataset(self.val_data, self.num_levels)
        sampler = UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(dataset, sampler=sampler, batch_size=max(1, self.batch_size // world),
                          **self._loader_options())
