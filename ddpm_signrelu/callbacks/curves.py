"""Logging the risk metrics and their per-log-SNR curves (theory.md §6.3): a table and a plot, through the loggers."""

import csv
import os

import lightning as L
from lightning.pytorch.loggers import WandbLogger

from ddpm_signrelu.diffusion import NoiseSchedule, Strata

PLOTTED = ("approximation", "approximation_local", "estimation", "excess_true", "kernel_ratio_error")


def curve_rows(strata: Strata, schedule: NoiseSchedule, curves: dict) -> tuple[list[str], list[list]]:
    """Rows L_T, L_0 (t = 1), then one per stratum: bucket, λ range, math-t range, then each curve's value."""
    lam, T = schedule.log_snr, schedule.num_timesteps
    ranges = [("prior", lam[-1].item(), lam[-1].item(), T, T), ("decoder", lam[0].item(), lam[0].item(), 1, 1)]
    ranges += [(str(k), lo, hi, int(members[0]) + 1, int(members[-1]) + 1)
               for k, (members, (lo, hi)) in enumerate(zip(strata.members, strata.log_snr_range))]
    names = sorted(curves)
    columns = ["bucket", "lambda_lo", "lambda_hi", "t_lo", "t_hi", *names]
    return columns, [[*r, *(float(curves[n][i]) for n in names)] for i, r in enumerate(ranges)]


def log_risk(trainer: L.Trainer, pl_module: L.LightningModule, results: dict, strata: Strata,
             schedule: NoiseSchedule, curves: dict, name: str = "curves") -> None:
    """Log ``risk/<key>`` (+ ``_se`` where the SE is not None) of ``results``, key -> (value, SE, ...), on every rank;
    rank zero then appends the rows of ``curves`` to ``<run folder>/risk_<name>.csv``, draws ``risk_<name>.png`` and,
    with a W&B logger, logs them as the Table ``risk/<name>`` and the image ``risk/<name>_plot``."""
    for key, (value, se, *_) in results.items():
        pl_module.log(f"risk/{key}", value, batch_size=1)
        if se is not None:
            pl_module.log(f"risk/{key}_se", se, batch_size=1)
    out_dir = trainer.log_dir or trainer.default_root_dir  # a collective under DDP: every rank asks
    if not trainer.is_global_zero:
        return
    columns, rows = curve_rows(strata, schedule, curves)
    step = trainer.global_step
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"risk_{name}.csv")
    header = [] if os.path.exists(path) else [["step", *columns]]
    with open(path, "a", newline="") as f:
        csv.writer(f).writerows(header + [[step, *row] for row in rows])
    image = os.path.join(out_dir, f"risk_{name}.png")
    _plot(columns, rows, step, image)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key=f"risk/{name}", columns=columns, data=rows, step=step)
            logger.log_image(key=f"risk/{name}_plot", images=[image], step=step)


def _plot(columns: list[str], rows: list[list], step: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strata = [r for r in rows if r[0] not in ("prior", "decoder")]
    centre = [(r[1] + r[2]) / 2 for r in strata]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in PLOTTED:
        if name in columns:
            ax.plot(centre, [r[columns.index(name)] for r in strata], marker="o", label=name)
    ax.set(xlabel="log-SNR λ (stratum centre)", ylabel="bits/dim (stratum term)",
           title=f"risk per log-SNR stratum, step {step}")
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
