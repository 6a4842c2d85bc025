"""Throughput of the empirical Bayes denoiser D*_n on a Fashion-MNIST-sized reference set, against a plain matmul.

    python -m benchmarks.reference_throughput            # 60,000 x 784 reference, 256 queries
    python -m benchmarks.reference_throughput --n 10000  # smaller, quicker

D*_n's cost is dominated by two products with the reference set (logits X·Rᵀ and weights·R, 2·n·D FLOP each per
query) in float64, streamed in chunks with a running log-sum-exp. The baseline is the same logits product alone,
one float32 matmul of shape (B, D) x (D, n): the least any exact method must do. Data are random 8-bit levels
mapped to [-1, 1] and stored in float32; the timing does not depend on the values.
"""

from __future__ import annotations

import argparse
import time

import torch

from ddpm_signrelu.diffusion import NoiseSchedule
from ddpm_signrelu.metrics.reference import empirical_bayes_denoiser


def best_of(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=60_000)
    p.add_argument("--dim", type=int, default=784)
    p.add_argument("--queries", type=int, default=256)
    p.add_argument("--chunk_size", type=int, default=4096)
    args = p.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    reference = (torch.randint(0, 256, (args.n, args.dim), generator=g) / 127.5 - 1).float()
    x_t = torch.randn(args.queries, args.dim, generator=g)
    alpha_bar = NoiseSchedule.from_name("linear", 1000).alphas_cumprod[torch.randint(0, 1000, (args.queries,),
                                                                                     generator=g)]
    dstar = best_of(lambda: empirical_bayes_denoiser(x_t, alpha_bar, reference, args.chunk_size))
    matmul32 = best_of(lambda: x_t @ reference.T)
    ref64 = reference.double()
    matmul64 = best_of(lambda: x_t.double() @ ref64.T)
    flop = 2 * args.queries * args.n * args.dim
    print(f"reference {args.n} x {args.dim}, {args.queries} queries, {torch.get_num_threads()} threads")
    print(f"D*_n (float64, streamed)   {dstar:8.3f} s   {args.queries / dstar:9.1f} queries/s   "
          f"{2 * flop / dstar / 1e9:6.1f} GFLOP/s")
    print(f"matmul float32 (logits)    {matmul32:8.3f} s   {args.queries / matmul32:9.1f} queries/s   "
          f"{flop / matmul32 / 1e9:6.1f} GFLOP/s")
    print(f"matmul float64 (logits)    {matmul64:8.3f} s   {args.queries / matmul64:9.1f} queries/s   "
          f"{flop / matmul64 / 1e9:6.1f} GFLOP/s")
    print(f"D*_n / float32 matmul      {dstar / matmul32:8.2f} x the time")
    print(f"D*_n / float64 matmul      {dstar / matmul64:8.2f} x the time (D*_n does two such products)")


if __name__ == "__main__":
    main()
