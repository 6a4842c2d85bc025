"""LightningModule on the digits: learning, EMA, checkpoint round trip, non-finite stop."""

import math

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint

from ddpm_signrelu.callbacks import SampleGrid
from ddpm_signrelu.data import DigitsDataModule
from ddpm_signrelu.images import to_uint8
from ddpm_signrelu.errors import CheckpointError, ConfigError, NonFiniteLossError
from ddpm_signrelu.checkpoints import load_model
from ddpm_signrelu.lit import DiffusionModel

TINY_UNET = {"name": "unet", "channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "groups": 8,
             "head_channels": 16, "attention_resolutions": [4]}


def tiny_model(**kw):
    return DiffusionModel(data_shape=(1, 8, 8), num_levels=17, network=TINY_UNET, head={"name": "ratio_atoms"},
                          num_timesteps=200, lr=2e-3, warmup_steps=10, bound_strata=4, **kw)


def trainer(tmp_path, max_steps, callbacks=(), **kw):
    return L.Trainer(max_steps=max_steps, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, callbacks=list(callbacks), num_sanity_val_steps=0, **kw)


@pytest.mark.slow
def test_training_lowers_heldout_loss_and_bound(tmp_path):
    L.seed_everything(0)
    data, model = DigitsDataModule(batch_size=64, val_size=128), tiny_model()
    before = trainer(tmp_path, 1).validate(model, datamodule=data, verbose=False)[0]
    trainer(tmp_path, 250, limit_val_batches=0).fit(model, datamodule=data)
    after = trainer(tmp_path, 1).validate(model, datamodule=data, verbose=False)[0]
    assert after["val/loss"] < 0.45 * before["val/loss"], (before, after)
    assert after["val/bpd"] < before["val/bpd"] - 1.0, (before, after)
    assert math.isfinite(after["val/bpd"]) and after["val/bpd"] > 0


def test_checkpoint_round_trip_restores_ema_weights(tmp_path):
    L.seed_everything(0)
    data, model = DigitsDataModule(batch_size=32, val_size=64), tiny_model()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    ema = EMAWeightAveraging(decay=0.5)
    trainer(tmp_path, 6, [ema, ckpt], val_check_interval=3, check_val_every_n_epoch=None,
            limit_val_batches=1).fit(model, datamodule=data)
    loaded = load_model(tmp_path / "ckpt" / "last.ckpt")
    averaged = ema._average_model.module
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([0, 50, 100, 199])
    model.eval()
    torch.testing.assert_close(loaded.denoise(x, t), averaged.denoise(x, t))
    assert TINY_UNET.items() <= loaded.hparams.network.items() and loaded.hparams.num_timesteps == 200
    assert loaded.hparams.head["parameterization"] == "v"  # defaults are stored, not only the given options
    assert torch.equal(loaded.generate([3], "ddim", 5), model.generate([3], "ddim", 5))


def test_compile_runs_the_network_compiled_with_the_same_numbers_names_and_checkpoints(tmp_path):
    """``compile`` with the aot_eager backend traces forward and backward (SignReLU's autograd function included)
    without code generation: the network runs under the compiler, trains and validates as eager does, and its
    checkpoint has the eager parameter names and loads uncompiled unless asked."""
    runs = {}
    for compile in (False, {"backend": "aot_eager"}):
        L.seed_everything(0)
        model, calls = tiny_model(compile=compile), torch.zeros(2)  # network calls, of which compiled

        def count(*_, calls=calls):  # a tensor update: no guard on Python state, so no recompiles
            calls.add_(torch.tensor([1.0, float(torch.compiler.is_compiling())]))

        model.model.head.register_forward_hook(count)
        ckpt = ModelCheckpoint(dirpath=tmp_path / str(bool(compile)), save_last=True)
        fit = trainer(tmp_path, 4, [EMAWeightAveraging(decay=0.5), ckpt], limit_val_batches=1, val_check_interval=4,
                      check_val_every_n_epoch=None)
        fit.fit(model, datamodule=DigitsDataModule(batch_size=32, val_size=64))
        runs[bool(compile)] = dict(fit.callback_metrics), calls, torch.load(ckpt.last_model_path, weights_only=False)
    (eager_metrics, eager_calls, eager_ckpt), (metrics, calls, state) = runs[False], runs[True]
    assert eager_calls[1] == 0 and calls[0] == eager_calls[0] > 0 and calls[1] == calls[0]
    for key in ("train/loss", "val/loss", "val/bpd"):
        torch.testing.assert_close(metrics[key], eager_metrics[key], rtol=1e-4, atol=1e-5)
    assert state["state_dict"].keys() == eager_ckpt["state_dict"].keys()
    for name, value in state["state_dict"].items():
        torch.testing.assert_close(value, eager_ckpt["state_dict"][name], rtol=1e-3, atol=1e-5)
    loaded = load_model(tmp_path / "True" / "last.ckpt")
    assert loaded.compile_options is None and load_model(ckpt.last_model_path, compile=True).compile_options == {}


