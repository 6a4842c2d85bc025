"""The Gaussian-mixture reference denoiser: the control variate of the estimation component (theory.md §6.6)."""

from __future__ import annotations

import torch


class GaussianDenoiser:
    """D_G(x_t, t) = E[x0 | x_t] when x0 ~ N(μ, Σ), in closed form (theory.md §6.6), with Σ = U diag(κ) Uᵀ +
    σ²(I − UUᵀ): ``basis`` U (D × r, orthonormal), ``variances`` κ and ``residual`` σ², the mean variance left
    outside U (0 at full rank). Computed in float64; ``clip`` clamps x̂0 to [−1, 1]."""

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor, variances: torch.Tensor, residual: float,
                 clip: bool = False):
        self.mean, self.basis, self.variances, self.residual, self.clip = mean, basis, variances, residual, clip

    @classmethod
    def fit(cls, x: torch.Tensor, rank: int, shrinkage: float = 0.0, clip: bool = False) -> GaussianDenoiser:
        """Mean and covariance of the rows of ``x`` (n, *shape): all D eigenpairs where ``rank`` ≥ D, else the top
        ``rank`` directions (randomised SVD) and the mean leftover variance; variances grow by ``shrinkage``·tr(Σ)/D."""
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
        out = self.posterior(x_t.flatten(1).double(), alpha_bar.double().reshape(-1, 1).to(x_t.device))[0]
        return (out.clamp(-1, 1) if self.clip else out).view_as(x_t).to(x_t.dtype)

    def posterior(self, x_t: torch.Tensor, ab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E[x0 | x_t], log p_t(x_t) + D/2·log 2π) for flat float64 ``x_t`` (B, D) at ᾱ_t = ``ab`` (B, 1):
        x_t ~ N(√ᾱ_t μ, ᾱ_tΣ + (1 − ᾱ_t)I), whose eigenvalues are s = ᾱ_tκ + 1 − ᾱ_t."""
        basis, variances = self.basis.to(x_t.device), self.variances.to(x_t.device)
        y = x_t - ab.sqrt() * self.mean.to(x_t.device)
        s, s_res = ab * variances + 1 - ab, ab * self.residual + 1 - ab
        proj = y @ basis
        mean = self.mean.to(x_t.device) + ab.sqrt() * (self.residual / s_res * y
                                                        + (proj * (variances / s - self.residual / s_res)) @ basis.T)
        outside = (y.square().sum(1, keepdim=True) - proj.square().sum(1, keepdim=True)).clamp(min=0)
        quad = (proj.square() / s).sum(1, keepdim=True) + outside / s_res
        logdet = s.log().sum(1, keepdim=True) + (y.shape[1] - basis.shape[1]) * s_res.log()
        return mean, -0.5 * (quad + logdet)


class GaussianMixtureDenoiser:
    """D(x_t, t) = E[x0 | x_t] when x0 ~ Σ_k π_k N(μ_k, Σ_k): Σ_k w_k(x_t)·D_k(x_t, t), with w_k(x_t) ∝
    π_k N(x_t; √ᾱ_t μ_k, ᾱ_tΣ_k + (1 − ᾱ_t)I) and D_k each component's :class:`GaussianDenoiser`."""

    def __init__(self, components: list[GaussianDenoiser], weights: torch.Tensor, clip: bool = False):
        self.components, self.log_weights, self.clip = components, weights.double().log(), clip

    @classmethod
    def fit(cls, x: torch.Tensor, num_components: int, rank: int, shrinkage: float = 0.0, clip: bool = False,
            iterations: int = 20, seed: int = 0) -> GaussianMixtureDenoiser:
        """Clusters the rows of ``x`` (n, *shape) by k-means (k-means++ start, ``iterations`` Lloyd steps, seeded)
        and fits each cluster's :meth:`GaussianDenoiser.fit`; π_k = the cluster's share."""
        flat = x.flatten(1).double()
        labels = kmeans(flat, num_components, iterations, seed)
        keep = [k for k in labels.unique().tolist() if (labels == k).sum() >= 2]
        components = [GaussianDenoiser.fit(flat[labels == k], rank, shrinkage) for k in keep]
        weights = torch.tensor([(labels == k).sum().item() for k in keep], dtype=torch.float64)
        return cls(components, weights / weights.sum(), clip)

    def __call__(self, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        """x̂0 for ``x_t`` (B, *shape) at ᾱ_t = ``alpha_bar`` (B,), in x_t's shape and dtype."""
        flat, ab = x_t.flatten(1).double(), alpha_bar.double().reshape(-1, 1).to(x_t.device)
        means, logps = zip(*(c.posterior(flat, ab) for c in self.components))
        w = torch.softmax(torch.cat(logps, 1) + self.log_weights.to(x_t.device), 1)
        out = torch.einsum("bk,kbd->bd", w, torch.stack(means))
        return (out.clamp(-1, 1) if self.clip else out).view_as(x_t).to(x_t.dtype)


def kmeans(x: torch.Tensor, k: int, iterations: int, seed: int) -> torch.Tensor:
    """Cluster labels (n,) of the rows of ``x`` (n, D): seeded k-means++ start, then ``iterations`` Lloyd steps."""
    g = torch.Generator().manual_seed(seed)
    k = min(k, len(x))
    centres = x[torch.randint(len(x), (1,), generator=g)]
    for _ in range(k - 1):
        d2 = torch.cdist(x, centres).square().amin(1)
        centres = torch.cat([centres, x[torch.multinomial(d2 / d2.sum(), 1, generator=g)]])
    for _ in range(iterations):
        labels = torch.cdist(x, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k)[:, None]
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
    return torch.cdist(x, centres).argmin(1)
