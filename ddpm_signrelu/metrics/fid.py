"""FID (Heusel et al., 2017), KID (Bińkowski et al., 2018) and improved precision / recall (Kynkäänniemi et al.,
2019) on features computed once per image (``docs/metrics.md``), reduced over DDP processes in ``compute``."""

import importlib
import math
import os

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.metrics.domain import FIT_IT, load_classifier
from ddpm_signrelu.metrics.sample_quality import knn_precision_recall

KNN = 3  # the k of precision and recall, as Kynkäänniemi et al.


class _Given(nn.Identity):
    """Identity: the metrics receive features, not images, so one extractor pass serves FID and KID."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features


def load_feature_extractor(features: str = "inception", weights_path: str | None = None,
                           data: str | None = None) -> nn.Module:
    """The image → feature map, uint8 (N, 3, H, W) → (N, F): ``inception``, FID's Inception-v3 (2048 features; its
    weights downloaded on first use or read from ``weights_path``); ``domain``, the data set's
    :class:`~ddpm_signrelu.metrics.domain.DomainClassifier` (128 features) read from ``weights_path``, refused unless
    ``data``, when given, is its training images' fingerprint; or ``package.module:name``: a Module class or factory."""
    if features == "domain":
        if weights_path is None:
            raise ConfigError(f"features 'domain' needs the classifier's file (weights_path); {FIT_IT}")
        return load_classifier(weights_path, data)
    if features == "inception":
        if weights_path is not None and not os.path.isfile(weights_path):
            raise ConfigError(f"Inception weights not found: {weights_path}; give the path of the FID Inception "
                              f"file (weights-inception-2015-12-05-6726825d.pth) or leave it unset to download it")
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
            return NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                      feature_extractor_weights_path=weights_path)
        except (ModuleNotFoundError, RuntimeError, OSError) as err:
            raise ConfigError(f"cannot build FID's Inception ({err}); install torch-fidelity, and with no network "
                              f"pass the weights file as weights_path") from None
    module_name, _, attr = features.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"unknown feature extractor '{features}': use 'inception' or 'package.module:name'") from None
    return factory()


def rgb_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) with C = 1 repeated to 3 channels, as image feature extractors take them."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


