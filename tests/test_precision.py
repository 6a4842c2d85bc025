"""Float32 keeps the small-t end of the bound and of the sampler: every coefficient is formed in float64 and cast only
then, and a float64 network runs in float64 end to end (the reference for the float32 checks)."""

import copy

import pytest
import torch

from ddpm_signrelu.diffusion import (DenoisingLoss, NoiseSchedule, Strata, draw_for_items, sample, step_coefficients,
                                     timestep_grid)
from ddpm_signrelu.diffusion import to_bits_per_dim, vlb_terms
from ddpm_signrelu.lit import DiffusionModel
from helpers import TINY_UNET

TINY_MLP = {"name": "mlp", "width": 32, "depth": 2}


def perturbed_model(network: dict, head: dict) -> DiffusionModel:
    """A tiny DiffusionModel (T = 1000, continuous decoder, no clipping) whose zero-initialised layers are not zero."""
    model = DiffusionModel(data_shape=(1, 8, 8), num_levels=None, network=network, head=head, num_timesteps=1000,
                           clip_denoised=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def float32_first(schedule: NoiseSchedule) -> NoiseSchedule:
    """The schedule as the code before the fix used it: ᾱ cast to float32 first, √ᾱ and √(1 − ᾱ) formed after."""
    legacy = copy.deepcopy(schedule)
    ab = schedule.alphas_cumprod.float()
    legacy.sqrt_alphas_cumprod, legacy.sqrt_one_minus_alphas_cumprod = ab.sqrt().double(), (1 - ab).sqrt().double()
    return legacy


def bound_errors(model: DiffusionModel, schedule: NoiseSchedule, x0: torch.Tensor, draws) -> dict:
    """Per item, bits/dim: the float32 network's bound terms (on ``schedule``) less the float64 network's."""
    reference = copy.deepcopy(model).double()
    with torch.no_grad():
        exact = vlb_terms(reference.diffusion.schedule, reference.denoise, x0.double(), draws, None)
        got = vlb_terms(schedule, model.denoise, x0, draws, None)
    diff = {k: got[k] - exact[k] for k in ("total", "decoder")} | {"L_1": got["strata"][:, 0] - exact["strata"][:, 0]}
    return {k: to_bits_per_dim(v, x0[0].numel()) for k, v in diff.items()}


@pytest.mark.parametrize("network,head", [(TINY_UNET, {"name": "ratio_atoms"}),
                                          (TINY_MLP, {"name": "plain", "parameterization": "eps"})])
def test_float32_bound_is_within_2e5_bits_per_dim_of_float64(network, head):
    """Measured: the float32 bound is within ~5e-6 bits/dim of float64 per item (mean ~3e-7); ᾱ rounded to float32
    first puts L_0 off by ~2.2e-4, L_1 by ~1.3e-4 and the total by ~9e-5 on average."""
    model = perturbed_model(network, head)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, 17, (32, 1, 8, 8), generator=g).float() / 8 - 1
    draws = draw_for_items(Strata(model.diffusion.schedule, 16), 1, range(len(x0)), (1, 8, 8))
    assert (draws.t[:, 1] == 1).float().mean() > 0.5  # the first stratum mostly draws t = 2 (index 1): L_1
    fixed = bound_errors(model, model.diffusion.schedule, x0, draws)
    for name, err in fixed.items():
        assert err.abs().max().item() < 2e-5, name
    legacy = bound_errors(model, float32_first(model.diffusion.schedule), x0, draws)
    assert legacy["total"].mean().abs().item() > 2e-5
    assert legacy["decoder"].mean().abs().item() > 1e-4 and legacy["L_1"].mean().abs().item() > 5e-5


def reference_step(alphas_cumprod: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor, variance: str, sampler: str,
                   eta: float):
    """(c_x0, c_xt, σ) of one step t → t', in ᾱ's dtype, by Gaussian conditioning of the respaced chain: given x0,
    x_{t'} = √ᾱ'·x0 + √(1 − ᾱ')·e and x_t = √(ᾱ_t/ᾱ')·x_{t'} + √(1 − ᾱ_t/ᾱ')·e', so Cov(x_{t'}, x_t) =
    √(ᾱ_t/ᾱ')(1 − ᾱ') and Var(x_t) = 1 − ᾱ_t. DDIM: x_{t'} = √ᾱ'·x̂0 + d·ε̂ + σ·z, σ = η·√Var(x_{t'} | x_t, x0)."""
    ab_t, ab_p = alphas_cumprod[t], alphas_cumprod[t_prev]
    c_xt = (ab_t / ab_p).sqrt() * (1 - ab_p) / (1 - ab_t)
    post_var = (1 - ab_p) - c_xt**2 * (1 - ab_t)
    if sampler == "ddpm":
        return ab_p.sqrt() - c_xt * ab_t.sqrt(), c_xt, (post_var if variance == "small" else 1 - ab_t / ab_p).sqrt()
    sigma = eta * post_var.sqrt()
    d = (1 - ab_p - sigma**2).sqrt()
    return ab_p.sqrt() - d * ab_t.sqrt() / (1 - ab_t).sqrt(), d / (1 - ab_t).sqrt(), sigma


def max_relative_error(got, expected) -> float:
    return max(((g.double() - e).abs() / e.abs().clamp(min=1e-300)).max().item() for g, e in zip(got, expected)
               if e.abs().max() > 0)


