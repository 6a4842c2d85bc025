"""The first run on a GPU: one command that measures what a GPU user needs to trust the package, prints each figure
as it is measured and writes them all to JSON.

    python -m benchmarks.gpu_check                  # CUDA: configs/cifar10.yaml's network, within 8 minutes
    python -m benchmarks.gpu_check --dry-run        # CPU, tiny sizes: every part, in a few minutes

Parts, in this order:

- ``ratio_head``: ours' network under bf16 autocast against an fp32 run of the same (perturbed) weights: the dtype
  of the backbone's features and of the ratio head's output (float32: the head runs with autocast off), and how far
  apart the two outputs are.
- ``train_eager``: training throughput (images/s) and peak memory of the config's network under bf16 autocast (what
  ``precision: bf16-mixed`` runs), beside its SiLU + ε twin (``configs/silu_eps.yaml``) and diffusers'
  ``UNet2DModel`` in the same layout (``benchmarks/matched.py``), timed in turns on one synthetic batch of the
  config's size with ``benchmarks/train_throughput.py``'s step; ratios are ours over each.
- ``sampling``: the README's sampler, SDE-DPM-Solver++(2M) with 20 steps, at batch 256, fp32 and bf16 autocast.
- ``callbacks``: RiskMetrics' and TrajectoryStatistics' overhead at their defaults, as a share of training wall
  time, on the config's run over synthetic images (``benchmarks/risk_overhead.py``).
- ``ddp``: ``train.py fit`` with Lightning's DDP over every visible GPU against one process, a few steps on the
  same global batch: the held-out loss (fixed draws, reduced over processes) must agree within ``DDP_SHARE`` of
  how far the steps moved it.
- ``train_compiled``: ``train_eager`` with every network compiled in place, as ``--model.compile true`` does;
  last, as compiling is the slowest part: a network is skipped when less than ``COMPILE_RESERVE_S`` of the time
  budget is left. ``compiled_over_eager`` is each network's speed-up.

Every part runs a fixed number of steps. Nothing is downloaded: the images are seeded random 8-bit levels in the
config's shape (:class:`SyntheticImages`). A part that fails is recorded under ``errors`` (the others still run;
the exit status is then 1), one left out under ``skipped`` with the reason. ``--dry-run`` runs every part on the
CPU with a tiny network and compiles with the ``aot_eager`` backend (graph capture, no code generation).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gc
import importlib.metadata
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
import yaml

from benchmarks import risk_overhead
from benchmarks.common import interleaved_medians, machine, relocate_run, seconds
from benchmarks.matched import OURS, batch, diffusers_candidate, ours, ours_candidate
from benchmarks.train_throughput import Trainer
from ddpm_signrelu.data import TensorDataModule

ROOT = Path(__file__).resolve().parents[1]
CONFIG, SILU_EPS = ROOT / "configs" / "cifar10.yaml", ROOT / "configs" / "silu_eps.yaml"
SAMPLER, SAMPLER_STEPS = "dpmpp_2m_sde", 20  # the README's sampling command
GPU_BUDGET_S = 450  # the whole command's, on CUDA: 8 minutes with a margin
COMPILE_RESERVE_S = 120  # what one network's compile (forward and backward) may take; none starts with less left
DDP_SHARE = 0.05  # DDP's held-out loss may differ from one process's by this share of how far the steps moved it


class SyntheticImages(TensorDataModule):
    """Seeded uniform random 8-bit images of ``shape``: ``num_train`` training and ``val_size`` held-out ones, in
    place of a data set that would have to be downloaded (the work per step does not depend on the pixels)."""

    num_levels = 256

    def __init__(self, shape: list[int] | tuple[int, ...] = (3, 32, 32), num_train: int = 50_000,
                 batch_size: int = 128, val_size: int = 10_000, seed: int = 0, num_workers: int = 0,
                 hflip: bool = False):
        super().__init__(batch_size=batch_size, val_size=val_size, seed=seed, num_workers=num_workers, hflip=hflip)
        self.data_shape, self.num_train = tuple(shape), num_train

    def load(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        return torch.randint(0, 256, (self.num_train + self.val_size, *self.data_shape), generator=g,
                             dtype=torch.uint8)


@dataclass(frozen=True)
class Sizes:
    """How big and how long each part is."""

    image: int = 32  # images are 3 x image x image
    network: dict = field(default_factory=dict)  # options over the config's network
    data: dict = field(default_factory=dict)  # SyntheticImages' options over the config's data options
    warmup: int = 3  # training steps per network before timing
    steps: int = 20  # timed training steps per network, in turns
    sample_batch: int = 256
    sample_repeats: int = 3
    callback_steps: int = 20  # timed training steps of the config's run
    val_batches: int = 4  # timed validation batches, scaled to the whole held-out split
    callback_repeats: int = 2  # timed validation checks and evaluations
    risk: dict = field(default_factory=dict)  # RiskMetrics' options over the config's
    trajectory: dict = field(default_factory=dict)  # TrajectoryStatistics' options over its defaults
    ddp_steps: int = 4  # the held-out loss is compared after half of them and after all
    ddp_data: dict = field(default_factory=lambda: {"val_size": 512})
    compile: dict = field(default_factory=dict)  # torch.compile's options


GPU = Sizes()
DRY = Sizes(image=16, network={"channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "groups": 8,
                               "head_channels": 16, "attention_resolutions": [8]},
            data={"num_train": 256, "val_size": 64, "batch_size": 4, "num_workers": 0}, warmup=1, steps=2,
            sample_batch=4, sample_repeats=1, callback_steps=2, val_batches=1, callback_repeats=1,
            risk={"num_items": 8, "num_strata": 3, "reference_items": 64, "reference_rank": 16, "batch_size": 64},
            trajectory={"window": 20, "sketch_dim": 256, "num_items": 8}, ddp_steps=2, ddp_data={"val_size": 16},
            compile={"backend": "aot_eager"})


@dataclass
class Check:
    """What the parts share: sizes, device, a scratch folder, the deadline, and what was measured or left out."""

    sizes: Sizes
    device: torch.device
    folder: Path
    deadline: float
    results: dict = field(default_factory=lambda: {"skipped": {}, "errors": {}, "seconds": {}})

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def skip(self, name: str, reason: str) -> None:
        self.results["skipped"][name] = reason
        print(f"{name}: skipped ({reason})")


def installed(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict:
    cuda = device.type == "cuda"
    return {"device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
            "visible_gpus": torch.cuda.device_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None, "lightning": L.__version__,
            "python": platform.python_version(), "cpu_threads": torch.get_num_threads(),
            "bf16_supported": torch.cuda.is_bf16_supported() if cuda else True,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "diffusers": installed("diffusers"), "triton": installed("triton")}


def config_data(sizes: Sizes, **options) -> dict:
    """The config's data options with SyntheticImages' in place of CIFAR-10's files."""
    data = yaml.safe_load(CONFIG.read_text())["data"]["init_args"]
    data = {k: v for k, v in data.items() if k not in ("root", "download")}
    return {**data, "shape": [3, sizes.image, sizes.image], **sizes.data, **options}


