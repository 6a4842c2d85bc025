import math

import pytest
import torch
from helpers import gaussian_bayes_denoiser, gaussian_entropy, gaussian_expected_vlb

from ddpm_signrelu.diffusion import (PROPOSALS, NoiseSchedule, Strata, draw_for_items, q_sample, scales, vb_term,
                                     vlb_terms)
from ddpm_signrelu.diffusion.bound import discretized_gaussian_log_likelihood
from ddpm_signrelu.diffusion.process import eps_from_x0, x0_from_eps
from ddpm_signrelu.errors import ConfigError


@pytest.mark.parametrize("levels", [2, 17, 256])
@pytest.mark.parametrize("mean,log_scale", [(0.0, -3.0), (0.93, -1.0), (-1.2, 0.5)])
def test_decoder_probabilities_sum_to_one(levels, mean, log_scale):
    x = torch.linspace(-1, 1, levels, dtype=torch.float64)
    logp = discretized_gaussian_log_likelihood(x, torch.tensor(mean), torch.tensor(log_scale), levels)
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_decoder_bins_are_centred_on_the_levels():
    levels, h = 17, 1 / 16
    x = torch.linspace(-1, 1, levels, dtype=torch.float64)[5:6]
    logp = discretized_gaussian_log_likelihood(x, x, torch.tensor(math.log(h)), levels)
    assert logp.exp().item() == pytest.approx(math.erf(1 / math.sqrt(2)), abs=2e-3)  # ±1σ mass


@pytest.mark.parametrize("variance", ["small", "large"])
def test_kl_term_equals_ho_eps_form_plus_constant(variance):
    s = NoiseSchedule.from_name("linear", 1000, variance)
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(6, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    eps, eps_hat = (torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64) for _ in range(2))
    t = torch.tensor([1, 2, 10, 300, 700, 999])
    x_t = q_sample(s, x0, t, eps)
    a, sd = scales(s, t, 4, torch.float64)
    term = vb_term(s, x0, x_t, t, x0_from_eps(x_t, eps_hat, a, sd), None)
    beta, alpha, var = s.betas[t], s.alphas[t], s.chain_variance[t]
    ratio = s.posterior_variance[t] / var
    c_t = 16 / 2 * (ratio - 1 - torch.log(ratio))
    ho = beta**2 / (2 * var * alpha * (1 - s.alphas_cumprod[t])) * (eps - eps_hat).pow(2).flatten(1).sum(1)
    torch.testing.assert_close(term, ho + c_t, rtol=1e-8, atol=1e-10)
    assert (c_t.abs().max() < 1e-12) == (variance == "small")
    torch.testing.assert_close(eps_from_x0(x_t, x0_from_eps(x_t, eps_hat, a, sd), a, sd), eps_hat)


@pytest.mark.parametrize("variance,num_strata,repeats", [("small", 99, None), ("large", 99, None), ("small", 6, None),
                                                         ("small", 6, [2, 1, 3, 1, 1, 4, 1])])
