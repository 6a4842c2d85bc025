"""A base for callbacks that evaluate the model once per validation check, with the EMA weights when EMA is on, and
the data contract they rely on."""

from __future__ import annotations

import lightning as L
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


class ValidationEvaluator(Callback):
    """Calls :meth:`evaluate_model` at every ``every_n_val_checks``-th validation check (never the sanity check).

    ``WeightAveraging`` (EMA) swaps the averaged weights in between its validation-epoch start and end hooks, and
    callbacks run in list order: the evaluation runs at our start hook if an averaging callback comes before us,
    else at our end hook, so it always sees the weights that validation and checkpointing see.
    """

    def __init__(self, every_n_val_checks: int = 1):
        if every_n_val_checks < 1:
            raise ConfigError(f"every_n_val_checks must be >= 1, got {every_n_val_checks}")
        self.every_n_val_checks = every_n_val_checks
        self._checks = 0
        self._evaluate_at_start = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        averaging = [i for i, cb in enumerate(trainer.callbacks) if isinstance(cb, WeightAveraging)]
        self._evaluate_at_start = bool(averaging) and averaging[0] < trainer.callbacks.index(self)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._evaluate_at_start:
            self._maybe_evaluate(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._evaluate_at_start:
            self._maybe_evaluate(trainer, pl_module)

    def _maybe_evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._checks += 1
        if self._checks % self.every_n_val_checks == 0:
            self.evaluate_model(trainer, pl_module)

    def evaluate_model(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        raise NotImplementedError
