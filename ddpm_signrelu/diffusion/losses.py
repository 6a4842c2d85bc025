"""Training losses for any head parameterization (theory.md §4.5, §5).

A loss owns its timestep law and its weighting; it returns one value per example, a mean over the D coordinates,
so numbers do not scale with image size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch

from ddpm_signrelu.diffusion.process import eps_from_x0, scales
from ddpm_signrelu.diffusion.schedule import NoiseSchedule
from ddpm_signrelu.errors import check_choice
from ddpm_signrelu.seeding import generator

Loss = Literal["eps_mse", "v_mse", "min_snr", "x0_mse", "vlb"]
LOSSES = get_args(Loss)


@dataclass(frozen=True)
class DenoisingLoss:
    """One of the training losses, on x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε:

    - ``eps_mse``: (1/D)‖ε − ε̂‖², Ho's L_simple (= SNR_t·(1/D)‖x0 − x̂0‖² for an x0-head).
    - ``v_mse``: (1/D)‖v − v̂‖² = (SNR_t + 1)·(1/D)‖x0 − x̂0‖², v = √ᾱ_t·ε − √(1 − ᾱ_t)·x0 (Salimans & Ho,
      arXiv 2202.00512): L_simple plus the x0 regression, so high-noise steps, where SNR_t → 0, keep a weight.
    - ``min_snr``: min(SNR_t, γ)·(1/D)‖x0 − x̂0‖² (Min-SNR weighting, arXiv 2303.09556), γ = ``min_snr_gamma``.
    - ``x0_mse``: (1/D)‖x0 − x̂0‖², the denoising regression loss (theory.md §9).
    - ``vlb``: (T − 1)·w_t·(1/D)‖x0 − x̂0‖², t ~ U{2..T}: unbiased for (1/D)Σ_{t≥2}(L_{t−1} − C_t).

    The others draw t ~ U{1..T}.
    """

    name: Loss = "eps_mse"
    min_snr_gamma: float = 5.0

    def __post_init__(self):
        check_choice("loss", self.name, LOSSES)

    def timesteps(self, num_timesteps: int, size: int, generator=None, device=None) -> torch.Tensor:
        """``size`` steps t of the loss's law, as indices (t ~ U{1..T} is 0..T−1; ``vlb`` leaves out t = 1)."""
        low = 1 if self.name == "vlb" else 0
        return torch.randint(low, num_timesteps, (size,), generator=generator, device=device)

    def fixed_draws(self, num_timesteps: int, seed: int, indices, shape) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-item (t, ε) for evaluating the loss on fixed draws: item j's depend on (seed, j) alone."""
        draws = []
        for index in indices:
            g = generator(seed, int(index))
            draws.append((self.timesteps(num_timesteps, 1, g)[0], torch.randn(*shape, generator=g)))
        ts, noises = zip(*draws)
        return torch.stack(ts), torch.stack(noises)

    def __call__(self, schedule: NoiseSchedule, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                 x_t: torch.Tensor, x0_hat: torch.Tensor, eps_hat: torch.Tensor | None = None) -> torch.Tensor:
        """The per-example loss of the prediction x̂0 (and ε̂, read from an ε-network's output rather than formed
        from x̂0) at x_t."""
        dims = tuple(range(1, x0.dim()))
        if self.name == "eps_mse":
            if eps_hat is None:
                eps_hat = eps_from_x0(x_t, x0_hat, *scales(schedule, t, x0.dim(), x0_hat.dtype))
            return (noise - eps_hat).pow(2).mean(dims)
        x0_err = (x0 - x0_hat).pow(2).mean(dims)
        if self.name == "x0_mse":
            return x0_err
        if self.name == "min_snr":
            return schedule.at("snr", t, 1, x0_err.dtype).clamp(max=self.min_snr_gamma) * x0_err
        if self.name == "v_mse":
            return (schedule.at("snr", t, 1, x0_err.dtype) + 1) * x0_err
        return (schedule.num_timesteps - 1) * schedule.at("x0_weight", t, 1, x0_err.dtype) * x0_err
