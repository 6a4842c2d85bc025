"""The optimal reverse variance given the mean (Analytic-DPM, Bao, Li, Zhu, Zhang, arXiv 2201.06503; theory.md §5).

For the reverse step t → t' < t with the posterior mean of the respaced chain (β' = 1 − ᾱ_t/ᾱ_{t'}, α' = 1 − β'),
the variance that minimises the bound's term is σ*² = β̃' + β'²/(α'(1 − ᾱ_t))·(1 − Γ_t), with
Γ_t = E‖ε̂(x_t, t)‖²/D over the data and the forward process: their Theorem 1 with λ² = β̃' (the DDPM family),
in which (√(β̄_t/α') − √(β̄_{t'} − β̃'))² reduces to β'²/(α'(1 − ᾱ_t)) (derived here). Γ_t ∈ [0, 1] for the exact ε̂,
so σ*² lies between β̃' (Γ = 1) and β̃' + β'²/(α'(1 − ᾱ_t)); estimates are clamped to [0, 1], as the paper clips.
For x0 ~ N(0, I), Γ_t = 1 − ᾱ_t and σ*² = β', the exact reverse variance.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ddpm_signrelu.diffusion.process import eps_from_x0, q_sample, scales
from ddpm_signrelu.diffusion.schedule import NoiseSchedule


def analytic_variance(schedule: NoiseSchedule, t: torch.Tensor, t_prev: torch.Tensor,
                      gamma: torch.Tensor) -> torch.Tensor:
    """σ*² (float64) of the steps t → t_prev < t (index tensors; t_prev may be −1, for ᾱ = 1) given Γ_t."""
    ab = schedule.alphas_cumprod.cpu()
    ab_t, ab_prev = ab[t], torch.where(t_prev >= 0, ab[t_prev.clamp(min=0)], torch.ones_like(ab[t]))
    one_minus = schedule.one_minus_alphas_cumprod.cpu()
    one_minus_t = one_minus[t]
    one_minus_prev = torch.where(t_prev >= 0, one_minus[t_prev.clamp(min=0)], torch.zeros_like(one_minus_t))
    ratio = ab_t / ab_prev  # α'
    beta = 1 - ratio
    return beta * one_minus_prev / one_minus_t + beta**2 / (ratio * one_minus_t) * (1 - gamma.double().clamp(0, 1))


@torch.no_grad()
def eps_second_moment(denoise: Callable, schedule: NoiseSchedule, x0: torch.Tensor, steps: torch.Tensor,
                      seed: int = 0, batch_size: int = 1024) -> torch.Tensor:
    """Γ_t = E‖ε̂(x_t, t)‖²/D at the step indices ``steps`` (float64), by Monte Carlo over the items ``x0`` with one
    ε per item and step; ε̂ = (x_t − √ᾱ_t·x̂0)/√(1 − ᾱ_t) from ``denoise(x_t, t)`` = x̂0 (unclipped)."""
    g = torch.Generator().manual_seed(seed)
    gamma = torch.empty(len(steps), dtype=torch.float64)
    for k, step in enumerate(steps.tolist()):
        total = 0.0
        for i in range(0, len(x0), batch_size):
            x = x0[i:i + batch_size]
            t = torch.full((len(x),), step, device=x.device, dtype=torch.long)
            x_t = q_sample(schedule, x, t, torch.randn(x.shape, generator=g).to(x.device, x.dtype))
            eps = eps_from_x0(x_t, denoise(x_t, t), *scales(schedule, t, x.dim(), x.dtype))
            total += eps.double().square().sum().item()
        gamma[k] = total / x0.numel()
    return gamma
