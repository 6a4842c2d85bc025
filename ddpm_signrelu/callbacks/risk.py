"""The risk callback: excess-KL risk, split into approximation and estimation, logged during training (§6)."""

from __future__ import annotations

import math

import lightning as L
import torch

from ddpm_signrelu.callbacks.base import ValidationEvaluator, diffusion_data, evaluation_rows
from ddpm_signrelu.callbacks.curves import write_curves
from ddpm_signrelu.diffusion import Diffusion, Proposal, draw_for_items, evaluation_points, predict, to_bits_per_dim
from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.metrics.empirical_bayes import empirical_bayes_denoiser
from ddpm_signrelu.metrics.risk import (ColumnStats, excess_true_columns, model_risk_columns,
                                        data_columns)


class RiskMetrics(ValidationEvaluator):
    """Logs ``risk/*`` (theory.md §6.2, §6.4) and the per-log-SNR curves ``risk/curves`` (§6.3) at validation.

    S_train and S_held are fixed seeded subsets of ``num_items`` items of the training and held-out splits; item j
    of both shares its draws (t, ε), one t per log-SNR stratum plus t = 1. D*_n (over the whole training split,
    and its mirror images under ``hflip``) and, for data of known density, D* are computed once at fit start and
    cached; each evaluation then costs 2·num_items·(num_strata + 1) network calls, items sharded over ranks and
    reduced with torchmetrics. With a ``WeightAveraging`` callback (EMA) the averaged weights are evaluated.

    Args:
        num_items: m, the size of S_train and S_held.  num_strata: K.  proposal: π_k, ``weight`` or ``uniform``.
        every_n_val_checks: evaluate at every n-th validation check (never during the sanity check).
        batch_size: network inputs per call.  chunk_size: training rows per step of D*_n.
        seed: seed of the subsets and draws.  entropy_samples: Monte Carlo size of H(p) (known density).
        max_memory_gb: bound on what one rank holds (:meth:`memory_bytes`); set-up fails above it.
    """

    def __init__(self, num_items: int = 256, num_strata: int = 16, proposal: Proposal = "weight",
                 every_n_val_checks: int = 1, batch_size: int = 1024, chunk_size: int = 4096, seed: int = 0,
                 entropy_samples: int = 100_000, max_memory_gb: float = 4.0):
        super().__init__(every_n_val_checks)
        if num_items < 2 or num_strata < 1 or batch_size < 1 or chunk_size < 1:
            raise ConfigError("RiskMetrics needs num_items >= 2 and num_strata, batch_size, chunk_size >= 1")
        self.num_items, self.num_strata, self.proposal = num_items, num_strata, proposal
        self.batch_size, self.chunk_size = batch_size, chunk_size
        self.seed, self.entropy_samples, self.max_memory_gb = seed, entropy_samples, max_memory_gb

    # ----------------------------------------------------------------------------------------------- set-up
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        dm = diffusion_data(trainer, "RiskMetrics")
        train, held = dm.train_data, dm.val_data
        m = self.num_items
        if m > len(train) or m > len(held):
            raise ConfigError(f"RiskMetrics num_items={m} exceeds the training split ({len(train)}) or the held-out "
                              f"split ({len(held)}); lower num_items or enlarge the splits")
        if m < trainer.world_size:
            raise ConfigError(f"RiskMetrics num_items={m} is below the number of processes ({trainer.world_size})")
        self.check_memory(len(train), tuple(train.shape[1:]), train.dtype, trainer.world_size)
        super().setup(trainer, pl_module, stage)

    def memory_bytes(self, num_train: int, item_shape: tuple[int, ...], dtype: torch.dtype,
                     world_size: int = 1) -> int:
        """Bytes one of ``world_size`` processes holds for these metrics, from sizes alone: the training split
        (num_train items of ``item_shape`` in ``dtype``, as stored: D*_n flips and converts it chunk by chunk),
        the cache (⌈m/W⌉ items x (K + 1) points x D values x 5 float32 arrays) and D*_n's working set (the logits,
        batch x chunk, and a chunk converted to float64)."""
        dim = math.prod(item_shape)
        cache = math.ceil(self.num_items / world_size) * (self.num_strata + 1) * dim * 4 * 5
        return num_train * dim * dtype.itemsize + cache + self.chunk_size * (self.batch_size + dim) * 8

    def check_memory(self, num_train: int, item_shape: tuple[int, ...], dtype: torch.dtype,
                     world_size: int = 1) -> None:
        """A ConfigError, with the numbers and the fix, where :meth:`memory_bytes` exceeds ``max_memory_gb``."""
        need = self.memory_bytes(num_train, item_shape, dtype, world_size)
        if need > self.max_memory_gb * 2**30:
            per_rank, k, dim = math.ceil(self.num_items / world_size), self.num_strata + 1, math.prod(item_shape)
            raise ConfigError(
                f"RiskMetrics would hold {need / 2**30:.2f} GiB per process (training split {(num_train, *item_shape)} "
                f"{str(dtype).removeprefix('torch.')} for D*_n, cache of {per_rank} items x {k} points x {dim} values "
                f"x 5 arrays), above max_memory_gb={self.max_memory_gb}; lower num_items, num_strata or batch_size, "
                f"or raise max_memory_gb")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.prepare(trainer.datamodule, pl_module.diffusion, pl_module.device, trainer.global_rank, trainer.world_size)

    def prepare(self, dm, diffusion: Diffusion, device, rank: int = 0, world_size: int = 1) -> None:
        """Fix S_train, S_held and the draws of this rank's items; cache D*_n (and D*) there; reduce the
        θ-independent metrics. ``dm``: a set-up :class:`~ddpm_signrelu.data.TensorDataModule`; D*_n's atoms are its
        training split and, under ``hflip``, their mirror images. ``diffusion``: the model's."""
        schedule = self.schedule = diffusion.schedule
        self.num_levels, self.strata = diffusion.num_levels, diffusion.strata(self.num_strata, self.proposal)
        train_rows, held_rows = evaluation_rows(dm, self.num_items, self.seed)
        items = list(range(rank, self.num_items, world_size))
        shape = tuple(dm.train_data.shape[1:])
        draws = draw_for_items(self.strata, self.seed, items, shape)
        self.train_points = evaluation_points(schedule, dm.to_unit(dm.train_data[train_rows[items]]).to(device), draws)
        self.held_points = evaluation_points(schedule, dm.to_unit(dm.val_data[held_rows[items]]).to(device), draws)
        self.mixture = dm.mixture

        def empirical(x_t, t):
            ab = self.schedule.alphas_cumprod.to(device)[t]
            return empirical_bayes_denoiser(x_t, ab, dm.train_data, self.chunk_size, num_levels=dm.num_levels,
                                            hflip=dm.hflip).float()

        self.empirical_train = predict(empirical, self.train_points, self.batch_size)
        self.empirical_held = predict(empirical, self.held_points, self.batch_size)
        self.bayes_held = None
        if self.mixture is not None:
            bayes = self.mixture.denoiser_at_steps(schedule.alphas_cumprod)
            self.bayes_held = predict(bayes, self.held_points, self.batch_size)
        fixed = data_columns(schedule, self.train_points, self.held_points, self.empirical_train, self.empirical_held,
                             self.bayes_held, self.num_levels)
        stats = ColumnStats(fixed, len(self.strata) + 2).to(device)
        stats.update(fixed)
        self.data_metrics = stats.compute()
        self.entropy = None
        if self.mixture is not None:
            h, se = self.mixture.entropy(self.entropy_samples, self.seed)
            self.entropy = (to_bits_per_dim(h, math.prod(shape)), to_bits_per_dim(se, math.prod(shape)))
        names = ["vlb_train", "vlb_heldout", "approximation", "estimation", "excess"]
        self.stats = ColumnStats(names + (["excess_true"] if self.mixture is not None else []),
                                 len(self.strata) + 2).to(device)

    # ----------------------------------------------------------------------------------------------- evaluation
    def evaluate_model(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, self.evaluate(pl_module.denoise))

    @torch.no_grad()
    def evaluate(self, denoise) -> dict:
        """All ``risk/*`` metrics of the denoiser ``denoise(x_t, t) -> x̂0``: name -> (value, SE, column means)."""
        per_call = max(1, self.batch_size // (len(self.strata) + 1))
        for i in range(0, len(self.train_points), per_call):
            rows = slice(i, i + per_call)
            train, held = self.train_points[rows], self.held_points[rows]
            model_train, model_held = predict(denoise, train, self.batch_size), predict(denoise, held, self.batch_size)
            columns = model_risk_columns(self.schedule, train, held, model_train, model_held,
                                         self.empirical_train[rows], self.num_levels)
            if self.bayes_held is not None:
                columns |= excess_true_columns(self.schedule, held, model_held, self.bayes_held[rows],
                                               self.num_levels)
            self.stats.update(columns)
        results = self.stats.compute() | self.data_metrics
        self.stats.reset()
        if self.entropy is not None:
            (h, h_se), (vlb, vlb_se) = self.entropy, results["vlb_heldout"][:2]
            results["entropy_true"] = (h, h_se, None)
            results["kl_upper"] = (vlb - h, math.hypot(vlb_se, h_se), None)
        return results

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, results: dict) -> None:
        for name, (value, se, _) in results.items():
            pl_module.log(f"risk/{name}", value, batch_size=1)
            pl_module.log(f"risk/{name}_se", se, batch_size=1)
        out_dir = trainer.log_dir or trainer.default_root_dir  # a collective under DDP: every rank asks
        if trainer.is_global_zero:
            curves = {name: cols for name, (_, _, cols) in results.items() if cols is not None}
            write_curves(trainer, out_dir, self.strata, self.schedule, curves)
