"""Command-line wiring: ``train.py``, ``sample.py`` and the domain classifier; bad input ends in one line."""

from ddpm_signrelu.cli.sample import analytic_gamma, sample_main
from ddpm_signrelu.cli.train import DiffusionCLI, build_run, compose_configs, train_main

__all__ = ["DiffusionCLI", "analytic_gamma", "build_run", "compose_configs", "sample_main", "train_main"]
