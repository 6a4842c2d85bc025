"""Image datasets, held as uint8: torchvision's MNIST, Fashion-MNIST and CIFAR-10, and any folder of images.
Files under ``root`` are read without network access, checksums verified; ``download: true`` fetches missing ones."""

import gzip
import io
import os
import pickle
import tarfile
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ddpm_signrelu.data.base import TensorDataModule
from ddpm_signrelu.data.files import REFETCH, check_md5, idx_images, idx_labels
from ddpm_signrelu.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")


class TorchvisionDataModule(TensorDataModule):
    """A torchvision dataset under ``root``; the held-out split is ``val_size`` test images chosen by seed (all of
    them when ``val_size`` is at least the test split's size). ``download``: let torchvision fetch missing files.
    Subclasses give ``folder``, ``expected_files``, :meth:`have_files` and :meth:`read_splits`."""

    dataset_name: str
    num_levels = 256
    folder: Path
    expected_files: tuple[str, ...]

    def __init__(self, root: str = "data", download: bool = False, batch_size: int = 128, val_size: int = 10_000,
                 seed: int = 0, num_workers: int = 4, hflip: bool = False):
        super().__init__(batch_size=batch_size, val_size=val_size, seed=seed, num_workers=num_workers, hflip=hflip)
        self.root, self.download = str(root), download

    @property
    def dataset_class(self):
        import torchvision

        return getattr(torchvision.datasets, self.dataset_name)

    def have_files(self) -> bool:
        raise NotImplementedError

    def read_splits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, test) uint8 images (N, C, H, W), read from the files under ``root``."""
        raise NotImplementedError

    def missing(self) -> DataError:
        """The error for files not found: the folder, the files expected there, and how to get them."""
        return DataError(f"{self.dataset_name} not found under {self.folder}: expected "
                         f"{', '.join(self.expected_files)} there (torchvision's layout); copy them there, or set "
                         f"data.init_args.download: true on a machine with internet access")

    def ensure_files(self) -> None:
        """Let torchvision download missing files if ``download`` is true (it uses the network); else name them."""
        if self.have_files():
            return
        if not self.download:
            raise self.missing()
        try:
            self.dataset_class(self.root, train=True, download=True)
        except (RuntimeError, OSError) as err:  # URLError is an OSError
            raise DataError(f"{self.missing()} (the download failed: {' '.join(str(err).split())})") from None

    def load_splits(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.ensure_files()
        train, test = self.read_splits()
        if self.val_size < len(test):
            test = test[torch.randperm(len(test), generator=torch.Generator().manual_seed(self.seed))[: self.val_size]]
        return train, test


class MNISTDataModule(TorchvisionDataModule):
    """MNIST: 60,000 training and 10,000 test digits, 1×28×28, in ``root/MNIST/raw`` as IDX files or ``.gz``."""

    dataset_name, data_shape = "MNIST", (1, 28, 28)
    expected_files = ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz")

    @property
    def folder(self) -> Path:
        return Path(self.root, self.dataset_name, "raw")

    def have_files(self) -> bool:
        return all((self.folder / name).is_file() or (self.folder / name).with_suffix("").is_file()
                   for name in self.expected_files)

    def read_idx(self, archive_name: str, parse):
        """``parse(data, path, fix)`` of the extracted IDX file, or else of its archive (MD5 checked)."""
        archive = self.folder / archive_name
        path = archive.with_suffix("")
        if path.is_file():
            fix = f"delete it so that it is read from the archive {archive.name} instead, or replace it"
            return parse(path.read_bytes(), path, fix)
        if not archive.is_file():
            raise DataError(f"{archive} not found (nor {path.name}): copy it there (torchvision's layout), or set "
                            f"data.init_args.download: true on a machine with internet access")
        md5 = {os.path.basename(url): md5 for url, md5 in self.dataset_class.resources}[archive_name]
        return parse(gzip.decompress(check_md5(archive, archive.read_bytes(), md5)), archive, REFETCH)

    def read_splits(self) -> tuple[torch.Tensor, torch.Tensor]:
        parse = partial(idx_images, size=self.data_shape[1:])
        return tuple(torch.from_numpy(self.read_idx(name, parse))[:, None] for name in self.expected_files)

    @property
    def classifier_path(self) -> Path:
        return Path(self.root, self.dataset_name, "domain_classifier.pt")

    def labelled_splits(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        self.ensure_files()
        train, test = self.read_splits()
        train_labels, test_labels = (torch.from_numpy(self.read_idx(f"{split}-labels-idx1-ubyte.gz", idx_labels)).long()
                                     for split in ("train", "t10k"))
        return train, train_labels, test, test_labels


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST: 60,000 training and 10,000 test images, 1×28×28, under ``root/FashionMNIST/raw``."""

    dataset_name = "FashionMNIST"


