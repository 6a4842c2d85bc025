"""Time to quality on Fashion-MNIST: ours against diffusers and denoising-diffusion-pytorch at matched size.

    python -m benchmarks.time_to_quality              # trains, evaluates, resumes where it stopped; then the report
    python -m benchmarks.time_to_quality --report     # docs/fashion_mnist.md and its figures from the rows so far

Four networks train on ``configs/fashion_mnist_small.yaml``'s data, batch, optimizer (AdamW, warm-up, then a
constant rate: a cosine decay would need a step count, which a time budget does not fix), EMA and training loop
(our ``DiffusionModel`` under Lightning's Trainer, the anchors plugged in as its network):

- ``ours``: SignReLU U-Net + ratio head (the config itself);
- ``ours_silu_eps``: the config with ``configs/silu_eps.yaml`` (SiLU + plain ε head);
- ``diffusers``: ``UNet2DModel`` with widths (32, 64, 64), one ResNet block per level, attention at 7×7;
- ``ddpm_pytorch``: denoising-diffusion-pytorch's ``Unet(dim=28, dim_mults=(1, 2, 2))``, full attention at 7×7.

``--models`` also takes the levers, ``ours`` with one training choice changed and its network and head kept
(``LEVERS``): ``ours_min_snr`` (Min-SNR-5 loss weighting), ``ours_x0_atoms`` (the ratio head's atoms in x0-space
instead of v-space), ``ours_lr_2e-3`` (twice the learning rate), ``ours_ema_0.99`` (EMA decay 0.99 instead of 0.995:
a shorter memory) and ``ours_cosine_800`` (the rate decays on a cosine to 0 at step 800, about what ours reaches in 9
minutes here, and training stops there).

Every ``--eval_every`` minutes (3) of each model's training time (the steps alone, timed on the machine;
evaluation is not counted) up to ``--budget`` (9), the EMA weights are scored: the domain FID
(:mod:`ddpm_signrelu.metrics.domain`, fitted first if missing) of ``--num_samples`` samples of one fixed fast
sampler against ``--reference`` training images, with KID,
precision, recall, confidence and class balance in the same features, and the held-out bound in bits/dim. The
models take turns, one evaluation period each, so a drift of the machine's speed falls on all of them alike. Rows
go to ``--out/rows.jsonl`` and checkpoints to ``--out``: an interrupted run resumes at the last period saved. The
study is named by its ``--out`` folder: the report replaces that study's block of ``--docs/fashion_mnist.md`` and
writes ``fashion_mnist_<study>.png`` (the curves) and ``fashion_mnist_<study>_<model>.png`` (the last grids) there.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EMAWeightAveraging
from torch import nn

from benchmarks.common import domain_distances, read_rows, run_or_report, write_block
from ddpm_signrelu.cli import build_run
from ddpm_signrelu.diffusion import to_bits_per_dim
from ddpm_signrelu.images import save_samples, to_uint8
from ddpm_signrelu.metrics.fid import FeatureDistances

ROOT = Path(__file__).resolve().parents[1]
CONFIG, SILU = str(ROOT / "configs" / "fashion_mnist_small.yaml"), str(ROOT / "configs" / "silu_eps.yaml")
MODELS = ("ours", "ours_silu_eps", "diffusers", "ddpm_pytorch")
ANCHORS = ("diffusers", "ddpm_pytorch")


@dataclass
class Lever:
    """``ours`` with one training choice changed: config overrides, an EMA decay, a step at which training ends."""

    overrides: list[str] = field(default_factory=list)
    ema_decay: float | None = None
    max_steps: int = -1


LEVERS = {"ours_min_snr": Lever(["--model.loss", "min_snr"]),
          "ours_x0_atoms": Lever(["--model.head.parameterization", "x0"]),
          "ours_lr_2e-3": Lever(["--model.lr", "0.002"]),
          "ours_ema_0.99": Lever(ema_decay=0.99),
          "ours_cosine_800": Lever(["--model.lr_schedule", "cosine"], max_steps=800)}
SAMPLING = {"sampler": "dpmpp_2m_sde", "steps": 20}


class Anchor(nn.Module):
    """Another library's U-Net as the reverse network: (x_t, t) → ε̂."""

    def __init__(self, net: nn.Module, diffusers: bool):
        super().__init__()
        self.net, self.diffusers = net, diffusers

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.net(x, t)
        return out.sample if self.diffusers else out


def anchor_network(name: str) -> nn.Module:
    if name == "diffusers":
        from diffusers import UNet2DModel

        return Anchor(UNet2DModel(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64),
                                  down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                                  up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), layers_per_block=1,
                                  norm_num_groups=8), diffusers=True)
    from denoising_diffusion_pytorch import Unet

    return Anchor(Unet(dim=28, channels=1, dim_mults=(1, 2, 2), full_attn=(False, False, True)), diffusers=False)


