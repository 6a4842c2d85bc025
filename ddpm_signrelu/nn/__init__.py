"""Networks: SignReLU, the division gate, ratio-form heads, U-Net and MLP backbones."""

from ddpm_signrelu.nn.activations import ACTIVATIONS, SignReLU, init_gain, make_activation, signrelu
from ddpm_signrelu.nn.denoiser import NETWORKS, Denoiser, build_denoiser, resolve_config
from ddpm_signrelu.nn.division import division_gate
from ddpm_signrelu.nn.heads import HEADS, PlainHead, RatioAtomHead, RatioDirectHead, ratio_combine
from ddpm_signrelu.nn.mlp import MLP
from ddpm_signrelu.nn.unet import UNet

__all__ = ["ACTIVATIONS", "HEADS", "MLP", "NETWORKS", "Denoiser", "PlainHead", "RatioAtomHead", "RatioDirectHead",
           "SignReLU", "UNet", "build_denoiser", "division_gate", "init_gain", "make_activation", "ratio_combine",
           "resolve_config", "signrelu"]
