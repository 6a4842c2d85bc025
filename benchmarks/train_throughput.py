"""Training throughput and peak memory: the SignReLU U-Net with the ratio head against diffusers and
denoising-diffusion-pytorch at matched size (see ``benchmarks/matched.py``), side by side in one process.

    pip install -r benchmarks/requirements.txt
    python -m benchmarks.train_throughput --setting grey28 --batch 32
    python -m benchmarks.train_throughput --setting rgb32 --batch 16
    python -m benchmarks.train_throughput --setting rgb32 --batch 128 --device cuda --precision bf16 \
        --channels_last --compile
    python -m benchmarks.train_throughput --setting grey28 --sweep      # step time and memory against batch and size

A step is forward, backward and an AdamW update on a fixed batch; steps of all networks are timed in turns and the
median is kept. Peak memory is what a step allocates at its peak (activations, gradients, temporaries) plus the
parameters and AdamW state. "ours faster" is the row's step time over ours (above 1: ours is faster); "ours mem" is
ours' peak over the row's (below 1: ours needs less). GFLOP/img counts the matmuls, convolutions and attention
of forward and backward (torch.utils.flop_counter): networks of equal size can differ in compute. The ratio-head
overhead compares ours with its plain-head twin (same SignReLU backbone).
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import anchors_missing, interleaved_medians, machine, mfu, op_profile, peak_bytes, tensor_bytes
from benchmarks.matched import OURS, OURS_LAYOUTS, SETTINGS, Candidate, batch, candidates, ours_candidate


class Trainer:
    """One candidate's optimizer, batch and training step under the chosen precision and layout."""

    def __init__(self, candidate: Candidate, data, device, precision: str, channels_last: bool, compile: bool):
        self.candidate = candidate
        module = candidate.module.to(device)
        if channels_last:
            module.to(memory_format=torch.channels_last)
            data = (data[0].contiguous(memory_format=torch.channels_last), data[1],
                    data[2].contiguous(memory_format=torch.channels_last))
        module.train()
        self.data, self.device, self.precision = data, device, precision
        self.loss = torch.compile(candidate.loss) if compile else candidate.loss
        self.opt = torch.optim.AdamW(module.parameters(), lr=1e-4)

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self) -> None:
        with self.autocast():
            loss = self.loss(*self.data)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def step_peak(self) -> int:
        """Peak bytes one step allocates: activations, gradients, temporaries."""
        return peak_bytes(self.step, self.device)

    def peak_memory(self) -> int:
        """:meth:`step_peak` plus the parameters and AdamW state held between steps."""
        state = [v for s in self.opt.state.values() for v in s.values() if torch.is_tensor(v)]
        return self.step_peak() + tensor_bytes(self.candidate.module.parameters()) + tensor_bytes(state)

    def flop(self) -> int:
        with FlopCounterMode(display=False) as counter:
            with self.autocast():
                loss = self.candidate.loss(*self.data)
            loss.backward()
        self.opt.zero_grad(set_to_none=True)
        return counter.get_total_flops()


