"""DPM-Solver++ (2M, 3M, 2M SDE) and Heun: against diffusers, and their convergence on Gaussian data, where
the probability-flow ODE has a closed-form solution."""

import math

import pytest
import torch
from helpers import gaussian_bayes_denoiser, needs_peers

from ddpm_signrelu.diffusion import SAMPLERS, SPACINGS, NoiseSchedule, sample, sampling_plan, spaced_grid
from ddpm_signrelu.diffusion.samplers import network_calls
from ddpm_signrelu.errors import ConfigError

T, SEEDS, DIM = 1000, list(range(16)), 8
SCHEDULE = NoiseSchedule.from_name("linear", T)


def fixed_network(seed: int = 0):
    """A fixed random network (x_t, t) -> x̂0 ∈ (−1, 1), float64."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(DIM + 1, 32), torch.nn.Tanh(), torch.nn.Linear(32, DIM)).double()
    return lambda x, t: torch.tanh(net(torch.cat([x.double(), t.double()[:, None] / T], 1))).to(x.dtype)


def start_noise() -> torch.Tensor:
    return torch.stack([torch.randn(DIM, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
                        for k in SEEDS])


@needs_peers("diffusers")
@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("steps", [8, 20])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_dpm_solver_pp_matches_diffusers(order, steps, spacing):
    """Same network, same starting noise, same grid: diffusers' DPMSolverMultistepScheduler (data prediction, midpoint,
    lower-order final steps, last step to σ = 0) agrees to 1e-4 (measured: ~3e-6, its ᾱ being float32)."""
    import diffusers

    network, grid = fixed_network(), spaced_grid(SCHEDULE, steps, spacing)
    ours = sample(network, SCHEDULE, (DIM,), SEEDS, sampler=f"dpmpp_{order}m", steps=steps, dtype=torch.float64,
                  spacing=spacing)
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", solver_order=order,
        prediction_type="sample", algorithm_type="dpmsolver++", solver_type="midpoint", lower_order_final=True,
        final_sigmas_type="zero")
    scheduler.set_timesteps(timesteps=grid.tolist())
    x = start_noise()
    for t in scheduler.timesteps:
        x = scheduler.step(network(x, torch.full((len(SEEDS),), int(t))), t, x).prev_sample
    assert len(grid) == steps
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-4)


def exact_flow(mean: float, std: float, grid: torch.Tensor) -> torch.Tensor:
    """x̂0 at t_{N−1} of the exact probability-flow ODE solution from the starting noise at t_0, for N(m, s²) data:
    in x̃ = x/α_t, σ̃ = σ_t/α_t, x̃ − m scales as √(s² + σ̃²)."""
    ab = SCHEDULE.alphas_cumprod
    a_start, a_end = ab[grid[0]].sqrt(), ab[grid[-1]].sqrt()
    tilde_start, tilde_end = ((1 - ab[grid[[0, -1]]]) / ab[grid[[0, -1]]]).sqrt()
    x_tilde = mean + (start_noise() / a_start - mean) * ((std**2 + tilde_end**2) / (std**2 + tilde_start**2)).sqrt()
    return gaussian_bayes_denoiser(SCHEDULE, mean, std)(x_tilde * a_end, torch.full((len(SEEDS),), int(grid[-1])))


@pytest.mark.parametrize("sampler,order", [("ddim", 1), ("dpmpp_2m", 2), ("heun", 2), ("dpmpp_3m", 2)])
def test_ode_solvers_converge_at_their_order_on_gaussian_data(sampler, order):
    """Error against the exact flow as the log-SNR grid doubles (20, 40, 80 points): it falls by 2^order, within
    0.25 in the exponent. Measured rates 0.99 (DDIM), 1.94–1.97 (2M), 2.08–2.18 (Heun)
    and 2.18–2.47 (3M: its first two steps are first and second order, as in diffusers, which caps the global rate
    at 2; its error is still 2.6–3x below 2M's)."""
    mean, std = 0.3, 0.5
    network = gaussian_bayes_denoiser(SCHEDULE, mean, std)
    errors = []
    for steps in (20, 40, 80):
        grid = spaced_grid(SCHEDULE, steps, "logsnr")
        got = sample(network, SCHEDULE, (DIM,), SEEDS, sampler=sampler, steps=steps, dtype=torch.float64,
                     spacing="logsnr")
        errors.append((got - exact_flow(mean, std, grid)).abs().max().item())
    rates = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(rate > order - 0.25 for rate in rates), rates
    assert errors[-1] < 0.05


def test_multistep_solvers_beat_ddim_at_equal_network_calls():
    """21 calls on the log-SNR grid, max error against the exact flow: measured DDIM 0.127, 2M 0.0147, 3M 0.0085
    (Heun with 11 points, 21 calls: 0.170; it needs the Karras grid or more points)."""
    mean, std = 0.3, 0.5
    network = gaussian_bayes_denoiser(SCHEDULE, mean, std)

    def error(sampler: str) -> float:
        grid = spaced_grid(SCHEDULE, 21, "logsnr")
        got = sample(network, SCHEDULE, (DIM,), SEEDS, sampler=sampler, steps=21, dtype=torch.float64,
                     spacing="logsnr")
        return (got - exact_flow(mean, std, grid)).abs().max().item()

    ddim = error("ddim")
    assert error("dpmpp_2m") < ddim / 5 and error("dpmpp_3m") < ddim / 10


@needs_peers("diffusers")
def test_sde_solver_matches_diffusers_given_the_same_noise():
    """SDE-DPM-Solver++(2M) against diffusers' ``sde-dpmsolver++`` fed the noise our sampler draws (per sample, by
    seed, one draw per step): the same samples to 1e-4."""
    import diffusers

    network, grid = fixed_network(), spaced_grid(SCHEDULE, 12, "logsnr")
    ours = sample(network, SCHEDULE, (DIM,), SEEDS, sampler="dpmpp_2m_sde", steps=12, dtype=torch.float64,
                  spacing="logsnr")
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", solver_order=2,
        prediction_type="sample", algorithm_type="sde-dpmsolver++", lower_order_final=True, final_sigmas_type="zero")
    scheduler.set_timesteps(timesteps=grid.tolist())
    generators = [torch.Generator().manual_seed(k) for k in SEEDS]

    def draw():
        return torch.stack([torch.randn(DIM, generator=g, dtype=torch.float64) for g in generators])

    x = draw()
    for k, t in enumerate(scheduler.timesteps):
        noise = draw() if k < len(grid) - 1 else torch.zeros_like(x)
        x = scheduler.step(network(x, torch.full((len(SEEDS),), int(t))), t, x, variance_noise=noise).prev_sample
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-4)


