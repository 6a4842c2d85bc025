"""Samples during and at the end of training: every process draws its share of the seeds."""

import math
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from ddpm_signrelu.callbacks.base import ValidationEvaluator
from ddpm_signrelu.data.table import TableCodec, stratified, write_csv
from ddpm_signrelu.diffusion import Sampler, Spacing, sampling_plan
from ddpm_signrelu.errors import DataError
from ddpm_signrelu.images import save_samples, to_uint8


def rank_share(trainer: L.Trainer, count: int) -> range:
    """This process's contiguous share of ``count`` items (shares of ⌈count / W⌉, the last ones shorter)."""
    share = math.ceil(count / trainer.world_size)
    return range(min(count, trainer.global_rank * share), min(count, (trainer.global_rank + 1) * share))


def generate_across_ranks(trainer: L.Trainer, pl_module, seeds: Sequence[int], sampling: dict) -> torch.Tensor:
    """All samples of ``seeds`` on every process, each drawing a contiguous share (padded to equal shares, then
    gathered): the same images as one process. ``sampling``: ``generate``'s options."""
    seeds = list(seeds)
    rows = rank_share(trainer, len(seeds))
    share = math.ceil(len(seeds) / trainer.world_size)
    mine = seeds[rows.start:rows.stop] + [seeds[0]] * (share - len(rows))
    was_training = pl_module.training
    pl_module.eval()
    x = pl_module.generate(mine, **sampling)
    pl_module.train(was_training)
    if trainer.world_size > 1:
        x = pl_module.all_gather(x).flatten(0, 1)
    return x[:len(seeds)]


class SampleWriter(BasePredictionWriter):
    """Collects the samples of ``Trainer.predict`` (``DiffusionModel.predict_step``), gathers them and writes them in
    seed order from rank zero (:meth:`save`, as :func:`save_samples`); the files written end in :attr:`paths`."""

    def __init__(self, output: str | Path, num_levels: int | None):
        super().__init__(write_interval="batch")
        self.output, self.num_levels = output, num_levels
        self.seeds, self.samples, self.paths = [], [], None

    def convert(self, samples: torch.Tensor) -> torch.Tensor:
        """A batch as it is kept until :meth:`save`: uint8 levels."""
        return to_uint8(samples, self.num_levels)

    def save(self, samples: torch.Tensor) -> tuple[Path, ...]:
        return save_samples(samples, self.output)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        self.seeds.append(batch)
        self.samples.append(self.convert(prediction))

    def on_predict_end(self, trainer: L.Trainer, pl_module) -> None:
        device = pl_module.device
        seeds = torch.cat(self.seeds).to(device) if self.seeds else torch.zeros(0, dtype=torch.long, device=device)
        samples = torch.cat(self.samples).to(device) if self.samples else \
            self.convert(torch.zeros((0, *pl_module.data_shape), device=device))  # a process may have had no seeds
        if trainer.world_size > 1:  # pad the shares to one size, gather, drop the padding
            counts = trainer.strategy.all_gather(torch.tensor(len(seeds), device=seeds.device)).tolist()
            pad = max(counts) - len(seeds)
            seeds = torch.cat([seeds, seeds.new_zeros(pad)])
            samples = torch.cat([samples, samples.new_zeros((pad, *samples.shape[1:]))])
            seeds, samples = (torch.cat([part[:n] for part, n in zip(trainer.strategy.all_gather(v), counts)])
                              for v in (seeds, samples))
        if trainer.is_global_zero:
            self.paths = self.save(samples[seeds.argsort()].cpu())


class TableWriter(SampleWriter):
    """A :class:`SampleWriter` for tabular models: the rows decoded by ``codec`` into ``<output>/samples.csv``; with
    ``stratify`` (a categorical column, a row count), that many rows with the column's labels in their training shares
    (:func:`~ddpm_signrelu.data.table.stratified`)."""

    def __init__(self, output: str | Path, codec: TableCodec, stratify: tuple[str, int] | None = None):
        super().__init__(output, None)
        self.codec, self.stratify = codec, stratify

    def convert(self, samples: torch.Tensor) -> torch.Tensor:
        return samples.float()

    def save(self, samples: torch.Tensor) -> tuple[Path, ...]:
        path = Path(self.output) / "samples.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        table = self.codec.decode(samples)
        if self.stratify:
            try:
                table = stratified(table, self.codec.column(self.stratify[0]), self.stratify[1])
            except DataError as err:  # the rows drawn are kept
                write_csv(table, kept := path.with_name("samples_drawn.csv"), self.codec.columns)
                raise DataError(f"{err}; the {len(samples)} rows drawn are in {kept}") from None
        write_csv(table, path, self.codec.columns)
        return (path,)


class SampleGrid(ValidationEvaluator):
    """Samples ``num_samples`` images with fixed seeds into ``<run dir>/samples/step_<N>.png`` (+ .npz) and the W&B
    or TensorBoard image ``samples``: at the end of training and every ``every_n_val_checks``-th check (0: never)."""

    def __init__(self, num_samples: int = 64, sampler: Sampler = "ddim", steps: int | None = 50,
                 eta: float | None = None, spacing: Spacing | None = None, seed: int = 0,
                 every_n_val_checks: int = 0):
        super().__init__(every_n_val_checks)
        self.num_samples, self.seed = num_samples, seed
        self.sampling = {"sampler": sampler, "steps": steps, "eta": eta, "spacing": spacing}

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        sampling_plan(pl_module.diffusion.schedule, **self.sampling)  # bad options fail before the first step

    def evaluate_model(self, trainer: L.Trainer, pl_module) -> Path | None:
        """Sample on all processes; rank zero saves and logs the grid (the others return None)."""
        run_dir = Path(trainer.log_dir or trainer.default_root_dir)  # a collective under DDP: every rank asks
        seeds = range(self.seed, self.seed + self.num_samples)
        images = to_uint8(generate_across_ranks(trainer, pl_module, seeds, self.sampling), pl_module.hparams.num_levels)
        if not trainer.is_global_zero:
            return None
        png, _ = save_samples(images, run_dir / "samples", prefix=f"step_{trainer.global_step:07d}")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("samples", [str(png)], step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_images("samples", images, trainer.global_step)
        return png

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self.evaluate_model(trainer, pl_module)