class NaNAfter(DigitsDataModule):
    """Digits whose batches turn NaN from the third training step on."""

    def train_dataloader(self):
        for step, (x, *keys) in enumerate(super().train_dataloader()):
            yield (x.fill_(float("nan")) if step >= 2 else x), *keys


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    L.seed_everything(0)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1)
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss \(nan\).* at step 2: stopped"):
        trainer(tmp_path, 10, [ckpt], limit_val_batches=0).fit(tiny_model(), datamodule=NaNAfter(batch_size=32))
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_resuming_from_another_models_checkpoint_names_the_difference(tmp_path):
    L.seed_everything(0)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    data = DigitsDataModule(batch_size=32, val_size=64)
    trainer(tmp_path, 2, [ckpt], limit_val_batches=0).fit(tiny_model(), datamodule=data)
    other = DiffusionModel(data_shape=(1, 8, 8), network={**TINY_UNET, "channels": 32}, num_timesteps=200)
    with pytest.raises(CheckpointError, match=r"from another model: network is .*'channels': 16.* but .*'channels': 32"):
        trainer(tmp_path, 4, limit_val_batches=0).fit(other, datamodule=data, ckpt_path=tmp_path / "ckpt" / "last.ckpt")


@pytest.mark.parametrize("schedule,last", [("constant", 2e-3), ("cosine", 0.0)])
def test_lr_warms_up_then_follows_the_schedule(tmp_path, schedule, last):
    L.seed_everything(0)
    model = tiny_model(lr_schedule=schedule)
    fit = trainer(tmp_path, 30, limit_val_batches=0)
    fit.fit(model, datamodule=DigitsDataModule(batch_size=16, val_size=64))
    sched = fit.lr_scheduler_configs[0].scheduler
    assert sched.lr_lambdas[0](4) == pytest.approx(0.5)  # step 5 of a 10-step warm-up
    assert sched.get_last_lr()[0] == pytest.approx(last, abs=1e-6)
    assert sched.lr_lambdas[0](19) == pytest.approx(1.0 if schedule == "constant" else 0.5 * (1 + math.cos(math.pi * 0.45)))


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_with_finite_loss_and_fp32_weights(tmp_path, precision):
    L.seed_everything(0)
    model, data = tiny_model(), DigitsDataModule(batch_size=32, val_size=64)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fit = trainer(tmp_path, 3, [], limit_val_batches=1, val_check_interval=3, check_val_every_n_epoch=None,
                  precision=precision, log_every_n_steps=1)
    fit.fit(model, datamodule=data)
    assert math.isfinite(float(fit.callback_metrics["train/loss"])) and math.isfinite(fit.callback_metrics["val/bpd"])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize("grid_first", [True, False])
def test_sample_grids_use_the_ema_weights_whatever_the_callback_order(tmp_path, grid_first):
    """The grids at a validation check and at the end of training are samples of the averaged weights, whether the
    grid callback is listed before or after the EMA callback."""
    class AveragedSamples(L.Callback):  # listed after the EMA callback: its start hook sees the averaged weights
        def __init__(self):
            self.images = {}

        def on_validation_epoch_start(self, trainer, pl_module):
            self.images[trainer.global_step] = grid_images(pl_module)

    def grid_images(model):
        return to_uint8(model.generate([0, 1, 2], "ddim", 3), 17).permute(0, 2, 3, 1).numpy()

    L.seed_everything(0)
    model, ema, averaged = tiny_model(), EMAWeightAveraging(decay=0.5), AveragedSamples()
    grid = SampleGrid(num_samples=3, steps=3, every_n_val_checks=1)
    callbacks = [grid, ema, averaged] if grid_first else [ema, averaged, grid]
    trainer(tmp_path, 4, callbacks, val_check_interval=2, limit_val_batches=1).fit(
        model, datamodule=DigitsDataModule(batch_size=16, val_size=32))
    folder = tmp_path / "samples"
    np.testing.assert_array_equal(np.load(folder / "step_0000002_3x8x8x1.npz")["arr_0"], averaged.images[2])
    model.eval()  # after fit the averaged weights are the model's; the train-end grid is the last step_0000004
    np.testing.assert_array_equal(np.load(folder / "step_0000004_3x8x8x1.npz")["arr_0"], grid_images(model))
    assert not np.array_equal(averaged.images[2], grid_images(model))


def test_sample_grid_takes_every_sampler_option_and_checks_them_before_training(tmp_path):
    L.seed_everything(0)
    grid = SampleGrid(num_samples=2, sampler="dpmpp_2m_sde", steps=4, spacing="karras")
    trainer(tmp_path, 2, [grid], limit_val_batches=0).fit(tiny_model(), datamodule=DigitsDataModule(batch_size=16,
                                                                                                     val_size=32))
    assert len(list((tmp_path / "samples").glob("step_0000002_2x8x8x1.npz"))) == 1
    bad = SampleGrid(num_samples=2, sampler="heun", eta=0.5)
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="eta applies to ddim alone, not to heun"):
        trainer(tmp_path / "bad", 2, [bad]).fit(model, datamodule=DigitsDataModule(batch_size=16, val_size=32))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # no step was taken
