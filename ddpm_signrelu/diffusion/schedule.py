"""Noise schedules (theory.md §1, §5). Every tensor argument named ``t`` in this package holds code indices
i = t − 1 ∈ {0..T−1} of math steps t ∈ {1..T}: ``betas[i] = β_{i+1}``, ``alphas_cumprod_prev[i] = ᾱ_i``, ᾱ_0 := 1."""

import copy
import math
from typing import Literal, get_args

import torch
from torch import nn

from ddpm_signrelu.errors import ConfigError, check_choice


def linear_betas(num_timesteps: int) -> torch.Tensor:
    """β_t = linspace(1e-4·r, 0.02·r, T), r = 1000/T (Ho et al.; improved-diffusion)."""
    scale = 1000 / num_timesteps
    return torch.linspace(1e-4 * scale, 0.02 * scale, num_timesteps, dtype=torch.float64)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """β_t = min(1 − f(t/T)/f((t−1)/T), 0.999), f(τ) = cos²(((τ + s)/(1 + s))·π/2) (Nichol & Dhariwal)."""
    f = lambda tau: math.cos((tau + s) / (1 + s) * math.pi / 2) ** 2
    T = num_timesteps
    return torch.tensor([min(1 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)], dtype=torch.float64)


BetaSchedule = Literal["linear", "cosine"]
BETA_SCHEDULES = dict(zip(get_args(BetaSchedule), (linear_betas, cosine_betas)))
Variance = Literal["small", "large"]  # the reverse chain's σ_t²: β̃_t or β_t
VARIANCES = get_args(Variance)


class NoiseSchedule(nn.Module):
    """β_t, ᾱ_t, SNR_t, λ_t = log SNR_t, the posterior coefficients and the bound weight w_t (``x0_weight``): float64
    buffers (theory.md §5). ``variance``: σ_t², ``small`` = β̃_t or ``large`` = β_t (t ≥ 2); σ_1² = β̃_2 for both."""

    def __init__(self, betas: torch.Tensor, variance: Variance = "small"):
        super().__init__()
        check_choice("variance", variance, VARIANCES)
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1 or len(betas) < 2:
            raise ConfigError(f"a diffusion needs T >= 2 steps, got T = {betas.numel()}")
        if not ((betas > 0) & (betas < 1)).all():
            raise ConfigError("every beta must lie in (0, 1)")
        self.num_timesteps, self.variance = len(betas), variance
        alphas = 1 - betas
        ab = torch.cumprod(alphas, 0)
        ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        one_minus_ab = -torch.expm1(torch.cumsum(torch.log1p(-betas), 0))
        one_minus_ab_prev = torch.cat([torch.zeros(1, dtype=torch.float64), one_minus_ab[:-1]])
        posterior_variance = betas * one_minus_ab_prev / one_minus_ab
        chain = posterior_variance if variance == "small" else betas
        chain_variance = torch.cat([posterior_variance[1:2], chain[1:]])
        coef1 = betas * ab_prev.sqrt() / one_minus_ab
        snr = ab / one_minus_ab
        arrays = {
            "betas": betas, "alphas": alphas, "alphas_cumprod": ab, "alphas_cumprod_prev": ab_prev,
            "one_minus_alphas_cumprod": one_minus_ab, "sqrt_alphas_cumprod": ab.sqrt(),
            "sqrt_one_minus_alphas_cumprod": one_minus_ab.sqrt(), "posterior_variance": posterior_variance,
            "posterior_mean_coef1": coef1, "posterior_mean_coef2": one_minus_ab_prev * alphas.sqrt() / one_minus_ab,
            "chain_variance": chain_variance, "snr": snr, "log_snr": torch.log(snr),
            "x0_weight": coef1**2 / (2 * chain_variance)}
        for name, array in arrays.items():
            self.register_buffer(name, array, persistent=False)

    def _apply(self, fn, recurse=True):
        """Follow the module's moves between devices, but keep the float64 master arrays float64."""
        return super()._apply(lambda x: x.to(fn(x.new_empty(0)).device), recurse)

    @classmethod
    def from_name(cls, name: BetaSchedule, num_timesteps: int, variance: Variance = "small") -> "NoiseSchedule":
        """``linear`` or ``cosine`` with T = ``num_timesteps``."""
        check_choice("beta schedule", name, BETA_SCHEDULES)
        if num_timesteps < 2:
            raise ConfigError(f"a diffusion needs T >= 2 steps, got num_timesteps = {num_timesteps}")
        betas = BETA_SCHEDULES[name](num_timesteps)
        if betas.max() >= 1:
            raise ConfigError(f"the {name} schedule with T = {num_timesteps} has beta_T = {betas.max():.3g} >= 1; "
                              f"use T >= 21 or the cosine schedule")
        return cls(betas, variance)

    def with_chain_variance(self, variance: torch.Tensor) -> "NoiseSchedule":
        """A copy whose chain uses σ_t² = ``variance`` (T,) for t ≥ 2, e.g. Analytic-DPM's, with w_t formed anew."""
        schedule = copy.deepcopy(self)
        chain = torch.cat([self.chain_variance[:1].cpu(), variance.double().cpu()[1:]]).to(self.betas.device)
        schedule.chain_variance = chain
        schedule.x0_weight = self.posterior_mean_coef1**2 / (2 * chain)
        return schedule

    def at(self, name: str, t: torch.Tensor, ndim: int, dtype=torch.float32) -> torch.Tensor:
        """``self.<name>[t]`` cast to ``dtype`` on t's device, shaped (B, 1, …, 1) with ``ndim`` dims in all."""
        array = getattr(self, name)
        return array[t.to(array.device)].to(device=t.device, dtype=dtype).view(-1, *([1] * (ndim - 1)))
