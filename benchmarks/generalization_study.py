"""How Adam's learning rate and batch size move generalisation, and which trajectory statistic tracks it.

    python -m benchmarks.generalization_study                      # runs what is missing, then the report
    python -m benchmarks.generalization_study --max_minutes 60     # a piece: starts no run after 60 minutes
    python -m benchmarks.generalization_study --report             # docs/generalization.md from the rows so far
    python -m benchmarks.generalization_study --quick --out DIR --docs DIR   # a small grid in a few minutes

Each run trains ``ours`` (SignReLU + ratio head, the task's config) with AdamW (no weight decay: Adam) at one
learning rate and global batch size, constant rate, no warm-up, no EMA (the raw iterates are the trajectory), for a
fixed number of steps, from one seed (the initial weights; the data, their split and order stay fixed). At
log-spaced steps it records

- generalisation: for the mixtures, the exact W2 between as many samples (ancestral, 250 steps) as held-out draws
  (POT) and the known-density excess risk ``risk/excess_true``; for Fashion-MNIST, the domain FID of 1,000 samples
  (SDE-DPM-Solver++(2M), 20 calls) against 10,000 training images; for all, ``risk/estimation`` and ``gap/dsm``;
- the trajectory statistics of :class:`~ddpm_signrelu.callbacks.TrajectoryStatistics` over the last ``window``
  steps: E_α (α = 1), magnitude and positive magnitude at s = √n, under the sketch and loss metrics, and
  Σ η_k ‖g_k‖².

Tasks: ``gmm2`` (the 2-D mixture of ``configs/gmm2d.yaml``, n = 128 training points), ``gmm16`` (a 16-D mixture
of 8 components, n = 256), both on the lr x batch grid with 3 seeds; ``fashion`` (``configs/fashion_mnist_small.yaml``,
a smaller grid, one seed). Rows go to ``--out/rows.jsonl`` when a run ends; a rerun skips finished runs. The report
writes, per task, a figure in the style of Dupuis et al.'s Fig. 1 (each measure against the learning rate, a line
per batch size, mean over seeds) and the Kendall τ and Spearman ρ, with bootstrap 95 % intervals over runs,
between every trajectory statistic and every generalisation measure at the last step.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from benchmarks.common import domain_distances, read_rows, run_or_report, write_block
from benchmarks.sampler_quality import w2_distance
from ddpm_signrelu.callbacks import RiskMetrics, TrajectoryStatistics
from ddpm_signrelu.cli import build_run
from ddpm_signrelu.errors import NonFiniteLossError
from ddpm_signrelu.images import to_uint8

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- generalization_study results: written by the benchmark -->"
STATISTICS = ["topo/E_alpha_euclid", "topo/E_alpha_rhoS", "topo/mag_euclid", "topo/pmag_euclid", "topo/mag_rhoS",
              "topo/pmag_rhoS", "opt/sum_lr_gradnorm2", "gap/dsm"]


@dataclass
class Task:
    """One data set of the study: its config and overrides, grid, step budget and evaluation."""

    config: str
    overrides: list[str]
    lrs: list[float]
    batches: list[int]
    seeds: list[int]
    steps: list[int]  # evaluation steps; the last is the budget
    measures: list[str]
    sampling: dict = field(default_factory=lambda: {"sampler": "ddpm", "steps": 250})
    num_items: int = 64  # the risk and trajectory items
    every_n_steps: int = 5
    window: int = 1000


STABLE_LR = 1e-3  # the largest rate at which no mixture run blows up
LRS, BATCHES = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], [16, 32, 64, 128]
GMM = ["w2", "risk/excess_true", "risk/estimation", "gap/dsm"]
TASKS = {
    "gmm2": Task("configs/gmm2d.yaml", ["--data.num_train", "128"], LRS, BATCHES, [0, 1, 2],
                 [100, 300, 1000, 3000], GMM),
    "gmm16": Task("configs/gmm2d.yaml", ["--data.shape", "[16]", "--data.num_train", "256"], LRS, BATCHES,
                  [0, 1, 2], [100, 300, 1000, 3000], GMM),
    "fashion": Task("configs/fashion_mnist_small.yaml", [], [3e-4, 1e-3, 3e-3], [32, 128], [0], [200, 600],
                    ["fid_domain", "risk/estimation", "gap/dsm"], {"sampler": "dpmpp_2m_sde", "steps": 20},
                    every_n_steps=5, window=500),
}


def quick(task: Task) -> Task:
    """The task on a 2 x 2 grid (a quarter of the smallest batches) of one seed, 15 steps, small evaluations: the
    whole pipeline in minutes."""
    return Task(task.config, task.overrides, task.lrs[::2][:2], [b // 4 for b in task.batches[:2]], [0], [5, 15],
                task.measures,
                {**task.sampling, "steps": 5}, num_items=8, every_n_steps=1, window=10)


class AtSteps(Callback):
    """Calls ``evaluate(trainer, model)`` after the optimizer steps in ``steps``, in evaluation mode."""

    def __init__(self, steps: list[int], evaluate):
        self.steps, self.evaluate, self.rows = set(steps), evaluate, []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if trainer.global_step in self.steps and not any(r["step"] == trainer.global_step for r in self.rows):
            pl_module.eval()
            self.rows.append(self.evaluate(trainer, pl_module))
            pl_module.train()


def run_one(name: str, task: Task, lr: float, batch: int, seed: int, args) -> list[dict]:
    """Train one grid point and return its rows, one per evaluation step (a diverged run: one row, ``diverged``)."""
    run = build_run("--config", str(ROOT / task.config), *task.overrides, "--trainer.logger", "false",
                    "--seed_everything", str(seed), "--model.lr", str(lr), "--model.lr_schedule", "constant",
                    "--model.warmup_steps", "0", "--data.batch_size", str(batch),
                    *(["--data.root", args.data_root] if name == "fashion" else []),
                    *(["--data.val_size", str(args.val_size)] if args.val_size else []))
    model, dm = run.model, run.datamodule  # the initial weights drawn under ``seed``
    trajectory = TrajectoryStatistics(every_n_steps=task.every_n_steps, window=task.window,
                                      num_items=task.num_items, every_n_val_checks=0)
    risk = RiskMetrics(num_items=task.num_items // 2, num_strata=8, points_per_item=18, every_n_val_checks=0,
                       entropy_samples=20_000)  # the network calls of num_items items at one point per column
    if name == "fashion":
        dm.setup("fit")
    distances = domain_distances(dm, args.reference) if name == "fashion" else None

    def evaluate(trainer, model) -> dict:
        row = {"task": name, "lr": lr, "batch": batch, "seed": seed, "step": trainer.global_step,
               **trajectory.evaluate(trainer, model)}
        row |= {f"risk/{k}": v[0] for k, v in risk.evaluate(model.denoise).items()
                if k in ("estimation", "approximation", "excess_true", "vlb_heldout")}
        with torch.no_grad():
            if distances is None:
                x = model.generate(range(args.num_samples or len(dm.val_data)), **task.sampling)
                row["w2"] = w2_distance(x.double().flatten(1), dm)
            else:
                images = torch.cat([to_uint8(model.generate(range(i, min(i + 250, args.fid_samples)),
                                                            **task.sampling), 256)
                                    for i in range(0, args.fid_samples, 250)])
                distances.update(images, real=False)
                row["fid_domain"] = distances.compute()["fid"]
                distances.reset_generated()
        return row

    at_steps = AtSteps(task.steps, evaluate)
    trainer = L.Trainer(max_steps=task.steps[-1], callbacks=[trajectory, risk, at_steps], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, gradient_clip_val=None, accelerator="cpu",
                        devices=1)
    start = time.perf_counter()
    try:
        trainer.fit(model, dm)
    except NonFiniteLossError:
        return [{"task": name, "lr": lr, "batch": batch, "seed": seed, "step": trainer.global_step,
                 "diverged": True, "seconds": time.perf_counter() - start}]
    for row in at_steps.rows:
        row["seconds"] = time.perf_counter() - start
    return at_steps.rows


def run(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "rows.jsonl"
    done = {(r["task"], r["lr"], r["batch"], r["seed"]) for r in read_rows(path)}
    start = time.perf_counter()
    for name in args.tasks:
        task = quick(TASKS[name]) if args.quick else TASKS[name]
        for seed in task.seeds:
            for batch in task.batches:
                for lr in task.lrs:
                    if (name, lr, batch, seed) in done:
                        continue
                    if args.max_minutes is not None and time.perf_counter() - start > 60 * args.max_minutes:
                        print(f"stopped after {args.max_minutes} minutes; run the command again to go on", flush=True)
                        return report(args)
                    print(f"{name}: lr {lr:g}, batch {batch}, seed {seed}", flush=True)
                    rows = run_one(name, task, lr, batch, seed, args)
                    with path.open("a") as f:
                        f.writelines(json.dumps(r) + "\n" for r in rows)
                    print(json.dumps(rows[-1]), flush=True)
    report(args)


def kendall_spearman(x: np.ndarray, y: np.ndarray, resamples: int, seed: int = 0) -> dict:
    """Kendall τ and Spearman ρ of (x, y), each with a percentile bootstrap 95 % interval over the pairs."""
    from scipy.stats import kendalltau, spearmanr

    g = np.random.default_rng(seed)
    boot = [(kendalltau(x[i], y[i]).statistic, spearmanr(x[i], y[i]).statistic)
            for i in (g.integers(0, len(x), len(x)) for _ in range(resamples))]
    boot = np.array([b for b in boot if np.isfinite(b).all()]).reshape(-1, 2)
    low, high = np.percentile(boot, [2.5, 97.5], axis=0) if len(boot) else (np.full(2, np.nan),) * 2
    return {"tau": float(kendalltau(x, y).statistic), "tau_low": float(low[0]), "tau_high": float(high[0]),
            "rho": float(spearmanr(x, y).statistic), "rho_low": float(low[1]), "rho_high": float(high[1])}


def finite_pairs(rows: list[dict], a: str, b: str) -> np.ndarray:
    """(n, 2): the runs' (a, b) values where both are finite."""
    return np.array([(r[a], r[b]) for r in rows
                     if math.isfinite(r.get(a, math.nan)) and math.isfinite(r.get(b, math.nan))]).reshape(-1, 2)


