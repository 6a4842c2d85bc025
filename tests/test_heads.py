import pytest
import torch

from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.nn import PlainHead, RatioAtomHead, RatioDirectHead, build_denoiser, ratio_combine


def empirical_bayes_fp64(x_t, train, alpha_bar):
    """D*_n(x_t) = Σ_i softmax_i(−‖x_t − √ᾱ x_i‖²/(2(1 − ᾱ))) x_i, brute force in float64."""
    d2 = ((x_t[:, None] - alpha_bar**0.5 * train[None]) ** 2).flatten(2).sum(-1)
    logits = -d2 / (2 * (1 - alpha_bar))
    return torch.einsum("bn,n...->b...", torch.softmax(logits, 1), train), logits


@pytest.mark.parametrize("alpha_bar", [0.9999, 0.5, 0.01])
def test_atom_head_with_training_atoms_is_the_empirical_bayes_denoiser(alpha_bar):
    g = torch.Generator().manual_seed(1)
    train = torch.rand(40, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    x_t = alpha_bar**0.5 * train[:8] + (1 - alpha_bar) ** 0.5 * torch.randn(8, 1, 4, 4, generator=g,
                                                                          dtype=torch.float64)
    expected, logits = empirical_bayes_fp64(x_t, train, alpha_bar)
    atoms = train[None].expand(8, -1, -1, -1, -1).float()
    got = ratio_combine(logits[:, :, None, None, None].float(), atoms)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)


def test_ratio_combine_equals_softmax_mean_and_denominator_at_least_one():
    logits, atoms = torch.randn(5, 7, 1, 3, 3) * 20, torch.randn(5, 7, 2, 3, 3)
    torch.testing.assert_close(ratio_combine(logits, atoms), (torch.softmax(logits, 1) * atoms).sum(1))
    u = torch.exp(logits - logits.amax(1, keepdim=True))
    assert (u.sum(1) >= 1).all()


def test_no_nan_for_huge_fp16_logits():
    logits = (torch.randn(4, 8, 1, 3, 3) * 1e4).half().float().requires_grad_()
    atoms = torch.randn(4, 8, 1, 3, 3, requires_grad=True)
    out = ratio_combine(logits, atoms)
    out.square().sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(logits.grad).all() and torch.isfinite(atoms.grad).all()


@pytest.mark.parametrize("head", ["ratio_atoms", "ratio_direct"])
def test_heads_output_fp32_and_finite_under_bf16_autocast(head):
    model = build_denoiser((3, 8, 8), {"name": "unet", "channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
                                       "groups": 8}, {"name": head})
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, torch.tensor([0, 999]))
    assert out.dtype == torch.float32
    out.square().sum().backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(p.grad).all() for p in model.parameters()
                                              if p.grad is not None)


def test_direct_head_matches_f1_over_f2_in_fp64():
    head = RatioDirectHead(6, 2, 8, floor=0.5, max_ratio=50).double()
    torch.nn.init.normal_(head.denominator.weight, std=0.5)
    h = torch.randn(3, 6, 4, 4, dtype=torch.float64) * 3
    f1 = head.numerator(h)
    f2 = 0.5 * (1 + 49 * torch.sigmoid(head.denominator(h)))
    assert (f2 > 0.5).all() and (f2 < 25).all() and f2.std() > 1
    torch.testing.assert_close(head.head(h, torch.zeros(3, 8, dtype=torch.float64)), f1 / f2, rtol=1e-12, atol=0)


def test_atom_head_global_logits_are_shared_across_pixels():
    head = RatioAtomHead(6, 1, 8, num_atoms=4, logits="global", temperature=False)
    torch.nn.init.normal_(head.logits.weight)
    h = torch.randn(2, 6, 4, 4)
    atoms = head.atoms(h).view(2, 4, 1, 4, 4)
    weights = torch.softmax(head.logits(h).mean((2, 3)), 1)[:, :, None, None, None]
    torch.testing.assert_close(head(h, torch.zeros(2, 8)), (weights * atoms).sum(1))


def test_heads_on_vector_features():
    for head in (RatioAtomHead(16, 5, 16), RatioDirectHead(16, 5, 16), PlainHead(16, 5, 16)):
        assert head(torch.randn(3, 16), torch.randn(3, 16)).shape == (3, 5)


def test_bad_head_configs():
    with pytest.raises(ConfigError, match="unknown head 'softmax'"):
        build_denoiser((1, 8, 8), {"name": "unet", "channels": 32, "groups": 8}, {"name": "softmax"})
    with pytest.raises(ConfigError, match=r"unknown head option\(s\) \['atoms'\]"):
        build_denoiser((1, 8, 8), {"name": "unet", "channels": 32, "groups": 8}, {"name": "ratio_atoms", "atoms": 3})
    with pytest.raises(ConfigError, match="parameterization"):
        PlainHead(4, 1, 4, parameterization="score")


def test_ratio_of_v_atoms_is_a_ratio_of_x0_atoms_with_the_same_denominator():
    """x̂0 from the v-space ratio equals Σ_k u_k A_k / Σ_k u_k with A_k = √ᾱ x_t − √(1−ᾱ) V_k."""
    from ddpm_signrelu.diffusion import NoiseSchedule, predict_x0

    s = NoiseSchedule.from_name("linear", 1000)
    logits, v_atoms = torch.randn(3, 5, 1, 4, 4, dtype=torch.float64) * 3, torch.randn(3, 5, 2, 4, 4,
                                                                                      dtype=torch.float64)
    x_t, t = torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.tensor([0, 400, 999])
    ab = s.alphas_cumprod[t].view(3, 1, 1, 1, 1)
    x0_atoms = ab.sqrt() * x_t[:, None] - (1 - ab).sqrt() * v_atoms
    via_v = predict_x0(s, ratio_combine(logits, v_atoms), x_t, t, "v")
    torch.testing.assert_close(via_v, ratio_combine(logits, x0_atoms), rtol=1e-10, atol=1e-12)
    assert RatioAtomHead(4, 2, 4, parameterization="v").parameterization == "v"
    with pytest.raises(ConfigError, match="ratio-head parameterization"):
        RatioDirectHead(4, 2, 4, parameterization="score")
