"""The ELS patch machine (metrics/local_reference.py) and the callback that measures the network against it."""

import csv

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from ddpm_signrelu.callbacks import LocalApproximation, RiskMetrics
from ddpm_signrelu.callbacks.local_risk import patch_sizes_for
from ddpm_signrelu.data import DigitsDataModule
from ddpm_signrelu.diffusion import point_weights
from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.metrics import empirical_bayes_denoiser
from ddpm_signrelu.metrics.local_reference import local_patch_denoiser, padding_classes

from test_risk_callback import _logged, fit, mixture_data, mixture_model
from test_training import tiny_model


def brute_force(x_t, alpha_bar, bank, patch_size):
    """The machine pixel by pixel: every bank patch whose padding matches, one softmax per pixel, float64."""
    b, c, h, w = x_t.shape
    d = patch_size // 2

    def patches(img):  # (H·W, C·P²), zero padded
        return F.unfold(F.pad(img[None].double(), (d,) * 4), patch_size)[0].T

    def padding(p):
        i, j = divmod(p, w)
        return max(0, d - i), max(0, i + d - h + 1), max(0, d - j), max(0, j + d - w + 1)

    out = torch.zeros(b, c, h * w, dtype=torch.float64)
    for k in range(b):
        a = alpha_bar[k].double()
        query = patches(x_t[k])
        for p in range(h * w):
            logits, values = [], []
            for img in bank:
                for q in range(h * w):
                    if padding(q) == padding(p):
                        logits.append(-(query[p] - a.sqrt() * patches(img)[q]).square().sum() / (2 * (1 - a)))
                        values.append(img.flatten(1)[:, q].double())
            out[k, :, p] = (torch.softmax(torch.stack(logits), 0)[:, None] * torch.stack(values)).sum(0)
    return out.view(b, c, h, w)


@pytest.fixture
def small():
    g = torch.Generator().manual_seed(0)
    bank = torch.rand(5, 2, 5, 4, generator=g) * 2 - 1
    return torch.randn(3, 2, 5, 4, generator=g), torch.tensor([0.9, 0.5, 0.1], dtype=torch.float64), bank


@pytest.mark.parametrize("patch_size", [1, 3, 5])
def test_machine_is_the_per_pixel_posterior_mean_over_matching_patches(small, patch_size):
    x_t, ab, bank = small
    expected = brute_force(x_t, ab, bank, patch_size)
    streamed = local_patch_denoiser(x_t, ab, bank, patch_size, budget=64, dtype=torch.float64)  # many bank chunks
    assert torch.allclose(streamed, expected, atol=1e-12)
    single = local_patch_denoiser(x_t, ab, bank, patch_size)  # float32, one chunk
    assert torch.allclose(single.double(), expected, atol=1e-5)


def test_the_whole_image_patch_gives_the_memoriser(small):
    x_t, ab, bank = small
    full = 2 * max(x_t.shape[2:]) - 1
    machine = local_patch_denoiser(x_t, ab, bank, full, dtype=torch.float64)
    assert torch.allclose(machine, empirical_bayes_denoiser(x_t, ab, bank), atol=1e-12)


def test_padding_classes_partition_the_image():
    classes = padding_classes(28, 28, 13)
    assert len(classes) == 13 * 13
    assert sorted(torch.cat(classes).tolist()) == list(range(28 * 28))
    assert max(len(c) for c in classes) == 16 * 16  # the interior
    assert len(padding_classes(28, 28, 1)) == 1
    with pytest.raises(ValueError, match="odd"):
        local_patch_denoiser(torch.zeros(1, 1, 4, 4), torch.tensor([0.5]), torch.zeros(2, 1, 4, 4), 4)


def test_patch_sizes():
    assert patch_sizes_for((1, 28, 28)) == [3, 5, 7, 11, 15, 21, 29, 41, 55]
    assert patch_sizes_for((3, 8, 8), [5, 3]) == [3, 5, 15]
    for bad in ([4], [15], []):
        with pytest.raises(ConfigError, match="patch_sizes"):
            patch_sizes_for((1, 8, 8), bad)
    with pytest.raises(ConfigError, match="image data"):
        patch_sizes_for((2,))


