"""Samplers (theory.md §5): ancestral DDPM, DDIM, DPM-Solver++ (2M, 3M, and the stochastic 2M SDE) and Heun.

Every sampler walks a descending grid of step indices T − 1 = t_0 > … > t_{N−1} = 0, calling the denoiser once per
point (Heun: twice per step but the last), and ends with x̂0 at t_{N−1}. Grids (``spacing``): ``uniform`` in t,
``logsnr`` uniform in λ_t = log(α_t/σ_t), ``karras`` (ρ = 7); by default ``uniform`` for ``ddpm``/``ddim``,
``logsnr`` for the DPM-Solvers, ``karras`` for ``heun``. A sample depends on its seed alone, not on its batch."""
import math
from collections.abc import Callable, Sequence
from typing import Literal, get_args

import torch

from ddpm_signrelu.diffusion.analytic import analytic_variance
from ddpm_signrelu.diffusion.schedule import NoiseSchedule
from ddpm_signrelu.errors import ConfigError, check_choice

Sampler = Literal["ddpm", "ddim", "dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "heun"]
SAMPLERS = get_args(Sampler)
Spacing = Literal["uniform", "logsnr", "karras"]
SPACINGS = get_args(Spacing)
KARRAS_RHO = 7.0
DEFAULT_SPACING = {"ddpm": "uniform", "ddim": "uniform", "heun": "karras"}  # the DPM-Solvers: logsnr


def default_steps(sampler: Sampler, num_timesteps: int) -> int:
    """Grid points when none are given: T for ``ddpm``, min(50, T) for ``ddim``, min(20, T) for the others."""
    return num_timesteps if sampler == "ddpm" else min(50 if sampler == "ddim" else 20, num_timesteps)


def network_calls(sampler: Sampler, steps: int) -> int:
    """Denoiser calls (NFE) of a grid of ``steps`` points: max(2·steps − 2, 1) for ``heun``, else ``steps``."""
    return max(2 * steps - 2, 1) if sampler == "heun" else steps


def timestep_grid(num_timesteps: int, steps: int) -> torch.Tensor:
    """``steps`` evenly spaced step indices in 0..T−1, descending from T − 1 to 0 (t = 1); one step: T − 1."""
    check_steps(num_timesteps, steps)
    if steps == 1:
        return torch.tensor([num_timesteps - 1])
    return torch.linspace(0, num_timesteps - 1, steps, dtype=torch.float64).round().long().unique().flip(0)


def check_steps(num_timesteps: int, steps: int) -> None:
    if not 1 <= steps <= num_timesteps:
        raise ConfigError(f"sampling steps must be in 1..T = 1..{num_timesteps}, got {steps}")


def spaced_grid(schedule: NoiseSchedule, steps: int, spacing: Spacing = "uniform") -> torch.Tensor:
    """Descending step indices ending at 0: :func:`timestep_grid` (``uniform``), or ``steps`` points uniform in λ_t
    (``logsnr``) or in σ̃_t^{1/ρ} (``karras``, ρ = 7) from t = T to t = 1, each mapped to the index of nearest λ."""
    check_choice("spacing", spacing, SPACINGS)
    if spacing == "uniform":
        return timestep_grid(schedule.num_timesteps, steps)
    check_steps(schedule.num_timesteps, steps)
    lam = schedule.log_snr.cpu() / 2  # λ_t = log(α_t/σ_t), decreasing in t
    if spacing == "logsnr":
        targets = torch.linspace(lam[-1].item(), lam[0].item(), steps, dtype=torch.float64)
    else:
        s_max, s_min = (torch.exp(-lam[i]) ** (1 / KARRAS_RHO) for i in (-1, 0))
        targets = -torch.log(torch.lerp(s_max, s_min, torch.linspace(0, 1, steps, dtype=torch.float64)) ** KARRAS_RHO)
    return (lam[None] - targets[:, None]).abs().argmin(1).unique().flip(0)


def step_coefficients(schedule: NoiseSchedule, t: torch.Tensor, t_prev: torch.Tensor, sampler: Sampler = "ddpm",
                      eta: float = 0.0, gamma: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """(c_x0, c_xt, σ), float64: one ``ddpm`` or ``ddim`` step x_{t'} = c_x0·x̂0 + c_xt·x_t + σ·z from indices t to
    t_prev < t (theory.md §5), β' = 1 − ᾱ_t/ᾱ_{t'}. ``ddpm``: the respaced posterior, σ² = β̃' or β'
    (``schedule.variance``), or with Γ_t (``gamma``, (T,)) Analytic-DPM's σ*²; ``ddim``: σ = η·√(β̃')."""
    check_choice("sampler", sampler, ("ddpm", "ddim"))
    ab, one_minus_ab = schedule.alphas_cumprod, schedule.one_minus_alphas_cumprod
    ratio = ab[t] / ab[t_prev]  # 1 − β'
    beta = 1 - ratio
    if sampler == "ddpm":
        c_x0 = ab[t_prev].sqrt() * beta / one_minus_ab[t]
        c_xt = ratio.sqrt() * one_minus_ab[t_prev] / one_minus_ab[t]
        var = beta * one_minus_ab[t_prev] / one_minus_ab[t] if schedule.variance == "small" else beta
        if gamma is not None:
            var = analytic_variance(schedule, t, t_prev, gamma.cpu()[t]).to(var.device)
        return c_x0, c_xt, var.sqrt()
    sigma = eta * (one_minus_ab[t_prev] / one_minus_ab[t]).sqrt() * beta.sqrt()
    d = (one_minus_ab[t_prev] - sigma**2).clamp(min=0).sqrt()
    return ab[t_prev].sqrt() - d * ab[t].sqrt() / one_minus_ab[t].sqrt(), d / one_minus_ab[t].sqrt(), sigma


def dpmpp_step(x: torch.Tensor, x0_hats: list[torch.Tensor], lams: list[float], alpha: float, sigma: float,
               sigma_s: float, lam: float, noise: Callable | None = None) -> torch.Tensor:
    """One DPM-Solver++ step (Lu et al., arXiv 2211.01095; theory.md §5) to the point (α_t, σ_t, λ_t) from x at the
    last of ``lams``, of order len(x0_hats) ∈ {1, 2, 3}: the latest predictions and their λ, newest last. With
    ``noise`` (orders 1, 2), the SDE step (diffusers' ``sde-dpmsolver++``, midpoint)."""
    h = lam - lams[-1]
    phi = math.expm1(-h)
    if noise is not None:
        decay = -math.expm1(-2 * h)  # 1 − e^{−2h}
        drift = x0_hats[-1] if len(x0_hats) == 1 else \
            x0_hats[-1] + 0.5 * (x0_hats[-1] - x0_hats[-2]) * h / (lams[-1] - lams[-2])
        return (sigma / sigma_s) * (1 + phi) * x + alpha * decay * drift + sigma * decay**0.5 * noise()
    out = (sigma / sigma_s) * x - alpha * phi * x0_hats[-1]
    if len(x0_hats) == 2:
        r0 = (lams[-1] - lams[-2]) / h
        out = out - 0.5 * alpha * phi * (x0_hats[-1] - x0_hats[-2]) / r0
    elif len(x0_hats) == 3:
        r0, r1 = (lams[-1] - lams[-2]) / h, (lams[-2] - lams[-3]) / h
        d1_0, d1_1 = (x0_hats[-1] - x0_hats[-2]) / r0, (x0_hats[-2] - x0_hats[-3]) / r1
        d1, d2 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1), (d1_0 - d1_1) / (r0 + r1)
        out = out + alpha * (phi / h + 1) * d1 - alpha * ((phi + h) / h**2 - 0.5) * d2
    return out


def sampling_plan(schedule: NoiseSchedule, sampler: Sampler = "ddpm", steps: int | None = None,
                  eta: float | None = None, spacing: Spacing | None = None) -> tuple[torch.Tensor, float]:
    """The grid and η that :func:`sample` uses, every option checked before any sampling: ``steps`` defaults to
    :func:`default_steps`, ``spacing`` to the sampler's (see above); ``eta`` applies to ``ddim`` alone (default 0)."""
    check_choice("sampler", sampler, SAMPLERS)
    if eta is not None and sampler != "ddim":
        raise ConfigError(f"eta applies to ddim alone, not to {sampler}; leave it unset")
    eta = 0.0 if eta is None else eta
    if eta < 0:
        raise ConfigError(f"eta must be >= 0 (0: deterministic), got {eta}")
    steps = default_steps(sampler, schedule.num_timesteps) if steps is None else steps
    return spaced_grid(schedule, steps, spacing or DEFAULT_SPACING.get(sampler, "logsnr")), eta


@torch.no_grad()
def sample(denoise: Callable, schedule: NoiseSchedule, shape: Sequence[int], seeds: Sequence[int], device="cpu",
           sampler: Sampler = "ddpm", steps: int | None = None, eta: float | None = None,
           progress: Callable | None = None, dtype: torch.dtype = torch.float32, spacing: Spacing | None = None,
           gamma: torch.Tensor | None = None):
    """Draw ``len(seeds)`` samples of ``shape`` in ``dtype``; ``denoise(x_t, t)`` returns x̂0 (clip it there if wanted).
    ``sampler``, ``steps``, ``spacing``, ``eta``: see :func:`sampling_plan`; ``progress`` wraps the step iterator (e.g.
    tqdm); ``gamma``: the model's Γ_t (T,), for Analytic-DPM's variance in the ``ddpm`` sampler (:mod:`~.analytic`)."""
    if len(seeds) < 1:
        raise ConfigError("num_samples must be >= 1")
    grid, eta = sampling_plan(schedule, sampler, steps, eta, spacing)
    if gamma is not None and sampler != "ddpm":
        raise ConfigError(f"the analytic variance applies to the ddpm sampler, not to {sampler}")
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]  # one CPU generator per sample
    noise = lambda: torch.stack([torch.randn(shape, generator=g, dtype=dtype) for g in generators]).to(device)
    x = noise()

    def x0_hat(x: torch.Tensor, i: int) -> torch.Tensor:
        return denoise(x, torch.full((len(seeds),), int(grid[i]), device=device, dtype=torch.long)).to(dtype)

    iterator = progress(range(len(grid) - 1)) if progress else range(len(grid) - 1)
    ab = schedule.alphas_cumprod.cpu()[grid]
    alpha, sigma = ab.sqrt().tolist(), (1 - ab).sqrt().tolist()
    lam = (schedule.log_snr.cpu()[grid] / 2).tolist()
    if sampler in ("ddpm", "ddim"):
        coefficients = torch.stack(step_coefficients(schedule, grid[:-1], grid[1:], sampler, eta, gamma), 1).tolist()
        for i in iterator:
            c_x0, c_xt, std = coefficients[i]
            x = c_x0 * x0_hat(x, i) + c_xt * x + (std * noise() if std > 0 else 0.0)
    elif sampler.startswith("dpmpp"):
        order, history = int(sampler[6]), []
        for i in iterator:
            history = (history + [(x0_hat(x, i), lam[i])])[-order:]
            usable = len(history) if len(grid) >= 15 or i < len(grid) - 2 else min(len(history), 2)
            m, lams = zip(*history[-usable:])
            x = dpmpp_step(x, list(m), list(lams), alpha[i + 1], sigma[i + 1], sigma[i], lam[i + 1],
                           noise if sampler.endswith("sde") else None)
    else:
        tilde = [s / a for s, a in zip(sigma, alpha)]  # heun: σ̃ = σ/α; x̃ = x/α
        for i in iterator:
            s, s_next, x_tilde = tilde[i], tilde[i + 1], x / alpha[i]
            d = (x_tilde - x0_hat(x, i)) / s
            x = x_tilde + (s_next - s) * d
            if i < len(grid) - 2:  # the correction into σ̃_min would add noise on a coarse grid
                x = x + (s_next - s) * ((x - x0_hat(x * alpha[i + 1], i + 1)) / s_next - d) / 2
            x = x * alpha[i + 1]
    return x0_hat(x, len(grid) - 1)  # the last point (t = 1) gives the mean x̂0, with no noise
