"""The LightningModule, and the CSV log that resumed runs continue."""

from ddpm_signrelu.lit.csv_logger import ResumableCSVLogger
from ddpm_signrelu.lit.module import CHECKPOINT_KEY, DiffusionModel, setting_differences

__all__ = ["CHECKPOINT_KEY", "DiffusionModel", "ResumableCSVLogger", "setting_differences"]
