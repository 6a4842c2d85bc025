"""The diffusion as one object: schedule, parameterization, loss, decoder, x̂0, bound (theory.md §1, §5, §6.1)."""

from collections.abc import Callable

import torch
from torch import nn

from ddpm_signrelu.diffusion.bound import Strata, draw_for_items, vlb_terms
from ddpm_signrelu.diffusion.losses import DenoisingLoss
from ddpm_signrelu.diffusion.process import PARAMETERIZATIONS, Parameterization, predict_x0, q_sample
from ddpm_signrelu.diffusion.schedule import NoiseSchedule
from ddpm_signrelu.errors import check_choice

Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> prediction
X0_MSE = DenoisingLoss("x0_mse")


class Diffusion(nn.Module):
    """A DDPM's process and objectives around a network ``(x_t, t) -> prediction`` of its ``parameterization``.
    ``num_levels``: grey levels of the data for the discretized decoder L_0, or None (continuous); ``clip_denoised``:
    clamp x̂0 to [−1, 1] in sampling and evaluation (never in training); ``bound_strata``: K, clamped to T − 1."""

    def __init__(self, schedule: NoiseSchedule, parameterization: Parameterization, loss: DenoisingLoss,
                 num_levels: int | None, clip_denoised: bool = True, bound_strata: int = 16):
        super().__init__()
        check_choice("parameterization", parameterization, PARAMETERIZATIONS)
        self.schedule, self.parameterization, self.loss = schedule, parameterization, loss
        self.num_levels, self.clip_denoised = num_levels, clip_denoised
        self.bound_strata = self.strata(bound_strata)

    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_timesteps

    def strata(self, num_strata: int, proposal="weight") -> Strata:
        """K = min(``num_strata``, T − 1) strata of {2..T} with proposal π_k (see :class:`Strata`)."""
        return Strata(self.schedule, min(num_strata, self.num_timesteps - 1), proposal)

    def _x0_hat(self, predict: Predictor, x_t: torch.Tensor, t: torch.Tensor, predicts: Parameterization | None):
        """(x̂0, the prediction) in x_t's dtype and at least float32 (a bf16 output under autocast is widened)."""
        output = predict(x_t, t)
        output = output.to(torch.promote_types(torch.promote_types(output.dtype, x_t.dtype), torch.float32))
        return predict_x0(self.schedule, output, x_t, t, predicts or self.parameterization), output

    def denoise(self, network: Predictor, x_t: torch.Tensor, t: torch.Tensor, clip: bool | None = None):
        """x̂0(x_t, t) of ``network``, clamped to [−1, 1] when ``clip`` (default: ``clip_denoised``)."""
        x0_hat, _ = self._x0_hat(network, x_t, t, None)
        return x0_hat.clamp(-1, 1) if (self.clip_denoised if clip is None else clip) else x0_hat

    def loss_per_example(self, predict: Predictor, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                         predicts: Parameterization | None = None, loss: DenoisingLoss | None = None):
        """Per-example ``loss`` (default: the training loss) at x_t = q_sample(x0, t, ε) of ``predict``, which
        predicts ``predicts`` (default: the network's parameterization)."""
        x_t = q_sample(self.schedule, x0, t, noise)
        x0_hat, output = self._x0_hat(predict, x_t, t, predicts)
        eps_hat = output if (predicts or self.parameterization) == "eps" else None
        return (loss or self.loss)(self.schedule, x0, noise, t, x_t, x0_hat, eps_hat)

    def fixed_loss(self, predict: Predictor, x0: torch.Tensor, seed: int, indices,
                   predicts: Parameterization | None = None, loss: DenoisingLoss | None = None):
        """:meth:`loss_per_example` on fixed per-item draws: item j's depend on (seed, j) alone."""
        loss = loss or self.loss
        t, noise = loss.fixed_draws(self.num_timesteps, seed, indices, tuple(x0.shape[1:]))
        return self.loss_per_example(predict, x0, t.to(x0.device), noise.to(x0.device), predicts, loss)

    def bound(self, denoise: Predictor, x0: torch.Tensor, seed: int, indices) -> torch.Tensor:
        """Stratified estimate of L_vlb per item, nats (theory.md §6.1), on fixed draws of (seed, item index)."""
        draws = draw_for_items(self.bound_strata, seed, indices, tuple(x0.shape[1:]))
        return vlb_terms(self.schedule, denoise, x0, draws, self.num_levels)["total"]
