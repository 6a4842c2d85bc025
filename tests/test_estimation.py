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
from ddpm_signrelu.metrics.gaussian_reference import GaussianDenoiser, GaussianMixtureDenoiser
from ddpm_signrelu.metrics.risk import EstimationStats, cross_fitted_control_variate, neyman_allocation

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


def test_mixture_reference_is_the_posterior_mean_of_a_gaussian_mixture():
    """Its log densities are N(√ᾱμ, ᾱΣ + (1 − ᾱ)I)'s (up to the shared constant); one component is the Gaussian
    reference; fitted with k = 4 on 40,000 draws of a well-separated 4-mode mixture it is close to that mixture's
    D* at every noise level, where one Gaussian is far from it."""
    mixture = GaussianMixture.random(dim=4, num_components=4, spread=2.0, scale=0.3, seed=5)
    x_t = mixture.sample(6, torch.Generator().manual_seed(0)) + 0.2
    exact = GaussianDenoiser(mixture.means[0], mixture.eigvecs[0], mixture.eigvals[0], 0.0)
    _, log_p = exact.posterior(x_t, ALPHA_BAR.repeat(2)[:6, None])
    for i, ab in enumerate(ALPHA_BAR.repeat(2)[:6]):
        cov = ab * mixture.eigvecs[0] @ torch.diag(mixture.eigvals[0]) @ mixture.eigvecs[0].T + (1 - ab) * torch.eye(4, dtype=torch.float64)
        normal = torch.distributions.MultivariateNormal(ab.sqrt() * mixture.means[0], cov)
        assert log_p[i].item() == pytest.approx(normal.log_prob(x_t[i]).item() + 2 * math.log(2 * math.pi), rel=1e-9)
    draws = mixture.sample(40_000, torch.Generator().manual_seed(1))
    one = GaussianMixtureDenoiser.fit(draws, 1, rank=4)
    torch.testing.assert_close(one(x_t[:4], ALPHA_BAR), GaussianDenoiser.fit(draws, rank=4)(x_t[:4], ALPHA_BAR))
    four = GaussianMixtureDenoiser.fit(draws, 4, rank=4, seed=2)
    bayes = mixture.denoiser(x_t[:4], ALPHA_BAR)
    assert (four(x_t[:4], ALPHA_BAR) - bayes).abs().max() < 0.05 < (one(x_t[:4], ALPHA_BAR) - bayes).abs().max()


def test_neyman_allocation_is_the_best_integer_split():
    """Against every split of 9 points over 4 columns (each ≥ 1): the least Σ sd²/r, and points where the spread is."""
    import itertools

    sd = torch.tensor([0.1, 2.0, 0.7, 0.01])
    got = neyman_allocation(sd, 9)
    splits = [r for r in itertools.product(range(1, 7), repeat=4) if sum(r) == 9]
    best = min((sd.double().square() / torch.tensor(r)).sum().item() for r in splits)
    assert got.sum() == 9 and (sd.double().square() / got).sum().item() == pytest.approx(best)
    assert got.tolist() == [1, 5, 2, 1]
    assert neyman_allocation(sd, 4).tolist() == [1, 1, 1, 1]


def test_points_sit_on_items_of_their_own_and_share_draws_across_sides():
    """Enough items: every point of S_train (and of S_held) on a different item, the two sides' points at the same
    (t, ε); spread_items=False: a group's points on one item; a small training split: groups of b = ⌊n/m⌋ items."""
    dm = _mixture(0)
    cb = RiskMetrics(num_items=8, num_strata=4, points_per_item=12, entropy_samples=1000)
    cb.prepare(dm, DIFFUSION, torch.device("cpu"))
    assert cb.repeats.sum() == 12 and cb.train_points.x0.shape == (8, 12, 3)
    for points in (cb.train_points, cb.held_points):
        assert len(points.x0.flatten(0, 1).unique(dim=0)) == 96
    torch.testing.assert_close(cb.train_points.t, cb.held_points.t)
    eps = (cb.train_points.x_t - SCHEDULE.sqrt_alphas_cumprod[cb.train_points.t][..., None].float()
           * cb.train_points.x0) / SCHEDULE.sqrt_one_minus_alphas_cumprod[cb.train_points.t][..., None].float()
    eps_held = (cb.held_points.x_t - SCHEDULE.sqrt_alphas_cumprod[cb.held_points.t][..., None].float()
                * cb.held_points.x0) / SCHEDULE.sqrt_one_minus_alphas_cumprod[cb.held_points.t][..., None].float()
    torch.testing.assert_close(eps, eps_held, atol=1e-4, rtol=0)
    one = RiskMetrics(num_items=8, num_strata=4, points_per_item=12, entropy_samples=1000, spread_items=False)
    one.prepare(dm, DIFFUSION, torch.device("cpu"))
    assert all(len(group.unique(dim=0)) == 1 for group in one.train_points.x0)
    small = RiskMetrics(num_items=64, num_strata=4, points_per_item=12, entropy_samples=1000)
    small.prepare(dm, DIFFUSION, torch.device("cpu"))  # 256 training items: 4 per group, each at 3 points
    assert all(len(group.unique(dim=0)) == 4 for group in small.train_points.x0)


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
    truth, truth_se = _split_gap(model, dm)
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


