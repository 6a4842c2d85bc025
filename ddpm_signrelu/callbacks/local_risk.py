"""The approximation against a reference a convolutional network can reach: the ELS patch machine (theory.md §6.7)."""

import math

import lightning as L
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from ddpm_signrelu.callbacks.base import ValidationEvaluator, diffusion_data, evaluation_rows
from ddpm_signrelu.callbacks.curves import log_risk
from ddpm_signrelu.diffusion import (Diffusion, Proposal, draw_for_items, evaluation_points, point_weights, predict,
                                     to_bits_per_dim, weighted_columns)
from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.metrics.empirical_bayes import empirical_bayes_denoiser
from ddpm_signrelu.metrics.local_reference import local_patch_denoiser
from ddpm_signrelu.metrics.risk import item_summary

DEFAULT_SIZES = (3, 5, 7, 11, 15, 21, 29, 41, 57)


def patch_sizes_for(item_shape: tuple[int, ...], sizes=None) -> list[int]:
    """The candidate patch sizes P for images of ``item_shape`` (C, H, W): ``sizes`` (odd, below 2·max(H, W) − 1;
    default those of :data:`DEFAULT_SIZES` below it), then 2·max(H, W) − 1, the memoriser D*_n; else a ConfigError."""
    if len(item_shape) != 3:
        raise ConfigError(f"LocalApproximation needs image data (C, H, W), got items of shape {item_shape}")
    full = 2 * max(item_shape[1:]) - 1
    if sizes is None:
        return [p for p in DEFAULT_SIZES if p < full] + [full]
    if not sizes or any(p < 1 or p % 2 == 0 or p >= full for p in sizes):
        raise ConfigError(f"LocalApproximation patch_sizes must be odd, >= 1 and below 2·max(H, W) − 1 = {full} (the "
                          f"memoriser D*_n, always a candidate), got {list(sizes)}")
    return sorted(set(sizes)) + [full]


def candidate_machines(dm, alphas_cumprod: torch.Tensor, bank: torch.Tensor, sizes: list[int]) -> dict:
    """P -> the ELS machine's denoiser(x_t, t) -> x̂0 over the patches of ``bank``; the last size (that of
    :func:`patch_sizes_for`) is D*_n over the whole training split of ``dm`` (mirrors included under ``hflip``)."""
    def machine(size):
        if size == sizes[-1]:
            return lambda x_t, t: empirical_bayes_denoiser(x_t, alphas_cumprod[t], dm.train_data,
                                                           num_levels=dm.num_levels, hflip=dm.hflip).float()
        return lambda x_t, t: local_patch_denoiser(x_t, alphas_cumprod[t], bank, size).float()

    return {size: machine(size) for size in sizes}


class LocalErrors(Metric):
    """Per-point squared distances of the network to each candidate reference, gathered across ranks."""

    full_state_update = False
    STATES = ("group", "sq", "spread", "weight")

    def __init__(self):
        super().__init__()
        for name in self.STATES:
            self.add_state(name, [], dist_reduce_fx="cat")

    def update(self, group: torch.Tensor, sq: torch.Tensor, spread: torch.Tensor, weight: torch.Tensor) -> None:
        for name, value in zip(self.STATES, (group, sq, spread, weight)):
            getattr(self, name).append(value.double())

    def compute(self) -> tuple[torch.Tensor, ...]:
        group, sq, spread, weight = (dim_zero_cat(getattr(self, name)) for name in self.STATES)
        order = group.argsort()
        return group[order], sq[order], spread[order], weight[order]


