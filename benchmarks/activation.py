"""SignReLU against SiLU on one large activation tensor: forward + backward time and the bytes kept for backward.

    python -m benchmarks.activation                              # (64, 128, 32, 32) float32 on CPU
    python -m benchmarks.activation --device cuda --dtype bfloat16

Rows: SiLU (PyTorch's kernel); SignReLU as the package's autograd function (the default) and fused by
torch.compile (``SignReLU(fused=True)``); the same formula written as plain tensor ops, which autograd
differentiates op by op; and a compiled SiLU, the fair partner of the fused SignReLU. The first compiled call
builds the kernels and is not timed.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks.common import interleaved_medians, machine
from ddpm_signrelu.nn.activations import _sigma, signrelu


def saved_bytes(fn, x: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward of ``fn(x)``, each storage counted once."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(storages.values())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs="+", default=[64, 128, 32, 32])
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.shape, generator=g).to(device, dtype).requires_grad_()
    grad = torch.randn(args.shape, generator=g).to(device, dtype)
    functions = {
        "SiLU": F.silu,
        "SignReLU (autograd function)": signrelu,
        "SignReLU (fused, torch.compile)": lambda v: signrelu(v, fused=True),
        "SignReLU (composed tensor ops)": lambda v: _sigma(v, 1.0),  # the formula, differentiated op by op
        "SiLU (torch.compile)": torch.compile(F.silu, dynamic=True),
    }

    def forward_backward(fn):
        def run():
            fn(x).backward(grad)
            x.grad = None
        return run

    times = interleaved_medians({k: forward_backward(f) for k, f in functions.items()}, device, args.repeats, 2)
    print(f"tensor {tuple(args.shape)} {args.dtype} ({x.nbytes / 2**20:.0f} MiB); {machine(device)}; "
          f"median of {args.repeats}")
    print(f"{'activation':34s} {'fwd+bwd ms':>10s} {'x SiLU':>7s} {'saved MiB':>10s} {'x SiLU':>7s}")
    silu_saved = saved_bytes(F.silu, x)
    for name, fn in functions.items():
        saved = saved_bytes(fn, x)
        print(f"{name:34s} {1000 * times[name]:10.2f} {times[name] / times['SiLU']:7.2f} {saved / 2**20:10.1f} "
              f"{saved / silu_saved:7.2f}")
    best = min(("SignReLU (autograd function)", "SignReLU (fused, torch.compile)"), key=times.get)
    print(f"fastest SignReLU: {best}, {times[best] / times['SiLU']:.2f}x SiLU's time (target: at most 1.1x)")


if __name__ == "__main__":
    main()
