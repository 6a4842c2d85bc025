import math

import pytest
import torch
import torch.nn.functional as F

from ddpm_signrelu.diffusion import NoiseSchedule, predict_x0
from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.metrics.empirical_bayes import empirical_bayes_denoiser
from ddpm_signrelu.nn import HEADS, PlainHead, RatioAtomHead, RatioDirectHead, build_network, ratio_combine


SCHEDULE = NoiseSchedule.from_name("linear", 1000)


def selecting_atom_head(num_atoms: int, channels: int, temperature: bool, parameterization: str) -> RatioAtomHead:
    """A float64 atom head whose atoms are feature channels 0..K·C − 1 and whose logits are the next K channels.
    The temperature's output layer is zero-initialised, so its scale is softplus(softplus⁻¹(1)) = 1 (the offset
    set to float64 precision: the float32 one gives 1 + 2e-8)."""
    features = num_atoms * channels + num_atoms
    head = RatioAtomHead(features, channels, 8, num_atoms, "pixel", temperature, parameterization).double()
    with torch.no_grad():
        head.atoms.weight.copy_(torch.eye(features)[: num_atoms * channels])
        head.logits.weight.copy_(torch.eye(features)[num_atoms * channels:])
        head.atoms.bias.zero_(), head.logits.bias.zero_()
        if temperature:
            head.temperature_offset.fill_(math.log(math.expm1(1)))
    return head


