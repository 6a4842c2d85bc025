"""Gaussian mixtures: data of known density, with the closed-form Bayes denoiser D* (theory.md §6.4)."""

import math

import torch

from ddpm_signrelu.data.base import TensorDataModule
from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.seeding import generator


class GaussianMixture:
    """p = Σ_c π_c N(μ_c, Σ_c) on R^d, in float64: ``weights`` (C,), ``means`` (C, d), ``covariances`` (C, d, d),
    symmetric positive definite (else a ConfigError), factored once as U_c diag(λ_c) U_cᵀ."""

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor):
        weights, means, covs = (torch.as_tensor(v, dtype=torch.float64) for v in (weights, means, covariances))
        c, d = means.shape
        if weights.shape != (c,) or covs.shape != (c, d, d):
            raise ConfigError(f"mixture shapes disagree: weights {tuple(weights.shape)}, means {tuple(means.shape)}, "
                              f"covariances {tuple(covs.shape)}; need (C,), (C, d), (C, d, d)")
        if (weights <= 0).any():
            raise ConfigError(f"mixture weights must be positive, got {weights.tolist()}")
        if not torch.allclose(covs, covs.transpose(1, 2)):
            raise ConfigError("mixture covariances must be symmetric")
        self.eigvals, self.eigvecs = torch.linalg.eigh(covs)
        if bad := (self.eigvals.min(1).values <= 0).nonzero().flatten().tolist():
            raise ConfigError(f"mixture covariance(s) {bad} are not positive definite (smallest eigenvalue "
                              f"{self.eigvals.min().item():.3g}); give matrices with all eigenvalues > 0")
        self.log_weights = (weights / weights.sum()).log()
        self.means, self.covariances, self.dim = means, covs, d

    @classmethod
    def random(cls, dim: int, num_components: int, spread: float = 0.5, scale: float = 0.1,
               condition: float = 4.0, seed: int = 0) -> "GaussianMixture":
        """Means ~ N(0, spread²I), random rotations, eigenvalues log-uniform in [scale²/condition, scale²]."""
        if dim < 1 or num_components < 1 or spread < 0 or scale <= 0 or condition < 1:
            raise ConfigError(f"need dim, num_components >= 1, spread >= 0, scale > 0, condition >= 1; got dim={dim}, "
                              f"num_components={num_components}, spread={spread}, scale={scale}, condition={condition}")
        g = torch.Generator().manual_seed(seed)
        means = spread * torch.randn(num_components, dim, generator=g, dtype=torch.float64)
        rot, _ = torch.linalg.qr(torch.randn(num_components, dim, dim, generator=g, dtype=torch.float64))
        eig = scale**2 * condition ** -torch.rand(num_components, dim, generator=g, dtype=torch.float64)
        covs = rot @ torch.diag_embed(eig) @ rot.transpose(1, 2)
        return cls(torch.ones(num_components), means, 0.5 * (covs + covs.transpose(1, 2)))

    def sample(self, num: int, generator: torch.Generator) -> torch.Tensor:
        """``num`` draws from p, (num, d) float64."""
        comp = torch.multinomial(self.log_weights.exp(), num, replacement=True, generator=generator)
        z = torch.randn(num, self.dim, generator=generator, dtype=torch.float64)
        return self.means[comp] + (self.eigvecs[comp] @ (self.eigvals[comp].sqrt() * z)[..., None])[..., 0]

    def _components(self, x: torch.Tensor, alpha_bar: torch.Tensor):
        """For x_t ~ q_t (rows of x, each at its own ᾱ): responsibilities r_c, S_c's eigenvalues, U_cᵀ(x − √ᾱμ_c)."""
        x = x.reshape(len(x), -1).double()
        ab = alpha_bar.double().reshape(-1, 1, 1)
        s_eig = ab * self.eigvals + (1 - ab)  # (B, C, d)
        y = torch.einsum("cde,bcd->bce", self.eigvecs, x[:, None] - ab.sqrt() * self.means)
        log_n = -0.5 * ((y.square() / s_eig).sum(2) + s_eig.log().sum(2) + self.dim * math.log(2 * math.pi))
        return torch.softmax(self.log_weights + log_n, 1), s_eig, y, log_n

    def log_prob(self, x: torch.Tensor, alpha_bar: torch.Tensor | None = None) -> torch.Tensor:
        """log q_t(x_t) = logsumexp_c[log π_c + log N(x_t; √ᾱμ_c, S_c)]; log p(x) when ``alpha_bar`` is None (ᾱ = 1)."""
        ab = torch.ones(len(x), dtype=torch.float64) if alpha_bar is None else alpha_bar
        return torch.logsumexp(self.log_weights + self._components(x, ab.to(x.device))[3], 1)

    def denoiser(self, x: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        """D*(x_t, t) = E[x0 | x_t] = Σ_c r_c [μ_c + √ᾱ Σ_c S_c⁻¹(x_t − √ᾱμ_c)], shaped like ``x``."""
        r, s_eig, y, _ = self._components(x, alpha_bar)
        ab = alpha_bar.double().reshape(-1, 1, 1)
        shift = torch.einsum("cde,bce->bcd", self.eigvecs, ab.sqrt() * self.eigvals / s_eig * y)
        return (r[..., None] * (self.means + shift)).sum(1).reshape(x.shape)

    def denoiser_at_steps(self, alphas_cumprod: torch.Tensor):
        """D* as a model ``f(x_t, t)``, t step indices into ``alphas_cumprod``, in x_t's dtype and device."""
        return lambda x_t, t: self.denoiser(x_t.cpu(), alphas_cumprod.cpu()[t.cpu()]).to(x_t.device, x_t.dtype)

    def score(self, x: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        """∇log q_t(x_t) = −Σ_c r_c S_c⁻¹(x_t − √ᾱμ_c), shaped like ``x``."""
        r, s_eig, y, _ = self._components(x, alpha_bar)
        return -(r[..., None] * torch.einsum("cde,bce->bcd", self.eigvecs, y / s_eig)).sum(1).reshape(x.shape)

    def entropy(self, num_samples: int = 100_000, seed: int = 0) -> tuple[float, float]:
        """H(p) = −E_p log p(x) in nats by Monte Carlo, and its standard error."""
        log_p = torch.cat([self.log_prob(self.sample(min(10_000, num_samples - i), generator(seed, i)))
                           for i in range(0, num_samples, 10_000)])
        return -log_p.mean().item(), log_p.std().item() / math.sqrt(num_samples)


class GaussianMixtureDataModule(TensorDataModule):
    """``num_train`` training points and ``val_size`` held-out draws (S_pop, theory.md §6.4) from a Gaussian mixture
    of examples of ``shape`` (e.g. ``[2]``, ``[1, 8, 8]``): :meth:`GaussianMixture.random` with ``num_components``,
    ``spread``, ``scale``, ``condition`` and ``mixture_seed``, or explicit ``means``, ``covariances``, ``weights``."""

    num_levels = None

    def __init__(self, shape: list[int] | tuple[int, ...] = (2,), num_train: int = 512, val_size: int = 1024,
                 num_components: int = 8, spread: float = 0.5, scale: float = 0.1, condition: float = 4.0,
                 mixture_seed: int = 0, means: list | None = None, covariances: list | None = None,
                 weights: list | None = None, batch_size: int = 128, seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size=batch_size, val_size=val_size, seed=seed, num_workers=num_workers)
        self.data_shape = tuple(int(s) for s in shape)
        dim = math.prod(self.data_shape)
        if num_train < 1:
            raise ConfigError(f"num_train must be >= 1, got {num_train}")
        self.num_train = num_train
        if means is not None or covariances is not None:
            if means is None or covariances is None:
                raise ConfigError("give both means and covariances for an explicit mixture, or neither")
            self.mixture = GaussianMixture(torch.ones(len(means)) if weights is None else weights, means, covariances)
        else:
            self.mixture = GaussianMixture.random(dim, num_components, spread, scale, condition, mixture_seed)
        if self.mixture.dim != dim:
            raise ConfigError(f"the mixture has dimension {self.mixture.dim} but shape {list(shape)} has {dim}")

    def load(self) -> torch.Tensor:
        return self.population(self.num_train + self.val_size, self.seed)

    def population(self, num: int, seed: int) -> torch.Tensor:
        """``num`` draws from p, shaped like the data (never trained on, for a seed other than the data's)."""
        return self.mixture.sample(num, torch.Generator().manual_seed(seed)).float().view(-1, *self.data_shape)
