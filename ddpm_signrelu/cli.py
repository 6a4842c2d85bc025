"""Command-line wiring: ``train.py`` (LightningCLI) and ``sample.py`` (argparse)."""

from __future__ import annotations

import argparse
import copy
import importlib
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
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ddpm_signrelu.callbacks.samples import SampleWriter, TableWriter
from ddpm_signrelu.data import TensorDataModule
from ddpm_signrelu.diffusion.analytic import eps_second_moment
from ddpm_signrelu.diffusion.samplers import SAMPLERS, SPACINGS, sampling_plan
from ddpm_signrelu.errors import CheckpointError, ConfigError, UserError
from ddpm_signrelu.checkpoints import check_weights, load_model, read_checkpoint, table_codec
from ddpm_signrelu.images import to_uint8, writable_folder
from ddpm_signrelu.metrics.domain import fingerprint, fit_domain_classifier
from ddpm_signrelu.metrics.fid import image_distances, load_feature_extractor, load_images_npz
from ddpm_signrelu.lit import DiffusionModel, setting_differences

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
    loggers = _as_list(config.get("trainer", {}).get("logger"))
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
    """LightningCLI whose model takes the data's shape and number of levels from the data module, whose run folder
    (``trainer.default_root_dir``) holds everything the run writes, and which refuses to continue or overwrite a run
    by accident (:func:`resume_path`) or to resume with other model settings than the checkpoint's."""

    def __init__(self, *args, **kwargs):
        self.builds_only = not kwargs.get("run", True)
        super().__init__(*args, save_config_callback=LoggedConfig, **kwargs)

    def parse_arguments(self, parser, args) -> None:
        """Parse the command line (or ``args``) with its ``--config`` files composed by :func:`compose_configs`."""
        self.config = parser.parse_args(compose_configs(sys.argv[1:] if args is None else list(args)))

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.data_shape", "model.data_shape", apply_on="instantiate")
        parser.link_arguments("data.num_levels", "model.num_levels", apply_on="instantiate")
        if self.builds_only:  # a run folder's config.yaml also holds fit's own arguments: accepted, unused
            parser.add_argument("--ckpt_path", type=str | None, default=None)
            parser.add_argument("--weights_only", type=bool | None, default=None)

    def _parse_ckpt_path(self) -> None:
        """LightningCLI would replace the config's model settings by the checkpoint's here, silently; instead they
        are compared in :meth:`after_instantiate_classes`, and a difference is refused."""

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        check_trainer(config.trainer)
        self.config_as_given = copy.deepcopy(config)  # saved as config.yaml: the run folder stays one setting
        place_run(config.trainer)
        wandb_offline_without_credentials(config)
        self.resume = None
        if self.subcommand:
            config.ckpt_path = resume_path(config.ckpt_path, config.trainer, fit=self.subcommand == "fit")
            self.resume = config.ckpt_path and (config.ckpt_path, read_checkpoint(config.ckpt_path))

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        for callback in self.trainer.callbacks:
            if isinstance(callback, LoggedConfig):
                callback.config = self.config_as_given
        if self.resume:
            path, checkpoint = self.resume
            self.resume = None  # the trainer reads the file again; this copy is not kept
            check_resumable(checkpoint, self.model, path)
        if self.subcommand in ("fit", "validate", "test"):
            self.datamodule.setup(self.subcommand)  # missing or bad data fail here, before a logger starts a run