def kernel_features(atoms: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """h (B, K·C + K, *S): the atoms (B, K, C, *S), then the logits (B, K), the same at every position."""
    b, k, spatial = atoms.shape[0], atoms.shape[1], atoms.shape[3:]
    return torch.cat([atoms.flatten(1, 2), logits.view(b, k, *[1] * len(spatial)).expand(b, k, *spatial)], 1)


@pytest.mark.parametrize("temperature", [False, True])
@pytest.mark.parametrize("parameterization", ["x0", "v"])
def test_atom_head_with_training_atoms_and_kernel_logits_is_the_empirical_bayes_denoiser(parameterization,
                                                                                         temperature):
    """The head's forward, fed the training images (or their v-atoms V_k = (√ᾱ x_t − x⁽ᵏ⁾)/√(1 − ᾱ)) and the exact
    kernel logits ℓ_k = (2√ᾱ⟨x_t, x⁽ᵏ⁾⟩ − ᾱ‖x⁽ᵏ⁾‖²)/(2(1 − ᾱ)), gives D*_n(x_t) (theory.md §4.1)."""
    g = torch.Generator().manual_seed(1)
    train = torch.rand(40, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    t = torch.tensor([0, 0, 1, 60, 300, 500, 800, 999])  # ᾱ from 0.9999 to 4e-5
    ab = SCHEDULE.alphas_cumprod[t]
    a, s = ab.sqrt().view(-1, 1, 1, 1), (1 - ab).sqrt().view(-1, 1, 1, 1)
    x_t = a * train[:8] + s * torch.randn(8, 1, 4, 4, generator=g, dtype=torch.float64)
    logits = (2 * a.flatten(1) * x_t.flatten(1) @ train.flatten(1).T
              - ab[:, None] * train.flatten(1).square().sum(1)) / (2 * (1 - ab[:, None]))
    atoms = train.expand(8, -1, -1, -1, -1)
    if parameterization == "v":
        atoms = (a[:, None] * x_t[:, None] - atoms) / s[:, None]
    head = selecting_atom_head(40, 1, temperature, parameterization)
    out = head(kernel_features(atoms, logits), torch.randn(8, 8, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == x_t.shape
    x0_hat = predict_x0(SCHEDULE, out, x_t, t, parameterization)
    expected = empirical_bayes_denoiser(x_t, ab, train)
    assert (expected - train[:8]).abs().max() > 0.1  # the posterior is spread over several items at large t
    torch.testing.assert_close(x0_hat, expected, rtol=0, atol=1e-10)


def randomised(head: torch.nn.Module, std: float) -> torch.nn.Module:
    for p in head.parameters():
        torch.nn.init.normal_(p, std=std)
    return head


@pytest.mark.parametrize("temperature", [False, True])
def test_pixel_logits_weight_each_position_by_its_own_softmax(temperature):
    """x̂0[b, c, i, j] = Σ_k softmax_k(s_b·Λ[b, k, i, j])·A[b, k, c, i, j], Λ = W_l h + b_l and A = W_a h + b_a per
    position, s_b the temperature scale: written out here from the head's weights."""
    head = randomised(RatioAtomHead(6, 2, 8, num_atoms=5, logits="pixel", temperature=temperature), 0.7)
    h, emb = torch.randn(3, 6, 4, 4), torch.randn(3, 8)
    logits = torch.einsum("kf,bfij->bkij", head.logits.weight, h) + head.logits.bias.view(1, 5, 1, 1)
    atoms = torch.einsum("of,bfij->boij", head.atoms.weight, h) + head.atoms.bias.view(1, 10, 1, 1)
    atoms = atoms.view(3, 5, 2, 4, 4)
    if temperature:
        logits = logits * F.softplus(head.temperature(emb) + head.temperature_offset).view(3, 1, 1, 1)
    assert logits.std((2, 3)).min() > 0.5  # the logits differ across positions
    expected = torch.einsum("bkij,bkcij->bcij", torch.softmax(logits, 1), atoms)
    torch.testing.assert_close(head(h, emb), expected, rtol=1e-5, atol=1e-6)


NETWORKS = {"unet": {"name": "unet", "channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "groups": 8,
                     "head_channels": 16},
            "mlp": {"name": "mlp", "width": 32, "depth": 2}}


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("head", HEADS)
def test_head_output_shape_on_unet_and_mlp_features(head, network):
    """U-Net features (B, F, H, W) give (B, C, H, W); MLP features (B, F) give (B, C·H·W); the denoiser reshapes."""
    model = build_network((3, 8, 8), NETWORKS[network], {"name": head})
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([0, 999])
    h, emb = model.backbone(x, t)
    assert model.head(h, emb).shape == ((2, 3, 8, 8) if network == "unet" else (2, 192))
    assert model(x, t).shape == x.shape


@pytest.mark.parametrize("std", [0.3, 30.0])
def test_ratio_heads_denominator_bounds_and_output_is_f1_over_f2(std):
    """Through the modules: the atom heads' f2 ∈ [1, K] (both atom forms), the direct head's f2 ∈ [c, M·c], and forward = f1/f2."""
    h, emb = torch.randn(4, 6, 5, 5), torch.randn(4, 8)
    for head, low, high in ((randomised(RatioAtomHead(6, 2, 8, num_atoms=7), std), 1.0, 7.0),
                            (randomised(RatioAtomHead(6, 2, 8, num_atoms=7, atom_form="residual"), std), 1.0, 7.0),
                            (randomised(RatioDirectHead(6, 2, 8, floor=0.5, max_ratio=40), std), 0.5, 20.0)):
        f1, f2 = head.ratio(h, emb)
        assert f1.shape == (4, 2, 5, 5) and f2.shape[2:] == (5, 5)
        assert (f2 >= low).all() and (f2 <= high * (1 + 1e-6)).all() and f2.max() > low + 0.5, type(head)
        torch.testing.assert_close(head(h, emb), f1 / f2, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("head_class", [RatioAtomHead, RatioDirectHead])
def test_ratio_heads_run_in_fp32_under_bf16_autocast(head_class):
    """Under bf16 autocast, given the bf16 features a backbone makes there, a ratio head computes in fp32: its output
    is float32 and equal to the fp32 computation on the same (bf16-valued) features."""
    head = randomised(head_class(6, 2, 8), 0.5)
    h, emb = torch.randn(3, 6, 4, 4).bfloat16(), torch.randn(3, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(h, emb)
    assert out.dtype == torch.float32
    assert torch.equal(out, head(h.float(), emb.float()))


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
    model = build_network((3, 8, 8), {"name": "unet", "channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
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
        build_network((1, 8, 8), {"name": "unet", "channels": 32, "groups": 8}, {"name": "softmax"})
    with pytest.raises(ConfigError, match=r"unknown head option\(s\) \['atoms'\]"):
        build_network((1, 8, 8), {"name": "unet", "channels": 32, "groups": 8}, {"name": "ratio_atoms", "atoms": 3})
    with pytest.raises(ConfigError, match="parameterization"):
        PlainHead(4, 1, 4, parameterization="score")


def test_ratio_of_v_atoms_is_a_ratio_of_x0_atoms_with_the_same_denominator():
    """x̂0 from the v-space ratio equals Σ_k u_k A_k / Σ_k u_k with A_k = √ᾱ x_t − √(1−ᾱ) V_k."""
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


def test_residual_atoms_start_as_the_plain_head_and_correct_it_where_the_weights_are_not_uniform():
    """atom_form="residual": A_k = B(h) + D_k(h) − mean_j D_j(h). At initialisation (D = 0) the output is the plain
    head with B's weights, to rounding; with corrections it is B(h) + Σ_k (u_k/f2 − 1/K)·D_k, written out here; and
    uniform weights (zero logits) give B(h) whatever D is (theory.md §4.2)."""
    torch.manual_seed(0)
    head, plain = RatioAtomHead(6, 2, 8, num_atoms=4, atom_form="residual"), PlainHead(6, 2, 8, "v")
    plain.out.load_state_dict(head.readout.state_dict())
    h, emb = torch.randn(3, 6, 5, 5), torch.randn(3, 8)
    assert head.logits.weight.abs().min() > 0 and not head.atoms.weight.any()
    torch.testing.assert_close(head(h, emb), plain(h, emb), rtol=0, atol=1e-6)
    with torch.no_grad():
        head.atoms.weight.normal_(), head.atoms.bias.normal_()
    corrections = head.atoms(h).view(3, 4, 2, 5, 5)
    weights = torch.softmax(head.scaled_logits(h, emb), dim=1)
    expected = plain(h, emb) + ((weights - 1 / 4) * corrections).sum(1)
    assert (expected - plain(h, emb)).abs().max() > 0.1
    torch.testing.assert_close(head(h, emb), expected, rtol=0, atol=1e-5)
    with torch.no_grad():
        head.logits.weight.zero_(), head.logits.bias.zero_()
    torch.testing.assert_close(head(h, emb), plain(h, emb), rtol=0, atol=1e-5)


def test_a_bad_atom_form_is_named():
    with pytest.raises(ConfigError, match="atom_form.*residual"):
        RatioAtomHead(6, 2, 8, atom_form="shared")


@pytest.mark.parametrize("head_class", [RatioAtomHead, RatioDirectHead, PlainHead])
def test_a_kernel_size_3_read_out_sees_the_neighbours_and_1_only_the_position(head_class):
    """Changing the features at one position moves the output at its 8 neighbours with kernel_size 3, not with 1."""
    torch.manual_seed(0)
    h, emb = torch.randn(2, 6, 5, 5), torch.randn(2, 8)
    moved = h.clone()
    moved[:, :, 2, 2] += 1.0
    for k, reach in ((1, 1), (3, 9)):
        head = randomised(head_class(6, 2, 8, kernel_size=k), 0.5)
        changed = (head(moved, emb) - head(h, emb)).abs().amax((0, 1)) > 1e-6
        assert changed.sum() == reach and changed[1:4, 1:4].sum() == reach, k


def test_bad_kernel_sizes_are_named():
    with pytest.raises(ConfigError, match="kernel_size must be an odd number"):
        PlainHead(6, 2, 8, kernel_size=2)
    with pytest.raises(ConfigError, match="kernel_size 3 reads a neighbourhood.*use kernel_size 1"):
        build_network((4,), {"name": "mlp", "width": 8, "depth": 1}, {"name": "ratio_atoms", "kernel_size": 3})
