"""The run folder: where a run's logs and checkpoints go, and which checkpoint a command resumes from."""

import importlib
import os
from pathlib import Path

from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.environments import SLURMEnvironment

from ddpm_signrelu.checkpoints import check_weights, read_checkpoint
from ddpm_signrelu.errors import CheckpointError, ConfigError
from ddpm_signrelu.lit import DiffusionModel, setting_differences


def as_list(value) -> list:
    """A config's logger or callbacks entry as a list (``None``, ``True`` and ``False`` name none)."""
    return value if isinstance(value, list) else [] if value in (None, True, False) else [value]


def _is_subclass(class_path: str, base: type) -> bool:
    module, _, name = class_path.rpartition(".")
    try:
        return issubclass(getattr(importlib.import_module(module), name), base)
    except (ImportError, AttributeError, TypeError, ValueError):
        return False


def place_run(trainer) -> None:
    """Point each logger's ``save_dir`` and each checkpoint callback's ``dirpath`` (``<run>/checkpoints``) that the
    config leaves unset (or ``.``) into ``trainer.default_root_dir``; an unnamed logger run takes the folder's name."""
    root = trainer.default_root_dir or "."
    for logger in as_list(trainer.logger):
        if "save_dir" in logger.init_args and logger.init_args.save_dir in (None, "."):
            logger.init_args.save_dir = root
        if "name" in logger.init_args and logger.init_args.name is None:
            logger.init_args.name = Path(root).resolve().name
    for callback in as_list(trainer.callbacks):
        if _is_subclass(callback.class_path, Checkpoint) and "dirpath" in callback.init_args \
                and callback.init_args.dirpath is None:
            callback.init_args.dirpath = os.path.join(root, "checkpoints")


def checkpoint_dirs(trainer) -> list[Path]:
    """The folders the run's checkpoint callbacks write to."""
    return [Path(cb.init_args.dirpath) for cb in as_list(trainer.callbacks)
            if _is_subclass(cb.class_path, Checkpoint) and cb.init_args.get("dirpath")]


def resume_path(ckpt_path: str | None, trainer, fit: bool = True) -> str | None:
    """The checkpoint a command starts from. ``last``: the one of highest global step (the newest file on a tie)
    among the run's ``last*``, ``on_exception*`` and Lightning's SLURM ``hpc_ckpt_*`` checkpoints. ``fit`` in a folder
    holding checkpoints continues only with ``last`` or one of them (or from its HPC checkpoint when SLURM requeued
    the job, as Lightning does); anything else would continue or overwrite the run unasked: a ConfigError."""
    root = Path(trainer.default_root_dir or ".")
    found = [p for folder in checkpoint_dirs(trainer) if folder.is_dir() for p in sorted(folder.glob("*.ckpt"))]
    found += sorted(root.glob("hpc_ckpt_*.ckpt"))
    if ckpt_path == "last":
        if not (candidates := [p for p in found if p.stem.startswith(("last", "on_exception", "hpc_ckpt_"))]):
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
    if differ := setting_differences(checkpoint["hyper_parameters"], dict(model.hparams)):
        raise CheckpointError(f"{path} holds a model with other settings: {differ}; use the run's own config "
                              f"(config.yaml in its folder), or start a new run in another folder")
    check_weights(checkpoint["state_dict"], model, path)
