"""The equivariant local score (ELS) machine: the Bayes denoiser of a locally constrained, translation-equivariant
model, a patch mosaic of the training set (theory.md §6.7; Kamb & Ganguli, ICML 2025, arXiv 2412.20292)."""

import torch
import torch.nn.functional as F


def padding_classes(height: int, width: int, patch_size: int) -> list[torch.Tensor]:
    """The pixel positions (flat h·W + w) grouped by the zero padding their centred P×P patch needs (§6.7: Q(p))."""
    d = patch_size // 2

    def axis(size):
        i = torch.arange(size)
        return (d - i).clamp(min=0) * (d + 1) + (i + d - (size - 1)).clamp(min=0)  # (before, after) padding as one id

    key = axis(height)[:, None] * (d + 1) ** 2 + axis(width)[None, :]
    return [(key.flatten() == k).nonzero().squeeze(1) for k in key.unique()]


def local_patch_denoiser(x_t: torch.Tensor, alpha_bar: torch.Tensor, bank: torch.Tensor, patch_size: int,
                         budget: int = 2**25, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ELS machine's x̂0 (theory.md §6.7): at each pixel, the posterior mean of the centre pixel of a P×P
    training patch given the P×P patch of x_t around it, over the patches of ``bank`` at positions of the same
    :func:`padding_classes`. ``patch_size`` P: odd (else ValueError). ``x_t``: (B, C, H, W); ``alpha_bar``: (B,);
    ``bank``: (N, C, H, W) in data units, streamed with a running log-sum-exp per pixel, ``budget`` logits at a time."""
    b, c, h, w = x_t.shape
    if patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"patch_size must be odd and >= 1, got {patch_size}")
    d = patch_size // 2
    ab = alpha_bar.to(dtype).view(b, 1, 1)
    scale = 1 / (2 * (1 - ab))  # logits ℓ = 2√ᾱ·scale·⟨x_t[p], y[q]⟩ − ᾱ·scale·‖y[q]‖² (the ‖x_t[p]‖² term cancels)
    query = F.unfold(F.pad(x_t.to(dtype), (d,) * 4), patch_size).transpose(1, 2) * (2 * ab.sqrt() * scale)
    m = torch.full((b, h * w), -torch.inf, dtype=dtype, device=x_t.device)
    s, f = torch.zeros_like(m), torch.zeros(b, h * w, c, dtype=dtype, device=x_t.device)
    classes = padding_classes(h, w, patch_size)
    largest = max(len(idx) for idx in classes)
    step = max(1, budget // (b * largest * largest))
    for start in range(0, len(bank), step):
        chunk = bank[start:start + step].to(x_t.device, dtype)
        patches = F.unfold(F.pad(chunk, (d,) * 4), patch_size).transpose(1, 2)  # (N, HW, C·P²)
        norms, centres = patches.square().sum(2), chunk.flatten(2).transpose(1, 2)  # (N, HW), (N, HW, C)
        for idx in classes:
            y = patches[:, idx].flatten(0, 1)  # (N·n_c, C·P²)
            bias = (-ab * scale) * norms[:, idx].flatten().view(1, 1, -1)
            logits = torch.baddbmm(bias, query[:, idx], y.T.expand(b, -1, -1))  # (B, n_c, N·n_c)
            m_new = torch.maximum(m[:, idx], logits.amax(2))
            decay = torch.exp(m[:, idx] - m_new)
            weights = logits.sub_(m_new.unsqueeze(2)).exp_()
            s[:, idx] = s[:, idx] * decay + weights.sum(2)
            f[:, idx] = torch.baddbmm(f[:, idx] * decay.unsqueeze(2), weights,
                                      centres[:, idx].flatten(0, 1).expand(b, -1, -1))
            m[:, idx] = m_new
    return (f / s.unsqueeze(2)).transpose(1, 2).reshape(b, c, h, w)
