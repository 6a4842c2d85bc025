"""Image data modules on real files: Fashion-MNIST from ../shared/data, a generated image folder."""

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from ddpm_signrelu.data import FashionMNISTDataModule, ImageFolderDataModule, MNISTDataModule
from ddpm_signrelu.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "FashionMNIST"


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory):
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not here")
    root = tmp_path_factory.mktemp("data")
    shutil.copytree(SHARED, root / "FashionMNIST")
    return root


def test_fashion_mnist_from_local_archives_without_network(fashion_root):
    dm = FashionMNISTDataModule(root=str(fashion_root), val_size=1000, seed=3)
    dm.setup("fit")
    assert dm.train_data.shape == (60_000, 1, 28, 28) and dm.val_data.shape == (1000, 1, 28, 28)
    levels = (dm.train_data[:500] + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4) and levels.min() == 0 and levels.max() == 255
    # The held-out images are a seeded subset of the official test split: same seed, same images.
    again = FashionMNISTDataModule(root=str(fashion_root), val_size=1000, seed=3)
    again.setup("fit")
    assert torch.equal(dm.val_data, again.val_data)
    full = FashionMNISTDataModule(root=str(fashion_root), val_size=10_000)
    full.setup("fit")
    assert len(full.val_data) == 10_000
    assert not torch.equal(full.val_data[:10], full.train_data[:10])


def test_missing_files_name_the_folder_and_the_files(tmp_path):
    with pytest.raises(DataError, match=r"MNIST/raw: expected train-images-idx3-ubyte.gz"):
        MNISTDataModule(root=str(tmp_path)).setup("fit")


def test_image_folder_resizes_crops_and_flips(tmp_path):
    g = torch.Generator().manual_seed(0)
    for i, (w, h) in enumerate([(40, 30), (30, 40), (32, 32), (64, 20)] * 3):
        pixels = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
        (tmp_path / f"sub{i % 2}").mkdir(exist_ok=True)
        Image.fromarray(pixels).save(tmp_path / f"sub{i % 2}" / f"img{i}.png")
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=16, val_size=2, hflip=True, num_workers=0,
                               batch_size=5)
    dm.setup("fit")
    assert dm.train_data.shape == (10, 3, 16, 16) and dm.val_data.shape == (2, 3, 16, 16)
    assert dm.reference_data.shape == (20, 3, 16, 16)  # mirror images are atoms of the training measure
    flipped = []
    for _, (x, index, *_) in zip(range(16), dm.train_dataloader()):
        for image, i in zip(x, index):
            flipped.append(torch.equal(image, dm.train_data[i].flip(-1)))
            assert flipped[-1] or torch.equal(image, dm.train_data[i])
    assert 20 < sum(flipped) < 60
    grey = ImageFolderDataModule(root=str(tmp_path), image_size=8, channels=1, val_size=2)
    grey.setup("fit")
    assert grey.train_data.shape == (10, 1, 8, 8) and grey.data_shape == (1, 8, 8)
    with pytest.raises(DataError, match="no images under"):
        ImageFolderDataModule(root=str(tmp_path / "empty")).setup("fit")
