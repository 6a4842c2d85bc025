"""A checkpoint written when training fails, never before the run's first optimizer step."""

import os

import lightning as L
from lightning.pytorch.callbacks import Checkpoint


class ExceptionCheckpoint(Checkpoint):
    """Saves ``<dirpath>/<filename>.ckpt`` when training raises after this run's first optimizer step (an earlier
    file would shadow the real checkpoints), and removes it when a fit ends well. Resume with ``--ckpt_path last``.
    ``dirpath`` defaults to ``<trainer.default_root_dir>/checkpoints``; an empty ``filename`` raises ValueError."""

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: str | None = None, filename: str = "on_exception"):
        if not filename:
            raise ValueError("ExceptionCheckpoint needs a filename")
        self.dirpath, self.filename = dirpath, filename
        self._start_step: int | None = None

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + self.FILE_EXTENSION)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.dirpath = self.dirpath or os.path.join(trainer.default_root_dir, "checkpoints")
        self._start_step = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_step = trainer.global_step  # after a resume: the checkpoint's step

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self._start_step is not None and trainer.global_step > self._start_step:
            trainer.save_checkpoint(self.ckpt_path)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # called after a fit that ended well; validate, test and predict leave the file alone
            trainer.strategy.remove_checkpoint(self.ckpt_path)
