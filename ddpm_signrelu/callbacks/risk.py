"""The risk callback: excess-KL risk, split into approximation and estimation, logged during training (§6)."""

from __future__ import annotations

import math

import lightning as L
import torch

from ddpm_signrelu.callbacks.base import ValidationEvaluator, diffusion_data, evaluation_rows
from ddpm_signrelu.callbacks.curves import write_curves
from ddpm_signrelu.diffusion import (Diffusion, Draws, EvalPoints, Proposal, draw_for_items, evaluation_points,
                                     predict, to_bits_per_dim, vlb_columns)
from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.metrics.empirical_bayes import empirical_bayes_denoiser
from ddpm_signrelu.metrics.gaussian_reference import GaussianMixtureDenoiser
from ddpm_signrelu.metrics.risk import (ColumnStats, EstimationStats, data_columns, excess_true_columns,
                                        RISES, model_risk_columns, neyman_allocation)


class RiskMetrics(ValidationEvaluator):
    """Logs ``risk/*`` (theory.md §6.2, §6.4) and the per-log-SNR curves ``risk/curves`` (§6.3) at validation.

    S_train and S_held are m = ``num_items`` fixed seeded groups of items of the training and held-out splits. Group
    j of both sides shares its draws (t, ε) at R = ``points_per_item`` points: r_0 at t = 1 and r_k in log-SNR
    stratum k, a Neyman allocation (r_c ∝ the column's per-point spread, measured on the reference below at fit
    start; r_c ≥ 1), and each point sits on a data item of its own where the splits hold m·R items. So no data item
    is paid for twice, and points go where the bound's noise is (§6.6). D*_n (over the whole training split, and
    its mirror images under ``hflip``) and, for data of known density, D* are computed once at fit start and
    cached; each evaluation then costs 2·m·R network calls, groups sharded over ranks and reduced with torchmetrics.
    With a ``WeightAveraging`` callback (EMA) the averaged weights are evaluated.

    ``risk/estimation`` carries a control variate (§6.6): the same paired difference for a Gaussian (or Gaussian
    mixture) denoiser fitted at fit start, centred on its mean given the splits (computed once over up to
    ``reference_items`` items of each). Subtracting its cross-fitted share keeps the paired difference's mean and
    removes the item-to-item noise the two share. ``risk/estimation_paired`` is the plain difference. From the
    second check on, ``risk/estimation_rise`` and ``risk/vlb_heldout_rise`` give the paired change since the
    lowest check (§7), what :class:`GapRiseStop` reads.

    Args:
        num_items: m, the groups of S_train and S_held.  num_strata: K.  points_per_item: R ≥ K + 1 (default
        4(K + 1)).  spread_items: each point on a data item of its own where the splits allow
        (False: all of a group's points on one item).  proposal: π_k, ``weight`` or ``uniform``.
        every_n_val_checks: evaluate at every n-th validation check (never during the sanity check).
        batch_size: network inputs per call.  chunk_size: training rows per step of D*_n.
        seed: seed of the subsets and draws.  entropy_samples: Monte Carlo size of H(p) (known density).
        max_memory_gb: bound on what one rank holds (:meth:`memory_bytes`); set-up fails above it.
        reference_items: training items the reference is fitted on, and items per split of its centring.
        reference_components: its Gaussians (k-means clusters of those items; 1: one Gaussian).
        reference_rank: each one's principal directions (all up to this dimension).  reference_shrinkage: s, each
        one's covariance Σ + s·tr(Σ)/D·I.
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
                              f"(num_strata + 1 = {num_strata + 1}: L_0 and each stratum); raise it or lower "
                              f"num_strata")
        if reference_items < 2 or reference_rank < 1 or reference_shrinkage < 0 or reference_components < 1:
            raise ConfigError("RiskMetrics needs reference_items >= 2, reference_rank >= 1, reference_components >= 1 "
                              "and reference_shrinkage >= 0")
        self.num_items, self.num_strata, self.points_per_item = num_items, num_strata, points_per_item
        self.spread_items, self.proposal = spread_items, proposal
        self.batch_size, self.chunk_size = batch_size, chunk_size
        self.seed, self.entropy_samples, self.max_memory_gb = seed, entropy_samples, max_memory_gb
        self.reference_items, self.reference_rank = reference_items, reference_rank
        self.reference_shrinkage, self.reference_components = reference_shrinkage, reference_components

    @property
    def points(self) -> int:
        """R, the points of each group."""
        return self.points_per_item or 4 * (self.num_strata + 1)

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
        the cache (⌈m/W⌉ groups x R points x D values x 7 float32 arrays), D*_n's working set (the logits,
        batch x chunk, and a chunk converted to float64) and the reference's fit (its items and two D x r arrays per
        component in float64)."""
        dim = math.prod(item_shape)
        cache = math.ceil(self.num_items / world_size) * self.points * dim * 4 * 7
        reference = (self.reference_items + 2 * self.reference_components * min(dim, self.reference_rank)) * dim * 8
        return num_train * dim * dtype.itemsize + cache + self.chunk_size * (self.batch_size + dim) * 8 + reference

    def check_memory(self, num_train: int, item_shape: tuple[int, ...], dtype: torch.dtype,
                     world_size: int = 1) -> None:
        """A ConfigError, with the numbers and the fix, where :meth:`memory_bytes` exceeds ``max_memory_gb``."""
        need = self.memory_bytes(num_train, item_shape, dtype, world_size)
        if need > self.max_memory_gb * 2**30:
            per_rank, k, dim = math.ceil(self.num_items / world_size), self.points, math.prod(item_shape)
            raise ConfigError(
                f"RiskMetrics would hold {need / 2**30:.2f} GiB per process (training split {(num_train, *item_shape)} "
                f"{str(dtype).removeprefix('torch.')} for D*_n, cache of {per_rank} groups x {k} points x {dim} values "
                f"x 7 arrays, the reference's {self.reference_items} items), above max_memory_gb={self.max_memory_gb}; "
                f"lower num_items, points_per_item, batch_size or reference_items, or raise max_memory_gb")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.prepare(trainer.datamodule, pl_module.diffusion, pl_module.device, trainer.global_rank, trainer.world_size)

    def prepare(self, dm, diffusion: Diffusion, device, rank: int = 0, world_size: int = 1) -> None:
        """Fit and centre the reference; fix S_train, S_held and the draws of this rank's items; cache D*_n (and D*)
        there; reduce the θ-independent metrics. ``dm``: a set-up :class:`~ddpm_signrelu.data.TensorDataModule`;
        D*_n's atoms are its training split and, under ``hflip``, their mirror images. ``diffusion``: the model's."""
        schedule = self.schedule = diffusion.schedule
        self.num_levels, self.strata = diffusion.num_levels, diffusion.strata(self.num_strata, self.proposal)
        self.mixture = dm.mixture
        column_sd = self.fit_reference(dm, device)
        self.repeats = neyman_allocation(column_sd, self.points)
        self.train_points, self.held_points = self.item_points(dm, device, rank, world_size)

        def empirical(x_t, t):
            ab = self.schedule.alphas_cumprod.to(device)[t]
            return empirical_bayes_denoiser(x_t, ab, dm.train_data, self.chunk_size, num_levels=dm.num_levels,
                                            hflip=dm.hflip).float()

        self.empirical_train = predict(empirical, self.train_points, self.batch_size)
        self.empirical_held = predict(empirical, self.held_points, self.batch_size)
        self.reference_delta = (self.reference_columns(self.held_points) - self.reference_columns(self.train_points)
                                - self.reference_centre)
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
            dim = self.train_points.dim
            self.entropy = (to_bits_per_dim(h, dim), to_bits_per_dim(se, dim))
        names = ["vlb_train", "vlb_heldout", "approximation"]
        self.stats = ColumnStats(names + (["excess_true"] if self.mixture is not None else []),
                                 len(self.strata) + 2).to(device)
        self.estimation_stats = EstimationStats(self.reference_centre_cov).to(device)
        self.history = self.__dict__.pop("saved_history", None) or {name: [] for name in RISES}  # kept on resume

    def item_points(self, dm, device, rank: int, world_size: int) -> tuple[EvalPoints, EvalPoints]:
        """This rank's points of S_train and S_held: item j's R = Σ_c r_c points (``self.repeats``) each on a
        data item of its own where the splits hold m·R items (else on the item's b = ⌊split/m⌋ items in turn),
        the same draws on both sides."""
        m, repeats, points = self.num_items, self.repeats, self.points
        b = min(points, len(dm.train_data) // m, len(dm.val_data) // m) if self.spread_items else 1
        train_rows, held_rows = evaluation_rows(dm, m * b, self.seed)
        items = list(range(rank, m, world_size))
        shape = tuple(dm.train_data.shape[1:])
        draws = draw_for_items(self.strata, self.seed, items, shape, repeats)
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
        """Fit the Gaussian denoiser on up to ``reference_items`` items of the training split and centre its paired
        difference (§6.6): c, its mean given the splits (its bound over the held-out split less over the training
        split, up to P = ``reference_items``·min(16, max(1, ⌊256/D⌋)) items each with draws of seed + 1, repeated
        up to P points), and c's covariance for the SE. Returns the standard deviation over items of its paired
        difference in each network column (L_0, strata), from those draws: the allocation's guide."""
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

    # ----------------------------------------------------------------------------------------------- evaluation
    def evaluate_model(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, self.evaluate(pl_module.denoise))

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
                columns |= excess_true_columns(self.schedule, held, model_held, self.bayes_held[rows],
                                               self.num_levels)
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
        """``<name>_rise`` for ``estimation`` and ``vlb_heldout`` (§7): the value less the lowest of the earlier
        checks', as the mean over groups of their paired change (same items and draws at both checks), with the SE of
        that change, far below the level's, which carries the items' noise; for the estimation the centring's noise
        through the change of mean slope is added. Absent at the first check."""
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

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, results: dict) -> None:
        for name, (value, se, _) in results.items():
            pl_module.log(f"risk/{name}", value, batch_size=1)
            if se is not None:
                pl_module.log(f"risk/{name}_se", se, batch_size=1)
        out_dir = trainer.log_dir or trainer.default_root_dir  # a collective under DDP: every rank asks
        if trainer.is_global_zero:
            curves = {name: cols for name, (_, _, cols) in results.items() if cols is not None}
            write_curves(trainer, out_dir, self.strata, self.schedule, curves)
