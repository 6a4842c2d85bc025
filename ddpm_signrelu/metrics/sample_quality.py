"""Sample-quality metrics in feature (or pixel) space."""

from __future__ import annotations

import torch


def _knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each row of x to its k-th nearest other row."""
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # +1 skips the point itself


def knn_precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019).

    Precision: the fraction of ``fake`` rows inside the real manifold (the union of balls around each real
    row with radius its k-NN distance among the real rows); recall: the same with the roles swapped.
    """
    real, fake = real.flatten(1).double(), fake.flatten(1).double()

    def coverage(ref: torch.Tensor, query: torch.Tensor) -> float:
        radii = _knn_radii(ref, k)
        return (torch.cdist(query, ref) <= radii[None]).any(1).double().mean().item()

    return coverage(real, fake), coverage(fake, real)


def near_copies(samples: torch.Tensor, train: torch.Tensor, ratio: float = 1 / 3) -> torch.Tensor:
    """Mask of samples whose nearest training item is closer than ``ratio`` × the distance to the second."""
    d = torch.cdist(samples.flatten(1).double(), train.flatten(1).double())
    two = d.topk(2, dim=1, largest=False).values
    return two[:, 0] < ratio * two[:, 1]