def build(name: str, args):
    """(model, data module, EMA callback, last step or -1) of ``name``, the data from ``--data_root``."""
    lever = LEVERS.get(name, Lever())
    configs = ["--config", CONFIG] + (["--config", SILU] if name in MODELS[1:] else [])
    held_out = max(args.val_size, args.num_samples)  # the bound's items come first, the floor's images after
    run = build_run(*configs, "--trainer.logger", "false", "--model.lr_schedule", "constant",
                    "--data.root", args.data_root, "--data.val_size", str(held_out), *lever.overrides,
                    *(["--trainer.max_steps", str(lever.max_steps)] if lever.max_steps > 0 else []))
    model = run.model
    if name in ANCHORS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model.model = anchor_network(name)
    ema = next(c for c in run.trainer.callbacks if isinstance(c, EMAWeightAveraging))
    if lever.ema_decay is not None:
        ema = EMAWeightAveraging(decay=lever.ema_decay)
    return model, run.datamodule, ema, lever.max_steps


class Clock(Callback):
    """Sums the wall time of the training steps; at ``limit`` seconds, or at the trainer's last step, saves ``path``
    and stops the fit."""

    def __init__(self, limit: float, path: Path):
        self.limit, self.path, self.seconds, self._start = limit, path, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds += time.perf_counter() - self._start
        if self.seconds >= self.limit or trainer.global_step == trainer.max_steps:
            trainer.save_checkpoint(self.path)  # EMA has updated already: it comes first in the list
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        self.seconds = state["seconds"]


def train_until(name: str, seconds: float, dm, args) -> tuple[L.LightningModule, int, float]:
    """Train ``name`` on the set-up data module ``dm`` from its last checkpoint to ``seconds`` of training time;
    (model, step, seconds)."""
    model, _, ema, max_steps = build(name, args)
    path = Path(args.out, f"{name}.ckpt")
    clock = Clock(seconds, path)
    trainer = L.Trainer(max_steps=max_steps, max_epochs=-1, callbacks=[ema, clock],
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, gradient_clip_val=1.0,
                        num_sanity_val_steps=0, accelerator="cpu", devices=1)
    trainer.fit(model, dm, ckpt_path=path if path.is_file() else None)
    saved = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(saved["state_dict"])  # the EMA weights
    return model.eval(), saved["global_step"], clock.seconds


@torch.no_grad()
def evaluate(model, dm, distances: FeatureDistances, args) -> tuple[dict, torch.Tensor]:
    """The scores of one evaluation, and the first 100 samples (uint8)."""
    start = time.perf_counter()
    images = torch.cat([to_uint8(model.generate(range(i, min(i + 250, args.num_samples)), **SAMPLING), 256)
                        for i in range(0, args.num_samples, 250)])
    distances.update(images, real=False)
    scores = distances.compute()
    distances.reset_generated()
    x0 = dm.to_unit(dm.val_data[:args.val_size])
    nats = torch.cat([model.diffusion.bound(model.denoise, x, model.hparams.eval_seed + 1, list(range(i, i + len(x))))
                      for i, x in zip(range(0, len(x0), 250), x0.split(250))])
    scores["bpd"] = float(to_bits_per_dim(nats, model.dim).mean())
    scores["eval_seconds"] = time.perf_counter() - start
    return scores, images[:100]


def floor_row(dm, distances: FeatureDistances, args) -> dict:
    """The domain scores of ``--num_samples`` real held-out images: the floor of a model's."""
    distances.update(dm.val_data[:args.num_samples], real=False)
    scores = distances.compute()
    distances.reset_generated()
    return {"model": "real held-out", "period": 0, **scores}


