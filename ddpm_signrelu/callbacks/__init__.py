"""Lightning callbacks."""

from ddpm_signrelu.callbacks.samples import SampleGrid

__all__ = ["SampleGrid"]
