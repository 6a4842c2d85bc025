"""Analytic-DPM's optimal reverse variance: its closed form on data whose reverse chain is known, and the Monte Carlo
moment Γ_t it needs."""

import pytest
import torch
from helpers import gaussian_bayes_denoiser

from ddpm_signrelu.diffusion import NoiseSchedule, sample, timestep_grid
from ddpm_signrelu.diffusion.analytic import analytic_variance, eps_second_moment
from ddpm_signrelu.errors import ConfigError

SCHEDULE = NoiseSchedule.from_name("linear", 1000)


@pytest.mark.parametrize("steps", [1000, 25])
def test_standard_normal_data_gets_the_exact_reverse_variance(steps):
    """x0 ~ N(0, I): Γ_t = 1 − ᾱ_t and the reverse step t → t' is exactly N(·, β'), β' = 1 − ᾱ_t/ᾱ_{t'}."""
    grid = timestep_grid(1000, steps)
    t, t_prev = grid[:-1], grid[1:]
    gamma = SCHEDULE.one_minus_alphas_cumprod[t]
    beta = 1 - SCHEDULE.alphas_cumprod[t] / SCHEDULE.alphas_cumprod[t_prev]
    torch.testing.assert_close(analytic_variance(SCHEDULE, t, t_prev, gamma), beta, rtol=1e-10, atol=0)


def test_variance_lies_between_the_posterior_variance_and_its_bound():
    t = torch.arange(1, 1000)
    small = SCHEDULE.posterior_variance[t]
    low, high = (analytic_variance(SCHEDULE, t, t - 1, torch.full((999,), g, dtype=torch.float64)) for g in (1, 0))
    torch.testing.assert_close(low, small, rtol=1e-12, atol=0)
    assert (high > small).all()
    clamped = analytic_variance(SCHEDULE, t, t - 1, torch.full((999,), 1.7, dtype=torch.float64))
    torch.testing.assert_close(clamped, small, rtol=1e-12, atol=0)  # estimates above 1 are clipped


def test_eps_second_moment_of_the_bayes_denoiser():
    """For N(m, s²) data, ε̂ of D* is √(1 − ᾱ)(x_t − √ᾱ m)/(ᾱ s² + 1 − ᾱ): Γ_t = (1 − ᾱ)/(ᾱ s² + 1 − ᾱ)."""
    mean, std = 0.2, 0.6
    x0 = mean + std * torch.randn(4000, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    steps = torch.tensor([0, 50, 300, 999])
    got = eps_second_moment(gaussian_bayes_denoiser(SCHEDULE, mean, std), SCHEDULE, x0, steps, batch_size=1500)
    ab = SCHEDULE.alphas_cumprod[steps]
    expected = (1 - ab) / (ab * std**2 + 1 - ab)
    torch.testing.assert_close(got, expected, rtol=0.05, atol=0)


def test_standard_normal_data_sampled_and_bounded_with_the_analytic_variance_is_the_large_variance_chain():
    """With Γ_t = 1 − ᾱ_t (x0 ~ N(0, I)), the ``ddpm`` sampler's steps and the bound's chain are those of σ² = β."""
    large = NoiseSchedule.from_name("linear", 1000, "large")
    gamma = SCHEDULE.one_minus_alphas_cumprod
    network = gaussian_bayes_denoiser(SCHEDULE, 0.0, 1.0)
    analytic = sample(network, SCHEDULE, (8,), range(4), sampler="ddpm", steps=20, gamma=gamma)
    torch.testing.assert_close(analytic, sample(network, large, (8,), range(4), sampler="ddpm", steps=20), rtol=1e-5,
                               atol=1e-6)
    t = torch.arange(1000)
    chain = SCHEDULE.with_chain_variance(analytic_variance(SCHEDULE, t, t - 1, gamma)).chain_variance
    torch.testing.assert_close(chain[1:], large.chain_variance[1:], rtol=1e-10, atol=0)
    with pytest.raises(ConfigError, match="the analytic variance applies to the ddpm sampler, not to ddim"):
        sample(network, SCHEDULE, (8,), [0], sampler="ddim", steps=5, gamma=gamma)