class FeatureDistances(nn.Module):
    """FID, KID and precision / recall between a fixed reference set (``update(images, real=True)`` once) and
    generated sets (``update(images, real=False)``, ``compute()``, ``reset_generated()``) of uint8 (N, C, H, W).
    ``kid_subsets``, ``kid_subset_size``: KID's random subsets (the size capped by the number of images);
    ``max_knn``: the most real and generated images each that precision and recall use, chosen by seed."""

    def __init__(self, extractor: nn.Module, image_shape, kid_subsets: int = 100, kid_subset_size: int = 1000,
                 max_knn: int = 5000):
        super().__init__()
        self.extractor = extractor.eval().requires_grad_(False)
        num_features = self.extractor(rgb_uint8(torch.zeros((2, *image_shape), dtype=torch.uint8))).shape[-1]
        self.kid_subset_size, self.num_features, self.max_knn = kid_subset_size, num_features, max_knn
        self.fid = FrechetInceptionDistance(feature=_Given(num_features), reset_real_features=False)
        self.kid = KernelInceptionDistance(feature=_Given(num_features), subsets=kid_subsets,
                                           subset_size=kid_subset_size, reset_real_features=False)

    @torch.no_grad()
    def update(self, images: torch.Tensor, real: bool) -> None:
        features = self.extractor(rgb_uint8(images)).double()
        self.fid.update(features, real=real)
        self.kid.update(features, real=real)

    def compute(self) -> dict[str, float]:
        """``fid``, ``kid``, ``kid_std`` (KID's spread over subsets), ``precision`` and ``recall`` (k = 3, with more
        than 3 images on each side), over all processes; with a classifying extractor also ``confidence`` (mean
        top-class probability) of the samples and ``confidence_real`` of the real images, ``class_entropy`` (of the
        samples' predicted class shares, over log K) and ``min_class_share`` (times K), both 1 when balanced."""
        counts = torch.stack([self.fid.real_features_num_samples, self.fid.fake_features_num_samples])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
        self.kid.subset_size = min(self.kid_subset_size, int(counts.min()))
        if self.kid.subset_size < 2:
            raise ConfigError(f"FID/KID need at least 2 real and 2 generated images, got {counts.tolist()}")
        for name in ("real_features", "fake_features"):  # one (n, F) tensor per process: torchmetrics' gather of
            parts = getattr(self.kid, name)  # lists breaks when their lengths differ, or when one is empty
            setattr(self.kid, name, [torch.cat(parts) if parts else self.fid.real_features_sum.new_zeros(
                (0, self.num_features))])
        with self.kid.sync_context():  # the features of all processes
            real, fake = (torch.cat(getattr(self.kid, name)) for name in ("real_features", "fake_features"))
        with torch.random.fork_rng(devices=[]):  # KID's subsets: the same on every process and every call
            torch.manual_seed(0)
            kid_mean, kid_std = self.kid.compute()
        scores = {"fid": float(self.fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}
        if min(len(real), len(fake)) > KNN:  # a k-NN radius needs k other points
            scores["precision"], scores["recall"] = knn_precision_recall(*map(self.subset, (real, fake)), k=KNN)
        return scores | self.classes(real, fake)

    def subset(self, features: torch.Tensor) -> torch.Tensor:
        """At most ``max_knn`` rows, a seeded random choice (the same on every process)."""
        if len(features) <= self.max_knn:
            return features
        rows = torch.randperm(len(features), generator=torch.Generator().manual_seed(0))[:self.max_knn]
        return features[rows.to(features.device)]

    @torch.no_grad()
    def classes(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
        """The class figures of :meth:`compute`, where the extractor classifies its features."""
        if not hasattr(self.extractor, "logits"):
            return {}
        p_real, p_fake = (self.extractor.logits(f).softmax(1).double() for f in (real, fake))
        shares = torch.bincount(p_fake.argmax(1), minlength=p_fake.shape[1]).double() / len(fake)
        entropy = -(shares * shares.clamp_min(1e-300).log()).sum() / math.log(len(shares))
        return {"confidence": p_fake.max(1).values.mean().item(), "confidence_real": p_real.max(1).values.mean().item(),
                "class_entropy": entropy.item(), "min_class_share": shares.min().item() * len(shares)}

    def reset_generated(self) -> None:
        self.fid.reset()
        self.kid.reset()


def load_images_npz(path: str | os.PathLike) -> torch.Tensor:
    """uint8 images (N, C, H, W) from an .npz whose ``arr_0`` is (N, H, W, C) uint8: what ``sample.py`` writes,
    and the layout of the reference batches of openai/guided-diffusion."""
    if not os.path.isfile(path):
        raise ConfigError(f"image file not found: {path}")
    with np.load(path) as data:
        if "arr_0" not in data or data["arr_0"].dtype != np.uint8 or data["arr_0"].ndim != 4:
            raise ConfigError(f"{path} must hold arr_0, uint8 images of shape (N, H, W, C)")
        return torch.from_numpy(data["arr_0"]).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def image_distances(fake: torch.Tensor, real: torch.Tensor, features: str = "inception",
                    weights_path: str | None = None, device="cpu", batch_size: int = 256) -> dict[str, float]:
    """:meth:`FeatureDistances.compute`'s figures between two sets of uint8 images (N, C, H, W)."""
    if fake.shape[1:] != real.shape[1:]:
        raise ConfigError(f"samples are {tuple(fake.shape[1:])} (C, H, W) but the reference is {tuple(real.shape[1:])}")
    metric = FeatureDistances(load_feature_extractor(features, weights_path), real.shape[1:]).to(device)
    for images, is_real in ((real, True), (fake, False)):
        for chunk in images.split(batch_size):
            metric.update(chunk.to(device), real=is_real)
    return metric.compute()
