"""The base of callbacks that evaluate the model at validation checks (EMA weights when on), and their data."""

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, WeightAveraging

from ddpm_signrelu.data import TensorDataModule
from ddpm_signrelu.errors import ConfigError


def diffusion_data(trainer: L.Trainer, user: str, num_items: int = 0) -> TensorDataModule:
    """The trainer's set-up :class:`TensorDataModule` (``train_data``, ``val_data``, ``to_unit``, ``hflip``,
    ``mixture``), each split holding at least ``num_items`` items; else a ConfigError naming ``user``."""
    dm = trainer.datamodule
    if not isinstance(dm, TensorDataModule) or dm.train_data is None:
        raise ConfigError(f"{user} needs a ddpm_signrelu data module (a TensorDataModule with a training and a "
                          f"held-out split), got {type(dm).__name__}")
    if num_items > min(len(dm.train_data), len(dm.val_data)):
        raise ConfigError(f"{user} num_items={num_items} exceeds the training split ({len(dm.train_data)}) or the "
                          f"held-out split ({len(dm.val_data)}); lower num_items")
    return dm


def evaluation_rows(dm: TensorDataModule, num_items: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed evaluation rows: ``num_items`` of the training split, then of the held-out split, under ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randperm(len(data), generator=g)[:num_items] for data in (dm.train_data, dm.val_data))


class ValidationEvaluator(Callback):
    """Calls :meth:`evaluate_model` at every ``every_n_val_checks``-th validation check of a fit (never the sanity
    check; 0: never) with the weights validation sees: set-up moves it after a ``WeightAveraging`` (EMA) callback."""

    def __init__(self, every_n_val_checks: int = 1):
        if every_n_val_checks < 0:
            raise ConfigError(f"every_n_val_checks must be >= 0, got {every_n_val_checks}")
        self.every_n_val_checks = every_n_val_checks
        self._checks = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        averaging = [cb for cb in trainer.callbacks if isinstance(cb, WeightAveraging)]
        if averaging and trainer.callbacks.index(self) < trainer.callbacks.index(averaging[-1]):
            others = [cb for cb in trainer.callbacks if cb is not self]
            after = others.index(averaging[-1]) + 1
            trainer.callbacks = others[:after] + [self] + others[after:]  # a new list: the running hook loop is intact

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or not self.every_n_val_checks:
            return
        self._checks += 1
        if self._checks % self.every_n_val_checks == 0:
            self.evaluate_model(trainer, pl_module)

    def evaluate_model(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        raise NotImplementedError
