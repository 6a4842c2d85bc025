"""Train a model: ``python train.py`` (digits default) or ``python train.py fit --config configs/<name>.yaml``."""

from ddpm_signrelu.cli import train_main

if __name__ == "__main__":
    train_main()
