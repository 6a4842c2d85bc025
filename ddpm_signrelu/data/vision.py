"""Image datasets: torchvision's MNIST, Fashion-MNIST and CIFAR-10, and any folder of images.

Data are held in memory in [−1, 1] on 256 levels (x = u/127.5 − 1). Files already under ``root`` are used
without network access; ``download: true`` fetches what is missing (users with internet).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ddpm_signrelu.data.base import TensorDataModule, levels_to_unit
from ddpm_signrelu.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")


class TorchvisionDataModule(TensorDataModule):
    """A torchvision dataset with a training and a test split; the held-out split is ``val_size`` test images
    chosen by seed (all of them when ``val_size`` is at least the test split's size)."""

    dataset_name: str
    num_levels = 256

    def __init__(self, root: str = "data", download: bool = False, batch_size: int = 128, val_size: int = 10_000,
                 seed: int = 0, num_workers: int = 4, hflip: bool = False):
        super().__init__(batch_size=batch_size, val_size=val_size, seed=seed, num_workers=num_workers, hflip=hflip)
        self.root, self.download = str(root), download

    def expected_files(self, cls) -> tuple[str, list[str]]:
        """The folder torchvision reads and the files it needs there (archives are enough)."""
        if hasattr(cls, "resources"):
            return os.path.join(self.root, cls.__name__, "raw"), [os.path.basename(url) for url, _ in cls.resources]
        return self.root, [cls.filename]

    def _dataset(self, train: bool):
        import torchvision

        cls = getattr(torchvision.datasets, self.dataset_name)
        folder, files = self.expected_files(cls)
        # Archives already in place are verified and extracted by torchvision's download step without any network
        # access; only truly missing files would be fetched, and only when the user asked for it.
        have_archives = all(os.path.isfile(os.path.join(folder, f)) for f in files)
        try:
            return cls(self.root, train=train, download=self.download or have_archives)
        except (RuntimeError, OSError) as err:
            raise DataError(
                f"{self.dataset_name} not found or unreadable under {folder}: expected {', '.join(files)} there "
                f"(torchvision's layout); copy them there, or set data.init_args.download: true on a machine with "
                f"internet access ({err})") from None

    def _tensor(self, dataset) -> torch.Tensor:
        data = torch.as_tensor(dataset.data)
        data = data.permute(0, 3, 1, 2) if data.dim() == 4 else data[:, None]
        return levels_to_unit(data, self.num_levels).contiguous()

    def load_splits(self) -> tuple[torch.Tensor, torch.Tensor]:
        train, test = self._tensor(self._dataset(True)), self._tensor(self._dataset(False))
        if self.val_size < len(test):
            test = test[torch.randperm(len(test), generator=torch.Generator().manual_seed(self.seed))[: self.val_size]]
        return train, test


class MNISTDataModule(TorchvisionDataModule):
    """MNIST: 60,000 training and 10,000 test digits, 1×28×28."""

    dataset_name, data_shape = "MNIST", (1, 28, 28)


class FashionMNISTDataModule(TorchvisionDataModule):
    """Fashion-MNIST: 60,000 training and 10,000 test images, 1×28×28."""

    dataset_name, data_shape = "FashionMNIST", (1, 28, 28)


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10: 50,000 training and 10,000 test images, 3×32×32; horizontal flips are customary."""

    dataset_name, data_shape = "CIFAR10", (3, 32, 32)


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

    def load(self) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms.functional import center_crop, pil_to_tensor, resize

        paths = sorted(p for p in Path(self.root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DataError(f"no images under {self.root} (looked for {', '.join(IMAGE_SUFFIXES)} files, "
                            "recursively); set data.init_args.root to the folder that holds them")
        images = []
        for path in paths:
            with Image.open(path) as img:
                img = img.convert("RGB" if self.channels == 3 else "L")
                img = center_crop(resize(img, self.image_size), [self.image_size, self.image_size])
                images.append(pil_to_tensor(img))
        return levels_to_unit(torch.stack(images), self.num_levels)
