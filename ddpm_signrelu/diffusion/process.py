"""Forward process, posterior and conversions between ε, x0 and v (theory.md §1, §5).

Conversions take ᾱ_t as a tensor broadcastable to x (see ``NoiseSchedule.at``).
"""

from __future__ import annotations

import torch

from ddpm_signrelu.diffusion.schedule import NoiseSchedule


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε."""
    ab = schedule.at("alphas_cumprod", t, x0.dim(), x0.dtype)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def q_posterior(schedule: NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
    """Mean μ̃_t = coef1_t·x0 + coef2_t·x_t and variance β̃_t of q(x_{t−1} | x_t, x0)."""
    c1 = schedule.at("posterior_mean_coef1", t, x0.dim(), x0.dtype)
    c2 = schedule.at("posterior_mean_coef2", t, x0.dim(), x0.dtype)
    return c1 * x0 + c2 * x_t, schedule.at("posterior_variance", t, x0.dim(), x0.dtype)


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """ε = (x_t − √ᾱ·x0)/√(1 − ᾱ)."""
    return (x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x0 = (x_t − √(1 − ᾱ)·ε)/√ᾱ."""
    return (x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()


def v_from(x0: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """v = √ᾱ·ε − √(1 − ᾱ)·x0 (Salimans & Ho, arXiv 2202.00512)."""
    return alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x0 = √ᾱ·x_t − √(1 − ᾱ)·v."""
    return alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * v


def eps_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """ε = √(1 − ᾱ)·x_t + √ᾱ·v."""
    return (1 - alpha_bar).sqrt() * x_t + alpha_bar.sqrt() * v


def predict_x0(schedule: NoiseSchedule, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
               parameterization: str) -> torch.Tensor:
    """x̂0 from a network output that predicts ``x0``, ``eps`` or ``v``."""
    if parameterization == "x0":
        return output
    ab = schedule.at("alphas_cumprod", t, x_t.dim(), dtype=output.dtype)
    if parameterization == "eps":
        return x0_from_eps(x_t, output, ab)
    return x0_from_v(x_t, output, ab)
