"""What the measuring callbacks (RiskMetrics, TrajectoryStatistics) cost at a shipped config's defaults, as a share
of training wall time.

    python -m benchmarks.risk_overhead            # configs/digits.yaml, timed components, about a minute
    python -m benchmarks.risk_overhead --full     # also two full `train.py` runs, with and without (~13 min)
    python -m benchmarks.risk_overhead --config configs/fashion_mnist.yaml --data_root <folder with
        FashionMNIST/raw> --steps 3 --val_batches 1 --repeats 1

Times, on the config's model and data: a training step (forward, backward, AdamW), the callback's one-off set-up
(D*_n cached on the fixed evaluation points), one evaluation, and the rest of a validation check (val/loss,
val/bpd, val/dsm_x0 on the held-out split; with ``--val_batches`` its first batches, scaled to the whole split).
The overhead at the config's schedule is

    (set-up + checks x evaluation) / (max_steps x step + checks x validation)

with checks = max_steps / val_check_interval. Where the config has ``TrajectoryStatistics``, its parts are timed
too: the gradient-norm sum at every step, a snapshot (sketch and fixed losses) every ``every_n_steps``, and an
evaluation (the statistics of a full window and the loss gap) per check:

    (max_steps x sum + max_steps / every_n_steps x snapshot + checks x evaluation) / (the same denominator)

Components are timed side by side in one process, so the ratio does not depend on how fast the machine is.
``--full`` then runs the config end to end twice, with and without the measuring callbacks (same seed, output
under runs/risk_overhead/), and prints both wall times.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import statistics
from pathlib import Path

import lightning as L
import torch
import yaml

from benchmarks.common import relocate_run, seconds, sync
from ddpm_signrelu.callbacks import RiskMetrics, TrajectoryStatistics
from ddpm_signrelu.cli import build_run

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "digits.yaml"


class StepTimes(L.Callback):
    """Seconds of each training step: forward, backward, gradient clipping and the optimizer step (the device
    drained at both ends)."""

    def __init__(self):
        self.seconds: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        sync(pl_module.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        sync(pl_module.device)
        self.seconds.append(time.perf_counter() - self._start)


def timed(fn, repeats: int, device: torch.device) -> float:
    """Mean seconds of ``repeats`` calls after one warm-up call, the device drained before and after."""
    fn()
    return seconds(lambda: [fn() for _ in range(repeats)], device) / repeats


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--data_root", help="replaces data.init_args.root (the torchvision data modules)")
    p.add_argument("--steps", type=int, default=20, help="training steps timed")
    p.add_argument("--val_batches", type=int, help="validation batches timed (default: all)")
    p.add_argument("--repeats", type=int, default=2, help="timed validation checks and risk evaluations")
    p.add_argument("--full", action="store_true", help="also time two full training runs, with and without")
    args = p.parse_args(argv)
    config = ["--config", str(args.config), "--trainer.logger", "false"]
    config += ["--data.init_args.root", args.data_root] if args.data_root else []
    figures = measure(config, args.steps, args.val_batches, args.repeats)
    risk = figures["risk"]
    print(f"{args.config.name}: {figures['max_steps']} steps, a validation check every "
          f"{figures['val_check_interval']}; RiskMetrics with {risk['num_items']} items, {risk['num_strata']} strata, "
          f"every {risk['every_n_val_checks']} check(s)")
    print(f"training step              {figures['step_s'] * 1000:8.1f} ms")
    print(f"validation check (val/*)   {figures['validation_s']:8.2f} s   ({figures['val_batches_timed']} of "
          f"{figures['val_batches']} batches timed)")
    print(f"risk set-up (once)         {risk['setup_s']:8.2f} s")
    print(f"risk evaluation (per check){risk['evaluation_s']:8.2f} s   ({risk['checks']} checks)")
    print(f"training without risk      {figures['base_s']:8.1f} s (estimated: steps x step + checks x validation)")
    print(f"risk callback              {risk['seconds']:8.1f} s")
    print(f"overhead                   {risk['overhead_percent']:8.2f} % of training wall time (target: at most 5 %)")
    if figures["trajectory"] is not None:
        print_trajectory(figures["trajectory"])
    if args.full:
        config = yaml.safe_load(args.config.read_text())
        with_them, without = full_run(config, True), full_run(config, False)
        print(f"train.py with them         {with_them:8.1f} s")
        print(f"train.py without           {without:8.1f} s")
        print(f"end-to-end overhead        {100 * (with_them / without - 1):8.2f} %")


def measure(config: list[str], steps: int, val_batches: int | None, repeats: int) -> dict:
    """The measuring callbacks' cost at the run that ``train.py fit`` builds from the arguments ``config``: seconds
    of a training step (mean of ``steps`` after one), of a validation check (``val_batches`` of its batches,
    scaled to all), of RiskMetrics' set-up and evaluation (``repeats`` of each timed evaluation) and of
    TrajectoryStatistics' parts where the config has it, on the trainer's device; and the overheads they make at
    the config's schedule."""
    configured = build_run(*config).trainer
    risk = next(cb for cb in configured.callbacks if isinstance(cb, RiskMetrics))
    max_steps, every = configured.max_steps, configured.val_check_interval
    with tempfile.TemporaryDirectory() as folder:  # the configured run, with no callbacks or validation during fit
        run = build_run(*config, "--trainer.callbacks", "[]", "--trainer.default_root_dir", folder,
                        "--trainer.max_steps", str(steps + 1), "--trainer.val_check_interval", str(steps + 2),
                        "--trainer.num_sanity_val_steps", "0", "--trainer.enable_checkpointing", "false",
                        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false")
        model, data, trainer = run.model, run.datamodule, run.trainer
        timer = StepTimes()
        trainer.callbacks.append(timer)
        trainer.fit(model, datamodule=data)
        device = trainer.strategy.root_device
        step = statistics.mean(timer.seconds[1:])  # after one warm-up step
        all_batches = len(data.val_dataloader())
        trainer.limit_val_batches = min(val_batches or all_batches, all_batches)
        val = timed(lambda: trainer.validate(model, datamodule=data, verbose=False), repeats, device)
        val *= all_batches / trainer.limit_val_batches
    model.to(device).eval()  # the trainer hands the model back on the CPU
    setup = seconds(lambda: risk.prepare(data, model.diffusion, device), device)
    evaluation = timed(lambda: risk.evaluate(model.denoise), repeats, device)
    checks = max_steps // every // risk.every_n_val_checks
    base = max_steps * step + (max_steps // every) * val
    extra = setup + checks * evaluation
    trajectory = next((cb for cb in configured.callbacks if isinstance(cb, TrajectoryStatistics)), None)
    return {"max_steps": max_steps, "val_check_interval": every, "step_s": step, "validation_s": val,
            "val_batches_timed": trainer.limit_val_batches, "val_batches": all_batches, "base_s": base,
            "risk": {"num_items": risk.num_items, "num_strata": risk.num_strata,
                     "every_n_val_checks": risk.every_n_val_checks, "setup_s": setup, "evaluation_s": evaluation,
                     "checks": checks, "seconds": extra, "overhead_percent": 100 * extra / base},
            "trajectory": None if trajectory is None else trajectory_overhead(trajectory, trainer, model, base,
                                                                               max_steps, every)}


def trajectory_overhead(stats: TrajectoryStatistics, trainer: L.Trainer, model: L.LightningModule, base: float,
                        max_steps: int, every: int) -> dict:
    """TrajectoryStatistics' parts timed on the fitted ``trainer``'s model and data, and the overhead they make."""
    device = model.device
    stats.on_fit_start(trainer, model)
    model.train()
    for p in model.model.parameters():
        p.grad = torch.randn_like(p)
    optimizer = trainer.optimizers[0]
    gradient_sum = timed(lambda: stats.on_before_optimizer_step(trainer, model, optimizer), 50, device)
    snapshot = timed(lambda: stats.snapshot(model), 5, device)
    sketch, losses = stats.snapshot(model)
    g = torch.Generator().manual_seed(0)
    for k in range(min(stats.window, max_steps) // stats.every_n_steps):  # a full window of distinct iterates
        stats.steps.append(k)
        stats.sketches.append(sketch + 1e-3 * torch.randn(sketch.shape, generator=g))
        stats.losses.append(losses + 1e-3 * torch.randn(losses.shape, generator=g))
    model.eval()
    evaluation = timed(lambda: stats.evaluate(trainer, model), 2, device)
    checks = max_steps // every // stats.every_n_val_checks
    snapshots = max_steps // stats.every_n_steps
    extra = max_steps * gradient_sum + snapshots * snapshot + checks * evaluation
    return {"every_n_steps": stats.every_n_steps, "num_items": stats.num_items, "iterates": len(stats.steps),
            "sketch_dim": stats.sketch_dim, "gradient_sum_s": gradient_sum, "snapshot_s": snapshot,
            "snapshots": snapshots, "evaluation_s": evaluation, "checks": checks, "seconds": extra,
            "overhead_percent": 100 * extra / base}


def print_trajectory(figures: dict) -> None:
    """The lines of :func:`trajectory_overhead`'s figures."""
    print(f"TrajectoryStatistics: a snapshot every {figures['every_n_steps']} steps, {figures['num_items']} items, "
          f"{figures['iterates']} iterates in the window, sketch of {figures['sketch_dim']} values")
    print(f"gradient-norm sum (a step) {figures['gradient_sum_s'] * 1000:8.2f} ms")
    print(f"snapshot                   {figures['snapshot_s'] * 1000:8.1f} ms   ({figures['snapshots']} snapshots)")
    print(f"evaluation (per check)     {figures['evaluation_s']:8.2f} s   ({figures['checks']} checks)")
    print(f"trajectory callback        {figures['seconds']:8.1f} s")
    print(f"overhead                   {figures['overhead_percent']:8.2f} % of training wall time "
          f"(target: at most 5 %)")


def full_run(config: dict, measuring: bool) -> float:
    """Wall time of ``train.py fit`` on ``config``, with or without the measuring callbacks."""
    run_dir = f"runs/risk_overhead/{'with' if measuring else 'without'}"
    shutil.rmtree(run_dir, ignore_errors=True)  # this benchmark's own folder: a new run each time
    config = relocate_run(config, run_dir, wandb=False, csv=True)
    trainer = config["trainer"]
    trainer["callbacks"] = [cb for cb in trainer["callbacks"] if measuring
                            or not cb["class_path"].endswith(("RiskMetrics", "TrajectoryStatistics"))]
    trainer["enable_progress_bar"] = False
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(config, f)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "fit", "--config", f.name], capture_output=True,
                            text=True)
    if result.returncode:
        raise SystemExit(f"train.py failed on {run_dir}:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
