"""Gaussian-mixture closed forms (theory.md §6.4) and the data module."""

import math

import pytest
import torch

from ddpm_signrelu.data import GaussianMixture, GaussianMixtureDataModule
from ddpm_signrelu.errors import ConfigError


@pytest.fixture
def mixture():
    return GaussianMixture.random(dim=5, num_components=3, spread=0.6, scale=0.3, condition=5.0, seed=3)


def _points(mixture, n=64):
    g = torch.Generator().manual_seed(1)
    alpha_bar = torch.rand(n, generator=g, dtype=torch.float64) * 0.98 + 0.01
    x0 = mixture.sample(n, g)
    return alpha_bar.sqrt()[:, None] * x0 + (1 - alpha_bar).sqrt()[:, None] * torch.randn(n, 5, generator=g,
                                                                                             dtype=torch.float64), alpha_bar


def test_score_is_the_gradient_of_the_log_density(mixture):
    x, alpha_bar = _points(mixture)
    x.requires_grad_(True)
    grad, = torch.autograd.grad(mixture.log_prob(x, alpha_bar).sum(), x)
    torch.testing.assert_close(mixture.score(x.detach(), alpha_bar), grad, rtol=1e-9, atol=1e-9)


def test_tweedie_links_denoiser_and_score(mixture):
    x, alpha_bar = _points(mixture)
    ab = alpha_bar[:, None]
    torch.testing.assert_close(mixture.score(x, alpha_bar), (ab.sqrt() * mixture.denoiser(x, alpha_bar) - x) / (1 - ab))


def test_denoiser_is_the_posterior_mean_by_monte_carlo(mixture):
    """E[x0 | x_t] by importance weights over many prior draws matches the closed form."""
    g = torch.Generator().manual_seed(2)
    x0 = mixture.sample(400_000, g)
    x_t, ab = torch.tensor([[0.3, -0.2, 0.1, 0.0, 0.4]], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64)
    log_w = -(x_t - ab.sqrt() * x0).square().sum(1) / (2 * (1 - ab))
    w = torch.softmax(log_w, 0)
    torch.testing.assert_close(mixture.denoiser(x_t, ab)[0], (w[:, None] * x0).sum(0), atol=5e-3, rtol=0)


def test_one_dimensional_gaussian_closed_forms():
    m0, s = 0.3, 0.4
    p = GaussianMixture(torch.ones(1), torch.tensor([[m0]]), torch.tensor([[[s**2]]]))
    x, ab = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None], torch.full((9,), 0.7, dtype=torch.float64)
    expected = m0 + 0.7**0.5 * s**2 / (0.7 * s**2 + 0.3) * (x - 0.7**0.5 * m0)
    torch.testing.assert_close(p.denoiser(x, ab), expected)
    h, se = p.entropy(100_000, seed=0)
    assert abs(h - 0.5 * math.log(2 * math.pi * math.e * s**2)) < 4 * se


def test_samples_have_the_mixture_moments(mixture):
    x = mixture.sample(200_000, torch.Generator().manual_seed(0))
    w = mixture.log_weights.exp()
    mean = (w[:, None] * mixture.means).sum(0)
    torch.testing.assert_close(x.mean(0), mean, atol=5e-3, rtol=0)
    second = (w[:, None, None] * (mixture.covariances + mixture.means[:, :, None] * mixture.means[:, None])).sum(0)
    torch.testing.assert_close(torch.cov(x.T), second - mean[:, None] * mean[None], atol=5e-3, rtol=0)


def test_bad_covariance_is_refused():
    with pytest.raises(ConfigError, match="not positive definite"):
        GaussianMixture(torch.ones(2), torch.zeros(2, 2), torch.stack([torch.eye(2), torch.diag(torch.tensor([1., -1.]))]))
    with pytest.raises(ConfigError, match="symmetric"):
        GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.tensor([[[1.0, 0.5], [0.0, 1.0]]]))
    with pytest.raises(ConfigError, match="dimension"):
        GaussianMixtureDataModule(shape=[1, 2, 2], means=[[0.0, 0.0]], covariances=[[[1.0, 0.0], [0.0, 1.0]]])


def test_data_module_is_seeded_and_image_shaped():
    dm = GaussianMixtureDataModule(shape=[1, 4, 4], num_train=100, val_size=50, num_components=4)
    dm.setup("fit")
    assert dm.train_data.shape == (100, 1, 4, 4) and dm.val_data.shape == (50, 1, 4, 4)
    again = GaussianMixtureDataModule(shape=[1, 4, 4], num_train=100, val_size=50, num_components=4)
    again.setup("fit")
    assert torch.equal(dm.train_data, again.train_data)
    assert dm.num_levels is None and dm.mixture.dim == 16
    pop = dm.population(10, seed=5)
    assert pop.shape == (10, 1, 4, 4) and not torch.isin(pop, dm.train_data).any()
