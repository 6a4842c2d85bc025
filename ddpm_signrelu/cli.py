"""Command-line wiring: ``train.py`` (LightningCLI) and ``sample.py`` (argparse)."""

from __future__ import annotations

import argparse
import copy
import json
import netrc
import os
import sys
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import lightning as L
import torch
import yaml
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback, instantiate_class
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ddpm_signrelu.callbacks.samples import SampleWriter
from ddpm_signrelu.data import TensorDataModule
from ddpm_signrelu.diffusion.samplers import SAMPLERS, default_steps, timestep_grid
from ddpm_signrelu.errors import ConfigError, UserError
from ddpm_signrelu.io import load_model, to_uint8
from ddpm_signrelu.metrics.fid import image_distances, load_feature_extractor, load_images_npz
from ddpm_signrelu.lit import DiffusionModel

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "digits.yaml"


class LoggedConfig(SaveConfigCallback):
    """Lightning's ``config.yaml`` in the run folder, and the whole config in every logger (the W&B run's config)."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})


def wandb_offline_without_credentials(config) -> None:
    """Log W&B offline (and say so) when a W&B logger is configured but no API key is found and ``WANDB_MODE`` is
    unset, instead of stopping a run at a log-in prompt. ``wandb sync <run folder>/wandb/offline-run-*`` uploads
    such a run later."""
    loggers = config.get("trainer", {}).get("logger") or []
    loggers = loggers if isinstance(loggers, list) else [loggers]
    if not any(str(getattr(lg, "class_path", "")).endswith("WandbLogger") for lg in loggers):
        return
    if "WANDB_MODE" in os.environ or "WANDB_API_KEY" in os.environ:
        return
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        if netrc.netrc().authenticators(host):
            return
    except (FileNotFoundError, netrc.NetrcParseError):
        pass
    os.environ["WANDB_MODE"] = "offline"
    print(f"W&B: no API key for {host} (wandb login, or WANDB_API_KEY); logging offline. Set WANDB_MODE to choose; "
          f"--trainer.logger lightning.pytorch.loggers.CSVLogger logs to CSV only", file=sys.stderr)


class DiffusionCLI(LightningCLI):
    """LightningCLI whose model takes the data's shape and number of levels from the data module."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, save_config_callback=LoggedConfig, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.data_shape", "model.data_shape", apply_on="instantiate")
        parser.link_arguments("data.num_levels", "model.num_levels", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        wandb_offline_without_credentials(self.config.get(self.subcommand, self.config) if self.subcommand
                                          else self.config)


def relocate_run(config: dict, run_dir: str | Path, wandb: bool = True, csv: bool = False) -> dict:
    """A copy of a train config (as loaded from YAML) whose run folder, loggers and checkpoint folders are
    ``run_dir``; ``wandb=False`` drops its W&B logger, ``csv=True`` adds a CSV log (``run_dir/metrics.csv``).
    For scripted sweeps, benchmarks and tests."""
    config = copy.deepcopy(config)
    trainer, run_dir = config["trainer"], str(run_dir)
    trainer["default_root_dir"] = run_dir
    loggers = trainer.get("logger") or []
    loggers = [lg for lg in (loggers if isinstance(loggers, list) else [loggers])
               if wandb or not lg["class_path"].endswith("WandbLogger")]
    if csv:
        loggers.append({"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"name": "", "version": ""}})
    for logger in loggers:
        logger.setdefault("init_args", {})["save_dir"] = run_dir
    trainer["logger"] = loggers
    for cb in trainer.get("callbacks", []):
        if "dirpath" in cb.get("init_args", {}):
            cb["init_args"]["dirpath"] = f"{run_dir}/checkpoints"
    return config


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
    p = argparse.ArgumentParser(description="Sample images from a ddpm_signrelu checkpoint, on one or many devices.")
    p.add_argument("--ckpt_path", required=True, help="checkpoint written by train.py")
    p.add_argument("--num_samples", type=int, default=64)
    p.add_argument("--sampler", choices=SAMPLERS, default="ddpm")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: T for ddpm, 50 for ddim)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM noise scale η (0: deterministic)")
    p.add_argument("--seed", type=int, default=0, help="sample j uses seed + j, whatever the devices")
    p.add_argument("--batch_size", type=int, default=256, help="samples per batch on each device")
    p.add_argument("--output", default="samples", help="folder for the PNG grid and the .npz")
    p.add_argument("--accelerator", default="auto", help="cpu, gpu, ... (Lightning's Trainer)")
    p.add_argument("--devices", default="1", help="devices per node (Lightning DDP when more than one)")
    p.add_argument("--num_nodes", type=int, default=1)
    p.add_argument("--precision", default="32-true", help="e.g. bf16-mixed")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (worth it for long runs on GPU)")
    p.add_argument("--reference", default=None, help="real images for FID and KID (written to quality.json): an "
                   ".npz (uint8 NHWC, arr_0) or a train config, whose data module's --reference_split is used")
    p.add_argument("--reference_split", choices=("train", "heldout"), default="train")
    p.add_argument("--features", default="inception", help="FID features: inception or package.module:name")
    p.add_argument("--inception_weights", default=None, help="local file of FID's Inception weights (offline)")
    return p


def sample_main(argv: list[str] | None = None) -> None:
    """``python sample.py --ckpt_path CKPT --num_samples N --sampler ddpm|ddim --steps S --seed K --output DIR``;
    ``--devices 8`` (or torchrun / SLURM) shares the seeds out over processes with Lightning's DDP."""
    args = sample_parser().parse_args(argv)

    def main():
        if args.num_samples < 1 or args.batch_size < 1:
            raise ConfigError(f"num_samples and batch_size must be >= 1, got {args.num_samples}, {args.batch_size}")
        model = load_model(args.ckpt_path, compile=args.compile)
        if args.reference:  # bad FID settings fail before sampling
            reference = reference_images(args.reference, args.reference_split, model.hparams.num_levels)
            load_feature_extractor(args.features, args.inception_weights)
        steps = args.steps or default_steps(args.sampler, model.schedule.num_timesteps)
        timestep_grid(model.schedule.num_timesteps, steps)  # a bad --steps fails here, before any process starts
        writer = SampleWriter(args.output, model.hparams.num_levels)
        devices = int(args.devices) if args.devices.isdigit() else args.devices
        trainer = L.Trainer(accelerator=args.accelerator, devices=devices, num_nodes=args.num_nodes,
                            precision=args.precision, logger=False, callbacks=[writer], enable_progress_bar=False,
                            enable_model_summary=False)
        model.sampling = {"sampler": args.sampler, "steps": steps, "eta": args.eta, "progress": partial(_steps_bar, desc=f"{args.sampler}-{steps}")}
        seeds = torch.arange(args.seed, args.seed + args.num_samples)
        trainer.predict(model, DataLoader(seeds, batch_size=args.batch_size), return_predictions=False)
        if trainer.is_global_zero:
            print(f"wrote {writer.paths[0]} and {writer.paths[1]}")
            if args.reference:
                quality = image_distances(load_images_npz(writer.paths[1]), reference, args.features,
                                          args.inception_weights, model.device)
                Path(args.output, "quality.json").write_text(json.dumps(quality, indent=1))
                print("  ".join(f"{k} {v:.4f}" for k, v in quality.items()))

    _run(main)


def reference_images(source: str, split: str, num_levels: int | None) -> torch.Tensor:
    """uint8 images (N, C, H, W) from an .npz, or from the ``split`` of a train config's data module."""
    if not source.endswith((".yaml", ".yml")):
        return load_images_npz(source)
    if not Path(source).is_file():
        raise ConfigError(f"config not found: {source}")
    dm = instantiate_class((), yaml.safe_load(Path(source).read_text())["data"])
    dm.setup("fit")
    return to_uint8(dm.train_data if split == "train" else dm.val_data, num_levels)


def _steps_bar(steps, desc: str):
    """The sampling steps of a batch, with a progress bar on rank zero."""
    return tqdm(steps, desc=desc, unit="step", leave=False) if rank_zero_only.rank == 0 else steps
