"""The SignReLU division gate: an exact reciprocal above a floor (theory.md §3)."""

import torch

from ddpm_signrelu.nn.activations import signrelu


def division_gate(y: torch.Tensor, floor: float = 1.0, alpha: float = 1.0) -> torch.Tensor:
    """inv_c(y) = (1/c)·(1 + σ_α(1 − y/c)/α), c = ``floor`` > 0 (theory.md §3): exactly 1/y for y ≥ c, a line
    below; its relative error is ≈ ε_mach·y/c, so keep y/c ≲ 100 in fp32. Needs floor > 0 and alpha > 0."""
    if floor <= 0 or alpha <= 0:
        raise ValueError(f"division_gate needs floor > 0 and alpha > 0, got floor={floor}, alpha={alpha}")
    return (1 + signrelu(1 - y / floor, alpha) / alpha) / floor
