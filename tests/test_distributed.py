"""Lightning DDP through train.py with 2 CPU processes (gloo) against 1 process on the same global batch;
sample.py on 2 processes against 1."""

import csv
import math

import numpy as np
import pytest
import torch
import yaml

from helpers import shared_copy
from test_cli import cli_model, run, tiny_config

from ddpm_signrelu.checkpoints import table_codec


def train(tmp_path, devices):
    config = tiny_config(tmp_path, "digits", {"val_size": 63}, wandb=True)  # odd: shards of 32 and 31 items
    settings = yaml.safe_load(config.read_text())
    settings["model"]["network"]["dropout"] = 0.0
    settings["model"]["warmup_steps"] = 0  # full-size steps: the weights and their average move far from the start
    for cb in settings["trainer"]["callbacks"]:
        if cb["class_path"].endswith("EMAWeightAveraging"):
            cb["init_args"]["decay"] = 0.8  # the average lags the weights by a good part of their movement
        if cb["class_path"].endswith("TrajectoryStatistics"):
            cb["init_args"].update({"every_n_steps": 1, "window": 6, "num_items": 15})  # odd: gap shards of 8 and 7
    settings["trainer"]["callbacks"].append({"class_path": "ddpm_signrelu.callbacks.SampleQuality", "init_args": {
        "num_samples": 9, "steps": 3, "features": "helpers:PixelFeatures", "batch_size": 4, "kid_subset_size": 5}})
    settings["trainer"]["callbacks"].append({"class_path": "helpers.RankMetrics", "init_args": {
        "folder": str(tmp_path / "ranks"), "prefixes": ["topo/", "opt/", "gap/", "hparams/", "train/dsm", "val/dsm"]}})
    settings["trainer"].update({"max_steps": 6, "val_check_interval": 3, "limit_val_batches": None,
                                "accelerator": "cpu", "devices": devices, "strategy": "ddp" if devices > 1 else "auto"})
    config.write_text(yaml.safe_dump(settings))
    result = run("train.py", "fit", "--config", config)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((tmp_path / "run" / "wandb").glob("offline-run-*"))) == 1  # one W&B run per job
    with open(tmp_path / "run" / "metrics.csv") as f:
        logged = {(row["step"], k): float(v) for row in csv.DictReader(f) for k, v in row.items()
                  if v and (k.split("/")[0] in ("val", "risk", "quality", "topo", "opt", "gap", "hparams")
                            or k == "train/dsm")}
    grid = np.load(next((tmp_path / "run" / "samples").glob("step_0000006_*.npz")))["arr_0"]
    start = cli_model(config).state_dict()  # seed_everything: the initial weights of the run
    return torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False), logged, grid, start


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_processes_train_and_log_like_one_on_the_same_global_batch(tmp_path):
    one, one_logged, one_grid, start = train(tmp_path / "one", 1)
    two, two_logged, two_grid, _ = train(tmp_path / "two", 2)
    assert one_grid.shape == (4, 8, 8, 1) and np.array_equal(one_grid, two_grid)  # SampleGrid: 2 samples per rank
    assert one["global_step"] == two["global_step"] == 6
    def distance(a: dict, b: dict) -> float:  # over all floating-point entries
        return math.sqrt(sum((a[n] - b[n]).double().square().sum() for n in a if a[n].is_floating_point()))

    ema, raw = one["state_dict"], one["current_model_state"]
    for key in ("state_dict", "current_model_state"):  # EMA weights, then the raw ones
        assert all(torch.equal(two[key][n], v) for n, v in one[key].items() if not v.is_floating_point())
        # Adam's steps amplify the reduction order's rounding where a gradient is ~ its eps: a few entries differ
        # by a few % of a step, so the distance is taken over all weights, relative to how far they moved
        assert distance(two[key], one[key]) < 0.01 * distance(one[key], start), key
    assert distance(ema, start) > 0.1  # the average moved: one stuck at the initial weights is far off
    assert distance(ema, raw) > 0.2 * distance(ema, start)  # and an average equal to the raw weights too
    assert {k for _, k in one_logged} >= {"val/loss", "val/bpd", "risk/vlb_heldout", "risk/estimation", "quality/fid",
                                          "quality/kid", "quality/precision", "quality/recall", "train/dsm",
                                          "val/dsm", "gap/dsm", "topo/E_alpha_euclid", "topo/E_alpha_rhoS",
                                          "topo/mag_euclid", "topo/pmag_rhoS", "opt/sum_lr_gradnorm2"}
    assert one_logged.keys() == two_logged.keys()
    for step in (3, 6):  # the trajectory statistics: computed once, the same numbers on every rank
        ranks = [yaml.safe_load((tmp_path / "two" / "ranks" / f"rank{r}_step{step}.yaml").read_text()) for r in (0, 1)]
        assert set(ranks[0]) >= {f"topo/{s}_{m}" for s in ("E_alpha", "mag", "pmag") for m in ("euclid", "rhoS")} | {
            "topo/num_iterates", "opt/sum_lr_gradnorm2", "gap/dsm", "train/dsm", "val/dsm", "hparams/lr",
            "hparams/batch_size"}
        assert ranks[0] == ranks[1]
    for key, value in one_logged.items():
        assert two_logged[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    sampled = {}
    for devices in (1, 2):  # 5 seeds in batches of 2: shares of 3 and 2
        out = tmp_path / f"samples{devices}"
        result = run("sample.py", "--ckpt_path", tmp_path / "one" / "run" / "checkpoints" / "last.ckpt",
                     "--num_samples", 5, "--sampler", "ddpm", "--steps", 6, "--batch_size", 2, "--seed", 7,
                     "--accelerator", "cpu", "--devices", devices, "--output", out)
        assert result.returncode == 0, result.stderr[-3000:]
        sampled[devices] = np.load(out / "samples_5x8x8x1.npz")["arr_0"]
    assert np.array_equal(sampled[1], sampled[2]) and len(np.unique(sampled[1].reshape(5, -1), axis=0)) == 5


def train_table(tmp_path, devices, root):
    config = tiny_config(tmp_path, "credit_default", {"root": str(root), "val_size": 63, "test_size": 64})
    settings = yaml.safe_load(config.read_text())
    settings["model"]["warmup_steps"] = 0
    settings["trainer"].update({"max_steps": 6, "val_check_interval": 3, "limit_val_batches": None,
                                "accelerator": "cpu", "devices": devices, "strategy": "ddp" if devices > 1 else "auto"})
    config.write_text(yaml.safe_dump(settings))
    result = run("train.py", "fit", "--config", config)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "run" / "metrics.csv") as f:
        logged = {(row["step"], k): float(v) for row in csv.DictReader(f) for k, v in row.items()
                  if v and k.split("/")[0] in ("val", "risk")}
    return tmp_path / "run" / "checkpoints" / "last.ckpt", logged


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_processes_train_and_sample_the_credit_table_like_one(tmp_path):
    """The tabular path under DDP: each process reads the CSV and fits the same codec, the held-out rows are sharded
    and reduced (the risk and validation numbers of one process), and sample.py on 2 processes writes the CSV of 1."""
    root = shared_copy("credit-default", tmp_path / "data").parent
    (one, one_logged), (two, two_logged) = (train_table(tmp_path / str(d), d, root) for d in (1, 2))
    assert torch.load(one, weights_only=False)["global_step"] == torch.load(two, weights_only=False)["global_step"] == 6
    codecs = [table_codec(p).state_dict() for p in (one, two)]
    assert codecs[0]["columns"] == codecs[1]["columns"] and len(codecs[0]["columns"]) == 24
    assert torch.equal(codecs[0]["quantiles"], codecs[1]["quantiles"])
    assert {k for _, k in one_logged} >= {"val/bpd", "risk/vlb_heldout", "risk/estimation", "risk/approximation"}
    assert one_logged.keys() == two_logged.keys()
    for key, value in one_logged.items():
        assert two_logged[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    tables = {}
    for devices in (1, 2):  # 5 rows in batches of 2: shares of 3 and 2
        out = tmp_path / f"samples{devices}"
        result = run("sample.py", "--ckpt_path", one, "--num_samples", 5, "--sampler", "ddim", "--steps", 4,
                     "--batch_size", 2, "--seed", 7, "--accelerator", "cpu", "--devices", devices, "--output", out)
        assert result.returncode == 0, result.stderr[-3000:]
        tables[devices] = (out / "samples.csv").read_text()
    assert tables[1] == tables[2] and len(tables[1].splitlines()) == 6 and len(set(tables[1].splitlines())) == 6
