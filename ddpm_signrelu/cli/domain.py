"""Fit and cache the data set's domain classifier: the FID / KID features of :mod:`ddpm_signrelu.metrics.domain`."""

import argparse
from pathlib import Path

from ddpm_signrelu.cli.exits import run_command
from ddpm_signrelu.cli.train import build_run
from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.images import writable_folder
from ddpm_signrelu.metrics.domain import fit_domain_classifier


def classifier_main(argv: list[str] | None = None) -> None:
    """``python -m ddpm_signrelu.cli.domain --config CONFIG``: fit the domain classifier of CONFIG's data set on
    its training split, print its test accuracy, and cache it next to the data (or at ``--output``)."""
    p = argparse.ArgumentParser(description="Fit the domain feature extractor (FID, KID, precision/recall, confidence) "
                                            "of a run config's data set and cache it next to the data.")
    p.add_argument("--config", action="append", required=True, help="run config(s), as given to train.py fit")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="the file to write (default: next to the data set's files)")
    p.epilog = "Other options go to the run config as in train.py fit, e.g. --data ddpm_signrelu.data.MNISTDataModule"
    args, overrides = p.parse_known_args(argv)

    def main():
        configs = [a for c in args.config for a in ("--config", c)]
        dm = build_run(*configs, *overrides, "--trainer.logger", "false").datamodule
        path = Path(args.output or dm.classifier_path)
        try:
            writable_folder(path.parent)
        except ConfigError as err:
            raise ConfigError(f"{err}; or pass --output with a writable file path") from None
        fit_domain_classifier(dm, path, args.epochs, args.seed)

    run_command(main)


if __name__ == "__main__":
    classifier_main()
