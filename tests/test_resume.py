"""Exact resume: N steps, SIGKILL, ``--ckpt_path last``, N more steps give the weights of 2N steps straight."""

import csv

import lightning as L
import pytest
import torch
import yaml

from ddpm_signrelu.callbacks import ExceptionCheckpoint
from ddpm_signrelu.data import DigitsDataModule
from test_cli import cli_model, run, tiny_config


def config(tmp_path, kill_at=None, crash_at=None):
    path = tiny_config(tmp_path, "digits")
    settings = yaml.safe_load(path.read_text())
    settings["model"].update({"lr_schedule": "cosine", "warmup_steps": 3})
    settings["model"]["network"]["dropout"] = 0.3  # the per-step dropout stream must be restored too
    settings["trainer"].update({"max_steps": 8, "val_check_interval": 2})
    if kill_at is not None:
        settings["trainer"]["callbacks"].append({"class_path": "helpers.KillAtStep", "init_args": {"step": kill_at}})
    if crash_at is not None:
        settings["trainer"]["callbacks"].append({"class_path": "helpers.RaiseAtStep", "init_args": {"step": crash_at}})
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_kill_and_resume_gives_the_uninterrupted_run(tmp_path):
    straight = run("train.py", "fit", "--config", config(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = run("train.py", "fit", "--config", config(tmp_path / "resumed", kill_at=5))
    assert killed.returncode == -9  # SIGKILL after step 5; the last checkpoint is step 4's
    last = tmp_path / "resumed" / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 4
    resumed = run("train.py", "fit", "--config", config(tmp_path / "resumed"), "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = torch.load(tmp_path / "straight" / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(last, weights_only=False)
    assert a["global_step"] == b["global_step"] == 8
    for key in ("state_dict", "current_model_state"):  # EMA weights, then the raw ones
        for name, value in a[key].items():
            assert torch.equal(b[key][name], value), f"{key}: {name}"
    states = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    num_weights = sum(len(group["params"]) for group in a["optimizer_states"][0]["param_groups"])
    assert states[0].keys() == states[1].keys() and len(states[0]) == num_weights > 0
    for index, state in states[0].items():
        assert state.keys() == states[1][index].keys() == {"step", "exp_avg", "exp_avg_sq"}
        assert all(torch.equal(state[k], states[1][index][k]) for k in state), index
    assert a["lr_schedulers"] == b["lr_schedulers"]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_an_exception_leaves_a_checkpoint_that_resume_picks_up(tmp_path):
    crashed = run("train.py", "fit", "--config", config(tmp_path, crash_at=3))
    assert crashed.returncode != 0 and "crash at step 3" in crashed.stderr
    folder = tmp_path / "run" / "checkpoints"
    assert torch.load(folder / "on_exception.ckpt", weights_only=False)["global_step"] == 3
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 2
    resumed = run("train.py", "fit", "--config", config(tmp_path), "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "on_exception.ckpt" in resumed.stderr  # the newer checkpoint was chosen
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 8
    with (tmp_path / "run" / "metrics.csv").open() as log:
        steps = [int(row["step"]) for row in csv.DictReader(log) if row["train/loss"]]
    assert steps == [0, 1, 3, 4, 5, 6, 7]  # the crashed piece's rows, then the resumed piece's: none twice, none
    # lost but step 2's, which raised before its row was logged


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_start_that_fails_before_its_first_step_leaves_no_checkpoint_and_last_continues(tmp_path):
    first = run("train.py", "fit", "--config", config(tmp_path), "--trainer.max_steps", 4)
    assert first.returncode == 0, first.stderr[-3000:]
    folder = tmp_path / "run" / "checkpoints"
    last = folder / "last.ckpt"
    written = last.read_bytes()
    for failure in (["--ckpt_path", tmp_path / "missing.ckpt"], ["--ckpt_path", "last", "--data.class_path",
                                                                  "helpers.MissingDigits"]):
        failed = run("train.py", "fit", "--config", config(tmp_path), *failure)
        assert failed.returncode == 2 and failed.stderr.strip().splitlines()[-1].startswith("error: "), failed.stderr
        assert not list(folder.glob("on_exception*"))
        assert last.read_bytes() == written
    resumed = run("train.py", "fit", "--config", config(tmp_path), "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Restored all states from the checkpoint at {last}" in resumed.stderr
    assert torch.load(last, weights_only=False)["global_step"] == 8


def test_the_exception_checkpoint_stays_through_validate_and_goes_after_a_good_fit(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    kept = folder / "on_exception.ckpt"
    kept.write_bytes(b"a crashed run's newest state")
    model, data = cli_model(config(tmp_path)), DigitsDataModule(batch_size=16, val_size=16)
    options = {"default_root_dir": tmp_path, "logger": False, "enable_progress_bar": False,
               "enable_model_summary": False, "limit_val_batches": 1}
    L.Trainer(callbacks=[ExceptionCheckpoint()], **options).validate(model, datamodule=data, verbose=False)
    assert kept.read_bytes() == b"a crashed run's newest state"
    fresh = cli_model(config(tmp_path))  # validation left the first model's metric states as inference tensors
    L.Trainer(callbacks=[ExceptionCheckpoint()], max_steps=1, **options).fit(fresh, datamodule=data)
    assert not kept.exists()
