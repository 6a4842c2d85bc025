"""The risk callback: excess-KL risk, split into approximation and estimation, logged during training (§6)."""

import math

import lightning as L
import torch

from ddpm_signrelu.callbacks.base import ValidationEvaluator, diffusion_data, evaluation_rows
from ddpm_signrelu.callbacks.curves import log_risk
from ddpm_signrelu.diffusion import (Diffusion, Draws, EvalPoints, Proposal, draw_for_items, evaluation_points,
                                     predict, to_bits_per_dim, vlb_columns)
from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.metrics.empirical_bayes import empirical_bayes_denoiser
from ddpm_signrelu.metrics.gaussian_reference import GaussianMixtureDenoiser
from ddpm_signrelu.metrics.risk import (ColumnStats, EstimationStats, data_columns, excess_true_columns,
                                        RISES, model_risk_columns, neyman_allocation)


class RiskMetrics(ValidationEvaluator):
    """Logs ``risk/*`` (theory.md §6.2, §6.4) and the per-log-SNR curves ``risk/curves`` (§6.3) at validation.

    S_train and S_held are m seeded groups of training and held-out items sharing their draws (t, ε) at R points
    (§6.1); D*_n (and D* for data of known density) and the control variate's reference (§6.6) are computed once at
    fit start, then each evaluation costs 2·m·R network calls. From the second check on, ``risk/estimation_rise``
    and ``risk/vlb_heldout_rise`` give the paired change since the lowest check (§7), what :class:`GapRiseStop` reads.

    Args:
        num_items: m >= 3, the groups of S_train and S_held.  num_strata: K, the log-SNR strata.
        points_per_item: R >= K + 1 (default 4(K + 1)).  proposal: π_k, ``weight`` or ``uniform``.
        spread_items: each point on a data item of its own where the splits allow (False: a group's points on one).
        batch_size: network inputs per call.  chunk_size: training rows per step of D*_n.  seed: the subsets, draws.
        entropy_samples: Monte Carlo size of H(p) (known density).  max_memory_gb: see :meth:`check_memory`.
        reference_items: training items the reference is fitted on, and items per split of its centring.
        reference_rank: each Gaussian's principal directions (all up to this dimension).
        reference_shrinkage: s, each Gaussian's covariance Σ + s·tr(Σ)/D·I.
        reference_components: the reference's Gaussians (k-means clusters of its items; 1: one Gaussian).
    """

    def __init__(self, num_items: int = 64, num_strata: int = 16, points_per_item: int | None = None,
                 spread_items: bool = True, proposal: Proposal = "weight",
                 every_n_val_checks: int = 1, batch_size: int = 1024, chunk_size: int = 4096, seed: int = 0,
                 entropy_samples: int = 100_000, max_memory_gb: float = 4.0, reference_items: int = 4096,
                 reference_rank: int = 1024, reference_shrinkage: float = 0.03, reference_components: int = 1):
        super().__init__(every_n_val_checks)
        if num_items < 3 or num_strata < 1 or batch_size < 1 or chunk_size < 1:
            raise ConfigError("RiskMetrics needs num_items >= 3 and num_strata, batch_size, chunk_size >= 1")
        if points_per_item is not None and points_per_item < num_strata + 1:
            raise ConfigError(f"RiskMetrics points_per_item={points_per_item} is below one point per column "
                              f"(num_strata + 1 = {num_strata + 1}: L_0 and the strata); raise it or lower num_strata")
        if reference_items < 2 or reference_rank < 1 or reference_shrinkage < 0 or reference_components < 1:
            raise ConfigError("RiskMetrics needs reference_items >= 2, reference_rank >= 1, reference_components >= 1 "
                              "and reference_shrinkage >= 0")
        self.num_items, self.num_strata, self.points_per_item = num_items, num_strata, points_per_item
        self.spread_items, self.proposal, self.batch_size = spread_items, proposal, batch_size
        self.chunk_size, self.seed, self.entropy_samples = chunk_size, seed, entropy_samples
        self.max_memory_gb, self.reference_items, self.reference_rank = max_memory_gb, reference_items, reference_rank
        self.reference_shrinkage, self.reference_components = reference_shrinkage, reference_components

    @property
    def points(self) -> int:
        """R, the points of each group."""
        return self.points_per_item or 4 * (self.num_strata + 1)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        train = diffusion_data(trainer, "RiskMetrics", self.num_items).train_data
        if self.num_items < trainer.world_size:
            raise ConfigError(f"RiskMetrics num_items={self.num_items} is below the number of processes "
                              f"({trainer.world_size})")
        self.check_memory(len(train), tuple(train.shape[1:]), train.dtype, trainer.world_size)
        super().setup(trainer, pl_module, stage)

    def memory_bytes(self, num_train: int, item_shape: tuple[int, ...], dtype: torch.dtype, world_size: int = 1) -> int:
        """Bytes one of ``world_size`` processes holds, from sizes alone: the training split as stored (``num_train``
        items of ``item_shape`` in ``dtype``), the cache (7 float32 arrays of ⌈m/W⌉·R·D), D*_n's logits (batch x chunk)
        and float64 chunk, and the reference's fit (its items and two D x r arrays a component)."""
        dim = math.prod(item_shape)
        cache = math.ceil(self.num_items / world_size) * self.points * dim * 4 * 7
        reference = (self.reference_items + 2 * self.reference_components * min(dim, self.reference_rank)) * dim * 8
        return num_train * dim * dtype.itemsize + cache + self.chunk_size * (self.batch_size + dim) * 8 + reference

    def check_memory(self, num_train: int, item_shape: tuple[int, ...], dtype: torch.dtype,
                     world_size: int = 1) -> None:
        """A ConfigError, with the numbers and the fix, where :meth:`memory_bytes` exceeds ``max_memory_gb``."""
        if (need := self.memory_bytes(num_train, item_shape, dtype, world_size)) > self.max_memory_gb * 2**30:
            per_rank, k, dim = math.ceil(self.num_items / world_size), self.points, math.prod(item_shape)
            raise ConfigError(
                f"RiskMetrics would hold {need / 2**30:.2f} GiB per process (training split {(num_train, *item_shape)} "
                f"{str(dtype).removeprefix('torch.')} for D*_n, cache of {per_rank} groups x {k} points x {dim} values "
                f"x 7 arrays, the reference's {self.reference_items} items), above max_memory_gb={self.max_memory_gb}; "
                f"lower num_items, points_per_item, batch_size or reference_items, or raise max_memory_gb")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.prepare(trainer.datamodule, pl_module.diffusion, pl_module.device, trainer.global_rank, trainer.world_size)

    def prepare(self, dm, diffusion: Diffusion, device, rank: int = 0, world_size: int = 1) -> None:
        """Fit and centre the reference, fix this rank's points, cache D*_n (and D*) there and reduce the θ-independent
        metrics. ``dm``: a set-up :class:`~ddpm_signrelu.data.TensorDataModule`; ``diffusion``: the model's."""
        schedule = self.schedule = diffusion.schedule
        self.num_levels, self.strata = diffusion.num_levels, diffusion.strata(self.num_strata, self.proposal)
        self.mixture = dm.mixture
        self.repeats = neyman_allocation(self.fit_reference(dm, device), self.points)
        self.train_points, self.held_points = self.item_points(dm, device, rank, world_size)

        def empirical(x_t, t):
            return empirical_bayes_denoiser(x_t, schedule.alphas_cumprod.to(device)[t], dm.train_data, self.chunk_size,
                                            num_levels=dm.num_levels, hflip=dm.hflip).float()

        self.empirical_train = predict(empirical, self.train_points, self.batch_size)
        self.empirical_held = predict(empirical, self.held_points, self.batch_size)
        self.reference_delta = (self.reference_columns(self.held_points) - self.reference_columns(self.train_points)
                                - self.reference_centre)
        self.bayes_held = None if self.mixture is None else predict(
            self.mixture.denoiser_at_steps(schedule.alphas_cumprod), self.held_points, self.batch_size)
        fixed = data_columns(schedule, self.train_points, self.held_points, self.empirical_train, self.empirical_held,
                             self.bayes_held, self.num_levels)
        stats = ColumnStats(fixed, len(self.strata) + 2).to(device)
        stats.update(fixed)
        self.data_metrics = stats.compute()
        self.entropy = None
        if self.mixture is not None:
            h, se = self.mixture.entropy(self.entropy_samples, self.seed)
            self.entropy = (to_bits_per_dim(h, self.train_points.dim), to_bits_per_dim(se, self.train_points.dim))
        names = ["vlb_train", "vlb_heldout", "approximation"] + (["excess_true"] if self.mixture is not None else [])
        self.stats = ColumnStats(names, len(self.strata) + 2).to(device)
        self.estimation_stats = EstimationStats(self.reference_centre_cov).to(device)
        self.history = self.__dict__.pop("saved_history", None) or {name: [] for name in RISES}  # kept on resume

    def item_points(self, dm, device, rank: int, world_size: int) -> tuple[EvalPoints, EvalPoints]:
        """This rank's points of S_train and S_held, the same draws on both sides (§6.1)."""
        m, points = self.num_items, self.points
        b = min(points, len(dm.train_data) // m, len(dm.val_data) // m) if self.spread_items else 1
        train_rows, held_rows = evaluation_rows(dm, m * b, self.seed)
        items = list(range(rank, m, world_size))
        shape = tuple(dm.train_data.shape[1:])
        draws = draw_for_items(self.strata, self.seed, items, shape, self.repeats)
        point_item = torch.arange(points) % b

        def side(data, rows):
            rows = rows.view(m, b)[items][:, point_item]
            return evaluation_points(self.schedule, dm.to_unit(data[rows.flatten()]).view(*rows.shape, *shape)
                                     .to(device), draws)

        return side(dm.train_data, train_rows), side(dm.val_data, held_rows)

    def reference_columns(self, points: EvalPoints) -> torch.Tensor:
        """The Gaussian reference's bound columns at ``points``, bits/dim."""
        alphas_cumprod = self.schedule.alphas_cumprod.to(points.x_t.device)
        x0_hat = predict(lambda x_t, t: self.reference(x_t, alphas_cumprod[t]), points, self.batch_size)
        return to_bits_per_dim(vlb_columns(self.schedule, points, x0_hat, self.num_levels), points.dim)

    def fit_reference(self, dm, device) -> torch.Tensor:
        """Fit the Gaussian reference and centre its paired difference: c and its covariance (§6.6). Returns the
        standard deviation of its paired difference in each network column (L_0, strata): the allocation's guide."""
        g = torch.Generator().manual_seed(self.seed)
        dim = math.prod(dm.train_data.shape[1:])
        points, chunk = self.reference_items * min(16, max(1, 256 // dim)), max(256, 65536 // dim)  # more if D small
        sides = {name: dm.to_unit(data[torch.randperm(len(data), generator=g)[:points]])
                 for name, data in (("train", dm.train_data), ("held", dm.val_data))}
        self.reference = GaussianMixtureDenoiser.fit(sides["train"][:self.reference_items], self.reference_components,
                                                     self.reference_rank, self.reference_shrinkage,
                                                     clip=dm.num_levels is not None, seed=self.seed)
        column = self.strata.point_columns()
        self.reference_centre, self.reference_centre_cov, variance = 0, 0, 0
        for sign, items, whole in ((1, sides["held"], len(dm.val_data)), (-1, sides["train"], len(dm.train_data))):
            repeats = max(2 if len(items) == whole else 1, points // len(items))  # 2: the draws' share of c
            x0 = items.repeat(repeats, *[1] * (items.dim() - 1))
            g = torch.Generator().manual_seed(self.seed + 1)  # one stream: these draws are never shared by item
            cols = []
            for i in range(0, len(x0), chunk):
                part = x0[i:i + chunk]
                u = torch.rand(len(part), len(self.strata), generator=g, dtype=torch.float64)
                eps = torch.randn(len(part), len(column), *part.shape[1:], generator=g)
                draws = Draws(column, *self.strata.draw_points(u, column), eps)
                cols.append(self.reference_columns(evaluation_points(self.schedule, part.to(device), draws)))
            cols = torch.cat(cols)
            mean = cols.mean(0)
            variance = variance + cols.var(0)
            if len(items) == whole:  # the whole split: only the draws are noise (deviations from each item's mean)
                cols = cols.view(repeats, len(items), -1)
                cols = (cols - cols.mean(0)) * (repeats / (repeats - 1)) ** 0.5 + mean
            self.reference_centre = self.reference_centre + sign * mean
            self.reference_centre_cov = self.reference_centre_cov + torch.cov(cols.reshape(len(x0), -1).T) / len(x0)
        return variance[1:].sqrt()

    def evaluate_model(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        results = self.evaluate(pl_module.denoise)
        curves = {name: cols for name, (_, _, cols) in results.items() if cols is not None}
        log_risk(trainer, pl_module, results, self.strata, self.schedule, curves)

    @torch.no_grad()
    def evaluate(self, denoise) -> dict:
        """All ``risk/*`` metrics of the denoiser ``denoise(x_t, t) -> x̂0``: name -> (value, SE, column means)."""
        per_call = max(1, self.batch_size // self.points)
        for i in range(0, len(self.train_points), per_call):
            rows = slice(i, i + per_call)
            train, held = self.train_points[rows], self.held_points[rows]
            model_train, model_held = predict(denoise, train, self.batch_size), predict(denoise, held, self.batch_size)
            columns = model_risk_columns(self.schedule, train, held, model_train, model_held,
                                         self.empirical_train[rows], self.num_levels)
            self.estimation_stats.update(columns["estimation_paired"], self.reference_delta[rows],
                                         columns["approximation"], columns["vlb_heldout"])
            if self.bayes_held is not None:
                columns |= excess_true_columns(self.schedule, held, model_held, self.bayes_held[rows], self.num_levels)
            self.stats.update(columns)
        results = self.stats.compute() | self.estimation_stats.compute() | self.data_metrics
        results |= self.rises(results)
        self.stats.reset()
        self.estimation_stats.reset()
        if self.entropy is not None:
            (h, h_se), (vlb, vlb_se) = self.entropy, results["vlb_heldout"][:2]
            results["entropy_true"] = (h, h_se, None)
            results["kl_upper"] = (vlb - h, math.hypot(vlb_se, h_se), None)
        return results

    def rises(self, results: dict) -> dict:
        """``<name>_rise`` for ``estimation`` and ``vlb_heldout`` (§7): the paired change since the lowest earlier check
        and its SE. Absent at the first check."""
        out, slope = {}, self.estimation_stats.slope.cpu()
        for name in RISES:
            totals, history = self.estimation_stats.group_totals[name], self.history[name]
            if history:
                lowest = min(history, key=lambda h: h["value"])
                change = totals - lowest["totals"].to(totals.device)
                variance = change.var().item() / len(change)
                if name == "estimation":
                    d = slope - lowest["slope"]
                    variance += float(d @ self.reference_centre_cov.cpu() @ d)
                out[f"{name}_rise"] = (change.mean().item(), variance ** 0.5, None)
            history.append({"value": results[name][0], "totals": totals.cpu(), "slope": slope})
        return out

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.saved_history = state["history"]