def autocast_bf16(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16)


# ----------------------------------------------------------------------------------------------- ratio head
def ratio_head(check: Check) -> dict:
    """Ours' network on one batch under bf16 autocast and in fp32, on weights moved off their zero initialisation
    (the zero-initialised read-outs would make the output trivially exact)."""
    model = ours("rgb32", size=check.sizes.image, network=check.sizes.network).to(check.device).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g).to(p.device))
    x_t, t, _ = batch(model.data_shape, config_data(check.sizes)["batch_size"], check.device)
    seen = {}
    with torch.no_grad():
        exact, exact_x0 = model.model(x_t, t), model.denoise(x_t, t)
        hook = model.model.head.register_forward_hook(
            lambda module, inputs, out: seen.update(features=inputs[0].dtype, output=out.dtype))
        with autocast_bf16(check.device):
            mixed, mixed_x0 = model.model(x_t, t), model.denoise(x_t, t)
        hook.remove()
    figures = {"features_dtype": str(seen["features"]).removeprefix("torch."),
               "output_dtype": str(mixed.dtype).removeprefix("torch."),
               "head_output_dtype": str(seen["output"]).removeprefix("torch."),
               "output_relative_error": ((mixed - exact).norm() / exact.norm()).item(),
               "x0_max_abs_error": (mixed_x0 - exact_x0).abs().max().item()}
    print(f"ratio head under bf16 autocast: features {figures['features_dtype']}, output {figures['output_dtype']}; "
          f"against fp32: relative error {figures['output_relative_error']:.2e}, x0 off by at most "
          f"{figures['x0_max_abs_error']:.2e}")
    return figures


