"""Metrics."""

from ddpm_signrelu.metrics.sample_quality import knn_precision_recall, near_copies

__all__ = ["knn_precision_recall", "near_copies"]
