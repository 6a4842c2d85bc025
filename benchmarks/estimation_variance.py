"""The estimation component's noise at equal cost: the design before the control variate against today's, over
item seeds.

    python -m benchmarks.estimation_variance --config configs/fashion_mnist_small.yaml --ckpt CKPT --seeds 0 1 2

For one model (a checkpoint, or the config's network at initialisation without ``--ckpt``) and the config's data,
evaluates :class:`~ddpm_signrelu.callbacks.RiskMetrics` once per item seed in two designs that cost the same
2·m·R network calls (the config's ``num_items`` m and points R unless given):

- ``before``: the paired difference with one point per column, all of an item's points on that item,
  m·R/(K + 1) items (the estimator before the control variate);
- today's: m groups of R points, each point on an item of its own, spread over the columns by the reference's
  Neyman allocation; ``estimation_paired`` is its plain paired difference, ``estimation`` the logged one, with
  the control variate.

Prints each per seed with its standard error, then each one's spread over the seeds and mean standard error, and
the ratio of mean standard errors, before over today's ``estimation``. ``--plot PATH`` draws the three per seed with
their ±2 SE bars.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from ddpm_signrelu.callbacks import RiskMetrics
from ddpm_signrelu.checkpoints import load_model
from ddpm_signrelu.cli import build_run

NAMES = ("before", "estimation_paired", "estimation")


def evaluate(dm, model, seed: int, **settings) -> dict:
    metrics = RiskMetrics(seed=seed, entropy_samples=1000, **settings)
    metrics.prepare(dm, model.diffusion, torch.device("cpu"))
    with torch.no_grad():
        return metrics.evaluate(model.denoise)


def measure(args) -> list[dict]:
    run = build_run("--config", args.config, "--trainer.logger", "false",
                    *(["--data.root", args.data_root] if args.data_root else []),
                    *(["--data.val_size", str(args.val_size)] if args.val_size else []))
    model = (load_model(args.ckpt) if args.ckpt else run.model).eval()
    risk = next(c for c in run.trainer.callbacks if isinstance(c, RiskMetrics))
    dm = run.datamodule
    dm.setup("fit")
    m, strata = args.num_items or risk.num_items, args.num_strata or risk.num_strata
    points = args.points_per_item or (risk.points_per_item if not args.num_strata else None)
    reference = {"reference_items": args.reference_items or risk.reference_items,
                 "reference_rank": risk.reference_rank, "reference_shrinkage": risk.reference_shrinkage,
                 "reference_components": risk.reference_components}
    today = RiskMetrics(num_items=m, num_strata=strata, points_per_item=points)
    rows = []
    for seed in args.seeds:
        new = evaluate(dm, model, seed, num_items=m, num_strata=strata, points_per_item=points, **reference)
        old = evaluate(dm, model, seed, num_items=m * today.points // (strata + 1), num_strata=strata,
                       points_per_item=strata + 1, spread_items=False, **reference)
        rows.append({"seed": seed, "before": old["estimation_paired"][:2],
                     **{k: new[k][:2] for k in NAMES[1:]}, "ratio": new["estimation_variance_ratio"][0]})
        print(f"seed {seed}: " + "  ".join(f"{k} {rows[-1][k][0]:+.4f} ± {rows[-1][k][1]:.4f}" for k in NAMES)
              + f"  variance ratio {rows[-1]['ratio']:.2f}", flush=True)
    return rows


def summary(rows: list[dict]) -> str:
    lines = []
    for name in NAMES:
        values, errors = [r[name][0] for r in rows], [r[name][1] for r in rows]
        spread = statistics.stdev(values) if len(values) > 1 else float("nan")
        lines.append(f"{name}: mean {statistics.mean(values):+.4f}, spread over seeds {spread:.4f}, "
                     f"mean SE {statistics.mean(errors):.4f}")
    se = {name: statistics.mean(r[name][1] for r in rows) for name in NAMES}
    lines.append(f"SE ratio before / estimation: {se['before'] / se['estimation']:.2f}; paired / estimation "
                 f"(the control variate alone): {se['estimation_paired'] / se['estimation']:.2f}")
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    labels = {"before": "before (paired, one item per group)", "estimation_paired": "today, paired",
              "estimation": "today, risk/estimation"}
    for i, name in enumerate(NAMES):
        x = [r["seed"] + (i - 1) * 0.2 for r in rows]
        ax.errorbar(x, [r[name][0] for r in rows], yerr=[2 * r[name][1] for r in rows], fmt="o", capsize=3,
                    label=labels[name])
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="item seed", ylabel="estimation, bits/dim (±2 SE)", xticks=[r["seed"] for r in rows])
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--ckpt", default=None, help="the model; the config's network at initialisation without it")
    p.add_argument("--data_root", default=None, help="overrides the config's data.root")
    p.add_argument("--val_size", type=int, default=None, help="overrides the config's data.val_size: the checkpoint's")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--num_items", type=int, default=None)
    p.add_argument("--num_strata", type=int, default=None)
    p.add_argument("--points_per_item", type=int, default=None)
    p.add_argument("--reference_items", type=int, default=None)
    p.add_argument("--plot", default=None, help="write the per-seed figure here (PNG)")
    args = p.parse_args(argv)
    rows = measure(args)
    print(summary(rows))
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