class KMNISTDataModule(MNISTDataModule):
    """Kuzushiji-MNIST: 60,000 training and 10,000 test cursive Japanese characters, 1×28×28, in ``root/KMNIST/raw``."""

    dataset_name = "KMNIST"


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10: 50,000 training and 10,000 test images, 3×32×32 (``hflip: true`` is customary), from the python
    batches in ``root/cifar-10-batches-py``, or else ``root/cifar-10-python.tar.gz`` (MD5 checked)."""

    dataset_name, data_shape = "CIFAR10", (3, 32, 32)

    @property
    def folder(self) -> Path:
        return Path(self.root)

    @property
    def expected_files(self) -> tuple[str, ...]:
        return (self.dataset_class.filename,)

    def _batch_md5s(self) -> dict[str, str]:
        return dict(self.dataset_class.train_list + self.dataset_class.test_list)

    def _extracted(self) -> bool:
        return all((self.folder / self.dataset_class.base_folder / name).is_file() for name in self._batch_md5s())

    def have_files(self) -> bool:
        return self._extracted() or (self.folder / self.dataset_class.filename).is_file()

    def read_batches(self) -> dict[str, bytes]:
        """Each python batch's bytes, checksum verified: from the extracted folder when complete, else the archive."""
        cls = self.dataset_class
        archive, folder = self.folder / cls.filename, self.folder / cls.base_folder
        if self._extracted():
            fix = f"delete it so that the batches are read from the archive {archive} instead, or replace it"
            return {name: check_md5(folder / name, (folder / name).read_bytes(), md5, fix)
                    for name, md5 in self._batch_md5s().items()}
        data = check_md5(archive, archive.read_bytes(), cls.tgz_md5)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            return {name: tar.extractfile(f"{cls.base_folder}/{name}").read() for name in self._batch_md5s()}

    def read_splits(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = {name: pickle.loads(data, encoding="latin1")["data"] for name, data in self.read_batches().items()}
        return tuple(torch.from_numpy(np.concatenate([rows[name] for name, _ in names])).view(-1, *self.data_shape)
                     for names in (self.dataset_class.train_list, self.dataset_class.test_list))


class ImageFolderDataModule(TensorDataModule):
    """Every image under ``root`` (recursively), resized so the shorter side is ``image_size`` and centre-cropped
    to a square, RGB (``channels: 3``) or grey (``channels: 1``); a seeded ``val_size`` split is held out.
    CelebA at 64×64 is the usual example: ``root: data/celeba/img_align_celeba``, ``image_size: 64``."""

    num_levels = 256

    def __init__(self, root: str = "data/images", image_size: int = 64, channels: int = 3, batch_size: int = 128,
                 val_size: int = 1000, seed: int = 0, num_workers: int = 4, hflip: bool = True):
        super().__init__(batch_size=batch_size, val_size=val_size, seed=seed, num_workers=num_workers, hflip=hflip)
        if image_size < 1 or channels not in (1, 3):
            raise ConfigError(f"need image_size >= 1 and channels 1 or 3, got {image_size}, {channels}")
        self.root, self.image_size, self.channels = str(root), image_size, channels
        self.data_shape = (channels, image_size, image_size)

    def read_image(self, path: Path) -> torch.Tensor:
        """One image as uint8 (C, H, W), resized and centre-cropped; a DataError if unreadable."""
        from PIL import Image
        from torchvision.transforms.functional import center_crop, pil_to_tensor, resize

        try:
            with Image.open(path) as img:
                img = img.convert("RGB" if self.channels == 3 else "L")
                return pil_to_tensor(center_crop(resize(img, self.image_size), [self.image_size, self.image_size]))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise DataError(f"{path} is not a readable image ({err}); replace it, or delete it or move it out of "
                            f"{self.root}") from None

    def load(self) -> torch.Tensor:
        paths = sorted(p for p in Path(self.root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DataError(f"no images under {self.root} (looked for {', '.join(IMAGE_SUFFIXES)} files, "
                            "recursively); set data.init_args.root to the folder that holds them")
        images = torch.empty(len(paths), *self.data_shape, dtype=self.storage_dtype)
        for i, path in enumerate(paths):
            images[i] = self.read_image(path)
        return images
