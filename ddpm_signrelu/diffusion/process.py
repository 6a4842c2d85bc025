"""Forward process, posterior and conversions between ε, x0 and v, given the scales of :func:`scales` (theory.md §5)."""

from typing import Literal, get_args

import torch

from ddpm_signrelu.diffusion.schedule import NoiseSchedule

Parameterization = Literal["x0", "eps", "v"]  # what a network predicts: x0, the noise ε, or v = √ᾱ·ε − √(1 − ᾱ)·x0
PARAMETERIZATIONS = get_args(Parameterization)


def scales(schedule: NoiseSchedule, t: torch.Tensor, ndim: int, dtype: torch.dtype):
    """(a, s) = (√ᾱ_t, √(1 − ᾱ_t)) at step indices t, shaped (B, 1, …, 1), computed in float64, cast to ``dtype``."""
    return tuple(schedule.at(name, t, ndim, dtype) for name in ("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod"))


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε, in the wider dtype of x0 and ε."""
    a, s = scales(schedule, t, x0.dim(), torch.promote_types(x0.dtype, noise.dtype))
    return a * x0 + s * noise


def q_posterior(schedule: NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
    """Mean μ̃_t = coef1_t·x0 + coef2_t·x_t and variance β̃_t of q(x_{t−1} | x_t, x0)."""
    c1 = schedule.at("posterior_mean_coef1", t, x0.dim(), x0.dtype)
    c2 = schedule.at("posterior_mean_coef2", t, x0.dim(), x0.dtype)
    return c1 * x0 + c2 * x_t, schedule.at("posterior_variance", t, x0.dim(), x0.dtype)


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """ε = (x_t − a·x0)/s."""
    return (x_t - a * x0) / s


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """x0 = (x_t − s·ε)/a."""
    return (x_t - s * eps) / a


def v_from(x0: torch.Tensor, eps: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """v = a·ε − s·x0 (Salimans & Ho, arXiv 2202.00512)."""
    return a * eps - s * x0


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """x0 = a·x_t − s·v."""
    return a * x_t - s * v


def eps_from_v(x_t: torch.Tensor, v: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """ε = s·x_t + a·v."""
    return s * x_t + a * v


def predict_x0(schedule: NoiseSchedule, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
               parameterization: Parameterization) -> torch.Tensor:
    """x̂0 from a network output that predicts ``x0``, ``eps`` or ``v``, in the wider dtype of output and x_t."""
    if parameterization == "x0":
        return output
    a, s = scales(schedule, t, x_t.dim(), torch.promote_types(output.dtype, x_t.dtype))
    return (x0_from_eps if parameterization == "eps" else x0_from_v)(x_t, output, a, s)
