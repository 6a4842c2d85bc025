import pytest
import torch

from ddpm_signrelu.nn import division_gate


@pytest.mark.parametrize("floor", [0.25, 1.0, 3.0])
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.5])
def test_exact_reciprocal_above_floor(floor, alpha):
    y = floor * torch.logspace(0, 3, 200, dtype=torch.float64)
    rel = (division_gate(y, floor, alpha) * y - 1).abs().max()
    assert rel <= 1e-12


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.5])
def test_line_below_floor(alpha):
    c = 2.0
    y = torch.linspace(-3, c, 50, dtype=torch.float64)
    torch.testing.assert_close(division_gate(y, c, alpha), 1 / c + (c - y) / (alpha * c**2))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.5])
def test_continuous_at_floor_and_c1_only_for_alpha_one(alpha):
    c, h = 1.5, 1e-6
    y = torch.tensor([c - h, c, c + h], dtype=torch.float64, requires_grad=True)
    v = division_gate(y, c, alpha)
    assert abs(v[0] - v[1]) < 1e-5 and abs(v[2] - v[1]) < 1e-5
    left, right = torch.autograd.grad(v[0], y, retain_graph=True)[0][0], torch.autograd.grad(v[2], y)[0][2]
    assert right.item() == pytest.approx(-1 / c**2, rel=1e-4)
    assert left.item() == pytest.approx(-1 / (alpha * c**2), rel=1e-4)
    assert (abs(left - right) < 1e-4) == (alpha == 1.0)


def test_fp32_error_grows_like_eps_times_ratio():
    c = 1.0
    y = torch.logspace(0, 4, 400, dtype=torch.float64)
    err = (division_gate(y.float(), c).double() * y - 1).abs()
    bound = 10 * torch.finfo(torch.float32).eps * y / c
    assert (err <= bound).all()


def test_squaring_gadget_on_a_grid():
    """x² = 1/(1/x − 1/(x+1)) − x, each reciprocal a gate with a floor its argument never falls below."""
    delta, big = 0.1, 10.0
    x = torch.linspace(delta, big, 500, dtype=torch.float64)
    inv_x = division_gate(x, delta)
    inv_x1 = division_gate(x + 1, 1.0)
    square = division_gate(inv_x - inv_x1, 1 / (big * (big + 1))) - x
    torch.testing.assert_close(square, x**2, rtol=1e-9, atol=1e-9)
