"""Reference denoisers for the risk metrics (theory.md §4.1, §6.5)."""

from __future__ import annotations

import math

import torch

from ddpm_signrelu.data.base import levels_to_unit


def empirical_bayes_denoiser(x_t: torch.Tensor, alpha_bar: torch.Tensor, train: torch.Tensor,
                             chunk_size: int = 4096, dtype: torch.dtype = torch.float64, num_levels: int | None = None,
                             hflip: bool = False) -> torch.Tensor:
    """D*_n(x_t, t) = Σ_i softmax_i(ℓ_i) x⁽ⁱ⁾, the posterior mean under the training set's empirical measure.

    ℓ_i = (2√ᾱ_t⟨x_t, x⁽ⁱ⁾⟩ − ᾱ_t‖x⁽ⁱ⁾‖²)/(2(1 − ᾱ_t)): the ‖x_t‖² term is constant in i and cancels.
    Streams over chunks of ``train`` with a running log-sum-exp, so memory is O(B·chunk + B·D) whatever n is;
    ``train`` is converted to ``dtype`` one chunk at a time, so it can be stored in a compact dtype: with
    ``num_levels`` it holds integer levels u, the atoms being x = 2u/(L − 1) − 1 (:func:`levels_to_unit`). With
    ``hflip`` the atoms are ``train`` and its mirror images (flipped along the last axis, chunk by chunk: never
    stored), 2n in all. ``alpha_bar``: (B,) ᾱ_t per row of x_t. Per chunk: one product gives the logits (the
    ‖x⁽ⁱ⁾‖² term added as a rank-one update), one the weighted sum. ``dtype`` float64 (the default) is exact to
    ~1e-12; in float32 the logits' rounding error grows like ε_mach·D/(1 − ᾱ_t), O(1) nats at the smallest t, so
    use it only where 1 − ᾱ_t is not small (``benchmarks/empirical_bayes_throughput.py`` prints the error).
    Rows whose chunk logits all lie below the running maximum by more than :func:`underflow_gap` get exactly
    zero weights there (exp underflows), so the chunk's weighted sum is formed for the other rows alone: at
    small t, where the posterior sits on a few items, most of the second product is skipped, exactly.
    """
    b = x_t.shape[0]
    x = x_t.reshape(b, -1).to(dtype)
    ab = alpha_bar.to(dtype).reshape(b, 1)
    scale = 1 / (2 * (1 - ab))
    query, norm_coef = 2 * scale * ab.sqrt() * x, (-scale * ab).squeeze(1)  # ℓ_i = query·x⁽ⁱ⁾ + coef·‖x⁽ⁱ⁾‖²
    gap = underflow_gap(dtype)
    m = torch.full((b, 1), -torch.inf, dtype=dtype, device=x.device)
    s = torch.zeros((b, 1), dtype=dtype, device=x.device)
    f = torch.zeros_like(x)
    for chunk in _chunks(train, chunk_size, hflip):
        chunk = chunk.reshape(-1, x.shape[1])
        chunk = chunk.to(x.device, dtype) if num_levels is None else levels_to_unit(chunk, num_levels, dtype, x.device)
        logits = torch.mm(query, chunk.T).addr_(norm_coef, torch.linalg.vector_norm(chunk, dim=1).square())
        chunk_max = logits.amax(1, keepdim=True)
        m_new = torch.maximum(m, chunk_max)
        live = (chunk_max - m_new >= gap).squeeze(1)  # rows with a weight in this chunk that is not exactly 0
        # the other rows keep their maximum (decay 1) and would add exact zeros: leave them as they are
        rows = slice(None) if live.all() else live.nonzero().squeeze(1)
        decay = torch.exp(m[rows] - m_new[rows])
        weights = logits[rows].sub_(m_new[rows]).exp_()
        s[rows] = s[rows] * decay + weights.sum(1, keepdim=True)
        f[rows] = torch.addmm(f[rows] * decay, weights, chunk)
        m = m_new
    return (f / s).reshape(x_t.shape)


def _chunks(train: torch.Tensor, chunk_size: int, hflip: bool):
    """Chunks of ``chunk_size`` rows of ``train``, each followed by its mirror image under ``hflip``."""
    for start in range(0, len(train), chunk_size):
        chunk = train[start:start + chunk_size]
        yield chunk
        if hflip:
            yield chunk.flip(-1)


def underflow_gap(dtype: torch.dtype) -> float:
    """A logit gap below which exp rounds to exactly 0 in ``dtype``: ln of the smallest subnormal, less 1 (a
    margin far beyond exp's rounding): −104.3 in float32, −745.4 in float64."""
    info = torch.finfo(dtype)
    return math.log(info.tiny * info.eps) - 1
