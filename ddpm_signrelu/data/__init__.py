"""LightningDataModules."""

from ddpm_signrelu.data.base import TensorDataModule, levels_to_unit
from ddpm_signrelu.data.digits import DigitsDataModule
from ddpm_signrelu.data.mixture import GaussianMixture, GaussianMixtureDataModule

__all__ = ["DigitsDataModule", "GaussianMixture", "GaussianMixtureDataModule", "TensorDataModule", "levels_to_unit"]
