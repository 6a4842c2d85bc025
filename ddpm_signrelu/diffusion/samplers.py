"""Samplers: ancestral DDPM (σ² = β̃ or β) and DDIM, on the full chain or a strided grid (theory.md §5).

A step goes from grid point t to the previous one t' (ᾱ_{t'} = 1 past the first step). With
β' = 1 − ᾱ_t/ᾱ_{t'} (respacing), the ancestral step is the posterior of the respaced chain, and DDIM is
x_{t'} = √ᾱ_{t'}·x̂0 + √(1 − ᾱ_{t'} − s²)·ε̂ + s·z, s = η·√((1 − ᾱ_{t'})/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_{t'}).
DDIM with η = 1 therefore equals the ancestral step with σ² = β̃'. Noise comes from one generator per
sample, so a sample's image depends on its seed alone, not on the batch it was drawn in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ddpm_signrelu.diffusion.process import eps_from_x0
from ddpm_signrelu.diffusion.schedule import NoiseSchedule
from ddpm_signrelu.errors import ConfigError, check_choice

SAMPLERS = ("ddpm", "ddim")


def default_steps(sampler: str, num_timesteps: int) -> int:
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

    def __init__(self, seeds: Sequence[int], shape: Sequence[int], device):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.shape, self.device = tuple(shape), device

    def __call__(self) -> torch.Tensor:
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators]).to(self.device)


def ancestral_step(x_t, x0_hat, ab_t, ab_prev, variance: str, noise):
    """x_{t'} ~ N(coef1'·x̂0 + coef2'·x_t, σ'²) with σ'² = β̃' (``small``) or β' (``large``)."""
    beta = 1 - ab_t / ab_prev
    mean = (ab_prev.sqrt() * beta * x0_hat + (1 - beta).sqrt() * (1 - ab_prev) * x_t) / (1 - ab_t)
    var = beta * (1 - ab_prev) / (1 - ab_t) if variance == "small" else beta
    return mean + var.sqrt() * noise


def ddim_step(x_t, x0_hat, ab_t, ab_prev, eta: float, noise):
    """DDIM: √ᾱ_{t'}·x̂0 + √(1 − ᾱ_{t'} − s²)·ε̂ + s·z, ε̂ from x̂0 (Song et al., arXiv 2010.02502)."""
    eps_hat = eps_from_x0(x_t, x0_hat, ab_t)
    s = eta * ((1 - ab_prev) / (1 - ab_t)).sqrt() * (1 - ab_t / ab_prev).sqrt()
    return ab_prev.sqrt() * x0_hat + (1 - ab_prev - s**2).clamp(min=0).sqrt() * eps_hat + s * noise


@torch.no_grad()
def sample(denoise: Callable, schedule: NoiseSchedule, shape: Sequence[int], seeds: Sequence[int], device="cpu",
           sampler: str = "ddpm", steps: int | None = None, eta: float = 0.0, progress: Callable | None = None):
    """Draw ``len(seeds)`` samples of ``shape``; ``denoise(x_t, t)`` returns x̂0 (clip it there if wanted).

    ``steps`` defaults to T for ``ddpm`` and 50 for ``ddim``; ``progress`` wraps the step iterator (e.g. tqdm).
    """
    check_choice("sampler", sampler, SAMPLERS)
    if len(seeds) < 1:
        raise ConfigError("num_samples must be >= 1")
    steps = steps or default_steps(sampler, schedule.num_timesteps)
    grid = timestep_grid(schedule.num_timesteps, steps).tolist()
    noise = PerSampleNoise(seeds, shape, device)
    ab = schedule.alphas_cumprod.to(device=device, dtype=torch.float32)
    one = torch.ones((), device=device)
    x = noise()
    iterator = progress(range(len(grid))) if progress else range(len(grid))
    for i in iterator:
        t, ab_t = grid[i], ab[grid[i]]
        ab_prev = ab[grid[i + 1]] if i + 1 < len(grid) else one
        x0_hat = denoise(x, torch.full((len(seeds),), t, device=device, dtype=torch.long)).float()
        if i + 1 == len(grid):
            x = x0_hat  # the last step (to t' = 0) is the mean, with no noise
        elif sampler == "ddpm":
            x = ancestral_step(x, x0_hat, ab_t, ab_prev, schedule.variance, noise())
        else:
            x = ddim_step(x, x0_hat, ab_t, ab_prev, eta, noise() if eta > 0 else 0.0)
    return x
