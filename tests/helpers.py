"""Closed-form references shared by tests."""

import importlib.util
import math
import os
import signal
import struct
from pathlib import Path

import torch
import yaml
from lightning.pytorch.callbacks import Callback

from ddpm_signrelu.data import DigitsDataModule
from ddpm_signrelu.errors import DataError
from ddpm_signrelu.lit import CHECKPOINT_KEY

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))
RUN_CONFIGS = [p for p in CONFIGS if "data" in yaml.safe_load(p.read_text())]  # the rest override a run config
OVERRIDES = [p for p in CONFIGS if p not in RUN_CONFIGS]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY_UNET = {"name": "unet", "channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "groups": 8,
             "head_channels": 16}


def shrunk(config: dict) -> dict:
    """A train config (as loaded from YAML) shrunk, in place, to a few seconds: small network, T = 50, 4 steps,
    small evaluation sets and sample grids. The run folder and loggers stay as they are."""
    network = TINY_UNET if config["model"]["network"]["name"] == "unet" else config["model"]["network"]
    config["model"].update({"network": network, "num_timesteps": 50, "bound_strata": 3})
    config["data"]["init_args"].update({"batch_size": 32, "val_size": 64})
    if "num_train" in config["data"]["init_args"]:
        config["data"]["init_args"]["num_train"] = 64
    config["trainer"].update({"max_steps": 4, "val_check_interval": 2, "limit_val_batches": 1, "log_every_n_steps": 1,
                              "enable_progress_bar": False})
    for cb in config["trainer"]["callbacks"]:
        if cb["class_path"].endswith("SampleGrid"):
            cb["init_args"].update({"num_samples": 4, "steps": 3})
        if cb["class_path"].endswith("RiskMetrics"):
            cb["init_args"].update({"num_items": 16, "num_strata": 3, "entropy_samples": 2000})
        if cb["class_path"].endswith("LocalApproximation"):
            cb["init_args"].update({"num_items": 2, "num_strata": 2, "bank_items": 8, "patch_sizes": [3]})
        if cb["class_path"].endswith("DiscrepancyStop"):
            cb["init_args"].update({"num_items": 16, "population_samples": 1000})
    return config


def peers_expected(*modules: str) -> bool:
    """Whether the benchmarks' peer libraries ``modules`` (``benchmarks/requirements.txt``) are to be used: where they
    are installed, and always under CI (``CI`` set), whose command, the README's, installs them: there a missing
    peer fails its tests instead of skipping them unseen."""
    return bool(os.environ.get("CI")) or all(importlib.util.find_spec(m) is not None for m in modules)


def needs_peers(*modules: str):
    """Skip a test that imports the benchmarks' peer libraries ``modules`` where they are not installed (see
    :func:`peers_expected`), naming them and the command that installs them."""
    import pytest

    return pytest.mark.skipif(not peers_expected(*modules),
                              reason=f"needs {', '.join(modules)}: pip install -r benchmarks/requirements.txt")


def shared_copy(name: str, data_dir: Path) -> Path:
    """A writable copy of ``../shared/data/<name>`` at ``data_dir/<name>`` (the test is skipped where it is not)."""
    import pytest
    import shutil

    if not (SHARED_DATA / name).exists():
        pytest.skip(f"{SHARED_DATA / name} is not here")
    shutil.copytree(SHARED_DATA / name, data_dir / name)
    return data_dir / name


def gaussian_bayes_denoiser(schedule, mean: float, std: float):
    """D*(x_t, t) = m + √ᾱ s²/(ᾱ s² + 1 − ᾱ)·(x_t − √ᾱ m) for data N(m, s² I) (theory.md §6.4)."""

    def denoise(x_t, t):
        ab = schedule.at("alphas_cumprod", t, x_t.dim(), x_t.dtype)
        return mean + ab.sqrt() * std**2 / (ab * std**2 + 1 - ab) * (x_t - ab.sqrt() * mean)

    return denoise


def gaussian_entropy(std: float) -> float:
    """H(N(m, s²)) = ½ log(2πe s²) nats."""
    return 0.5 * math.log(2 * math.pi * math.e * std**2)


def gaussian_expected_vlb(schedule, mean: float, std: float) -> float:
    """E_{x0~N(m, s²)} of the VLB (nats/dim) of the chain whose x̂0 is the Bayes denoiser: every term closed-form.

    E‖x0 − D*(x_t)‖² = Var(x0 | x_t) = s²(1 − ᾱ)/(ᾱ s² + 1 − ᾱ); L_0 = ½ log(2πσ_1²) + Var(x0|x_1)/(2σ_1²).
    """
    ab = schedule.alphas_cumprod
    post_var = std**2 * (1 - ab) / (ab * std**2 + 1 - ab)
    var, tilde = schedule.chain_variance, schedule.posterior_variance
    c1 = schedule.posterior_mean_coef1
    mid = 0.5 * (torch.log(var / tilde) - 1 + tilde / var + c1**2 * post_var / var)[1:].sum()
    decoder = 0.5 * math.log(2 * math.pi * var[0]) + post_var[0] / (2 * var[0])
    ab_T = ab[-1]
    prior = 0.5 * (ab_T * (mean**2 + std**2) - ab_T - math.log1p(-ab_T))
    return float(prior + mid + decoder)


class KillAtStep(Callback):
    """Kill the process (SIGKILL: no clean-up, no checkpoint) once training reaches ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class RankMetrics(Callback):
    """Write what each process logged with a name under ``prefixes`` to ``folder/rank<r>_step<s>.yaml`` at the end of
    every validation: the numbers each rank holds, not only rank 0's, which loggers keep."""

    def __init__(self, folder: str, prefixes: list[str]):
        self.folder, self.prefixes = Path(folder), tuple(prefixes)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(self.prefixes)}
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}_step{trainer.global_step}.yaml").write_text(yaml.safe_dump(logged))


def wandb_records(path) -> list:
    """The records (protobuf ``Record``s) of a W&B run's transaction log ``run-<id>.wandb``.

    The log is W&B's LevelDB-style file: a 7-byte header, then 32 KiB blocks of chunks, each with a 7-byte head
    (CRC-32, length, type: 1 whole record, 2 first, 3 middle, 4 last part); a block's last < 7 bytes are padding.
    """
    from wandb.proto import wandb_internal_pb2

    data, pos, block, parts, records = Path(path).read_bytes(), 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            records.append(record)
    return records


class PixelFeatures(torch.nn.Module):
    """A feature extractor for offline tests: the pixels of the first channel, in [0, 1]."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images[:, 0].flatten(1).double() / 255


class RaiseAtStep(Callback):
    """Raise a RuntimeError once training reaches ``step`` (a crash in the middle of a run)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            raise RuntimeError(f"crash at step {trainer.global_step}")


class MissingDigits(DigitsDataModule):
    """Digits whose files are missing: set-up fails as a data module with absent files does."""

    def load(self):
        raise DataError("digits files not found (a test's missing data)")


def synthetic_checkpoint(model, path, global_step: int = 0, **changes) -> Path:
    """Save what ``train.py`` would for ``model`` (weights, hyper-parameters, step) with entries replaced or, given
    None, removed: a checkpoint for the checks that run before any training."""
    checkpoint = {CHECKPOINT_KEY: {"version": "test"}, "global_step": global_step,
                  "hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}
    checkpoint.update(changes)
    torch.save({k: v for k, v in checkpoint.items() if v is not None}, path)
    return Path(path)
