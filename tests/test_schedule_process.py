import math

import pytest
import torch

from ddpm_signrelu.diffusion import NoiseSchedule, q_posterior, q_sample
from ddpm_signrelu.diffusion.process import eps_from_v, eps_from_x0, v_from, x0_from_eps, x0_from_v
from ddpm_signrelu.diffusion.schedule import cosine_betas
from ddpm_signrelu.errors import ConfigError


def test_linear_schedule_matches_ho():
    s = NoiseSchedule.from_name("linear", 1000)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    assert s.alphas_cumprod[-1].item() == pytest.approx(4.0358e-05, rel=1e-4)
    assert s.alphas_cumprod.dtype == torch.float64


def test_linear_schedule_rescales_with_T():
    s = NoiseSchedule.from_name("linear", 250)
    assert s.betas[0].item() == pytest.approx(4e-4) and s.betas[-1].item() == pytest.approx(0.08)


def test_cosine_schedule_follows_f_until_the_clip():
    T, s_ = 1000, 0.008
    f = lambda tau: math.cos((tau + s_) / (1 + s_) * math.pi / 2) ** 2  # noqa: E731
    ab = NoiseSchedule(cosine_betas(T)).alphas_cumprod
    for t in (1, 10, 500, 900):
        assert ab[t - 1].item() == pytest.approx(f(t / T) / f(0), rel=1e-10)
    assert cosine_betas(T).max().item() == pytest.approx(0.999)


def test_forward_process_moments():
    s = NoiseSchedule.from_name("linear", 1000)
    x0 = torch.full((200_000,), 0.7, dtype=torch.float64)
    t = torch.full((len(x0),), 300)
    xt = q_sample(s, x0, t, torch.randn_like(x0))
    ab = s.alphas_cumprod[300].item()
    assert xt.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=4 * math.sqrt((1 - ab) / len(x0)))
    assert xt.var().item() == pytest.approx(1 - ab, rel=0.01)


@pytest.mark.parametrize("variance", ["small", "large"])
def test_posterior_is_gaussian_conditioning(variance):
    s = NoiseSchedule.from_name("cosine", 200, variance)
    x0, xt = torch.tensor([0.3], dtype=torch.float64), torch.tensor([-0.8], dtype=torch.float64)
    for i in (1, 50, 199):
        ab_prev, a = s.alphas_cumprod_prev[i].item(), s.alphas[i].item()
        m1, m2 = math.sqrt(ab_prev) * 0.3, math.sqrt(ab_prev * a) * 0.3
        s11, s12, s22 = 1 - ab_prev, math.sqrt(a) * (1 - ab_prev), 1 - ab_prev * a
        mean, var = q_posterior(s, x0, xt, torch.tensor([i]))
        assert mean.item() == pytest.approx(m1 + s12 / s22 * (-0.8 - m2), rel=1e-10)
        assert var.item() == pytest.approx(s11 - s12**2 / s22, rel=1e-10)


def test_bound_weight_is_half_snr_difference():
    s = NoiseSchedule.from_name("linear", 1000)
    snr = s.snr
    torch.testing.assert_close(s.x0_weight[1:], 0.5 * (snr[:-1] - snr[1:]), rtol=1e-9, atol=0)
    assert s.x0_weight[0].item() == pytest.approx(1 / (2 * s.posterior_variance[1].item()))


def test_conversions_round_trip_and_eps_loss_identity():
    g = torch.Generator().manual_seed(0)
    x0, eps, x0_hat = (torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64) for _ in range(3))
    ab = torch.tensor([0.9999, 0.7, 0.2, 1e-4], dtype=torch.float64).view(4, 1, 1, 1)
    a, s = ab.sqrt(), (1 - ab).sqrt()
    x_t = a * x0 + s * eps
    torch.testing.assert_close(eps_from_x0(x_t, x0, a, s), eps)
    torch.testing.assert_close(x0_from_eps(x_t, eps, a, s), x0)
    v = v_from(x0, eps, a, s)
    torch.testing.assert_close(x0_from_v(x_t, v, a, s), x0)
    torch.testing.assert_close(eps_from_v(x_t, v, a, s), eps)
    lhs = (eps - eps_from_x0(x_t, x0_hat, a, s)).pow(2).flatten(1).sum(1)
    rhs = (ab / (1 - ab)).flatten() * (x0 - x0_hat).pow(2).flatten(1).sum(1)
    torch.testing.assert_close(lhs, rhs)


def test_bad_schedules():
    with pytest.raises(ConfigError, match="T >= 2"):
        NoiseSchedule.from_name("linear", 1)
    with pytest.raises(ConfigError, match="linear schedule with T = 10 has beta_T = 2 >= 1"):
        NoiseSchedule.from_name("linear", 10)
    with pytest.raises(ConfigError, match="unknown beta schedule 'sqrt'"):
        NoiseSchedule.from_name("sqrt", 100)
    with pytest.raises(ConfigError, match="unknown variance 'learned'"):
        NoiseSchedule.from_name("linear", 100, "learned")
