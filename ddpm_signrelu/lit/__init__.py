"""The LightningModule."""

from ddpm_signrelu.lit.module import CHECKPOINT_KEY, DiffusionModel, setting_differences

__all__ = ["CHECKPOINT_KEY", "DiffusionModel", "setting_differences"]
