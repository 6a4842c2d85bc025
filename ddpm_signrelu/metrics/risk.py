"""Excess-KL risk metrics (theory.md §6.2–6.4) as per-item columns, and their reduction across ranks. Each metric is
a (B, K + 2) tensor in bits/dim laid out as ``vlb_columns``: L_T, the t = 1 term, then stratum k (divided by π_k)."""

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from ddpm_signrelu.diffusion.bound import EvalPoints, to_bits_per_dim, vlb_columns, weighted_sq_columns
from ddpm_signrelu.diffusion.schedule import NoiseSchedule

RISES = ("estimation", "vlb_heldout")  # the metrics whose paired rise since their lowest check is logged (§7)


def cross_fitted_control_variate(delta: torch.Tensor, delta_ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-item columns z_jc = Δ_jc − β̂_c^(−j)·Δ^ref_jc (theory.md §6.6), (m, C), and the slopes β̂^(−j), (m, C):
    ``delta`` (m, C) holds the paired differences Δ_j = L̂(held_j) − L̂(train_j), ``delta_ref`` the reference's;
    β̂_c^(−j) is column c's least-squares slope of Δ on Δ^ref over the other items (0 where Δ^ref has no spread)."""
    m = len(delta)
    rest_x, rest_y = delta.sum(0) - delta, delta_ref.sum(0) - delta_ref
    cov = (delta * delta_ref).sum(0) - delta * delta_ref - rest_x * rest_y / (m - 1)
    var = delta_ref.square().sum(0) - delta_ref.square() - rest_y.square() / (m - 1)
    beta = torch.where(var > 0, cov / var.clamp(min=torch.finfo(var.dtype).tiny), torch.zeros_like(var))
    return delta - beta * delta_ref, beta


def neyman_allocation(sd: torch.Tensor, total: int) -> torch.Tensor:
    """Points per column, r_c ≥ 1 summing to ``total`` ≥ len(sd), that minimise Σ_c sd_c²/r_c (integer Neyman
    allocation, theory.md §6.6); ``sd``: the per-point standard deviation of each column."""
    repeats = torch.ones(len(sd), dtype=torch.long)
    variance = sd.double().square()
    for _ in range(total - len(sd)):
        repeats[torch.argmax(variance / (repeats * (repeats + 1)))] += 1
    return repeats


def mean_and_se(values: torch.Tensor) -> tuple[float, float]:
    """The mean of per-item values and its standard error, sd/√m."""
    values = values.double()
    return values.mean().item(), values.std().item() / len(values) ** 0.5


def item_summary(columns: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """(mean of the item totals, its standard error, column means) of per-item columns (m, C)."""
    return *mean_and_se(columns.sum(1)), columns.mean(0).cpu()


def model_risk_columns(schedule: NoiseSchedule, train: EvalPoints, held: EvalPoints, model_train: torch.Tensor,
                       model_held: torch.Tensor, empirical_train: torch.Tensor, num_levels: int | None) -> dict:
    """θ-dependent metrics on item pairs (item j of S_train and of S_held share their draws) from x̂0_θ (``model_*``)
    and D*_n (``empirical_train``) at the points: ``vlb_train`` = VLB(x̂0_θ; S_train), ``vlb_heldout`` = VLB(x̂0_θ;
    S_held), ``approximation`` = Σ_t w_t ‖x̂0_θ − D*_n‖² on S_train, ``estimation_paired`` = vlb_heldout − vlb_train."""
    dim = train.dim
    vlb_train = to_bits_per_dim(vlb_columns(schedule, train, model_train, num_levels), dim)
    vlb_held = to_bits_per_dim(vlb_columns(schedule, held, model_held, num_levels), dim)
    approximation = weighted_sq_columns(schedule, train, model_train, empirical_train, num_levels is None)
    return {"vlb_train": vlb_train, "vlb_heldout": vlb_held, "approximation": to_bits_per_dim(approximation, dim),
            "estimation_paired": vlb_held - vlb_train}


def excess_true_columns(schedule: NoiseSchedule, held: EvalPoints, model_held: torch.Tensor,
                        bayes_held: torch.Tensor, num_levels: int | None) -> dict:
    """``excess_true`` = Σ_t w_t ‖x̂0_θ − D*‖² on S_pop = S_held: the exact excess KL over the Bayes chain (§6.4)."""
    excess = weighted_sq_columns(schedule, held, model_held, bayes_held, num_levels is None)
    return {"excess_true": to_bits_per_dim(excess, held.dim)}


def data_columns(schedule: NoiseSchedule, train: EvalPoints, held: EvalPoints, empirical_train: torch.Tensor,
               empirical_held: torch.Tensor, bayes_held: torch.Tensor | None, num_levels: int | None) -> dict:
    """θ-independent metrics: ``vlb_bayes_train`` = VLB(D*_n; S_train) and, with the true D* (``bayes_held``),
    ``vlb_bayes_true`` = VLB(D*; S_pop), ``optimism`` = vlb_bayes_train − vlb_bayes_true and
    ``kernel_ratio_error`` = Σ_t w_t ‖D*_n − D*‖² on S_pop."""
    dim = train.dim
    out = {"vlb_bayes_train": to_bits_per_dim(vlb_columns(schedule, train, empirical_train, num_levels), dim)}
    if bayes_held is not None:
        out["vlb_bayes_true"] = to_bits_per_dim(vlb_columns(schedule, held, bayes_held, num_levels), dim)
        out["optimism"] = out["vlb_bayes_train"] - out["vlb_bayes_true"]
        out["kernel_ratio_error"] = to_bits_per_dim(
            weighted_sq_columns(schedule, held, empirical_held, bayes_held, num_levels is None), dim)
    return out


class ColumnStats(Metric):
    """Sums of per-item columns and of squared item totals, summed across ranks; ``compute`` gives, per metric
    name, (mean of the item totals, its standard error, column means)."""

    full_state_update = False

    def __init__(self, names, num_columns: int):
        super().__init__()
        self.names = list(names)
        self.add_state("sums", torch.zeros(len(self.names), num_columns, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("sq_sums", torch.zeros(len(self.names), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, columns: dict) -> None:
        stacked = torch.stack([columns[name].double() for name in self.names], 1)  # (B, Q, C)
        self.sums += stacked.sum(0)
        self.sq_sums += stacked.sum(2).square().sum(0)
        self.count += stacked.shape[0]

    def compute(self) -> dict:
        n = self.count
        col_means = self.sums / n
        mean = col_means.sum(1)
        var = (self.sq_sums / n - mean.square()).clamp(min=0) * n / (n - 1).clamp(min=1)
        se = (var / n).sqrt()
        return {name: (mean[i].item(), se[i].item(), col_means[i].cpu()) for i, name in enumerate(self.names)}


class EstimationStats(Metric):
    """The estimation component with its control variate (theory.md §6.6) from every item's columns of Δ, Δ^ref,
    approximation and the held-out bound, gathered across ranks. ``centre_cov``: the covariance of the centring c in
    Δ^ref = Δ^ref_raw − c, (C, C) or 0. ``compute`` returns, as (value, SE, column means), ``estimation``
    (Δ − β̂Δ^ref), ``estimation_paired`` (Δ), ``estimation_reference`` (Δ^ref) and ``excess`` (approximation +
    estimation); and ``estimation_variance_ratio`` as (value, None, None). After it, ``group_totals`` holds each
    item's total of ``estimation`` and ``vlb_heldout``, ``slope`` the mean β̄."""

    full_state_update = False
    STATES = ("delta", "delta_ref", "approximation", "heldout")

    def __init__(self, centre_cov: torch.Tensor | float = 0.0):
        super().__init__()
        self.centre_cov = centre_cov
        for name in self.STATES:
            self.add_state(name, [], dist_reduce_fx="cat")

    def update(self, delta: torch.Tensor, delta_ref: torch.Tensor, approximation: torch.Tensor,
               heldout: torch.Tensor) -> None:
        for name, columns in zip(self.STATES, (delta, delta_ref, approximation, heldout)):
            getattr(self, name).append(columns.double())

    def compute(self) -> dict:
        delta, delta_ref, approximation, heldout = (dim_zero_cat(getattr(self, name)) for name in self.STATES)
        estimation, beta = cross_fitted_control_variate(delta, delta_ref)
        self.group_totals = {"estimation": estimation.sum(1), "vlb_heldout": heldout.sum(1)}
        self.slope = beta.mean(0)
        ratio = (delta.sum(1).var() / estimation.sum(1).var().clamp(min=torch.finfo(torch.float64).tiny)).item()
        cov, slope = torch.as_tensor(self.centre_cov, dtype=beta.dtype, device=beta.device), self.slope
        centre_var = float(slope @ cov @ slope) if cov.dim() == 2 else 0.0
        (value, se, columns), (excess, excess_se, excess_columns) = (
            item_summary(estimation), item_summary(approximation + estimation))
        se, excess_se = ((s**2 + centre_var) ** 0.5 for s in (se, excess_se))
        return {"estimation": (value, se, columns), "estimation_paired": item_summary(delta),
                "estimation_reference": item_summary(delta_ref), "excess": (excess, excess_se, excess_columns),
                "estimation_variance_ratio": (ratio, None, None)}
