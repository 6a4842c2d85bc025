"""ddpm_signrelu: SignReLU ratio-head DDPMs with live excess-KL risk."""

__version__ = "0.1.0"
