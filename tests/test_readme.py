"""The README's two commands, as written there: CI runs the second word for word, and the first one's train and
sample steps run here end to end on the embedded default, shrunk to a few steps."""

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers import TINY_UNET, peers_expected, shrunk

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ".venv/bin/python"


def readme_command(number: int) -> list[str]:
    """The README's command ``number`` (the line under ``# <number>.`` in its first code block), split at ``&&``."""
    lines = (ROOT / "README.md").read_text().partition("```bash\n")[2].partition("```")[0].splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"# {number}. "))
    return [part.strip() for part in lines[at + 1].split("&&")]


def test_ci_runs_the_readme_test_command_and_nothing_else():
    printed = subprocess.run(["bash", str(ROOT / ".ci" / "run"), "--print"], capture_output=True, text=True,
                             check=True).stdout.strip()
    assert [part.strip() for part in printed.split("&&")] == readme_command(2)
    script = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not any(re.search(r"\b(pip|pytest|venv|python[\d.]*)\b", line) for line in script), \
        "CI installs and tests only through the README's command"


def test_the_test_command_installs_what_the_tests_import():
    venv, install, test = readme_command(2)
    assert venv == "python3.11 -m venv .venv" and test == f"{VENV_PYTHON} -m pytest"
    assert shlex.split(install) == [".venv/bin/pip", "install", "-e", ".[test]", "-r", "benchmarks/requirements.txt"]


@pytest.mark.slow
def test_the_first_command_trains_the_default_and_samples_as_the_readme_says(tmp_path):
    """The first command's steps after the install, as written, in a copy of the repository whose
    ``configs/digits.yaml`` (the embedded default ``train.py`` runs) is shrunk to 4 training steps; its W&B logger
    stays, offline for want of credentials."""
    venv, install, *steps = readme_command(1)
    assert venv == readme_command(2)[0] and shlex.split(install) == [".venv/bin/pip", "install", "-e", "."]
    repo = tmp_path / "repo"
    for name in ("ddpm_signrelu", "configs"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("train.py", "sample.py"):
        shutil.copy(ROOT / name, repo / name)
    default = repo / "configs" / "digits.yaml"
    default.write_text(yaml.safe_dump(shrunk(yaml.safe_load(default.read_text()))))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")} | {"HOME": tempfile.mkdtemp()}
    for step in steps:
        argv = shlex.split(step)
        assert argv[0] == VENV_PYTHON, step
        result = subprocess.run([sys.executable, *argv[1:]], cwd=repo, capture_output=True, text=True, env=env,
                                timeout=600)
        assert result.returncode == 0, f"{step}\n{result.stderr[-3000:]}"

    run = repo / "runs" / "digits"
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert checkpoint["global_step"] == 4 and checkpoint["hyper_parameters"]["network"]["channels"] == \
        TINY_UNET["channels"]  # the copy's shrunk default ran, not the installed package's
    assert (run / "config.yaml").is_file() and list((run / "wandb").glob("offline-run-*"))
    assert list((run / "samples").glob("step_*.png"))
    out = repo / "samples" / "digits"
    images = np.load(out / "samples_500x8x8x1.npz")["arr_0"]
    assert images.dtype == np.uint8 and images.shape == (500, 8, 8, 1) and (out / "samples.png").is_file()
    assert len(np.unique(images.reshape(500, -1), axis=0)) == 500  # 500 seeds, 500 different samples


def test_a_missing_peer_library_skips_its_tests_outside_ci_and_fails_them_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert peers_expected("torch") and not peers_expected("torch", "no_such_peer_module")
    monkeypatch.setenv("CI", "true")
    assert peers_expected("no_such_peer_module")
