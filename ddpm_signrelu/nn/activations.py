"""SignReLU and the activation registry (theory.md §2)."""

import functools
import math

import torch
from torch import nn

from ddpm_signrelu.errors import check_choice


class _SignReLUFunction(torch.autograd.Function):
    """σ_α(x) = x/d and σ'_α(x) = 1/d² (times α where d > 1), d = 1 − min(x, 0); saves only d (theory.md §2)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        d = torch.rsub(x.clamp_max(0), 1)
        y = x / d
        if alpha != 1:
            y = torch.where(d > 1, y * alpha, y)
        ctx.save_for_backward(d)
        ctx.alpha = alpha
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (d,) = ctx.saved_tensors
        grad = grad.div(d).div_(d)
        if ctx.alpha != 1:
            grad = torch.where(d > 1, grad * ctx.alpha, grad)
        return grad, None


def _sigma(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.where(x >= 0, x, alpha * x / (1 + x.abs()))


def _sigma_backward(grad: torch.Tensor, x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.where(x >= 0, grad, grad * alpha / (1 + x.abs()).square())


@functools.cache
def _compiled(fn):
    return torch.compile(fn, dynamic=True)


class _FusedSignReLUFunction(torch.autograd.Function):
    """σ_α and σ'_α as one compiled kernel each, saving x alone."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return _compiled(_sigma)(x, alpha)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return _compiled(_sigma_backward)(grad, x, ctx.alpha), None


def signrelu(x: torch.Tensor, alpha: float = 1.0, fused: bool = False) -> torch.Tensor:
    """SignReLU σ_α(x): x for x ≥ 0, α·x/(1 + |x|) for x < 0 (theory.md §2), not twice differentiable; ``fused``: one
    ``torch.compile`` kernel each way (compiled on first use; needs a C++ compiler on CPU, Triton on GPU)."""
    if fused and not torch.compiler.is_compiling():
        return _FusedSignReLUFunction.apply(x, alpha)
    return _SignReLUFunction.apply(x, alpha)


class SignReLU(nn.Module):
    """Module form of :func:`signrelu`; ``alpha`` is a fixed constructor constant, not trained."""

    def __init__(self, alpha: float = 1.0, fused: bool = False):
        super().__init__()
        if alpha < 0:
            raise ValueError(f"SignReLU alpha must be >= 0, got {alpha}")
        self.alpha, self.fused = float(alpha), bool(fused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return signrelu(x, self.alpha, self.fused)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, fused={self.fused}"


ACTIVATIONS = {"signrelu": SignReLU, "relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}


def make_activation(name: str, **kwargs) -> nn.Module:
    """Build an activation by registry name: ``signrelu`` (takes ``alpha``), ``relu``, ``silu``, ``gelu``."""
    check_choice("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name](**kwargs)


def init_gain(activation: nn.Module, num_samples: int = 2_000_000, seed: int = 0) -> float:
    """Variance-preserving gain g = 1/√E[σ(z)²], z ~ N(0, 1), by Monte Carlo on a fixed seed (theory.md §2)."""
    z = torch.randn(num_samples, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return 1.0 / math.sqrt(activation(z).pow(2).mean().item())
