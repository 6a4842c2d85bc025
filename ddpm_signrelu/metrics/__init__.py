"""Metrics."""

from ddpm_signrelu.metrics.empirical_bayes import empirical_bayes_denoiser
from ddpm_signrelu.metrics.sample_quality import knn_precision_recall, near_copies

__all__ = ["empirical_bayes_denoiser", "knn_precision_recall", "near_copies"]
