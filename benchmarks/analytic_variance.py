"""Analytic-DPM's reverse variance on a trained digits model: the held-out bound and few-step ancestral quality.

    python -m benchmarks.analytic_variance --ckpt_path runs/digits/checkpoints/last.ckpt

Γ_t = E‖ε̂(x_t, t)‖²/D is estimated once, on ``--items`` training digits (one ε each) at ``--gamma_steps`` evenly
spaced steps and interpolated linearly in t between them; σ*² follows (``ddpm_signrelu.diffusion.analytic``). Printed:
the stratified held-out bound (bits/dim, the whole held-out split, the model's ``bound_strata`` and ``eval_seed + 1``
draws, as ``val/bpd``) with the model's σ² and with σ*², and the scores of ``benchmarks.digits_quality`` for the
``ddpm`` sampler with each variance at ``--steps`` grid points.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.digits_quality import digits_scores
from ddpm_signrelu.checkpoints import load_model
from ddpm_signrelu.cli import analytic_gamma, build_run
from ddpm_signrelu.diffusion import Diffusion, timestep_grid, to_bits_per_dim
from ddpm_signrelu.diffusion.analytic import analytic_variance
from ddpm_signrelu.images import to_uint8


def gamma_all_steps(model, config: str, num_items: int, num_steps: int) -> torch.Tensor:
    """Γ_t at every step index, from ``sample.py --analytic_variance``'s estimates at ``num_steps`` evenly spaced ones
    (linear in between)."""
    T = model.diffusion.num_timesteps
    steps = timestep_grid(T, num_steps).flip(0)
    gamma = analytic_gamma(model, config, steps, num_items)[steps]
    return torch.from_numpy(np.interp(np.arange(T), steps.numpy(), gamma.numpy()))


@torch.no_grad()
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_path", required=True)
    p.add_argument("--config", default="configs/digits.yaml", help="the run config whose data the model learned")
    p.add_argument("--items", type=int, default=512, help="training items for Γ_t")
    p.add_argument("--gamma_steps", type=int, default=100)
    p.add_argument("--steps", nargs="+", type=int, default=[10, 20, 50, 100])
    p.add_argument("--num_samples", type=int, default=500)
    args = p.parse_args(argv)
    model = load_model(args.ckpt_path)
    data = build_run("--config", args.config, "--trainer.logger", "false").datamodule
    data.setup("fit")
    start = time.perf_counter()
    gamma = gamma_all_steps(model, args.config, args.items, args.gamma_steps)
    shown = sorted({0, len(gamma) // 100, len(gamma) // 10, len(gamma) // 2, len(gamma) - 1})
    print(f"Γ_t from {args.items} training items at {args.gamma_steps} steps: {time.perf_counter() - start:.1f} s; "
          + ", ".join(f"Γ_{i + 1} = {gamma[i]:.4f}" for i in shown))
    d, T = model.diffusion, model.diffusion.num_timesteps
    t = torch.arange(T)
    analytic = Diffusion(d.schedule.with_chain_variance(analytic_variance(d.schedule, t, t - 1, gamma)),
                         d.parameterization, d.loss, d.num_levels, d.clip_denoised, model.hparams.bound_strata)
    held = data.to_unit(data.val_data)
    items, seed = list(range(len(held))), model.hparams.eval_seed + 1
    for name, diffusion in (("model's σ² (" + d.schedule.variance + ")", d), ("analytic σ*²", analytic)):
        bound = to_bits_per_dim(diffusion.bound(model.denoise, held, seed, items), model.dim)
        print(f"held-out bound, {name}: {bound.mean():.4f} ± {bound.std() / len(bound) ** 0.5:.4f} bits/dim")
    print("\n| ddpm steps | variance | confidence ratio | smallest class | precision ratio | recall ratio | seconds |")
    print("|---|---|---|---|---|---|---|")
    for steps in args.steps:
        for name, g in ((d.schedule.variance, None), ("analytic", gamma)):
            start = time.perf_counter()
            x = model.generate(range(args.num_samples), "ddpm", steps, gamma=g)
            seconds = time.perf_counter() - start
            s = digits_scores(to_uint8(x, model.hparams.num_levels).permute(0, 2, 3, 1).numpy())
            print(f"| {steps} | {name} | {s['conf'] / s['conf_real']:.3f} | {s['shares'].min():.3f} | "
                  f"{s['precision'] / s['precision_real']:.3f} | {s['recall'] / s['recall_real']:.3f} | "
                  f"{seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
