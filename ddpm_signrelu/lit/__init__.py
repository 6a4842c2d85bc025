"""The LightningModule."""

from ddpm_signrelu.lit.module import CHECKPOINT_KEY, DiffusionModel

__all__ = ["CHECKPOINT_KEY", "DiffusionModel"]
