"""What the risk callback costs at a shipped config's defaults, as a share of training wall time.

    python -m benchmarks.risk_overhead            # configs/digits.yaml, timed components, about a minute
    python -m benchmarks.risk_overhead --full     # also two full `train.py` runs, with and without (~13 min)
    python -m benchmarks.risk_overhead --config configs/fashion_mnist.yaml --data_root <folder with
        FashionMNIST/raw> --steps 3 --val_batches 1 --repeats 1

Times, on the config's model and data: a training step (forward, backward, AdamW), the callback's one-off set-up
(D*_n cached on the fixed evaluation points), one evaluation, and the rest of a validation check (val/loss,
val/bpd, val/dsm_x0 on the held-out split; with ``--val_batches`` its first batches, scaled to the whole split).
The overhead at the config's schedule is

    (set-up + checks x evaluation) / (max_steps x step + checks x validation)

with checks = max_steps / val_check_interval. Components are timed side by side in one process, so the ratio
does not depend on how fast the machine is. ``--full`` then runs the config end to end twice, with and without the
callback (same seed, output under runs/risk_overhead/), and prints both wall times.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import yaml

from lightning.pytorch.cli import instantiate_class

from ddpm_signrelu.callbacks import RiskMetrics
from ddpm_signrelu.cli import relocate_run
from ddpm_signrelu.lit import DiffusionModel

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "digits.yaml"


def timed(fn, repeats: int) -> float:
    """Mean seconds of ``repeats`` calls after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--data_root", help="replaces data.init_args.root (the torchvision data modules)")
    p.add_argument("--steps", type=int, default=20, help="training steps timed")
    p.add_argument("--val_batches", type=int, help="validation batches timed (default: all)")
    p.add_argument("--repeats", type=int, default=2, help="timed validation checks and risk evaluations")
    p.add_argument("--full", action="store_true", help="also time two full training runs, with and without")
    args = p.parse_args(argv)
    config = yaml.safe_load(args.config.read_text())
    risk_args = next(cb["init_args"] for cb in config["trainer"]["callbacks"]
                     if cb["class_path"].endswith("RiskMetrics"))
    if args.data_root:
        config["data"].setdefault("init_args", {})["root"] = args.data_root
    L.seed_everything(0)
    data = instantiate_class((), config["data"])
    data.setup("fit")
    model = DiffusionModel(data_shape=data.data_shape, num_levels=data.num_levels, **config["model"])
    model.trainer = L.Trainer(max_steps=config["trainer"]["max_steps"], logger=False)  # for the lr schedule
    opt = model.configure_optimizers()["optimizer"]
    model.log = lambda *a, **k: None
    batches = iter(data.train_dataloader())

    def train_step():
        nonlocal batches
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(data.train_dataloader())
            batch = next(batches)
        opt.zero_grad()
        model.training_step(batch, 0).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    model.train()
    step = timed(train_step, args.steps)
    model.eval()

    loader = data.val_dataloader()
    batches_timed = min(args.val_batches or len(loader), len(loader))

    def validation():
        with torch.no_grad():
            for batch in itertools.islice(loader, batches_timed):
                model.validation_step(batch, 0)

    val = timed(validation, args.repeats) * len(loader) / batches_timed
    risk = RiskMetrics(**risk_args)
    start = time.perf_counter()
    risk.prepare(data, model.schedule, data.num_levels, torch.device("cpu"))
    setup = time.perf_counter() - start
    evaluation = timed(lambda: risk.evaluate(model.denoise), args.repeats)
    max_steps, every = config["trainer"]["max_steps"], config["trainer"]["val_check_interval"]
    checks = max_steps // every // risk.every_n_val_checks
    base = max_steps * step + (max_steps // every) * val
    extra = setup + checks * evaluation
    print(f"{args.config.name}: {max_steps} steps, a validation check every {every}; RiskMetrics {risk_args}")
    print(f"training step              {step * 1000:8.1f} ms")
    print(f"validation check (val/*)   {val:8.2f} s   ({batches_timed} of {len(loader)} batches timed)")
    print(f"risk set-up (once)         {setup:8.2f} s")
    print(f"risk evaluation (per check){evaluation:8.2f} s   ({checks} checks)")
    print(f"training without risk      {base:8.1f} s (estimated: steps x step + checks x validation)")
    print(f"risk callback              {extra:8.1f} s")
    print(f"overhead                   {100 * extra / base:8.2f} % of training wall time (target: at most 5 %)")
    if args.full:
        with_risk, without = full_run(config, True), full_run(config, False)
        print(f"train.py with RiskMetrics  {with_risk:8.1f} s")
        print(f"train.py without           {without:8.1f} s")
        print(f"end-to-end overhead        {100 * (with_risk / without - 1):8.2f} %")


def full_run(config: dict, risk: bool) -> float:
    """Wall time of ``train.py fit`` on ``config``, with or without the risk callback."""
    run_dir = f"runs/risk_overhead/{'with' if risk else 'without'}"
    shutil.rmtree(run_dir, ignore_errors=True)  # this benchmark's own folder: a new run each time
    config = relocate_run(config, run_dir, wandb=False, csv=True)
    trainer = config["trainer"]
    trainer["callbacks"] = [cb for cb in trainer["callbacks"] if risk or not cb["class_path"].endswith("RiskMetrics")]
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
