"""One way to derive seeds: every seeded stream in the package takes its generator seed from :func:`mix_seed`."""

import torch

_GOLDEN = 0x9E3779B97F4A7C15  # 2⁶⁴/φ: consecutive parts land far apart


def mix_seed(seed: int, *parts: int) -> int:
    """A generator seed in [0, 2⁶³) for the stream named by ``seed`` and ``parts``: distinct tuples, distinct seeds."""
    for part in parts:
        seed = (seed * _GOLDEN + part) % 2**63
    return seed


def generator(seed: int, *parts: int) -> torch.Generator:
    """A CPU generator seeded with :func:`mix_seed` (``seed``, ``parts``)."""
    return torch.Generator().manual_seed(mix_seed(seed, *parts))
