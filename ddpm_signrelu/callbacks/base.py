"""A base for callbacks that evaluate the model once per validation check, with the EMA weights when EMA is on, and
the data contract they rely on."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, WeightAveraging

from ddpm_signrelu.data import TensorDataModule
from ddpm_signrelu.errors import ConfigError


def diffusion_data(trainer: L.Trainer, user: str) -> TensorDataModule:
    """The trainer's data module, which evaluators need to be a set-up :class:`TensorDataModule`: stored training and
    held-out splits (``train_data``, ``val_data``, read through ``to_unit``), ``hflip``, and ``mixture`` where the
    density is known."""
    dm = trainer.datamodule
    if not isinstance(dm, TensorDataModule) or dm.train_data is None:
        raise ConfigError(f"{user} needs a ddpm_signrelu data module (a TensorDataModule with a training and a "
                          f"held-out split), got {type(dm).__name__}")
    return dm


def evaluation_rows(dm: TensorDataModule, num_items: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed evaluation items: ``num_items`` rows of the training split and as many of the held-out split, drawn
    without replacement under ``seed`` (the same rows on every rank and in every evaluator with that seed)."""
    g = torch.Generator().manual_seed(seed)
    train_rows = torch.randperm(len(dm.train_data), generator=g)[:num_items]
    return train_rows, torch.randperm(len(dm.val_data), generator=g)[:num_items]


class ValidationEvaluator(Callback):
    """Calls :meth:`evaluate_model` at every ``every_n_val_checks``-th validation check of a fit (never the sanity
    check; 0: never), with the weights that validation and checkpointing see.

    ``WeightAveraging`` (EMA) swaps the averaged weights in at its validation-epoch start hook and out at its end
    hook, and puts them in for good at its train-end hook; callbacks run in list order. So at set-up an evaluator
    listed before an averaging callback moves to just after it, and evaluates at the validation-epoch start: after
    the swap, whatever order the config lists them in. A train-end evaluation (:class:`SampleGrid`) likewise sees
    the averaged weights.
    """

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
