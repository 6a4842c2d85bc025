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
a shorter memory), ``ours_cosine_800`` (the rate decays on a cosine to 0 at step 800, about what ours reaches in 9
minutes here, and training stops there), ``ours_v_mse`` (the v-loss ‖v − v̂‖², the loss of the space the head's atoms
are read in, instead of L_simple), ``ours_eps_atoms`` (the atoms read in ε-space, under L_simple),
``ours_v_mse_ema_0.99`` (the v-loss and EMA decay 0.99 together), ``ours_residual_atoms`` (the atoms a shared
read-out plus zero-mean corrections: the head starts as the plain v head), ``ours_residual_eps_atoms`` (the same in
ε-space: it starts as the plain ε head) and ``ours_residual_eps_k3`` (that head reading 3×3 neighbourhoods of the
features). ``TWINS``: ``ours_conv`` and ``ours_silu_eps_conv``, ``ours`` and ``ours_silu_eps`` without attention,
the convolution-only networks ``benchmarks/local_reference.py`` compares with the patch mosaic.

The factorial (``FACTORIAL``) crosses the activation (SignReLU, SiLU) with the head (the softmax-atom ratio head
with v-atoms, a plain v head, a plain ε head) at the config's size: ``ours`` and ``ours_silu_eps`` are two of its
six corners, ``signrelu_plain_v``, ``signrelu_plain_eps``, ``silu_ratio_v`` and ``silu_plain_v`` the others.
``--seeds`` trains each model once per seed (the seed moves the initialisation, the batch order and the draws).
``--period_steps N`` ends each period after N more steps instead of minutes, so that models are also compared at
equal steps; ``--diagnose`` adds, at initialisation and at every evaluation, the denoising error at steps evenly
spaced in log-SNR and the network's inside (``benchmarks/network_diagnosis.py``). ``--quick`` is the whole
machinery at toy sizes, for a test.

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
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EMAWeightAveraging
from torch import nn

from benchmarks.common import domain_distances, read_rows, run_or_report, write_block
from benchmarks.factorial_report import factorial_tables
from benchmarks.network_diagnosis import diagnose, log_snr_steps, loss_by_t
from ddpm_signrelu.cli import build_run
from ddpm_signrelu.diffusion import to_bits_per_dim
from ddpm_signrelu.images import save_samples, to_uint8
from ddpm_signrelu.metrics.fid import FeatureDistances

ROOT = Path(__file__).resolve().parents[1]
CONFIG, SILU = str(ROOT / "configs" / "fashion_mnist_small.yaml"), str(ROOT / "configs" / "silu_eps.yaml")
MODELS = ("ours", "ours_silu_eps", "diffusers", "ddpm_pytorch")
ANCHORS = ("diffusers", "ddpm_pytorch")


CONV_ONLY = ["--model.network.attention_resolutions", "[]"]  # the convolution-only twins (TWINS)


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
          "ours_cosine_800": Lever(["--model.lr_schedule", "cosine"], max_steps=800),
          "ours_v_mse": Lever(["--model.loss", "v_mse"]),
          "ours_eps_atoms": Lever(["--model.head.parameterization", "eps"]),
          "ours_v_mse_ema_0.99": Lever(["--model.loss", "v_mse"], ema_decay=0.99),
          "ours_residual_atoms": Lever(["--model.head.atom_form", "residual"]),
          "ours_residual_eps_atoms": Lever(["--model.head.atom_form", "residual",
                                            "--model.head.parameterization", "eps"]),
          "ours_residual_eps_k3": Lever(["--model.head.atom_form", "residual", "--model.head.parameterization", "eps",
                                         "--model.head.kernel_size", "3"])}
HEADS = {"ratio_v": None, "plain_v": {"name": "plain", "parameterization": "v"},  # None: the config's own head
         "plain_eps": {"name": "plain", "parameterization": "eps"}}
FACTORIAL = {("signrelu", "ratio_v"): "ours", ("signrelu", "plain_v"): "signrelu_plain_v",
             ("signrelu", "plain_eps"): "signrelu_plain_eps", ("silu", "ratio_v"): "silu_ratio_v",
             ("silu", "plain_v"): "silu_plain_v", ("silu", "plain_eps"): "ours_silu_eps"}
ARMS = {name: Lever(["--model.network.activation", act] + ([] if HEADS[head] is None else
                                                             ["--model.head", json.dumps(HEADS[head])]))
        for (act, head), name in FACTORIAL.items() if name not in MODELS}
