"""Where a Credit Default training step spends its time: the config's network and loss at the codec's row width,
against the plain codec's width, fewer ratio-head atoms and the plain head, timed in turns in one process.

    python -m benchmarks.tabular_step                       # widths 143 (the config's codec) and 95 (plain codec)
    python -m benchmarks.tabular_step --atoms 16 8 4 --batch 512

A step is forward, backward and an AdamW update of ``configs/credit_default.yaml``'s model on a fixed batch of
``--batch`` rows (the config's batch size) of random normal coordinates (the step's cost does not depend on the
values). Rows of the config's codec on the seed-0 split are 143 numbers wide, of the plain codec (no relations or
sequences) 95. MFLOP/row counts the matmuls of forward and backward (torch.utils.flop_counter); "head share" is the
share of those in the ratio head's atom and logit read-outs; "time ratio" is the row's step time over the config's.
"""

import argparse

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import interleaved_medians
from benchmarks.tabular_quality import CONFIG
from ddpm_signrelu.lit import DiffusionModel


def model(width: int, head: dict) -> DiffusionModel:
    settings = yaml.safe_load(CONFIG.read_text())["model"]
    return DiffusionModel(data_shape=(width,), num_levels=None, **{**settings, "head": head})


def step_and_flops(network: DiffusionModel, batch: int):
    """(one training step, its MFLOP per row in total and in the head's read-outs)."""
    x0 = torch.randn(batch, *network.data_shape)
    t, noise = torch.randint(0, network.diffusion.num_timesteps, (batch,)), torch.randn_like(x0)
    opt = torch.optim.AdamW(network.parameters(), lr=1e-3)

    def step():
        network.diffusion.loss_per_example(network.model, x0, t, noise).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        network.diffusion.loss_per_example(network.model, x0, t, noise).mean().backward()
    opt.zero_grad(set_to_none=True)
    by_module = counter.get_flop_counts()
    head = sum(sum(ops.values()) for name, ops in by_module.items() if name.endswith(("head.atoms", "head.logits")))
    return step, counter.get_total_flops() / batch / 1e6, head / counter.get_total_flops()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=int, nargs="+", default=[143, 95])
    p.add_argument("--atoms", type=int, nargs="+", default=[16, 8], help="ratio-head atoms (the config: 16)")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    head = yaml.safe_load(CONFIG.read_text())["model"]["head"]
    runs = {f"{w} wide, {k} atoms": (w, {**head, "num_atoms": k}) for w in args.widths for k in args.atoms}
    runs.update({f"{w} wide, plain head": (w, {"name": "plain", "parameterization": "v"}) for w in args.widths})
    measured = {name: step_and_flops(model(*spec), args.batch) for name, spec in runs.items()}
    seconds = interleaved_medians({name: m[0] for name, m in measured.items()}, torch.device("cpu"), args.repeats)
    reference = seconds[next(iter(runs))]
    print(f"threads: {torch.get_num_threads()}, batch {args.batch}")
    print("| network | ms/step | MFLOP/row | head share | time ratio |\n|---|---|---|---|---|")
    for name, (_, mflop, share) in measured.items():
        print(f"| {name} | {1e3 * seconds[name]:.1f} | {mflop:.2f} | {share:.2f} | {seconds[name] / reference:.2f} |")


if __name__ == "__main__":
    main()
