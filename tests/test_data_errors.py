"""Bad dataset files: each gives one DataError naming the file, the problem and the fix, and none reaches the
network. Files are generated in torchvision's layouts (MNIST's IDX archives, CIFAR-10's python batches)."""

import gzip
import hashlib
import io
import os
import tarfile
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from ddpm_signrelu.data import CIFAR10DataModule, FashionMNISTDataModule, ImageFolderDataModule, MNISTDataModule
from ddpm_signrelu.errors import DataError

from test_vision_data import CIFAR_BATCHES, write_cifar_batches, write_idx

IMAGES = ["train-images-idx3-ubyte", "t10k-images-idx3-ubyte"]


@pytest.fixture
def no_network(monkeypatch):
    """Every way torchvision reaches the network records the attempt and fails; the test checks none was made."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    for module in (torchvision.datasets.utils, torchvision.datasets.mnist, torchvision.datasets.cifar):
        for name in ("download_url", "download_and_extract_archive"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, refuse)
    yield attempts
    assert attempts == []


def idx_bytes(images: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, images.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in images.shape)
    return header + images.astype(np.uint8).tobytes()


def mnist_archives(raw, rng, sizes=(30, 10)) -> dict:
    """The four .gz archives of MNIST's layout under ``raw``, generated; returns name -> images."""
    raw.mkdir(parents=True)
    images = {}
    for name, n in zip(IMAGES, sizes):
        images[name] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        (raw / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(images[name])))
        labels = name.replace("images-idx3", "labels-idx1")
        (raw / f"{labels}.gz").write_bytes(gzip.compress(idx_bytes(rng.integers(0, 10, n))))
    return images


