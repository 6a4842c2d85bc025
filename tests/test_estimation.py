"""The estimation component's control variate (theory.md §6.6): the Gaussian reference, the cross-fitted slope, and
the estimate's mean and standard error over item seeds."""

import math

import pytest
import torch

from ddpm_signrelu.callbacks import RiskMetrics
from ddpm_signrelu.data import GaussianMixtureDataModule
from ddpm_signrelu.data.mixture import GaussianMixture
from ddpm_signrelu.diffusion import DenoisingLoss, Diffusion, NoiseSchedule, draw_for_items, to_bits_per_dim, vlb_terms
from ddpm_signrelu.lit import DiffusionModel
from ddpm_signrelu.metrics.gaussian_reference import GaussianDenoiser
from ddpm_signrelu.metrics.risk import EstimationStats, cross_fitted_control_variate

SCHEDULE = NoiseSchedule.from_name("linear", 200)
DIFFUSION = Diffusion(SCHEDULE, "x0", DenoisingLoss(), num_levels=None)
ALPHA_BAR = SCHEDULE.alphas_cumprod[torch.tensor([0, 20, 100, 199])]


def test_gaussian_reference_is_the_posterior_mean_of_a_gaussian():
    """Built from a one-component mixture's μ and Σ it is that mixture's D*; fitted on 50,000 of its draws it is
    close to it; a low-rank fit of data spanning r directions is the full fit."""
    mixture = GaussianMixture.random(dim=5, num_components=1, spread=0.5, scale=0.4, seed=3)
    x_t = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = GaussianDenoiser(mixture.means[0], mixture.eigvecs[0], mixture.eigvals[0], 0.0)
    torch.testing.assert_close(exact(x_t, ALPHA_BAR), mixture.denoiser(x_t, ALPHA_BAR), rtol=1e-10, atol=1e-10)
    draws = mixture.sample(50_000, torch.Generator().manual_seed(1))
    torch.testing.assert_close(GaussianDenoiser.fit(draws, rank=5)(x_t, ALPHA_BAR), exact(x_t, ALPHA_BAR), atol=0.03,
                               rtol=0)
    flat = draws[:, :2] @ torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(GaussianDenoiser.fit(flat, rank=2)(x_t, ALPHA_BAR),
                               GaussianDenoiser.fit(flat, rank=5)(x_t, ALPHA_BAR), rtol=1e-6, atol=1e-8)
    shrunk = GaussianDenoiser.fit(flat, rank=5, shrinkage=0.1)
    assert shrunk.variances.min() == pytest.approx(0.1 * flat.var(0, correction=0).sum().item() / 5, rel=1e-6)
    assert GaussianDenoiser.fit(flat, rank=5, clip=True)(10 * x_t, ALPHA_BAR).abs().max() <= 1


def test_cross_fitted_slope_leaves_each_item_out():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(40, 3, generator=g, dtype=torch.float64)
    delta = 0.2 + 1.5 * ref + 0.1 * torch.randn(40, 3, generator=g, dtype=torch.float64)
    z, _ = cross_fitted_control_variate(delta, ref)
    for j in (0, 17, 39):
        rest = [i for i in range(40) if i != j]
        x, y = delta[rest], ref[rest]
        beta = ((x - x.mean(0)) * (y - y.mean(0))).sum(0) / (y - y.mean(0)).square().sum(0)
        torch.testing.assert_close(z[j], delta[j] - beta * ref[j])
    assert z.sum(1).var() < delta.sum(1).var() / 50
    constant, _ = cross_fitted_control_variate(delta, torch.zeros_like(ref))  # no spread in the reference: no change
    torch.testing.assert_close(constant, delta)


def _mixture(seed: int) -> GaussianMixtureDataModule:
    dm = GaussianMixtureDataModule(shape=(3,), num_train=256, val_size=512, num_components=3, spread=0.6, scale=0.25,
                                   mixture_seed=1, seed=seed)
    dm.setup("fit")
    return dm


def _estimation(model, seed: int, num_items: int = 64, dm=None) -> dict:
    """risk/* of ``model(dm)`` on the items of ``seed``, drawn from ``dm`` or a training set and a held-out split of
    that seed."""
    dm = dm or _mixture(seed)
    cb = RiskMetrics(num_items=num_items, num_strata=8, entropy_samples=1000, seed=seed)
    cb.prepare(dm, DIFFUSION, torch.device("cpu"))
    return cb.evaluate(model(dm))


def _bayes(dm):
    return dm.mixture.denoiser_at_steps(SCHEDULE.alphas_cumprod)


def test_estimation_of_the_bayes_denoiser_averages_to_zero_with_honest_errors():
    """D* does not depend on the training items: its population gap is 0. Over 16 item seeds the estimate's mean is
    within 2 standard errors of 0, its logged SE matches its spread over seeds, and that spread is below the
    paired difference's (a Gaussian reference of a three-mode mixture: a modest reduction)."""
    runs = [_estimation(_bayes, seed) for seed in range(16)]
    values = torch.tensor([r["estimation"][0] for r in runs])
    paired = torch.tensor([r["estimation_paired"][0] for r in runs])
    logged_se = torch.tensor([r["estimation"][1] for r in runs])
    assert abs(values.mean()) < 2 * values.std() / math.sqrt(len(values))
    assert 0.6 < values.std() / logged_se.mean() < 1.6
    assert paired.std() > 1.2 * values.std()
    assert torch.tensor([r["estimation_variance_ratio"][0] for r in runs]).mean() > 1.5


