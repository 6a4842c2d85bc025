"""Risk metrics (theory.md §6): memoriser, Pythagoras, the known-density identity, sharding, the callback."""

import math

import pytest
import torch

from ddpm_signrelu.callbacks import RiskMetrics
from ddpm_signrelu.data import GaussianMixtureDataModule
from ddpm_signrelu.diffusion import DenoisingLoss, Diffusion, NoiseSchedule, predict
from ddpm_signrelu.metrics.empirical_bayes import empirical_bayes_denoiser
from ddpm_signrelu.metrics.risk import excess_true_columns, model_risk_columns, data_columns

SCHEDULE = NoiseSchedule.from_name("linear", 200)
DIFFUSION = Diffusion(SCHEDULE, "x0", DenoisingLoss(), num_levels=None)


def _prepared(num_train=128, val_size=512, num_items=128, shape=(3,), num_strata=12, rank=0, world_size=1):
    dm = GaussianMixtureDataModule(shape=shape, num_train=num_train, val_size=val_size, num_components=3,
                                   spread=0.6, scale=0.25, seed=1)
    dm.setup("fit")
    cb = RiskMetrics(num_items=num_items, num_strata=num_strata, entropy_samples=20_000, seed=4)
    cb.prepare(dm, DIFFUSION, torch.device("cpu"), rank, world_size)
    return dm, cb


def _empirical(dm):
    return lambda x, t: empirical_bayes_denoiser(x, SCHEDULE.alphas_cumprod[t], dm.train_data).float()


def _perturbed(dm):
    """A model that is wrong everywhere, more at low noise: D*_n plus a smooth bias."""
    emp = _empirical(dm)
    return lambda x, t: emp(x, t) + 0.15 * torch.sin(3 * x) * (1 - SCHEDULE.alphas_cumprod[t].float()[:, None])


def _item_columns(cb, denoise):
    model_train, model_held = predict(denoise, cb.train_points), predict(denoise, cb.held_points)
    cols = model_risk_columns(SCHEDULE, cb.train_points, cb.held_points, model_train, model_held, cb.empirical_train,
                              None)
    cols |= excess_true_columns(SCHEDULE, cb.held_points, model_held, cb.bayes_held, None)
    cols |= data_columns(SCHEDULE, cb.train_points, cb.held_points, cb.empirical_train, cb.empirical_held,
                         cb.bayes_held, None)
    return {k: v.sum(1) for k, v in cols.items()}


def _within_mc_error(per_item: torch.Tensor, sigmas: float = 4.0):
    mean, se = per_item.mean().item(), per_item.std().item() / math.sqrt(len(per_item))
    assert abs(mean) < sigmas * se + 1e-9, (mean, se)


def test_memoriser_has_zero_approximation():
    dm, cb = _prepared()
    res = cb.evaluate(_empirical(dm))
    assert abs(res["approximation"][0]) < 1e-6
    assert res["vlb_train"][0] == pytest.approx(res["vlb_bayes_train"][0], abs=1e-5)


def test_approximation_is_the_bound_gap_on_the_training_measure():
    """Pythagoras: with S_train the whole split, approximation = VLB(θ) − VLB(D*_n) within Monte Carlo error."""
    dm, cb = _prepared()
    cols = _item_columns(cb, _perturbed(dm))
    assert cols["approximation"].mean() > 0.005
    _within_mc_error(cols["approximation"] - (cols["vlb_train"] - cols["vlb_bayes_train"]))


def test_known_density_identity():
    """excess_true ≈ approximation + estimation + optimism, and kernel_ratio_error = VLB(D*_n; pop) − VLB(D*; pop)."""
    dm, cb = _prepared()
    model = _perturbed(dm)
    cols = _item_columns(cb, model)
    assert cols["excess_true"].mean() > 0.005 and cols["kernel_ratio_error"].mean() > 0.005
    _within_mc_error(cols["excess_true"] - (cols["approximation"] + cols["estimation_paired"] + cols["optimism"]))
    held, empirical = cb.held_points, cb.empirical_held
    vlb_ref_pop = model_risk_columns(SCHEDULE, held, held, empirical, empirical, empirical, None)["vlb_train"].sum(1)
    _within_mc_error(cols["kernel_ratio_error"] - (vlb_ref_pop - cols["vlb_bayes_true"]))
    res = cb.evaluate(model)
    assert res["kl_upper"][0] == pytest.approx(res["vlb_heldout"][0] - res["entropy_true"][0])
    assert res["vlb_bayes_true"][0] > res["entropy_true"][0] - 4 * res["vlb_bayes_true"][1]


def test_metrics_do_not_depend_on_the_split_over_ranks_or_call_size():
    """Two ranks' shards reduced into one ColumnStats (what torchmetrics does across ranks) give the same numbers."""
    dm, whole = _prepared(num_items=64)
    model = _perturbed(dm)
    expected = whole.evaluate(model)
    shards = [_prepared(num_items=64, rank=r, world_size=2)[1] for r in (0, 1)]
    merged = shards[0].stats
    for cb in shards:
        model_train, model_held = predict(model, cb.train_points, 40), predict(model, cb.held_points, 40)
        cols = model_risk_columns(SCHEDULE, cb.train_points, cb.held_points, model_train, model_held,
                                  cb.empirical_train, None)
        merged.update(cols | excess_true_columns(SCHEDULE, cb.held_points, model_held, cb.bayes_held, None))
    got = merged.compute()
    for name in got:
        assert got[name][0] == pytest.approx(expected[name][0], rel=1e-6, abs=1e-9)
        assert got[name][1] == pytest.approx(expected[name][1], rel=1e-6, abs=1e-9)
