"""Throughput of the empirical Bayes denoiser D*_n on a Fashion-MNIST-sized reference set, against a plain matmul.

    python -m benchmarks.empirical_bayes_throughput            # 60,000 x 784 reference, 256 queries
    python -m benchmarks.empirical_bayes_throughput --n 10000  # smaller, quicker

D*_n's cost is two products with the reference set per chunk (logits and the weighted sum, 2·n·D FLOP each per
query), streamed with a running log-sum-exp. The baseline is one matmul of shape (B, D) x (D, n) in the same
dtype, the logits product alone: the least any exact method must do. With both products D*_n reaches at most 50 %
of its throughput; it can pass 50 % where it skips the weighted sum of rows whose weights in a chunk all underflow to
0 (small t, where the posterior sits on a few items). The float32 error against float64 and the share by diffusion
step are printed next; the time is then measured against the reference size (``--sizes``). Data are random 8-bit
levels mapped to [-1, 1] and stored in float32; the queries are noised reference items at random steps t. The row
``D*_n float64 uint8`` stores the same levels as uint8, converted chunk by chunk, as the risk callback does.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import interleaved_medians, machine
from ddpm_signrelu.diffusion import NoiseSchedule
from ddpm_signrelu.metrics.empirical_bayes import empirical_bayes_denoiser

CPU = torch.device("cpu")


def data(n: int, dim: int, queries: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    levels = torch.randint(0, 256, (n, dim), generator=g)
    reference = (levels / 127.5 - 1).float()
    steps = torch.randint(0, 1000, (queries,), generator=g)
    ab = NoiseSchedule.from_name("linear", 1000).alphas_cumprod[steps]
    x_t = ab.sqrt()[:, None] * reference[torch.randint(0, n, (queries,), generator=g)] + \
        (1 - ab).sqrt()[:, None] * torch.randn(queries, dim, generator=g)
    return reference, x_t.float(), ab, levels.to(torch.uint8)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=60_000)
    p.add_argument("--dim", type=int, default=784)
    p.add_argument("--queries", type=int, default=256)
    p.add_argument("--chunk_size", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sizes", type=int, nargs="*", default=[1875, 3750, 7500, 15_000, 30_000, 60_000])
    args = p.parse_args(argv)
    reference, x_t, ab, levels = data(args.n, args.dim, args.queries)
    ref64, x64 = reference.double(), x_t.double()
    fns = {
        "D*_n float64": lambda: empirical_bayes_denoiser(x_t, ab, reference, args.chunk_size),
        "D*_n float32": lambda: empirical_bayes_denoiser(x_t, ab, reference, args.chunk_size, torch.float32),
        "D*_n float64 uint8": lambda: empirical_bayes_denoiser(x_t, ab, levels, args.chunk_size, num_levels=256),
        "matmul float64": lambda: x64 @ ref64.T,
        "matmul float32": lambda: x_t @ reference.T,
    }
    times = interleaved_medians(fns, CPU, args.repeats)
    flop = 2 * args.queries * args.n * args.dim
    print(f"reference {args.n} x {args.dim}, {args.queries} queries, chunk {args.chunk_size}; {machine(CPU)}")
    for name, secs in times.items():
        work = 2 * flop if name.startswith("D*") else flop
        print(f"{name:18s} {secs:8.3f} s  {args.queries / secs:9.1f} queries/s  {work / secs / 1e9:6.1f} GFLOP/s")
    for dtype in ("float32", "float64"):
        share = times[f"matmul {dtype}"] / times[f"D*_n {dtype}"]
        target = "; target >= 50 %" if dtype == "float32" else ""
        print(f"D*_n {dtype}: {100 * share:5.1f} % of a {dtype} matmul's throughput (50 % with both products "
              f"in full{target})")
    print(f"by step t, {args.queries} queries from held-out x0 in [-1, 1]: float32 error max |D*_n float32 - D*_n "
          "float64|, and each path's share of its matmul's throughput (above 50 %: the weighted sum was skipped "
          "where the weights underflow)")
    held_out = data(args.queries, args.dim, 1, seed=1)[0]
    alphas_cumprod = NoiseSchedule.from_name("linear", 1000).alphas_cumprod
    dtypes = ("float32", "float64")
    for step in (1, 10, 50, 100, 300, 1000):
        abt = alphas_cumprod[step - 1].expand(args.queries)
        x = (abt.sqrt()[:, None] * held_out + (1 - abt).sqrt()[:, None] * torch.randn(args.queries, args.dim)).float()
        out = {}
        paths = {f"D*_n {d}": lambda d=d: out.update({d: empirical_bayes_denoiser(
            x, abt, reference, args.chunk_size, getattr(torch, d))}) for d in dtypes}
        at_t = interleaved_medians({**paths, **{f"matmul {d}": fns[f"matmul {d}"] for d in dtypes}}, CPU,
                                   args.repeats)
        err = (out["float32"].double() - out["float64"]).abs().max().item()
        shares = "  ".join(f"{d} {100 * at_t[f'matmul {d}'] / at_t[f'D*_n {d}']:5.1f} %" for d in dtypes)
        print(f"  t = {step:4d}  1 - alpha_bar = {1 - abt[0].item():.2e}  error {err:.2e}  {shares}")
    if args.sizes:
        print("time against reference size n (float64; per query and item, relative to the first: 1.00 = linear)")
        first = None
        for n in args.sizes:
            def run():
                return empirical_bayes_denoiser(x_t, ab, reference[:n], args.chunk_size)
            secs = interleaved_medians({"d": run}, CPU, args.repeats)["d"]
            first = first or secs / n
            print(f"  n = {n:6d}  {secs:8.3f} s  {secs / n / first:5.2f}")


if __name__ == "__main__":
    main()