def correlations(rows: list[dict], measures: list[str], resamples: int) -> list[dict]:
    """Every (statistic, measure) pair across the finished runs' last rows."""
    out = []
    for measure in measures:
        for stat in STATISTICS:
            if stat == measure:
                continue
            pairs = finite_pairs(rows, stat, measure)
            if len(pairs) >= 4:
                out.append({"statistic": stat, "measure": measure, "runs": len(pairs),
                            **kendall_spearman(pairs[:, 0], pairs[:, 1], resamples)})
    return out


def report(args) -> None:
    rows = read_rows(Path(args.out, "rows.jsonl"))
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    lines = []
    for name in args.tasks:
        task = quick(TASKS[name]) if args.quick else TASKS[name]
        mine = [r for r in rows if r["task"] == name]
        last = [r for r in mine if r["step"] == task.steps[-1] and not r.get("diverged")]
        diverged = [r for r in mine if r.get("diverged")]
        if not last:
            continue
        lines += [f"### {name}", "", f"{len(last)} finished runs, {len(diverged)} diverged, "
                  f"{sum(r['seconds'] for r in mine if r['step'] == task.steps[-1] or r.get('diverged')) / 60:.1f} "
                  f"minutes of runs; at step {task.steps[-1]}, mean over seeds:", ""]
        lines += grid_table(last, task)
        table = correlations(last, task.measures, args.resamples)
        lines += ["", "| statistic | measure | runs | Kendall τ [95 %] | Spearman ρ [95 %] |", "|---|---|---|---|---|"]
        lines += [f"| `{c['statistic']}` | `{c['measure']}` | {c['runs']} | {c['tau']:.2f} [{c['tau_low']:.2f}, "
                  f"{c['tau_high']:.2f}] | {c['rho']:.2f} [{c['rho_low']:.2f}, {c['rho_high']:.2f}] |" for c in table]
        lines += ["", verdict(table, last, task.measures[0], args.resamples), ""]
        lines += offsets(mine, task) + [""]
        lines += stable_taus(last, task) + [""]
        plot(last, task, name, docs / f"generalization_{name}.png")
        lines += [f"![{name}: each measure and two statistics against the learning rate, by batch size, at step "
                  f"{task.steps[-1]} (mean ± sd over seeds)](generalization_{name}.png)", ""]
    print("\n".join(lines))
    write_block(docs / "generalization.md", BEGIN, "\n".join(lines))