def compose_configs(args: list[str]) -> list[str]:
    """``args`` with several ``--config`` files composed as a user reads them, and the run folder named after them.

    jsonargparse replaces a dict-typed setting wholesale, so a later file's ``model.network`` would drop the earlier
    file's network options. Here a ``network`` or ``head`` dict merges into the one before it when it names the same
    class or none, and replaces it when it names another (as LightningCLI merges a class's ``init_args``); the result
    is passed after the last file. Where no file sets ``trainer.default_root_dir``, the run folder is
    ``runs/<stems of the files joined by _>``: ``--config configs/digits.yaml --config configs/silu_eps.yaml`` runs
    in ``runs/digits_silu_eps``."""
    at = [i for i, arg in enumerate(args) if arg == "--config" or arg.startswith("--config=")]
    paths = [args[i + 1] if args[i] == "--config" else args[i].partition("=")[2] for i in at if i + 1 < len(args)
             or args[i] != "--config"]
    if not paths:
        return args
    model, root, data = {}, None, any(arg.startswith("--data") for arg in args)
    for path in paths:
        config = yaml.safe_load(Path(path).read_text()) if Path(path).is_file() else None
        if not isinstance(config, dict):
            return args  # not a file of settings: the parser names the problem
        for key, new in (config.get("model") or {}).items():
            if key in ("network", "head") and isinstance(new, dict):
                old = model.get(key, {})
                model[key] = {**old, **new} if new.get("name", old.get("name")) == old.get("name") else new
        root = (config.get("trainer") or {}).get("default_root_dir", root)
        data = data or "data" in config
    if not data and not {"-h", "--help"} & set(args):
        raise ConfigError(f"{' and '.join(paths)} name(s) no data: an override file such as configs/silu_eps.yaml "
                          f"goes after a run config, e.g. --config configs/digits.yaml --config {paths[-1]}")
    end = at[-1] + (2 if args[at[-1]] == "--config" else 1)
    composed = [f"--model.{key}={json.dumps(value)}" for key, value in model.items()] if len(paths) > 1 else []
    if root is None:
        composed.append(f"--trainer.default_root_dir=runs/{'_'.join(Path(p).stem for p in paths)}")
    return [*args[:end], *composed, *args[end:]]


def build_run(*args: str) -> DiffusionCLI:
    """The model, data module and trainer (``.model``, ``.datamodule``, ``.trainer``) that ``train.py fit`` builds
    from these arguments, checked the same way, without running anything: for scripts, benchmarks and tests, e.g.
    ``build_run("--config", "configs/digits.yaml", "--trainer.logger", "false")``. The data are not loaded."""
    return DiffusionCLI(DiffusionModel, TensorDataModule, subclass_mode_data=True, args=list(args), run=False,
                        parser_kwargs={"exit_on_error": False})


def check_trainer(trainer) -> None:
    """Trainer settings that Lightning would take and fail on later, refused here."""
    interval = trainer.val_check_interval
    if isinstance(interval, (int, float)) and interval <= 0:
        raise ConfigError(f"trainer.val_check_interval must be > 0 (steps, or a fraction of an epoch), got {interval}")


def _as_list(value) -> list:
    return value if isinstance(value, list) else [] if value in (None, True, False) else [value]


def _is_subclass(class_path: str, base: type) -> bool:
    module, _, name = class_path.rpartition(".")
    try:
        return issubclass(getattr(importlib.import_module(module), name), base)
    except (ImportError, AttributeError, TypeError, ValueError):
        return False


def place_run(trainer) -> None:
    """Put everything a run writes under ``trainer.default_root_dir``: each logger's ``save_dir`` and each
    checkpoint callback's ``dirpath`` (``<run>/checkpoints``) unless the config names a folder (``.`` or nothing
    means the run folder). A logger's run ``name``, where it takes one and none is given, is the folder's name."""
    root = trainer.default_root_dir or "."
    for logger in _as_list(trainer.logger):
        if "save_dir" in logger.init_args and logger.init_args.save_dir in (None, "."):
            logger.init_args.save_dir = root
        if "name" in logger.init_args and logger.init_args.name is None:
            logger.init_args.name = Path(root).resolve().name
    for callback in _as_list(trainer.callbacks):
        if _is_subclass(callback.class_path, Checkpoint) and "dirpath" in callback.init_args \
                and callback.init_args.dirpath is None:
            callback.init_args.dirpath = os.path.join(root, "checkpoints")


def checkpoint_dirs(trainer) -> list[Path]:
    """The folders the run's checkpoint callbacks write to."""
    return [Path(cb.init_args.dirpath) for cb in _as_list(trainer.callbacks)
            if _is_subclass(cb.class_path, Checkpoint) and cb.init_args.get("dirpath")]