def test_bayes_bound_on_gaussian_data_matches_closed_form(variance, num_strata, repeats):
    """Unbiased with one point per column and with several (stratified within their stratum, weighted 1/r)."""
    s = NoiseSchedule.from_name("linear", 100, variance)
    mean, std, n = 0.3, 0.5, 8000
    x0 = mean + std * torch.randn(n, 1, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    draws = draw_for_items(Strata(s, num_strata), 7, range(n), (1,), repeats)
    total = vlb_terms(s, gaussian_bayes_denoiser(s, mean, std), x0, draws, None)["total"]
    se = total.std().item() / math.sqrt(n)
    assert total.mean().item() == pytest.approx(gaussian_expected_vlb(s, mean, std), abs=4 * se)
    assert total.mean().item() > gaussian_entropy(std)


def test_bayes_bound_gap_to_entropy_shrinks_with_T():
    gaps = [gaussian_expected_vlb(NoiseSchedule.from_name("linear", T), 0.3, 0.5) - gaussian_entropy(0.5)
            for T in (50, 200, 1000)]
    assert gaps[0] > gaps[1] > gaps[2] > 0


def test_strata_partition_steps_into_contiguous_lambda_bins():
    s = NoiseSchedule.from_name("cosine", 1000)
    strata = Strata(s, 16)
    steps = torch.cat(strata.members)
    assert torch.equal(steps, torch.arange(1, 1000))
    assert all(torch.equal(m, torch.arange(m[0], m[-1] + 1)) for m in strata.members)
    widths = [hi - lo for lo, hi in strata.log_snr_range]
    assert max(widths) < 1.2 * (s.log_snr[1] - s.log_snr[-1]).item() / 16
    assert len(Strata(s, 999)) == 999 and all(len(m) == 1 for m in Strata(s, 999).members)


@pytest.mark.parametrize("proposal", PROPOSALS)
def test_stratified_estimator_is_unbiased(proposal):
    """Σ_k a_{t_k}/π_k(t_k) with (t_k, π_k(t_k)) from ``Strata.draw``: its Monte Carlo mean, and its expectation over
    u ~ U(0, 1)^K by the midpoint rule on N cells per stratum, are Σ_{t≥2} a_t. The inverse CDF gives member j of a
    stratum to the u in a cell of width π_k(j), so the rule's count there is off by at most one cell: the error is
    at most Σ_j (a_j/π_k(j))/N."""
    s = NoiseSchedule.from_name("linear", 200)
    strata = Strata(s, 5, proposal)
    a = torch.sin(torch.arange(200, dtype=torch.float64) / 7) ** 2 * s.x0_weight
    u = torch.rand(50_000, len(strata), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t, pi = strata.draw(u)
    est = (a[t] / pi).sum(1)
    assert est.mean().item() == pytest.approx(a[1:].sum().item(), abs=4 * est.std().item() / math.sqrt(len(u)))
    for members, probs in zip(strata.members, strata.probs):
        assert len(members) > 1 and (probs > 0).all() and probs.sum().item() == pytest.approx(1.0, abs=1e-12)
    n = 2**20
    u = ((torch.arange(n, dtype=torch.float64) + 0.5) / n)[:, None].repeat(1, len(strata))
    t, pi = strata.draw(u)
    expectation = (a[t] / pi).mean(0).sum().item()
    error_bound = sum((a[m] / p).sum().item() for m, p in zip(strata.members, strata.probs)) / n
    assert error_bound < 1e-4 * a[1:].sum().item()
    assert abs(expectation - a[1:].sum().item()) <= error_bound


def test_repeated_points_split_their_stratum():
    """r points in a stratum: the i-th draws from the i-th of r equal slices of the stratum's law (π_k's quantiles)."""
    strata = Strata(NoiseSchedule.from_name("linear", 100), 3)
    draws = draw_for_items(strata, 0, range(2000), (1,), [1, 1, 4, 1])
    assert draws.column.tolist() == [0, 1, 2, 2, 2, 2, 3] and (draws.t[:, 0] == 0).all() and (draws.pi[:, 0] == 1).all()
    members, cdf, probs = strata.members[1], strata.cdfs[1], strata.probs[1]
    for i in range(4):
        t = draws.t[:, 2 + i].contiguous()
        assert t.min() >= members[0] and t.max() <= members[-1]
        index = torch.searchsorted(members, t)
        upper, lower = cdf[index], cdf[index] - probs[index]  # the drawn step's slice of π_k's CDF
        assert upper.min() > i / 4 - 1e-9 and lower.max() < (i + 1) / 4 + 1e-9


def test_draws_depend_on_item_not_batch():
    strata = Strata(NoiseSchedule.from_name("linear", 100), 4)
    full, part = draw_for_items(strata, 5, range(6), (2, 2)), draw_for_items(strata, 5, [3, 4], (2, 2))
    assert torch.equal(full.t[3:5], part.t) and torch.equal(full.eps[3:5], part.eps)
    other = draw_for_items(strata, 6, [3, 4], (2, 2))
    assert not torch.equal(other.eps, part.eps)


def test_strata_count_is_checked():
    with pytest.raises(ConfigError, match="num_strata must be in 1..T-1"):
        Strata(NoiseSchedule.from_name("cosine", 10), 10)
