"""Reading checkpoints and writing samples (PNG grid, improved-diffusion style .npz)."""

from __future__ import annotations

import math
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import save_image

from ddpm_signrelu.errors import CheckpointError
from ddpm_signrelu.lit import CHECKPOINT_KEY, DiffusionModel


def to_uint8(x: torch.Tensor, num_levels: int | None) -> torch.Tensor:
    """Quantize samples in [−1, 1] to the data's ``num_levels`` levels (256 if None), then to 0..255 uint8."""
    levels = num_levels or 256
    u = ((x.clamp(-1, 1) + 1) * (levels - 1) / 2).round()
    return (u * (255 / (levels - 1))).round().to(torch.uint8)


def save_samples(images: torch.Tensor, output: str | os.PathLike, prefix: str = "samples") -> tuple[Path, Path]:
    """Write uint8 images (N, C, H, W) as ``<prefix>.png`` (a grid) and ``<prefix>_NxHxWxC.npz`` (``arr_0``, NHWC)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    n = len(images)
    png = output / f"{prefix}.png"
    save_image(images.float() / 255, png, nrow=math.ceil(math.sqrt(n)), padding=1)
    nhwc = images.permute(0, 2, 3, 1).cpu().numpy()
    npz = output / f"{prefix}_{'x'.join(str(s) for s in nhwc.shape)}.npz"
    np.savez(npz, arr_0=nhwc)
    return png, npz


def load_model(ckpt_path: str | os.PathLike, map_location="cpu", compile: bool | dict = False) -> DiffusionModel:
    """Load a model from a checkpoint of this package (EMA weights when EMA was on), with clear errors.
    ``compile``: the model's ``compile`` setting here, whatever the training run used (it applies when a Trainer
    sets the model up)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: it is corrupt or not a torch file ({err})") from None
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        raise CheckpointError(f"{path} is not a ddpm_signrelu checkpoint (no '{CHECKPOINT_KEY}' entry); "
                              f"pass a checkpoint written by 'python train.py'")
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}  # LightningCLI's
    model = DiffusionModel(**{**hparams, "compile": compile})
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(map_location).eval()
