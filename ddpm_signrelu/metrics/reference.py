"""Reference denoisers for the risk metrics (theory.md §4.1, §6.5)."""

from __future__ import annotations

import torch


def empirical_bayes_denoiser(x_t: torch.Tensor, alpha_bar: torch.Tensor, train: torch.Tensor,
                             chunk_size: int = 4096) -> torch.Tensor:
    """D*_n(x_t, t) = Σ_i softmax_i(ℓ_i) x⁽ⁱ⁾, the posterior mean under the training set's empirical measure.

    ℓ_i = (2√ᾱ_t⟨x_t, x⁽ⁱ⁾⟩ − ᾱ_t‖x⁽ⁱ⁾‖²)/(2(1 − ᾱ_t)): the ‖x_t‖² term is constant in i and cancels.
    Computed in float64 (fp32 cancellation turns into O(1) logit errors at small t), streaming over chunks of
    ``train`` with a running log-sum-exp, so memory is O(B·chunk + B·D) whatever n is. ``train`` holds the
    data values and is converted to float64 one chunk at a time, so it can be stored in a compact dtype.
    ``alpha_bar``: (B,) ᾱ_t per row of x_t.
    """
    b = x_t.shape[0]
    x = x_t.reshape(b, -1).double()
    ab = alpha_bar.double().reshape(b, 1)
    scale = 1 / (2 * (1 - ab))
    m = torch.full((b, 1), -torch.inf, dtype=torch.float64, device=x.device)
    s = torch.zeros((b, 1), dtype=torch.float64, device=x.device)
    f = torch.zeros_like(x)
    for start in range(0, len(train), chunk_size):
        chunk = train[start:start + chunk_size].reshape(-1, x.shape[1]).to(x.device, torch.float64)
        logits = scale * (2 * ab.sqrt() * (x @ chunk.T) - ab * chunk.square().sum(1)[None])
        m_new = torch.maximum(m, logits.amax(1, keepdim=True))
        decay, weights = torch.exp(m - m_new), torch.exp(logits - m_new)
        s = s * decay + weights.sum(1, keepdim=True)
        f = f * decay + weights @ chunk
        m = m_new
    return (f / s).reshape(x_t.shape)
