"""train.py and sample.py end to end, and their errors for bad input."""

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from jsonargparse import Namespace

from benchmarks.common import relocate_run
from ddpm_signrelu.cli import analytic_gamma, build_run, sample_main, train_main
from ddpm_signrelu.runs import resume_path
from ddpm_signrelu.data import DigitsDataModule
from ddpm_signrelu.checkpoints import load_model, table_codec
from ddpm_signrelu.diffusion import SAMPLERS, spaced_grid
from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.images import save_samples, to_uint8
from ddpm_signrelu.lit import setting_differences

from helpers import OVERRIDES, RUN_CONFIGS, TINY_UNET, shared_copy, shrunk, synthetic_checkpoint, wandb_records

ROOT = Path(__file__).resolve().parent.parent


def tiny_config(tmp_path: Path, name: str = "digits", data_overrides: dict | None = None, wandb: bool = False,
                **model_overrides) -> Path:
    """A shipped config :func:`~helpers.shrunk` to a few seconds, with run folder ``tmp_path/run`` and a CSV log
    ``run/metrics.csv`` (and W&B if ``wandb``)."""
    config = shrunk(relocate_run(yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text()), tmp_path / "run",
                                 wandb, csv=True))
    config["model"].update(model_overrides)
    config["data"]["init_args"].update(data_overrides or {})
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(script, *args, env: dict | None = None):
    """Run a script of the repository with ``env`` added to the environment (a None value removes a variable);
    tests/ is on the path, for test callbacks named in configs. W&B has no credentials: HOME is a new folder."""
    home = Path(tempfile.mkdtemp())
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "HOME": str(home), "WANDB_API_KEY": None,
           "WANDB_MODE": None, **(env or {})}
    env = {k: v for k, v in env.items() if v is not None}
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env=env)


@pytest.mark.slow
def test_train_then_sample_as_subprocesses(tmp_path):
    result = run("train.py", "fit", "--config", tiny_config(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and (run_dir / "config.yaml").is_file()
    assert (run_dir / "samples" / "step_0000004.png").is_file()
    digits = DigitsDataModule()
    digits.setup("fit")
    _, reference = save_samples(to_uint8(digits.to_unit(digits.train_data[:50]), 17), tmp_path / "reference")
    result = run("sample.py", "--ckpt_path", ckpt, "--num_samples", 5, "--sampler", "ddim", "--steps", 4,
                 "--seed", 3, "--batch_size", 2, "--output", tmp_path / "out", "--reference", reference,
                 "--features", "helpers:PixelFeatures")
    assert result.returncode == 0, result.stderr[-3000:]
    quality = json.loads((tmp_path / "out" / "quality.json").read_text())
    assert quality.keys() == {"fid", "kid", "kid_std", "precision", "recall"} and quality["fid"] > 0 and math.isfinite(quality["kid"])
    result = run("sample.py", "--ckpt_path", ckpt, "--num_samples", 5, "--sampler", "ddim", "--steps", 4,
                 "--seed", 3, "--output", tmp_path / "out2", "--reference", ROOT / "configs" / "digits.yaml",
                 "--features", "helpers:PixelFeatures")
    assert result.returncode == 0, result.stderr[-3000:]
    against_split = json.loads((tmp_path / "out2" / "quality.json").read_text())
    assert math.isfinite(against_split["fid"]) and against_split["fid"] != quality["fid"]  # 1,297 digits, not 50
    images = np.load(tmp_path / "out" / "samples_5x8x8x1.npz")["arr_0"]
    assert images.dtype == np.uint8 and images.shape == (5, 8, 8, 1)
    assert set(np.unique(images).tolist()) <= {round(u * 255 / 16) for u in range(17)}
    assert (tmp_path / "out" / "samples.png").is_file()
    assert "ddim-4" in result.stderr  # the progress bar
    result = run("sample.py", "--ckpt_path", ckpt, "--num_samples", 5, "--sampler", "ddim", "--steps", 4,
                 "--seed", 3, "--batch_size", 2, "--output", tmp_path / "compiled", "--compile")
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "compiled" / "samples_5x8x8x1.npz")["arr_0"], images)


def test_every_shipped_config_logs_the_risk_metrics():
    for path in RUN_CONFIGS:
        callbacks = yaml.safe_load(path.read_text())["trainer"]["callbacks"]
        assert any(cb["class_path"].endswith("RiskMetrics") for cb in callbacks), path.name


