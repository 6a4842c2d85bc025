"""Output heads (theory.md §4): features h (B, F, *S) and time embedding (B, E) → x0, ε or v (``parameterization``)."""

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
    """(f1, f2) = (Σ_k u_k A_k, Σ_k u_k), u_k = exp(Λ_k − max_j Λ_j), so f2 ∈ [1, K] (theory.md §4.2).
    ``logits`` Λ: (B, K, 1, *S) or broadcastable; ``atoms`` A: (B, K, C, *S)."""
    u = torch.exp(logits - logits.amax(dim=1, keepdim=True))
    return (u * atoms).sum(dim=1), u.sum(dim=1)


def gated_ratio(f1: torch.Tensor, f2: torch.Tensor, floor: float) -> torch.Tensor:
    """f1 ⊙ inv_c(f2), c = ``floor``: exactly f1/f2 where f2 ≥ c (theory.md §3, §4)."""
    return f1 * division_gate(f2, floor=floor)


def ratio_combine(logits: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
    """x̂0 = f1 · inv_1(f2) of :func:`softmax_ratio` (theory.md §4.2): numerically ``(softmax(Λ, 1) * A).sum(1)``."""
    return gated_ratio(*softmax_ratio(logits, atoms), floor=1.0)


class _RatioHead(nn.Module):
    """x̂ = f1 ⊙ inv_c(f2) from the (f1, f2) of :meth:`ratio`, with autocast off, in at least float32 (§4.4)."""

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
    """Softmax-atom ratio head (Variant A, the default): K atoms and logits, x̂0 = f1/f2, f2 ≥ 1 (theory.md §4.2).
    ``logits``: ``pixel`` (one per atom and position) or ``global`` (one per atom and image); ``temperature`` scales
    them by softplus(MLP(t_emb)); ``atom_form``: ``free`` or ``residual`` (a shared read-out plus corrections)."""

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
        atoms = self.atoms(h).view(h.shape[0], self.num_atoms, self.out_channels, *h.shape[2:])
        if self.readout is not None:
            atoms = self.readout(h).unsqueeze(1) + atoms - atoms.mean(dim=1, keepdim=True)
        return softmax_ratio(self.scaled_logits(h, emb), atoms)


class RatioDirectHead(_RatioHead):
    """Direct ratio head (Variant B, §4.3): f2 = c·(1 + (M − 1)·sigmoid(W·h)), c = ``floor``, M = ``max_ratio``."""

    def __init__(self, features: int, out_channels: int, emb_dim: int, floor: float = 1.0, max_ratio: float = 100.0,
                 parameterization: Parameterization = "v", kernel_size: int = 1):
        super().__init__(parameterization)
        if floor <= 0 or max_ratio <= 1:
            raise ConfigError(f"direct ratio head needs floor > 0 and max_ratio > 1, got {floor}, {max_ratio}")
        self.floor, self.max_ratio = float(floor), float(max_ratio)
        self.numerator = readout(features, out_channels, kernel_size)
        self.denominator = zero_init(readout(features, 1, kernel_size))

    def ratio(self, h: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