def resume_path(ckpt_path: str | None, trainer, fit: bool = True) -> str | None:
    """The checkpoint a command starts from. ``last``: the one of highest global step (the newest file on a tie)
    among the run's ``last*.ckpt`` and ``on_exception*.ckpt`` and Lightning's SLURM ``hpc_ckpt_*.ckpt``.

    ``fit`` in a run folder that already holds checkpoints continues it only when asked, with ``last`` or one of
    its own checkpoints; anything else (no ``ckpt_path``, another run's checkpoint) would continue or overwrite it
    unasked and is refused. A job that SLURM requeued resumes from its HPC checkpoint, as Lightning does."""
    root = Path(trainer.default_root_dir or ".")
    found = [p for folder in checkpoint_dirs(trainer) if folder.is_dir() for p in sorted(folder.glob("*.ckpt"))]
    found += sorted(root.glob("hpc_ckpt_*.ckpt"))
    if ckpt_path == "last":
        candidates = [p for p in found if p.stem.startswith(("last", "on_exception", "hpc_ckpt_"))]
        if not candidates:
            raise ConfigError(f"--ckpt_path last: no checkpoint to resume under {root}; drop --ckpt_path to start anew")
        return str(max(candidates, key=lambda p: (checkpoint_step(p), p.stat().st_mtime)))
    requeued = ckpt_path is None and SLURMEnvironment.detect() and any(p.stem.startswith("hpc_ckpt_") for p in found)
    own = ckpt_path is not None and Path(ckpt_path).resolve() in {p.resolve() for p in found}
    if fit and found and not (own or requeued):
        steps = {p: checkpoint_step(p) for p in found}
        newest = max(steps, key=steps.get)
        start = f"from {ckpt_path}" if ckpt_path else "a new run"
        raise ConfigError(f"{root} already holds a run (checkpoints up to step {steps[newest]} in {newest.parent}): "
                          f"resume it with --ckpt_path last, or start {start} in another folder with "
                          f"--trainer.default_root_dir DIR")
    return ckpt_path


def checkpoint_step(path: Path) -> int:
    """The global step a checkpoint was written at."""
    return int(read_checkpoint(path).get("global_step", 0))


def check_resumable(checkpoint: dict, model: DiffusionModel, path) -> None:
    """Refuse, naming what differs, a checkpoint whose model settings or weights are not ``model``'s."""
    differ = setting_differences(checkpoint["hyper_parameters"], dict(model.hparams))
    if differ:
        raise CheckpointError(f"{path} holds a model with other settings: {differ}; use the run's own config "
                              f"(config.yaml in its folder), or start a new run in another folder")
    check_weights(checkpoint["state_dict"], model, path)


def relocate_run(config: dict, run_dir: str | Path, wandb: bool = True, csv: bool = False) -> dict:
    """A copy of a train config (as loaded from YAML) whose run folder is ``run_dir``; ``wandb=False`` drops its W&B
    logger, ``csv=True`` adds a CSV log (``run_dir/metrics.csv``, continued when the run is resumed). For scripted
    sweeps, benchmarks and tests."""
    config = copy.deepcopy(config)
    trainer = config["trainer"]
    trainer["default_root_dir"] = str(run_dir)
    loggers = [lg for lg in _as_list(trainer.get("logger")) if wandb or not lg["class_path"].endswith("WandbLogger")]
    if csv:
        loggers.append({"class_path": "ddpm_signrelu.lit.ResumableCSVLogger", "init_args": {"save_dir": str(run_dir)}})
    trainer["logger"] = loggers
    return config


