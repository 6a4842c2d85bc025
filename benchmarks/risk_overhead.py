"""What the risk callback costs at the digits default (configs/digits.yaml), as a share of training wall time.

    python -m benchmarks.risk_overhead            # timed components, about a minute
    python -m benchmarks.risk_overhead --full     # also two full `train.py` runs, with and without (~13 min)

Times, on the default model and data: a training step (forward, backward, AdamW), the callback's one-off set-up
(D*_n cached on the fixed evaluation points), one evaluation, and the rest of a validation check (val/loss,
val/bpd, val/dsm_x0 on the held-out split). The overhead at the config's schedule is

    (set-up + checks x evaluation) / (max_steps x step + checks x validation)

with checks = max_steps / val_check_interval. Components are timed side by side in one process, so the ratio
does not depend on how fast the machine is. ``--full`` then runs the config end to end twice, with and without the
callback (same seed, output under runs/risk_overhead/), and prints both wall times.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import yaml

from ddpm_signrelu.callbacks import RiskMetrics
from ddpm_signrelu.cli import relocate_run
from ddpm_signrelu.data import DigitsDataModule
from ddpm_signrelu.lit import DiffusionModel

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "digits.yaml"


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="training steps timed")
    p.add_argument("--full", action="store_true", help="also time two full training runs, with and without")
    args = p.parse_args(argv)
    config = yaml.safe_load(CONFIG.read_text())
    risk_args = next(cb["init_args"] for cb in config["trainer"]["callbacks"]
                     if cb["class_path"].endswith("RiskMetrics"))
    L.seed_everything(0)
    data = DigitsDataModule(**config["data"]["init_args"])
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

    def validation():
        with torch.no_grad():
            for batch in data.val_dataloader():
                model.validation_step(batch, 0)

    val = timed(validation, 1)
    risk = RiskMetrics(**risk_args)
    start = time.perf_counter()
    risk.prepare(data, model.schedule, data.num_levels, torch.device("cpu"))
    setup = time.perf_counter() - start
    evaluation = timed(lambda: risk.evaluate(model.denoise), 2)
    max_steps, every = config["trainer"]["max_steps"], config["trainer"]["val_check_interval"]
    checks = max_steps // every // risk.every_n_val_checks
    base = max_steps * step + (max_steps // every) * val
    extra = setup + checks * evaluation
    print(f"digits default: {max_steps} steps, a validation check every {every}; RiskMetrics {risk_args}")
    print(f"training step              {step * 1000:8.1f} ms")
    print(f"validation check (val/*)   {val:8.2f} s")
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
    config = relocate_run(config, f"runs/risk_overhead/{'with' if risk else 'without'}", wandb=False, csv=True)
    trainer = config["trainer"]
    trainer["callbacks"] = [cb for cb in trainer["callbacks"] if risk or not cb["class_path"].endswith("RiskMetrics")]
    trainer["enable_progress_bar"] = False
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(config, f)
    start = time.perf_counter()
    subprocess.run([sys.executable, str(CONFIG.parents[1] / "train.py"), "fit", "--config", f.name], check=True,
                   capture_output=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