# ----------------------------------------------------------------------------------------------- training
def networks(sizes: Sizes, compile: dict | None):
    """(key, Candidate), one at a time: ours (the config's network), its SiLU + ε twin and diffusers' twin of ours;
    compiled in place as ``--model.compile`` does where ``compile`` gives torch.compile's options."""
    options, twin = False if compile is None else compile, yaml.safe_load(SILU_EPS.read_text())["model"]
    mine = ours_candidate(OURS, "rgb32", size=sizes.image, network=sizes.network, compile=options)
    mine.module.setup("fit")  # where compile is on, this compiles the network in place
    yield "ours", mine
    silu = ours_candidate("ours' SiLU + eps twin", "rgb32", size=sizes.image, compile=options,
                          **{**twin, "network": {**sizes.network, **twin["network"]}})
    silu.module.setup("fit")
    yield "silu_eps", silu
    anchor = diffusers_candidate(mine.module)
    if compile is not None:
        anchor.module.compile(**compile)
    yield "diffusers", anchor


def train(check: Check, compile: dict | None) -> dict:
    """Each network's step time, images/s and peak memory under bf16 autocast, timed in turns on one synthetic
    batch, and ours over each: ``images_per_s`` above 1 where ours is faster, ``peak_memory`` below 1 where ours
    needs less."""
    sizes, device, mode = check.sizes, check.device, "eager" if compile is None else "compiled"
    size = config_data(sizes)["batch_size"]
    data = batch((3, sizes.image, sizes.image), size, device)
    trainers, figures = {}, {}
    for key, candidate in networks(sizes, compile):
        if compile is not None and check.left() < COMPILE_RESERVE_S:
            check.skip(f"train_compiled.{key}", f"time budget: {check.left():.0f} s left, under the "
                                                f"{COMPILE_RESERVE_S} s a compile may take")
            continue
        trainers[key] = Trainer(candidate, data, device, "bf16", channels_last=False, compile=False)
        first = seconds(trainers[key].step, device)  # compiles here where compiled
        figures[key] = {"name": candidate.name, "parameters": candidate.parameters, "first_step_s": first}
        print(f"train {mode}: {candidate.name}: first step {first:.1f} s{'' if compile is None else ' (compiling)'}")
    times = interleaved_medians({k: tr.step for k, tr in trainers.items()}, device, sizes.steps, sizes.warmup)
    for key, trainer in trainers.items():
        figures[key] |= {"ms_per_step": 1000 * times[key], "images_per_s": size / times[key],
                         "peak_mb": trainer.peak_memory() / 2**20}
        if compile is None:  # counted eager: a compiled step does the same work
            figures[key]["gflop_per_image"] = trainer.flop() / size / 1e9
        row = figures[key]
        print(f"train {mode}: {row['name']}: {row['parameters'] / 1e6:.2f}M parameters, {row['ms_per_step']:.1f} "
              f"ms/step, {row['images_per_s']:.1f} images/s, peak {row['peak_mb']:.1f} MB")
    return {"precision": "bf16 autocast (bf16-mixed)", "batch": size, "networks": figures,
            "ratios": ratios(figures, mode)}


