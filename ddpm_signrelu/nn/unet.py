"""U-Net backbone for images (Ho et al. 2020; improved-diffusion layout), activation chosen by config."""

import torch
import torch.nn.functional as F
from torch import nn

from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.nn.activations import make_activation
from ddpm_signrelu.nn.layers import timestep_embedding, zero_init


class ResBlock(nn.Module):
    """GroupNorm → act → conv, plus the time embedding, → GroupNorm → act → dropout → conv; residual."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float, act):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(groups, cin), act(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb = nn.Sequential(act(), nn.Linear(emb_dim, cout))
        self.out_layers = nn.Sequential(nn.GroupNorm(groups, cout), act(), nn.Dropout(dropout),
                                        zero_init(nn.Conv2d(cout, cout, 3, padding=1)))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x) + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.out_layers(h)


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, residual."""

    def __init__(self, channels: int, groups: int, head_channels: int):
        super().__init__()
        if channels % head_channels:
            raise ConfigError(f"attention needs channels ({channels}) divisible by head_channels ({head_channels})")
        self.heads = channels // head_channels
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Resample(nn.Module):
    """A 3×3 convolution that halves the feature map (stride 2) or, with ``up``, follows a nearest ×2 upsampling."""

    def __init__(self, channels: int, up: bool = False):
        super().__init__()
        self.up = up
        self.conv = nn.Conv2d(channels, channels, 3, stride=1 if up else 2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest") if self.up else x)


class UNet(nn.Module):
    """Image backbone: returns features (B, channels, H, W) and the time embedding (B, 4·channels). ``data_shape``
    (C, H, W) needs H, W divisible by 2^(len(channel_mult) − 1), every width channels·mult divisible by ``groups``;
    ``attention_resolutions``: the feature-map sizes (e.g. 16) that get self-attention."""

    def __init__(self, data_shape, channels: int = 64, channel_mult=(1, 2), num_res_blocks: int = 2,
                 attention_resolutions=(), dropout: float = 0.0, groups: int = 32, head_channels: int = 32,
                 activation: str = "signrelu", activation_kwargs: dict | None = None):
        super().__init__()
        levels = len(channel_mult)
        c_in, height, width = _image_shape(data_shape, levels)
        widths = [channels * m for m in channel_mult]
        if bad := sorted({w for w in [channels, *widths] if w % groups}):
            raise ConfigError(f"U-Net widths {bad} are not divisible by the GroupNorm groups ({groups}); "
                              f"change channels/channel_mult or groups")
        reached = {min(height, width) >> i for i in range(levels)}
        if set(attention_resolutions) - reached:
            raise ConfigError(f"attention_resolutions {sorted(attention_resolutions)} must be among the U-Net's "
                              f"feature sizes {sorted(reached)}")
        act = lambda: make_activation(activation, **(activation_kwargs or {}))
        emb_dim = 4 * channels
        self.channels, self.emb_dim, self.features = channels, emb_dim, channels
        self.time_embed = nn.Sequential(nn.Linear(channels, emb_dim), act(), nn.Linear(emb_dim, emb_dim))
        self.input = nn.Conv2d(c_in, channels, 3, padding=1)

        def level_blocks(cin, cout, res):
            blocks = [ResBlock(cin, cout, emb_dim, groups, dropout, act)]
            if res in attention_resolutions:
                blocks.append(Attention(cout, groups, head_channels))
            return nn.ModuleList(blocks)

        self.down, skips, ch, res = nn.ModuleList(), [channels], channels, min(height, width)
        for i, width_i in enumerate(widths):
            for _ in range(num_res_blocks):
                self.down.append(level_blocks(ch, width_i, res))
                ch = width_i
                skips.append(ch)
            if i < levels - 1:
                self.down.append(nn.ModuleList([Resample(ch)]))
                skips.append(ch)
                res //= 2
        self.middle = nn.ModuleList([ResBlock(ch, ch, emb_dim, groups, dropout, act),
                                     Attention(ch, groups, head_channels),
                                     ResBlock(ch, ch, emb_dim, groups, dropout, act)])
        self.up = nn.ModuleList()
        for i, width_i in reversed(list(enumerate(widths))):
            for j in range(num_res_blocks + 1):
                blocks = level_blocks(ch + skips.pop(), width_i, res)
                ch = width_i
                if i > 0 and j == num_res_blocks:
                    blocks.append(Resample(ch, up=True))
                    res *= 2
                self.up.append(blocks)
        self.out = nn.Sequential(nn.GroupNorm(groups, ch), act())

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.time_embed(timestep_embedding(t, self.channels, dtype=x.dtype))
        h = self.input(x)
        hs = [h]
        for blocks in self.down:
            for block in blocks:
                h = block(h, emb)
            hs.append(h)
        for block in self.middle:
            h = block(h, emb)
        for blocks in self.up:
            h = torch.cat([h, hs.pop()], dim=1)
            for block in blocks:
                h = block(h, emb)
        return self.out(h), emb


def _image_shape(data_shape, levels: int) -> tuple[int, int, int]:
    if len(data_shape) != 3:
        raise ConfigError(f"the U-Net needs image data of shape (C, H, W), got {tuple(data_shape)}; "
                          f"use the 'mlp' network for vector data")
    c_in, height, width = (int(s) for s in data_shape)
    factor = 2 ** (levels - 1)
    if height % factor or width % factor:
        sizes = ", ".join(str(factor * k) for k in range(1, 9))
        raise ConfigError(f"image size {height}x{width} cannot pass the U-Net's {levels - 1} downsamplings "
                          f"(channel_mult has {levels} levels): it takes sizes divisible by {factor} "
                          f"({sizes}, ...); resize the data or use fewer channel_mult levels")
    return c_in, height, width
