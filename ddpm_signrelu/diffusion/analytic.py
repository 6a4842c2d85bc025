"""The optimal reverse variance given the mean (Analytic-DPM, Bao, Li, Zhu, Zhang, arXiv 2201.06503; theory.md §5)."""

from collections.abc import Callable

import torch

from ddpm_signrelu.diffusion.process import eps_from_x0, q_sample, scales
from ddpm_signrelu.diffusion.schedule import NoiseSchedule


def analytic_variance(schedule: NoiseSchedule, t: torch.Tensor, t_prev: torch.Tensor,
                      gamma: torch.Tensor) -> torch.Tensor:
    """σ*² = β̃' + β'²(1 − Γ_t)/(α'(1 − ᾱ_t)), float64, of the steps t → t_prev (−1 for ᾱ = 1), Γ_t = ``gamma``."""
    ab, one_minus = schedule.alphas_cumprod.cpu(), schedule.one_minus_alphas_cumprod.cpu()
    has_prev, prev = t_prev >= 0, t_prev.clamp(min=0)
    ratio = ab[t] / torch.where(has_prev, ab[prev], torch.ones_like(ab[t]))  # α'
    beta = 1 - ratio
    one_minus_prev = torch.where(has_prev, one_minus[prev], torch.zeros_like(ab[t]))
    return beta * one_minus_prev / one_minus[t] + beta**2 / (ratio * one_minus[t]) * (1 - gamma.double().clamp(0, 1))


@torch.no_grad()
def eps_second_moment(denoise: Callable, schedule: NoiseSchedule, x0: torch.Tensor, steps: torch.Tensor,
                      seed: int = 0, batch_size: int = 1024) -> torch.Tensor:
    """Γ_t (float64) at the indices ``steps``, one ε per item of ``x0`` and step; ``denoise(x_t, t)``: unclipped x̂0."""
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
