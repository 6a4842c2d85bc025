"""The risk and stopping callbacks inside Lightning runs: keys, EMA weights, curves, set-up errors, stopping."""

import copy
import csv
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, EMAWeightAveraging
from lightning.pytorch.loggers import CSVLogger
from PIL import Image

from ddpm_signrelu.callbacks import DiscrepancyStop, GapRiseStop, RiskMetrics, StopReport
from ddpm_signrelu.data import DigitsDataModule, GaussianMixtureDataModule, ImageFolderDataModule
from ddpm_signrelu.diffusion import DenoisingLoss, Diffusion, NoiseSchedule, predict
from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.lit import DiffusionModel
from ddpm_signrelu.metrics import empirical_bayes_denoiser

from test_training import tiny_model

BASE = ["vlb_train", "vlb_heldout", "approximation", "estimation", "estimation_paired", "estimation_reference", "excess",
        "vlb_bayes_train"]
KNOWN = ["excess_true", "optimism", "kernel_ratio_error", "vlb_bayes_true", "entropy_true", "kl_upper"]
MLP = {"name": "mlp", "width": 64, "depth": 2}


def mixture_model(**kw):
    return DiffusionModel(data_shape=(2,), num_levels=None, network=MLP, head={"name": "ratio_atoms"},
                          num_timesteps=200, clip_denoised=False, lr=3e-3, bound_strata=4, **kw)


def mixture_data(num_train=64, **kw):
    return GaussianMixtureDataModule(shape=[2], num_train=num_train, val_size=128, num_components=4, batch_size=64,
                                     **kw)


def fit(tmp_path, model, data, callbacks, max_steps, val_every, **kw):
    trainer = L.Trainer(max_steps=max_steps, val_check_interval=val_every, check_val_every_n_epoch=None,
                        logger=CSVLogger(tmp_path, name="", version=""), enable_progress_bar=False,
                        enable_model_summary=False, callbacks=callbacks, num_sanity_val_steps=0,
                        limit_val_batches=1, **kw)
    trainer.fit(model, datamodule=data)
    return trainer


def _logged(tmp_path):
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {k for row in rows for k, v in row.items() if v != ""}