def test_sde_solver_reproduces_gaussian_data():
    """For N(m, s²) data and the exact D*, SDE-DPM-Solver++(2M) samples have the data's mean and spread."""
    mean, std = 0.3, 0.5
    x = sample(gaussian_bayes_denoiser(SCHEDULE, mean, std), SCHEDULE, (64,), range(128), sampler="dpmpp_2m_sde",
               steps=40, spacing="logsnr", dtype=torch.float64)
    se = std / math.sqrt(x.numel())
    assert x.mean().item() == pytest.approx(mean, abs=4 * se)
    assert x.std().item() == pytest.approx(std, abs=0.02)


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "heun"])
def test_samples_depend_on_their_seed_only_and_hit_point_masses(sampler):
    network = fixed_network()
    a = sample(network, SCHEDULE, (DIM,), range(6), sampler=sampler, steps=7)
    assert torch.equal(a[2:4], sample(network, SCHEDULE, (DIM,), [2, 3], sampler=sampler, steps=7))
    point = sample(lambda x, t: torch.full_like(x, 0.25), SCHEDULE, (DIM,), range(3), sampler=sampler, steps=5)
    assert torch.equal(point, torch.full_like(point, 0.25))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_denoises_at_its_fewest_steps(sampler, schedule):
    """One grid point, the fewest accepted, calls the network once, at t = T, and returns its x̂0 (as diffusers'
    one-step DDIM): here the data's mean, not the starting noise. Two and three points are denoised too: Heun's
    correction into t = 1 had left half the starting noise (770x the data's spread on 2 points)."""
    mean, std = 0.5, 0.1
    scheduled = NoiseSchedule.from_name(schedule, T)
    exact = gaussian_bayes_denoiser(scheduled, mean, std)
    calls = []

    def network(x, t):
        calls.append(int(t[0]))
        return exact(x, t)

    for steps in (1, 2, 3):
        calls.clear()
        got = sample(network, scheduled, (64,), SEEDS, sampler=sampler, steps=steps)
        assert len(calls) == network_calls(sampler, steps) and calls[0] == T - 1, (steps, calls)
        assert abs(got.mean().item() - mean) < 0.02 and got.std().item() < 2 * std, (steps, got.std().item())
    with pytest.raises(ConfigError, match="sampling steps must be in 1..T"):
        sample(network, scheduled, (64,), SEEDS, sampler=sampler, steps=0)


def test_network_calls_per_sampler():
    calls = []

    def counting(x, t):
        calls.append(int(t[0]))
        return torch.zeros_like(x)

    for sampler in ("dpmpp_2m", "dpmpp_2m_sde", "heun", "ddim"):
        calls.clear()
        sample(counting, SCHEDULE, (2,), [0], sampler=sampler, steps=6)
        assert len(calls) == network_calls(sampler, 6), sampler
    assert calls == spaced_grid(SCHEDULE, 6).tolist()


def test_grids_are_descending_indices_ending_at_t1():
    lam = SCHEDULE.log_snr / 2
    for spacing in SPACINGS:
        grid = spaced_grid(SCHEDULE, 20, spacing)
        assert len(grid) == 20 and grid[0] == T - 1 and grid[-1] == 0 and (grid.diff() < 0).all()
    steps = lam[spaced_grid(SCHEDULE, 20, "logsnr")].diff()
    assert steps.max() / steps.min() < 1.5  # uniform in λ up to rounding to indices
    karras = spaced_grid(SCHEDULE, 20, "karras")
    assert (karras[1:] < spaced_grid(SCHEDULE, 20, "logsnr")[1:]).sum() <= 2  # Karras's grid dwells at large t
    assert (karras > 500).sum() > (spaced_grid(SCHEDULE, 20, "uniform") > 500).sum()


def test_sampling_options_are_checked_before_sampling():
    assert sampling_plan(SCHEDULE, "ddim")[1] == 0.0 and sampling_plan(SCHEDULE, "ddim", eta=0.5)[1] == 0.5
    assert len(sampling_plan(SCHEDULE, "dpmpp_2m")[0]) == 20
    with pytest.raises(ConfigError, match="eta applies to ddim alone, not to heun"):
        sampling_plan(SCHEDULE, "heun", eta=0.5)
    with pytest.raises(ConfigError, match="unknown spacing 'cosine'"):
        sampling_plan(SCHEDULE, "dpmpp_2m", spacing="cosine")
    with pytest.raises(ConfigError, match="sampling steps must be in 1..T"):
        sampling_plan(SCHEDULE, "dpmpp_3m", steps=0, spacing="karras")