def prepared(**kw):
    L.seed_everything(0)
    dm = DigitsDataModule(batch_size=32, val_size=64)
    dm.setup("fit")
    model = tiny_model()
    callback = LocalApproximation(num_items=6, num_strata=3, bank_items=64, **kw)
    callback.prepare(dm, model.diffusion, "cpu")
    return callback, dm, model


def test_a_network_that_is_one_machine_is_at_distance_zero_from_it():
    callback, dm, model = prepared(patch_sizes=[3, 7])
    ab = model.diffusion.schedule.alphas_cumprod
    g = torch.Generator().manual_seed(0)
    bank = dm.to_unit(dm.train_data[torch.randperm(len(dm.train_data), generator=g)[:64]])
    results, curves = callback.evaluate(lambda x_t, t: local_patch_denoiser(x_t, ab[t], bank, 3))
    assert results["approximation_local"][0] == pytest.approx(0, abs=1e-9)
    assert results["local_r2"][0] == pytest.approx(1)
    assert curves["patch_size"][1:].tolist() == [3.0] * 4
    assert curves["approximation"][2:].sum() > 0.01  # far from the memoriser
    results, curves = callback.evaluate(lambda x_t, t: empirical_bayes_denoiser(x_t, ab[t], dm.train_data,
                                                                                num_levels=dm.num_levels).float())
    assert results["approximation_local"][0] == pytest.approx(0, abs=1e-9)
    assert curves["approximation"].abs().max() < 1e-9
    assert curves["patch_size"][-1] == 15  # at small t a 7×7 patch already pins the item: a tie, the smaller wins


def test_calibration_is_cross_fitted():
    """A network that is machine 3 on even groups and machine 7 on odd ones: each half's size comes from the other
    half, so neither half is at distance zero."""
    callback = prepared(patch_sizes=[3, 7])[0]
    machines = callback.machines.double()
    model_out = torch.where((torch.arange(6) % 2 == 0).view(6, 1, 1, 1, 1), machines[:, :, 0], machines[:, :, 1])
    sq = (model_out.unsqueeze(2) - machines).square().flatten(3).sum(3)
    spread = (model_out.flatten(2) - model_out.flatten(2).mean(2, keepdim=True)).square().sum(2)
    results, _ = callback.summary(sq, spread, point_weights(callback.schedule, callback.points))
    assert results["approximation_local"][0] > 0.01
    assert results["local_r2"][0] < 1


def test_logged_beside_the_risk_split_with_its_curves(tmp_path):
    L.seed_everything(0)
    local = LocalApproximation(num_items=4, num_strata=3, patch_sizes=[3], bank_items=32)
    data = DigitsDataModule(batch_size=32, val_size=64)
    trainer = fit(tmp_path, tiny_model(), data, [RiskMetrics(num_items=8, num_strata=3), local], max_steps=4,
                  val_every=2, accumulate_grad_batches=1)
    logged = _logged(tmp_path)
    assert {"risk/approximation_local", "risk/approximation_local_se", "risk/local_r2", "risk/approximation"} <= logged
    with open(tmp_path / "risk_local_curves.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["step"] == "4"]
    assert [r["bucket"] for r in rows] == ["prior", "decoder", "0", "1", "2"]
    total = sum(float(r["approximation_local"]) for r in rows)
    assert total == pytest.approx(float(trainer.callback_metrics["risk/approximation_local"]), rel=1e-5)
    assert {r["patch_size"] for r in rows[2:]} <= {"3.0", "15.0"}
    assert (tmp_path / "risk_local_curves.png").stat().st_size > 1000
    assert (tmp_path / "risk_curves.csv").exists()  # RiskMetrics' own table is left alone


def test_needs_images(tmp_path):
    with pytest.raises(ConfigError, match="image data"):
        fit(tmp_path, mixture_model(), mixture_data(), [LocalApproximation()], max_steps=1, val_every=1)
    with pytest.raises(ConfigError, match="num_items >= 2"):
        LocalApproximation(num_items=1)
