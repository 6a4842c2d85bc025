"""Reference denoisers for the risk metrics (theory.md §4.1, §6.5)."""

from __future__ import annotations

import torch


def empirical_bayes_denoiser(x_t: torch.Tensor, alpha_bar: torch.Tensor, train: torch.Tensor,
                             chunk_size: int = 4096, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """D*_n(x_t, t) = Σ_i softmax_i(ℓ_i) x⁽ⁱ⁾, the posterior mean under the training set's empirical measure.

    ℓ_i = (2√ᾱ_t⟨x_t, x⁽ⁱ⁾⟩ − ᾱ_t‖x⁽ⁱ⁾‖²)/(2(1 − ᾱ_t)): the ‖x_t‖² term is constant in i and cancels.
    Streams over chunks of ``train`` with a running log-sum-exp, so memory is O(B·chunk + B·D) whatever n is;
    ``train`` is converted one chunk at a time, so it can be stored in a compact dtype. ``alpha_bar``: (B,) ᾱ_t
    per row of x_t. Per chunk: one product gives the logits (the ‖x⁽ⁱ⁾‖² column rides along as an extra
    coordinate), one the weighted sum. ``dtype`` float64 (the default) is exact to ~1e-12; in float32 the
    logits' rounding error grows like ε_mach·D/(1 − ᾱ_t), O(1) nats at the smallest t, so use it only where
    1 − ᾱ_t is not small (``benchmarks/reference_throughput.py`` prints the error).
    """
    b = x_t.shape[0]
    x = x_t.reshape(b, -1).to(dtype)
    ab = alpha_bar.to(dtype).reshape(b, 1)
    scale = 1 / (2 * (1 - ab))
    query = torch.cat([2 * scale * ab.sqrt() * x, -scale * ab], dim=1)  # ℓ = query · (x⁽ⁱ⁾, ‖x⁽ⁱ⁾‖²)
    m = torch.full((b, 1), -torch.inf, dtype=dtype, device=x.device)
    s = torch.zeros((b, 1), dtype=dtype, device=x.device)
    f = torch.zeros_like(x)
    for start in range(0, len(train), chunk_size):
        chunk = train[start:start + chunk_size].reshape(-1, x.shape[1]).to(x.device, dtype)
        logits = query @ torch.cat([chunk, chunk.square().sum(1, keepdim=True)], dim=1).T
        m_new = torch.maximum(m, logits.amax(1, keepdim=True))
        decay = torch.exp(m - m_new)
        weights = logits.sub_(m_new).exp_()
        s = s * decay + weights.sum(1, keepdim=True)
        f = torch.addmm(f * decay, weights, chunk)
        m = m_new
    return (f / s).reshape(x_t.shape)
