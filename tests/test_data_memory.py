"""RiskMetrics' memory check at the real sizes of the shipped configs' datasets, from sizes alone (no data loaded)."""

from pathlib import Path

import pytest
import torch

from ddpm_signrelu.callbacks import RiskMetrics
from ddpm_signrelu.cli import build_run
from ddpm_signrelu.errors import ConfigError

from helpers import RUN_CONFIGS, SHARED_DATA

DATASET_SIZES = {"DigitsDataModule": 1797, "ImageFolderDataModule": 202_599}  # CelebA; val_size is held out
TRAIN_SPLITS = {"MNISTDataModule": 60_000, "FashionMNISTDataModule": 60_000, "CIFAR10DataModule": 50_000}


def real_train_size(dm) -> int:
    """The training split of the real dataset a data module reads, known without its files."""
    name = type(dm).__name__
    if name in TRAIN_SPLITS:
        return TRAIN_SPLITS[name]
    if name == "GaussianMixtureDataModule":
        return dm.num_train
    if name == "CreditDefaultDataModule":
        return 30_000 - dm.val_size - dm.test_size
    return DATASET_SIZES[name] - dm.val_size


def config_parts(path: Path):
    """A config's data module (built, its files untouched; a table's header and columns read, which give its width)
    and its RiskMetrics callback."""
    table = []
    if path.stem == "credit_default":
        if not (SHARED_DATA / "credit-default").is_dir():
            pytest.skip(f"{SHARED_DATA / 'credit-default'} is not here")
        table = ["--data.init_args.root", str(SHARED_DATA)]  # read only
    run = build_run("--config", str(path), "--trainer.logger", "false", *table)
    return run.datamodule, next(cb for cb in run.trainer.callbacks if isinstance(cb, RiskMetrics))


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_passes_the_memory_check_at_its_real_size(path):
    dm, risk = config_parts(path)
    assert dm.train_data is None  # nothing loaded
    n = real_train_size(dm)
    risk.check_memory(n, dm.data_shape, dm.storage_dtype, world_size=1)
    assert risk.memory_bytes(n, dm.data_shape, dm.storage_dtype) <= risk.max_memory_gb * 2**30


def test_celeba_estimate_in_numbers_and_the_error_above_the_bound():
    dm, risk = config_parts(Path(__file__).resolve().parents[1] / "configs" / "celeba64.yaml")
    assert (dm.data_shape, dm.storage_dtype, dm.hflip, real_train_size(dm)) == ((3, 64, 64), torch.uint8, True, 200_599)
    stored = 200_599 * 12_288  # one byte a value, no mirror images: D*_n flips chunk by chunk
    cache = 48 * 68 * 12_288 * 4 * 7  # groups x 4 (16 strata + t = 1) points x D float32 values x 7 arrays
    working = 4096 * (1024 + 12_288) * 8  # logits (batch x chunk) and one chunk in float64
    reference = (1024 + 2 * 512) * 12_288 * 8  # the reference's items and two D x rank arrays (one Gaussian), float64
    assert risk.memory_bytes(200_599, (3, 64, 64), torch.uint8) == stored + cache + working + reference == 4_225_519_616
    assert risk.memory_bytes(200_599, (3, 64, 64), torch.uint8, world_size=8) == stored + cache // 8 + working + reference
    # float32 storage, as before the data were held as uint8, would not fit (mirror images aside)
    with pytest.raises(ConfigError, match=r"would hold 10\.82 GiB per process \(training split \(200599, 3, 64, 64\) "
                                          r"float32 for D\*_n, cache of 48 groups x 68 points x 12288 values x 7 "
                                          r"arrays, the reference's 1024 items\), above max_memory_gb=4\.0; lower "
                                          r"num_items, points_per_item, batch_size or reference_items, or raise "
                                          r"max_memory_gb"):
        risk.check_memory(200_599, (3, 64, 64), torch.float32)
