"""scikit-learn's 8×8 handwritten digits: the embedded default dataset (no download)."""

from __future__ import annotations

import torch

from ddpm_signrelu.data.base import TensorDataModule, levels_to_unit


class DigitsDataModule(TensorDataModule):
    """1,797 digits, 1×8×8, 17 grey levels (0..16) mapped to x = u/8 − 1, matching the decoder's bins."""

    data_shape = (1, 8, 8)
    num_levels = 17

    def load(self) -> torch.Tensor:
        from sklearn.datasets import load_digits

        images = torch.from_numpy(load_digits().images).view(-1, *self.data_shape)
        return levels_to_unit(images, self.num_levels)
