"""The networks compared: the shipped SignReLU U-Net + ratio head, and the anchors at matched size.

Two settings, each the shipped config's network and its anchors sized to within 10 % of its parameters:

- ``grey28``: ``configs/mnist.yaml`` (1×28×28); diffusers ``UNet2DModel`` with the same widths (64, 128, 128) and
  attention at 7×7; denoising-diffusion-pytorch ``Unet(dim=72, dim_mults=(1, 2, 2))``, full attention at 7×7.
- ``rgb32``: ``configs/cifar10.yaml`` (3×32×32, Ho et al.'s CIFAR-10 network); diffusers with the layout of
  ``google/ddpm-cifar10-32``; denoising-diffusion-pytorch twice: ``Unet(dim=144, dim_mults=(1, 2, 2, 2))`` with
  full attention at 16×16 (ours' layout), and its README's ``Unet(dim=64, dim_mults=(1, 2, 4, 8))``, which puts
  the parameters at low resolution and so does 3× fewer FLOP at the same parameter count.

Every network trains on the same loss, ‖ε − ε̂‖² (ours through its own ``loss_per_example``, which reads ε̂ off the
ratio head's v-atoms), with dropout 0.1 as in the shipped configs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ddpm_signrelu.diffusion import q_sample
from ddpm_signrelu.lit import DiffusionModel

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SETTINGS = {"grey28": ("mnist", (1, 28, 28)), "rgb32": ("cifar10", (3, 32, 32))}
DROPOUT = 0.1
OURS = "ours: SignReLU + ratio head"


@dataclass
class Candidate:
    """A network, the loss of one training batch, and x̂0(x_t, t) for sampling."""

    name: str
    module: nn.Module
    loss: Callable

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


def ours(setting: str, size: int | None = None, **overrides) -> DiffusionModel:
    """The shipped config's model for ``setting``; ``overrides`` replace model keys (the head as a whole), and
    ``network`` options one by one.

    ``size`` resizes the images; self-attention then stays at the same U-Net level.
    """
    config_name, shape = SETTINGS[setting]
    model = yaml.safe_load((CONFIGS / f"{config_name}.yaml").read_text())["model"]
    if size is not None:
        level = (shape[1] // model["network"]["attention_resolutions"][0]).bit_length() - 1
        model["network"]["attention_resolutions"] = [size >> level]
        shape = (shape[0], size, size)
    model["network"] = {**model["network"], **overrides.pop("network", {})}
    return DiffusionModel(data_shape=shape, **{**model, **overrides})


def ours_candidate(name: str, setting: str, **overrides) -> Candidate:
    model = ours(setting, **overrides)
    return Candidate(name, model,
                     lambda x0, t, noise: model.diffusion.loss_per_example(model.model, x0, t, noise).mean())


def _eps_candidate(name: str, net: nn.Module, schedule, unwrap=lambda out: out) -> Candidate:
    def loss(x0, t, noise):
        return F.mse_loss(unwrap(net(q_sample(schedule, x0, t, noise), t)), noise)
    return Candidate(name, net, loss)


def diffusers_twin(model: DiffusionModel) -> nn.Module:
    """diffusers' ``UNet2DModel`` in the layout of ours' U-Net ``model``: the same widths, residual blocks per level,
    attention levels, group norm and dropout."""
    from diffusers import UNet2DModel

    network, (channels, size, _) = model.hparams.network, model.data_shape
    widths = tuple(network["channels"] * m for m in network["channel_mult"])
    attention = [size >> level in network["attention_resolutions"] for level in range(len(widths))]
    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=widths,
                       down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
                       up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
                       layers_per_block=network["num_res_blocks"], norm_num_groups=network["groups"],
                       dropout=network["dropout"])


def diffusers_unet(setting: str) -> nn.Module:
    """diffusers' ``UNet2DModel`` in the layout of the shipped config's network (``google/ddpm-cifar10-32``'s at
    rgb32)."""
    return diffusers_twin(ours(setting))


def diffusers_candidate(model: DiffusionModel) -> Candidate:
    """:func:`diffusers_twin` of ``model``, trained on ‖ε − ε̂‖² under ``model``'s noise schedule."""
    return _eps_candidate("diffusers UNet2DModel", diffusers_twin(model), model.diffusion.schedule,
                          lambda out: out.sample)


LUCIDRAINS_LAYOUTS = {
    "grey28": {"": dict(dim=72, dim_mults=(1, 2, 2), full_attn=(False, False, True))},
    "rgb32": {"": dict(dim=144, dim_mults=(1, 2, 2, 2), full_attn=(False, True, False, False)),
              ", README layout": dict(dim=64, dim_mults=(1, 2, 4, 8))},
}
"""denoising-diffusion-pytorch ``Unet`` options per setting, keyed by the suffix of the row's name."""

OURS_LAYOUTS = {
    "rgb32": {", README layout": dict(channels=48, channel_mult=[1, 2, 4, 8], attention_resolutions=[4], groups=16)},
}
"""Ours rebuilt in an anchor's layout (network options), same suffix: that pair compares implementations alone."""


def lucidrains_unet(setting: str, layout: str = "") -> nn.Module:
    from denoising_diffusion_pytorch import Unet

    channels = SETTINGS[setting][1][0]
    return Unet(channels=channels, dropout=DROPOUT, **LUCIDRAINS_LAYOUTS[setting][layout])


def candidates(setting: str, anchors: bool = True) -> list[Candidate]:
    """Ours (SignReLU + ratio head), its SignReLU + plain-head and SiLU + plain-head twins, ours in the anchors'
    layouts (:data:`OURS_LAYOUTS`), then the anchors."""
    found = [
        ours_candidate(OURS, setting),
        ours_candidate("ours: SignReLU + plain head", setting, head={"name": "plain", "parameterization": "eps"}),
        ours_candidate("ours: SiLU + plain head", setting, network={"activation": "silu"},
                       head={"name": "plain", "parameterization": "eps"}),
    ]
    for layout, network in OURS_LAYOUTS.get(setting, {}).items():
        found.append(ours_candidate(OURS + layout, setting, network=network))
    if anchors:
        schedule = found[0].module.diffusion.schedule
        found.append(diffusers_candidate(found[0].module))
        for layout in LUCIDRAINS_LAYOUTS[setting]:
            found.append(_eps_candidate(f"denoising-diffusion-pytorch Unet{layout}", lucidrains_unet(setting, layout),
                                        schedule))
    return found


def batch(shape, size: int, device: torch.device, seed: int = 0):
    """A fixed training batch (x0 in [−1, 1], t, ε) of ``size`` items of ``shape``."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand((size, *shape), generator=g) * 2 - 1
    t = torch.randint(0, 1000, (size,), generator=g)
    return x0.to(device), t.to(device), torch.randn((size, *shape), generator=g).to(device)
