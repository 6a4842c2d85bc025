"""LightningDataModules."""

from ddpm_signrelu.data.base import TensorDataModule, levels_to_unit
from ddpm_signrelu.data.batches import GlobalBatchSampler, LocalBatch
from ddpm_signrelu.data.digits import DigitsDataModule
from ddpm_signrelu.data.mixture import GaussianMixture, GaussianMixtureDataModule
from ddpm_signrelu.data.tabular import CreditDefaultDataModule, TabularDataModule
from ddpm_signrelu.data.vision import (CIFAR10DataModule, FashionMNISTDataModule, ImageFolderDataModule,
                                      KMNISTDataModule, MNISTDataModule, TorchvisionDataModule)

__all__ = ["CIFAR10DataModule", "CreditDefaultDataModule", "DigitsDataModule", "FashionMNISTDataModule",
           "GaussianMixture", "GaussianMixtureDataModule", "GlobalBatchSampler", "ImageFolderDataModule",
           "KMNISTDataModule", "LocalBatch", "MNISTDataModule", "TabularDataModule", "TensorDataModule",
           "TorchvisionDataModule", "levels_to_unit"]