class LocalApproximation(ValidationEvaluator):
    """Logs ``risk/approximation_local`` (+ ``_se``) and ``risk/local_r2`` at validation, and the per-log-SNR curves
    ``risk/local_curves`` (``risk_local_curves.csv``/``.png`` in the run folder): approximation, patch size, r².

    ``risk/approximation_local`` = Σ_t w_t ‖x̂0_θ − ELS_{P(t)}‖² over training items, bits/dim (theory.md §6.7): the
    distance to the equivariant local score machine (:func:`local_patch_denoiser`), P cross-fitted per column among
    ``patch_sizes`` and D*_n. ``risk/local_r2``: the median over points of 1 − ‖x̂0_θ − ELS‖²/‖x̂0_θ − mean(x̂0_θ)‖².
    Image data only; the machines run once at fit start, then each check costs m·(K + 1) network calls.

    Args:
        num_items: m >= 2 groups of training items, one point per column each, every point on an item of its own.
        num_strata: K, the log-SNR strata.  proposal: π_k, ``weight`` or ``uniform``.
        patch_sizes: odd candidate sizes P (default: :data:`DEFAULT_SIZES` below the memoriser's 2·max(H, W) − 1).
        bank_items: training images whose patches the machines search (and their mirror images under ``hflip``).
        batch_size: points per patch search and per network call.  seed: the items, draws and bank.
    """

    def __init__(self, num_items: int = 8, num_strata: int = 8, patch_sizes: list[int] | None = None,
                 bank_items: int = 1024, proposal: Proposal = "weight", every_n_val_checks: int = 1,
                 batch_size: int = 32, seed: int = 0):
        super().__init__(every_n_val_checks)
        if num_items < 2 or num_strata < 1 or bank_items < 1 or batch_size < 1:
            raise ConfigError("LocalApproximation needs num_items >= 2 (two halves to calibrate on) and num_strata, "
                              "bank_items, batch_size >= 1")
        self.num_items, self.num_strata, self.patch_sizes = num_items, num_strata, patch_sizes
        self.bank_items, self.proposal, self.batch_size, self.seed = bank_items, proposal, batch_size, seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        dm = diffusion_data(trainer, "LocalApproximation")
        patch_sizes_for(tuple(dm.train_data.shape[1:]), self.patch_sizes)  # a bad size or non-image data fails here
        if self.num_items < trainer.world_size:
            raise ConfigError(f"LocalApproximation num_items={self.num_items} is below the number of processes "
                              f"({trainer.world_size})")
        super().setup(trainer, pl_module, stage)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.prepare(trainer.datamodule, pl_module.diffusion, pl_module.device, trainer.global_rank, trainer.world_size)

    @torch.no_grad()
    def prepare(self, dm, diffusion: Diffusion, device, rank: int = 0, world_size: int = 1) -> None:
        """Fix this rank's points (groups j ≡ rank mod W) and cache every candidate machine's x̂0 there."""
        self.sizes = patch_sizes_for(tuple(dm.train_data.shape[1:]), self.patch_sizes)
        self.schedule, self.num_levels = diffusion.schedule, diffusion.num_levels
        self.strata = diffusion.strata(self.num_strata, self.proposal)
        m, points, shape = self.num_items, len(self.strata) + 1, tuple(dm.train_data.shape[1:])
        per_group = min(points, len(dm.train_data) // m)
        rows = evaluation_rows(dm, m * per_group, self.seed)[0].view(m, per_group)[:, torch.arange(points) % per_group]
        self.groups = torch.arange(rank, m, world_size)
        x0 = dm.to_unit(dm.train_data[rows[self.groups].flatten()]).view(len(self.groups), points, *shape)
        self.points = evaluation_points(self.schedule, x0.to(device),
                                        draw_for_items(self.strata, self.seed, self.groups.tolist(), shape))
        g = torch.Generator().manual_seed(self.seed)
        bank = dm.to_unit(dm.train_data[torch.randperm(len(dm.train_data), generator=g)[:self.bank_items]])
        bank = torch.cat([bank, bank.flip(-1)]) if dm.hflip else bank
        machines = candidate_machines(dm, self.schedule.alphas_cumprod.to(device), bank, self.sizes)
        self.machines = torch.stack([predict(machines[p], self.points, self.batch_size) for p in self.sizes], 2)
        self.errors = LocalErrors().to(device)

    def evaluate_model(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        results, curves = self.evaluate(pl_module.denoise)
        log_risk(trainer, pl_module, results, self.strata, self.schedule, curves, name="local_curves")

    @torch.no_grad()
    def evaluate(self, denoise) -> tuple[dict, dict]:
        """(name -> (value, SE)) and the per-column curves, for the denoiser ``denoise(x_t, t) -> x̂0``."""
        model = predict(denoise, self.points, self.batch_size).double()
        sq = (model.unsqueeze(2) - self.machines.double()).square().flatten(3).sum(3)  # (n, R, |P|)
        centred = model.flatten(2) - model.flatten(2).mean(2, keepdim=True)
        w = point_weights(self.schedule, self.points)
        self.errors.update(self.groups.to(sq.device), sq, centred.square().sum(2), w)
        _, sq, spread, w = self.errors.compute()
        self.errors.reset()
        return self.summary(sq, spread, w)

    def summary(self, sq: torch.Tensor, spread: torch.Tensor, w: torch.Tensor) -> tuple[dict, dict]:
        """Cross-fitted calibration and the metrics from every group's (m, R, |P|) squared distances ``sq``, the
        network outputs' spread (m, R) and the points' weights w_t/π (m, R)."""
        weighted = w.unsqueeze(2) * sq
        half = torch.arange(len(sq), device=sq.device) % 2
        chosen = torch.empty_like(w, dtype=torch.long)
        for h in (0, 1):  # each half's sizes are chosen on the other half
            chosen[half == h] = weighted[half != h].sum(0).argmin(1)
        local = sq.gather(2, chosen.unsqueeze(2)).squeeze(2)
        continuous, dim, column = self.num_levels is None, self.points.dim, self.points.column
        local_cols, memoriser_cols = (to_bits_per_dim(weighted_columns(w * values, column, continuous), dim)
                                      for values in (local, sq[..., -1]))
        value, se, local_curve = item_summary(local_cols)
        r2 = 1 - local / spread.clamp(min=torch.finfo(spread.dtype).tiny)
        sizes = torch.tensor(self.sizes, dtype=torch.float64)[weighted.sum(0).argmin(1).cpu()]
        nan = torch.tensor([math.nan], dtype=torch.float64)
        curves = {"approximation_local": local_curve, "approximation": memoriser_cols.mean(0).cpu(),
                  "patch_size": torch.cat([nan, sizes]), "local_r2": torch.cat([nan, r2.median(0).values.cpu()])}
        return {"approximation_local": (value, se), "local_r2": (r2.median().item(), None)}, curves
