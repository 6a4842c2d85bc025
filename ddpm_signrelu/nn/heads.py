"""Output heads of the reverse-process network (theory.md §4).

Every head maps backbone features h (B, F, *spatial) and the time embedding (B, E) to a prediction with
``out_channels`` channels. Its ``parameterization`` says what that prediction is: ``x0``, ``eps`` or ``v``. Its
read-outs are linear in h at each position (``kernel_size`` 1) or in the position's k×k neighbourhood (image features).

The ratio heads form f1/f2 through the division gate, in fp32 (or float64) with autocast off (§4.4). Their atoms
can be read in x0-, ε- or v-space: the ε/v → x0 maps are affine and the softmax weights sum to 1, so a ratio of
v-atoms V_k is still x̂0 = f1/f2 with the same f2 and x0-atoms A_k = √ᾱ_t·x_t − √(1 − ᾱ_t)·V_k. Reading
the atoms in v-space scales the network's error by √(1 − ᾱ_t) at small t, where an x0-head must
reproduce x_t almost exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ddpm_signrelu.diffusion.process import PARAMETERIZATIONS, Parameterization
from ddpm_signrelu.errors import ConfigError, check_choice
from ddpm_signrelu.nn.division import division_gate
from ddpm_signrelu.nn.layers import at_least_float32, readout, zero_init

LOGITS_MODES = ("pixel", "global")
ATOM_FORMS = ("free", "residual")


def softmax_ratio(logits: torch.Tensor, atoms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(f1, f2) = (Σ_k u_k A_k, Σ_k u_k) with u_k = exp(Λ_k − max_j Λ_j) (theory.md §4.2).

    ``logits`` Λ: (B, K, 1, *S) or broadcastable; ``atoms`` A: (B, K, C, *S). Sum over dim 1 (atoms).
    The max-subtraction makes f2 ∈ [1, K], so the gate with floor c = 1 is exact and accurate.
    """
    u = torch.exp(logits - logits.amax(dim=1, keepdim=True))
    return (u * atoms).sum(dim=1), u.sum(dim=1)


def gated_ratio(f1: torch.Tensor, f2: torch.Tensor, floor: float) -> torch.Tensor:
    """f1 ⊙ inv_c(f2), c = ``floor``: exactly f1/f2 where f2 ≥ c (theory.md §3, §4)."""
    return f1 * division_gate(f2, floor=floor)


