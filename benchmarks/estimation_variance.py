"""The estimation component's noise, paired difference against its control variate, over item seeds.

    python -m benchmarks.estimation_variance --config configs/fashion_mnist_small.yaml --ckpt CKPT --seeds 0 1 2

For one model (a checkpoint, or the config's network at initialisation without ``--ckpt``) and the config's data,
evaluates :class:`~ddpm_signrelu.callbacks.RiskMetrics` (the config's ``num_items`` and ``num_strata`` unless
given) once per item seed and prints, per seed, ``risk/estimation_paired`` and ``risk/estimation`` with their
standard errors and the variance ratio; then the spread of each over the seeds and the ratio of the mean standard
errors. Both use the same network calls: the reference's share is computed once at set-up.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from ddpm_signrelu.callbacks import RiskMetrics
from ddpm_signrelu.checkpoints import load_model
from ddpm_signrelu.cli import build_run


def measure(args) -> list[dict]:
    run = build_run("--config", args.config, "--trainer.logger", "false",
                    *(["--data.root", args.data_root] if args.data_root else []),
                    *(["--data.val_size", str(args.val_size)] if args.val_size else []))
    model = (load_model(args.ckpt) if args.ckpt else run.model).eval()
    risk = next(c for c in run.trainer.callbacks if isinstance(c, RiskMetrics))
    dm = run.datamodule
    dm.setup("fit")
    rows = []
    for seed in args.seeds:
        metrics = RiskMetrics(num_items=args.num_items or risk.num_items, num_strata=args.num_strata or risk.num_strata,
                              seed=seed, entropy_samples=1000,
                              reference_items=args.reference_items or risk.reference_items)
        metrics.prepare(dm, model.diffusion, torch.device("cpu"))
        with torch.no_grad():
            res = metrics.evaluate(model.denoise)
        rows.append({"seed": seed, **{k: res[k][:2] for k in ("estimation_paired", "estimation")},
                     "ratio": res["estimation_variance_ratio"][0]})
        print(f"seed {seed}: paired {rows[-1]['estimation_paired'][0]:+.4f} ± {rows[-1]['estimation_paired'][1]:.4f}  "
              f"control variate {rows[-1]['estimation'][0]:+.4f} ± {rows[-1]['estimation'][1]:.4f}  "
              f"variance ratio {rows[-1]['ratio']:.2f}", flush=True)
    return rows


def summary(rows: list[dict]) -> str:
    lines = []
    for name in ("estimation_paired", "estimation"):
        values, errors = [r[name][0] for r in rows], [r[name][1] for r in rows]
        spread = statistics.stdev(values) if len(values) > 1 else float("nan")
        lines.append(f"{name}: mean {statistics.mean(values):+.4f}, spread over seeds {spread:.4f}, "
                     f"mean SE {statistics.mean(errors):.4f}")
    se_ratio = statistics.mean(r["estimation_paired"][1] for r in rows) / statistics.mean(r["estimation"][1] for r in rows)
    lines.append(f"SE ratio paired / control variate: {se_ratio:.2f}; mean variance ratio "
                 f"{statistics.mean(r['ratio'] for r in rows):.2f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--ckpt", default=None, help="the model; the config's network at initialisation without it")
    p.add_argument("--data_root", default=None, help="overrides the config's data.root")
    p.add_argument("--val_size", type=int, default=None, help="overrides the config's data.val_size: the checkpoint's")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--num_items", type=int, default=None)
    p.add_argument("--num_strata", type=int, default=None)
    p.add_argument("--reference_items", type=int, default=None)
    print(summary(measure(p.parse_args(argv))))


if __name__ == "__main__":
    main()
