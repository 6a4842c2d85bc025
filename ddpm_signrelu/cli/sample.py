"""``sample.py``: samples (images or table rows) from a checkpoint on one or many devices, with FID and KID."""

import argparse
import json
import math
from functools import partial
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ddpm_signrelu.callbacks.samples import SampleWriter, TableWriter
from ddpm_signrelu.checkpoints import load_model, table_codec
from ddpm_signrelu.cli.exits import run_command
from ddpm_signrelu.cli.train import build_run
from ddpm_signrelu.data import TensorDataModule
from ddpm_signrelu.diffusion.analytic import eps_second_moment
from ddpm_signrelu.diffusion.samplers import SAMPLERS, SPACINGS, sampling_plan
from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.images import to_uint8, writable_folder
from ddpm_signrelu.lit import DiffusionModel
from ddpm_signrelu.metrics.domain import fingerprint
from ddpm_signrelu.metrics.fid import image_distances, load_feature_extractor, load_images_npz


def sample_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Sample images (or table rows, as a CSV) from a ddpm_signrelu checkpoint, "
                                            "on one or many devices.")
    p.add_argument("--ckpt_path", required=True, help="checkpoint written by train.py")
    p.add_argument("--num_samples", type=int, default=64)
    p.add_argument("--sampler", choices=SAMPLERS, default="ddpm")
    p.add_argument("--steps", type=int, default=None, help="grid points (default: T for ddpm, 50 for ddim, 20 for "
                   "the others); heun calls the network 2·steps − 2 times, the others once per step")
    p.add_argument("--spacing", choices=SPACINGS, default=None,
                   help="the grid: uniform in t, uniform in log-SNR, or Karras et al.'s (rho = 7); default uniform for "
                        "ddpm and ddim, logsnr for the dpmpp solvers, karras for heun")
    p.add_argument("--eta", type=float, default=None, help="DDIM's noise scale η (default 0: deterministic)")
    p.add_argument("--analytic_variance", default=None, metavar="CONFIG",
                   help="ddpm only: Analytic-DPM's reverse variance, from Γ_t estimated once on 512 training items of "
                        "CONFIG's data (the run config the model was trained with)")
    p.add_argument("--seed", type=int, default=0, help="sample j uses seed + j, whatever the devices")
    p.add_argument("--batch_size", type=int, default=256, help="samples per batch on each device")
    p.add_argument("--output", default="samples", help="folder for the PNG grid and the .npz")
    p.add_argument("--stratify", default=None, metavar="COLUMN",
                   help="tables: a categorical column whose labels keep their training shares (a target): "
                        "oversample x num_samples rows are drawn and the first of each label kept")
    p.add_argument("--oversample", type=float, default=1.5, help="with --stratify: rows drawn per row kept")
    p.add_argument("--accelerator", default="auto", help="cpu, gpu, ... (Lightning's Trainer)")
    p.add_argument("--devices", default="1", help="devices per node (Lightning DDP when more than one)")
    p.add_argument("--num_nodes", type=int, default=1)
    p.add_argument("--precision", default="32-true", help="e.g. bf16-mixed")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (worth it for long runs on GPU)")
    p.add_argument("--reference", default=None, help="real images for FID and KID (written to quality.json): an "
                   ".npz (uint8 NHWC, arr_0) or a train config, whose data module's --reference_split is used")
    p.add_argument("--reference_split", choices=("train", "heldout"), default="train")
    p.add_argument("--features", default="inception", help="FID features: inception, domain (the data set's own "
                   "classifier, cached next to the data of a --reference config) or package.module:name")
    p.add_argument("--feature_weights", "--inception_weights", dest="feature_weights", default=None,
                   help="the features' file: FID's Inception weights (offline), or a domain classifier")
    return p


