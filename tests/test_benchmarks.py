"""The benchmark scripts run, measure what they say, and compare networks of matched size."""

import argparse
import copy
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from benchmarks import activation, empirical_bayes_throughput, risk_overhead, sampling_throughput, train_throughput
from benchmarks.common import OTHER_GROUP, op_profile, peak_bytes
from benchmarks.matched import LUCIDRAINS_LAYOUTS, OURS_LAYOUTS, SETTINGS, candidates
from helpers import needs_peers, peers_expected

MiB = 2**20
ANCHORS = ("diffusers", "denoising_diffusion_pytorch")
needs_anchors = needs_peers(*ANCHORS)


def test_peak_bytes_counts_temporaries_and_frees():
    def work():
        kept = torch.empty(MiB // 4)  # 1 MiB, alive to the end
        temp = torch.empty(MiB // 2)  # 2 MiB, freed before the next allocation
        del temp
        kept.add_(1)
        small = torch.empty(MiB // 8)  # 0.5 MiB
        return small

    assert peak_bytes(work, torch.device("cpu")) == 3 * MiB


def test_peak_bytes_sees_what_backward_allocates():
    w = torch.randn(256, 256, requires_grad=True)
    x = torch.randn(64, 256)

    def step():
        (x @ w).relu().sum().backward()

    # forward: x @ w and its relu (64 KiB each); backward adds w.grad (256 KiB) on top of what is still alive
    assert peak_bytes(step, torch.device("cpu")) >= w.nbytes + 2 * (64 * 256 * 4)
    w.grad = None


def test_op_profile_puts_each_operator_in_its_group():
    w = torch.randn(8, 4, 3, 3, requires_grad=True)
    x, m = torch.randn(2, 4, 16, 16), torch.randn(64, 64)
    opt = torch.optim.SGD([w], lr=0.1)

    def step():
        (torch.nn.functional.conv2d(x, w).exp().sum() + (m @ m).sum()).backward()
        opt.step()

    groups = op_profile(step, torch.device("cpu"))
    assert [g for g, secs in groups.items() if secs > 0] == ["convolution", "matmul, attention", "optimizer",
                                                                 OTHER_GROUP]


@needs_anchors
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_anchors_are_within_ten_percent_of_our_parameters(setting):
    found = candidates(setting)
    ours = found[0].parameters
    assert len(found) == 4 + len(LUCIDRAINS_LAYOUTS[setting]) + len(OURS_LAYOUTS.get(setting, {}))
    for c in found[1:]:
        assert abs(c.parameters / ours - 1) < 0.10, (c.name, c.parameters, ours)


def test_train_throughput_prints_every_network_and_the_head_overhead(capsys):
    train_throughput.main(["--setting", "grey28", "--batch", "2", "--repeats", "1", "--warmup", "0", "--profile"])
    out = capsys.readouterr().out
    table, profile = out.split("where a step's time goes")
    assert re.search(r"ours: SignReLU \+ ratio head +\d+\.\d \( ?\d+\.\d %\)", profile)
    rows = {name: line for line in table.splitlines() for name in ("ours: SignReLU + ratio head", "diffusers")
            if line.startswith(name)}
    assert "1.00" in rows["ours: SignReLU + ratio head"]  # ours against itself
    assert re.search(r"ratio head: [+-]\d+\.\d %", out)
    if peers_expected(*ANCHORS):
        assert "diffusers" in rows and "ours vs denoising-diffusion-pytorch Unet" in out


def test_train_throughput_sweep_is_relative_to_its_first_point(capsys):
    train_throughput.main(["--sweep", "--batches", "2", "4", "--sizes", "8", "--batch", "2", "--repeats", "1",
                           "--warmup", "0"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if re.match(r"\s+\d+\s+\d+\s", line)]
    assert [(r[0], r[1]) for r in rows] == [("2", "28"), ("4", "28"), ("2", "8")]
    assert rows[0][4:6] == ["1.00", "1.00"]


def test_empirical_bayes_throughput_reports_both_dtypes_and_the_size_sweep(capsys):
    empirical_bayes_throughput.main(["--n", "600", "--dim", "16", "--queries", "8", "--chunk_size", "128",
                               "--repeats", "1", "--sizes", "300", "600"])
    out = capsys.readouterr().out
    assert "D*_n float32:" in out and "D*_n float64:" in out
    errors = [float(e) for e in re.findall(r"error (\d\S+)", out)]
    assert len(errors) == 6 and max(errors) < 1e-3
    assert len(re.findall(r"error \S+  float32 +\d+\.\d %  float64 +\d+\.\d %\n", out)) == 6
    assert re.search(r"n =    300 .* 1\.00\n", out)


def test_sampling_throughput_runs_every_sampler(capsys):
    sampling_throughput.main(["--batch", "1", "--repeats", "1", "--ddim_steps", "2", "--ancestral_steps", "3"])
    out = capsys.readouterr().out
    assert re.search(r"ours DDIM-2 .* 1\.00\n", out) and re.search(r"ours ancestral-3 .* 1\.00\n", out)
    if peers_expected(*ANCHORS):
        assert "diffusers DDPMPipeline ancestral-3" in out and "denoising-diffusion-pytorch DDIM-2" in out


@pytest.mark.slow
def test_activation_benchmark_saved_bytes(capsys):
    activation.main(["--shape", "4", "8", "16", "16", "--repeats", "1"])
    out = capsys.readouterr().out
    for name in ("SignReLU (autograd function)", "SignReLU (fused, torch.compile)"):
        row = next(line for line in out.splitlines() if line.startswith(name))
        assert row.split()[-2:] == ["0.0", "1.00"]  # 32 KiB saved, as SiLU
    assert "composed tensor ops" in out


def test_risk_overhead_times_every_component_at_a_config(capsys):
    risk_overhead.main(["--steps", "1", "--val_batches", "1", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "digits.yaml: 1500 steps, a validation check every 500" in out
    assert re.search(r"\(1 of \d+ batches timed\)", out)
    overheads = [float(v) for v in re.findall(r"overhead +(\d+\.\d+) %", out)]
    assert len(overheads) == 2 and all(0 < v < 100 for v in overheads)  # RiskMetrics, then TrajectoryStatistics
    assert "a snapshot every 10 steps, 32 items, 150 iterates in the window" in out


def tiny_checkpoint(path, **model):
    from ddpm_signrelu.lit import DiffusionModel
    from helpers import synthetic_checkpoint

    torch.manual_seed(0)
    return synthetic_checkpoint(DiffusionModel(num_timesteps=50, bound_strata=3, **model), path)


@needs_peers("ot")
def test_sampler_quality_measures_each_row_once_and_resumes(tmp_path, capsys):
    """Rows of both data sets are appended as measured; a second run measures nothing again and prints the tables."""
    from benchmarks import sampler_quality

    digits = tiny_checkpoint(tmp_path / "digits.ckpt", network={"name": "unet", "channels": 8, "channel_mult": [1],
                                                                 "num_res_blocks": 1, "groups": 4, "head_channels": 8})
    mixture = tiny_checkpoint(tmp_path / "gmm.ckpt", data_shape=(2,), num_levels=None, clip_denoised=False,
                              network={"name": "mlp", "width": 16, "depth": 1})
    args = ["--ckpt_path", str(digits), "--gmm_ckpt_path", str(mixture), "--samplers", "dpmpp_2m", "heun",
            "--nfe", "5", "1", "--num_samples", "40", "--out", str(tmp_path / "rows.jsonl")]
    sampler_quality.main(args)
    rows = sampler_quality.read_rows(tmp_path / "rows.jsonl")
    assert [(r["data"], r["sampler"], r["nfe"]) for r in rows] == [
        ("digits", "dpmpp_2m", 5), ("digits", "heun", 5), ("mixture", "dpmpp_2m", 5), ("mixture", "heun", 5)]
    assert all(0 < r["w2"] and r["cross_entropy"] > 0 for r in rows[2:])  # an untrained model: far from the data
    capsys.readouterr()
    sampler_quality.main(args)
    out = capsys.readouterr().out
    assert len(sampler_quality.read_rows(tmp_path / "rows.jsonl")) == 4 and "| heun | 5 |" in out


def test_analytic_variance_reports_both_bounds_and_samplers(tmp_path, capsys):
    from benchmarks import analytic_variance

    ckpt = tiny_checkpoint(tmp_path / "digits.ckpt", network={"name": "unet", "channels": 8, "channel_mult": [1],
                                                              "num_res_blocks": 1, "groups": 4, "head_channels": 8})
    analytic_variance.main(["--ckpt_path", str(ckpt), "--items", "32", "--gamma_steps", "10", "--steps", "5",
                            "--num_samples", "30"])
    out = capsys.readouterr().out
    bounds = [float(v) for v in re.findall(r"held-out bound, .*: (\d+\.\d+) ±", out)]
    assert len(bounds) == 2 and bounds[0] != bounds[1]
    assert "| 5 | small |" in out and "| 5 | analytic |" in out


@pytest.mark.slow
@needs_anchors
def test_time_to_quality_takes_turns_resumes_and_writes_the_report(tmp_path, capsys):
    """Two periods of every model on a generated 28×28 set: networks within 10 % of ours in size, each period
    continuing the last (more steps, more training time), nothing measured twice, and the report written."""
    from benchmarks import time_to_quality
    from test_domain import write_data_set

    write_data_set(tmp_path / "data", "FashionMNIST", sizes=(300, 100))
    args = ["--data_root", str(tmp_path / "data"), "--eval_every", "0.01", "--num_samples", "8", "--reference", "64",
            "--val_size", "8", "--out", str(tmp_path / "out"), "--docs", str(tmp_path / "docs"), "--levels", "1e9"]
    time_to_quality.main(args + ["--budget", "0.01"])
    time_to_quality.main(args + ["--budget", "0.02"])  # resumes: period 2 of each model from its period-1 checkpoint
    rows = time_to_quality.read_rows(tmp_path / "out" / "rows.jsonl")
    assert [(r["model"], r["period"]) for r in rows] == [("real held-out", 0)] + [
        (m, p) for p in (1, 2) for m in time_to_quality.MODELS]
    ours = rows[1]["parameters"]
    for first, second in zip(rows[1:5], rows[5:]):
        assert abs(first["parameters"] / ours - 1) < 0.1
        assert second["step"] > first["step"] >= 1 and second["train_seconds"] > first["train_seconds"] >= 0.6
        assert second["fid"] > 0 and 0 <= second["precision"] <= 1 and second["bpd"] > 0
    capsys.readouterr()
    time_to_quality.main(args + ["--budget", "0.02"])  # nothing left to measure
    assert len(time_to_quality.read_rows(tmp_path / "out" / "rows.jsonl")) == 9
    doc = (tmp_path / "docs" / "fashion_mnist.md").read_text()
    assert doc.count(time_to_quality.begin("out")) == 1 and "| 1e+09 | " in doc
    hours = (sum(r["train_seconds"] for r in rows[5:]) + sum(r.get("eval_seconds", 0) for r in rows)) / 3600
    assert f"Study time: {hours:.2f} hours of training and evaluation over 4 runs." in doc
    assert (tmp_path / "docs" / "fashion_mnist_out.png").is_file()
    assert (tmp_path / "docs" / "fashion_mnist_out_ours.png").is_file()
    time_to_quality.main(args + ["--budget", "0.01", "--models", *time_to_quality.LEVERS])  # one period of each lever
    levers = time_to_quality.read_rows(tmp_path / "out" / "rows.jsonl")[9:]
    assert [(r["model"], r["period"]) for r in levers] == [(m, 1) for m in time_to_quality.LEVERS]
    assert all(r["step"] >= 1 and r["fid"] > 0 for r in levers)
    resized = {r["model"] for r in levers if r["parameters"] != ours}  # a shared read-out B, 3x3 read-outs
    assert resized == {"ours_residual_atoms", "ours_residual_eps_atoms", "ours_residual_eps_k3"}
    doc = (tmp_path / "docs" / "fashion_mnist.md").read_text()
    assert all(f"| {m} / best anchor |" in doc and f"| {m} | " in doc for m in ["ours", *time_to_quality.LEVERS])


@pytest.mark.slow
@needs_anchors
def test_time_to_quality_factorial_quick_diagnoses_compares_at_equal_steps_and_resumes(tmp_path, capsys):
    """--quick over the factorial and diffusers, 2 seeds: an initial diagnosis and two 2-step periods of every run,
    the seeds' runs distinct, the report's equal-step, factor, loss-per-log-SNR and inside tables written, and a
    rerun that trains nothing."""
    from benchmarks import network_diagnosis
    from benchmarks import time_to_quality as ttq
    from test_domain import write_data_set

    write_data_set(tmp_path / "data", "FashionMNIST", sizes=(300, 100))
    models = [*ttq.FACTORIAL.values(), "diffusers"]
    args = ["--quick", "--data_root", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--docs",
            str(tmp_path / "docs"), "--levels", "1e9", "--models", *models]
    ttq.main(args)
    rows = ttq.read_rows(tmp_path / "out" / "rows.jsonl")
    runs = [(m, s) for m in models for s in (0, 1)]
    assert [(r["model"], r["seed"], r["period"]) for r in rows[1:]] == [(*run, p) for p in (0, 1, 2) for run in runs]
    for r in rows[1:]:
        assert r["step"] == 2 * r["period"] and len(r["loss_by_t"]["loss"]) == 8
        diag = r["diag"]
        assert 0 < min(diag["below_0"]) and max(diag["below_minus_1"]) < max(diag["below_0"]) < 1
        grads = diag["grad_norms"]
        assert grads["total"] > 0 and (r["model"] == "diffusers" or grads["total"] > grads["head"] > 0)
        ratio = r["model"] in ("ours", "silu_ratio_v")
        assert ("effective_atoms" in diag) == ratio
        if ratio:
            assert all(1 <= a <= 8 for a in diag["effective_atoms"]) and 1 <= min(diag["f2_min"]) <= 8
        if r["period"] == 0 and ratio:  # zero-initialised logits: the uniform mixture
            assert diag["effective_atoms"] == pytest.approx([8.0] * 4) and diag["f2_max"] == pytest.approx([8.0] * 4)
    first = {(r["model"], r["seed"]): r for r in rows if r.get("period") == 1}
    assert all(first[m, 0]["fid"] != first[m, 1]["fid"] for m in models)  # the seed moves the run
    assert len({first[m, 0]["loss_by_t"]["loss"][0] for m in models}) == len(models)
    out = capsys.readouterr().out
    assert "FID (domain) at equal steps" in out and "| step 2 | step 4 |" in out
    assert "| signrelu / silu, head ratio_v |" in out and "| ratio_v / plain_v, signrelu |" in out
    assert "| ours / ours_silu_eps |" in out and "| diffusers | 4 |" in out
    network_diagnosis.main([str(tmp_path / "out" / "ours_seed1.ckpt"), "--seed", "1"])  # 4 steps from its init
    spread = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert 0.99 < spread["checkpoint"]["spread_cosine_to_init"] <= 1  # the same draw: a mismatched one gives ~0
    assert spread["checkpoint"]["spread_norm"] == pytest.approx(spread["initialisation"]["spread_norm"], rel=0.05)
    with pytest.raises(SystemExit):  # a plain head has no atoms
        network_diagnosis.main([str(tmp_path / "out" / "signrelu_plain_eps.ckpt")])
    ttq.main(args)
    assert len(ttq.read_rows(tmp_path / "out" / "rows.jsonl")) == len(rows)  # nothing trained or measured again
    saved = (tmp_path / "out" / "rows.jsonl").read_text().splitlines()
    (tmp_path / "out" / "rows.jsonl").write_text("\n".join(saved[:-1]) + "\n")  # the last evaluation lost
    ttq.main(args)
    again = ttq.read_rows(tmp_path / "out" / "rows.jsonl")[-1]
    assert again["step"] == rows[-1]["step"] == 4 and again["fid"] == pytest.approx(rows[-1]["fid"])  # not trained on
    assert (tmp_path / "docs" / "fashion_mnist_out.png").is_file()


def test_time_to_quality_levers_change_one_training_choice_of_ours(tmp_path):
    from benchmarks import time_to_quality

    options = argparse.Namespace(data_root=str(tmp_path), val_size=8, num_samples=8)
    ours, _, ours_ema, ours_steps = time_to_quality.build("ours", options)
    changed = {"ours_min_snr": ("loss", "min_snr"), "ours_lr_2e-3": ("lr", 0.002),
               "ours_x0_atoms": ("head", dict(ours.hparams.head, parameterization="x0")),
               "ours_cosine_800": ("lr_schedule", "cosine"), "ours_ema_0.99": (None, None),
               "ours_v_mse": ("loss", "v_mse"), "ours_v_mse_ema_0.99": ("loss", "v_mse"),
               "ours_eps_atoms": ("head", dict(ours.hparams.head, parameterization="eps")),
               "ours_residual_atoms": ("head", dict(ours.hparams.head, atom_form="residual")),
               "ours_residual_eps_atoms": ("head", dict(ours.hparams.head, atom_form="residual", parameterization="eps")),
               "ours_residual_eps_k3": ("head", dict(ours.hparams.head, atom_form="residual", parameterization="eps",
                                                     kernel_size=3))}
    assert set(changed) == set(time_to_quality.LEVERS)
    average = lambda ema: ema._kwargs["avg_fn"](torch.zeros(1), torch.ones(1), 1).item()  # noqa: E731  (1 - decay)
    for name, (key, value) in changed.items():
        model, _, ema, steps = time_to_quality.build(name, options)
        if key is not None:
            assert model.hparams[key] == value != ours.hparams[key]
        assert {k: v for k, v in model.hparams.items() if k != key} == {
            k: v for k, v in ours.hparams.items() if k != key}
        assert model.model.head.parameterization == (value["parameterization"] if key == "head" else "v")
        assert average(ema) == pytest.approx(0.01 if name.endswith("ema_0.99") else average(ours_ema))
        assert steps == (800 if name == "ours_cosine_800" else -1)
    assert average(ours_ema) == pytest.approx(0.005) and ours_steps == -1


def test_atom_spread_parts_the_shared_read_out_from_the_atoms_differences():
    """A shift common to every free atom moves the shared read-out, not the spread (cosine 1 to the start); residual
    atoms start with no spread and B as the shared read-out."""
    from benchmarks.network_diagnosis import atom_spread
    from ddpm_signrelu.nn import RatioAtomHead

    torch.manual_seed(0)
    free = RatioAtomHead(6, 2, 8, num_atoms=4)
    shifted = copy.deepcopy(free)
    with torch.no_grad():
        shifted.atoms.weight += torch.randn(1, 2, 6).expand(4, 2, 6).reshape(8, 6)
    before, after = atom_spread(free), atom_spread(shifted, free)
    assert after["spread_norm"] == pytest.approx(before["spread_norm"])
    assert after["spread_cosine_to_init"] == pytest.approx(1)
    assert after["shared_norm"] > before["shared_norm"] + 1
    residual = RatioAtomHead(6, 2, 8, num_atoms=4, atom_form="residual")
    expected = torch.cat([residual.readout.weight, residual.readout.bias[:, None]], 1).detach().norm()
    assert atom_spread(residual) == {"shared_norm": pytest.approx(float(expected)), "spread_norm": 0.0}


def test_local_reference_calibrates_compares_samples_resumes_and_reports(tmp_path):
    """The convolution-only twins are the configs without attention; the study trains one where its checkpoint is
    missing, calibrates a size per sampler step among the candidates, scores r² per sample and writes the report."""
    from benchmarks import local_reference
    from benchmarks.time_to_quality import build
    from test_domain import write_data_set

    options = argparse.Namespace(data_root=str(tmp_path), val_size=8, num_samples=8)
    ours, silu = build("ours", options)[0], build("ours_silu_eps", options)[0]
    for twin, base in (("ours_conv", ours), ("ours_silu_eps_conv", silu)):
        model = build(twin, options)[0]
        assert model.hparams.network == dict(base.hparams.network, attention_resolutions=[])
        assert {k: v for k, v in model.hparams.items() if k != "network"} == {
            k: v for k, v in base.hparams.items() if k != "network"}
    write_data_set(tmp_path / "data", "FashionMNIST", sizes=(300, 100))
    args = ["--data_root", str(tmp_path / "data"), "--ckpt_dir", str(tmp_path / "ckpt"), "--steps_trained", "2",
            "--models", "ours_conv", "--sizes", "3", "5", "--bank", "8", "--calibration", "1", "--samples", "3",
            "--steps", "3", "--callback_items", "2", "--out", str(tmp_path / "out"), "--docs", str(tmp_path / "docs")]
    local_reference.main(args)
    (row,) = local_reference.read_rows(tmp_path / "out" / "rows.jsonl")
    assert row["step"] == 2 and (tmp_path / "ckpt" / "ours_conv.ckpt").is_file()
    assert len(row["scale"]) == 3 and set(row["scale"].values()) <= {3, 5, 55}
    assert row["r2_q1"] <= row["r2_median"] <= row["r2_q3"] <= 1
    local_reference.main(args)  # nothing left to measure
    assert len(local_reference.read_rows(tmp_path / "out" / "rows.jsonl")) == 1
    doc = (tmp_path / "docs" / "local_reference.md").read_text()
    assert "| `ours_conv` | no | 2 | 8 | 3 |" in doc and (tmp_path / "docs" / "local_reference.png").is_file()
    assert row["callback"]["curves"]["patch_size"][2:] and "`risk/approximation_local`" in doc


def test_the_factorial_crosses_activation_and_head_at_ours_size_and_seeds_move_the_initialisation(tmp_path):
    from benchmarks.time_to_quality import FACTORIAL, build
    from ddpm_signrelu.nn import SignReLU

    options = argparse.Namespace(data_root=str(tmp_path), val_size=8, num_samples=8)
    ours = build("ours", options)[0]
    for (act, head), name in FACTORIAL.items():
        model = build(name, options)[0]
        assert model.hparams.network == dict(ours.hparams.network, activation=act)
        assert {k: v for k, v in model.hparams.items() if k not in ("network", "head")} == {
            k: v for k, v in ours.hparams.items() if k not in ("network", "head")}
        assert type(model.model.head).__name__ == ("RatioAtomHead" if head == "ratio_v" else "PlainHead")
        assert model.model.head.parameterization == head.rpartition("_")[2]
        kinds = {type(m) for m in model.model.backbone.modules() if isinstance(m, (SignReLU, torch.nn.SiLU))}
        assert kinds == {SignReLU if act == "signrelu" else torch.nn.SiLU}
    seed1 = build("ours", options, seed=1)
    assert not torch.equal(seed1[0].model.backbone.input.weight, ours.model.backbone.input.weight)
    assert seed1[1].seed == 1


def test_kendall_and_spearman_of_a_known_ranking_with_bootstrap_intervals():
    from benchmarks.generalization_study import kendall_spearman

    x, y = np.array([1.0, 2, 3, 4, 5, 6]), np.array([1.0, 3, 2, 4, 6, 5])
    c = kendall_spearman(x, y, resamples=200)
    assert c["tau"] == pytest.approx(11 / 15)  # 13 of 15 pairs agree
    assert c["rho"] == pytest.approx(1 - 6 * 4 / (6 * 35))  # 1 - 6 sum(d^2) / (n (n^2 - 1))
    assert c["tau_low"] <= c["tau"] <= c["tau_high"] and c["rho_low"] <= c["rho"] <= c["rho_high"] <= 1
    assert kendall_spearman(x, -y, resamples=50)["tau"] == pytest.approx(-11 / 15)


@pytest.mark.slow
@needs_peers("ot")
def test_generalization_study_quick_runs_resumes_and_reports(tmp_path, capsys):
    """The --quick grid of every task (Fashion-MNIST on a generated set): every run's rows with the trajectory
    statistics and the measures, nothing run twice on a rerun, the correlations and figures written."""
    from benchmarks import generalization_study as study
    from test_domain import write_data_set

    write_data_set(tmp_path / "data", "FashionMNIST", sizes=(300, 100))
    args = ["--quick", "--data_root", str(tmp_path / "data"), "--val_size", "32", "--fid_samples", "16",
            "--reference", "64", "--resamples", "50", "--out", str(tmp_path / "out"), "--docs", str(tmp_path / "docs")]
    study.main(args + ["--max_minutes", "0"])  # a piece of no time starts nothing
    assert "stopped after 0.0 minutes" in capsys.readouterr().out
    study.main(args + ["--tasks", "gmm2"])  # a piece: one task's grid
    assert len(study.read_rows(tmp_path / "out" / "rows.jsonl")) == 8
    study.main(args)  # the rest
    rows = study.read_rows(tmp_path / "out" / "rows.jsonl")
    runs = [(r["task"], r["lr"], r["batch"]) for r in rows]
    assert len(rows) == 2 * 12 and len(set(runs)) == 12 and all(runs.count(k) == 2 for k in runs)
    for r in rows:
        assert r["step"] in (5, 15) and not r.get("diverged")
        assert all(math.isfinite(r[k]) for k in study.STATISTICS + ["risk/estimation", "train/dsm"])
        assert r["topo/num_iterates"] == (5 if r["step"] == 5 else 10)  # every step, a window of 10
        assert r["topo/E_alpha_euclid"] > 0 and r["opt/sum_lr_gradnorm2"] > 0
        assert (r["w2"] > 0 and math.isfinite(r["risk/excess_true"])) if r["task"] != "fashion" else r["fid_domain"] > 0
    assert (rows[0]["lr"], rows[0]["batch"], rows[0]["step"]) == (1e-4, 4, 5)
    capsys.readouterr()
    study.main(args)  # nothing left to run
    assert len(study.read_rows(tmp_path / "out" / "rows.jsonl")) == 24
    doc = (tmp_path / "docs" / "generalization.md").read_text()
    for task in study.TASKS:
        assert f"### {task}" in doc and (tmp_path / "docs" / f"generalization_{task}.png").is_file()
        assert f"](generalization_{task}.png)" in doc  # the figure is shown where its task is discussed
    assert "| `topo/E_alpha_euclid` | `w2` | 4 |" in doc and "| `opt/sum_lr_gradnorm2` | `fid_domain` | 4 |" in doc
    assert doc.count("Best tracker of") == 3 and doc.count("`risk/estimation` against `gap/dsm`: τ =") == 3
    assert doc.count("| step | `gap/dsm` median | share < 0 | `risk/estimation` median | share < 0 |") == 3


def test_generalization_report_offsets_and_stable_correlations():
    """The per-step medians and shares below 0 of the held-out-minus-training measures, and τ over all runs against
    τ over the runs at lr <= 1e-3: a statistic that ranks the stable runs exactly and the unstable ones backwards."""
    from benchmarks import generalization_study as study

    task = study.TASKS["gmm2"]
    rows = []
    for i, lr in enumerate([1e-4, 3e-4, 1e-3] * 3 + [3e-3, 1e-2] * 3):
        stable = lr <= 1e-3
        value = float(i) if stable else -float(i)
        rows.append({"lr": lr, "step": 3000, "w2": value, "risk/excess_true": value, "risk/estimation": value,
                     **{k: float(i) for k in study.STATISTICS}, "gap/dsm": float(i) - 7})
    rows.append({"lr": 1e-2, "step": 3000, "diverged": True})
    offsets = study.offsets(rows, task)
    # gap/dsm -7..7: median 0, 7 of 15 below 0; risk/estimation 0..8 and -9..-14: median 1, 6 of 15 below 0
    assert offsets[-1] == "| 3000 | 0.0000 | 0.47 | 1.0000 | 0.40 |"
    assert offsets[2] == "| 100 | – | – | – | – |"
    lines = study.stable_taus(rows[:-1], task)
    assert lines[0] == "Kendall τ, all 15 runs / the 9 runs at lr ≤ 0.001:"
    # all runs: 36 concordant pairs among the stable, 15 + 54 discordant: τ = -33 / 105
    assert "| `topo/E_alpha_euclid` | -0.31 / 1.00 | -0.31 / 1.00 | -0.31 / 1.00 |" in lines
    assert study.stable_taus(rows[:5], task) == []  # too few runs for a second table


def test_association_measures_on_known_tables():
    """Cramér's V is 1 for a category that determines another and 0 for independent ones; the correlation ratio is
    1 when the category means explain all variation and 0 when the means are equal."""
    from benchmarks.tabular_quality import correlation_ratio, cramers_v

    a = np.array(list("aabbcc") * 10)
    assert cramers_v(a, np.array(list("xxyyzz") * 10)) == pytest.approx(1.0)
    assert cramers_v(np.array(list("ab") * 30), np.array(list("xxyy") * 15)) == pytest.approx(0.0)
    assert correlation_ratio(a, np.array([1.0, 1, 5, 5, 9, 9] * 10)) == pytest.approx(1.0)
    assert correlation_ratio(a, np.array([1.0, 3, 1, 3, 1, 3] * 10)) == pytest.approx(0.0)
    values = np.array([0.0, 2, 1, 3, 2, 4])  # means 1, 2, 3 around 2: between-SS 4 of total-SS 10
    assert correlation_ratio(np.array(list("aabbcc")), values) == pytest.approx(np.sqrt(4 / 10))


def test_credit_default_structure_on_known_rows():
    """Two rows, 10 pairs of consecutive months: 5 equal bills (4 non-zero), 1 payment settling the earlier
    statement, relative bill changes 0 (x4), 0.5, 0.1, 100, 0, 1, 1 (median 0.05); the 5 unequal pairs' scores
    differ. New charges: 100, 0, 0, 0, -100 and 10, 100, 0, -50, 25: 2 of 10 negative; statements above the limits
    (190, 100): 200 and 110 (2 of 12). Within the bounds (no statement above 1.1x the limit, no charges below -1 % of
    it): neither row; with the first row's fifth payment 99, the first (charges -1 >= -1.9, 200 <= 209)."""
    from benchmarks.credit_default_diagnosis import BILLS, PAYMENTS, structure, within_bounds
    from ddpm_signrelu.data.table import TableCodec

    bills = np.array([[100.0, 100, 100, 100, 100, 200], [110, 100, 0, 0, 50, 25]])
    payments = np.array([[100.0, 0, 0, 0, 0, 0], [0.0] * 6])
    table = {"LIMIT_BAL": np.array([190.0, 100]), **{b: bills[:, k] for k, b in enumerate(BILLS)},
             **{p: payments[:, k] for k, p in enumerate(PAYMENTS)}}
    assert within_bounds(table).tolist() == [False, False]  # the first: charges -100; the second: 110 > 1.1 x 100
    assert within_bounds({**table, "PAY_AMT5": np.array([99.0, 0])}).tolist() == [True, False]
    spread = np.random.default_rng(0).uniform(-50, 200, (64, 12))  # a codec with distinct scores for all amounts
    codec = TableCodec.fit({name: spread[:, k] for k, name in enumerate(BILLS + PAYMENTS)}, {})
    figures = structure(table, codec)
    assert figures.pop("score change") > 0  # the mean of 0 and the smallest difference of scores
    bills, payments = figures.pop("bill changes"), figures.pop("payment changes")
    assert bills[0] == 0.5 and payments[0] == 0.9 and sum(bills) == pytest.approx(1) == sum(payments)
    assert bills[-1] == payments[-1] == 0.1  # a change of 100 (log10 2), clipped into the last bin (0.75, 1]
    assert bills[13] == bills[15] == 0.1 and bills[17] == 0.2  # 0.1: [-1, -0.75); 0.5: [-0.5, -0.25); 1, 1: [0, 0.25)
    assert figures == {"bill change": pytest.approx(0.05), "equal bills": 0.5, "equal non-zero bills": 0.4,
                       "paid in full": 0.1, "negative charges": 0.2, "over the limit": pytest.approx(2 / 12)}


def test_a_piece_s_time_limit_counts_the_training_time_its_checkpoints_restore(tmp_path):
    """Lightning's Timer restores the run's training seconds on resume and holds max_time against them: a piece gets
    the most any checkpoint holds on top of its own time (0 without checkpoints or a Timer)."""
    from benchmarks.tabular_quality import trained_seconds
    from ddpm_signrelu.lit import CHECKPOINT_KEY

    assert trained_seconds(tmp_path) == 0
    model = {CHECKPOINT_KEY: {}, "hyper_parameters": {"loss": "x0_mse"}, "state_dict": {"w": torch.zeros(1)}}
    for name, seconds in (("last", 3598.7), ("best", 1200.0)):
        torch.save({**model, "callbacks": {"Timer": {"time_elapsed": {"train": seconds, "validate": 9e9}}}},
                   tmp_path / f"{name}.ckpt")
    torch.save({**model, "callbacks": {"EMAWeightAveraging": {}}}, tmp_path / "on_exception.ckpt")
    assert trained_seconds(tmp_path) == 3598.7


def stub_peers(tmp_path) -> str:
    """A stand-in for the peers' Python: whatever model it is asked for, it "fits" in no time and writes each set as
    the training rows, in their order, amounts shifted by 0.3 (what the rounding of whole-number columns undoes)."""
    stub = tmp_path / "peers_python"
    stub.write_text(f"""#!{sys.executable}
import argparse, csv, json, os, sys
p = argparse.ArgumentParser()
for flag in ("--model", "--train", "--target", "--rows", "--seeds", "--out", "--iterations"):
    p.add_argument(flag)
p.add_argument("--categorical", nargs="+")
args = p.parse_args(sys.argv[2:])  # sys.argv[1]: the worker's path
os.makedirs(args.out, exist_ok=True)
rows = list(csv.reader(open(args.train)))
header, body = rows[0], rows[1:int(args.rows) + 1]
numbers = [i for i, h in enumerate(header) if h not in args.categorical]
for seed in range(int(args.seeds)):
    with open(f"{{args.out}}/samples_{{seed}}.csv", "w", newline="") as f:
        csv.writer(f).writerows([header] + [[str(float(v) + 0.3) if i in numbers else v for i, v in enumerate(r)]
                                            for r in body])
json.dump({{"fit_seconds": 0.5}}, open(f"{{args.out}}/fit.json", "w"))
""")
    stub.chmod(0o755)
    return str(stub)


@pytest.mark.slow
@needs_peers("pandas", "catboost", "sdmetrics")
def test_tabular_quality_quick_trains_scores_resumes_and_reports(tmp_path, capsys):
    """--quick on the Credit Default table: the kinds of run trained (the long run 5x the early-stopped steps, the
    0.3x and 1.5x runs in whole validation intervals, all three without early stopping; the SiLU twin; multinomial
    diffusion; the peers),
    every score finite and in range, a rerun adds nothing, the report and the discriminator's diagnosis written;
    every other model's change parses to the setting it names."""
    from benchmarks import tabular_quality as tq
    from ddpm_signrelu.checkpoints import load_model
    from ddpm_signrelu.cli import build_run
    from helpers import shared_copy

    root = shared_copy("credit-default", tmp_path / "data").parent
    trained = ["ours", "ours_0.3x", "ours_1.5x", "ours_long", "silu_eps", tq.MULTINOMIAL, *tq.PEERS]
    args = ["--quick", "--seeds", "1", "--iterations", "20", "--steps", "5", "--data_root", str(root),
            "--out", str(tmp_path / "out"), "--docs", str(tmp_path / "docs"), "--peers_python", stub_peers(tmp_path),
            "--models", *trained]
    tq.main(args)
    rows = {r["model"]: r for r in tq.read_rows(tmp_path / "out" / "rows.jsonl")}
    assert list(rows) == ["real", *trained]
    for name, r in rows.items():
        assert 0 < r["f1"] <= 1 and 0 <= r["roc_auc"] <= 1 and 0 <= r["ks"] <= 1 and 0 <= r["tv"] <= 1
        assert 0 <= r["association"] <= 1 and 0 <= r["discriminator_auc"] <= 1 and 0 <= r["closer_to_train"] <= 1
        assert 0 < r["sdm_shapes"] <= 1 and 0 < r["sdm_trends"] <= 1 and 0 < r["sdm_score"] <= 1
        assert (r["dcr_median"] == 0) == (name in ("real", *tq.PEERS))  # real rows, and the stub's copies of them
    assert rows["real"]["roc_auc"] > 0.65 and rows["real"]["discriminator_auc"] < 0.7 and rows["real"]["sdm_score"] > 0.9
    for name in tq.PEERS:  # the stub copies training rows, amounts off by 0.3: read back rounded, as the real rows
        assert rows[name]["ks"] == rows["real"]["ks"] and rows[name]["tv"] == rows["real"]["tv"]
    assert rows["ours_long"]["step"] == 5 * rows["ours"]["step"]
    long_run = yaml.safe_load((tmp_path / "out" / "ours_long" / "run.yaml").read_text())["trainer"]["callbacks"]
    assert [c["init_args"]["monitor"] for c in long_run if c["class_path"].endswith("ModelCheckpoint")] == [None]
    assert (rows["ours_0.3x"]["step"], rows["ours_1.5x"]["step"]) == (20, 80)  # 18 and 90 in whole checks of 20
    done = {name: tq.json.loads((tmp_path / "out" / name / "done.json").read_text()) for name in trained[:5]}
    assert all(d["train_seconds"] > 0 for d in done.values())  # each trained in one piece
    hparams = [load_model(done[n]["checkpoint"]).hparams for n in ("ours", "silu_eps")]
    assert [(h.head["name"], h.loss) for h in hparams] == [("ratio_atoms", "x0_mse"), ("plain", "eps_mse")]
    runs = {name: build_run("--config", str(tq.CONFIG), *tq.MODELS[name], "--trainer.logger", "false",
                            "--data.init_args.root", str(root)) for name in tq.MODELS if name not in trained}
    settings = {name: (r.model.hparams.head["name"], r.model.hparams.head.get("num_atoms"), r.model.hparams.loss,
                       r.datamodule.encoding, r.datamodule.relation_share, len(r.datamodule.follows))
                for name, r in runs.items()}
    assert settings == {"ours_ordinal": ("ratio_atoms", 16, "x0_mse", "ordinal", 0.03, 5),
                        "silu_eps_x0": ("plain", None, "x0_mse", "onehot", 0.03, 5),
                        "ours_eps": ("ratio_atoms", 16, "eps_mse", "onehot", 0.03, 5),
                        "ours_plain_codec": ("ratio_atoms", 16, "x0_mse", "onehot", None, 0),
                        "ours_pay_seq": ("ratio_atoms", 16, "x0_mse", "onehot", 0.03, 10),
                        "ours_8_atoms": ("ratio_atoms", 8, "x0_mse", "onehot", 0.03, 5)}
    capsys.readouterr()
    tq.main(args)  # nothing left to run
    assert "training in" not in capsys.readouterr().out
    assert len(tq.read_rows(tmp_path / "out" / "rows.jsonl")) == len(trained) + 1
    doc = (tmp_path / "docs" / "credit_default.md").read_text()
    assert "| ours (1 seeds) | " in doc and "| ours_long (1 seeds) | " in doc
    from benchmarks import credit_default_diagnosis

    diagnosis = ["--quick", "--iterations", "5", "--steps", "5", "--data_root", str(root), "--out",
                 str(tmp_path / "out"), "--docs", str(tmp_path / "docs")]
    credit_default_diagnosis.main(diagnosis)
    doc = (tmp_path / "docs" / "credit_default.md").read_text()
    credit_default_diagnosis.main(diagnosis)  # nothing left to diagnose: the same table
    assert (tmp_path / "docs" / "credit_default.md").read_text() == doc
    assert len(tq.read_rows(tmp_path / "out" / "diagnosis.jsonl")) == len(trained) + 1
    lines = doc.partition(tq.marker("credit_default_diagnosis", str(tmp_path / "out")))[2]
    lines = lines.splitlines()[1:19]
    assert lines[0] == "| | real test rows | " + " | ".join(m for m in tq.REPORT_ORDER if m in rows) + " |"
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| discrim. AUC: one column, largest", "| discrim. AUC: one column, median",
        *(f"| discrim. AUC: {g}" for g in credit_default_diagnosis.GROUPS), "| discrim. AUC: rows within the bounds",
        "| bill change", "| score change", "| equal bills", "| equal non-zero bills", "| paid in full",
        "| negative charges", "| over the limit"]
    assert all(0 <= float(v) <= 1 for line in lines[2:10] for v in line.strip("| ").split(" | ")[2:])
    changes = tq.read_rows(tmp_path / "out" / "diagnosis.jsonl")[0]["bill changes"]  # the real rows'
    assert len(changes) == 21 and sum(changes) == pytest.approx(1) and (tmp_path / "docs" / "out_months.png"
                                                                       ).is_file()


def test_estimation_variance_prints_both_designs_and_their_ratio(capsys, tmp_path):
    """The digits default at initialisation, two item seeds: per seed the estimate before the control variate and
    today's (paired and logged) with their errors, then each one's spread and mean SE over seeds and the ratio of
    those means. (At initialisation the bound's heavy tails leave the two designs level: docs/estimation.md.)"""
    from benchmarks import estimation_variance

    config = str(Path(__file__).resolve().parents[1] / "configs" / "digits.yaml")
    estimation_variance.main(["--config", config, "--seeds", "0", "1", "--num_items", "16", "--num_strata", "4",
                              "--plot", str(tmp_path / "seeds.png")])
    assert (tmp_path / "seeds.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    number = r"[+-]\d\.\d{4} ± \d\.\d{4}"
    assert len(re.findall(rf"^seed \d: before {number}  estimation_paired {number}  estimation {number}", out, re.M)) == 2
    mean_se = {name: float(se) for name, se in re.findall(r"^(\w+): mean [+-]\d\.\d{4}, spread over seeds \d\.\d{4}, "
                                                           r"mean SE (\d\.\d{4})$", out, re.M)}
    ratio = float(re.search(r"SE ratio before / estimation: (\d+\.\d+)", out).group(1))
    assert set(mean_se) == {"before", "estimation_paired", "estimation"} and min(mean_se.values()) > 0
    assert ratio == pytest.approx(mean_se["before"] / mean_se["estimation"], abs=0.02)


def test_risk_validation_quick_writes_the_agreement_and_the_gap_rule(tmp_path):
    """--quick: four small mixture runs and the discrepancy run; the page holds each run's true gap beside both
    estimates, the estimators' bias and Kendall τ, and the gap-rise rule replayed on each run's log."""
    from benchmarks import risk_validation

    risk_validation.main(["--quick", "--out", str(tmp_path / "runs"), "--docs", str(tmp_path)])
    doc = (tmp_path / "risk_validation.md").read_text()
    agreement = doc[doc.index("## Agreement with the true gap"):doc.index("## Stopping when")]
    rows = re.findall(r"^\| (64|512) \| (32|128) \| (-?\d+\.\d{4}) ± (\d+\.\d{4}) \|", agreement, re.M)
    assert len(rows) == 4 and all(float(se) > 0 for *_, se in rows)
    assert re.search(r"^\| control variate \(`risk/estimation`\) \| [+-]\d\.\d{4} \| \d\.\d{4} \| \d\.\d{4} \| -?\d\.\d\d \|$",
                     agreement, re.M)
    stopping = doc[doc.index("## Stopping when the gap rises"):doc.index("## Where the terms sit")]
    cell = r"(\d+) \(\d+\.\d{4}, (\d+\.\d\d)\)"
    rows = re.findall(rf"^\| (?:64|512) \| (?:32|128) \| (?:yes|no) \| \d+ \(\d+\.\d{{4}}\) \| "
                      + r" \| ".join([cell] * 6) + r" \|$", stopping, re.M)
    assert len(rows) == 4 and "vlb_heldout, patience 3: stop" in stopping
    for rules in rows:  # ×best is ≥ 1 at every check; a kept check precedes its stop; patience 3 stops no earlier
        assert all(float(rules[i]) >= 1 for i in range(1, 12, 2))
        assert all(int(rules[i + 2]) <= int(rules[i]) for i in (0, 4, 8)) and int(rules[8]) >= int(rules[4])


PEERS_PYTHON = Path(__file__).resolve().parents[1] / "benchmarks" / ".peers" / "bin" / "python"


@pytest.mark.slow
@pytest.mark.skipif(not PEERS_PYTHON.is_file(), reason="needs the peers' environment: python3.11 -m venv "
                    "benchmarks/.peers && benchmarks/.peers/bin/pip install -r benchmarks/requirements-peers.txt")
@pytest.mark.parametrize("model", ["ctgan", "tvae"])
def test_peer_worker_writes_sets_the_table_reads_back(tmp_path, model):
    """The worker in the peers' environment fits CTGAN / TVAE for one epoch on 500 Credit Default rows and writes
    its sets; they read back through the table's column spec (every label among the declared ones)."""
    from benchmarks.tabular_quality import peer_rows
    from ddpm_signrelu.data import CreditDefaultDataModule
    from ddpm_signrelu.data.table import take, write_csv
    from helpers import shared_copy

    dm = CreditDefaultDataModule(root=str(shared_copy("credit-default", tmp_path / "data").parent))
    write_csv(take(dm.tables()["train"], np.arange(500)), tmp_path / "train.csv", dm.codec.columns)
    categorical = [c.name for c in dm.codec.columns if c.kind == "categorical"]
    subprocess.run([str(PEERS_PYTHON), "benchmarks/peer_worker.py", "--model", model, "--train",
                    str(tmp_path / "train.csv"), "--categorical", *categorical, "--target", dm.target, "--rows", "300",
                    "--seeds", "2", "--iterations", "1", "--out", str(tmp_path / model)], check=True,
                   cwd=PEERS_PYTHON.parents[3])
    fit = json.loads((tmp_path / model / "fit.json").read_text())
    assert fit["model"] == model and fit["fit_seconds"] > 0 and fit["package"].startswith("ctgan ")
    sets = [peer_rows(tmp_path / model, seed, dm.codec) for seed in (0, 1)]
    assert [len(s["AGE"]) for s in sets] == [300, 300] and list(sets[0]) == [c.name for c in dm.codec.columns]
    assert all(np.all(s["AGE"] == np.round(s["AGE"])) for s in sets)  # whole-number columns rounded
    assert not np.array_equal(sets[0]["LIMIT_BAL"], sets[1]["LIMIT_BAL"])  # two seeds, two sets


def test_multinomial_posterior_is_bayes_rule_on_the_transition_matrices_and_draws_follow_it():
    """Multinomial diffusion's pieces: the posterior q(x_s | x_t, x_0) of every label pair equals Bayes' rule on the
    transition matrices Q_s, Q_{t|s} (whose product is Q_t); Gumbel draws follow the probabilities and never pick the
    padding; a small model's loss is finite and its rows are one-hot on every block."""
    from benchmarks.multinomial import Blocks, MultinomialModel, posterior

    blocks, ab_t, ab_s = Blocks([2, 3]), *(torch.tensor([a], dtype=torch.float64) for a in (0.3, 0.6))
    for k in (2, 3):
        q_s, q_ts = (a * torch.eye(k, dtype=torch.float64) + (1 - a) / k for a in (ab_s, ab_t / ab_s))
        assert torch.allclose(q_s @ q_ts, ab_t * torch.eye(k, dtype=torch.float64) + (1 - ab_t) / k)
        for x0 in range(k):
            for xt in range(k):
                onehot = torch.zeros(1, 2, 3, dtype=torch.float64)
                labels_t = onehot.clone()
                onehot[0, k - 2, x0], labels_t[0, k - 2, xt] = 1, 1
                onehot[0, 3 - k, 0] = labels_t[0, 3 - k, 0] = 1  # the other block: any label
                bayes = q_s[x0] * q_ts[:, xt] / (q_s @ q_ts)[x0, xt]
                assert torch.allclose(posterior(blocks, labels_t, onehot, ab_t, ab_s)[0, k - 2, :k], bayes)
    p = torch.tensor([[[0.2, 0.8, 0.0], [0.1, 0.3, 0.6]]]).expand(20000, 2, 3)
    draws = blocks.draw(p, torch.Generator().manual_seed(0))
    assert draws[:, 0, 2].sum() == 0 and torch.allclose(draws.mean(0), p[0], atol=0.01)
    torch.manual_seed(0)
    model = MultinomialModel([2, 3], data_shape=(6,), num_levels=None, network={"name": "mlp", "width": 16,
                             "depth": 1}, head={"name": "ratio_atoms", "num_atoms": 4}, num_timesteps=50,
                             loss="x0_mse")
    x0 = torch.cat([torch.randn(8, 1), blocks.flat(blocks.draw(torch.full((8, 2, 3), 1 / 3) * blocks.mask))], 1)
    loss = model.training_step((x0, torch.arange(8)), 0)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    rows = model.rows(5, seed=0, steps=4)
    assert rows.shape == (5, 6) and torch.equal(blocks.view(rows[:, 1:]).sum(-1), torch.ones(5, 2))


def test_tabular_step_times_the_config_network_and_counts_the_heads_share(capsys):
    """One row per width and head, the config's first (time ratio 1.00); the ratio head's read-outs hold a share of the
    matmuls that grows with its atoms, the plain head none."""
    from benchmarks import tabular_step

    tabular_step.main(["--widths", "20", "--atoms", "4", "2", "--batch", "8", "--repeats", "1"])
    rows = re.findall(r"^\| (20 wide, [\w ]+) \| [\d.]+ \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", capsys.readouterr().out,
                      re.M)
    assert [r[0] for r in rows] == ["20 wide, 4 atoms", "20 wide, 2 atoms", "20 wide, plain head"]
    shares = [float(r[2]) for r in rows]
    assert rows[0][3] == "1.00" and 1 > shares[0] > shares[1] > 0 == shares[2]
    assert float(rows[0][1]) > float(rows[1][1]) > float(rows[2][1]) > 0
