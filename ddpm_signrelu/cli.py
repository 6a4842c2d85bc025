"""Command-line wiring: ``train.py`` (LightningCLI) and ``sample.py`` (argparse)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from lightning.pytorch.cli import LightningCLI
from tqdm.auto import tqdm

from ddpm_signrelu.data import TensorDataModule
from ddpm_signrelu.diffusion.samplers import SAMPLERS, default_steps, timestep_grid
from ddpm_signrelu.errors import ConfigError, UserError
from ddpm_signrelu.io import load_model, save_samples, to_uint8
from ddpm_signrelu.lit import DiffusionModel

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "digits.yaml"


class DiffusionCLI(LightningCLI):
    """LightningCLI whose model takes the data's shape and number of levels from the data module."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.data_shape", "model.data_shape", apply_on="instantiate")
        parser.link_arguments("data.num_levels", "model.num_levels", apply_on="instantiate")


def _run(main, *args) -> None:
    try:
        main(*args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def train_main(args: list[str] | None = None) -> None:
    """``python train.py [fit --config configs/<name>.yaml ...]``; no arguments trains the digits default."""
    args = sys.argv[1:] if args is None else args
    if not args:
        args = ["fit", "--config", str(DEFAULT_CONFIG)]
    _run(lambda: DiffusionCLI(DiffusionModel, TensorDataModule, subclass_mode_data=True, args=args,
                              save_config_kwargs={"overwrite": True}))


def sample_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Sample images from a ddpm_signrelu checkpoint.")
    p.add_argument("--ckpt_path", required=True, help="checkpoint written by train.py")
    p.add_argument("--num_samples", type=int, default=64)
    p.add_argument("--sampler", choices=SAMPLERS, default="ddpm")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: T for ddpm, 50 for ddim)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM noise scale η (0: deterministic)")
    p.add_argument("--seed", type=int, default=0, help="sample j uses seed + j")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--output", default="samples", help="folder for the PNG grid and the .npz")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def sample_main(argv: list[str] | None = None) -> None:
    """``python sample.py --ckpt_path CKPT --num_samples N --sampler ddpm|ddim --steps S --seed K --output DIR``."""
    args = sample_parser().parse_args(argv)

    def main():
        if args.num_samples < 1 or args.batch_size < 1:
            raise ConfigError(f"num_samples and batch_size must be >= 1, got {args.num_samples}, {args.batch_size}")
        model = load_model(args.ckpt_path, map_location=args.device)
        steps = args.steps or default_steps(args.sampler, model.schedule.num_timesteps)
        per_batch = len(timestep_grid(model.schedule.num_timesteps, steps))
        seeds = list(range(args.seed, args.seed + args.num_samples))
        batches = [seeds[i:i + args.batch_size] for i in range(0, len(seeds), args.batch_size)]
        with tqdm(total=per_batch * len(batches), desc=f"{args.sampler}-{steps}", unit="step") as bar:
            def progress(it):
                for i in it:
                    yield i
                    bar.update(1)

            images = torch.cat([model.generate(b, args.sampler, steps, args.eta, progress) for b in batches])
        png, npz = save_samples(to_uint8(images, model.hparams.num_levels), args.output)
        print(f"wrote {png} and {npz}")

    _run(main)
