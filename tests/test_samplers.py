import math

import pytest
import torch
from helpers import gaussian_bayes_denoiser

from ddpm_signrelu.diffusion import NoiseSchedule, sample, timestep_grid
from ddpm_signrelu.errors import ConfigError


def test_timestep_grid():
    assert timestep_grid(1000, 1000).tolist() == list(range(999, -1, -1))
    grid = timestep_grid(1000, 50)
    assert len(grid) == 50 and grid[0] == 999 and grid[-1] == 0 and (grid.diff() < 0).all()
    with pytest.raises(ConfigError, match="sampling steps must be in 1..T"):
        timestep_grid(100, 101)


@pytest.mark.parametrize("steps", [1000, 100])
def test_ancestral_large_variance_is_exact_for_standard_normal_data(steps):
    """For x0 ~ N(0, I) the reverse transition is exactly N(√α_t x_t, β_t): the chain reproduces the data."""
    s = NoiseSchedule.from_name("linear", 1000, "large")
    x = sample(gaussian_bayes_denoiser(s, 0.0, 1.0), s, (64,), range(128), sampler="ddpm", steps=steps)
    se = 1 / math.sqrt(x.numel())
    assert x.mean().item() == pytest.approx(0.0, abs=4 * se)
    assert x.std().item() == pytest.approx(1.0, abs=4 * se / math.sqrt(2))


def test_ddim_eta0_rotates_standard_normal_data_by_the_known_factor():
    """With √ᾱ = cos θ and D* = √ᾱ x_t, each DDIM step multiplies x by cos(θ_t − θ_t')."""
    s = NoiseSchedule.from_name("cosine", 1000)
    grid = timestep_grid(1000, 25)
    theta = torch.acos(torch.cat([s.alphas_cumprod[grid].sqrt(), torch.ones(1, dtype=torch.float64)]))
    factor = torch.cos(theta[:-1] - theta[1:]).prod().item()
    x = sample(gaussian_bayes_denoiser(s, 0.0, 1.0), s, (16,), [11, 12], sampler="ddim", steps=25)
    x_T = torch.stack([torch.randn(16, generator=torch.Generator().manual_seed(k)) for k in (11, 12)])
    torch.testing.assert_close(x, factor * x_T, rtol=1e-4, atol=1e-5)
    assert factor < 0.99


def test_point_mass_data_is_hit_exactly():
    s = NoiseSchedule.from_name("cosine", 100)
    for sampler in ("ddpm", "ddim"):
        x = sample(lambda x_t, t: torch.full_like(x_t, 0.25), s, (3, 2, 2), range(4), sampler=sampler, steps=10)
        assert torch.equal(x, torch.full_like(x, 0.25))


def test_ddim_eta0_is_deterministic_and_per_seed():
    s = NoiseSchedule.from_name("linear", 1000)
    den = gaussian_bayes_denoiser(s, 0.0, 0.7)
    a = sample(den, s, (1, 4, 4), range(8), sampler="ddim", steps=20)
    b = sample(den, s, (1, 4, 4), range(8), sampler="ddim", steps=20)
    c = sample(den, s, (1, 4, 4), [5, 6], sampler="ddim", steps=20)
    assert torch.equal(a, b) and torch.equal(a[5:7], c)
    assert not torch.equal(a[0], a[1])


def test_ddpm_samples_depend_on_their_seed_only():
    s = NoiseSchedule.from_name("linear", 100)
    den = gaussian_bayes_denoiser(s, 0.0, 0.7)
    a = sample(den, s, (2, 3), range(6), sampler="ddpm")
    assert torch.equal(a[2:4], sample(den, s, (2, 3), [2, 3], sampler="ddpm"))


@pytest.mark.parametrize("steps", [1000, 37])
def test_ddim_eta1_equals_ancestral_with_posterior_variance(steps):
    s = NoiseSchedule.from_name("linear", 1000, "small")
    den = gaussian_bayes_denoiser(s, 0.1, 0.6)
    a = sample(den, s, (8,), range(4), sampler="ddpm", steps=steps)
    b = sample(den, s, (8,), range(4), sampler="ddim", steps=steps, eta=1.0)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_sampler_errors():
    s = NoiseSchedule.from_name("cosine", 10)
    with pytest.raises(ConfigError, match="unknown sampler 'euler'"):
        sample(lambda x, t: x, s, (2,), [0], sampler="euler")
    with pytest.raises(ConfigError, match="num_samples must be >= 1"):
        sample(lambda x, t: x, s, (2,), [])