TWINS = {"ours_conv": Lever(CONV_ONLY), "ours_silu_eps_conv": Lever(
    ["--model.network.activation", "silu", "--model.head", json.dumps(HEADS["plain_eps"])] + CONV_ONLY)}
VARIANTS = LEVERS | ARMS | TWINS
SAMPLING = {"sampler": "dpmpp_2m_sde", "steps": 20}
QUICK = {"num_samples": 8, "reference": 64, "val_size": 8, "period_steps": 2, "periods": 2, "seeds": [0, 1],
         "diagnose": True, "diagnose_items": 8}


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


def build(name: str, args, seed: int = 0):
    """(model, data module, EMA callback, last step or -1) of ``name`` trained with ``seed``, the data from
    ``--data_root``."""
    lever = VARIANTS.get(name, Lever())
    configs = ["--config", CONFIG] + (["--config", SILU] if name in MODELS[1:] else [])
    held_out = max(args.val_size, args.num_samples)  # the bound's items come first, the floor's images after
    run = build_run(*configs, "--trainer.logger", "false", "--model.lr_schedule", "constant",
                    "--data.root", args.data_root, "--data.val_size", str(held_out), "--seed_everything", str(seed),
                    "--data.seed", str(seed), *lever.overrides,
                    *(["--trainer.max_steps", str(lever.max_steps)] if lever.max_steps > 0 else []))
    model = run.model
    if name in ANCHORS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model.model = anchor_network(name)
    ema = next(c for c in run.trainer.callbacks if isinstance(c, EMAWeightAveraging))
    if lever.ema_decay is not None:
        ema = EMAWeightAveraging(decay=lever.ema_decay)
    return model, run.datamodule, ema, lever.max_steps


