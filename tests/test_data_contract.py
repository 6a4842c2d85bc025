"""The data contract: quantized data held as uint8 levels (4x smaller than float32) and converted to float32 in
[−1, 1] only when served; continuous data held and served as float32."""

import pytest
import torch
from sklearn.datasets import load_digits

from ddpm_signrelu.data import DigitsDataModule, GaussianMixtureDataModule, levels_to_unit
from ddpm_signrelu.errors import ConfigError


def test_digits_are_held_as_uint8_levels_and_served_as_floats():
    dm = DigitsDataModule(batch_size=32, val_size=100, seed=2, hflip=True)
    dm.setup("fit")
    assert dm.storage_dtype == dm.train_data.dtype == dm.val_data.dtype == torch.uint8
    assert dm.train_data.shape == (1697, 1, 8, 8)
    assert dm.train_data.untyped_storage().nbytes() == 1697 * 64  # a byte a pixel: 4x smaller than float32
    perm = torch.randperm(1797, generator=torch.Generator().manual_seed(2))
    levels = torch.from_numpy(load_digits().images).to(torch.uint8)[:, None]  # grey levels 0..16
    assert torch.equal(dm.val_data, levels[perm[:100]]) and torch.equal(dm.train_data, levels[perm[100:]])
    unit = dm.to_unit(dm.train_data)
    assert unit.dtype == torch.float32 and torch.equal(unit, levels[perm[100:]].float() / 8 - 1)
    assert unit.min() == -1 and unit.max() == 1 and dm.train_data.dtype == torch.uint8  # converted, not in place
    x, index, *_ = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.float32
    for image, i in zip(x, index):  # each served image is its stored levels, or their mirror image, as floats
        assert torch.equal(image, unit[i]) or torch.equal(image, unit[i].flip(-1))
    val_x, val_index = next(iter(dm.val_dataloader()))
    assert val_x.dtype == torch.float32 and torch.equal(val_x, dm.val_data[val_index].float() / 8 - 1)


def test_levels_to_unit_in_any_dtype_leaves_its_input_alone():
    u = torch.arange(256, dtype=torch.uint8)
    x32, x64 = levels_to_unit(u, 256), levels_to_unit(u, 256, torch.float64)
    assert x32.dtype == torch.float32 and x64.dtype == torch.float64
    torch.testing.assert_close(x64, torch.arange(256, dtype=torch.float64) / 127.5 - 1, rtol=0, atol=1e-15)
    assert x64[0] == -1 and x64[255] == 1
    torch.testing.assert_close(x32, x64.float(), rtol=0, atol=1.2e-7)  # float32 rounding: at most 1 ulp
    floats = torch.arange(17.0)
    assert torch.equal(levels_to_unit(floats, 17), floats / 8 - 1) and torch.equal(floats, torch.arange(17.0))


def test_continuous_data_stay_float():
    dm = GaussianMixtureDataModule(shape=[2], num_train=64, val_size=32, batch_size=16)
    dm.setup("fit")
    assert dm.storage_dtype == dm.train_data.dtype == torch.float32
    assert dm.to_unit(dm.train_data) is dm.train_data
    x, index, *_ = next(iter(dm.train_dataloader()))
    assert torch.equal(x, dm.train_data[index])


class FloatDigits(DigitsDataModule):
    """A data module that follows the old contract: floats in [−1, 1] although its data are quantized."""

    def load(self):
        return levels_to_unit(super().load(), self.num_levels)


def test_quantized_data_loaded_as_floats_are_refused():
    with pytest.raises(ConfigError, match=r"FloatDigits loaded torch.float32 / torch.float32 data, but data with "
                                          r"num_levels=17 are held as torch.uint8: return integer levels"):
        FloatDigits(val_size=10).setup("fit")
