"""``train.py``: LightningCLI with composed config files, a run folder per run, and checked resumption."""

import contextlib
import copy
import json
import netrc
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

import yaml
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from ddpm_signrelu.checkpoints import read_checkpoint
from ddpm_signrelu.cli.exits import run_command
from ddpm_signrelu.data import TensorDataModule
from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.lit import DiffusionModel
from ddpm_signrelu.runs import as_list, check_resumable, place_run, resume_path

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "digits.yaml"


class LoggedConfig(SaveConfigCallback):
    """Lightning's ``config.yaml`` in the run folder, and the whole config in every logger (the W&B run's config)."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})


def wandb_offline_without_credentials(config) -> None:
    """Log W&B offline, and say so, where a W&B logger has no API key and ``WANDB_MODE`` is unset (no log-in prompt;
    ``wandb sync <run folder>/wandb/offline-run-*`` uploads the run later)."""
    loggers = as_list(config.get("trainer", {}).get("logger"))
    wandb = any(str(getattr(lg, "class_path", "")).endswith("WandbLogger") for lg in loggers)
    if not wandb or "WANDB_MODE" in os.environ or "WANDB_API_KEY" in os.environ:
        return
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    with contextlib.suppress(FileNotFoundError, netrc.NetrcParseError):
        if netrc.netrc().authenticators(host):
            return
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
        """Not LightningCLI's silent swap of the config's model settings for the checkpoint's: they are compared in
        :meth:`after_instantiate_classes`, and a difference is refused."""

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        check_trainer(config.trainer, fit=self.subcommand == "fit")
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
    """``args`` with several ``--config`` files composed: a later file's ``model.network`` or ``model.head`` merges
    into the earlier one when it names the same class or none (jsonargparse would replace the dict), and the run
    folder, unless a file sets one, is ``runs/<stems joined by _>``, e.g. ``runs/digits_silu_eps``."""
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
    """``.model``, ``.datamodule`` and ``.trainer`` as ``train.py fit`` builds and checks them from ``args``, without
    loading data or running: ``build_run("--config", "configs/digits.yaml", "--trainer.logger", "false")``."""
    return DiffusionCLI(DiffusionModel, TensorDataModule, subclass_mode_data=True, args=list(args), run=False,
                        parser_kwargs={"exit_on_error": False})


def check_trainer(trainer, fit: bool = False) -> None:
    """Trainer settings that Lightning would take and fail on later (for ``fit``: after the sanity check), refused
    here."""
    interval = trainer.val_check_interval
    if isinstance(interval, (int, float)) and interval <= 0:
        raise ConfigError(f"trainer.val_check_interval must be > 0 (steps, or a fraction of an epoch), got {interval}")
    lr_monitor = any(str(getattr(c, "class_path", "")).endswith("LearningRateMonitor")
                     for c in as_list(trainer.callbacks))
    if fit and lr_monitor and trainer.logger in (False, []):
        raise ConfigError("trainer.logger false leaves the config's LearningRateMonitor nothing to log to: keep a "
                          "logger, e.g. --trainer.logger lightning.pytorch.loggers.CSVLogger (no W&B run)")


def train_main(args: list[str] | None = None) -> None:
    """``python train.py [fit --config configs/<name>.yaml ...]``; no arguments trains the digits default."""
    if args is None and len(sys.argv) == 1:
        args = ["fit", "--config", str(DEFAULT_CONFIG)]
    run_command(lambda: DiffusionCLI(DiffusionModel, TensorDataModule, subclass_mode_data=True, args=args,
                                     save_config_kwargs={"overwrite": True}, parser_kwargs={"exit_on_error": False}))