"""Lightning callbacks: risk metrics (global and local), trajectory statistics, early stopping, samples, FID/KID."""

from ddpm_signrelu.callbacks.checkpoint import ExceptionCheckpoint
from ddpm_signrelu.callbacks.local_risk import LocalApproximation
from ddpm_signrelu.callbacks.quality import SampleQuality
from ddpm_signrelu.callbacks.risk import RiskMetrics
from ddpm_signrelu.callbacks.samples import SampleGrid, SampleWriter
from ddpm_signrelu.callbacks.stopping import DiscrepancyStop, GapRiseStop, StopReport
from ddpm_signrelu.callbacks.trajectory import TrajectoryStatistics

__all__ = ["DiscrepancyStop", "ExceptionCheckpoint", "GapRiseStop", "LocalApproximation", "RiskMetrics", "SampleGrid",
           "SampleQuality", "SampleWriter", "StopReport", "TrajectoryStatistics"]
