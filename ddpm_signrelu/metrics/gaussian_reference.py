"""The Gaussian reference denoiser: the control variate of the estimation component (theory.md §6.6)."""

from __future__ import annotations

import torch


class GaussianDenoiser:
    """D_G(x_t, t) = E[x0 | x_t] when x0 ~ N(μ, Σ): closed form, and a function of x_t alone.

    With Σ = U diag(κ) Uᵀ + σ²(I − UUᵀ) (U: D × r orthonormal, σ² the mean variance left outside U, 0 at full
    rank) and y = x_t − √ᾱ_t μ,

        D_G(x_t, t) = μ + U diag(g_t(κ) − g_t(σ²)) Uᵀ y + g_t(σ²) y,   g_t(κ) = √ᾱ_t κ / (ᾱ_t κ + 1 − ᾱ_t),

    since ᾱ_tΣ + (1 − ᾱ_t)I shares Σ's eigenvectors. Computed in float64; ``clip`` clamps x̂0 to [−1, 1].
    """

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor, variances: torch.Tensor, residual: float,
                 clip: bool = False):
        self.mean, self.basis, self.variances, self.residual, self.clip = mean, basis, variances, residual, clip

    @classmethod
    def fit(cls, x: torch.Tensor, rank: int, shrinkage: float = 0.0, clip: bool = False) -> GaussianDenoiser:
        """Mean and covariance (maximum likelihood) of the rows of ``x`` (n, *shape): all D eigenpairs where
        ``rank`` ≥ D, else the top ``rank`` principal directions (randomised SVD) and the mean leftover variance;
        every variance then grows by ``shrinkage``·tr(Σ)/D (directions the items do not span keep some)."""
        x = x.flatten(1).double()
        mean = x.mean(0)
        centred = x - mean
        n, dim = centred.shape
        ridge = shrinkage * centred.square().sum().item() / (n * dim)
        if rank >= dim:
            variances, basis = torch.linalg.eigh(centred.T @ centred / n)
            return cls(mean, basis, variances.clamp(min=0) + ridge, ridge, clip)
        with torch.random.fork_rng(devices=[]):  # svd_lowrank draws its projection from the global generator
            torch.manual_seed(0)
            _, singular, basis = torch.svd_lowrank(centred, q=min(rank, n), niter=4)
        variances = singular.square() / n
        leftover = (centred.square().sum() / n - variances.sum()).clamp(min=0) / (dim - len(variances))
        return cls(mean, basis, variances + ridge, leftover.item() + ridge, clip)

    def __call__(self, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        """x̂0 for ``x_t`` (B, *shape) at ᾱ_t = ``alpha_bar`` (B,), in x_t's shape and dtype."""
        ab = alpha_bar.double().reshape(-1, 1).to(x_t.device)
        y = x_t.flatten(1).double() - ab.sqrt() * self.mean.to(x_t.device)

        def gain(kappa):
            return ab.sqrt() * kappa / (ab * kappa + 1 - ab)

        basis = self.basis.to(x_t.device)
        out = self.mean.to(x_t.device) + gain(self.residual) * y
        out = out + ((y @ basis) * (gain(self.variances.to(x_t.device)) - gain(self.residual))) @ basis.T
        if self.clip:
            out = out.clamp(-1, 1)
        return out.view_as(x_t).to(x_t.dtype)