def user_error(err: BaseException) -> Exception | None:
    """The bad-input error behind ``err``, if any: a :class:`UserError`, Lightning's MisconfigurationException or a
    command-line parser's error, also where the parser raised its own error from it (``raise ... from``)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (UserError, MisconfigurationException, argparse.ArgumentError)):
            return err
        seen.add(id(err))
        err = err.__cause__
    return None


def _run(main) -> None:
    """Run ``main``; bad input ends it with one line, ``error: ...``, and exit code 2."""
    try:
        main()
    except Exception as err:
        cause = user_error(err)
        if cause is None:
            raise
        print(f"error: {one_line(cause)}", file=sys.stderr)
        sys.exit(2)


def one_line(err: Exception) -> str:
    """``err``'s message on one line; a parser's "does not validate against any of the Union subtypes" is cut to the
    key, what each subtype expected (None aside) and the value given, with a pointer to ``--help``."""
    message = " ".join(str(err).split())
    if not isinstance(err, argparse.ArgumentError):
        return message
    head, _, problems = message.partition(" Errors: - ")
    if problems:
        problems, _, given = problems.partition(" Given value type: ")
        expected = [p for p in problems.split(" - ") if "NoneType" not in p]
        value = given.partition(" Given value: ")[2]
        message = f"{head.partition(': Does not validate')[0]}: {'; or '.join(expected)} (given: {value})"
    return f"{message}; --help lists the options"


def train_main(args: list[str] | None = None) -> None:
    """``python train.py [fit --config configs/<name>.yaml ...]``; no arguments trains the digits default."""
    if args is None and len(sys.argv) == 1:
        args = ["fit", "--config", str(DEFAULT_CONFIG)]
    _run(lambda: DiffusionCLI(DiffusionModel, TensorDataModule, subclass_mode_data=True, args=args,
                              save_config_kwargs={"overwrite": True}, parser_kwargs={"exit_on_error": False}))


def sample_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Sample images (or table rows, as a CSV) from a ddpm_signrelu checkpoint, "
                                            "on one or many devices.")
    p.add_argument("--ckpt_path", required=True, help="checkpoint written by train.py")
    p.add_argument("--num_samples", type=int, default=64)
    p.add_argument("--sampler", choices=SAMPLERS, default="ddpm")
    p.add_argument("--steps", type=int, default=None,
                   help="grid points (default: T for ddpm, 50 for ddim, 20 for the others); heun calls the network "
                        "2·steps − 1 times, the others once per step")
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
        writer = TableWriter(args.output, codec) if codec else SampleWriter(args.output, model.hparams.num_levels)
        devices = int(args.devices) if args.devices.isdigit() else args.devices
        try:
            trainer = L.Trainer(accelerator=args.accelerator, devices=devices, num_nodes=args.num_nodes,
                                precision=args.precision, logger=False, callbacks=[writer], enable_progress_bar=False,
                                enable_model_summary=False)
        except ValueError as err:  # the Trainer's check of --precision and the like
            raise ConfigError(str(err)) from None
        model.sampling = sampling | {"progress": partial(_steps_bar, desc=f"{args.sampler}-{len(grid)}")}
        seeds = torch.arange(args.seed, args.seed + args.num_samples)
        trainer.predict(model, DataLoader(seeds, batch_size=args.batch_size), return_predictions=False)
        if trainer.is_global_zero:
            print(f"wrote {' and '.join(str(p) for p in writer.paths)}")
            if args.reference:
                quality = image_distances(load_images_npz(writer.paths[1]), reference, args.features,
                                          args.feature_weights, model.device)
                Path(args.output, "quality.json").write_text(json.dumps(quality, indent=1))
                print("  ".join(f"{k} {v:.4f}" for k, v in quality.items()))

    _run(main)


def classifier_main(argv: list[str] | None = None) -> None:
    """``python -m ddpm_signrelu.metrics.domain --config CONFIG``: fit the domain classifier of CONFIG's data set on
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

    _run(main)


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
    """uint8 images (N, C, H, W) from an .npz, or from the ``split`` of a train config's data module (also
    returned, set up; None for an .npz)."""
    if not source.endswith((".yaml", ".yml")):
        return load_images_npz(source), None
    dm = build_run("--config", source, "--trainer.logger", "false").datamodule
    dm.setup("fit")
    return to_uint8(dm.to_unit(dm.train_data if split == "train" else dm.val_data), num_levels), dm


def _steps_bar(steps, desc: str):
    """The sampling steps of a batch, with a progress bar on rank zero."""
    return tqdm(steps, desc=desc, unit="step", leave=False) if rank_zero_only.rank == 0 else steps
