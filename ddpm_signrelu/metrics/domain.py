"""A domain feature extractor for FID and KID: a CNN classifier of the data set's own images (``docs/metrics.md``)."""

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ddpm_signrelu.errors import CheckpointError, ConfigError

FORMAT = "ddpm_signrelu.domain_classifier/1"
FIT_IT = "fit it with python -m ddpm_signrelu.cli.domain --config <your train config>"


class DomainClassifier(nn.Module):
    """conv(32)–pool–conv(64)–pool–linear(``num_features``)–linear(``num_classes``). ``forward``: uint8 (N, 3, H, W)
    (grey repeated to 3 channels) → (N, ``num_features``) features for FID; :meth:`logits` classifies features."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, num_features: int = 128):
        super().__init__()
        channels, height, width = image_shape
        if height % 4 or width % 4:
            raise ConfigError(f"the domain classifier pools twice by 2: image sides must be multiples of 4, got "
                              f"{height}x{width}")
        self.image_shape, self.num_classes, self.num_features = tuple(image_shape), num_classes, num_features
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * height * width // 16, num_features), nn.ReLU())
        self.classify = nn.Linear(num_features, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images[:, :self.image_shape[0]].float() / 127.5 - 1)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.classify(features.to(self.classify.weight.dtype))


def fingerprint(images: torch.Tensor) -> str:
    """MD5 of the training images' bytes: a cached classifier is used only with the data it was trained on."""
    return hashlib.md5(images.contiguous().numpy().tobytes()).hexdigest()


def fit_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: int = 4, batch_size: int = 128,
                   lr: float = 1e-3, seed: int = 0, log=print) -> DomainClassifier:
    """A :class:`DomainClassifier` trained on uint8 ``images`` (N, C, H, W) and integer ``labels``; seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DomainClassifier(tuple(images.shape[1:]), int(labels.max()) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        total = 0.0
        for rows in torch.randperm(len(images), generator=g).split(batch_size):
            loss = F.cross_entropy(model.logits(model(images[rows])), labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
        log(f"epoch {epoch + 1}/{epochs}: training cross-entropy {total / len(images):.4f}")
    return model.eval()


@torch.no_grad()
def accuracy(model: DomainClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    correct = sum(int((model.logits(model(x)).argmax(1) == y).sum())
                  for x, y in zip(images.split(batch_size), labels.split(batch_size)))
    return correct / len(images)


def save_classifier(model: DomainClassifier, path: str | Path, data: str, test_accuracy: float) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "image_shape": model.image_shape, "num_classes": model.num_classes,
                "num_features": model.num_features, "state_dict": model.state_dict(), "data": data,
                "test_accuracy": test_accuracy}, path)


def load_classifier(path: str | Path, data: str | None = None) -> DomainClassifier:
    """The classifier saved at ``path``; ``data``, when given, must be the fingerprint of its training images."""
    if not Path(path).is_file():
        raise ConfigError(f"no domain classifier at {path}; {FIT_IT}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file
        raise CheckpointError(f"{path} is not a readable domain classifier ({type(err).__name__}); {FIT_IT}") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a domain classifier written by ddpm_signrelu; {FIT_IT}")
    if data is not None and saved["data"] != data:
        raise CheckpointError(f"{path} was trained on other images than this data set's training split; delete it "
                              f"and {FIT_IT}")
    model = DomainClassifier(tuple(saved["image_shape"]), saved["num_classes"], saved["num_features"])
    model.load_state_dict(saved["state_dict"])
    model.test_accuracy = saved["test_accuracy"]
    return model.eval().requires_grad_(False)


def fit_domain_classifier(dm, path: str | Path, epochs: int = 4, seed: int = 0, log=print) -> float:
    """Fit ``dm``'s classifier on its whole training split and save it at ``path``; returns its test accuracy."""
    train, train_labels, test, test_labels = dm.labelled_splits()
    model = fit_classifier(train, train_labels, epochs, seed=seed, log=log)
    test_accuracy = accuracy(model, test, test_labels)
    save_classifier(model, path, fingerprint(train), test_accuracy)
    log(f"test accuracy {test_accuracy:.4f} on {len(test)} images; wrote {path}")
    return test_accuracy