def ratios(figures: dict, mode: str) -> dict:
    """Ours against each other network: its images/s over theirs and its peak memory over theirs."""
    if "ours" not in figures:
        return {}
    mine, found = figures["ours"], {}
    for key, row in figures.items():
        if key != "ours":
            found[f"vs_{key}"] = {"images_per_s": mine["images_per_s"] / row["images_per_s"],
                                  "peak_memory": mine["peak_mb"] / row["peak_mb"]}
            print(f"train {mode}: ours vs {row['name']}: {found[f'vs_{key}']['images_per_s']:.2f}x the images/s, "
                  f"{found[f'vs_{key}']['peak_memory']:.2f}x the peak memory")
    return found


def tflop_per_s(row: dict, gflop_per_image: float) -> float:
    return gflop_per_image * row["images_per_s"] / 1e3


def train_eager(check: Check) -> dict:
    figures = train(check, None)
    for row in figures["networks"].values():
        row["tflop_per_s"] = tflop_per_s(row, row["gflop_per_image"])
        print(f"train eager: {row['name']}: {row['gflop_per_image']:.2f} GFLOP/image, {row['tflop_per_s']:.3f} "
              f"TFLOP/s")
    return figures


def train_compiled(check: Check) -> dict:
    """:func:`train` compiled; each network's speed-up over eager, and its TFLOP/s (eager's FLOP per image: the
    same work)."""
    figures = train(check, check.sizes.compile)
    eager = check.results.get("train_eager", {}).get("networks", {})
    figures["compile_options"] = check.sizes.compile
    figures["compiled_over_eager"] = {}
    for key, row in figures["networks"].items():
        if key in eager:
            row["tflop_per_s"] = tflop_per_s(row, eager[key]["gflop_per_image"])
            speedup = figures["compiled_over_eager"][key] = eager[key]["ms_per_step"] / row["ms_per_step"]
            print(f"train compiled: {row['name']}: {speedup:.2f}x the eager images/s, {row['tflop_per_s']:.3f} "
                  f"TFLOP/s")
    return figures


# ----------------------------------------------------------------------------------------------- sampling
def sampling(check: Check) -> dict:
    """Seconds per batch of the README's sampler on the config's network (untrained: the work per step does not
    depend on the weights), fp32 and under bf16 autocast (``sample.py --precision bf16-mixed``), in turns."""
    sizes = check.sizes
    model = ours("rgb32", size=sizes.image, network=sizes.network).to(check.device).eval()
    seeds = list(range(sizes.sample_batch))

    def chain():
        model.generate(seeds, SAMPLER, SAMPLER_STEPS)

    def chain_bf16():
        with autocast_bf16(check.device):
            chain()

    times = interleaved_medians({"32-true": chain, "bf16-mixed": chain_bf16}, check.device, sizes.sample_repeats)
    figures = {"sampler": SAMPLER, "steps": SAMPLER_STEPS, "batch": sizes.sample_batch, "precision": {}}
    for precision, secs in times.items():
        figures["precision"][precision] = {"seconds_per_batch": secs, "images_per_s": sizes.sample_batch / secs}
        print(f"sampling {SAMPLER}-{SAMPLER_STEPS}, batch {sizes.sample_batch}, {precision}: {secs:.2f} s/batch, "
              f"{sizes.sample_batch / secs:.1f} images/s")
    return figures


