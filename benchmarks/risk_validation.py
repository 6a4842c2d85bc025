"""Validation study of the risk metrics on Gaussian mixtures (known density), written to docs/risk_validation.md.

    python -m benchmarks.risk_validation                 # about 10 minutes on 2 CPU cores
    python -m benchmarks.risk_validation --quick         # a smoke run (minutes), for checking the script

Trains the SignReLU MLP with the ratio head on one seeded mixture for several training-set sizes n and two widths,
with the risk callback, and reports the last evaluation of each run:
- the identity excess_true ≈ approximation + estimation + optimism (theory.md §6.4);
- estimation against n (it should fall as n grows) and approximation against width;
- at the smallest n, a model stopped by the discrepancy principle and the best hold-out checkpoint against the
  over-trained one;
- agreement with the truth: each run's true generalisation gap (its bound over all n training items, repeated
  draws, against its bound over 8,192 fresh draws from the mixture) against the callback's estimation, the
  control variate's and the paired difference, with bias, spread and Kendall τ over the grid;
- the gap-rise rule (``GapRiseStop``: stop once the estimation, or the held-out bound, has stood above its lowest
  so far by 2 SE of that paired rise, at one or at 3 consecutive checks) replayed on every run's log, against the
  check of lowest ``risk/excess_true``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import time

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from ddpm_signrelu.callbacks import DiscrepancyStop, RiskMetrics, StopReport
from ddpm_signrelu.data import GaussianMixtureDataModule
from ddpm_signrelu.diffusion import draw_for_items, to_bits_per_dim, vlb_terms
from ddpm_signrelu.lit import DiffusionModel

RULES = (("estimation", 1), ("vlb_heldout", 1), ("vlb_heldout", 3))  # (monitor, patience) replayed by stopping_lines
METRICS = ("vlb_heldout", "vlb_train", "approximation", "estimation", "optimism", "excess_true",
           "kernel_ratio_error", "vlb_bayes_true", "entropy_true")


def make_data(args, n: int) -> GaussianMixtureDataModule:
    return GaussianMixtureDataModule(shape=[args.dim], num_train=n, val_size=max(args.num_items * 68, 1024),
                                     num_components=args.components, spread=0.5, scale=0.15, condition=4.0,
                                     mixture_seed=0, batch_size=args.batch_size, seed=1 + args.seed)


def make_model(args, width: int) -> DiffusionModel:
    return DiffusionModel(data_shape=(args.dim,), num_levels=None,
                          network={"name": "mlp", "width": width, "depth": 3, "activation": "signrelu"},
                          head={"name": "ratio_atoms"}, num_timesteps=args.timesteps, clip_denoised=False,
                          lr=args.lr, warmup_steps=100, bound_strata=8)


def run(args, name: str, n: int, width: int, steps: int, extra=()) -> dict:
    """Train one model; return the last risk evaluation (values and SEs) and the stop report."""
    L.seed_everything(args.seed)
    out = os.path.join(args.out, name)
    shutil.rmtree(out, ignore_errors=True)  # a rerun starts clean: risk_curves.csv is appended to, never replaced
    risk = RiskMetrics(num_items=min(args.num_items, n), num_strata=16, entropy_samples=100_000,
                       reference_components=8)
    report = StopReport()
    trainer = L.Trainer(max_steps=steps, val_check_interval=args.val_every, check_val_every_n_epoch=None,
                        logger=CSVLogger(out, name="", version=""), enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[risk, report, *extra], num_sanity_val_steps=0,
                        limit_val_batches=1, default_root_dir=out)
    start = time.perf_counter()
    model, data = make_model(args, width), make_data(args, n)
    trainer.fit(model, datamodule=data)
    result = {k: float(v) for k, v in trainer.callback_metrics.items()}
    result.update(name=name, n=n, width=width, seconds=time.perf_counter() - start, stop_step=report.step,
                  stop_reason=report.reason, csv=os.path.join(out, "metrics.csv"))
    result["true_gap"], result["true_gap_se"] = true_gap(model.eval(), data, args.truth_draws)
    return result


@torch.no_grad()
def true_gap(model: DiffusionModel, data: GaussianMixtureDataModule, draws: int) -> tuple[float, float]:
    """The model's generalisation gap, computed directly (bits/dim, with its Monte Carlo SE): its bound over
    ``draws`` fresh draws from the mixture, less its bound averaged over all n training items (each with ⌈draws/n⌉
    independent draws of t and ε, 16 strata). On the training side only the draws are noise: the items are the
    whole training split."""
    strata = model.diffusion.strata(16, "weight")
    train = data.train_data
    repeats = math.ceil(draws / len(train))
    sides = {}
    for side, x0, seed in (("population", data.population(draws, seed=7), 8), ("train", train.repeat(repeats, 1), 9)):
        d = draw_for_items(strata, seed, range(len(x0)), x0.shape[1:])
        sides[side] = to_bits_per_dim(vlb_terms(model.diffusion.schedule, model.denoise, x0, d, None)["total"],
                                      x0[0].numel())
    pop, per_item = sides["population"], sides["train"].view(repeats, len(train))
    draw_var = per_item.var(0).mean().item() if repeats > 1 else per_item.var().item()
    gap = pop.mean().item() - per_item.mean().item()
    return gap, math.sqrt(pop.var().item() / len(pop) + draw_var / per_item.numel())


def history(path: str, key: str) -> list[tuple[int, float]]:
    with open(path) as f:
        return [(int(r["step"]) + 1, float(r[key])) for r in csv.DictReader(f) if r.get(key)]


def plots(args, grid: list[dict], small_runs: list[dict]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for width in args.widths:
        rows = [r for r in grid if r["width"] == width]
        axes[0].errorbar([r["n"] for r in rows], [r["risk/estimation"] for r in rows],
                         yerr=[2 * r["risk/estimation_se"] for r in rows], marker="o", capsize=3,
                         label=f"width {width}")
        axes[1].errorbar([r["n"] for r in rows], [r["risk/approximation"] for r in rows],
                         yerr=[2 * r["risk/approximation_se"] for r in rows], marker="o", capsize=3,
                         label=f"width {width}")
    for ax, title in zip(axes, ("risk/estimation", "risk/approximation")):
        ax.set_xscale("log")
        ax.set_xlabel("training points n")
        ax.set_ylabel("bits/dim (±2 SE)")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    names.append("risk_validation_split.png")
    fig.savefig(os.path.join(args.docs, names[-1]), dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in (small_runs[0], small_runs[2]):
        steps_values = history(r["csv"], "risk/excess_true")
        ax.plot([s for s, _ in steps_values], [v for _, v in steps_values], marker=".", label=r["name"])
    ax.axvline(small_runs[1]["stop_step"], color="grey", ls="--", label="best hold-out check")
    ax.set_xlabel("step")
    ax.set_ylabel("risk/excess_true (bits/dim)")
    ax.set_title(f"n = {min(args.sizes)}: excess KL over training")
    ax.legend()
    fig.tight_layout()
    names.append("risk_validation_small_n.png")
    fig.savefig(os.path.join(args.docs, names[-1]), dpi=100)
    plt.close(fig)
    return names


def fmt(r: dict, key: str) -> str:
    return f"{r[f'risk/{key}']:.4f} ± {r[f'risk/{key}_se']:.4f}"


def write_doc(args, grid: list[dict], small_runs: list[dict], images: list[str], seconds: float) -> None:
    lines = ["# Risk metrics on data of known density", "",
             "Written by `python -m benchmarks.risk_validation" + (" --quick" if args.quick else "") + "` "
             f"({seconds / 60:.1f} minutes on this machine). Every number below was printed by that run.", "",
             "## Set-up", "",
             f"- Data: a Gaussian mixture in d = {args.dim} with {args.components} components "
             "(`GaussianMixture.random`, spread 0.5, component standard deviations 0.075 to 0.15, mixture seed 0); "
             "n training points and a held-out set of fresh draws, which is also the population set S_pop.",
             f"- Model: SignReLU MLP (depth 3) with the softmax-atom ratio head (v-space atoms), T = {args.timesteps} "
             f"linear schedule, σ² = β̃, continuous decoder, L_simple loss, AdamW lr {args.lr}, batch "
             f"{args.batch_size}, {args.steps} steps, no EMA.",
             f"- Risk callback: S_train and S_held of min(n, {args.num_items}) groups of 68 points over 16 log-SNR "
             "strata with π ∝ w_t (Neyman allocation, each point on an item of its own where the splits hold enough), the "
             f"control variate's reference a mixture of 8 Gaussians, every {args.val_every} steps; values are the last "
             "evaluation, ± one standard error over groups.", "",
             "## The identity and the split", "",
             "| n | width | vlb_heldout | approximation | estimation | optimism | a + e + o | excess_true | "
             "kernel_ratio_error | residual |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in grid:
        rhs = r["risk/approximation"] + r["risk/estimation"] + r["risk/optimism"]
        lines.append(f"| {r['n']} | {r['width']} | {fmt(r, 'vlb_heldout')} | {fmt(r, 'approximation')} | "
                     f"{fmt(r, 'estimation')} | {fmt(r, 'optimism')} | {rhs:.4f} | {fmt(r, 'excess_true')} | "
                     f"{fmt(r, 'kernel_ratio_error')} | {r['risk/excess_true'] - rhs:+.4f} |")
    first = grid[0]
    lines += ["", f"θ-independent references (bits/dim): entropy H(p)/(D ln 2) = {fmt(first, 'entropy_true')}, "
              f"VLB(D*; S_pop) = {fmt(first, 'vlb_bayes_true')}.", "",
              f"![estimation and approximation against n]({images[0]})", "",
              f"## Early stopping at n = {min(args.sizes)}", "",
              "| run | stopped at | reason | vlb_heldout | estimation | excess_true |", "|---|---|---|---|---|---|"]
    for r in small_runs:
        lines.append(f"| {r['name']} | {r['stop_step']} | {r['stop_reason']} | {fmt(r, 'vlb_heldout')} | "
                     f"{fmt(r, 'estimation')} | {fmt(r, 'excess_true')} |")
    lines += ["", f"![excess_true over training]({images[1]})", ""]
    lines += agreement_lines(grid) + stopping_lines(grid)
    lines += ["",
              f"## Where the terms sit: per log-SNR stratum at n = {max(args.sizes)}, last evaluation", "",
              "Rows of `risk_curves.csv` (bits/dim; t = 1 is the decoder term, L_T is 0 to four decimals and left "
              "out).", "", "| t range | " + " | ".join(
                  f"approx. w{w} | excess_true w{w}" for w in args.widths) + " | kernel_ratio_error |",
              "|---|" + "---|---|" * len(args.widths) + "---|"]
    curves = {w: last_curves(next(r for r in grid if r["n"] == max(args.sizes) and r["width"] == w))
              for w in args.widths}
    for i, row in enumerate(curves[args.widths[0]]):
        if row["bucket"] == "prior":
            continue
        cells = " | ".join(f"{float(curves[w][i]['approximation']):.4f} | {float(curves[w][i]['excess_true']):.4f}"
                           for w in args.widths)
        lines.append(f"| {row['t_lo']}–{row['t_hi']} | {cells} | {float(row['kernel_ratio_error']):.4f} |")
    lines += ["", "## What this shows, and what it does not", "",
              *args.reading, ""]
    with open(os.path.join(args.docs, "risk_validation.md"), "w") as f:
        f.write("\n".join(lines))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes and step counts, to check the script")
    p.add_argument("--seed", type=int, default=0, help="another grid: other training items, initialisation, batches")
    p.add_argument("--out", default="runs/risk_validation")
    p.add_argument("--docs", default="docs")
    args = p.parse_args(argv)
    args.dim, args.components, args.timesteps, args.lr, args.batch_size = 8, 8, 1000, 1e-3, 128
    args.sizes, args.widths, args.num_items = (64, 256, 1024, 8192), (8, 32, 256), 64
    args.steps, args.val_every, args.truth_draws = 4000, 250, 8192
    if args.quick:
        args.sizes, args.widths, args.steps, args.val_every, args.num_items = (64, 512), (32, 128), 300, 100, 16
        args.truth_draws = 1024
    os.makedirs(args.docs, exist_ok=True)
    start = time.perf_counter()
    grid = [run(args, f"n{n}_w{w}", n, w, args.steps) for n in args.sizes for w in args.widths]
    n_small, w_big = min(args.sizes), max(args.widths)
    over = next(r for r in grid if r["n"] == n_small and r["width"] == w_big)
    over = dict(over, name=f"over-trained ({args.steps} steps)")
    best = best_check(over)
    stopped = run(args, "discrepancy", n_small, w_big, args.steps,
                  [DiscrepancyStop(tau=1.5, num_items=n_small, draws_per_item=16, population_samples=20_000)])
    small_runs = [over, best, dict(stopped, name="discrepancy principle")]
    images = plots(args, grid, small_runs)
    args.reading = reading(grid, small_runs)
    write_doc(args, grid, small_runs, images, time.perf_counter() - start)
    for r in grid + small_runs:
        print(r["name"], {k: round(r[f"risk/{k}"], 4) for k in METRICS if f"risk/{k}" in r})


def agreement_lines(grid: list[dict]) -> list[str]:
    """The callback's estimation (control variate and paired) against each run's true gap, and their summary."""
    from scipy.stats import kendalltau

    lines = ["## Agreement with the true gap", "",
             "The true gap is computed directly from each final model: its bound over 8,192 fresh draws from the "
             "mixture less its bound over all n training items (repeated draws), 16 strata; ± its Monte Carlo SE.", "",
             "| n | width | true gap | estimation (control variate) | estimation (paired) | variance ratio |",
             "|---|---|---|---|---|---|"]
    for r in grid:
        lines.append(f"| {r['n']} | {r['width']} | {r['true_gap']:.4f} ± {r['true_gap_se']:.4f} | "
                     f"{fmt(r, 'estimation')} | {fmt(r, 'estimation_paired')} | "
                     f"{r['risk/estimation_variance_ratio']:.2f} |")
    lines += ["", "| estimator | bias | spread of the error | mean SE | Kendall τ with the true gap |",
              "|---|---|---|---|---|"]
    truth = [r["true_gap"] for r in grid]
    for label, key in (("control variate (`risk/estimation`)", "estimation"), ("paired (`risk/estimation_paired`)",
                                                                               "estimation_paired")):
        errors = [r[f"risk/{key}"] - t for r, t in zip(grid, truth)]
        mean = sum(errors) / len(errors)
        spread = math.sqrt(sum((e - mean) ** 2 for e in errors) / (len(errors) - 1))
        se = sum(r[f"risk/{key}_se"] for r in grid) / len(grid)
        tau = kendalltau([r[f"risk/{key}"] for r in grid], truth).statistic
        lines.append(f"| {label} | {mean:+.4f} | {spread:.4f} | {se:.4f} | {tau:.2f} |")
    return lines + [""]


def stop_at_rise(result: dict, key: str, threshold: float = 2.0, patience: int = 1) -> int:
    """The check where ``GapRiseStop(monitor=key, threshold, patience)`` stops: the first that ends ``patience``
    consecutive checks whose logged paired rise above the lowest earlier value exceeds ``threshold`` of its SE (the
    last check where none does)."""
    rises, errors = (dict(history(result["csv"], f"risk/{key}_rise{end}")) for end in ("", "_se"))
    risen = 0
    for step in sorted(rises):
        risen = risen + 1 if rises[step] > threshold * errors[step] else 0
        if risen >= patience:
            return step
    return max(history(result["csv"], f"risk/{key}"))[0]


def stopping_lines(grid: list[dict]) -> list[str]:
    """The gap-rise rule replayed on every run's log, against the check of lowest excess_true: where it stops, and
    the check it keeps (the lowest monitored value up to the stop, as ``ModelCheckpoint`` on that monitor would)."""
    lines = ["## Stopping when the gap rises above its noise", "",
             "`GapRiseStop` stops at the first check that ends `patience` consecutive checks where the monitored "
             "metric stands more than 2 standard errors of its rise above its lowest value so far, the rise being the "
             "paired change over the same items and draws; replayed here on each run's log, monitoring "
             "`risk/estimation` or `risk/vlb_heldout`. \"Kept\" "
             "is the check of lowest monitored value up to the stop, the one `ModelCheckpoint` on the same monitor "
             "restores. \"Overfits\" means the last check's excess_true is over 1.1× the lowest. Cells: step "
             "(excess_true, ×best).", "",
             "| n | width | overfits | best check | "
             + " | ".join(f"{key}, patience {p}: {cell}" for key, p in RULES for cell in ("stop", "kept")) + " |",
             "|---|---|---|---|" + "---|" * 2 * len(RULES)]
    for r in grid:
        excess = dict(history(r["csv"], "risk/excess_true"))
        best = min(excess, key=excess.get)
        overfits = excess[max(excess)] > 1.1 * excess[best]
        cells = []
        for key, patience in RULES:
            stop = stop_at_rise(r, key, patience=patience)
            values = {step: v for step, v in history(r["csv"], f"risk/{key}") if step <= stop}
            for step in (stop, min(values, key=values.get)):
                cells.append(f"{step} ({excess[step]:.4f}, {excess[step] / excess[best]:.2f})")
        lines.append(f"| {r['n']} | {r['width']} | {'yes' if overfits else 'no'} | {best} ({excess[best]:.4f}) | "
                     + " | ".join(cells) + " |")
    return lines + [""]


def last_curves(result: dict) -> list[dict]:
    with open(os.path.join(os.path.dirname(result["csv"]), "risk_curves.csv")) as f:
        rows = list(csv.DictReader(f))
    last = max(int(r["step"]) for r in rows)
    return [r for r in rows if int(r["step"]) == last]


def best_check(over: dict) -> dict:
    """The check with the lowest risk/vlb_heldout in a run's log: what ModelCheckpoint(monitor="risk/vlb_heldout")
    keeps (the hold-out rule)."""
    keys = ("vlb_heldout", "estimation", "excess_true")
    hist = {k: dict(history(over["csv"], f"risk/{k}")) for k in keys}
    ses = {k: dict(history(over["csv"], f"risk/{k}_se")) for k in keys}
    step = min(hist["vlb_heldout"], key=hist["vlb_heldout"].get)
    row = {"name": "hold-out rule (best check)", "stop_step": step, "stop_reason": "best risk/vlb_heldout"}
    for k in keys:
        row[f"risk/{k}"], row[f"risk/{k}_se"] = hist[k][step], ses[k][step]
    return row


def reading(grid, small_runs) -> list[str]:
    """Statements computed from the numbers, so the text cannot disagree with the table."""
    out = []
    resid = [abs(r["risk/excess_true"] - r["risk/approximation"] - r["risk/estimation"] - r["risk/optimism"])
             for r in grid]
    within = sum(res <= 3 * (r["risk/excess_true_se"] + r["risk/estimation_se"]) for res, r in zip(resid, grid))
    out.append(f"- Identity: |residual| is within 3·(SE(excess_true) + SE(estimation)) in {within} of {len(grid)} "
               "runs. The identity holds in expectation; at finite m its residual is Monte Carlo noise "
               "(the two sides use different items: S_pop for excess_true, S_train and S_held on the right).")
    for width in sorted({r["width"] for r in grid}):
        est = [round(r["risk/estimation"], 4) for r in grid if r["width"] == width]
        out.append(f"- Width {width}: estimation by increasing n = {est} "
                   f"({'falls monotonically' if est == sorted(est, reverse=True) else 'does not fall monotonically'}).")
    for n in sorted({r["n"] for r in grid}):
        app = {r["width"]: round(r["risk/approximation"], 4) for r in grid if r["n"] == n}
        ext = {r["width"]: round(r["risk/excess_true"], 4) for r in grid if r["n"] == n}
        out.append(f"- n = {n}: approximation by width {app}, excess_true by width {ext}.")
    big = max(r["n"] for r in grid)
    for r in grid:
        if r["n"] == big:
            rows = [c for c in last_curves(r) if c["bucket"] != "prior"]
            low = sum(float(c["approximation"]) for c in rows if int(c["t_hi"]) <= 11)
            out.append(f"- n = {big}, width {r['width']}: {low:.4f} of the {r['risk/approximation']:.4f} bits/dim of "
                       "approximation come from t ≤ 11, where D*_n snaps to the nearest training point and the "
                       "kernel-ratio error is largest.")
    over, best, stopped = small_runs
    out.append(f"- Smallest n: excess_true {over['risk/excess_true']:.4f} after all {over['stop_step']} steps; "
               f"{best['risk/excess_true']:.4f} at the best hold-out check (step {best['stop_step']}); "
               f"{stopped['risk/excess_true']:.4f} where the discrepancy rule stopped (step {stopped['stop_step']}, "
               f"reason {stopped['stop_reason']}).")
    out.append("- Not shown: other dimensions, mixtures, seeds or optimisers; one seed per cell, so differences "
               "smaller than a few SE are not evidence. The metrics are Monte Carlo estimates on m items with one "
               "draw per stratum, and approximation measures distance to D*_n, the training-set memoriser, which "
               "is not the population target.")
    return out


if __name__ == "__main__":
    main()
