"""The SignReLU division gate: an exact reciprocal above a floor (theory.md §3)."""

from __future__ import annotations

import torch

from ddpm_signrelu.nn.activations import signrelu


def division_gate(y: torch.Tensor, floor: float = 1.0, alpha: float = 1.0) -> torch.Tensor:
    """inv_c(y) = (1/c)·(1 + σ_α(1 − y/c)/α), c = ``floor`` > 0 (theory.md §3).

    For y ≥ c this is exactly 1/y (u = 1 − y/c ≤ 0 gives σ_α(u)/α = c/y − 1). Below the floor it is the
    line 1/c + (c − y)/(α c²) (for α = 1 the tangent of 1/y at c), so it is never singular. The result
    comes from the cancellation 1 + σ/α, whose relative error is ≈ ε_mach·y/c: keep y/c ≲ 100 in fp32.
    """
    if floor <= 0 or alpha <= 0:
        raise ValueError(f"division_gate needs floor > 0 and alpha > 0, got floor={floor}, alpha={alpha}")
    return (1 + signrelu(1 - y / floor, alpha) / alpha) / floor