def compare(args, device) -> None:
    shape = SETTINGS[args.setting][1]
    missing = anchors_missing()
    if missing:
        print(f"anchors not installed ({', '.join(missing)}): pip install -r benchmarks/requirements.txt")
    found = candidates(args.setting, anchors=not missing)
    if args.fused:
        found.insert(1, ours_candidate("ours: SignReLU (fused) + ratio head", args.setting,
                                       network={"activation_kwargs": {"fused": True}}))
    data = batch(shape, args.batch, device)
    trainers = {c.name: Trainer(c, data, device, args.precision, args.channels_last, args.compile) for c in found}
    times = interleaved_medians({name: tr.step for name, tr in trainers.items()}, device, args.repeats, args.warmup)
    memory = {name: tr.peak_memory() for name, tr in trainers.items()}
    ref = OURS
    print(f"{args.setting} {shape}, batch {args.batch}, {args.precision}"
          f"{', channels_last' if args.channels_last else ''}{', torch.compile' if args.compile else ''}; "
          f"{machine(device)}; median of {args.repeats}")
    print(f"{'network':48s} {'params':>8s} {'ms/step':>9s} {'img/s':>8s} {'ours faster':>11s} {'peak MB':>8s} "
          f"{'ours mem':>8s} {'GFLOP/img':>9s}  compute")
    for c in found:
        secs, mem, flop = times[c.name], memory[c.name], trainers[c.name].flop()
        print(f"{c.name:48s} {c.parameters / 1e6:7.2f}M {1000 * secs:9.1f} {args.batch / secs:8.1f} "
              f"{times[c.name] / times[ref]:11.2f} {mem / 2**20:8.1f} {memory[ref] / mem:8.2f} "
              f"{flop / args.batch / 1e9:9.2f}  {mfu(flop, secs, device)}")
    if args.compile and device.type == "cpu":
        print("peak MB under --compile on CPU: counted by a dispatch mode, under which the networks run eager; "
              "compiled memory is measured on CUDA (the allocator's own count)")
    if args.profile:
        print_profile({c.name: op_profile(trainers[c.name].step, device) for c in found})
    plain = "ours: SignReLU + plain head"
    print(f"ratio head: {100 * (times[ref] / times[plain] - 1):+.1f} % step time against the plain head "
          f"(target: at most +5 %)")
    for anchor in (c.name for c in found if not c.name.startswith("ours")):
        print(f"ours vs {anchor}: {times[anchor] / times[ref]:.2f}x the images/s (target >= 1.0, aim 1.3), "
              f"{memory[ref] / memory[anchor]:.2f}x the peak memory (target <= 1.0)")
    for layout in OURS_LAYOUTS.get(args.setting, {}) if not missing else ():
        mine, theirs = OURS + layout, f"denoising-diffusion-pytorch Unet{layout}"
        print(f"same layout, {mine} vs {theirs}: {times[theirs] / times[mine]:.2f}x the images/s, "
              f"{memory[mine] / memory[theirs]:.2f}x the peak memory")


def print_profile(profiles: dict[str, dict[str, float]]) -> None:
    """One profiled step of each network: milliseconds per operator group, and the group's share of the step."""
    groups = list(next(iter(profiles.values())))
    print("\nwhere a step's time goes (torch.profiler, one step; ms, and % of that network's operator time)")
    print(f"{'network':48s} " + " ".join(f"{g:>22s}" for g in groups) + f" {'total':>9s}")
    for name, profile in profiles.items():
        total = sum(profile.values())
        cells = " ".join(f"{1000 * v:12.1f} ({100 * v / total:4.1f} %)" for v in profile.values())
        print(f"{name:48s} {cells} {1000 * total:9.1f}")


def sweep(args, device) -> None:
    """Step time and memory of ours against batch size (at the setting's size) and image size (at --batch)."""
    channels, native = SETTINGS[args.setting][1][0], SETTINGS[args.setting][1][1]
    print(f"ours (SignReLU + ratio head, {args.setting} network), {args.precision}; {machine(device)}")
    print(f"{'batch':>6s} {'size':>5s} {'ms/step':>9s} {'peak MB':>8s} {'time/pixel':>11s} {'memory/pixel':>13s}"
          "  (per batch x pixels, relative to the first row: 1.00 = linear)")
    points = [(b, native) for b in args.batches] + [(args.batch, s) for s in args.sizes]
    first = None
    for b, size in points:
        candidate = ours_candidate("ours", args.setting, size=size)
        tr = Trainer(candidate, batch((channels, size, size), b, device), device, args.precision,
                     args.channels_last, args.compile)
        secs = interleaved_medians({"step": tr.step}, device, args.repeats, args.warmup)["step"]
        mem = tr.step_peak()
        work = b * size * size
        first = first or (secs / work, mem / work)
        print(f"{b:6d} {size:5d} {1000 * secs:9.1f} {mem / 2**20:8.1f} {secs / work / first[0]:11.2f} "
              f"{mem / work / first[1]:13.2f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", choices=sorted(SETTINGS), default="grey28")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--channels_last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile every network's loss (forward + backward)")
    p.add_argument("--fused", action="store_true", help="also ours with the fused (torch.compile) SignReLU")
    p.add_argument("--profile", action="store_true", help="also each network's step time by operator group")
    p.add_argument("--sweep", action="store_true", help="ours alone, against batch size and image size")
    p.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    args = p.parse_args(argv)
    torch.manual_seed(0)
    device = torch.device(args.device)
    (sweep if args.sweep else compare)(args, device)


if __name__ == "__main__":
    main()
