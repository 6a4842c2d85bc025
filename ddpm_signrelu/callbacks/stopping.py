"""Early stopping (theory.md §7): the gap-rise rule, the discrepancy principle and a stop report. The hold-out rule
is Lightning's ``EarlyStopping`` on ``risk/vlb_heldout`` or ``val/dsm_x0``, as in ``configs/gmm2d.yaml``."""

import math

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.utilities import rank_zero_info

from ddpm_signrelu.callbacks.base import ValidationEvaluator, diffusion_data
from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.metrics.risk import RISES, mean_and_se


class DiscrepancyStop(ValidationEvaluator):
    """Stop once the training loss on fixed draws falls to the label-noise level: the discrepancy principle (§7).

    ν, the Bayes denoiser's training loss, is estimated on ``population_samples`` fresh draws; the model's loss on
    ``num_items`` training items with ``draws_per_item`` fixed (t, ε) each. Stops at the first check where loss ≤
    ν + ``tau``·SE, and logs ``stop/discrepancy_loss`` and ``stop/discrepancy_threshold``. Needs data of known
    density (a Gaussian-mixture data module): set-up raises a ConfigError otherwise."""

    reason = "discrepancy"

    def __init__(self, tau: float = 1.5, num_items: int = 256, draws_per_item: int = 8,
                 population_samples: int = 20_000, seed: int = 0, every_n_val_checks: int = 1):
        super().__init__(every_n_val_checks)
        if not 0 <= tau or num_items < 1 or draws_per_item < 1 or population_samples < 2:
            raise ConfigError("DiscrepancyStop needs tau >= 0, num_items, draws_per_item >= 1, population_samples >= 2")
        self.tau, self.num_items, self.draws_per_item = tau, num_items, draws_per_item
        self.population_samples, self.seed = population_samples, seed
        self.stopped_step: int | None = None
        self.stopped_value = math.nan

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        dm = diffusion_data(trainer, "DiscrepancyStop")
        if dm.mixture is None:
            raise ConfigError("DiscrepancyStop needs data of known density (GaussianMixtureDataModule); on other data "
                              "stop with EarlyStopping on risk/vlb_heldout or val/dsm_x0")
        if self.num_items > len(dm.train_data):
            raise ConfigError(f"DiscrepancyStop num_items={self.num_items} exceeds the training split "
                              f"({len(dm.train_data)}); lower num_items")

    @torch.no_grad()
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        rows = torch.randperm(len(dm.train_data), generator=torch.Generator().manual_seed(self.seed))
        items = dm.to_unit(dm.train_data[rows[: self.num_items]]).repeat_interleave(self.draws_per_item, 0)
        self.train_items = items.to(pl_module.device)
        population = dm.population(self.population_samples, seed=self.seed + 1).to(pl_module.device)
        diffusion = pl_module.diffusion
        bayes = dm.mixture.denoiser_at_steps(diffusion.schedule.alphas_cumprod)
        self.level = mean_and_se(diffusion.fixed_loss(bayes, population, self.seed + 2, range(len(population)), "x0"))

    @torch.no_grad()
    def evaluate_model(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        items = range(len(self.train_items))
        losses = pl_module.diffusion.fixed_loss(pl_module.model, self.train_items, self.seed + 3, items)
        loss, se = mean_and_se(losses.view(self.num_items, self.draws_per_item).mean(1))  # SE over items
        nu, nu_se = self.level
        threshold = nu + self.tau * math.hypot(se, nu_se)
        pl_module.log_dict({"stop/discrepancy_loss": loss, "stop/discrepancy_threshold": threshold}, batch_size=1)
        if loss <= threshold and self.stopped_step is None:
            self.stopped_step, self.stopped_value = trainer.global_step, loss
            trainer.should_stop = True
            rank_zero_info(f"DiscrepancyStop: training loss {loss:.5g} <= ν + τ·SE = {threshold:.5g} "
                           f"(ν = {nu:.5g}) at step {trainer.global_step}; stopping")


class GapRiseStop(Callback):
    """Stops once the monitored risk metric has stood above its lowest value so far by more than ``threshold``
    standard errors of that rise at ``patience`` consecutive checks (theory.md §7; the default patience:
    ``docs/estimation.md``). ``monitor`` is ``risk/estimation`` or ``risk/vlb_heldout``, whose ``_rise`` and
    ``_rise_se`` :class:`RiskMetrics` logs; another raises a ConfigError."""

    reason = "gap_rise"

    def __init__(self, monitor: str = "risk/estimation", threshold: float = 2.0, patience: int = 3):
        if threshold <= 0 or patience < 1:
            raise ConfigError(f"GapRiseStop needs threshold > 0 and patience >= 1, got {threshold} and {patience}")
        if monitor.removeprefix("risk/") not in RISES:
            raise ConfigError(f"GapRiseStop monitors one of {[f'risk/{name}' for name in RISES]}, got {monitor!r}")
        self.monitor, self.threshold, self.patience = monitor, threshold, patience
        self.risen = 0  # consecutive checks above the threshold
        self.stopped_step: int | None = None
        self.stopped_value = math.nan

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        rise = f"{self.monitor}_rise"
        if trainer.sanity_checking or rise not in metrics:
            return
        self.risen = self.risen + 1 if float(metrics[rise]) > self.threshold * float(metrics[f"{rise}_se"]) else 0
        if self.risen >= self.patience and self.stopped_step is None:
            self.stopped_step, self.stopped_value = trainer.global_step, float(metrics[self.monitor])
        trainer.should_stop = trainer.should_stop or self.stopped_step is not None

    def state_dict(self) -> dict:
        return {"stopped_step": self.stopped_step, "risen": self.risen}

    def load_state_dict(self, state: dict) -> None:
        self.stopped_step, self.risen = state["stopped_step"], state.get("risen", 0)


class StopReport(Callback):
    """At the end of training, logs ``stop/step`` and ``stop/value`` (the monitored value at the stop) as metrics and
    ``stop/reason`` as a hyper-parameter: ``discrepancy``, ``gap_rise``, ``holdout_`` + the stopping reason of
    Lightning's ``EarlyStopping`` (``holdout_patience_exhausted``, ...), or ``max_steps``."""

    def __init__(self):
        self.reason: str | None = None
        self.step: int | None = None
        self.value = math.nan

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rules = [cb for cb in trainer.callbacks
                 if isinstance(cb, (DiscrepancyStop, GapRiseStop)) and cb.stopped_step is not None]
        holdout = sorted((cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping)),
                         key=lambda cb: cb.stopping_reason == EarlyStoppingReason.NOT_STOPPED)  # the one that stopped
        self.step = trainer.global_step
        if rules:
            self.reason, self.value = rules[0].reason, rules[0].stopped_value
        else:
            stopped = holdout and holdout[0].stopping_reason != EarlyStoppingReason.NOT_STOPPED
            self.reason = f"holdout_{holdout[0].stopping_reason.name.lower()}" if stopped else "max_steps"
            monitored = trainer.callback_metrics.get(holdout[0].monitor) if holdout else None
            self.value = math.nan if monitored is None else float(monitored)
        for logger in trainer.loggers:
            logger.log_metrics({"stop/step": self.step, "stop/value": self.value}, step=self.step)
            logger.log_hyperparams({"stop/reason": self.reason})
            logger.save()
        rank_zero_info(f"stopped at step {self.step}: {self.reason} (value {self.value:.5g})")
