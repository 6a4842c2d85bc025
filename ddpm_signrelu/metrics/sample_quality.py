"""Sample-quality metrics in feature (or pixel) space."""

import torch


def knn_precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019): the fraction of ``fake`` rows inside the
    union of balls around the real rows, each of radius its k-NN distance among them; recall swaps the roles."""
    real, fake = real.flatten(1).double(), fake.flatten(1).double()

    def coverage(ref: torch.Tensor, query: torch.Tensor) -> float:
        radii = torch.cdist(ref, ref).kthvalue(k + 1, dim=1).values  # to the k-th nearest other row: +1 skips itself
        return (torch.cdist(query, ref) <= radii[None]).any(1).double().mean().item()

    return coverage(real, fake), coverage(fake, real)


def near_copies(samples: torch.Tensor, train: torch.Tensor, ratio: float = 1 / 3) -> torch.Tensor:
    """Mask of samples whose nearest training item is closer than ``ratio`` × the distance to the second."""
    d = torch.cdist(samples.flatten(1).double(), train.flatten(1).double())
    two = d.topk(2, dim=1, largest=False).values
    return two[:, 0] < ratio * two[:, 1]