# ----------------------------------------------------------------------------------------------- the config's run
def run_config(check: Check, **trainer) -> dict:
    """configs/cifar10.yaml over SyntheticImages of its shape, bf16-mixed on the check's device, with the sizes'
    network, data and RiskMetrics options and ``trainer`` settings on top."""
    sizes, config = check.sizes, yaml.safe_load(CONFIG.read_text())
    config["model"]["network"].update(sizes.network)
    config["data"] = {"class_path": "benchmarks.gpu_check.SyntheticImages", "init_args": config_data(sizes)}
    for callback in config["trainer"]["callbacks"]:
        if callback["class_path"].endswith("RiskMetrics"):
            callback["init_args"] = {**callback.get("init_args", {}), **sizes.risk}
    config["trainer"].update({"precision": "bf16-mixed", "accelerator": check.device.type, "devices": 1,
                              "logger": False, "enable_progress_bar": False, "enable_model_summary": False, **trainer})
    return config


def write_config(config: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def callbacks(check: Check) -> dict:
    """RiskMetrics (the config's) and TrajectoryStatistics (its defaults) timed part by part on the config's run,
    and their cost at the config's schedule as a share of its training wall time."""
    sizes, config = check.sizes, run_config(check)
    config["trainer"]["callbacks"].append({"class_path": "ddpm_signrelu.callbacks.TrajectoryStatistics",
                                           "init_args": sizes.trajectory})
    path = write_config(config, check.folder / "callbacks.yaml")
    figures = risk_overhead.measure(["--config", str(path)], sizes.callback_steps, sizes.val_batches,
                                    sizes.callback_repeats)
    step = figures["step_s"]
    print(f"callbacks: training step (Lightning, bf16-mixed) {1000 * step:.1f} ms, "
          f"{config_data(sizes)['batch_size'] / step:.1f} images/s; validation check {figures['validation_s']:.1f} s")
    for name, part in (("RiskMetrics", figures["risk"]), ("TrajectoryStatistics", figures["trajectory"])):
        print(f"callbacks: {name} {part['seconds']:.1f} s over the config's {figures['max_steps']} steps: "
              f"{part['overhead_percent']:.2f} % of training wall time")
    return figures


# ----------------------------------------------------------------------------------------------- DDP
def ddp(check: Check) -> dict:
    """``train.py fit`` on the config for ``ddp_steps`` steps on one process, then with strategy ddp on every visible
    GPU (2 CPU processes with gloo on a dry run), on the same global batch: the held-out loss (fixed draws, reduced
    over the processes) logged at both checks must differ by less than ``DDP_SHARE`` of how far the steps between
    the checks moved it on one process."""
    cuda = check.device.type == "cuda"
    devices = torch.cuda.device_count() if cuda else 2
    one, many = train_py(check, 1, "auto"), train_py(check, devices, "ddp")
    losses = {"one_process": [one[s, "val/loss"] for s in sorted({s for s, _ in one})],
              "ddp": [many[s, "val/loss"] for s in sorted({s for s, _ in many})]}
    difference = max(abs(b / a - 1) for a, b in zip(losses["one_process"], losses["ddp"], strict=True))
    moved = abs(losses["one_process"][-1] / losses["one_process"][0] - 1)
    last = max(s for s, _ in one)
    figures = {"devices": devices, "strategy": "ddp", "backend": "nccl" if cuda else "gloo",
               "precision": "bf16-mixed", "steps": check.sizes.ddp_steps, "val_loss": losses,
               "relative_difference": difference, "trained_change": moved, "tolerance": DDP_SHARE * moved,
               "agree": difference <= DDP_SHARE * moved,
               "last_check": {k: {"one_process": v, "ddp": many.get((s, k))} for (s, k), v in one.items() if s == last}}
    print(f"ddp: {devices} process(es) against 1, held-out loss {losses['ddp']} against {losses['one_process']}: "
          f"relative difference {difference:.2e}, {DDP_SHARE:.0%} of the {moved:.2e} the steps moved it is "
          f"{figures['tolerance']:.2e}: {'agree' if figures['agree'] else 'DIFFER'}")
    return figures


def train_py(check: Check, devices: int, strategy: str) -> dict:
    """``train.py fit`` on the config with no dropout (it draws a stream per process) and no warm-up (full steps),
    the risk callback its only callback: (step, name) -> the val/* and risk/* values it logged."""
    steps = check.sizes.ddp_steps
    config = run_config(check, devices=devices, strategy=strategy, max_steps=steps, val_check_interval=steps // 2,
                        num_sanity_val_steps=0, log_every_n_steps=1, enable_checkpointing=False)
    trainer, model = config["trainer"], config["model"]
    trainer["callbacks"] = [cb for cb in trainer["callbacks"] if cb["class_path"].endswith("RiskMetrics")]
    model["network"]["dropout"], model["warmup_steps"] = 0.0, 0
    config["data"]["init_args"].update(check.sizes.ddp_data)
    run_dir = check.folder / f"{strategy}{devices}"
    path = write_config(relocate_run(config, run_dir, wandb=False, csv=True), check.folder / f"{run_dir.name}.yaml")
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "fit", "--config", str(path)], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"train.py on {devices} process(es) failed: {result.stderr[-3000:]}")
    with open(run_dir / "metrics.csv") as f:
        return {(int(row["step"]), k): float(v) for row in csv.DictReader(f) for k, v in row.items()
                if v and k.split("/")[0] in ("val", "risk")}