def test_all_keys_and_curves_on_digits(tmp_path):
    L.seed_everything(0)
    risk = RiskMetrics(num_items=16, num_strata=4)
    data = DigitsDataModule(batch_size=32, val_size=64)
    trainer = fit(tmp_path, tiny_model(), data, [risk], max_steps=4, val_every=2, accumulate_grad_batches=1)
    logged = _logged(tmp_path)
    for name in BASE:
        assert {f"risk/{name}", f"risk/{name}_se"} <= logged, name
    assert not any(f"risk/{name}" in logged for name in KNOWN)
    assert "risk/estimation_variance_ratio" in logged and "risk/estimation_variance_ratio_se" not in logged
    assert "val/dsm_x0" in logged
    with open(tmp_path / "risk_curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["2"] * 6 + ["4"] * 6  # L_T, L_0 and 4 strata per check
    last = [r for r in rows if r["step"] == "4"]
    for name in ("vlb_heldout", "approximation"):
        total = sum(float(r[name]) for r in last)
        assert total == pytest.approx(float(trainer.callback_metrics[f"risk/{name}"]), rel=1e-5)
    assert (tmp_path / "risk_curves.png").stat().st_size > 1000


def test_all_keys_on_a_mixture_and_the_identity_in_logs(tmp_path):
    L.seed_everything(0)
    risk = RiskMetrics(num_items=64, num_strata=8, entropy_samples=10_000)
    trainer = fit(tmp_path, mixture_model(), mixture_data(), [risk], max_steps=30, val_every=15)
    logged = _logged(tmp_path)
    for name in BASE + KNOWN:
        assert {f"risk/{name}", f"risk/{name}_se"} <= logged, name
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert m["risk/excess"] == pytest.approx(m["risk/approximation"] + m["risk/estimation"], abs=1e-5)
    assert m["risk/estimation_paired"] == pytest.approx(m["risk/vlb_heldout"] - m["risk/vlb_train"], abs=1e-5)
    assert m["risk/estimation_variance_ratio"] > 1


@pytest.mark.parametrize("ema_first", [True, False])
def test_risk_uses_the_ema_weights(tmp_path, ema_first):
    class RawWeights(Callback):
        def on_validation_end(self, trainer, pl_module):  # after every epoch-end hook: the raw weights are back
            self.state = copy.deepcopy(pl_module.state_dict())

    L.seed_everything(0)
    model, risk, ema, raw = mixture_model(), RiskMetrics(num_items=32, num_strata=4), EMAWeightAveraging(decay=0.5), RawWeights()
    trainer = fit(tmp_path, model, mixture_data(), ([ema, risk] if ema_first else [risk, ema]) + [raw], max_steps=6,
                  val_every=6)
    logged = float(trainer.callback_metrics["risk/vlb_heldout"])
    model.eval()  # after fit the EMA weights are copied into the model, the same ones validation saw at step 6
    assert risk.evaluate(model.denoise)["vlb_heldout"][0] == pytest.approx(logged, rel=1e-5)
    model.load_state_dict(raw.state)
    assert abs(risk.evaluate(model.denoise)["vlb_heldout"][0] - logged) > 1e-3


def test_setup_errors_are_clear(tmp_path):
    data = mixture_data(num_train=16)
    with pytest.raises(ConfigError, match="num_items=64 exceeds the training split"):
        fit(tmp_path, mixture_model(), data, [RiskMetrics(num_items=64)], max_steps=2, val_every=1)
    with pytest.raises(ConfigError, match="max_memory_gb"):
        fit(tmp_path, mixture_model(), data, [RiskMetrics(num_items=8, max_memory_gb=1e-6)], max_steps=2,
            val_every=1)
    with pytest.raises(ConfigError, match="known density"):
        fit(tmp_path, tiny_model(), DigitsDataModule(val_size=64), [DiscrepancyStop()], max_steps=2, val_every=1)

    class NoHeldOut(L.LightningDataModule):
        def train_dataloader(self):
            return torch.utils.data.DataLoader([(torch.zeros(2), 0)])

    for callback in (RiskMetrics(), DiscrepancyStop()):
        name = type(callback).__name__
        with pytest.raises(ConfigError, match=f"{name} needs a ddpm_signrelu data module .*held-out split.*NoHeldOut"):
            fit(tmp_path, mixture_model(), NoHeldOut(), [callback], max_steps=2, val_every=1)


def test_reference_of_flipped_uint8_images_is_the_concatenated_float_set(tmp_path):
    """Under hflip the atoms of D*_n are the stored uint8 training images and their mirror images (never stored):
    the cached D*_n equals D*_n over the explicitly concatenated float64 set, and differs from it without flips."""
    g = torch.Generator().manual_seed(0)
    for i in range(16):
        pixels = torch.randint(0, 256, (6, 5, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=5, val_size=6, hflip=True)
    dm.setup("fit")
    schedule = NoiseSchedule.from_name("linear", 100)
    risk = RiskMetrics(num_items=6, num_strata=4, chunk_size=3)
    risk.prepare(dm, Diffusion(schedule, "x0", DenoisingLoss(), num_levels=256), torch.device("cpu"))
    assert dm.train_data.dtype == torch.uint8 and dm.train_data.shape == (10, 3, 5, 5)
    atoms = dm.train_data.double() / 127.5 - 1
    rows = [int(((atoms.float() - x).abs().flatten(1).amax(1) < 1e-6).nonzero()) for x in risk.train_points.x0[:, 0]]
    assert len(set(rows)) == 6 and risk.train_points.x0.dtype == torch.float32  # training items, served as floats

    def dense(reference):
        return predict(lambda x, t: empirical_bayes_denoiser(x, schedule.alphas_cumprod[t], reference).float(),
                       risk.train_points)

    torch.testing.assert_close(risk.empirical_train, dense(torch.cat([atoms, atoms.flip(-1)])), rtol=0, atol=1e-6)
    assert (risk.empirical_train - dense(atoms)).abs().max() > 0.05


def overfitting_run(tmp_path, callbacks, max_steps=1500):
    """n = 8 points in d = 4: the memoriser's training loss is about a third of the Bayes level ν, and the held-out
    bound of this network worsens steadily after the first few dozen steps."""
    L.seed_everything(0)
    model = DiffusionModel(data_shape=(4,), num_levels=None, network={"name": "mlp", "width": 128, "depth": 3},
                           head={"name": "ratio_atoms"}, num_timesteps=100, clip_denoised=False, lr=1e-3,
                           bound_strata=2)
    data = GaussianMixtureDataModule(shape=[4], num_train=8, val_size=128, num_components=1, scale=0.5)
    risk = RiskMetrics(num_items=8, num_strata=8, entropy_samples=5000)
    return fit(tmp_path, model, data, [risk, *callbacks], max_steps=max_steps, val_every=50)


@pytest.mark.slow
def test_discrepancy_principle_stops_an_overfitting_run(tmp_path):
    stop, report = DiscrepancyStop(tau=1.0, num_items=8, draws_per_item=32, population_samples=4000), StopReport()
    stopped = overfitting_run(tmp_path / "stopped", [stop, report])
    assert report.reason == "discrepancy" and report.step == stop.stopped_step < 1500, report.step
    assert report.value <= float(stopped.callback_metrics["stop/discrepancy_threshold"])
    assert {"stop/step", "stop/value"} <= _logged(tmp_path / "stopped")
    assert "stop/reason: discrepancy" in (tmp_path / "stopped" / "hparams.yaml").read_text()
    overtrained = overfitting_run(tmp_path / "overtrained", [])
    early, late = (float(t.callback_metrics["risk/excess_true"]) for t in (stopped, overtrained))
    assert early < 0.5 * late, (early, late)
    assert float(stopped.callback_metrics["risk/estimation"]) < float(overtrained.callback_metrics["risk/estimation"])


@pytest.mark.parametrize("monitor", ["risk/estimation", "risk/vlb_heldout"])
def test_gap_rise_rule_stops_an_overfitting_run_when_the_rise_exceeds_its_noise(tmp_path, monitor):
    """GapRiseStop stops the overfitting run at the first check where the monitored metric stands more than 2 SE of
    its paired rise above its lowest value so far, and StopReport names it. The logged rise is the value less the
    lowest earlier one, and pairing the checks' items and draws makes its SE smaller than the level's."""
    stop, report = GapRiseStop(monitor=monitor, threshold=2.0, patience=1), StopReport()
    stopped = overfitting_run(tmp_path, [stop, report])
    assert report.reason == "gap_rise" and report.step == stop.stopped_step < 1500, (report.reason, report.step)
    m = {k: float(v) for k, v in stopped.callback_metrics.items()}
    assert m[f"{monitor}_rise"] > 2 * m[f"{monitor}_rise_se"] and m[f"{monitor}_rise_se"] < m[f"{monitor}_se"]
    with open(tmp_path / "metrics.csv") as f:
        values = [float(row[monitor]) for row in csv.DictReader(f) if row.get(monitor)]
    assert values[-1] == pytest.approx(report.value) and len(values) >= 2
    assert m[f"{monitor}_rise"] == pytest.approx(values[-1] - min(values[:-1]), abs=1e-5)
    with pytest.raises(ConfigError, match="threshold > 0 and patience >= 1"):
        GapRiseStop(threshold=0)
    with pytest.raises(ConfigError, match="threshold > 0 and patience >= 1"):
        GapRiseStop(patience=0)
    with pytest.raises(ConfigError, match=r"GapRiseStop monitors one of \['risk/estimation', 'risk/vlb_heldout'\]"):
        GapRiseStop(monitor="risk/approximation")


@pytest.mark.parametrize("patience, stop", [(1, 100), (2, 400), (3, 500)])
def test_gap_rise_patience_counts_consecutive_rises_and_survives_a_resume(patience, stop):
    """Rises of 3, 0.5, 3, 3, 3 SEs at steps 100…500: a rise that falls back below 2 SE restarts the count."""
    class Trainer:
        sanity_checking, should_stop = False, False

    rule, trainer = GapRiseStop(monitor="risk/vlb_heldout", patience=patience), Trainer()
    assert GapRiseStop().patience == 3
    for step, rise in zip((100, 200, 300, 400, 500), (3.0, 0.5, 3.0, 3.0, 3.0)):
        trainer.global_step = step
        trainer.callback_metrics = {"risk/vlb_heldout": torch.tensor(1.0), "risk/vlb_heldout_rise": torch.tensor(rise),
                                    "risk/vlb_heldout_rise_se": torch.tensor(1.0)}
        rule.on_validation_end(trainer, None)
        if step == 300:  # a resume in the middle keeps the count
            state, rule = rule.state_dict(), GapRiseStop(monitor="risk/vlb_heldout", patience=patience)
            rule.load_state_dict(state)
    assert rule.stopped_step == stop and trainer.should_stop


def test_holdout_rule_reports_patience(tmp_path):
    L.seed_everything(0)
    early, report = EarlyStopping(monitor="val/dsm_x0", patience=1, min_delta=10.0), StopReport()
    fit(tmp_path, mixture_model(), mixture_data(), [early, report], max_steps=100, val_every=5)
    assert report.reason == "holdout_patience_exhausted" and report.step == 10 and math.isfinite(report.value)


@pytest.mark.slow
def test_two_ddp_processes_give_the_single_process_numbers(tmp_path):
    """Items sharded over 2 gloo processes and reduced with torchmetrics: the logged values equal a one-process
    evaluation of the final weights (same items, same draws)."""
    L.seed_everything(0)
    model, data = mixture_model(), mixture_data()
    risk = RiskMetrics(num_items=33, num_strata=4, entropy_samples=5000)  # odd: the ranks hold 17 and 16 items
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=4, val_check_interval=4,
                        check_val_every_n_epoch=None, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[risk], num_sanity_val_steps=0, limit_val_batches=1,
                        default_root_dir=tmp_path)
    trainer.fit(model, datamodule=data)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("risk/")}
    single = RiskMetrics(num_items=33, num_strata=4, entropy_samples=5000)
    data.setup("fit")
    single.prepare(data, model.diffusion, torch.device("cpu"))
    model.eval()
    expected = single.evaluate(model.denoise)
    assert len(logged) == sum(1 if se is None else 2 for _, se, _ in expected.values())
    for name, (value, se, _) in expected.items():
        assert logged[f"risk/{name}"] == pytest.approx(value, rel=1e-4, abs=1e-5), name
        if se is not None:
            assert logged[f"risk/{name}_se"] == pytest.approx(se, rel=1e-4, abs=1e-5), name
