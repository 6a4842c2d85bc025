"""Writing sampled images: quantized to the data's levels, as a PNG grid and an improved-diffusion style .npz."""

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import save_image

from ddpm_signrelu.errors import ConfigError


def to_uint8(x: torch.Tensor, num_levels: int | None) -> torch.Tensor:
    """Quantize samples in [−1, 1] to the data's ``num_levels`` levels (256 if None), then to 0..255 uint8."""
    levels = num_levels or 256
    u = ((x.clamp(-1, 1) + 1) * (levels - 1) / 2).round()
    return (u * (255 / (levels - 1))).round().to(torch.uint8)


def save_samples(images: torch.Tensor, output: str | os.PathLike, prefix: str = "samples") -> tuple[Path, Path]:
    """Write uint8 images (N, C, H, W) as ``<prefix>.png`` (a grid) and ``<prefix>_NxHxWxC.npz`` (``arr_0``, NHWC)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    png = output / f"{prefix}.png"
    save_image(images.float() / 255, png, nrow=math.ceil(math.sqrt(len(images))), padding=1)
    nhwc = images.permute(0, 2, 3, 1).cpu().numpy()
    npz = output / f"{prefix}_{'x'.join(str(s) for s in nhwc.shape)}.npz"
    np.savez(npz, arr_0=nhwc)
    return png, npz


def writable_folder(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` if needed and check that files can be written in it; else a ConfigError."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"output {folder} is a file, not a folder; give a folder for the samples")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise ConfigError(f"cannot write to output folder {folder} ({err.strerror}); give a writable folder") from None
    return folder