def test_estimation_targets_the_gap_of_the_split_drawn():
    """Given one split, the estimate averages over item seeds to the model's bound over the whole held-out split less
    over the whole training split (64 draws per item): the gap of this training set, its items' luck included."""
    dm = _mixture(3)
    model = _perturbed_bayes(dm)
    strata = DIFFUSION.strata(8, "weight")
    sides = []
    for x0 in (dm.val_data.repeat(64, 1), dm.train_data.repeat(64, 1)):
        draws = draw_for_items(strata, 11, range(len(x0)), x0.shape[1:])
        sides.append(to_bits_per_dim(vlb_terms(SCHEDULE, model, x0, draws, None)["total"], 3))
    truth = sides[0].mean() - sides[1].mean()
    truth_se = math.hypot(sides[0].std() / math.sqrt(len(sides[0])), sides[1].std() / math.sqrt(len(sides[1])))
    runs = [_estimation(lambda _: model, seed, dm=dm) for seed in range(16)]
    for key in ("estimation", "estimation_paired"):
        values = torch.tensor([r[key][0] for r in runs])
        assert abs(values.mean() - truth) < 2 * math.hypot(values.std() / 4, truth_se), (key, values.mean(), truth)


def test_the_reference_is_centred_on_its_split_offset():
    """c, the reference's mean paired difference given the splits, is its bound over the held-out split less over the
    training split: computed again with 32 fresh draws per item of the whole splits, it agrees within the noise of
    both, and the logged estimation_reference is within 2 SE of 0. The held-out split is made to differ in kind
    (spread 1.5x), so that c is far from 0."""
    dm = GaussianMixtureDataModule(shape=(3,), num_train=64, val_size=256, num_components=3, spread=0.6, scale=0.25,
                                   mixture_seed=1, seed=5)
    dm.setup("fit")
    dm.val_data = 1.5 * dm.val_data
    cb = RiskMetrics(num_items=64, num_strata=8, entropy_samples=1000, seed=0)
    cb.prepare(dm, DIFFUSION, torch.device("cpu"))
    strata = DIFFUSION.strata(8, "weight")
    sides = []
    for x0 in (dm.val_data.repeat(32, 1), dm.train_data.repeat(32, 1)):
        draws = draw_for_items(strata, 17, range(len(x0)), x0.shape[1:])
        denoise = lambda x, t: cb.reference(x, SCHEDULE.alphas_cumprod[t])
        sides.append(to_bits_per_dim(vlb_terms(SCHEDULE, denoise, x0, draws, None)["total"], 3))
    offset = sides[0].mean() - sides[1].mean()
    check_var = sum(side.view(32, -1).var(0).mean() / len(side) for side in sides)  # the draws are the only noise
    tolerance = 3 * math.sqrt(check_var + cb.reference_centre_cov.sum())
    assert abs(cb.reference_centre.sum() - offset) < tolerance < abs(offset), (cb.reference_centre.sum(), offset)
    value, se, _ = cb.evaluate(_bayes(dm))["estimation_reference"]
    assert abs(value) < 2 * se


def _perturbed_bayes(dm):
    """D* with a smooth error: it depends on neither split, yet its bound differs between the two."""
    bayes = _bayes(dm)
    return lambda x, t: bayes(x, t) + 0.03 * torch.sin(2 * x)


def test_estimation_at_initialisation_is_within_two_errors_of_zero():
    """A network at initialisation has not seen the data: the estimate is within 2 SE of 0 for at least 95 % of
    20 item seeds."""
    torch.manual_seed(0)
    net = DiffusionModel(data_shape=(3,), num_levels=None, network={"name": "mlp", "width": 32, "depth": 2},
                         head={"name": "ratio_atoms"}, num_timesteps=200, clip_denoised=False).eval()
    with torch.no_grad():
        runs = [_estimation(lambda dm: net.denoise, seed) for seed in range(20)]
    inside = sum(abs(r["estimation"][0]) < 2 * r["estimation"][1] for r in runs)
    assert inside >= 19, [(r["estimation"][0], r["estimation"][1]) for r in runs]


def test_estimation_stats_do_not_depend_on_how_items_are_split():
    g = torch.Generator().manual_seed(0)
    delta, ref, approx = (torch.randn(21, 4, generator=g, dtype=torch.float64) for _ in range(3))
    whole, shards = EstimationStats(), EstimationStats()
    whole.update(delta, ref, approx)
    for rows in (slice(0, 11), slice(11, 21)):
        shards.update(delta[rows], ref[rows], approx[rows])
    a, b = whole.compute(), shards.compute()
    for name in a:
        assert a[name][:2] == pytest.approx(b[name][:2]), name
