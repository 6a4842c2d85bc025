import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ddpm_signrelu.diffusion import NoiseSchedule
from ddpm_signrelu.metrics import empirical_bayes_denoiser


def brute_force(x_t, alpha_bar, train):
    """Σ_i softmax_i(−‖x_t − √ᾱ x_i‖²/(2(1−ᾱ))) x_i from full squared distances, float64."""
    x, tr = x_t.flatten(1).double(), train.flatten(1).double()
    ab = alpha_bar.double()[:, None]
    d2 = ((x[:, None] - ab.sqrt()[..., None] * tr[None]) ** 2).sum(-1)
    return (torch.softmax(-d2 / (2 * (1 - ab)), 1) @ tr).reshape(x_t.shape)


@pytest.mark.parametrize("step", [0, 10, 300, 999])
def test_matches_brute_force_including_the_smallest_t(step):
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 17, (300, 1, 8, 8), generator=g).float() / 8 - 1
    ab = NoiseSchedule.from_name("linear", 1000).alphas_cumprod[step]
    x0 = train[:6] + 0.05 * torch.randn(6, 1, 8, 8, generator=g)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn(6, 1, 8, 8, generator=g)
    alpha_bar = ab.expand(6)
    expected = brute_force(x_t, alpha_bar, train)
    for chunk in (7, 64, 4096):  # streaming over chunks equals the one-shot softmax
        got = empirical_bayes_denoiser(x_t, alpha_bar, train, chunk_size=chunk)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_memorises_at_small_t_and_averages_at_large_t():
    train = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [0.5, 0.5]])
    s = NoiseSchedule.from_name("linear", 1000)
    near = empirical_bayes_denoiser(train[1:2] * s.alphas_cumprod[0].sqrt(), s.alphas_cumprod[:1], train)
    torch.testing.assert_close(near, train[1:2].double())
    far = empirical_bayes_denoiser(torch.zeros(1, 2), s.alphas_cumprod[-1:], train)
    torch.testing.assert_close(far, train.double().mean(0, keepdim=True), atol=1e-3, rtol=0)


def test_uint8_reference_set_gives_the_same_result():
    g = torch.Generator().manual_seed(1)
    levels = torch.randint(0, 256, (50, 3, 2, 2), generator=g, dtype=torch.uint8)
    x_t, ab = torch.randn(4, 3, 2, 2, generator=g), torch.full((4,), 0.3)
    torch.testing.assert_close(empirical_bayes_denoiser(x_t, ab, levels, 16),
                               brute_force(x_t, ab, levels.float()), rtol=0, atol=1e-10)


@pytest.mark.parametrize("step", [0, 10, 300, 999])
def test_uint8_levels_with_mirror_images_match_brute_force_over_the_concatenated_set(step):
    """Stored levels u (uint8) with num_levels and hflip: the atoms are x = u/127.5 − 1 and their left-right
    mirror images, never stored; brute force runs over the explicitly concatenated float64 set."""
    g = torch.Generator().manual_seed(4)
    levels = torch.randint(0, 256, (40, 3, 4, 5), generator=g, dtype=torch.uint8)  # W = 5: a flip is not a transpose
    atoms = levels.double() / 127.5 - 1
    both = torch.cat([atoms, atoms.flip(-1)])
    ab = NoiseSchedule.from_name("linear", 1000).alphas_cumprod[step].expand(6)
    x0 = both[[0, 45, 3, 70, 12, 79]]  # items and mirror images
    x_t = (ab.sqrt()[:, None, None, None] * x0 + (1 - ab).sqrt()[:, None, None, None] * torch.randn(
        6, 3, 4, 5, generator=g, dtype=torch.float64)).float()
    expected = brute_force(x_t, ab, both)
    for chunk in (7, 16, 4096):
        got = empirical_bayes_denoiser(x_t, ab, levels, chunk, num_levels=256, hflip=True)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    unflipped = empirical_bayes_denoiser(x_t, ab, levels, 16, num_levels=256)
    torch.testing.assert_close(unflipped, brute_force(x_t, ab, atoms), rtol=0, atol=1e-10)
    if step == 0:  # the posterior sits on the noised item: a mirror image is recovered only with hflip
        torch.testing.assert_close(got[1], both[45], rtol=0, atol=1e-6)
        assert (unflipped[1] - both[45]).abs().max() > 0.1


@pytest.mark.parametrize("step,atol", [(300, 1e-4), (999, 1e-5)])
def test_float32_path_where_one_minus_alpha_bar_is_not_small(step, atol):
    g = torch.Generator().manual_seed(2)
    train = torch.randint(0, 17, (500, 64), generator=g).float() / 8 - 1
    ab = NoiseSchedule.from_name("linear", 1000).alphas_cumprod[step].expand(8)
    x_t = ab[:, None].sqrt() * train[:8] + (1 - ab[:, None]).sqrt() * torch.randn(8, 64, generator=g)
    got = empirical_bayes_denoiser(x_t, ab, train, chunk_size=128, dtype=torch.float32)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), brute_force(x_t, ab, train), rtol=0, atol=atol)


def test_rows_whose_weights_underflow_skip_the_weighted_sum_exactly():
    g = torch.Generator().manual_seed(3)
    train = torch.randint(0, 17, (512, 64), generator=g).float() / 8 - 1
    ab = NoiseSchedule.from_name("linear", 1000).alphas_cumprod[torch.tensor([0, 0, 5, 999])]
    x_t = ab[:, None].sqrt() * train[[400, 3, 200, 7]] + (1 - ab[:, None]).sqrt() * torch.randn(4, 64, generator=g)
    with FlopCounterMode(display=False) as counter:
        got = empirical_bayes_denoiser(x_t, ab, train, chunk_size=32)
    torch.testing.assert_close(got, brute_force(x_t, ab, train), rtol=0, atol=1e-10)
    weighted_sum_flop = counter.get_flop_counts()["Global"][torch.ops.aten.addmm]  # the logits are an mm
    # the t = 999 row needs every chunk; the three small-t rows only those before and at their item's chunk
    assert 2 * 1 * 64 * 512 <= weighted_sum_flop < 0.5 * 2 * 4 * 64 * 512
