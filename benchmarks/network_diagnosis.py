"""What a reverse network computes inside, at given noise levels: for the factorial of
``benchmarks/time_to_quality.py``, where the SignReLU + ratio-head model is compared with its plain twins.

- :func:`loss_by_t`: the denoising error on fixed held-out items at steps spread evenly in log-SNR;
- :func:`diagnose`: per block of the network, the norm of the training loss's gradient and where its activations'
  inputs fall (below 0: SignReLU's dividing branch; below −1: where its slope α/(1 + |x|)² is under α/4); for a
  softmax-atom ratio head, the entropy of the atoms' weights as an effective number of atoms exp(H) and the range of
  the denominator f2 = Σ_k u_k ∈ [1, K];
- :func:`atom_spread`: how far a softmax-atom head's atoms are apart, against the read-out they share, and how much
  of that spread is still the initialisation's. ``python -m benchmarks.network_diagnosis CKPT --seed S`` prints it
  for a checkpoint of ``benchmarks/time_to_quality.py`` and for the same model rebuilt at initialisation with seed S.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import defaultdict

import torch
from torch import nn

from ddpm_signrelu.checkpoints import load_model
from ddpm_signrelu.diffusion.process import q_sample
from ddpm_signrelu.lit import DiffusionModel
from ddpm_signrelu.nn.activations import ACTIVATIONS
from ddpm_signrelu.nn.heads import RatioAtomHead
from ddpm_signrelu.seeding import generator


def log_snr_steps(schedule, count: int = 8) -> list[int]:
    """``count`` step indices (0-based) whose log-SNR is evenly spaced from step 1's to step T's."""
    log_snr = schedule.log_snr
    targets = torch.linspace(float(log_snr[0]), float(log_snr[-1]), count, dtype=log_snr.dtype)
    return [int((log_snr - v).abs().argmin()) for v in targets]


def block_of(name: str) -> str:
    """The block a parameter or module belongs to: ``head``, ``time_embed``, ``input``, ``down.3``, ``middle``,
    ``up.1``, ``out`` (``backbone.`` dropped; an MLP's blocks likewise by their first two name parts)."""
    parts = re.sub(r"^(model\.)?(backbone\.)?", "", name).split(".")
    if parts[0] in ("down", "up", "blocks") and len(parts) > 1:
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


def fixed_draws(x0: torch.Tensor, seed: int) -> torch.Tensor:
    """One fixed ε per item of ``x0``, from (``seed``, item)."""
    return torch.stack([torch.randn(x.shape, generator=generator(seed, j), dtype=x0.dtype) for j, x in enumerate(x0)])


@torch.no_grad()
def loss_by_t(model, x0: torch.Tensor, steps: list[int], seed: int = 0) -> list[float]:
    """The denoising error (1/D)‖x0 − x̂0‖² of the x̂0 the sampler uses (clipped to [−1, 1] where the model clips),
    mean over ``x0``'s items with the same ε for every step, at each step of ``steps``. Unlike the training loss it
    does not depend on what the head predicts or on the loss weighting (a v-head's L_simple vanishes at high noise
    whatever its x̂0 there), so models compare step by step."""
    noise = fixed_draws(x0, seed)
    errors = []
    for t in steps:
        tt = torch.full((len(x0),), t)
        errors.append(float((x0 - model.denoise(q_sample(model.diffusion.schedule, x0, tt, noise), tt)).square().mean()))
    return errors


def gradient_norms(model, x0: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """‖∇_θ L‖ of each block for the training loss on ``x0`` at seeded uniform steps; ``total`` over all."""
    g = generator(seed, 1)
    t = torch.randint(0, model.diffusion.num_timesteps, (len(x0),), generator=g)
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        model.diffusion.loss_per_example(model.model, x0, t, fixed_draws(x0, seed)).mean().backward()
    squares = defaultdict(float)
    for name, p in model.model.named_parameters():
        if p.grad is not None:
            squares[block_of(name)] += float(p.grad.double().square().sum())
    model.zero_grad(set_to_none=True)
    return {**{k: math.sqrt(v) for k, v in squares.items()}, "total": math.sqrt(sum(squares.values()))}


class _Inputs:
    """Forward hooks that count, per block, the activations' inputs below 0 and below −1, and keep the ratio head's
    entropy and f2."""

    def __init__(self, network: nn.Module):
        self.counts = defaultdict(lambda: [0, 0, 0])  # block -> [inputs, below 0, below -1]
        self.head: dict[str, list[float]] = defaultdict(list)
        activations = tuple(ACTIVATIONS.values())
        self.handles = [m.register_forward_hook(self._activation(block_of(n)))
                        for n, m in network.named_modules() if isinstance(m, activations)]
        if isinstance(getattr(network, "head", None), RatioAtomHead):
            self.handles.append(network.head.register_forward_hook(self._ratio))

    def _activation(self, block: str):
        def hook(module, inputs, output):
            x = inputs[0].detach()
            counts = self.counts[block]
            counts[0] += x.numel()
            counts[1] += int((x < 0).sum())
            counts[2] += int((x < -1).sum())
        return hook

    def _ratio(self, head, inputs, output):
        h, emb = (a.detach().float() for a in inputs)
        p = torch.softmax(head.scaled_logits(h, emb), dim=1)
        entropy = -(p * p.clamp_min(1e-30).log()).sum(1)
        f2 = 1 / p.amax(dim=1)  # Σ_k exp(Λ_k − max Λ) = 1 / max_k p_k
        self.head["effective_atoms"].append(float(entropy.exp().mean()))
        self.head["f2_min"].append(float(f2.min()))
        self.head["f2_median"].append(float(f2.median()))
        self.head["f2_max"].append(float(f2.max()))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@torch.no_grad()
def diagnose(model, x0: torch.Tensor, steps: list[int], seed: int = 0) -> dict:
    """At each step of ``steps`` on the items ``x0``: the share of activation inputs below 0 and below −1 (over
    the whole network, and per block over all steps), and for a ratio head its effective number of atoms and the
    range of f2; then :func:`gradient_norms`."""
    hooks, by_step = _Inputs(model.model), defaultdict(list)
    noise = fixed_draws(x0, seed)
    try:
        for t in steps:
            before = {k: list(v) for k, v in hooks.counts.items()}
            tt = torch.full((len(x0),), t)
            model.model(q_sample(model.diffusion.schedule, x0, tt, noise), tt)
            step = [sum(v[i] - before.get(k, [0, 0, 0])[i] for k, v in hooks.counts.items()) for i in range(3)]
            by_step["below_0"].append(step[1] / max(step[0], 1))
            by_step["below_minus_1"].append(step[2] / max(step[0], 1))
    finally:
        hooks.remove()
    blocks = {k: {"below_0": v[1] / v[0], "below_minus_1": v[2] / v[0]} for k, v in hooks.counts.items() if v[0]}
    return {"steps": steps, **by_step, **hooks.head, "blocks": blocks, "grad_norms": gradient_norms(model, x0, seed)}



def atom_weights(head: RatioAtomHead) -> tuple[torch.Tensor, torch.Tensor]:
    """(shared read-out (C, P), atom differences (K, C, P)) of a softmax-atom head, P its weights per output.
    Free atoms share their mean; residual atoms share B and differ by D_k − mean_j D_j."""
    k, c = head.num_atoms, head.out_channels
    atoms = _weights(head.atoms).view(k, c, -1)
    differences = atoms - atoms.mean(0, keepdim=True)
    return (atoms.mean(0) if head.readout is None else _weights(head.readout)), differences


def _weights(layer: nn.Module) -> torch.Tensor:
    """A read-out's weights (out, F·k·k) and bias as one matrix (out, F·k·k + 1)."""
    return torch.cat([layer.weight.flatten(1), layer.bias[:, None]], 1).detach()


def atom_spread(head: RatioAtomHead, initial: RatioAtomHead | None = None) -> dict[str, float]:
    """‖shared read-out‖ and ‖atom differences‖ (Frobenius) and, given the head at initialisation, the cosine
    between the differences now and then (1: the atoms still differ as they were drawn)."""
    shared, differences = atom_weights(head)
    out = {"shared_norm": float(shared.norm()), "spread_norm": float(differences.norm())}
    if initial is not None:
        before = atom_weights(initial)[1]
        out["spread_cosine_to_init"] = float((differences * before).sum() / (differences.norm() * before.norm()))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="A softmax-atom head's atom spread in a checkpoint and at its "
                                                 "initialisation.")
    parser.add_argument("checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="the seed the run was initialised with")
    args = parser.parse_args(argv)
    model = load_model(args.checkpoint)
    if not isinstance(model.model.head, RatioAtomHead):
        parser.error(f"{args.checkpoint} has a {type(model.model.head).__name__}, not a softmax-atom ratio head")
    torch.manual_seed(args.seed)
    initial = DiffusionModel(**model.hparams).model.head
    print(json.dumps({"initialisation": atom_spread(initial), "checkpoint": atom_spread(model.model.head, initial)}))


if __name__ == "__main__":
    main()
