"""LightningDataModules."""

from ddpm_signrelu.data.base import TensorDataModule, levels_to_unit
from ddpm_signrelu.data.digits import DigitsDataModule

__all__ = ["DigitsDataModule", "TensorDataModule", "levels_to_unit"]