def ratio_combine(logits: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
    """x̂0 = f1 · inv_1(f2) of :func:`softmax_ratio` (theory.md §4.2): numerically ``(softmax(Λ, 1) * A).sum(1)``."""
    return gated_ratio(*softmax_ratio(logits, atoms), floor=1.0)


class _RatioHead(nn.Module):
    """A ratio head: x̂ = f1 ⊙ inv_c(f2) from the (f1, f2) of :meth:`ratio`, computed with autocast disabled in at
    least float32 (float64 stays float64) (theory.md §4.4)."""

    floor = 1.0

    def __init__(self, parameterization: Parameterization):
        super().__init__()
        check_choice("ratio-head parameterization", parameterization, PARAMETERIZATIONS)
        self.parameterization = parameterization

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=h.device.type, enabled=False):
            return self.head(at_least_float32(h), at_least_float32(emb))

    def head(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return gated_ratio(*self.ratio(h, emb), self.floor)

    def ratio(self, h: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f1, f2): numerator (B, C, *S) and denominator (broadcastable to it), f2 ≥ ``floor``."""
        raise NotImplementedError


class RatioAtomHead(_RatioHead):
    """Softmax-atom ratio head (Variant A, the default): K atoms and logits, x̂0 = f1/f2 with f2 ≥ 1.

    ``logits="pixel"`` gives one logit per atom and position (shared across channels); ``"global"`` pools
    them to one per atom and image. ``temperature`` scales the logits by softplus(MLP(t_emb)) > 0.
    ``parameterization`` is the space the atoms are read in (see the module docstring).

    ``atom_form="free"``: K independent linear read-outs, zero logits (the output starts as their mean).
    ``"residual"``: A_k = B(h) + D_k(h) − mean_j D_j(h), one shared read-out B plus zero-mean corrections D_k
    (zero-initialised; the logits start random to tell them apart): the output is B(h) + Σ_k (u_k/f2 − 1/K)·D_k,
    exactly a plain head's B(h) at initialisation and wherever the weights are uniform (theory.md §4.2).
    """

    def __init__(self, features: int, out_channels: int, emb_dim: int, num_atoms: int = 8,
                 logits: str = "pixel", temperature: bool = True, parameterization: Parameterization = "v",
                 atom_form: str = "free", kernel_size: int = 1):
        super().__init__(parameterization)
        check_choice("ratio-head logits mode", logits, LOGITS_MODES)
        check_choice("ratio-head atom_form", atom_form, ATOM_FORMS)
        if num_atoms < 1:
            raise ConfigError(f"ratio head num_atoms must be >= 1, got {num_atoms}")
        self.num_atoms, self.out_channels, self.global_logits = num_atoms, out_channels, logits == "global"
        self.readout = readout(features, out_channels, kernel_size) if atom_form == "residual" else None
        self.atoms = readout(features, num_atoms * out_channels, kernel_size)
        self.logits = readout(features, num_atoms, kernel_size)
        zero_init(self.logits if self.readout is None else self.atoms)
        self.temperature = None
        if temperature:
            self.temperature = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), zero_init(nn.Linear(emb_dim, 1)))
            self.register_buffer("temperature_offset", torch.tensor(0.5413248546129181))  # softplus⁻¹(1)

    def scaled_logits(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The atoms' logits Λ (B, K, 1, *S), pooled where ``logits="global"``, scaled by the temperature."""
        logits = self.logits(h).unsqueeze(2)
        if self.global_logits and h.dim() > 2:
            logits = logits.mean(dim=tuple(range(3, logits.dim())), keepdim=True)
        if self.temperature is not None:
            scale = F.softplus(self.temperature(emb) + self.temperature_offset)
            logits = logits * scale.view(h.shape[0], *([1] * (logits.dim() - 1)))
        return logits

    def ratio(self, h: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f1, f2) of :func:`softmax_ratio` over the K atoms and the :meth:`scaled_logits` read from h."""
        atoms = self.atoms(h).view(h.shape[0], self.num_atoms, self.out_channels, *h.shape[2:])
        if self.readout is not None:
            atoms = self.readout(h).unsqueeze(1) + atoms - atoms.mean(dim=1, keepdim=True)
        return softmax_ratio(self.scaled_logits(h, emb), atoms)


class RatioDirectHead(_RatioHead):
    """Direct ratio head (Variant B): x̂0 = f1 ⊙ inv_c(f2), f2 = c·(1 + (M − 1)·sigmoid(z)) ∈ (c, M·c).

    Bounding f2 above by ``max_ratio`` M keeps the gate's fp32 error ≈ ε_mach·M (theory.md §4.3).
    """

    def __init__(self, features: int, out_channels: int, emb_dim: int, floor: float = 1.0, max_ratio: float = 100.0,
                 parameterization: Parameterization = "v", kernel_size: int = 1):
        super().__init__(parameterization)
        if floor <= 0 or max_ratio <= 1:
            raise ConfigError(f"direct ratio head needs floor > 0 and max_ratio > 1, got {floor}, {max_ratio}")
        self.floor, self.max_ratio = float(floor), float(max_ratio)

        self.numerator = readout(features, out_channels, kernel_size)
        self.denominator = zero_init(readout(features, 1, kernel_size))

    def ratio(self, h: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f1, f2) = (W_1·h, c·(1 + (M − 1)·sigmoid(W_2·h)))."""
        return self.numerator(h), self.floor * (1 + (self.max_ratio - 1) * torch.sigmoid(self.denominator(h)))


class PlainHead(nn.Module):
    """A linear read-out predicting ε, x0 or v directly: the ablation and baseline head."""

    def __init__(self, features: int, out_channels: int, emb_dim: int, parameterization: Parameterization = "eps",
                 kernel_size: int = 1):
        super().__init__()
        check_choice("plain-head parameterization", parameterization, PARAMETERIZATIONS)
        self.parameterization = parameterization
        self.out = readout(features, out_channels, kernel_size)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.out(h)


HEADS = {"ratio_atoms": RatioAtomHead, "ratio_direct": RatioDirectHead, "plain": PlainHead}