# ----------------------------------------------------------------------------------------------- the command
def run_part(check: Check, name: str, part: Callable[[Check], dict]) -> None:
    """Run one part into the results; a failure is recorded (and its traceback printed), not raised."""
    start = time.perf_counter()
    try:
        check.results[name] = part(check)
    except Exception as err:  # noqa: BLE001  (one part's failure must not lose the others' figures)
        traceback.print_exc()
        check.results["errors"][name] = f"{type(err).__name__}: {' '.join(str(err).split())}"[:2000]
        print(f"{name}: failed ({check.results['errors'][name][:200]})")
    check.results["seconds"][name] = time.perf_counter() - start
    gc.collect()
    if check.device.type == "cuda":
        torch.cuda.empty_cache()


PARTS = {"ratio_head": ratio_head, "train_eager": train_eager, "sampling": sampling, "callbacks": callbacks,
         "ddp": ddp, "train_compiled": train_compiled}  # in the order they run


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="every part on the CPU at tiny sizes")
    p.add_argument("--out", type=Path, help="the JSON file (default: benchmarks/results/gpu_check[_dry_run].json)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="run only these parts")
    p.add_argument("--budget", type=float, help=f"seconds (default: {GPU_BUDGET_S} on CUDA, none on a dry run); no "
                                                f"compile starts with under {COMPILE_RESERVE_S} s of it left")
    args = p.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("benchmarks.gpu_check needs CUDA and finds none here; --dry-run runs every part on the CPU "
                         "at tiny sizes")
    out = args.out or ROOT / "benchmarks" / "results" / f"gpu_check{'_dry_run' if args.dry_run else ''}.json"
    device = torch.device("cpu" if args.dry_run else "cuda")
    sizes = DRY if args.dry_run else GPU
    torch.manual_seed(0)
    start = time.perf_counter()
    print(f"gpu_check{' --dry-run' if args.dry_run else ''}: {machine(device)}")
    with tempfile.TemporaryDirectory() as folder:
        budget = (math.inf if args.dry_run else GPU_BUDGET_S) if args.budget is None else args.budget
        check = Check(sizes, device, Path(folder), start + budget)
        check.results |= {"dry_run": args.dry_run, "environment": environment(device),
                          "sizes": dataclasses.asdict(sizes)}
        for name, part in PARTS.items():
            if name in args.parts:
                run_part(check, name, part)
            else:
                check.skip(name, "not asked for (--parts)")
    check.results["wall_s"] = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(check.results, indent=2) + "\n")
    print(f"wrote {out} ({check.results['wall_s']:.0f} s)")
    if check.results["errors"]:
        raise SystemExit(f"{len(check.results['errors'])} part(s) failed: {', '.join(check.results['errors'])}")


if __name__ == "__main__":
    main()
