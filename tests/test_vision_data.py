"""Image data modules on their files: Fashion-MNIST from ../shared/data; MNIST, CIFAR-10 and an image folder
generated in torchvision's layouts."""

import hashlib
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_signrelu.data import CIFAR10DataModule, FashionMNISTDataModule, ImageFolderDataModule, MNISTDataModule
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
    assert dm.train_data.dtype == dm.val_data.dtype == torch.uint8  # 47 MB, not 188 MB of float32
    assert dm.train_data[:500].min() == 0 and dm.train_data[:500].max() == 255
    x = dm.to_unit(dm.train_data[:500])
    assert x.dtype == torch.float32
    torch.testing.assert_close((x + 1) * 127.5, dm.train_data[:500].float(), atol=1e-4, rtol=0)
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
    assert dm.train_data.dtype == torch.uint8
    flipped = []
    for _, (x, index, *_) in zip(range(16), dm.train_dataloader()):
        assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
        for image, i in zip(x, index):
            flipped.append(torch.equal(image, dm.to_unit(dm.train_data[i].flip(-1))))
            assert flipped[-1] or torch.equal(image, dm.to_unit(dm.train_data[i]))
    assert 20 < sum(flipped) < 60
    grey = ImageFolderDataModule(root=str(tmp_path), image_size=8, channels=1, val_size=2)
    grey.setup("fit")
    assert grey.train_data.shape == (10, 1, 8, 8) and grey.data_shape == (1, 8, 8)
    with pytest.raises(DataError, match="no images under"):
        ImageFolderDataModule(root=str(tmp_path / "empty")).setup("fit")


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (the MNIST format): magic 0x08 (uint8) + ndim, big-endian sizes, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_reads_torchvision_raw_files(tmp_path):
    """MNIST in torchvision's raw layout (extracted IDX files, generated here: the real set is not on this machine)."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (300, 28, 28)), rng.integers(0, 256, (100, 28, 28))
    for split, images in (("train", train), ("t10k", test)):
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, len(images)))
    dm = MNISTDataModule(root=str(tmp_path), val_size=40, num_workers=0)
    dm.setup("fit")
    assert dm.data_shape == (1, 28, 28) and dm.num_levels == 256
    assert torch.equal(dm.train_data, torch.from_numpy(train).to(torch.uint8)[:, None])
    torch.testing.assert_close(dm.to_unit(dm.train_data), torch.from_numpy(train).float()[:, None] / 127.5 - 1,
                               atol=1e-6, rtol=0)
    test_rows = [int(np.flatnonzero((test == x[0].numpy()).all((1, 2)))[0]) for x in dm.val_data]
    assert len(set(test_rows)) == 40  # 40 distinct images of the official test split


CIFAR_BATCHES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]


def write_cifar_batches(root: Path, monkeypatch) -> dict:
    """CIFAR-10's python batches in torchvision's layout, 20 images each, generated: their checksums cannot match
    the published ones, so torchvision's MD5 lists are replaced by theirs for the test. Returns name -> rows."""
    import torchvision

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {}
    for name in CIFAR_BATCHES:
        images[name] = rng.integers(0, 256, (20, 3 * 32 * 32), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": images[name], "labels": list(rng.integers(0, 10, 20))}, f)
    md5 = {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in CIFAR_BATCHES}
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "train_list", [[n, md5[n]] for n in CIFAR_BATCHES[:5]])
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    return images


def test_cifar10_reads_torchvision_python_batches(tmp_path, monkeypatch):
    images = write_cifar_batches(tmp_path, monkeypatch)
    dm = CIFAR10DataModule(root=str(tmp_path), val_size=10, num_workers=0, batch_size=8)
    dm.setup("fit")
    assert dm.train_data.shape == (100, 3, 32, 32) and dm.val_data.shape == (10, 3, 32, 32) and dm.hflip is False
    assert torch.equal(dm.train_data[0], torch.from_numpy(images["data_batch_1"][0].reshape(3, 32, 32)))  # CHW rows
    first = torch.from_numpy(images["data_batch_1"][0].reshape(3, 32, 32)).float() / 127.5 - 1
    torch.testing.assert_close(dm.to_unit(dm.train_data[0]), first, atol=1e-6, rtol=0)
    assert torch.equal(dm.train_data[80:], torch.from_numpy(images["data_batch_5"]).view(20, 3, 32, 32))
