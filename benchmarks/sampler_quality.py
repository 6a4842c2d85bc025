"""Sample quality against network calls (NFE) for every sampler, on a trained digits model and on a Gaussian mixture of
known density.

    python -m benchmarks.sampler_quality --ckpt_path runs/digits/checkpoints/last.ckpt \
        --gmm_ckpt_path runs/gmm2d/checkpoints/last.ckpt --out benchmarks/results/sampler_quality.jsonl

For each sampler (its default grid) and each NFE, ``--num_samples`` samples with seeds 0, 1, ... and their wall time;
``heun`` takes NFE/2 + 1 grid points (rounded down), the others NFE. Digits: the scores of ``benchmarks.digits_quality`` (SVC
confidence ratio, smallest class share, k-NN precision and recall ratios against held-out digits, near-copies).
Mixture (data module of ``--gmm_config``): the cross-entropy −E log p(x) of the samples under the true density in
nats, beside the entropy H(p) (the floor), and the Wasserstein-2 distance to as many held-out draws, exact by POT's
network simplex. Each row is appended to ``--out`` as it is measured, and rows already there are not measured again,
so an interrupted run resumes; the table is printed from the file at the end.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import read_rows
from benchmarks.digits_quality import digits_scores
from ddpm_signrelu.checkpoints import load_model
from ddpm_signrelu.cli import build_run
from ddpm_signrelu.diffusion import SAMPLERS
from ddpm_signrelu.images import to_uint8

NFES = (5, 10, 15, 20, 25, 50, 100, 250, 1000)
ROOT = Path(__file__).resolve().parents[1]


def grid_points(sampler: str, nfe: int) -> int:
    """The most grid points whose network calls (:func:`~ddpm_signrelu.diffusion.samplers.network_calls`) fit ``nfe``."""
    return nfe // 2 + 1 if sampler == "heun" else nfe


def timed_samples(model, sampler: str, steps: int, num: int, batch: int) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    with torch.no_grad():
        x = torch.cat([model.generate(range(i, min(i + batch, num)), sampler, steps) for i in range(0, num, batch)])
    return x, time.perf_counter() - start


def digits_row(model, sampler: str, nfe: int, args) -> dict:
    x, seconds = timed_samples(model, sampler, grid_points(sampler, nfe), args.num_samples, args.batch_size)
    s = digits_scores(to_uint8(x, model.hparams.num_levels).permute(0, 2, 3, 1).numpy())
    return {"confidence_ratio": s["conf"] / s["conf_real"], "smallest_class": float(s["shares"].min()),
            "precision_ratio": s["precision"] / s["precision_real"], "recall_ratio": s["recall"] / s["recall_real"],
            "near_copies": s["copies"], "seconds": seconds}


def mixture_row(model, data, sampler: str, nfe: int, args) -> dict:
    x, seconds = timed_samples(model, sampler, grid_points(sampler, nfe), args.num_samples, args.batch_size)
    x = x.double().flatten(1)
    return {"cross_entropy": -data.mixture.log_prob(x).mean().item(), "w2": w2_distance(x, data), "seconds": seconds}


def w2_distance(x: torch.Tensor, data) -> float:
    """Exact W2 between the rows of ``x`` and as many held-out draws (POT's network simplex)."""
    import ot

    held = data.val_data[: len(x)].double().flatten(1)
    cost = ot.dist(x.numpy(), held.numpy())  # squared Euclidean
    return float(np.sqrt(ot.emd2(np.full(len(x), 1 / len(x)), np.full(len(held), 1 / len(held)), cost,
                                 numItermax=10_000_000)))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_path", help="a digits checkpoint (configs/digits.yaml)")
    p.add_argument("--gmm_ckpt_path", help="a Gaussian-mixture checkpoint, trained on --gmm_config's data")
    p.add_argument("--gmm_config", default=str(ROOT / "configs" / "gmm2d.yaml"))
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    p.add_argument("--nfe", nargs="+", type=int, default=list(NFES))
    p.add_argument("--num_samples", type=int, default=500)
    p.add_argument("--batch_size", type=int, default=500)
    p.add_argument("--out", default="benchmarks/results/sampler_quality.jsonl")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["data"], r["sampler"], r["nfe"]) for r in read_rows(out)}
    models = {}
    if args.ckpt_path:
        models["digits"] = (load_model(args.ckpt_path), None)
    if args.gmm_ckpt_path:
        data = build_run("--config", args.gmm_config, "--trainer.logger", "false").datamodule
        data.setup("fit")
        models["mixture"] = (load_model(args.gmm_ckpt_path), data)
    for name, (model, data) in models.items():
        torch.manual_seed(0)
        for sampler in args.samplers:
            for nfe in args.nfe:
                steps = grid_points(sampler, nfe)
                if (name, sampler, nfe) in done or not 2 <= steps <= model.diffusion.num_timesteps:
                    continue
                row = digits_row(model, sampler, nfe, args) if data is None else mixture_row(model, data, sampler,
                                                                                           nfe, args)
                row = {"data": name, "sampler": sampler, "nfe": nfe, "num_samples": args.num_samples, **row}
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
        if data is not None:
            h, se = data.mixture.entropy(100_000, 0)
            fresh = data.population(args.num_samples, seed=12345).double().flatten(1)
            print(f"mixture: entropy H(p) = {h:.4f} ± {se:.4f} nats (the cross-entropy's floor); W2 of "
                  f"{args.num_samples} fresh draws of p to the held-out draws {w2_distance(fresh, data):.4f} "
                  f"(its floor)")
    print_table(read_rows(out))


def print_table(rows: list[dict]) -> None:
    """Markdown tables, one per data set: a row per sampler and NFE."""
    for name, columns in (("digits", ("confidence_ratio", "smallest_class", "precision_ratio", "recall_ratio",
                                      "near_copies", "seconds")),
                          ("mixture", ("cross_entropy", "w2", "seconds"))):
        mine = sorted((r for r in rows if r["data"] == name), key=lambda r: (SAMPLERS.index(r["sampler"]), r["nfe"]))
        if not mine:
            continue
        print(f"\n{name} ({mine[0]['num_samples']} samples)\n")
        print("| sampler | NFE | " + " | ".join(columns) + " |")
        print("|---|---|" + "---|" * len(columns))
        for r in mine:
            print(f"| {r['sampler']} | {r['nfe']} | " + " | ".join(
                f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in columns) + " |")


if __name__ == "__main__":
    main()
