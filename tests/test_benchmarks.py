"""The benchmark scripts run, measure what they say, and compare networks of matched size."""

import re

import pytest
import torch

from benchmarks import activation, empirical_bayes_throughput, risk_overhead, sampling_throughput, train_throughput
from benchmarks.common import OTHER_GROUP, anchors_missing, op_profile, peak_bytes
from benchmarks.matched import LUCIDRAINS_LAYOUTS, OURS_LAYOUTS, SETTINGS, candidates

MiB = 2**20
needs_anchors = pytest.mark.skipif(bool(anchors_missing()), reason="pip install -r benchmarks/requirements.txt")


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
    if not anchors_missing():
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
    if not anchors_missing():
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
    overhead = float(re.search(r"overhead +(\d+\.\d+) %", out).group(1))
    assert 0 < overhead < 100
