"""scikit-learn's 8×8 handwritten digits: the embedded default dataset (no download)."""

import torch

from ddpm_signrelu.data.base import TensorDataModule


class DigitsDataModule(TensorDataModule):
    """1,797 digits, 1×8×8, 17 grey levels u ∈ {0..16} (served as x = u/8 − 1)."""

    data_shape = (1, 8, 8)
    num_levels = 17

    def load(self) -> torch.Tensor:
        from sklearn.datasets import load_digits

        return torch.from_numpy(load_digits().images).to(self.storage_dtype).view(-1, *self.data_shape)
