"""Reading checkpoints written by ``train.py``: one clear error for each way a file can be wrong."""

import os
from pathlib import Path

import torch

from ddpm_signrelu.data.table import TableCodec
from ddpm_signrelu.errors import CheckpointError
from ddpm_signrelu.lit import CHECKPOINT_KEY, DiffusionModel


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint written by this package (its tensors memory-mapped, nothing executed), or one clear error:
    missing, unreadable (truncated, corrupt, not a torch file), not this package's, no hyper-parameters or weights."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as err:  # torch.load fails in many ways on a bad file: zip, pickle, seek, mmap errors
        raise CheckpointError(f"cannot read checkpoint {path}: it is truncated, corrupt or not a torch file "
                              f"({type(err).__name__}: {err})") from None
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        raise CheckpointError(f"{path} is not a ddpm_signrelu checkpoint (no '{CHECKPOINT_KEY}' entry); "
                              f"pass a checkpoint written by 'python train.py'")
    if missing := [k for k in ("hyper_parameters", "state_dict") if not checkpoint.get(k)]:
        raise CheckpointError(f"{path} has no {' and no '.join(missing)}: it cannot rebuild the model; pass a "
                              f"checkpoint written by 'python train.py'")
    return checkpoint


def check_weights(state_dict: dict, model: DiffusionModel, path) -> None:
    """Refuse a checkpoint whose weights do not fill ``model``: missing, unexpected or misshapen entries are named."""
    own = model.state_dict()
    missing, unexpected = sorted(own.keys() - state_dict.keys()), sorted(state_dict.keys() - own.keys())
    shapes = sorted(k for k in own.keys() & state_dict.keys() if own[k].shape != state_dict[k].shape)
    problems = [f"{name} {keys[:3]}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
                for name, keys in (("missing", missing), ("unexpected", unexpected), ("misshapen", shapes)) if keys]
    if problems:
        raise CheckpointError(f"{path} does not fit the model its settings build: weights {'; '.join(problems)}; "
                              f"pass an intact checkpoint written by 'python train.py'")


def load_model(ckpt_path: str | os.PathLike, map_location="cpu", compile: bool | dict = False) -> DiffusionModel:
    """Load a model from a checkpoint of this package (EMA weights when EMA was on), with clear errors;
    ``compile`` replaces the training run's setting (it applies when a Trainer sets the model up)."""
    checkpoint = read_checkpoint(ckpt_path)
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}  # LightningCLI's
    model = DiffusionModel(**{**hparams, "compile": compile})
    check_weights(checkpoint["state_dict"], model, ckpt_path)
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(map_location).eval()


def table_codec(ckpt_path: str | os.PathLike) -> TableCodec | None:
    """The table codec a tabular run's data module saved in its checkpoint (None for image and mixture models)."""
    states = [v for v in read_checkpoint(ckpt_path).values() if isinstance(v, dict) and "table_codec" in v]
    return TableCodec.from_state(states[0]["table_codec"]) if states else None
