"""Training losses for any head parameterization (theory.md §4.5, §5).

Each returns one value per example: a mean over the D coordinates, so numbers do not scale with image size.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from ddpm_signrelu.diffusion.bound import item_generator
from ddpm_signrelu.diffusion.process import eps_from_x0, predict_x0, q_sample, scales
from ddpm_signrelu.diffusion.schedule import NoiseSchedule
from ddpm_signrelu.errors import check_choice

Loss = Literal["eps_mse", "min_snr", "x0_mse", "vlb"]
LOSSES = get_args(Loss)


def sample_timesteps(loss: Loss, num_timesteps: int, batch: int, generator=None, device=None) -> torch.Tensor:
    """t ~ U{1..T} as indices 0..T−1; the ``vlb`` loss draws t ~ U{2..T} (indices 1..T−1)."""
    low = 1 if loss == "vlb" else 0
    return torch.randint(low, num_timesteps, (batch,), generator=generator, device=device)


def diffusion_loss(schedule: NoiseSchedule, model, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                   loss: Loss = "eps_mse", parameterization: str = "x0", min_snr_gamma: float = 5.0) -> torch.Tensor:
    """Per-example training loss on x_t = q_sample(x0, t, ε); ``model(x_t, t)`` predicts ``parameterization``.

    - ``eps_mse``: (1/D)‖ε − ε̂‖², Ho's L_simple (= SNR_t·(1/D)‖x0 − x̂0‖² for an x0-head).
    - ``min_snr``: min(SNR_t, γ)·(1/D)‖x0 − x̂0‖² (Min-SNR weighting, arXiv 2303.09556).
    - ``x0_mse``: (1/D)‖x0 − x̂0‖², the denoising regression loss (theory.md §9).
    - ``vlb``: (T − 1)·w_t·(1/D)‖x0 − x̂0‖², t ~ U{2..T}: unbiased for (1/D)Σ_{t≥2}(L_{t−1} − C_t).
    """
    check_choice("loss", loss, LOSSES)
    x_t = q_sample(schedule, x0, t, noise)
    output = model(x_t, t)
    output = output.to(torch.promote_types(output.dtype, x_t.dtype))  # bf16 under autocast: back to x_t's dtype
    x0_hat = predict_x0(schedule, output, x_t, t, parameterization)
    dims = tuple(range(1, x0.dim()))
    if loss == "eps_mse":
        eps_hat = output if parameterization == "eps" else eps_from_x0(
            x_t, x0_hat, *scales(schedule, t, x0.dim(), x0_hat.dtype))
        return (noise - eps_hat).pow(2).mean(dims)
    x0_err = (x0 - x0_hat).pow(2).mean(dims)
    if loss == "x0_mse":
        return x0_err
    if loss == "min_snr":
        return schedule.at("snr", t, 1, x0_err.dtype).clamp(max=min_snr_gamma) * x0_err
    return (schedule.num_timesteps - 1) * schedule.at("x0_weight", t, 1, x0_err.dtype) * x0_err


def fixed_timesteps_and_noise(loss: Loss, num_timesteps: int, seed: int, indices, shape):
    """Per-item (t, ε) for evaluating the loss on fixed draws: item j's depend on (seed, j) alone."""
    low = 1 if loss == "vlb" else 0
    ts, noises = [], []
    for index in indices:
        g = item_generator(seed, int(index))
        ts.append(torch.randint(low, num_timesteps, (), generator=g))
        noises.append(torch.randn(*shape, generator=g))
    return torch.stack(ts), torch.stack(noises)
