import math

import pytest
import torch

from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.nn import SignReLU, build_network
from ddpm_signrelu.nn.layers import timestep_embedding

SMALL = {"name": "unet", "channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "groups": 8,
         "head_channels": 16}


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16), (3, 32, 24), (2, 28, 28)])
@pytest.mark.parametrize("head", ["ratio_atoms", "ratio_direct", "plain"])
def test_unet_takes_any_compatible_shape(shape, head):
    model = build_network(shape, {**SMALL, "attention_resolutions": [min(shape[1:]) // 2]}, {"name": head})
    x = torch.randn(2, *shape)
    assert model(x, torch.tensor([0, 500])).shape == x.shape


def test_unet_uses_configured_activation():
    model = build_network((1, 8, 8), SMALL, {"name": "plain"})
    assert any(isinstance(m, SignReLU) for m in model.modules())
    model = build_network((1, 8, 8), {**SMALL, "activation": "silu"}, {"name": "plain"})
    assert not any(isinstance(m, SignReLU) for m in model.modules())


@pytest.mark.parametrize("shape", [(2,), (64,), (1, 8, 8)])
def test_mlp_on_vector_and_image_shaped_data(shape):
    model = build_network(shape, {"name": "mlp", "width": 32, "depth": 2}, {"name": "ratio_atoms"})
    x = torch.randn(5, *shape)
    assert model(x, torch.arange(5)).shape == x.shape


def test_time_conditioning_changes_the_output():
    model = build_network((1, 8, 8), SMALL, {"name": "ratio_atoms"})
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(1, 1, 8, 8).expand(2, -1, -1, -1)
    out = model(x, torch.tensor([3, 900]))
    assert (out[0] - out[1]).abs().max() > 1e-3


def test_image_size_error_names_the_sizes_it_takes():
    with pytest.raises(ConfigError, match=r"image size 28x28 .* divisible by 8 \(8, 16, 24, 32"):
        build_network((1, 28, 28), {**SMALL, "channel_mult": [1, 2, 2, 2]}, {"name": "plain"})


def test_group_norm_divisibility_error():
    with pytest.raises(ConfigError, match=r"widths \[24, 48\] are not divisible by the GroupNorm groups \(32\)"):
        build_network((1, 8, 8), {"name": "unet", "channels": 24, "channel_mult": [1, 2]}, {"name": "plain"})


def test_other_network_errors():
    with pytest.raises(ConfigError, match="unknown network 'resnet'"):
        build_network((1, 8, 8), {"name": "resnet"}, {"name": "plain"})
    with pytest.raises(ConfigError, match="unknown activation 'tanh'"):
        build_network((1, 8, 8), {**SMALL, "activation": "tanh"}, {"name": "plain"})
    with pytest.raises(ConfigError, match="attention_resolutions"):
        build_network((1, 8, 8), {**SMALL, "attention_resolutions": [16]}, {"name": "plain"})
    with pytest.raises(ConfigError, match="needs image data of shape"):
        build_network((64,), SMALL, {"name": "plain"})
    with pytest.raises(ConfigError, match=r"unknown network option\(s\) \['width'\]"):
        build_network((1, 8, 8), {**SMALL, "width": 3}, {"name": "plain"})
    with pytest.raises(ConfigError, match="option width must be of type int"):
        build_network((4,), {"name": "mlp", "width": "2.5"}, {"name": "plain"})


def test_command_line_options_are_read_as_their_defaults_types():
    """``--model.network.width 16`` reaches the dict-typed network option as text: it builds what 16 builds."""
    from ddpm_signrelu.cli import build_run

    run = build_run("--config", "configs/gmm2d.yaml", "--trainer.logger", "false", "--model.network.width", "16",
                    "--model.head.temperature", "false", "--model.head.num_atoms", "3")
    assert run.model.hparams.network["width"] == 16 and run.model.hparams.head["num_atoms"] == 3
    assert run.model.model.backbone.input.out_features == 16 and run.model.model.head.temperature is None


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_time_embedding_follows_the_input_dtype(dtype):
    """cos/sin(t·10000^(−k/half)), zero-padded to odd dim, in the input's dtype, computed in at least float32."""
    t = torch.tensor([0, 1, 517, 999])
    emb = timestep_embedding(t, 9, dtype=dtype)
    freqs = torch.exp(-math.log(10_000) * torch.arange(4, dtype=torch.float64) / 4)
    args = t.double()[:, None] * freqs
    exact = torch.cat([args.cos(), args.sin(), torch.zeros(4, 1, dtype=torch.float64)], 1)
    assert emb.dtype == dtype and emb.shape == (4, 9)
    tol = {torch.float64: 1e-12, torch.float32: 1e-4, torch.bfloat16: 8e-3}[dtype]
    torch.testing.assert_close(emb.double(), exact, rtol=0, atol=tol)  # bf16 arguments would make t = 999 into 1000
