"""The ELS patch machine against trained networks, sample by sample (Kamb & Ganguli, ICML 2025, the r² test).

Fashion-MNIST at ``configs/fashion_mnist_small.yaml``'s size, checkpoints of ``benchmarks/time_to_quality.py``
(trained here with its ``train_until`` where missing, ``--steps_trained`` steps): ``ours_conv`` and
``ours_silu_eps_conv``, the convolution-only twins (no attention), and ``ours`` and ``ours_silu_eps`` (attention at
7×7) for contrast.
For each model:

1. calibration: the network's own deterministic DDIM trajectories (``--steps`` steps) from ``--calibration``
   noises; at each step every candidate machine (patch size P in ``--sizes`` and the memoriser D*_n over the whole
   training split) is run at the network's x_t and the P whose x̂0 is closest to the network's (summed over those
   samples) is that step's scale;
2. test: from ``--samples`` other noises the network and the machine (its calibrated P per step) each run the same
   sampler to the end; r² = 1 − ‖x_net − x_ELS‖²/‖x_net − mean(x_net)‖² per sample, its median and quartiles;
3. the callback: :class:`~ddpm_signrelu.callbacks.LocalApproximation` at its defaults but ``bank_items`` (the same
   bank) on the training items, as it would log at the end of that run: ``risk/approximation_local`` beside the
   distance to the memoriser on the same points, per log-SNR stratum, with the calibrated P and r² there.

The machines search the patches of ``--bank`` seeded training images (the paper: the whole set; the cost grows with
it). Rows go to ``--out/rows.jsonl`` (a model at a time: rerun to resume); the report and figure to
``docs/local_reference.md``. ``--quick``: toy sizes, for a test.

    python -m benchmarks.local_reference
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.common import read_rows, run_or_report, write_block
from benchmarks.time_to_quality import build, train_until
from ddpm_signrelu.callbacks import LocalApproximation
from ddpm_signrelu.callbacks.local_risk import candidate_machines
from ddpm_signrelu.diffusion import sample

MODELS = ("ours_conv", "ours_silu_eps_conv", "ours", "ours_silu_eps")
MARKER = "<!-- local_reference results -->"


def recorded(denoise, log: list):
    """``denoise`` that appends (t, x_t, x̂0) of every call to ``log``."""
    def call(x_t, t):
        out = denoise(x_t, t)
        log.append((int(t[0]), x_t.clone(), out.clone()))
        return out
    return call


def r2(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Per sample 1 − ‖reference − other‖²/‖reference − mean(reference)‖²."""
    ref, oth = reference.flatten(1).double(), other.flatten(1).double()
    return 1 - (ref - oth).square().sum(1) / (ref - ref.mean(1, keepdim=True)).square().sum(1)


