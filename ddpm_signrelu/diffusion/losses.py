"""Training losses for any head parameterization (theory.md §4.5, §5): per-example means over the D coordinates."""

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
    """A training loss with its t-law and weighting (theory.md §4.5): ``eps_mse`` (1/D)‖ε − ε̂‖² (Ho's L_simple),
    ``v_mse`` (1/D)‖v − v̂‖² (Salimans & Ho), ``min_snr`` min(SNR_t, γ)·(1/D)‖x0 − x̂0‖² (Min-SNR; ``min_snr_gamma``),
    ``x0_mse`` (1/D)‖x0 − x̂0‖², ``vlb`` (T − 1)·w_t·(1/D)‖x0 − x̂0‖² with t ~ U{2..T}; the others take t ~ U{1..T}."""

    name: Loss = "eps_mse"
    min_snr_gamma: float = 5.0

    def __post_init__(self):
        check_choice("loss", self.name, LOSSES)

    def timesteps(self, num_timesteps: int, size: int, generator=None, device=None) -> torch.Tensor:
        """``size`` steps t of the loss's law, as indices (t ~ U{1..T} is 0..T−1; ``vlb`` leaves out t = 1)."""
        return torch.randint(1 if self.name == "vlb" else 0, num_timesteps, (size,), generator=generator, device=device)

    def fixed_draws(self, num_timesteps: int, seed: int, indices, shape) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-item (t, ε) for evaluating the loss on fixed draws: item j's depend on (seed, j) alone."""
        gens = [generator(seed, int(index)) for index in indices]
        ts, noises = zip(*[(self.timesteps(num_timesteps, 1, g)[0], torch.randn(*shape, generator=g)) for g in gens])
        return torch.stack(ts), torch.stack(noises)

    def __call__(self, schedule: NoiseSchedule, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                 x_t: torch.Tensor, x0_hat: torch.Tensor, eps_hat: torch.Tensor | None = None) -> torch.Tensor:
        """The per-example loss of x̂0 at x_t; ``eps_hat``, an ε-network's output, replaces ε̂ formed from x̂0."""
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
