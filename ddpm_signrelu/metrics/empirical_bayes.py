"""Reference denoisers for the risk metrics (theory.md §4.1, §6.5)."""

import math

import torch

from ddpm_signrelu.data.base import levels_to_unit


def empirical_bayes_denoiser(x_t: torch.Tensor, alpha_bar: torch.Tensor, train: torch.Tensor,
                             chunk_size: int = 4096, dtype: torch.dtype = torch.float64, num_levels: int | None = None,
                             hflip: bool = False) -> torch.Tensor:
    """D*_n(x_t, t) = Σ_i softmax_i(ℓ_i) x⁽ⁱ⁾, the posterior mean under the training set's empirical measure, with
    ℓ_i = (2√ᾱ_t⟨x_t, x⁽ⁱ⁾⟩ − ᾱ_t‖x⁽ⁱ⁾‖²)/(2(1 − ᾱ_t)) (theory.md §6.5). ``x_t``: (B, *shape); ``alpha_bar``: (B,)
    ᾱ_t per row; ``train``: (n, *shape), streamed ``chunk_size`` rows at a time and converted to ``dtype`` chunk by
    chunk; with ``num_levels`` it holds integer levels u (:func:`levels_to_unit`). ``hflip`` adds each item's mirror
    image along the last axis (2n atoms). float64 is exact to ~1e-12; float32 errs by O(1) nats at small 1 − ᾱ_t."""
    b = x_t.shape[0]
    x = x_t.reshape(b, -1).to(dtype)
    ab = alpha_bar.to(dtype).reshape(b, 1)
    scale = 1 / (2 * (1 - ab))
    query, norm_coef = 2 * scale * ab.sqrt() * x, (-scale * ab).squeeze(1)  # ℓ_i = query·x⁽ⁱ⁾ + coef·‖x⁽ⁱ⁾‖²
    gap = underflow_gap(dtype)
    m = torch.full((b, 1), -torch.inf, dtype=dtype, device=x.device)
    s = torch.zeros((b, 1), dtype=dtype, device=x.device)
    f = torch.zeros_like(x)
    for start in range(0, len(train), chunk_size):
        part = train[start:start + chunk_size]
        part = part.to(x.device, dtype) if num_levels is None else levels_to_unit(part, num_levels, dtype, x.device)
        for chunk in (part, part.flip(-1)) if hflip else (part,):  # each chunk, then its mirror image
            chunk = chunk.reshape(-1, x.shape[1])
            logits = torch.mm(query, chunk.T).addr_(norm_coef, torch.linalg.vector_norm(chunk, dim=1).square())
            chunk_max = logits.amax(1, keepdim=True)
            m_new = torch.maximum(m, chunk_max)
            live = (chunk_max - m_new >= gap).squeeze(1)  # rows with a nonzero weight; the others stay as they are
            rows = slice(None) if live.all() else live.nonzero().squeeze(1)
            decay = torch.exp(m[rows] - m_new[rows])
            weights = logits[rows].sub_(m_new[rows]).exp_()
            s[rows] = s[rows] * decay + weights.sum(1, keepdim=True)
            f[rows] = torch.addmm(f[rows] * decay, weights, chunk)
            m = m_new
    return (f / s).reshape(x_t.shape)


def underflow_gap(dtype: torch.dtype) -> float:
    """A logit gap below which exp rounds to exactly 0 in ``dtype``: ln of the smallest subnormal, less 1."""
    info = torch.finfo(dtype)
    return math.log(info.tiny * info.eps) - 1