def run(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    done = {(r["model"], r["period"]) for r in read_rows(rows_path)}
    periods = math.ceil(args.budget / args.eval_every)
    _, dm, _, _ = build("ours", args)
    dm.setup("fit")
    distances = domain_distances(dm, args.reference)
    if ("real held-out", 0) not in done:
        append(rows_path, floor_row(dm, distances, args))
    for period in range(1, periods + 1):
        for name in args.models:
            if (name, period) in done:
                continue
            seconds = min(period * args.eval_every, args.budget) * 60
            print(f"{name}: training to {seconds / 60:.1f} min, period {period} of {periods}", flush=True)
            model, step, trained = train_until(name, seconds, dm, args)
            scores, grid = evaluate(model, dm, distances, args)
            row = {"model": name, "period": period, "train_seconds": trained, "step": step,
                   "parameters": sum(p.numel() for p in model.model.parameters()), **scores}
            append(rows_path, row)
            save_samples(grid, out, f"{name}_grid")
    report(args)


def append(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def time_to_level(rows: list[dict], level: float) -> float | None:
    """Training seconds at which the FID first falls to ``level`` (linear between evaluations), or None."""
    previous = (0.0, math.inf)
    for r in rows:
        if r["fid"] <= level:
            t0, f0 = previous
            if math.isinf(f0):
                return r["train_seconds"]
            return t0 + (f0 - level) / (f0 - r["fid"]) * (r["train_seconds"] - t0)
        previous = (r["train_seconds"], r["fid"])
    return None


def report(args) -> None:
    rows = read_rows(Path(args.out, "rows.jsonl"))
    per_model = {m: sorted((r for r in rows if r["model"] == m), key=lambda r: r["period"])
                 for m in MODELS + tuple(LEVERS) if any(r["model"] == m for r in rows)}
    ours = [m for m in per_model if m == "ours" or m in LEVERS]
    floor = next((r for r in rows if r["model"] == "real held-out"), None)
    lines = ["| model | parameters | period | minutes | steps | FID (domain) | KID | precision | recall | "
             "confidence | class entropy | bits/dim |", "|---" * 12 + "|"]
    for name, mine in per_model.items():
        for r in mine:
            lines.append(f"| {name} | {r['parameters']:,} | {r['period']} | {r['train_seconds'] / 60:.1f} | "
                         f"{r['step']} | {r['fid']:.2f} | {r['kid']:.2f} | {r['precision']:.3f} | "
                         f"{r['recall']:.3f} | {r['confidence']:.3f} | {r['class_entropy']:.3f} | {r['bpd']:.4f} |")
    if floor:
        lines.append(f"| real held-out | | | | | {floor['fid']:.2f} | {floor['kid']:.2f} | "
                     f"{floor['precision']:.3f} | {floor['recall']:.3f} | {floor['confidence']:.3f} | "
                     f"{floor['class_entropy']:.3f} | |")
    lines += ["", "| FID level | " + " | ".join(per_model) + " | " + " | ".join(f"{m} / best anchor" for m in ours)
              + " |", "|---" * (len(per_model) + len(ours) + 1) + "|"]
    for level in args.levels:
        times = {m: time_to_level(mine, level) for m, mine in per_model.items()}
        best = min((times[m] for m in ANCHORS if times.get(m) is not None), default=None)
        ratios = ["–" if times[m] is None or best is None else f"{times[m] / best:.2f}" for m in ours]
        lines.append(f"| {level:g} | " + " | ".join("not reached" if t is None else f"{t / 60:.1f} min"
                                                   for t in times.values()) + " | " + " | ".join(ratios) + " |")
    print("\n".join(lines))
    docs, study = Path(args.docs), Path(args.out).name
    docs.mkdir(parents=True, exist_ok=True)
    plot(per_model, floor, docs / f"fashion_mnist_{study}.png")
    for name in per_model:
        if Path(args.out, f"{name}_grid.png").is_file():
            shutil.copyfile(Path(args.out, f"{name}_grid.png"), docs / f"fashion_mnist_{study}_{name}.png")
    write_block(docs / "fashion_mnist.md", begin(study), "\n".join(lines))


def begin(study: str) -> str:
    """The marker before a study's results in the docs page; the study is named by its ``--out`` folder."""
    return f"<!-- {study} results: written by the benchmark -->"


def plot(per_model: dict, floor: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, mine in per_model.items():
        if mine:
            minutes = [r["train_seconds"] / 60 for r in mine]
            axes[0].plot(minutes, [r["fid"] for r in mine], "o-", label=name)
            axes[1].plot(minutes, [r["bpd"] for r in mine], "o-", label=name)
    if floor:
        axes[0].axhline(floor["fid"], color="grey", ls="--", label="real held-out")
    axes[0].set(xlabel="training minutes (2 CPU cores)", ylabel="domain FID", yscale="log")
    axes[1].set(xlabel="training minutes (2 CPU cores)", ylabel="held-out bound (bits/dim)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", default="data", help="the folder holding FashionMNIST/raw")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS + tuple(LEVERS))
    p.add_argument("--budget", type=float, default=9.0, help="training minutes per model")
    p.add_argument("--eval_every", type=float, default=3.0, help="training minutes between evaluations")
    p.add_argument("--num_samples", type=int, default=1000)
    p.add_argument("--reference", type=int, default=10000, help="training images FID compares with")
    p.add_argument("--val_size", type=int, default=500, help="held-out images of the bound")
    p.add_argument("--levels", nargs="+", type=float, default=[200.0, 100.0, 60.0, 45.0], help="FID levels timed")
    p.add_argument("--out", default="benchmarks/results/time_to_quality", help="rows, checkpoints, grids")
    p.add_argument("--docs", default="docs", help="where fashion_mnist.md's results and figures are written")
    run_or_report(p, argv, run, report)


if __name__ == "__main__":
    main()