def _split_gap(model, dm, draws_per_item: int = 64) -> tuple[float, float]:
    """The model's bound over the whole held-out split less over the whole training split (``draws_per_item`` draws
    per item), bits/dim, with its Monte Carlo SE: the gap the estimation targets given the splits."""
    strata = DIFFUSION.strata(8, "weight")
    sides = []
    for x0 in (dm.val_data.repeat(draws_per_item, 1), dm.train_data.repeat(draws_per_item, 1)):
        draws = draw_for_items(strata, 11, range(len(x0)), x0.shape[1:])
        sides.append(to_bits_per_dim(vlb_terms(SCHEDULE, model, x0, draws, None)["total"], 3))
    se = math.hypot(*(side.std().item() / math.sqrt(len(side)) for side in sides))
    return (sides[0].mean() - sides[1].mean()).item(), se


def test_estimation_at_initialisation_covers_its_split_gap_and_averages_to_zero():
    """A network at initialisation has not seen the data: over 20 seeds (splits and items) the estimate averages to 0
    within 2 SE (no offset of its own), and in at least 19 it is within 2 SE of its split's gap (the held-out
    split's mean bound less the training split's, which the two splits' luck moves off 0)."""
    torch.manual_seed(0)
    net = DiffusionModel(data_shape=(3,), num_levels=None, network={"name": "mlp", "width": 32, "depth": 2},
                         head={"name": "ratio_atoms"}, num_timesteps=200, clip_denoised=False).eval()
    runs = []
    with torch.no_grad():
        for seed in range(20):
            dm = _mixture(seed)
            value, se, _ = _estimation(lambda _: net.denoise, seed, dm=dm)["estimation"]
            runs.append((value, se, *_split_gap(net.denoise, dm)))
    values = torch.tensor([r[0] for r in runs])
    assert abs(values.mean()) < 2 * values.std() / math.sqrt(len(values))
    inside = sum(abs(value - gap) < 2 * math.hypot(se, gap_se) for value, se, gap, gap_se in runs)
    assert inside >= 19, runs


def test_estimation_stats_do_not_depend_on_how_items_are_split():
    g = torch.Generator().manual_seed(0)
    delta, ref, approx, held = (torch.randn(21, 4, generator=g, dtype=torch.float64) for _ in range(4))
    whole, shards = EstimationStats(), EstimationStats()
    whole.update(delta, ref, approx, held)
    for rows in (slice(0, 11), slice(11, 21)):
        shards.update(delta[rows], ref[rows], approx[rows], held[rows])
    a, b = whole.compute(), shards.compute()
    for name in a:
        assert a[name][:2] == pytest.approx(b[name][:2]), name
    for name in ("estimation", "vlb_heldout"):
        torch.testing.assert_close(whole.group_totals[name], shards.group_totals[name])


def test_the_rise_is_the_paired_change_since_the_lowest_check_and_survives_a_resume():
    """Three checks of models that drift from D*: from the second on, ``<name>_rise`` is the value less the lowest
    earlier one, its SE that of the per-item change (below the level's); a callback restored from the state_dict
    carries on from the same history."""
    dm = _mixture(2)
    bayes = _bayes(dm)
    cb = RiskMetrics(num_items=32, num_strata=8, entropy_samples=1000)
    cb.prepare(dm, DIFFUSION, torch.device("cpu"))
    values, keys = {name: [] for name in ("estimation", "vlb_heldout")}, []
    for scale in (0.0, 0.02):
        res = cb.evaluate(lambda x, t, s=scale: bayes(x, t) + s * torch.sin(3 * x))
        keys.append({k for k in res if k.endswith("_rise")})
        for name, seen in values.items():
            seen.append(res[name][0])
    assert keys == [set(), {"estimation_rise", "vlb_heldout_rise"}]
    restored = RiskMetrics(num_items=32, num_strata=8, entropy_samples=1000)
    restored.load_state_dict(cb.state_dict())
    restored.prepare(dm, DIFFUSION, torch.device("cpu"))
    res = restored.evaluate(lambda x, t: bayes(x, t) + 0.05 * torch.sin(3 * x))
    for name, seen in values.items():
        rise, se, _ = res[f"{name}_rise"]
        assert rise == pytest.approx(res[name][0] - min(seen), abs=1e-9)
        assert 0 < se < res[name][1]
