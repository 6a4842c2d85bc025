"""Networks: SignReLU, the division gate, ratio-form heads, U-Net and MLP backbones."""

from ddpm_signrelu.nn.activations import ACTIVATIONS, SignReLU, init_gain, make_activation, signrelu
from ddpm_signrelu.nn.division import division_gate
from ddpm_signrelu.nn.heads import (ATOM_FORMS, HEADS, LOGITS_MODES, PlainHead, RatioAtomHead, RatioDirectHead,
                                    gated_ratio, ratio_combine, softmax_ratio)
from ddpm_signrelu.nn.mlp import MLP
from ddpm_signrelu.nn.network import NETWORKS, ReverseNetwork, build_network, resolve_config
from ddpm_signrelu.nn.unet import UNet

__all__ = ["ACTIVATIONS", "ATOM_FORMS", "HEADS", "LOGITS_MODES", "MLP", "NETWORKS", "PlainHead", "RatioAtomHead",
           "RatioDirectHead", "ReverseNetwork", "SignReLU", "UNet", "build_network", "division_gate", "gated_ratio",
           "init_gain", "make_activation", "ratio_combine", "resolve_config", "signrelu", "softmax_ratio"]