@pytest.mark.parametrize("name", ["gmm2d", "gmm64"])
def test_mixture_configs_train(tmp_path, name):
    result = run("train.py", "fit", "--config", tiny_config(tmp_path, name))
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "run" / "metrics.csv") as f:
        header = f.readline()
    for key in ("risk/excess_true", "risk/kernel_ratio_error", "risk/entropy_true", "stop/discrepancy_loss",
                "stop/step"):
        assert key in header, key
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "run" / "risk_curves.csv").is_file()


def test_fashion_mnist_config_trains_on_local_files(tmp_path):
    shared = ROOT.parent / "shared" / "data" / "FashionMNIST"
    if not shared.is_dir():
        pytest.skip(f"{shared} is not here")
    shutil.copytree(shared, tmp_path / "data" / "FashionMNIST")
    config = tiny_config(tmp_path, "fashion_mnist", {"root": str(tmp_path / "data"), "num_workers": 0})
    result = run("train.py", "fit", "--config", config)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "run" / "samples" / "step_0000004.png").is_file()
    with open(tmp_path / "run" / "metrics.csv") as f:
        assert "risk/approximation" in f.readline()


@pytest.mark.parametrize("override", [None, "silu_eps"])
def test_credit_default_config_trains_then_samples_a_table(tmp_path, override):
    """train.py on the Credit Default table (risk metrics and hold-out stopping on), then sample.py writes a CSV with
    the original columns, categories and integer columns; image scoring is refused for it."""
    root = shared_copy("credit-default", tmp_path / "data").parent
    config = tiny_config(tmp_path, "credit_default", {"root": str(root), "val_size": 64, "test_size": 64})
    extra = ["--config", ROOT / "configs" / f"{override}.yaml"] if override else []
    result = run("train.py", "fit", "--config", config, *extra, "--trainer.default_root_dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "run" / "metrics.csv") as f:
        header = f.readline()
    assert "risk/estimation" in header and "risk/vlb_heldout" in header
    assert (tmp_path / "run" / "risk_curves.csv").is_file()
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    result = run("sample.py", "--ckpt_path", ckpt, "--num_samples", 7, "--sampler", "ddim", "--steps", 4,
                 "--output", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "samples.csv" in result.stdout
    with open(tmp_path / "out" / "samples.csv", newline="") as f:
        rows = list(csv.reader(f))
    source = (root / "credit-default" / "UCI_Credit_Card.csv").read_text().splitlines()[0].replace('"', "")
    assert rows[0] == source.split(",")[1:] and len(rows) == 8  # every column but ID, in the file's order
    columns = dict(zip(rows[0], zip(*rows[1:])))
    assert all(v.lstrip("-").isdigit() for v in columns["LIMIT_BAL"] + columns["BILL_AMT1"])
    assert set(columns["EDUCATION"]) <= set("0123456") and set(columns["default.payment.next.month"]) <= {"0", "1"}
    result = run("sample.py", "--ckpt_path", ckpt, "--output", tmp_path / "out2", "--reference", config)
    assert result.returncode == 2 and "--reference scores images" in result.stderr
    if override is None:  # the target in its training share: 22 % of 20 rows, largest remainder -> 4
        target = "default.payment.next.month"
        result = run("sample.py", "--ckpt_path", ckpt, "--num_samples", 20, "--sampler", "ddim", "--steps", 4,
                     "--output", tmp_path / "strat", "--stratify", target, "--oversample", 3)
        assert result.returncode == 0, result.stderr[-3000:]
        with open(tmp_path / "strat" / "samples.csv", newline="") as f:
            labels = [row[target] for row in csv.DictReader(f)]
        counts = table_codec(ckpt).column(target).counts
        assert len(labels) == 20 and labels.count("1") == round(20 * counts[1] / sum(counts)) == 4
        result = run("sample.py", "--ckpt_path", ckpt, "--num_samples", 20, "--sampler", "ddim", "--steps", 4,
                     "--output", tmp_path / "short", "--stratify", target, "--oversample", 1)  # 20 drawn: too few 0s
        assert result.returncode == 2 and "draw more (raise --oversample)" in result.stderr
        assert len((tmp_path / "short" / "samples_drawn.csv").read_text().splitlines()) == 21  # the draw is kept
        result = run("sample.py", "--ckpt_path", ckpt, "--output", tmp_path / "out3", "--stratify", "AGE")
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--stratify takes a categorical" in \
            result.stderr


def train_error(capsys, args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        train_main(args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_a_bad_credit_table_stops_train_py_with_one_line(tmp_path, capsys):
    """A Credit Default file with a column renamed and one with text in a number column: one line each, the fix named."""
    source = shared_copy("credit-default", tmp_path / "data") / "UCI_Credit_Card.csv"
    lines = source.read_text().splitlines()
    config = ["fit", "--config", str(ROOT / "configs" / "credit_default.yaml"), "--trainer.logger",
              "lightning.pytorch.loggers.CSVLogger", "--data.root", str(tmp_path / "data")]
    source.write_text("\n".join([lines[0].replace('"AGE"', '"age"'), *lines[1:]]))
    err = train_error(capsys, config)
    assert err.count("\n") == 1 and "lacks column(s) ['AGE'] that the column spec names" in err
    source.write_text("\n".join([lines[0], lines[1].replace(",24,", ",twenty-four,", 1), *lines[2:]]))
    err = train_error(capsys, config)
    assert "numerical column AGE holds 'twenty-four' on line 2, not a number" in err


@pytest.mark.parametrize("override,message", [
    ({"network": {"name": "unet", "activation": "swish"}}, "error: unknown activation 'swish'"),
    ({"head": {"name": "ratio"}}, "error: unknown head 'ratio'"),
    ({"network": {"name": "unet", "channels": 16, "channel_mult": [1, 2, 2, 2, 2], "groups": 8}},
     "error: image size 8x8 cannot pass the U-Net's 4 downsamplings"),
    ({"network": {"name": "unet", "channels": 20, "groups": 8}}, "not divisible by the GroupNorm groups (8)"),
    ({"num_timesteps": 1}, "error: a diffusion needs T >= 2 steps"),
    ({"compile": {"modes": "max-autotune"}}, "error: unknown torch.compile option(s) ['modes'] in compile; valid: ["),
])
def test_train_config_errors_are_one_line(tmp_path, capsys, override, message):
    err = train_error(capsys, ["fit", "--config", str(tiny_config(tmp_path, **override))])
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("args,message", [
    (["--model.learning_rate", "0.1"], "error: unrecognized arguments: --model.learning_rate 0.1; --help lists the "
                                       "options"),
    (["--data.init_args.batch_sise", "3"],
     "error: Parser key \"data\": Problem with given class_path 'ddpm_signrelu.data.DigitsDataModule': Option "
     "'batch_sise' is not accepted"),
    (["--trainer.precision", "7"],
     "error: Parser key \"trainer.precision\": Expected a typing.Literal[64, 32, 16]; or"),
    (["--model.loss", "nope"],
     "error: Parser key \"model.loss\": Expected a typing.Literal['eps_mse', 'v_mse', 'min_snr', 'x0_mse', 'vlb']. "
     "Got value: nope; --help lists the options"),
])
def test_unknown_keys_and_bad_values_are_named_on_one_line(tmp_path, capsys, args, message):
    err = train_error(capsys, ["fit", "--config", str(tiny_config(tmp_path)), *args])
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err


def sample_error(capsys, args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        sample_main(args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip()


def cli_model(config: Path):
    """The model ``train.py`` builds from ``config``."""
    from ddpm_signrelu.cli import DiffusionCLI
    from ddpm_signrelu.data import TensorDataModule
    from ddpm_signrelu.lit import DiffusionModel

    return DiffusionCLI(DiffusionModel, TensorDataModule, subclass_mode_data=True, args=["--config", str(config)],
                        run=False).model


@pytest.fixture
def resumable(tmp_path):
    """A tiny config and a checkpoint of its model at step 4, as train.py writes them (no training)."""
    config = tiny_config(tmp_path)
    return config, synthetic_checkpoint(cli_model(config), tmp_path / "model.ckpt", global_step=4)


def bad_checkpoints(tmp_path, good: Path) -> list[tuple[Path, str]]:
    """Broken variants of a good checkpoint, each with the message that must name its problem."""
    state = torch.load(good, weights_only=True)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    plain = tmp_path / "plain.ckpt"
    torch.save({"weights": torch.zeros(3)}, plain)
    no_hparams = synthetic_checkpoint(cli_model(tiny_config(tmp_path / "h")), tmp_path / "h.ckpt",
                                      hyper_parameters=None)
    missing = tmp_path / "missing.ckpt"
    torch.save({**state, "state_dict": {k: v for i, (k, v) in enumerate(state["state_dict"].items()) if i}}, missing)
    return [(tmp_path / "nope.ckpt", f"checkpoint not found: {tmp_path / 'nope.ckpt'}"),
            (truncated, f"cannot read checkpoint {truncated}: it is truncated, corrupt or not a torch file"),
            (plain, f"{plain} is not a ddpm_signrelu checkpoint"),
            (no_hparams, f"{no_hparams} has no hyper_parameters: it cannot rebuild the model"),
            (missing, f"{missing} does not fit the model its settings build: weights missing ['model.")]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sample_writes_every_sampler_s_images_as_generate_draws_them(tmp_path, resumable, sampler):
    """sample.py (Trainer.predict) with each sampler and its default grid: the same images as ``generate``."""
    _, good = resumable
    sample_main(["--ckpt_path", str(good), "--num_samples", "3", "--sampler", sampler, "--steps", "4", "--seed", "2",
                 "--output", str(tmp_path / sampler), "--accelerator", "cpu"])
    written = np.load(tmp_path / sampler / "samples_3x8x8x1.npz")["arr_0"]
    expected = to_uint8(load_model(good).generate([2, 3, 4], sampler, 4), 17).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(written, expected)


def test_sample_with_the_analytic_variance(tmp_path, capsys, resumable):
    """--analytic_variance CONFIG: Γ_t estimated on the config's training data at the grid's steps, then the ddpm
    sampler with Analytic-DPM's variance; other samplers are refused."""
    config, good = resumable
    sample_main(["--ckpt_path", str(good), "--num_samples", "3", "--sampler", "ddpm", "--steps", "4", "--seed", "2",
                 "--analytic_variance", str(config), "--output", str(tmp_path / "analytic"), "--accelerator", "cpu"])
    model = load_model(good)
    gamma = analytic_gamma(model, str(config), spaced_grid(model.diffusion.schedule, 4))
    assert gamma.isnan().sum() == model.diffusion.num_timesteps - 4 and (gamma[~gamma.isnan()] > 0).all()
    written = np.load(tmp_path / "analytic" / "samples_3x8x8x1.npz")["arr_0"]
    np.testing.assert_array_equal(written, to_uint8(model.generate([2, 3, 4], "ddpm", 4, gamma=gamma), 17).permute(
        0, 2, 3, 1).numpy())
    assert not np.array_equal(written, to_uint8(model.generate([2, 3, 4], "ddpm", 4), 17).permute(0, 2, 3, 1).numpy())
    capsys.readouterr()  # the progress bars above
    assert sample_error(capsys, ["--ckpt_path", str(good), "--sampler", "ddim", "--analytic_variance", str(config)]) \
        == "error: --analytic_variance applies to --sampler ddpm, not to ddim"


def test_bad_checkpoints_are_one_line_in_train_and_sample(tmp_path, capsys, resumable):
    config, good = resumable
    for path, message in bad_checkpoints(tmp_path, good):
        err = train_error(capsys, ["fit", "--config", str(config), "--ckpt_path", str(path)])
        assert f"error: {message}" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert sample_error(capsys, ["--ckpt_path", str(path), "--output", str(tmp_path / "out")]).startswith(
            f"error: {message}")
    assert not (tmp_path / "run").exists()  # nothing written: no exception checkpoint, no logs


@pytest.mark.parametrize("override,message", [
    ({"num_timesteps": 100}, "num_timesteps is 50 there but 100 here"),
    ({"network": {**TINY_UNET, "channels": 32}}, "network is {'name': 'unet', 'channels': 16,"),
    ({"loss": "x0_mse"}, "loss is eps_mse there but x0_mse here"),
    ({"lr": 0.5}, "lr is 0.001 there but 0.5 here"),  # the restored optimizer state would undo it unsaid
])
def test_resuming_with_other_model_settings_is_refused_with_the_keys_named(tmp_path, capsys, resumable, override,
                                                                         message):
    _, good = resumable
    for command in ("fit", "validate"):
        err = train_error(capsys, [command, "--config", str(tiny_config(tmp_path / "changed", **override)),
                                   "--ckpt_path", str(good)])
        assert f"error: {good} holds a model with other settings: {message}" in err, err
        assert "Traceback" not in err


def test_evaluation_settings_may_differ_from_the_checkpoints(resumable):
    config, good = resumable
    saved = torch.load(good, weights_only=True)["hyper_parameters"]
    changed = {**saved, "bound_strata": 7, "eval_seed": 3, "clip_denoised": False, "compile": True}
    assert setting_differences(saved, changed) == ""
    assert setting_differences(saved, {**changed, "warmup_steps": 1}) == "warmup_steps is 100 there but 1 here"


def test_a_folder_that_holds_a_run_is_not_continued_or_overwritten_by_accident(tmp_path, capsys, resumable):
    config, good = resumable
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    last = folder / "last.ckpt"
    last.write_bytes(good.read_bytes())
    err = train_error(capsys, ["fit", "--config", str(config), "--model.loss", "min_snr"])
    assert f"error: {tmp_path / 'run'} already holds a run (checkpoints up to step 4 in {folder}): resume it with " \
           f"--ckpt_path last, or start a new run in another folder with --trainer.default_root_dir DIR" in err
    err = train_error(capsys, ["fit", "--config", str(config), "--ckpt_path", str(good)])  # another run's checkpoint
    assert f"already holds a run (checkpoints up to step 4 in {folder}): resume it with --ckpt_path last, or start " \
           f"from {good} in another folder with --trainer.default_root_dir DIR" in err
    assert last.read_bytes() == good.read_bytes()


def test_last_is_the_checkpoint_of_highest_step(tmp_path, resumable):
    config, good = resumable
    model, folder = cli_model(config), tmp_path / "checkpoints"
    folder.mkdir()
    trainer = Namespace(default_root_dir=str(tmp_path), callbacks=[Namespace(
        class_path="lightning.pytorch.callbacks.ModelCheckpoint", init_args=Namespace(dirpath=str(folder)))])
    for name, step, age in (("last", 4, 30), ("on_exception", 2, 0), ("best-step=4", 4, 0), ("last-v1", 3, 10)):
        path = synthetic_checkpoint(model, folder / f"{name}.ckpt", global_step=step)
        os.utime(path, (path.stat().st_atime, path.stat().st_mtime - age))  # on_exception.ckpt is the newest
    assert resume_path("last", trainer) == str(folder / "last.ckpt")
    assert resume_path(str(folder / "last-v1.ckpt"), trainer) == str(folder / "last-v1.ckpt")  # one of its own
    synthetic_checkpoint(model, tmp_path / "hpc_ckpt_1.ckpt", global_step=5)  # Lightning's SLURM checkpoint
    assert resume_path("last", trainer) == str(tmp_path / "hpc_ckpt_1.ckpt")
    with pytest.raises(ConfigError, match="--ckpt_path last: no checkpoint to resume under"):
        resume_path("last", Namespace(default_root_dir=str(tmp_path / "new"), callbacks=[]))


@pytest.mark.parametrize("logger,where", [
    ("lightning.pytorch.loggers.CSVLogger", "lightning_logs/version_0/metrics.csv"),
    ("ddpm_signrelu.lit.ResumableCSVLogger", "metrics.csv"),
])
def test_the_logger_can_be_swapped_on_the_command_line(tmp_path, capsys, logger, where):
    config = tiny_config(tmp_path, wandb=True)
    settings = yaml.safe_load(config.read_text())
    settings["trainer"]["logger"] = [lg for lg in settings["trainer"]["logger"] if "Wandb" in lg["class_path"]][0]
    config.write_text(yaml.safe_dump(settings))  # the shipped configs' logging: one W&B logger
    train_main(["fit", "--config", str(config), "--trainer.logger", logger, "--trainer.max_steps", "2"])
    assert [p.relative_to(tmp_path / "run") for p in (tmp_path / "run").rglob("metrics.csv")] == [Path(where)]
    assert not (tmp_path / "run" / "wandb").exists()


@pytest.mark.parametrize("args,message", [
    (["--data.batch_size", "0"], "error: batch_size and val_size must be >= 1, got 0, 64"),
    (["--data.batch_size", "-4"], "error: batch_size and val_size must be >= 1, got -4, 64"),
    (["--data.val_size", "100000"], "error: val_size (100000) must be smaller than the dataset (1797 items)"),
    (["--trainer.max_steps", "-5"], "error: `max_steps` must be a non-negative integer or -1"),
    (["--trainer.val_check_interval", "0"], "error: trainer.val_check_interval must be > 0"),
    (["--trainer.logger", "false"], "error: trainer.logger false leaves the config's LearningRateMonitor nothing to"),
    (["--trainer.devices", "0"], "error: `Trainer(devices='0')` value is not a valid input using cpu accelerator."),
    (["--trainer.callbacks+=ddpm_signrelu.callbacks.RiskMetrics", "--trainer.callbacks.num_items", "1"],
     "error: RiskMetrics needs num_items >= 3"),
    (["--trainer.callbacks+=ddpm_signrelu.callbacks.RiskMetrics", "--trainer.callbacks.reference_items", "1"],
     "error: RiskMetrics needs reference_items >= 2"),
    (["--trainer.callbacks+=ddpm_signrelu.callbacks.RiskMetrics", "--trainer.callbacks.points_per_item", "10"],
     "error: RiskMetrics points_per_item=10 is below one point per column (num_strata + 1 = 17"),
    (["--trainer.callbacks+=ddpm_signrelu.callbacks.RiskMetrics", "--trainer.callbacks.reference_components", "0"],
     "error: RiskMetrics needs reference_items >= 2, reference_rank >= 1, reference_components >= 1"),
    (["--data.class_path", "helpers.MissingDigits"], "error: digits files not found"),
])
def test_bad_data_trainer_and_callback_settings_are_one_line(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    err = train_error(capsys, ["fit", "--config", str(tiny_config(tmp_path, wandb=True)), *args])
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()  # before any work: no checkpoint, log or W&B run


def test_sample_refuses_bad_steps_and_outputs_before_sampling(tmp_path, capsys, resumable):
    _, good = resumable
    assert sample_error(capsys, ["--ckpt_path", str(good), "--steps", "0", "--output", str(tmp_path / "a")]) == \
        "error: sampling steps must be in 1..T = 1..50, got 0"
    a_file = tmp_path / "file"
    a_file.write_text("keep")
    assert sample_error(capsys, ["--ckpt_path", str(good), "--output", str(a_file)]) == \
        f"error: output {a_file} is a file, not a folder; give a folder for the samples"
    assert a_file.read_text() == "keep"
    assert sample_error(capsys, ["--ckpt_path", str(good), "--output", str(a_file / "below")]).startswith(
        f"error: cannot write to output folder {a_file / 'below'}")
    assert sample_error(capsys, ["--ckpt_path", str(good), "--output", "/proc/samples"]).startswith(
        "error: cannot write to output folder /proc/samples")
    assert "num_samples and batch_size must be >= 1" in sample_error(
        capsys, ["--ckpt_path", str(good), "--num_samples", "0"])
    assert sample_error(capsys, ["--ckpt_path", str(good), "--sampler", "ddim", "--eta", "-0.5"]) == \
        "error: eta must be >= 0 (0: deterministic), got -0.5"
    assert sample_error(capsys, ["--ckpt_path", str(good), "--sampler", "dpmpp_2m", "--eta", "1"]) == \
        "error: eta applies to ddim alone, not to dpmpp_2m; leave it unset"
    assert sample_error(capsys, ["--ckpt_path", str(good), "--precision", "bogus", "--output", str(tmp_path / "b")]
                        ).startswith("error: Precision 'bogus' is invalid")


def test_an_override_file_alone_is_refused_with_the_fix(capsys):
    err = train_error(capsys, ["fit", "--config", str(ROOT / "configs" / "silu_eps.yaml")])
    assert err.strip() == (f"error: {ROOT / 'configs' / 'silu_eps.yaml'} name(s) no data: an override file such as "
                           f"configs/silu_eps.yaml goes after a run config, e.g. --config configs/digits.yaml "
                           f"--config {ROOT / 'configs' / 'silu_eps.yaml'}")


@pytest.mark.parametrize("paths", [(p,) for p in RUN_CONFIGS] + [(p, o) for p in RUN_CONFIGS for o in OVERRIDES],
                         ids=lambda paths: "+".join(p.stem for p in paths))
def test_every_config_builds_its_model_and_data(paths, tmp_path, monkeypatch):
    """Each run config alone and followed by each override file, in its run folder runs/<config names>."""
    monkeypatch.chdir(tmp_path)
    if paths[0].stem == "credit_default":  # the table's columns give the data's width
        shared_copy("credit-default", tmp_path / "data")
    cli = build_run(*[arg for p in paths for arg in ("--config", str(p))], "--trainer.logger", "false")
    params = sum(p.numel() for p in cli.model.parameters())
    assert tuple(cli.model.data_shape) == tuple(cli.datamodule.data_shape)
    assert cli.trainer.default_root_dir == "runs/" + "_".join(p.stem for p in paths)
    names = [p.stem for p in paths]
    if names == ["cifar10", "silu_eps"]:  # Ho et al.'s CIFAR-10 U-Net: 35.7M parameters
        assert round(params / 1e6, 1) == 35.7
    if names == ["cifar10"]:  # the same U-Net; the ratio head adds its atoms and logits
        assert 35.7e6 < params < 36.5e6
    if "silu_eps" in names:
        assert cli.model.hparams.network["activation"] == "silu" and cli.model.hparams.head["name"] == "plain"
        base = build_run("--config", str(paths[0]), "--trainer.logger", "false").model.hparams
        assert {k: v for k, v in cli.model.hparams.network.items() if k != "activation"} == \
            {k: v for k, v in base.network.items() if k != "activation"}


@pytest.mark.slow
def test_default_root_dir_moves_everything_a_run_writes(tmp_path):
    config = tiny_config(tmp_path, wandb=True)
    settings = yaml.safe_load(config.read_text())
    settings["trainer"]["logger"] = [lg for lg in settings["trainer"]["logger"] if "Wandb" in lg["class_path"]]
    config.write_text(yaml.safe_dump(settings))  # the shipped configs' logging: W&B alone, no folder named
    other = tmp_path / "other"
    result = run("train.py", "fit", "--config", config, "--trainer.default_root_dir", other, "--model.loss", "min_snr")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "run").exists()
    assert {p.name for p in other.iterdir()} >= {"checkpoints", "config.yaml", "samples", "wandb", "risk_curves.csv"}
    assert torch.load(other / "checkpoints" / "last.ckpt", weights_only=False)["hyper_parameters"]["loss"] == "min_snr"
    assert "Restored" not in result.stderr  # a new run, not a resumed one
    assert "not recommended to provide both args" not in result.stderr  # LightningCLI reads the command line itself


@pytest.mark.slow
def test_wandb_run_offline_without_credentials_holds_config_metrics_samples_and_checkpoint(tmp_path):
    config = tiny_config(tmp_path, "digits", wandb=True)
    result = run("train.py", "fit", "--config", config)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "W&B: no API key" in result.stderr and "logging offline" in result.stderr
    logs = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    records = wandb_records(logs[0])
    run_record = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run_record.project == "ddpm_signrelu" and run_record.display_name == "run"  # the run folder's name
    config_keys = {item.key for r in records if r.WhichOneof("record_type") == "config" for item in r.config.update}
    assert {"config", "lr", "network", "head"} <= config_keys  # the CLI's whole config and the model's
    history = {item.key or "/".join(item.nested_key): item.value_json
               for r in records if r.WhichOneof("record_type") == "history" for item in r.history.item}
    assert {"train/loss", "val/bpd", "risk/vlb_heldout", "risk/estimation_se", "lr-AdamW"} <= history.keys()
    assert history["samples/_type"] == history["risk/curves_plot/_type"] == '"images/separated"'
    assert history["risk/curves/_type"] == '"table-file"'
    images = list((logs[0].parent / "files" / "media" / "images").glob("samples_*.png"))
    assert images
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert any(a.type == "model" and any(m.path == "model.ckpt" for m in a.manifest.contents) for a in artifacts)


def test_local_approximation_is_added_to_a_shipped_config_from_the_command_line():
    """docs/local_reference.md's command: the callback appended to the config's list, its options set after it."""
    run = build_run("--config", str(ROOT / "configs" / "fashion_mnist_small.yaml"), "--trainer.logger", "false",
                    "--trainer.callbacks+=ddpm_signrelu.callbacks.LocalApproximation",
                    "--trainer.callbacks.bank_items", "256")
    (local,) = [cb for cb in run.trainer.callbacks if type(cb).__name__ == "LocalApproximation"]
    assert local.bank_items == 256 and local.num_items == 8
    assert any(type(cb).__name__ == "RiskMetrics" for cb in run.trainer.callbacks)  # the config's own are kept
