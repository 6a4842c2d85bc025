"""benchmarks.gpu_check: ``--dry-run`` runs every part on the CPU and writes sane figures; without CUDA and without
``--dry-run`` it stops with one line."""

import json
import math

import pytest
import torch

from benchmarks import gpu_check
from helpers import needs_peers

NETWORKS = {"ours", "silu_eps", "diffusers"}


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_without_cuda_it_stops_with_one_line_that_points_to_the_dry_run(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stop:
        gpu_check.main(["--out", str(tmp_path / "check.json")])
    message = stop.value.code
    assert isinstance(message, str) and "\n" not in message and "CUDA" in message and "--dry-run" in message
    assert not (tmp_path / "check.json").exists()


def check_training(figures: dict, compiled: bool) -> None:
    assert figures["networks"].keys() == NETWORKS
    ours = figures["networks"]["ours"]["parameters"]
    for row in figures["networks"].values():
        assert all(positive(row[k]) for k in ("ms_per_step", "images_per_s", "peak_mb", "first_step_s", "tflop_per_s"))
        assert abs(row["parameters"] / ours - 1) < 0.1  # matched size
        assert compiled or positive(row["gflop_per_image"])
    assert figures["ratios"].keys() == {"vs_silu_eps", "vs_diffusers"}
    assert all(positive(v) for ratio in figures["ratios"].values() for v in ratio.values())


@pytest.mark.slow
@pytest.mark.timeout(900)
@needs_peers("diffusers")
def test_dry_run_measures_every_part(tmp_path, capsys):
    out = tmp_path / "check.json"
    gpu_check.main(["--dry-run", "--out", str(out)])
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["errors"] == {} and r["skipped"] == {} and r["dry_run"] is True
    assert set(gpu_check.PARTS) <= r.keys() and r["seconds"].keys() == set(gpu_check.PARTS)
    assert r["environment"]["torch"] == torch.__version__ and r["environment"]["device"]

    head = r["ratio_head"]
    assert head["features_dtype"] == "bfloat16"  # autocast is on in the backbone ...
    assert head["output_dtype"] == head["head_output_dtype"] == "float32"  # ... and off in the ratio head
    assert 0 < head["output_relative_error"] < 0.05 and 0 < head["x0_max_abs_error"] < 0.05

    check_training(r["train_eager"], compiled=False)
    check_training(r["train_compiled"], compiled=True)
    assert r["train_compiled"]["compile_options"] == {"backend": "aot_eager"}
    assert r["train_compiled"]["compiled_over_eager"].keys() == NETWORKS
    assert all(positive(v) for v in r["train_compiled"]["compiled_over_eager"].values())

    sampling = r["sampling"]
    assert (sampling["sampler"], sampling["steps"]) == ("dpmpp_2m_sde", 20)
    assert sampling["precision"].keys() == {"32-true", "bf16-mixed"}
    assert all(positive(p["images_per_s"]) for p in sampling["precision"].values())

    callbacks = r["callbacks"]
    assert callbacks["max_steps"] == 800_000 and positive(callbacks["step_s"])  # the CIFAR-10 config's schedule
    for part in ("risk", "trajectory"):
        assert positive(callbacks[part]["seconds"]) and positive(callbacks[part]["overhead_percent"])

    ddp = r["ddp"]
    assert (ddp["devices"], ddp["backend"]) == (2, "gloo") and len(ddp["val_loss"]["ddp"]) == 2
    assert ddp["tolerance"] == pytest.approx(gpu_check.DDP_SHARE * ddp["trained_change"])
    assert ddp["agree"] and ddp["relative_difference"] <= ddp["tolerance"]
    assert ddp["val_loss"]["one_process"] == pytest.approx(ddp["val_loss"]["ddp"], rel=1e-3)

    for line in ("ratio head under bf16 autocast", "train eager: ours vs diffusers", "sampling dpmpp_2m_sde-20",
                 "callbacks: RiskMetrics", "ddp: 2 process(es) against 1", "train compiled: ours vs", f"wrote {out}"):
        assert line in printed


def test_a_compile_that_the_time_budget_leaves_no_room_for_is_skipped_and_recorded(tmp_path):
    out = tmp_path / "check.json"
    gpu_check.main(["--dry-run", "--parts", "train_compiled", "--budget", "0", "--out", str(out)])
    r = json.loads(out.read_text())
    assert r["errors"] == {} and r["train_compiled"]["networks"] == {}
    assert {f"train_compiled.{key}" for key in NETWORKS} <= r["skipped"].keys()
    assert all("time budget" in r["skipped"][f"train_compiled.{key}"] for key in NETWORKS)
    assert r["skipped"]["ddp"] == "not asked for (--parts)"
