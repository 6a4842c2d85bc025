"""train.py and sample.py end to end, and their errors for bad input."""

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

from ddpm_signrelu.cli import relocate_run, sample_main, train_main
from ddpm_signrelu.data import DigitsDataModule
from ddpm_signrelu.io import save_samples, to_uint8

from helpers import wandb_records

ROOT = Path(__file__).resolve().parent.parent


TINY_UNET = {"name": "unet", "channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "groups": 8,
             "head_channels": 16}


def tiny_config(tmp_path: Path, name: str = "digits", data_overrides: dict | None = None, wandb: bool = False,
                **model_overrides) -> Path:
    """A shipped config shrunk to a few seconds: small network, T = 50, 4 steps, small evaluation sets, run folder
    ``tmp_path/run``, CSV logging to ``run/metrics.csv`` (and W&B if ``wandb``)."""
    run = tmp_path / "run"
    config = relocate_run(yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text()), run, wandb, csv=True)
    network = TINY_UNET if config["model"]["network"]["name"] == "unet" else config["model"]["network"]
    config["model"].update({"network": network, "num_timesteps": 50, "bound_strata": 3}, **model_overrides)
    config["data"]["init_args"].update({"batch_size": 32, "val_size": 64}, **(data_overrides or {}))
    if "num_train" in config["data"]["init_args"]:
        config["data"]["init_args"]["num_train"] = 64
    config["trainer"].update({"max_steps": 4, "val_check_interval": 2, "limit_val_batches": 1, "log_every_n_steps": 1,
                              "enable_progress_bar": False})
    for cb in config["trainer"]["callbacks"]:
        if cb["class_path"].endswith("SampleGrid"):
            cb["init_args"].update({"num_samples": 4, "steps": 3})
        if cb["class_path"].endswith("RiskMetrics"):
            cb["init_args"].update({"num_items": 16, "num_strata": 3, "entropy_samples": 2000})
        if cb["class_path"].endswith("DiscrepancyStop"):
            cb["init_args"].update({"num_items": 16, "population_samples": 1000})
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
    _, reference = save_samples(to_uint8(digits.train_data[:50], 17), tmp_path / "reference")
    result = run("sample.py", "--ckpt_path", ckpt, "--num_samples", 5, "--sampler", "ddim", "--steps", 4,
                 "--seed", 3, "--batch_size", 2, "--output", tmp_path / "out", "--reference", reference,
                 "--features", "helpers:PixelFeatures")
    assert result.returncode == 0, result.stderr[-3000:]
    quality = json.loads((tmp_path / "out" / "quality.json").read_text())
    assert quality.keys() == {"fid", "kid", "kid_std"} and quality["fid"] > 0 and math.isfinite(quality["kid"])
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
    for path in sorted((ROOT / "configs").glob("*.yaml")):
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


def train_error(capsys, args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        train_main(args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


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


def test_unknown_config_key_is_named(tmp_path, capsys):
    err = train_error(capsys, ["fit", "--config", str(tiny_config(tmp_path)), "--model.learning_rate", "0.1"])
    assert "learning_rate" in err


def sample_error(capsys, args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        sample_main(args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip()


def test_sample_checkpoint_errors(tmp_path, capsys):
    assert sample_error(capsys, ["--ckpt_path", str(tmp_path / "nope.ckpt")]) == \
        f"error: checkpoint not found: {tmp_path / 'nope.ckpt'}"
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x00not a checkpoint" * 10)
    assert "is corrupt or not a torch file" in sample_error(capsys, ["--ckpt_path", str(corrupt)])
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}}, foreign)
    assert "not a ddpm_signrelu checkpoint" in sample_error(capsys, ["--ckpt_path", str(foreign)])
    assert "num_samples and batch_size must be >= 1" in sample_error(
        capsys, ["--ckpt_path", str(foreign), "--num_samples", "0"])


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_config_builds_its_model_and_data(path, tmp_path, monkeypatch):
    from ddpm_signrelu.cli import DiffusionCLI
    from ddpm_signrelu.data import TensorDataModule
    from ddpm_signrelu.lit import DiffusionModel

    monkeypatch.chdir(tmp_path)
    cli = DiffusionCLI(DiffusionModel, TensorDataModule, subclass_mode_data=True, args=["--config", str(path)],
                       run=False)
    params = sum(p.numel() for p in cli.model.parameters())
    assert tuple(cli.model.data_shape) == tuple(cli.datamodule.data_shape)
    if path.stem == "cifar10_silu_eps":  # Ho et al.'s CIFAR-10 U-Net: 35.7M parameters
        assert round(params / 1e6, 1) == 35.7
    if path.stem == "cifar10":  # the same U-Net; the ratio head adds its atoms and logits
        assert 35.7e6 < params < 36.5e6


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
    assert run_record.project == "ddpm_signrelu" and run_record.display_name == "digits"
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
