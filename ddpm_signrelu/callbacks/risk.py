"""The risk callback: excess-KL risk, split into approximation and estimation, logged during training (§6)."""

from __future__ import annotations

import math

import lightning as L
import torch

from ddpm_signrelu.callbacks.base import ValidationEvaluator, diffusion_data, evaluation_rows
from ddpm_signrelu.callbacks.curves import write_curves
from ddpm_signrelu.diffusion import (Diffusion, Draws, Proposal, draw_for_items, evaluation_points, predict,
                                     to_bits_per_dim, vlb_columns)
from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.metrics.empirical_bayes import empirical_bayes_denoiser
from ddpm_signrelu.metrics.gaussian_reference import GaussianDenoiser
from ddpm_signrelu.metrics.risk import (ColumnStats, EstimationStats, data_columns, excess_true_columns,
                                        model_risk_columns)


class RiskMetrics(ValidationEvaluator):
    """Logs ``risk/*`` (theory.md §6.2, §6.4) and the per-log-SNR curves ``risk/curves`` (§6.3) at validation.

    S_train and S_held are fixed seeded subsets of ``num_items`` items of the training and held-out splits; item j
    of both shares its draws (t, ε), one t per log-SNR stratum plus t = 1. D*_n (over the whole training split,
    and its mirror images under ``hflip``) and, for data of known density, D* are computed once at fit start and
    cached; each evaluation then costs 2·num_items·(num_strata + 1) network calls, items sharded over ranks and
    reduced with torchmetrics. With a ``WeightAveraging`` callback (EMA) the averaged weights are evaluated.

    ``risk/estimation`` carries a control variate (§6.6): the same paired difference for a Gaussian denoiser fitted
    at fit start, centred on its mean given the splits (computed once over up to ``reference_items`` items of each).
    Subtracting its cross-fitted share keeps the paired difference's mean and removes the item-to-item noise the
    two share. ``risk/estimation_paired`` is the plain difference.

    Args:
        num_items: m, the size of S_train and S_held.  num_strata: K.  proposal: π_k, ``weight`` or ``uniform``.
        every_n_val_checks: evaluate at every n-th validation check (never during the sanity check).
        batch_size: network inputs per call.  chunk_size: training rows per step of D*_n.
        seed: seed of the subsets and draws.  entropy_samples: Monte Carlo size of H(p) (known density).
        max_memory_gb: bound on what one rank holds (:meth:`memory_bytes`); set-up fails above it.
        reference_items: training items the Gaussian reference is fitted on, and items per split of its centring.
        reference_rank: its principal directions (all up to this dimension).  reference_shrinkage: s, its
        covariance Σ + s·tr(Σ)/D·I.
    """

    def __init__(self, num_items: int = 256, num_strata: int = 16, proposal: Proposal = "weight",
                 every_n_val_checks: int = 1, batch_size: int = 1024, chunk_size: int = 4096, seed: int = 0,
                 entropy_samples: int = 100_000, max_memory_gb: float = 4.0, reference_items: int = 4096,
                 reference_rank: int = 1024, reference_shrinkage: float = 0.03):
        super().__init__(every_n_val_checks)
        if num_items < 3 or num_strata < 1 or batch_size < 1 or chunk_size < 1:
            raise ConfigError("RiskMetrics needs num_items >= 3 and num_strata, batch_size, chunk_size >= 1")
        if reference_items < 2 or reference_rank < 1 or reference_shrinkage < 0:
            raise ConfigError("RiskMetrics needs reference_items >= 2, reference_rank >= 1 and reference_shrinkage "
                              ">= 0")
        self.num_items, self.num_strata, self.proposal = num_items, num_strata, proposal
        self.batch_size, self.chunk_size = batch_size, chunk_size
        self.seed, self.entropy_samples, self.max_memory_gb = seed, entropy_samples, max_memory_gb
        self.reference_items, self.reference_rank = reference_items, reference_rank
        self.reference_shrinkage = reference_shrinkage

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
        the cache (⌈m/W⌉ items x (K + 1) points x D values x 5 float32 arrays), D*_n's working set (the logits,
        batch x chunk, and a chunk converted to float64) and the reference's fit (its items and two D x r arrays in
        float64)."""
        dim = math.prod(item_shape)
        cache = math.ceil(self.num_items / world_size) * (self.num_strata + 1) * dim * 4 * 5
        reference = (self.reference_items + 2 * min(dim, self.reference_rank)) * dim * 8
        return num_train * dim * dtype.itemsize + cache + self.chunk_size * (self.batch_size + dim) * 8 + reference

    def check_memory(self, num_train: int, item_shape: tuple[int, ...], dtype: torch.dtype,
                     world_size: int = 1) -> None:
        """A ConfigError, with the numbers and the fix, where :meth:`memory_bytes` exceeds ``max_memory_gb``."""
        need = self.memory_bytes(num_train, item_shape, dtype, world_size)
        if need > self.max_memory_gb * 2**30:
            per_rank, k, dim = math.ceil(self.num_items / world_size), self.num_strata + 1, math.prod(item_shape)
            raise ConfigError(
                f"RiskMetrics would hold {need / 2**30:.2f} GiB per process (training split {(num_train, *item_shape)} "
                f"{str(dtype).removeprefix('torch.')} for D*_n, cache of {per_rank} items x {k} points x {dim} values "
                f"x 5 arrays, the reference's {self.reference_items} items), above max_memory_gb={self.max_memory_gb}; "
                f"lower num_items, num_strata, batch_size or reference_items, or raise max_memory_gb")

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
        self.reference_delta = self.reference_difference(dm, device)
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
        names = ["vlb_train", "vlb_heldout", "approximation"]
        self.stats = ColumnStats(names + (["excess_true"] if self.mixture is not None else []),
                                 len(self.strata) + 2).to(device)
        self.estimation_stats = EstimationStats(self.reference_centre_cov).to(device)

    def reference_difference(self, dm, device) -> torch.Tensor:
        """Δ^ref_j − c of this rank's items, bits/dim columns (§6.6): the paired difference of the Gaussian denoiser
        fitted on up to ``reference_items`` items of the training split, less c, that difference's mean given the
        splits (its bound over the held-out split less over the training split, up to P = ``reference_items``·
        min(16, max(1, ⌊256/D⌋)) items each with draws of seed + 1, repeated up to P points); c's covariance is kept
        for the SE."""
        g = torch.Generator().manual_seed(self.seed)
        dim = math.prod(dm.train_data.shape[1:])
        points, chunk = self.reference_items * min(16, max(1, 256 // dim)), max(256, 65536 // dim)  # more if D small
        sides = {name: dm.to_unit(data[torch.randperm(len(data), generator=g)[:points]])
                 for name, data in (("train", dm.train_data), ("held", dm.val_data))}
        reference = self.reference = GaussianDenoiser.fit(sides["train"][:self.reference_items], self.reference_rank,
                                                          self.reference_shrinkage, clip=dm.num_levels is not None)
        alphas_cumprod = self.schedule.alphas_cumprod.to(device)

        def bound_columns(points):
            x0_hat = predict(lambda x_t, t: reference(x_t, alphas_cumprod[t]), points, self.batch_size)
            return to_bits_per_dim(vlb_columns(self.schedule, points, x0_hat, self.num_levels), points.x0[0].numel())

        self.reference_centre, self.reference_centre_cov = 0, 0
        for sign, items, whole in ((1, sides["held"], len(dm.val_data)), (-1, sides["train"], len(dm.train_data))):
            repeats = max(1, points // len(items))
            x0 = items.repeat(repeats, *[1] * (items.dim() - 1))
            g = torch.Generator().manual_seed(self.seed + 1)  # one stream: these draws are never shared by item
            cols = []
            for i in range(0, len(x0), chunk):
                part = x0[i:i + chunk]
                t, pi = self.strata.draw(torch.rand(len(part), len(self.strata), generator=g, dtype=torch.float64))
                eps = torch.randn(len(part), len(self.strata) + 1, *part.shape[1:], generator=g)
                cols.append(bound_columns(evaluation_points(self.schedule, part.to(device), Draws(t, pi, eps))))
            cols = torch.cat(cols)
            mean = cols.mean(0)
            if len(items) == whole and repeats > 1:  # the whole split: only the draws are noise
                cols = cols.view(repeats, len(items), -1)
                cols = cols - cols.mean(0) + mean
            self.reference_centre = self.reference_centre + sign * mean
            self.reference_centre_cov = self.reference_centre_cov + torch.cov(cols.reshape(len(x0), -1).T) / len(x0)
        return bound_columns(self.held_points) - bound_columns(self.train_points) - self.reference_centre

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
            self.estimation_stats.update(columns["estimation_paired"], self.reference_delta[rows],
                                         columns["approximation"])
            if self.bayes_held is not None:
                columns |= excess_true_columns(self.schedule, held, model_held, self.bayes_held[rows],
                                               self.num_levels)
            self.stats.update(columns)
        results = self.stats.compute() | self.estimation_stats.compute() | self.data_metrics
        self.stats.reset()
        self.estimation_stats.reset()
        if self.entropy is not None:
            (h, h_se), (vlb, vlb_se) = self.entropy, results["vlb_heldout"][:2]
            results["entropy_true"] = (h, h_se, None)
            results["kl_upper"] = (vlb - h, math.hypot(vlb_se, h_se), None)
        return results

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, results: dict) -> None:
        for name, (value, se, _) in results.items():
            pl_module.log(f"risk/{name}", value, batch_size=1)
            if se is not None:
                pl_module.log(f"risk/{name}_se", se, batch_size=1)
        out_dir = trainer.log_dir or trainer.default_root_dir  # a collective under DDP: every rank asks
        if trainer.is_global_zero:
            curves = {name: cols for name, (_, _, cols) in results.items() if cols is not None}
            write_curves(trainer, out_dir, self.strata, self.schedule, curves)
