"""A backbone plus a head: the reverse-process network, built from plain config dicts."""

import inspect
import math

import torch
import yaml
from torch import nn

from ddpm_signrelu.errors import ConfigError, check_choice
from ddpm_signrelu.nn.heads import HEADS
from ddpm_signrelu.nn.mlp import MLP
from ddpm_signrelu.nn.unet import UNet

NETWORKS = {"unet": UNet, "mlp": MLP}


class ReverseNetwork(nn.Module):
    """backbone(x_t, t) → head: the head's x0, ε or v prediction (``head.parameterization``), of the data's shape."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h, emb = self.backbone(x, t)
        return self.head(h, emb).reshape(x.shape)


_FIXED = {"network": ("data_shape",), "head": ("features", "out_channels", "emb_dim")}


def resolve_config(kind: str, config: dict) -> dict:
    """``config`` checked for unknown keys, every option filled in with its default: the form checkpoints store."""
    registry = NETWORKS if kind == "network" else HEADS
    config = dict(config)
    name = config.pop("name", None)
    check_choice(kind, name, registry)
    params = {k: p for k, p in inspect.signature(registry[name]).parameters.items() if k not in _FIXED[kind]}
    if unknown := set(config) - set(params):
        raise ConfigError(f"unknown {kind} option(s) {sorted(unknown)} for {name!r}; valid: {sorted(params)}")
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    config = {k: _typed(kind, k, v, defaults.get(k)) for k, v in config.items()}
    return {"name": name, **defaults, **config}


def _typed(kind: str, key: str, value, default):
    """A command-line option (text) read as its default's type is written in YAML (numbers, booleans, lists)."""
    if not isinstance(value, str) or default is None or isinstance(default, str):
        return value
    try:
        parsed = float(value) if isinstance(default, float) else yaml.safe_load(value)
    except (ValueError, yaml.YAMLError):
        parsed = value
    if not isinstance(parsed, type(default)) or isinstance(parsed, bool) != isinstance(default, bool):
        raise ConfigError(f"{kind} option {key} must be of type {type(default).__name__}, as its default "
                          f"{default!r} is, got {value!r}")
    return parsed


def build_network(data_shape, network: dict, head: dict) -> ReverseNetwork:
    """Build e.g. ``network={"name": "unet", "channels": 64}``, ``head={"name": "ratio_atoms", "num_atoms": 8}``."""
    data_shape = tuple(int(s) for s in data_shape)
    network, head = resolve_config("network", network), resolve_config("head", head)
    backbone = NETWORKS[network.pop("name")](data_shape=data_shape, **network)
    if head.get("kernel_size", 1) > 1 and not isinstance(backbone, UNet):
        raise ConfigError(f"head kernel_size {head['kernel_size']} reads a neighbourhood of image features; the "
                          f"{type(backbone).__name__} gives vectors: use kernel_size 1")
    out_channels = data_shape[0] if isinstance(backbone, UNet) else math.prod(data_shape)
    return ReverseNetwork(backbone, HEADS[head.pop("name")](features=backbone.features, out_channels=out_channels,
                                                      emb_dim=backbone.emb_dim, **head))
