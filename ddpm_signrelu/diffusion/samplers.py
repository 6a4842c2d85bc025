"""Samplers: ancestral DDPM (σ² = β̃ or β) and DDIM, on the full chain or a strided grid (theory.md §5).

A step goes from grid point t to the previous one t' (ᾱ_{t'} = 1 past the first step). With
β' = 1 − ᾱ_t/ᾱ_{t'} (respacing), the ancestral step is the posterior of the respaced chain, and DDIM is
x_{t'} = √ᾱ_{t'}·x̂0 + √(1 − ᾱ_{t'} − s²)·ε̂ + s·z, s = η·√((1 − ᾱ_{t'})/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_{t'}).
DDIM with η = 1 therefore equals the ancestral step with σ² = β̃'. Noise comes from one generator per
sample, so a sample's image depends on its seed alone, not on the batch it was drawn in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, get_args

import torch

from ddpm_signrelu.diffusion.schedule import NoiseSchedule
from ddpm_signrelu.errors import ConfigError, check_choice

Sampler = Literal["ddpm", "ddim"]
SAMPLERS = get_args(Sampler)


def default_steps(sampler: Sampler, num_timesteps: int) -> int:
    """Sampling steps when none are given: T for ``ddpm``, min(50, T) for ``ddim``."""
    return num_timesteps if sampler == "ddpm" else min(50, num_timesteps)


def timestep_grid(num_timesteps: int, steps: int) -> torch.Tensor:
    """``steps`` evenly spaced step indices in 0..T−1, descending, always ending at 0 (t = 1)."""
    if not 1 <= steps <= num_timesteps:
        raise ConfigError(f"sampling steps must be in 1..T = 1..{num_timesteps}, got {steps}")
    grid = torch.linspace(0, num_timesteps - 1, steps, dtype=torch.float64).round().long()
    return grid.unique().flip(0)


class PerSampleNoise:
    """Standard normal draws with one CPU generator per sample, seeded by the sample's seed."""

    def __init__(self, seeds: Sequence[int], shape: Sequence[int], device, dtype: torch.dtype = torch.float32):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.shape, self.device, self.dtype = tuple(shape), device, dtype

    def __call__(self) -> torch.Tensor:
        return torch.stack([torch.randn(self.shape, generator=g, dtype=self.dtype) for g in self.generators]).to(
            self.device)


def step_coefficients(schedule: NoiseSchedule, t: torch.Tensor, t_prev: torch.Tensor, sampler: Sampler = "ddpm",
                      eta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_x0, c_xt, σ), float64: one step x_{t'} = c_x0·x̂0 + c_xt·x_t + σ·z from indices t to t_prev < t.

    β' = 1 − ᾱ_t/ᾱ_{t'}. ``ddpm``: the posterior of the respaced chain, c_x0 = √ᾱ_{t'}·β'/(1 − ᾱ_t),
    c_xt = √(1 − β')·(1 − ᾱ_{t'})/(1 − ᾱ_t), σ² = β̃' = β'(1 − ᾱ_{t'})/(1 − ᾱ_t) or β' (``schedule.variance``).
    ``ddim``: with ε̂ = (x_t − √ᾱ_t·x̂0)/√(1 − ᾱ_t), c_x0 = √ᾱ_{t'} − d·√ᾱ_t/√(1 − ᾱ_t), c_xt = d/√(1 − ᾱ_t),
    d = √(1 − ᾱ_{t'} − σ²), σ = η·√((1 − ᾱ_{t'})/(1 − ᾱ_t))·√β'. All from the schedule's float64 arrays.
    """
    check_choice("sampler", sampler, SAMPLERS)
    if eta < 0:
        raise ConfigError(f"DDIM's eta must be >= 0 (0: deterministic, 1: the ancestral step), got {eta}")
    ab, one_minus_ab = schedule.alphas_cumprod, schedule.one_minus_alphas_cumprod
    ratio = ab[t] / ab[t_prev]  # 1 − β'
    beta = 1 - ratio
    if sampler == "ddpm":
        c_x0 = ab[t_prev].sqrt() * beta / one_minus_ab[t]
        c_xt = ratio.sqrt() * one_minus_ab[t_prev] / one_minus_ab[t]
        var = beta * one_minus_ab[t_prev] / one_minus_ab[t] if schedule.variance == "small" else beta
        return c_x0, c_xt, var.sqrt()
    sigma = eta * (one_minus_ab[t_prev] / one_minus_ab[t]).sqrt() * beta.sqrt()
    d = (one_minus_ab[t_prev] - sigma**2).clamp(min=0).sqrt()
    return ab[t_prev].sqrt() - d * ab[t].sqrt() / one_minus_ab[t].sqrt(), d / one_minus_ab[t].sqrt(), sigma


@torch.no_grad()
def sample(denoise: Callable, schedule: NoiseSchedule, shape: Sequence[int], seeds: Sequence[int], device="cpu",
           sampler: Sampler = "ddpm", steps: int | None = None, eta: float = 0.0, progress: Callable | None = None,
           dtype: torch.dtype = torch.float32):
    """Draw ``len(seeds)`` samples of ``shape`` in ``dtype``; ``denoise(x_t, t)`` returns x̂0 (clip it there if
    wanted). Each step is :func:`step_coefficients`' x_{t'} = c_x0·x̂0 + c_xt·x_t + σ·z; the last (to t' = 0) is x̂0.

    ``steps`` defaults to T for ``ddpm`` and 50 for ``ddim``; ``progress`` wraps the step iterator (e.g. tqdm).
    """
    check_choice("sampler", sampler, SAMPLERS)
    if len(seeds) < 1:
        raise ConfigError("num_samples must be >= 1")
    steps = default_steps(sampler, schedule.num_timesteps) if steps is None else steps
    grid = timestep_grid(schedule.num_timesteps, steps)
    coefficients = torch.stack(step_coefficients(schedule, grid[:-1], grid[1:], sampler, eta), 1).tolist()
    noise = PerSampleNoise(seeds, shape, device, dtype)
    x = noise()
    iterator = progress(range(len(grid))) if progress else range(len(grid))
    for i in iterator:
        x0_hat = denoise(x, torch.full((len(seeds),), int(grid[i]), device=device, dtype=torch.long)).to(dtype)
        if i + 1 == len(grid):
            x = x0_hat  # the last step (to t' = 0) is the mean, with no noise
        else:
            c_x0, c_xt, sigma = coefficients[i]
            x = c_x0 * x0_hat + c_xt * x + (sigma * noise() if sigma > 0 else 0.0)
    return x