def grid_table(last: list[dict], task: Task) -> list[str]:
    """Each measure and two statistics per (lr, batch), mean over seeds."""
    columns = task.measures + ["topo/E_alpha_rhoS", "opt/sum_lr_gradnorm2"]
    lines = ["| lr | batch | " + " | ".join(f"`{c}`" for c in columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for batch in task.batches:
        for lr in task.lrs:
            cell = [r for r in last if r["lr"] == lr and r["batch"] == batch]
            if cell:
                lines.append(f"| {lr:g} | {batch} | " + " | ".join(f"{np.mean([r[c] for r in cell]):.4g}"
                                                                   for c in columns) + " |")
    return lines


def stable_taus(last: list[dict], task: Task) -> list[str]:
    """Kendall τ of each statistic and measure across all finished runs and across the runs at learning rates up to
    ``STABLE_LR`` alone (where no run of either mixture blows up): which correlations hold without the unstable
    cells."""
    stable = [r for r in last if r["lr"] <= STABLE_LR]
    if len(stable) < 8:
        return []
    from scipy.stats import kendalltau

    def tau(rows, stat, measure):
        return kendalltau(*finite_pairs(rows, stat, measure).T).statistic

    measures = [m for m in task.measures if m != "gap/dsm"]
    lines = [f"Kendall τ, all {len(last)} runs / the {len(stable)} runs at lr ≤ {STABLE_LR:g}:", "",
             "| statistic | " + " | ".join(f"`{m}`" for m in measures) + " |", "|---" * (len(measures) + 1) + "|"]
    for stat in STATISTICS:
        lines.append(f"| `{stat}` | " + " | ".join(f"{tau(last, stat, m):.2f} / {tau(stable, stat, m):.2f}"
                                                   for m in measures) + " |")
    return lines


def offsets(mine: list[dict], task: Task) -> list[str]:
    """The held-out-minus-training measures at every evaluation step: median over the runs that did not diverge, and
    the share below 0. A sign that holds from the first step on, before any fitting, is the fixed items' offset."""
    keys = [k for k in ("gap/dsm", "risk/estimation") if k in task.measures]
    lines = ["| step | " + " | ".join(f"`{k}` median | share < 0" for k in keys) + " |",
             "|---" * (2 * len(keys) + 1) + "|"]
    for step in task.steps:
        cells = []
        for k in keys:
            v = np.array([r[k] for r in mine if r["step"] == step and not r.get("diverged") and math.isfinite(r[k])])
            cells.append(f"{np.median(v):.4f} | {np.mean(v < 0):.2f}" if len(v) else "– | –")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return lines


def verdict(table: list[dict], last: list[dict], headline: str, resamples: int) -> str:
    """Which statistic tracks the headline measure best (largest |τ|), and whether the risk callback's estimation
    component agrees with the headline measure and with the empirical loss gap."""
    rows = [c for c in table if c["measure"] == headline and math.isfinite(c["tau"])]  # nan: a constant statistic
    if not rows:
        return ""
    best = max(rows, key=lambda c: abs(c["tau"]))
    text = (f"Best tracker of `{headline}`: `{best['statistic']}` (τ = {best['tau']:.2f}, "
            f"[{best['tau_low']:.2f}, {best['tau_high']:.2f}]).")
    for other in (headline, "gap/dsm"):
        pairs = finite_pairs(last, "risk/estimation", other)
        if len(pairs) >= 4:
            c = kendall_spearman(pairs[:, 0], pairs[:, 1], resamples)
            text += (f" `risk/estimation` against `{other}`: τ = {c['tau']:.2f} "
                     f"[{c['tau_low']:.2f}, {c['tau_high']:.2f}].")
    return text


def plot(last: list[dict], task: Task, name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = task.measures + ["topo/E_alpha_rhoS", "opt/sum_lr_gradnorm2"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3))
    for ax, key in zip(axes, panels):
        for batch in task.batches:
            cells = [(lr, [r[key] for r in last if r["lr"] == lr and r["batch"] == batch]) for lr in task.lrs]
            cells = [(lr, v) for lr, v in cells if v]
            if cells:
                ax.errorbar([lr for lr, _ in cells], [np.mean(v) for _, v in cells],
                            yerr=[np.std(v) for _, v in cells], marker="o", capsize=2, label=f"batch {batch}")
        positive = all(r[key] > 0 for r in last)  # diverging runs reach 1e4 and more: a log scale keeps the rest
        ax.set(xscale="log", yscale="log" if positive else "symlog", xlabel="learning rate", title=key)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{name}: step {task.steps[-1]}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--data_root", default="data", help="the folder holding FashionMNIST/raw")
    p.add_argument("--quick", action="store_true",
                   help="a 2 x 2 grid of small batches, one seed, 15 steps, small evaluations")
    p.add_argument("--max_minutes", type=float, help="start no run after this many minutes (a resumable piece)")
    p.add_argument("--val_size", type=int, help="held-out items (default: the config's)")
    p.add_argument("--num_samples", type=int, help="mixture samples for W2 (default: as many as held-out draws)")
    p.add_argument("--fid_samples", type=int, default=1000)
    p.add_argument("--reference", type=int, default=10000, help="training images the domain FID compares with")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the correlations")
    p.add_argument("--out", default="benchmarks/results/generalization")
    p.add_argument("--docs", default="docs")
    run_or_report(p, argv, run, report)


if __name__ == "__main__":
    main()
