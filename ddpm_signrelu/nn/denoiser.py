"""A backbone plus a head: the reverse-process network, built from plain config dicts."""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from ddpm_signrelu.errors import ConfigError, check_choice
from ddpm_signrelu.nn.heads import HEADS
from ddpm_signrelu.nn.mlp import MLP
from ddpm_signrelu.nn.unet import UNet

NETWORKS = {"unet": UNet, "mlp": MLP}


class Denoiser(nn.Module):
    """network(x_t, t) → head → prediction of the data's shape; ``parameterization`` is the head's."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.parameterization = head.parameterization

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h, emb = self.backbone(x, t)
        return self.head(h, emb).reshape(x.shape)


def build_denoiser(data_shape, network: dict, head: dict) -> Denoiser:
    """Build e.g. ``network={"name": "unet", "channels": 64}``, ``head={"name": "ratio_atoms", "num_atoms": 8}``."""
    data_shape = tuple(int(s) for s in data_shape)
    backbone = _build("network", NETWORKS, network, data_shape=data_shape)
    out_channels = data_shape[0] if isinstance(backbone, UNet) else math.prod(data_shape)
    return Denoiser(backbone, _build("head", HEADS, head, features=backbone.features, out_channels=out_channels,
                                     emb_dim=backbone.emb_dim))


def _build(kind: str, registry: dict, config: dict, **fixed):
    config = dict(config)
    name = config.pop("name", None)
    check_choice(kind, name, registry)
    cls = registry[name]
    accepted = set(inspect.signature(cls).parameters) - set(fixed)
    unknown = set(config) - accepted
    if unknown:
        raise ConfigError(f"unknown {kind} option(s) {sorted(unknown)} for {name!r}; valid: {sorted(accepted)}")
    return cls(**fixed, **config)
