"""Complexities of an optimiser's trajectory (the last N stored iterates W = {θ_k}), after Dupuis et al.
(arXiv 2506.03849) and the topological generalisation bounds they build on (arXiv 2407.08723).

Plain torch; every function takes a dense N×N matrix of pairwise distances ρ(θ_i, θ_j) under one of two metrics:

- :func:`euclidean_distances` of :class:`CountSketch` sketches of the parameters: ‖S θ − S θ′‖ ≈ ‖θ − θ′‖;
- :func:`loss_distances`, the data-dependent pseudo-metric ρ_S(θ, θ′) = (1/m) Σ_j |ℓ(θ, z_j) − ℓ(θ′, z_j)| over m
  fixed training triples z_j = (x0, t, ε).
"""

from __future__ import annotations

import math

import torch


def euclidean_distances(points: torch.Tensor) -> torch.Tensor:
    """‖p_i − p_j‖₂ of the rows of ``points`` (N×P), float64, exactly symmetric with a zero diagonal."""
    p = points.double()
    d = torch.cdist(p, p, compute_mode="donot_use_mm_for_euclid_dist")
    return (d + d.T) / 2


def loss_distances(losses: torch.Tensor) -> torch.Tensor:
    """ρ_S(θ_i, θ_j) = (1/m) Σ_j |ℓ(θ_i, z_j) − ℓ(θ_j, z_j)| from the N×m losses of N iterates on m fixed items."""
    ell = losses.double()
    return torch.cdist(ell, ell, p=1) / ell.shape[1]


def mst_weight(distances: torch.Tensor, alpha: float = 1.0) -> float:
    """E_α(W) = Σ_{e ∈ MST(W, ρ)} |e|^α: the α-weighted sum of the minimum spanning tree's edge lengths, which
    equals the α-weighted sum of the PH₀ lifetimes of the Vietoris–Rips filtration of W (every finite bar of
    dimension 0 dies at the length of the MST edge that merges its component). Prim's algorithm, O(N²)."""
    n = distances.shape[0]
    if n < 2:
        return 0.0
    d = distances.double()
    in_tree = torch.zeros(n, dtype=torch.bool)
    in_tree[0] = True
    nearest = d[0].clone()  # distance of each point to the tree
    total = 0.0
    for _ in range(n - 1):
        edge = nearest.masked_fill(in_tree, math.inf)
        j = int(edge.argmin())
        total += float(edge[j]) ** alpha
        in_tree[j] = True
        nearest = torch.minimum(nearest, d[j])
    return total


def magnitude(distances: torch.Tensor, scale: float) -> tuple[float, float]:
    """(Mag(sW), PMag(sW)) at scale s = ``scale``: with the similarity matrix Z_ij = exp(−s ρ_ij) and the
    weighting w solving Z w = 1, Mag = Σ_i w_i and PMag = Σ_i max(w_i, 0) (positive magnitude). Two points at
    distance d: w_i = 1/(1 + e^{−sd}), Mag = PMag = 2/(1 + e^{−sd}). Solved in float64; near-duplicate iterates
    (a singular Z) get the least-squares weighting."""
    z = torch.exp(-scale * distances.double())
    ones = torch.ones(z.shape[0], 1, dtype=torch.float64)
    w, info = torch.linalg.solve_ex(z, ones)
    if int(info) != 0 or not torch.isfinite(w).all():
        w = torch.linalg.lstsq(z, ones, driver="gelsd").solution
    w = w.squeeze(1)
    return float(w.sum()), float(w.clamp(min=0).sum())


class CountSketch:
    """A seeded count-sketch of R^D into R^P: coordinate i of x adds sign_i · x_i to bucket h(i). For any x,
    E‖Sx‖² = ‖x‖² and Var‖Sx‖² ≤ 2‖x‖⁴/P, so a distance is kept within a relative error of about √(2/P)
    (1.1 % at P = 2¹⁴) per pair. Cost O(D) per sketch; the buckets and signs take 5 bytes per coordinate."""

    def __init__(self, num_inputs: int, dim: int = 2**14, seed: int = 0):
        if dim < 1 or num_inputs < 1:
            raise ValueError(f"CountSketch needs num_inputs >= 1 and dim >= 1, got {num_inputs}, {dim}")
        g = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.buckets = torch.randint(0, dim, (num_inputs,), generator=g, dtype=torch.int64).to(torch.int32)
        self.signs = (torch.randint(0, 2, (num_inputs,), generator=g, dtype=torch.int8) * 2 - 1)

    def __call__(self, tensors) -> torch.Tensor:
        """The sketch (float32, P values, on the tensors' device) of the concatenation of ``tensors``' values."""
        tensors = list(tensors)
        device = tensors[0].device
        if self.buckets.device != device:
            self.buckets, self.signs = self.buckets.to(device), self.signs.to(device)
        out = torch.zeros(self.dim, dtype=torch.float32, device=device)
        start = 0
        for t in tensors:
            stop = start + t.numel()
            if stop > len(self.buckets):
                raise ValueError(f"CountSketch was made for {len(self.buckets)} values, got more")
            out.index_add_(0, self.buckets[start:stop], t.detach().reshape(-1).float() * self.signs[start:stop])
            start = stop
        if start != len(self.buckets):
            raise ValueError(f"CountSketch was made for {len(self.buckets)} values, got {start}")
        return out