SAMPLERS = [("small", "ddpm", 0.0), ("large", "ddpm", 0.0), ("small", "ddim", 0.0), ("small", "ddim", 0.5),
            ("large", "ddim", 1.0)]
GRIDS = [("linear", 1000), ("linear", 37), ("cosine", 1000), ("cosine", 50)]


@pytest.mark.parametrize("variance,sampler,eta", SAMPLERS)
@pytest.mark.parametrize("name,steps", GRIDS)
def test_step_coefficients_match_a_float64_formula_at_every_step(variance, sampler, eta, name, steps):
    """Relative error < 1e-6 (measured ~1e-12) at every grid step; ᾱ rounded to float32 first misses by > 1e-5
    (measured ~2e-4 at t = 2)."""
    s = NoiseSchedule.from_name(name, 1000, variance)
    grid = timestep_grid(1000, steps)
    t, t_prev = grid[:-1], grid[1:]
    ab = torch.cumprod(1 - s.betas, 0)
    got = step_coefficients(s, t, t_prev, sampler, eta)
    assert all(c.dtype == torch.float64 and c.shape == t.shape for c in got)
    expected = reference_step(ab, t, t_prev, variance, sampler, eta)
    assert max_relative_error(got, expected) < 1e-6
    assert max_relative_error(reference_step(ab.float(), t, t_prev, variance, sampler, eta), expected) > 1e-5


class Recorder:
    """A float32 denoiser x̂0 = tanh(x_t) that records every (x_t, t, x̂0) the sampler gives and gets."""

    def __init__(self):
        self.calls = []

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x0_hat = torch.tanh(x_t)
        self.calls.append((x_t, int(t[0]), x0_hat))
        return x0_hat


@pytest.mark.parametrize("variance,sampler,eta", SAMPLERS)
@pytest.mark.parametrize("name,steps", GRIDS)
def test_every_float32_sampler_step_is_within_1e6_of_float64(variance, sampler, eta, name, steps):
    """x_{t'} − (c_x0·x̂0 + c_xt·x_t + σ·z), with the coefficients of :func:`reference_step` and the sampler's own
    x_t, x̂0 and z, is below 1e-6 of |c_x0·x̂0| + |c_xt·x_t| + |σ·z| at every step (float32 rounding alone)."""
    s = NoiseSchedule.from_name(name, 1000, variance)
    seeds, record = [3, 4], Recorder()
    last = sample(record, s, (64,), seeds, sampler=sampler, steps=steps, eta=eta if sampler == "ddim" else None)
    generators = [torch.Generator().manual_seed(k) for k in seeds]

    def draw():
        return torch.stack([torch.randn(64, generator=g) for g in generators]).double()

    assert torch.equal(record.calls[0][0].double(), draw())
    assert [t for _, t, _ in record.calls] == timestep_grid(1000, steps).tolist()
    ab = torch.cumprod(1 - s.betas, 0)
    worst = 0.0
    for (x_t, t, x0_hat), (x_next, t_prev, _) in zip(record.calls, record.calls[1:]):
        c_x0, c_xt, sigma = (c.item() for c in reference_step(ab, torch.tensor(t), torch.tensor(t_prev), variance,
                                                               sampler, eta))
        z = draw() if sigma > 0 else torch.zeros(2, 64, dtype=torch.float64)
        terms = (c_x0 * x0_hat.double(), c_xt * x_t.double(), sigma * z)
        err = (x_next.double() - sum(terms)) / sum(term.abs() for term in terms)
        worst = max(worst, err.abs().max().item())
    assert worst < 1e-6
    assert torch.equal(last, record.calls[-1][2])


@pytest.mark.parametrize("network,head", [(TINY_UNET, "ratio_atoms"), (TINY_UNET, "ratio_direct"), (TINY_MLP, "plain")])
def test_float64_network_runs_in_float64_end_to_end(network, head):
    """Embedding, backbone, head, x̂0, loss, gradients, bound and samples all float64, carrying more than float32's
    digits (a float32 pass anywhere would leave float32-representable values)."""
    float32_model = perturbed_model(network, {"name": head})
    model = copy.deepcopy(float32_model).double()
    x0 = torch.randint(0, 17, (4, 1, 8, 8), generator=torch.Generator().manual_seed(2)).double() / 8 - 1
    t = torch.tensor([0, 1, 400, 999])

    def more_than_float32(x: torch.Tensor) -> bool:
        return x.dtype == torch.float64 and bool((x != x.float().double()).any())

    h, emb = model.model.backbone(x0, t)
    x0_hat = model.denoise(x0, t)
    assert more_than_float32(h) and more_than_float32(emb) and more_than_float32(x0_hat)
    torch.testing.assert_close(float32_model.denoise(x0.float(), t).double(), x0_hat, rtol=1e-4, atol=1e-5)
    for loss in ("eps_mse", "vlb"):
        model.diffusion.loss = DenoisingLoss(loss)
        values = model.diffusion.loss_per_example(model.model, x0, t.clamp(min=1), torch.randn_like(x0))
        assert more_than_float32(values)
    values.sum().backward()
    assert all(p.grad.dtype == torch.float64 for p in model.parameters() if p.grad is not None)
    draws = draw_for_items(Strata(model.diffusion.schedule, 4), 0, range(4), (1, 8, 8))
    assert more_than_float32(vlb_terms(model.diffusion.schedule, model.denoise, x0, draws, None)["total"])
    assert more_than_float32(model.generate([0, 1], "ddim", 5))