@torch.no_grad()
def measure(name: str, dm, bank: torch.Tensor, callback: LocalApproximation | None, args) -> dict:
    train_args = argparse.Namespace(data_root=args.data_root, val_size=500, num_samples=500, budget=0, eval_every=0,
                                    period_steps=args.steps_trained, out=args.ckpt_dir)
    model, step, _ = train_until(name, 0, 1, dm, train_args)
    schedule = model.diffusion.schedule
    sizes = [*args.sizes, 2 * max(dm.data_shape[1:]) - 1]
    candidates = candidate_machines(dm, schedule.alphas_cumprod, bank, sizes)

    def run(denoise, seeds):
        log = []
        x = sample(recorded(denoise, log), schedule, dm.data_shape, seeds, sampler="ddim", steps=args.steps)
        return x, log

    _, log = run(model.denoise, list(range(1000, 1000 + args.calibration)))
    scale, step_r2 = {}, {}
    for t, x_t, net in log:
        outputs = {p: candidates[p](x_t, torch.full((len(x_t),), t)) for p in sizes}
        scale[t] = min(sizes, key=lambda p: (outputs[p] - net).square().sum().item())
        step_r2[t] = statistics.median(r2(net, outputs[scale[t]]).tolist())

    def els(x_t, t):
        return candidates[scale[int(t[0])]](x_t, t)

    seeds = list(range(args.samples))
    x_net, _ = run(model.denoise, seeds)
    x_els, _ = run(els, seeds)
    scores = r2(x_net, x_els)
    torch.save({"net": x_net[:8], "els": x_els[:8]}, Path(args.out, f"{name}_pairs.pt"))
    q1, med, q3 = torch.quantile(scores, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
    row = {"model": name, "step": step, "bank": len(bank), "samples": args.samples, "steps": args.steps,
           "r2_median": med, "r2_q1": q1, "r2_q3": q3, "scale": {str(t): p for t, p in scale.items()},
           "step_r2": {str(t): v for t, v in step_r2.items()}}
    if callback is None:
        return row
    if not hasattr(callback, "machines"):  # θ-independent: prepared once for every model
        start = time.perf_counter()
        callback.prepare(dm, model.diffusion, "cpu")
        callback.setup_seconds = time.perf_counter() - start
    metrics, curves = callback.evaluate(model.denoise)
    return row | {"callback": {"setup_seconds": callback.setup_seconds, **{k: list(v) for k, v in metrics.items()},
                               "curves": {k: v.tolist() for k, v in curves.items()},
                               "log_snr": [sum(r) / 2 for r in callback.strata.log_snr_range]}}


def run(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    done = {r["model"] for r in read_rows(rows_path)}
    _, dm, _, _ = build("ours", argparse.Namespace(data_root=args.data_root, val_size=500, num_samples=500))
    dm.setup("fit")
    g = torch.Generator().manual_seed(0)
    bank = dm.to_unit(dm.train_data[torch.randperm(len(dm.train_data), generator=g)[:args.bank]])
    callback = LocalApproximation(num_items=args.callback_items, bank_items=args.bank) if args.callback_items else None
    for name in args.models:
        if name in done:
            continue
        print(f"{name}: calibrating on {args.calibration} trajectories, then {args.samples} samples", flush=True)
        row = measure(name, dm, bank, callback, args)
        with rows_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{name}: median r² {row['r2_median']:.3f}", flush=True)
    report(args)


def report(args) -> None:
    rows = read_rows(Path(args.out, "rows.jsonl"))
    if not rows:
        return
    figure = Path(args.docs, "local_reference.png")
    figure.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, args.out, figure)
    lines = ["| model | attention | step | bank images | samples | r² median | r² quartiles | P per step (T → 1) |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| `{r['model']}` | {'no' if r['model'].endswith('_conv') else 'at 7×7'} | {r['step']} | "
                     f"{r['bank']} | {r['samples']} | {r['r2_median']:.3f} | {r['r2_q1']:.3f}–{r['r2_q3']:.3f} | "
                     f"{', '.join(str(p) for p in r['scale'].values())} |")
    lines += ["", ("`LocalApproximation` on the training items (bits/dim; the memoriser's distance on the same points; "
                   "P and r² per stratum, highest SNR first; set-up: the machines' outputs, once for all models):"), "",
              ("| model | `risk/approximation_local` | distance to D*_n | `risk/local_r2` | P per stratum | "
               "r² per stratum | set-up s |"), "|---|---:|---:|---:|---|---|---:|"]
    for r in (r for r in rows if "callback" in r):
        c = r["callback"]
        memoriser, sizes, r2s = (c["curves"][k] for k in ("approximation", "patch_size", "local_r2"))
        lines.append(f"| `{r['model']}` | {c['approximation_local'][0]:.3f} ± {c['approximation_local'][1]:.3f} | "
                     f"{sum(memoriser):.3f} | {c['local_r2'][0]:.3f} | {', '.join(f'{p:.0f}' for p in sizes[2:])} | "
                     f"{', '.join(f'{v:.2f}' for v in r2s[2:])} | {c['setup_seconds']:.0f} |")
    lines += ["", f"![per-step scale and r², the callback's curves, and sample pairs]({figure.name})"]
    write_block(Path(args.docs, "local_reference.md"), MARKER, "\n".join(lines))


def plot(rows: list[dict], out: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [(r["model"], torch.load(Path(out, f"{r['model']}_pairs.pt"))) for r in rows
             if Path(out, f"{r['model']}_pairs.pt").is_file()]
    fig = plt.figure(figsize=(14, 3.4 + 2 * len(pairs)))
    grid = fig.add_gridspec(1 + len(pairs), 3, height_ratios=[3.4] + [2] * len(pairs))
    ax_p, ax_r, ax_c = (fig.add_subplot(grid[0, i]) for i in range(3))
    for r in rows:
        ts = [int(t) for t in r["scale"]]
        ax_p.plot(ts, list(r["scale"].values()), marker="o", label=r["model"])
        ax_r.plot(ts, list(r["step_r2"].values()), marker="o", label=r["model"])
        if "callback" not in r:
            continue
        curves, lam = r["callback"]["curves"], r["callback"]["log_snr"]
        line = ax_c.plot(lam, curves["approximation_local"][2:], marker="o", label=f"{r['model']}: local")[0]
        ax_c.plot(lam, curves["approximation"][2:], ls="--", color=line.get_color(), label=f"{r['model']}: D*_n")
    ax_p.set(xlabel="step t", ylabel="calibrated patch size P", xscale="log")
    ax_r.set(xlabel="step t", ylabel="median r² of x̂0 (calibration trajectories)", xscale="log")
    ax_c.set(xlabel="log-SNR λ (stratum centre)", ylabel="bits/dim (stratum term)", yscale="log",
             title="the network's distance to ELS (solid) and to D*_n (dashed)")
    ax_c.title.set_fontsize(8)
    ax_p.legend(fontsize=7)
    ax_c.legend(fontsize=6)
    for i, (name, pair) in enumerate(pairs):
        ax = fig.add_subplot(grid[1 + i, :])
        strip = torch.cat([torch.cat(list(pair["net"][:, 0]), 1), torch.cat(list(pair["els"][:, 0]), 1)], 0)
        ax.imshow(strip.clamp(-1, 1), cmap="gray")
        ax.set_title(f"{name}: network (top) and ELS machine (bottom), same noise", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--data_root", default="data")
    p.add_argument("--ckpt_dir", default="benchmarks/results/time_to_quality_factorial")
    p.add_argument("--steps_trained", type=int, default=900, help="training steps of a checkpoint trained here")
    p.add_argument("--sizes", nargs="+", type=int, default=[3, 5, 7, 11, 15, 21, 29])
    p.add_argument("--bank", type=int, default=512, help="training images whose patches the machines search")
    p.add_argument("--calibration", type=int, default=4, help="network trajectories the scales are chosen on")
    p.add_argument("--samples", type=int, default=24, help="test samples (other noises)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps")
    p.add_argument("--callback_items", type=int, default=8, help="LocalApproximation's num_items (0: not run)")
    p.add_argument("--out", default="benchmarks/results/local_reference")
    p.add_argument("--docs", default="docs")
    run_or_report(p, argv, run, report)


if __name__ == "__main__":
    main()
