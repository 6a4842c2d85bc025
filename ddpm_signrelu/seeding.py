"""One way to derive seeds: every seeded stream in the package (training batches, their draws, dropout, the fixed
evaluation draws of each item) takes its generator seed from :func:`mix_seed`."""

from __future__ import annotations

import torch

_GOLDEN = 0x9E3779B97F4A7C15  # 2⁶⁴/φ: consecutive parts land far apart


def mix_seed(seed: int, *parts: int) -> int:
    """A generator seed in [0, 2⁶³) for the stream named by ``seed`` and ``parts`` (e.g. an item's index): distinct
    tuples give distinct seeds, and nothing depends on batch size or the number of processes."""
    for part in parts:
        seed = (seed * _GOLDEN + part) % 2**63
    return seed


def generator(seed: int, *parts: int) -> torch.Generator:
    """A CPU generator seeded with :func:`mix_seed` (``seed``, ``parts``)."""
    return torch.Generator().manual_seed(mix_seed(seed, *parts))
