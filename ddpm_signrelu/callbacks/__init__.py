"""Lightning callbacks: risk metrics, early stopping, sample grids."""

from ddpm_signrelu.callbacks.risk import RiskMetrics
from ddpm_signrelu.callbacks.samples import SampleGrid
from ddpm_signrelu.callbacks.stopping import DiscrepancyStop, StopReport

__all__ = ["DiscrepancyStop", "RiskMetrics", "SampleGrid", "StopReport"]
