"""Complexities of an optimiser's trajectory (the last N stored iterates W = {θ_k}, as an N×N distance matrix),
after Dupuis et al. (arXiv 2506.03849) and arXiv 2407.08723; definitions in ``docs/generalization.md``."""

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
    """E_α(W) = Σ_{e ∈ MST(W, ρ)} |e|^α, the α-weighted sum of the minimum spanning tree's edge lengths (= of the PH₀
    lifetimes of the Vietoris–Rips filtration of W). Prim's algorithm, O(N²)."""
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
    """(Mag(sW), PMag(sW)) at scale s = ``scale``: with Z_ij = exp(−s ρ_ij) and the weighting w solving Z w = 1,
    Mag = Σ_i w_i and PMag = Σ_i max(w_i, 0). Float64; a singular Z (near-duplicate iterates) gets least squares."""
    z = torch.exp(-scale * distances.double())
    ones = torch.ones(z.shape[0], 1, dtype=torch.float64)
    w, info = torch.linalg.solve_ex(z, ones)
    if int(info) != 0 or not torch.isfinite(w).all():
        w = torch.linalg.lstsq(z, ones, driver="gelsd").solution
    return float(w.sum()), float(w.clamp(min=0).sum())


class CountSketch:
    """A seeded count-sketch of R^D (D = ``num_inputs``) into R^P (P = ``dim``): coordinate i of x adds sign_i · x_i
    to bucket h(i). E‖Sx‖² = ‖x‖², so a distance is kept within a relative error of about √(2/P) per pair."""

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
        if (total := sum(t.numel() for t in tensors)) != len(self.buckets):
            raise ValueError(f"CountSketch was made for {len(self.buckets)} values, got {total}")
        device = tensors[0].device
        self.buckets, self.signs = self.buckets.to(device), self.signs.to(device)
        out = torch.zeros(self.dim, dtype=torch.float32, device=device)
        start = 0
        for t in tensors:
            stop = start + t.numel()
            out.index_add_(0, self.buckets[start:stop], t.detach().reshape(-1).float() * self.signs[start:stop])
            start = stop
        return out
