"""Small building blocks shared by the networks and heads."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ddpm_signrelu.errors import ConfigError


class Pointwise(nn.Linear):
    """A linear map along dim 1 (channels): a 1×1 convolution for images (B, C, H, W), a Linear for (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return F.conv2d(x, self.weight[:, :, None, None], self.bias)
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


def readout(features: int, out: int, kernel_size: int = 1) -> nn.Module:
    """A head's linear read-out: :class:`Pointwise` for ``kernel_size`` 1, else a size-preserving k×k convolution."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"head kernel_size must be an odd number >= 1 (1: pointwise), got {kernel_size}")
    if kernel_size == 1:
        return Pointwise(features, out)
    return nn.Conv2d(features, out, kernel_size, padding=kernel_size // 2)


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if its dtype is narrower (bf16, fp16), else unchanged (float32, float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of the step indices t (B,), computed in at least float32, returned in ``dtype``."""
    half, work = dim // 2, torch.promote_types(dtype, torch.float32)
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=work) / half)
    args = t.to(work)[:, None] * freqs[None]
    return F.pad(torch.cat([torch.cos(args), torch.sin(args)], dim=1), (0, dim % 2)).to(dtype)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero a module's parameters (residual branches and output layers start as the identity / zero)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module