def sample_main(argv: list[str] | None = None) -> None:
    """``python sample.py --ckpt_path CKPT --num_samples N --sampler NAME --steps S --seed K --output DIR``;
    ``--devices 8`` (or torchrun / SLURM) shares the seeds out over processes with Lightning's DDP."""
    args = sample_parser().parse_args(argv)

    def main():
        if args.num_samples < 1 or args.batch_size < 1:
            raise ConfigError(f"num_samples and batch_size must be >= 1, got {args.num_samples}, {args.batch_size}")
        model = load_model(args.ckpt_path, compile=args.compile)
        codec = table_codec(args.ckpt_path)
        writable_folder(args.output)  # before any sampling: a bad --output must not lose the samples
        if codec is not None and args.reference:
            raise ConfigError("--reference scores images; the rows of a tabular model (samples.csv) are scored by "
                              "python -m benchmarks.tabular_quality")
        drawn = args.num_samples
        if args.stratify:
            if codec is None or not codec.column(args.stratify).counts or args.oversample < 1:
                raise ConfigError(f"--stratify takes a categorical column of a tabular model's checkpoint (with its "
                                  f"training label counts) and --oversample >= 1; got {args.stratify!r}, "
                                  f"{args.oversample}")
            drawn = math.ceil(args.oversample * args.num_samples)
        if args.reference:  # bad FID settings fail before sampling
            reference, dm = reference_images(args.reference, args.reference_split, model.hparams.num_levels)
            data = None
            if args.features == "domain" and args.feature_weights is None and dm is not None:
                args.feature_weights, data = dm.classifier_path, fingerprint(dm.train_data)
            load_feature_extractor(args.features, args.feature_weights, data)
        sampling = {"sampler": args.sampler, "steps": args.steps, "eta": args.eta, "spacing": args.spacing}
        grid, _ = sampling_plan(model.diffusion.schedule, **sampling)  # bad options fail before any process starts
        if args.analytic_variance:
            if args.sampler != "ddpm":
                raise ConfigError(f"--analytic_variance applies to --sampler ddpm, not to {args.sampler}")
            sampling["gamma"] = analytic_gamma(model, args.analytic_variance, grid)
        writer = TableWriter(args.output, codec, args.stratify and (args.stratify, args.num_samples)) if codec \
            else SampleWriter(args.output, model.hparams.num_levels)
        devices = int(args.devices) if args.devices.isdigit() else args.devices
        try:
            trainer = L.Trainer(accelerator=args.accelerator, devices=devices, num_nodes=args.num_nodes,
                                precision=args.precision, logger=False, callbacks=[writer], enable_progress_bar=False,
                                enable_model_summary=False)
        except ValueError as err:  # the Trainer's check of --precision and the like
            raise ConfigError(str(err)) from None
        model.sampling = sampling | {"progress": partial(_steps_bar, desc=f"{args.sampler}-{len(grid)}")}
        seeds = torch.arange(args.seed, args.seed + drawn)
        trainer.predict(model, DataLoader(seeds, batch_size=args.batch_size), return_predictions=False)
        if trainer.is_global_zero:
            print(f"wrote {' and '.join(str(p) for p in writer.paths)}")
            if args.reference:
                quality = image_distances(load_images_npz(writer.paths[1]), reference, args.features,
                                          args.feature_weights, model.device)
                Path(args.output, "quality.json").write_text(json.dumps(quality, indent=1))
                print("  ".join(f"{k} {v:.4f}" for k, v in quality.items()))

    run_command(main)


def analytic_gamma(model: DiffusionModel, config: str, steps: torch.Tensor, num_items: int = 512) -> torch.Tensor:
    """Γ_t (T,) at the step indices ``steps`` (NaN elsewhere), on ``num_items`` seeded training items of ``config``'s
    data module (:func:`~ddpm_signrelu.diffusion.analytic.eps_second_moment`)."""
    dm = build_run("--config", config, "--trainer.logger", "false").datamodule
    dm.setup("fit")
    rows = torch.randperm(len(dm.train_data), generator=torch.Generator().manual_seed(0))[:num_items]
    gamma = torch.full((model.diffusion.num_timesteps,), torch.nan, dtype=torch.float64)
    gamma[steps] = eps_second_moment(partial(model.denoise, clip=False), model.diffusion.schedule,
                                     dm.to_unit(dm.train_data[rows]).to(model.device), steps)
    return gamma


def reference_images(source: str, split: str, num_levels: int | None) -> tuple[torch.Tensor, TensorDataModule | None]:
    """uint8 images (N, C, H, W) from an .npz (and None), or from ``split`` of a train config's data module (and it)."""
    if not source.endswith((".yaml", ".yml")):
        return load_images_npz(source), None
    dm = build_run("--config", source, "--trainer.logger", "false").datamodule
    dm.setup("fit")
    return to_uint8(dm.to_unit(dm.train_data if split == "train" else dm.val_data), num_levels), dm


def _steps_bar(steps, desc: str):
    """The sampling steps of a batch, with a progress bar on rank zero."""
    return tqdm(steps, desc=desc, unit="step", leave=False) if rank_zero_only.rank == 0 else steps
