"""The trajectory callback: how far and how intricately the optimiser moved, logged next to the risk split (§8)."""

import math
from collections import deque

import lightning as L
import torch
from torchmetrics import MeanMetric

from ddpm_signrelu.callbacks.base import ValidationEvaluator, diffusion_data, evaluation_rows
from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.metrics.trajectory import CountSketch, euclidean_distances, loss_distances, magnitude, mst_weight


class TrajectoryStatistics(ValidationEvaluator):
    """Logs the complexity of the training trajectory and the loss generalisation gap at validation.

    Every ``every_n_steps`` optimizer steps the weights θ_k are stored as a :class:`CountSketch` of ``sketch_dim``
    values and as their losses on ``num_items`` fixed training triples (x0, t, ε). The last ``window`` steps' iterates
    give, under the sketches' Euclidean metric (``euclid``) and the loss pseudo-metric ρ_S (``rhoS``),
    ``topo/E_alpha_*`` (the minimum spanning tree's weight, α = ``alpha``), ``topo/mag_*`` and ``topo/pmag_*``
    (magnitude and positive magnitude at scale ``scale``, default √n, n the training-set size). Also logged:
    ``opt/sum_lr_gradnorm2`` = Σ_k η_k ‖g_k‖² over the run (gradients before clipping), ``train/dsm``, ``val/dsm`` and
    ``gap/dsm`` (the loss on ``num_items`` training and held-out items with shared fixed draws, and their difference),
    ``hparams/lr`` and ``hparams/batch_size`` (the global batch of one step). Under DDP rank 0 stores the trajectory."""

    def __init__(self, every_n_steps: int = 10, window: int = 2000, sketch_dim: int = 2**14, num_items: int = 64,
                 alpha: float = 1.0, scale: float | None = None, every_n_val_checks: int = 1, seed: int = 0):
        super().__init__(every_n_val_checks)
        if every_n_steps < 1 or window < 2 * every_n_steps or sketch_dim < 1 or num_items < 1:
            raise ConfigError(f"TrajectoryStatistics needs every_n_steps >= 1, window >= 2 x every_n_steps, sketch_dim "
                              f">= 1 and num_items >= 1, got {every_n_steps}, {window}, {sketch_dim}, {num_items}")
        if scale is not None and scale <= 0:
            raise ConfigError(f"TrajectoryStatistics scale must be > 0 (or null: the square root of the training-set "
                              f"size), got {scale}")
        self.every_n_steps, self.window, self.sketch_dim, self.num_items = every_n_steps, window, sketch_dim, num_items
        self.alpha, self.scale, self.seed = alpha, scale, seed
        self.sum_lr_gradnorm2 = torch.zeros((), dtype=torch.float64)
        self.steps, self.sketches, self.losses = self._buffers()

    def _buffers(self, steps=(), sketches=(), losses=()) -> tuple[deque, deque, deque]:
        return tuple(deque(items, maxlen=self.window // self.every_n_steps) for items in (steps, sketches, losses))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        diffusion_data(trainer, "TrajectoryStatistics", self.num_items)
        super().setup(trainer, pl_module, stage)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm, device = trainer.datamodule, pl_module.device
        train_rows, held_rows = evaluation_rows(dm, self.num_items, self.seed)
        self.train_x0 = dm.to_unit(dm.train_data[train_rows]).to(device)
        held_x0 = dm.to_unit(dm.val_data[held_rows]).to(device)
        mine = slice(trainer.global_rank, None, trainer.world_size)  # the gap's items of this process
        self.gap_items = (list(range(self.num_items))[mine], self.train_x0[mine], held_x0[mine])
        self.gap_train, self.gap_held = MeanMetric().to(device), MeanMetric().to(device)
        self.n, self.batch_size = len(dm.train_data), dm.batch_size * trainer.accumulate_grad_batches
        self.sketch = CountSketch(sum(p.numel() for p in self._weights(pl_module)), self.sketch_dim, self.seed)

    @staticmethod
    def _weights(pl_module: L.LightningModule) -> list[torch.Tensor]:
        return [p for p in pl_module.model.parameters() if p.requires_grad]

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        total = torch.zeros((), dtype=torch.float64, device=pl_module.device)
        for group in optimizer.param_groups:
            if grads := [p.grad for p in group["params"] if p.grad is not None]:
                norm2 = torch.stack(torch._foreach_norm(grads)).double().square().sum()
                total = total + float(group["lr"]) * torch.where(torch.isfinite(norm2), norm2, 0.0)
        self.sum_lr_gradnorm2 = self.sum_lr_gradnorm2.to(total.device) + total  # no host sync: read at evaluation

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or step % self.every_n_steps or (self.steps and self.steps[-1] == step):
            return  # rank 0 stores the trajectory; an accumulation micro-batch leaves the step as it was
        sketch, losses = self.snapshot(pl_module)
        self.steps.append(step)
        self.sketches.append(sketch)
        self.losses.append(losses)

    def snapshot(self, pl_module: L.LightningModule) -> tuple[torch.Tensor, torch.Tensor]:
        """The current weights' sketch and their losses on the fixed training triples (on the CPU)."""
        return (self.sketch(self._weights(pl_module)).cpu(),
                self._fixed_losses(pl_module, self.train_x0, range(self.num_items)).cpu())

    def _fixed_losses(self, pl_module: L.LightningModule, x0: torch.Tensor, items) -> torch.Tensor:
        """The training loss per item of ``x0`` on the fixed draws of (seed, item), in evaluation mode."""
        training = pl_module.model.training
        pl_module.model.eval()
        try:
            with pl_module.trainer.precision_plugin.forward_context():
                return pl_module.diffusion.fixed_loss(pl_module.model, x0, self.seed, list(items)).float()
        finally:
            pl_module.model.train(training)

    def evaluate_model(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log_dict(self.evaluate(trainer, pl_module), batch_size=1)

    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """The trajectory statistics (rank 0's, on every rank) and the loss gap of the current weights."""
        items, train_x0, held_x0 = self.gap_items
        self.gap_train.update(self._fixed_losses(pl_module, train_x0, items))
        self.gap_held.update(self._fixed_losses(pl_module, held_x0, items))
        train, held = self.gap_train.compute(), self.gap_held.compute()
        self.gap_train.reset(), self.gap_held.reset()
        stats = trainer.strategy.broadcast(self.statistics() if trainer.is_global_zero else None, src=0)
        return stats | {"train/dsm": float(train), "val/dsm": float(held), "gap/dsm": float(held - train),
                         "hparams/lr": float(trainer.optimizers[0].param_groups[0]["lr"]),
                         "hparams/batch_size": float(self.batch_size)}

    def statistics(self) -> dict[str, float]:
        """The trajectory statistics of the stored iterates (NaN where fewer than 2 are stored)."""
        stats = {"opt/sum_lr_gradnorm2": float(self.sum_lr_gradnorm2), "topo/num_iterates": float(len(self.steps))}
        scale = math.sqrt(self.n) if self.scale is None else self.scale
        for metric, distances in (("euclid", lambda: euclidean_distances(torch.stack(list(self.sketches)))),
                                  ("rhoS", lambda: loss_distances(torch.stack(list(self.losses))))):
            values = (math.nan,) * 3
            if len(self.steps) >= 2:
                d = distances()
                values = (mst_weight(d, self.alpha), *magnitude(d, scale))
            stats |= dict(zip((f"topo/E_alpha_{metric}", f"topo/mag_{metric}", f"topo/pmag_{metric}"), values))
        return stats

    def state_dict(self) -> dict:
        return {"sum_lr_gradnorm2": float(self.sum_lr_gradnorm2), "steps": list(self.steps),
                "sketches": list(self.sketches), "losses": list(self.losses)}

    def load_state_dict(self, state: dict) -> None:
        self.sum_lr_gradnorm2 = torch.tensor(state["sum_lr_gradnorm2"], dtype=torch.float64)
        self.steps, self.sketches, self.losses = self._buffers(state["steps"], state["sketches"], state["losses"])