@pytest.mark.parametrize("download", [False, True])
@pytest.mark.parametrize("module", [MNISTDataModule, FashionMNISTDataModule])
def test_corrupt_archive_is_named_with_its_checksums_and_nothing_is_downloaded(tmp_path, no_network, module,
                                                                              download):
    name = module.dataset_name
    mnist_archives(tmp_path / name / "raw", np.random.default_rng(0))  # not the published files: MD5s differ
    expected = dict(getattr(torchvision.datasets, name).resources)["train-images-idx3-ubyte.gz"]
    got = hashlib.md5((tmp_path / name / "raw" / "train-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    with pytest.raises(DataError, match=rf"{name}/raw/train-images-idx3-ubyte.gz is corrupt \(checksum mismatch: MD5 "
                                        rf"expected {expected}, got {got}\); delete it, then copy the original file "
                                        rf"there again or set data.init_args.download: true"):
        module(root=str(tmp_path), download=download).setup("fit")


def test_verified_archives_are_read_without_extracting_them(tmp_path, no_network, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    images = mnist_archives(raw, np.random.default_rng(1))
    md5 = [(f, hashlib.md5((raw / f).read_bytes()).hexdigest()) for f in sorted(os.listdir(raw))]
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", md5)  # these files' checksums, as published ones
    dm = MNISTDataModule(root=str(tmp_path), val_size=10)
    dm.setup("fit")
    assert torch.equal(dm.train_data, torch.from_numpy(images["train-images-idx3-ubyte"])[:, None])
    assert dm.val_data.shape == (10, 1, 28, 28) and dm.val_data.dtype == torch.uint8
    assert sorted(os.listdir(raw)) == [f for f, _ in md5]  # nothing written next to the archives


@pytest.mark.parametrize("name", IMAGES)
@pytest.mark.parametrize("content,problem", [
    (idx_bytes(np.zeros((300, 28, 28)))[:100_016], r"its header gives 300 images, 235200 bytes, but 100000 follow "
                                                   r"\(truncated\?\)"),
    (idx_bytes(np.zeros((5, 32, 32))), r"its header gives images of 32x32, not 28x28"),
    (idx_bytes(np.zeros(60)), r"its header is not that of uint8 images in 3 dimensions \(magic 0x00000803\)"),
    (b"", r"its header is not that of uint8 images in 3 dimensions \(magic 0x00000803\)"),
])
def test_bad_idx_file_is_named_with_the_fix(tmp_path, no_network, name, content, problem):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in zip(IMAGES, (30, 10)):
        write_idx(raw / split, rng.integers(0, 256, (n, 28, 28)))
    (raw / name).write_bytes(content)
    with pytest.raises(DataError, match=rf"MNIST/raw/{name} is not a valid IDX image file of shape \(N, 28, 28\): "
                                        rf"{problem}; delete it so that it is read from the archive "
                                        rf"{name}.gz instead, or replace it"):
        MNISTDataModule(root=str(tmp_path)).setup("fit")


def test_corrupt_cifar_archive_is_named_and_nothing_is_downloaded(tmp_path, no_network):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(gzip.compress(b"not a tar file"))
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz is corrupt \(checksum mismatch: MD5 expected "
                                        r"c58f30108f718f92721af3b95e74349a, got [0-9a-f]{32}\); delete it"):
        CIFAR10DataModule(root=str(tmp_path)).setup("fit")


def test_corrupt_cifar_batch_is_named(tmp_path, no_network, monkeypatch):
    write_cifar_batches(tmp_path, monkeypatch)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    expected = hashlib.md5(batch.read_bytes()).hexdigest()
    batch.write_bytes(batch.read_bytes()[:5000])  # truncated
    with pytest.raises(DataError, match=rf"cifar-10-batches-py/data_batch_3 is corrupt \(checksum mismatch: MD5 "
                                        rf"expected {expected}, got {hashlib.md5(batch.read_bytes()).hexdigest()}\); "
                                        rf"delete it so that the batches are read from the archive .*"
                                        rf"cifar-10-python.tar.gz instead, or replace it"):
        CIFAR10DataModule(root=str(tmp_path)).setup("fit")


def test_cifar_batches_are_read_from_the_verified_archive(tmp_path, no_network, monkeypatch):
    images = write_cifar_batches(tmp_path / "extracted", monkeypatch)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(tmp_path / "extracted" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(buffer.getvalue())
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "tgz_md5", hashlib.md5(buffer.getvalue()).hexdigest())
    dm = CIFAR10DataModule(root=str(tmp_path), val_size=20)
    dm.setup("fit")
    expected = np.concatenate([images[name] for name in CIFAR_BATCHES[:5]]).reshape(100, 3, 32, 32)
    assert torch.equal(dm.train_data, torch.from_numpy(expected))
    assert torch.equal(dm.val_data.sort(0).values, torch.from_numpy(images["test_batch"]).view(20, 3, 32, 32)
                       .sort(0).values)


def test_missing_files_name_the_folder_and_the_files(tmp_path, no_network):
    with pytest.raises(DataError, match=rf"CIFAR10 not found under {tmp_path}: expected cifar-10-python.tar.gz there "
                                        r"\(torchvision's layout\); copy them there, or set data.init_args.download"):
        CIFAR10DataModule(root=str(tmp_path)).setup("fit")
    with pytest.raises(DataError, match=r"FashionMNIST not found under .*FashionMNIST/raw: expected "
                                        r"train-images-idx3-ubyte.gz, t10k-images-idx3-ubyte.gz there"):
        FashionMNISTDataModule(root=str(tmp_path)).setup("fit")


def test_failed_download_is_one_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match=r"MNIST not found under .*MNIST/raw: expected train-images-idx3-ubyte.gz.* "
                                        r"\(the download failed: .*no network") as error:
        MNISTDataModule(root=str(tmp_path), download=True).setup("fit")
    assert "\n" not in str(error.value)  # one line, whatever torchvision's message


@pytest.mark.parametrize("content", [b"<html>not an image</html>", "truncated png"])
def test_unreadable_image_in_a_folder_is_named(tmp_path, content):
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        Image.fromarray(torch.randint(0, 256, (8, 8, 3), generator=g, dtype=torch.uint8).numpy()).save(
            tmp_path / f"{i}.png")
    if content == "truncated png":
        bad = tmp_path / "sub" / "bad.png"
        bad.parent.mkdir()
        bad.write_bytes((tmp_path / "0.png").read_bytes()[:60])
    else:
        bad = tmp_path / "bad.jpg"
        bad.write_bytes(content)
    with pytest.raises(DataError, match=rf"{bad} is not a readable image \(.*\); replace it, or delete it or move it "
                                        rf"out of {tmp_path}"):
        ImageFolderDataModule(root=str(tmp_path), image_size=8, val_size=1).setup("fit")
