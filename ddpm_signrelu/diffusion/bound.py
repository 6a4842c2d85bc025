"""The DDPM variational bound L_vlb = L_T + Σ_{t=2}^T L_{t−1} + L_0 and its stratified estimate (theory.md §5, §6.1).
Terms are in nats per example; ``denoise(x_t, t)`` is the model's x̂0 (clipped or not, as the caller decides)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from ddpm_signrelu.diffusion.process import q_posterior, q_sample
from ddpm_signrelu.diffusion.schedule import NoiseSchedule
from ddpm_signrelu.errors import ConfigError, check_choice
from ddpm_signrelu.seeding import generator


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(μ1, σ1²) ‖ N(μ2, σ2²)) per coordinate, from the means and log-variances."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Φ(z) ≈ ½(1 + tanh(√(2/π)(z + 0.044715 z³))), as in improved-diffusion."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x, mean, log_scale, num_levels: int) -> torch.Tensor:
    """log P(x) per coordinate for data on ``num_levels`` levels in [−1, 1] (Ho eq. 13; theory.md §5)."""
    h = 1.0 / (num_levels - 1)
    inv_std = torch.exp(-log_scale)
    cdf_plus = approx_standard_normal_cdf(inv_std * (x - mean + h))
    cdf_min = approx_standard_normal_cdf(inv_std * (x - mean - h))
    prob = torch.where(x < -1 + h / 2, cdf_plus, torch.where(x > 1 - h / 2, 1.0 - cdf_min, cdf_plus - cdf_min))
    return torch.log(prob.clamp(min=1e-12))


def gaussian_log_likelihood(x, mean, log_scale) -> torch.Tensor:
    """log N(x; μ, σ²) per coordinate: the continuous decoder for real-valued data (§6.4)."""
    return -0.5 * math.log(2 * math.pi) - log_scale - 0.5 * ((x - mean) * torch.exp(-log_scale)) ** 2


def prior_kl(schedule: NoiseSchedule, x0: torch.Tensor) -> torch.Tensor:
    """L_T = KL(q(x_T | x0) ‖ N(0, I)) = ½ Σ_d [ᾱ_T x0_d² − ᾱ_T − log(1 − ᾱ_T)], nats per example."""
    ab = schedule.alphas_cumprod[-1].item()
    return 0.5 * (ab * x0.double() ** 2 - ab - math.log1p(-ab)).flatten(1).sum(1)


def vb_term(schedule: NoiseSchedule, x0, x_t, t, x0_hat, num_levels: int | None) -> torch.Tensor:
    """L_{t−1} = KL(q(x_{t−1}|x_t, x0) ‖ N(μ_θ, σ_t² I)) for t ≥ 2, L_0 = −log p(x0 | x_1) at t = 1; nats, float64.
    The decoder is discretized on ``num_levels`` levels, or a continuous Gaussian when ``num_levels`` is None."""
    x0, x_t, x0_hat = x0.double(), x_t.double(), x0_hat.double()
    true_mean, true_var = q_posterior(schedule, x0, x_t, t)
    model_mean, _ = q_posterior(schedule, x0_hat, x_t, t)
    model_logvar = torch.log(schedule.at("chain_variance", t, x0.dim(), torch.float64))
    kl = normal_kl(true_mean, torch.log(true_var.clamp(min=1e-300)), model_mean, model_logvar).flatten(1).sum(1)
    log_p = (gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar) if num_levels is None
             else discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar, num_levels))
    return torch.where(t == 0, -log_p.flatten(1).sum(1), kl)


def to_bits_per_dim(nats: torch.Tensor, dim: int) -> torch.Tensor:
    """bits/dim = nats/(D·ln 2)."""
    return nats / (dim * math.log(2))


Proposal = Literal["weight", "uniform"]  # π_k within a stratum: ∝ w_t or uniform
PROPOSALS = get_args(Proposal)


class Strata:
    """K contiguous strata of {2..T} of equal width in λ_t = log SNR_t, empty ones merged (theory.md §6.1)."""

    def __init__(self, schedule: NoiseSchedule, num_strata: int, proposal: Proposal = "weight"):
        check_choice("stratum proposal", proposal, PROPOSALS)
        T = schedule.num_timesteps
        if not 1 <= num_strata <= T - 1:
            raise ConfigError(f"num_strata must be in 1..T-1 = 1..{T - 1}, got {num_strata}")
        steps, log_snr = torch.arange(1, T), schedule.log_snr.cpu()
        lam = log_snr[1:]
        edges = torch.linspace(lam.max().item(), lam.min().item(), num_strata + 1, dtype=torch.float64)
        # λ decreases in t, so buckets are contiguous in t; K = T − 1 gives singletons
        bucket = torch.arange(T - 1) if num_strata == T - 1 else torch.bucketize(-lam, -edges[1:-1])
        self.members = [steps[bucket == k] for k in bucket.unique()]
        weights = schedule.x0_weight.cpu() if proposal == "weight" else torch.ones(T, dtype=torch.float64)
        self.probs = [weights[m] / weights[m].sum() for m in self.members]
        self.cdfs = [p.cumsum(0) for p in self.probs]
        self.log_snr_range = [(log_snr[m[-1]].item(), log_snr[m[0]].item()) for m in self.members]

    def __len__(self) -> int:
        return len(self.members)

    def draw(self, u: torch.Tensor, stratum: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps t ~ π_k (indices) and π_k(t) from uniforms u (B, P), column p in stratum ``stratum[p]`` (default p)."""
        stratum = torch.arange(u.shape[1]) if stratum is None else stratum
        t, pi = torch.empty_like(u, dtype=torch.long), torch.empty_like(u, dtype=torch.float64)
        for p, k in enumerate(stratum.tolist()):
            j = torch.searchsorted(self.cdfs[k], u[:, p].double().contiguous()).clamp(max=len(self.members[k]) - 1)
            t[:, p], pi[:, p] = self.members[k][j], self.probs[k][j]
        return t, pi

    def point_columns(self, repeats=None) -> torch.Tensor:
        """Column of each of R points (0: L_0, k + 1: stratum k), ``repeats[c]`` points in column c (default 1 each)."""
        repeats = torch.ones(len(self) + 1, dtype=torch.long) if repeats is None else torch.as_tensor(repeats)
        if len(repeats) != len(self) + 1 or repeats.min() < 1:
            raise ConfigError(f"repeats needs one count >= 1 for L_0 and each of the {len(self)} strata, got "
                              f"{repeats.tolist()}")
        return torch.repeat_interleave(torch.arange(len(repeats)), repeats)

    def draw_points(self, u: torch.Tensor, column: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps and π (B, R) at the points ``column`` from uniforms u (B, R − r_0), stratified within each stratum."""
        stratum = column[column > 0] - 1
        counts = torch.bincount(stratum, minlength=len(self))
        rank = torch.arange(len(stratum)) - (torch.cumsum(counts, 0) - counts)[stratum]
        steps, probs = self.draw((rank + u) / counts[stratum], stratum)
        t = torch.zeros(len(u), len(column), dtype=torch.long)
        pi = torch.ones(len(u), len(column), dtype=torch.float64)
        t[:, column > 0], pi[:, column > 0] = steps, probs
        return t, pi


@dataclass
class Draws:
    """Fixed per-item draws: ``column`` (R,), steps ``t`` and their π ``pi`` (B, R), noise ``eps`` (B, R, *shape)."""

    column: torch.Tensor
    t: torch.Tensor
    pi: torch.Tensor
    eps: torch.Tensor


def draw_for_items(strata: Strata, seed: int, indices, shape, repeats=None) -> Draws:
    """Draws for items ``indices``, item j's from the generator of (seed, j); ``repeats`` as in Strata.point_columns."""
    column = strata.point_columns(repeats)
    gens = [generator(seed, int(index)) for index in indices]
    u = torch.stack([torch.rand(int((column > 0).sum()), generator=g, dtype=torch.float64) for g in gens])
    eps = torch.stack([torch.randn(len(column), *shape, generator=g) for g in gens])
    return Draws(column, *strata.draw_points(u, column), eps)


@dataclass
class EvalPoints:
    """The fixed evaluation points of a set of items, in columns as :class:`Draws`: ``x0`` and ``x_t`` (B, R, *shape),
    ``t`` (B, R), ``weight`` (B, R) float64, 1/(π_k(t)·r_c) with r_c the points in column c, and ``column`` (R,)."""

    x0: torch.Tensor
    t: torch.Tensor
    weight: torch.Tensor
    x_t: torch.Tensor
    column: torch.Tensor

    def __getitem__(self, rows) -> EvalPoints:
        return EvalPoints(self.x0[rows], self.t[rows], self.weight[rows], self.x_t[rows], self.column)

    def __len__(self) -> int:
        return len(self.x0)

    @property
    def dim(self) -> int:
        """D, the size of one data item."""
        return self.x0[0, 0].numel()


def evaluation_points(schedule: NoiseSchedule, x0: torch.Tensor, draws: Draws) -> EvalPoints:
    """The points (x_t, t) of the stratified bound for items ``x0``: (B, *shape), or (B, R, *shape), one per point."""
    column, t, pi = draws.column.to(x0.device), draws.t.to(x0.device), draws.pi.to(x0.device)
    x0 = x0 if x0.dim() == draws.eps.dim() else x0[:, None].expand(-1, len(column), *x0.shape[1:])
    x_t = q_sample(schedule, x0.flatten(0, 1), t.flatten(), draws.eps.to(x0.device).flatten(0, 1))
    return EvalPoints(x0, t, 1 / (pi * torch.bincount(column)[column]), x_t.view_as(x0), column)


def predict(denoise, points: EvalPoints, batch_size: int = 1024) -> torch.Tensor:
    """``denoise`` at every point, (B, R, *shape), in calls of at most ``batch_size`` inputs."""
    x_t, t = points.x_t.flatten(0, 1), points.t.flatten()
    out = torch.cat([denoise(x_t[i:i + batch_size], t[i:i + batch_size]) for i in range(0, len(t), batch_size)])
    return out.view_as(points.x_t)


def vlb_columns(schedule: NoiseSchedule, points: EvalPoints, x0_hat: torch.Tensor, num_levels: int | None):
    """Per-item bound columns in nats, (B, K + 2): L_T, L_0, then the estimate of Σ_{t ∈ B_k} L_{t−1} for each
    stratum k, summing to the stratified estimate of L_vlb (theory.md §6.1); ``x0_hat`` as from :func:`predict`."""
    x0 = points.x0.flatten(0, 1)
    terms = vb_term(schedule, x0, points.x_t.flatten(0, 1), points.t.flatten(), x0_hat.flatten(0, 1), num_levels)
    cols = weighted_columns(terms.view(points.t.shape) * points.weight, points.column, include_decoder=True)
    cols[:, 0] = prior_kl(schedule, x0).view(points.t.shape).mean(1)
    return cols


def weighted_sq_columns(schedule: NoiseSchedule, points: EvalPoints, a: torch.Tensor, b: torch.Tensor,
                        include_decoder: bool) -> torch.Tensor:
    """w_t^σ‖a − b‖²/π in nats as :func:`weighted_columns`: the bound's excess of denoiser ``a`` over ``b`` when ``b``
    is the posterior mean (theory.md §6.2)."""
    sq = (a.double() - b.double()).square().flatten(2).sum(2)
    return weighted_columns(point_weights(schedule, points) * sq, points.column, include_decoder)


def point_weights(schedule: NoiseSchedule, points: EvalPoints) -> torch.Tensor:
    """w_t^σ/(π·r) at each point, (B, R) float64."""
    return schedule.x0_weight.to(points.t.device)[points.t] * points.weight


def weighted_columns(values: torch.Tensor, column: torch.Tensor, include_decoder: bool) -> torch.Tensor:
    """Per-point values (B, R) in :func:`vlb_columns`'s layout: L_T zero, t = 1 zero unless ``include_decoder``."""
    cols = values.new_zeros(len(values), int(column.max()) + 2).index_add_(1, column.to(values.device) + 1, values)
    if not include_decoder:
        cols[:, 1] = 0
    return cols


def vlb_terms(schedule: NoiseSchedule, denoise, x0: torch.Tensor, draws: Draws, num_levels: int | None) -> dict:
    """Stratified estimate of the bound for each item, in nats (theory.md §6.1): ``prior`` L_T, ``decoder`` L_0,
    ``strata`` (B, K) with entry L_{t_k−1}/π_k(t_k), and ``total``, their sum, unbiased for L_vlb."""
    points = evaluation_points(schedule, x0, draws)
    cols = vlb_columns(schedule, points, predict(denoise, points, batch_size=len(x0)), num_levels)
    return {"prior": cols[:, 0], "decoder": cols[:, 1], "strata": cols[:, 2:], "total": cols.sum(1)}
