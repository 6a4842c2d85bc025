"""Residual MLP backbone with a time embedding, for vector data (any shape, flattened)."""

import math

import torch
from torch import nn

from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.nn.activations import init_gain, make_activation
from ddpm_signrelu.nn.layers import timestep_embedding, zero_init


class MLPBlock(nn.Module):
    """h + W2·act(W1·h + E·emb): a residual block conditioned on the time embedding."""

    def __init__(self, width: int, emb_dim: int, act: nn.Module, gain: float):
        super().__init__()
        self.act = act
        self.fc1, self.emb = nn.Linear(width, width), nn.Linear(emb_dim, width)
        self.fc2 = zero_init(nn.Linear(width, width))
        nn.init.normal_(self.fc1.weight, std=gain / math.sqrt(width))
        nn.init.zeros_(self.fc1.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(self.act(self.fc1(h) + self.emb(emb)))


class MLP(nn.Module):
    """Backbone for vector data: features (B, width) and time embedding (B, width); init gains of theory.md §2."""

    def __init__(self, data_shape, width: int = 256, depth: int = 4, activation: str = "signrelu",
                 activation_kwargs: dict | None = None):
        super().__init__()
        if width < 1 or depth < 1:
            raise ConfigError(f"MLP width and depth must be >= 1, got width={width}, depth={depth}")
        self.dim = math.prod(int(s) for s in data_shape)
        self.width, self.emb_dim, self.features = width, width, width
        act = make_activation(activation, **(activation_kwargs or {}))
        gain = init_gain(act, num_samples=200_000)
        self.time_embed = nn.Sequential(nn.Linear(width, width), act, nn.Linear(width, width))
        self.input = nn.Linear(self.dim, width)
        self.blocks = nn.ModuleList(MLPBlock(width, width, act, gain) for _ in range(depth))
        self.out = act

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.time_embed(timestep_embedding(t, self.width, dtype=x.dtype))
        h = self.input(x.flatten(1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h), emb
