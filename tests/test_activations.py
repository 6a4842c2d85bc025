import math

import pytest
import torch

from benchmarks.activation import saved_bytes
from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.nn import SignReLU, init_gain, make_activation, signrelu


def test_values_on_both_branches():
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 2.0])
    expected = torch.tensor([-0.75, -0.5, -1 / 3, 0.0, 0.5, 2.0])
    torch.testing.assert_close(signrelu(x), expected)
    torch.testing.assert_close(signrelu(x, alpha=2.0), torch.where(x >= 0, x, 2 * expected))


def test_gradcheck_float64_away_from_zero():
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    x = x[x.abs() > 1e-3].requires_grad_()
    for alpha in (0.5, 1.0, 2.0):
        assert torch.autograd.gradcheck(lambda v: signrelu(v, alpha), (x,))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.5])
def test_derivative_formula(alpha):
    x = torch.linspace(-6, 6, 241, dtype=torch.float64, requires_grad=True)
    signrelu(x, alpha).sum().backward()
    expected = torch.where(x > 0, torch.ones_like(x), alpha / (1 + x.abs()) ** 2)
    expected[x == 0] = 1.0
    torch.testing.assert_close(x.grad, expected.detach())


def test_value_and_gradient_at_zero():
    x = torch.zeros(3, requires_grad=True)
    y = signrelu(x)
    y.sum().backward()
    assert y.abs().max() == 0
    assert torch.equal(x.grad, torch.ones(3))


def test_alpha_zero_is_relu():
    x = torch.randn(1000, dtype=torch.float64)
    assert torch.equal(signrelu(x, 0.0), torch.relu(x))


def test_finite_in_fp16_at_large_magnitudes():
    x = torch.tensor([-1e4, -300.0, 0.0, 300.0, 1e4], dtype=torch.float16, requires_grad=True)
    y = signrelu(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert y.dtype == torch.float16


def test_saturates_at_minus_alpha():
    x = torch.tensor([-1e12], dtype=torch.float64)
    for alpha in (0.5, 1.0, 2.0):
        assert signrelu(x, alpha).item() == pytest.approx(-alpha, rel=1e-9)
        assert signrelu(x, alpha).item() > -alpha


@pytest.mark.parametrize("alpha,gain", [(0.5, 1.383), (1.0, 1.300), (2.0, 1.075)])
def test_gain_table(alpha, gain):
    assert init_gain(SignReLU(alpha)) == pytest.approx(gain, abs=2e-3)


def test_relu_gain_is_sqrt2():
    assert init_gain(torch.nn.ReLU()) == pytest.approx(math.sqrt(2), abs=2e-3)


def test_registry_and_unknown_name():
    assert isinstance(make_activation("signrelu", alpha=0.5), SignReLU)
    assert isinstance(make_activation("silu"), torch.nn.SiLU)
    with pytest.raises(ConfigError, match="unknown activation 'swish'.*signrelu"):
        make_activation("swish")


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_saves_no_more_for_backward_than_silu(alpha):
    x = torch.randn(4, 8, 16, 16, requires_grad=True)
    assert saved_bytes(lambda v: signrelu(v, alpha), x) == saved_bytes(torch.nn.functional.silu, x) == x.nbytes


@pytest.mark.slow
def test_fused_matches_the_autograd_function():
    x = torch.linspace(-6, 6, 4001, dtype=torch.float64)
    for alpha in (0.5, 1.0):
        eager, fused = x.clone().requires_grad_(), x.clone().requires_grad_()
        y_eager, y_fused = signrelu(eager, alpha), signrelu(fused, alpha, fused=True)
        torch.testing.assert_close(y_fused, y_eager)
        (y_eager * x.cos()).sum().backward()
        (y_fused * x.cos()).sum().backward()
        torch.testing.assert_close(fused.grad, eager.grad)
    assert saved_bytes(lambda v: signrelu(v, fused=True), x.clone().requires_grad_()) <= x.nbytes