class Clock(Callback):
    """Sums the wall time of the training steps; at ``limit`` seconds, at step ``last_step`` or at the trainer's last
    step, saves ``path`` and stops the fit."""

    def __init__(self, limit: float, path: Path, last_step: float = math.inf):
        self.limit, self.path, self.last_step, self.seconds, self._start = limit, path, last_step, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds += time.perf_counter() - self._start
        if self.seconds >= self.limit or trainer.global_step >= self.last_step or \
                trainer.global_step == trainer.max_steps:
            trainer.save_checkpoint(self.path)  # EMA has updated already: it comes first in the list
            trainer.should_stop = True

    def reached(self, checkpoint: dict) -> bool:
        """Whether ``checkpoint`` is at or past this clock's last step (a time limit trains at least one step)."""
        return checkpoint["global_step"] >= self.last_step

    def state_dict(self) -> dict:
        return {"seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        self.seconds = state["seconds"]


def checkpoint_path(args, name: str, seed: int) -> Path:
    return Path(args.out, f"{name}.ckpt" if seed == 0 else f"{name}_seed{seed}.ckpt")


def train_until(name: str, seed: int, period: int, dm, args) -> tuple[L.LightningModule, int, float]:
    """Train ``name`` with ``seed`` on the set-up data module ``dm`` from its last checkpoint to the end of
    ``period`` (minutes of training time, or steps with ``--period_steps``); (model, step, seconds)."""
    model, _, ema, max_steps = build(name, args, seed)
    path = checkpoint_path(args, name, seed)
    if args.period_steps:
        clock = Clock(math.inf, path, last_step=period * args.period_steps)
    else:
        clock = Clock(min(period * args.eval_every, args.budget) * 60, path)
    trainer = L.Trainer(max_steps=max_steps, max_epochs=-1, callbacks=[ema, clock],
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, gradient_clip_val=1.0,
                        num_sanity_val_steps=0, accelerator="cpu", devices=1)
    saved = torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None
    if saved is None or not clock.reached(saved):  # a step period trained, not evaluated: not trained on
        trainer.fit(model, dm, ckpt_path=path if path.is_file() else None)
        saved = torch.load(path, map_location="cpu", weights_only=False)
    clock.load_state_dict(saved["callbacks"][clock.state_key])
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


def diagnosis(model, dm, args) -> dict:
    """With ``--diagnose``: the denoising error ‖x0 − x̂0‖²/D at 8 steps evenly spaced in log-SNR on ``--diagnose_items`` held-out
    items, and the network's inside at 4 of them on a quarter of the items (:mod:`benchmarks.network_diagnosis`)."""
    if not args.diagnose:
        return {}
    x0 = dm.to_unit(dm.val_data[:args.diagnose_items])
    steps = log_snr_steps(model.diffusion.schedule)
    return {"loss_by_t": {"steps": steps, "loss": loss_by_t(model, x0, steps)},
            "diag": diagnose(model, x0[:max(1, len(x0) // 4)], steps[::2])}


def run(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    done = {(r["model"], r.get("seed", 0), r["period"]) for r in read_rows(rows_path)}
    periods = args.periods if args.period_steps else math.ceil(args.budget / args.eval_every)
    _, dm, _, _ = build("ours", args)
    dm.setup("fit")
    distances = domain_distances(dm, args.reference)
    if ("real held-out", 0, 0) not in done:
        append(rows_path, floor_row(dm, distances, args))
    for period in range(0 if args.diagnose else 1, periods + 1):
        for name in args.models:
            for seed in args.seeds:
                if (name, seed, period) in done:
                    continue
                row = {"model": name, "seed": seed, "period": period}
                if period == 0:  # the initialisation: what the network computes before training
                    model = build(name, args, seed)[0].eval()
                    append(rows_path, row | {"step": 0, **diagnosis(model, dm, args)})
                    continue
                end = f"step {period * args.period_steps}" if args.period_steps else \
                    f"{min(period * args.eval_every, args.budget):.1f} min"
                print(f"{name} (seed {seed}): training to {end}, period {period} of {periods}", flush=True)
                model, step, trained = train_until(name, seed, period, dm, args)
                scores, grid = evaluate(model, dm, distances, args)
                append(rows_path, row | {"train_seconds": trained, "step": step,
                                         "parameters": sum(p.numel() for p in model.model.parameters()), **scores,
                                         **diagnosis(model, dm, args)})
                save_samples(grid, out, f"{name}_grid" if seed == 0 else f"{name}_seed{seed}_grid")
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
    runs = evaluated_runs(rows)
    models = [m for m in MODELS + tuple(VARIANTS) if any(name == m for name, _ in runs)]
    ours = [m for m in models if m == "ours" or m in VARIANTS]
    several = len({seed for _, seed in runs}) > 1
    floor = next((r for r in rows if r["model"] == "real held-out"), None)
    lines = [f"| model |{' seed |' if several else ''} parameters | period | minutes | steps | FID (domain) | KID | "
             "precision | recall | confidence | class entropy | bits/dim |", "|---" * (12 + several) + "|"]
    for (name, seed), mine in runs.items():
        for r in mine:
            lines.append(f"| {name} |{f' {seed} |' if several else ''} {r['parameters']:,} | {r['period']} | "
                         f"{r['train_seconds'] / 60:.1f} | {r['step']} | {r['fid']:.2f} | {r['kid']:.2f} | "
                         f"{r['precision']:.3f} | {r['recall']:.3f} | {r['confidence']:.3f} | "
                         f"{r['class_entropy']:.3f} | {r['bpd']:.4f} |")
    if floor:
        lines.append(f"| real held-out |{' |' if several else ''} | | | | {floor['fid']:.2f} | {floor['kid']:.2f} | "
                     f"{floor['precision']:.3f} | {floor['recall']:.3f} | {floor['confidence']:.3f} | "
                     f"{floor['class_entropy']:.3f} | |")
    lines += ["", "| FID level | " + " | ".join(models) + " | " + " | ".join(f"{m} / best anchor" for m in ours)
              + " |", "|---" * (len(models) + len(ours) + 1) + "|"]
    for level in args.levels:
        times = {m: seed_times(runs, m, level) for m in models}
        mean = {m: statistics.mean(ts) if ts and None not in ts else None for m, ts in times.items()}
        best = min((a for a in ANCHORS if mean.get(a) is not None), key=mean.get, default=None)
        lines.append(f"| {level:g} | " + " | ".join("not reached" if mean[m] is None else f"{mean[m] / 60:.1f} min"
                                                   for m in models) + " | "
                     + " | ".join(ratio_cell(times[m], times[best]) if best else "–" for m in ours) + " |")
    lines += factorial_tables(rows, runs, models, FACTORIAL, "ours_silu_eps")
    hours = (sum(mine[-1]["train_seconds"] for mine in runs.values()) + sum(r.get("eval_seconds", 0) for r in rows)) / 3600
    lines += ["", f"Study time: {hours:.2f} hours of training and evaluation over {len(runs)} runs."]
    print("\n".join(lines))
    docs, study = Path(args.docs), Path(args.out).name
    docs.mkdir(parents=True, exist_ok=True)
    plot(runs, floor, docs / f"fashion_mnist_{study}.png")
    for name in models:
        if Path(args.out, f"{name}_grid.png").is_file():
            shutil.copyfile(Path(args.out, f"{name}_grid.png"), docs / f"fashion_mnist_{study}_{name}.png")
    write_block(docs / "fashion_mnist.md", begin(study), "\n".join(lines))


def evaluated_runs(rows: list[dict]) -> dict[tuple[str, int], list[dict]]:
    """The evaluated rows of each (model, seed), by period (rows saved before seeds were recorded are seed 0)."""
    runs: dict[tuple[str, int], list[dict]] = {}
    for r in sorted((r for r in rows if "fid" in r and r["model"] != "real held-out"), key=lambda r: r["period"]):
        runs.setdefault((r["model"], r.get("seed", 0)), []).append(r)
    return dict(sorted(runs.items(), key=lambda kv: (list(MODELS + tuple(VARIANTS)).index(kv[0][0]), kv[0][1])))


def seed_times(runs: dict, model: str, level: float) -> list[float | None]:
    """Each seed's training seconds to FID ``level`` for ``model`` (None: not reached), by seed."""
    return [time_to_level(mine, level) for (name, _), mine in runs.items() if name == model]


def ratio_cell(times: list, anchor: list) -> str:
    """mean(times) / mean(anchor), and the range of the per-seed ratios where there are several seeds."""
    if not times or None in times or not anchor or None in anchor:
        return "–"
    pairs = [t / a for t, a in zip(times, anchor)]
    cell = f"{statistics.mean(times) / statistics.mean(anchor):.2f}"
    return cell + (f" ({min(pairs):.2f}–{max(pairs):.2f})" if len(pairs) > 1 else "")


def begin(study: str) -> str:
    """The marker before a study's results in the docs page; the study is named by its ``--out`` folder."""
    return f"<!-- {study} results: written by the benchmark -->"


def plot(runs: dict, floor: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    colours = {}
    for (name, seed), mine in runs.items():
        colour = colours.setdefault(name, f"C{len(colours) % 10}")
        style = {"color": colour, "ls": "-" if seed == 0 else "--", "marker": "o",
                 "label": name if seed == min(s for m, s in runs if m == name) else None}
        axes[0].plot([r["train_seconds"] / 60 for r in mine], [r["fid"] for r in mine], **style)
        axes[1].plot([r["step"] for r in mine], [r["fid"] for r in mine], **style)
        axes[2].plot([r["step"] for r in mine], [r["bpd"] for r in mine], **style)
    for ax in axes[:2]:
        if floor:
            ax.axhline(floor["fid"], color="grey", ls=":", label="real held-out" if ax is axes[0] else None)
        ax.set(ylabel="domain FID", yscale="log")
    axes[0].set(xlabel="training minutes (2 CPU cores)")
    axes[1].set(xlabel="training steps")
    axes[2].set(xlabel="training steps", ylabel="held-out bound (bits/dim)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", default="data", help="the folder holding FashionMNIST/raw")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS + tuple(VARIANTS))
    p.add_argument("--budget", type=float, default=9.0, help="training minutes per model")
    p.add_argument("--eval_every", type=float, default=3.0, help="training minutes between evaluations")
    p.add_argument("--num_samples", type=int, default=1000)
    p.add_argument("--reference", type=int, default=10000, help="training images FID compares with")
    p.add_argument("--val_size", type=int, default=500, help="held-out images of the bound")
    p.add_argument("--levels", nargs="+", type=float, default=[200.0, 100.0, 60.0, 45.0], help="FID levels timed")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="train each model once per seed")
    p.add_argument("--period_steps", type=int, default=None, help="end each period after this many steps, not minutes")
    p.add_argument("--periods", type=int, default=3, help="with --period_steps: how many periods")
    p.add_argument("--diagnose", action="store_true", help="the loss per log-SNR and the network's inside, at "
                   "initialisation and at every evaluation")
    p.add_argument("--diagnose_items", type=int, default=256, help="held-out items of --diagnose")
    p.add_argument("--quick", action="store_true", help=f"toy sizes, for a test: {QUICK}")
    p.add_argument("--out", default="benchmarks/results/time_to_quality", help="rows, checkpoints, grids")
    p.add_argument("--docs", default="docs", help="where fashion_mnist.md's results and figures are written")
    run_or_report(p, argv, lambda args: run(quick(args)), report)


def quick(args):
    """``args`` with :data:`QUICK`'s sizes where ``--quick`` is given."""
    return argparse.Namespace(**(vars(args) | (QUICK if args.quick else {})))


if __name__ == "__main__":
    main()
