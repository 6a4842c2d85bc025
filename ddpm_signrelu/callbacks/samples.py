"""Write a grid of samples during and at the end of training."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from ddpm_signrelu.io import save_samples, to_uint8


class SampleGrid(L.Callback):
    """Samples ``num_samples`` images with fixed seeds into ``<run dir>/samples/step_<N>.png`` (+ .npz).

    Runs at the end of training and, if ``every_n_val_checks`` > 0, at the start of every n-th validation:
    both after the EMA callback has put the averaged weights in place, when it is listed before this one.
    """

    def __init__(self, num_samples: int = 64, sampler: str = "ddim", steps: int | None = 50, eta: float = 0.0,
                 seed: int = 0, every_n_val_checks: int = 0):
        self.num_samples, self.sampler, self.steps, self.eta = num_samples, sampler, steps, eta
        self.seed, self.every_n_val_checks, self._checks = seed, every_n_val_checks, 0

    def write(self, trainer: L.Trainer, pl_module) -> Path | None:
        """Sample and save on rank zero (the others return None)."""
        run_dir = Path(trainer.log_dir or trainer.default_root_dir)  # a collective under DDP: every rank asks
        if not trainer.is_global_zero:
            return None
        was_training = pl_module.training
        pl_module.eval()
        x = pl_module.generate(range(self.seed, self.seed + self.num_samples), self.sampler, self.steps, self.eta)
        pl_module.train(was_training)
        png, _ = save_samples(to_uint8(x, pl_module.hparams.num_levels), run_dir / "samples",
                              prefix=f"step_{trainer.global_step:07d}")
        return png

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or self.every_n_val_checks <= 0:
            return
        self._checks += 1
        if self._checks % self.every_n_val_checks == 0:
            self.write(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self.write(trainer, pl_module)
