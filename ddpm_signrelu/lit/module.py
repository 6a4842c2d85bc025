"""The LightningModule: a denoiser network trained as a DDPM, with held-out loss and bound in validation."""

import inspect
import math
from typing import Literal, get_args

import lightning as L
import torch
from torchmetrics import MeanMetric

from ddpm_signrelu import __version__
from ddpm_signrelu.diffusion import (X0_MSE, BetaSchedule, DenoisingLoss, Diffusion, Loss, NoiseSchedule, Sampler,
                                     Spacing, Variance, sample, to_bits_per_dim)
from ddpm_signrelu.errors import CheckpointError, ConfigError, NonFiniteLossError, check_choice
from ddpm_signrelu.nn import build_network, resolve_config
from ddpm_signrelu.seeding import mix_seed

CHECKPOINT_KEY = "ddpm_signrelu"
EVALUATION_SETTINGS = ("compile", "clip_denoised", "bound_strata", "eval_seed")  # how the model is run and evaluated
LRSchedule = Literal["constant", "cosine"]  # after warm-up
LR_SCHEDULES = get_args(LRSchedule)


class DiffusionModel(L.LightningModule):
    """A DDPM whose reverse-process network is ``network`` + ``head``; a checkpoint alone rebuilds the model.

    Args:
        data_shape: shape of one example, e.g. (1, 8, 8); linked from the data module by the CLI.
        num_levels: grey levels of the data (discretized decoder), or None for continuous data.
        network: backbone config, ``{"name": "unet" | "mlp", **options}``.
        head: head config, ``{"name": "ratio_atoms" | "ratio_direct" | "plain", **options}``.
        num_timesteps: T.  beta_schedule: ``linear`` or ``cosine``.  variance: ``small`` (β̃) or ``large`` (β).
        loss: ``eps_mse`` (L_simple), ``v_mse``, ``min_snr``, ``x0_mse`` or ``vlb``; min_snr_gamma: γ of ``min_snr``.
        clip_denoised: clamp x̂0 to [−1, 1] when sampling and evaluating (never in training).
        lr, weight_decay, adam_betas, warmup_steps: AdamW with a linear warm-up to ``lr``.
        lr_schedule: after warm-up, ``constant`` or ``cosine`` decay to 0 at ``trainer.max_steps``.
        bound_strata: K strata for the validation bound (K + 1 calls per item).  eval_seed: the validation draws' seed.
        compile: ``torch.compile`` the network in place at set-up: ``True`` for the defaults or a dict of its options,
            e.g. ``{mode: max-autotune}`` (needs Triton on GPU, a C++ compiler on CPU; checkpoints load uncompiled).
    """

    def __init__(self, data_shape: tuple[int, ...] = (1, 8, 8), num_levels: int | None = 17,
                 network: dict | None = None, head: dict | None = None, num_timesteps: int = 1000,
                 beta_schedule: BetaSchedule = "linear", variance: Variance = "small", loss: Loss = "eps_mse",
                 min_snr_gamma: float = 5.0, clip_denoised: bool = True, lr: float = 2e-4, weight_decay: float = 0.0,
                 adam_betas: tuple[float, float] = (0.9, 0.999), warmup_steps: int = 0,
                 lr_schedule: LRSchedule = "constant",
                 bound_strata: int = 16, eval_seed: int = 0, compile: bool | dict = False):
        super().__init__()
        network = resolve_config("network", network or {"name": "unet"})
        head = resolve_config("head", head or {"name": "ratio_atoms"})
        self.save_hyperparameters()
        self.hparams.update(network=network, head=head)  # the resolved forms: typed, with every default filled in
        check_choice("lr_schedule", lr_schedule, LR_SCHEDULES)
        if num_levels is not None and num_levels < 2:
            raise ConfigError(f"num_levels must be >= 2 or None (continuous data), got {num_levels}")
        if lr <= 0 or warmup_steps < 0:
            raise ConfigError(f"need lr > 0 and warmup_steps >= 0, got lr={lr}, warmup_steps={warmup_steps}")
        self.compile_options = compile_options(compile)
        self.data_shape = tuple(int(s) for s in data_shape)
        self.model = build_network(self.data_shape, network, head)
        self.diffusion = Diffusion(NoiseSchedule.from_name(beta_schedule, num_timesteps, variance),
                                   self.model.head.parameterization, DenoisingLoss(loss, min_snr_gamma), num_levels,
                                   clip_denoised, bound_strata)
        # identical on every process by construction: DDP need not broadcast the schedule's buffers each step
        self._ddp_params_and_buffers_to_ignore = [f"diffusion.{name}" for name, _ in self.diffusion.named_buffers()]
        self.val_loss, self.val_bpd, self.val_dsm_x0 = MeanMetric(), MeanMetric(), MeanMetric()
        self._last_loss = torch.zeros(())
        self.sampling: dict = {}  # generate()'s options for predict_step, e.g. set by sample.py

    def setup(self, stage: str) -> None:
        """Compile the network in place (``compile``), once, before this process's first step or sample."""
        if self.compile_options is not None and self.model._compiled_call_impl is None:
            self.model.compile(**self.compile_options)

    @property
    def dim(self) -> int:
        return math.prod(self.data_shape)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(x_t, t)

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, clip: bool | None = None) -> torch.Tensor:
        """x̂0(x_t, t) in at least fp32, clamped to [−1, 1] when ``clip`` (default: ``clip_denoised``)."""
        return self.diffusion.denoise(self.model, x_t, t, clip)

    def training_draws(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, ε) for a training batch: drawn for the whole global batch from its seed, where the batch (of
        :class:`~ddpm_signrelu.data.GlobalBatchSampler`) carries one, else from the global generator."""
        x0, loss, T = batch[0], self.diffusion.loss, self.diffusion.num_timesteps
        if len(batch) < 4:
            return loss.timesteps(T, len(x0), device=x0.device), torch.randn_like(x0)
        positions, seed = batch[2], batch[3]
        g = torch.Generator(device=x0.device).manual_seed(seed)
        size = len(x0) * self.trainer.world_size
        t = loss.timesteps(T, size, generator=g, device=x0.device)
        noise = torch.randn((size, *x0.shape[1:]), generator=g, device=x0.device, dtype=x0.dtype)
        torch.manual_seed(mix_seed(seed, self.global_rank))  # dropout: reproducible on resume, a stream per process
        return t[positions], noise[positions]

    def training_step(self, batch, batch_idx):
        x0 = batch[0]
        t, noise = self.training_draws(batch)
        loss = self.diffusion.loss_per_example(self.model, x0, t, noise).mean()
        self._last_loss = loss.detach()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(x0))
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        """Stop before an update that would make the weights non-finite, so every checkpoint stays good."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else torch.zeros(())
        self.log("train/grad_norm", norm, batch_size=1)
        fp16 = str(self.trainer.precision).startswith("16")  # then inf gradients are the GradScaler's to skip
        if not torch.isfinite(self._last_loss) or (not fp16 and not torch.isfinite(norm)):
            raise NonFiniteLossError(
                f"non-finite training loss ({self._last_loss.item():.4g}) or gradient norm ({norm.item():.4g}) at step "
                f"{self.global_step}: stopped before the update, so the last checkpoint written is good; lower the "
                f"learning rate, clip gradients (trainer.gradient_clip_val) or check the data for NaNs")

    def validation_step(self, batch, batch_idx):
        """Held-out figures on fixed per-item draws: ``val/loss`` (the training loss), ``val/bpd`` (the stratified
        bound) and ``val/dsm_x0`` = (1/D)‖x0 − x̂0‖² with t ~ U{1..T}, the cheap hold-out stopping monitor (§7)."""
        x0, items, seed, diffusion = batch[0], batch[1].tolist(), self.hparams.eval_seed, self.diffusion
        self.val_loss.update(diffusion.fixed_loss(self.model, x0, seed, items))
        self.val_dsm_x0.update(diffusion.fixed_loss(self.model, x0, seed + 2, items, loss=X0_MSE))
        self.val_bpd.update(to_bits_per_dim(diffusion.bound(self.denoise, x0, seed + 1, items), self.dim).float())
        self.log("val/loss", self.val_loss, prog_bar=True)
        self.log("val/bpd", self.val_bpd, prog_bar=True)
        self.log("val/dsm_x0", self.val_dsm_x0)

    def configure_optimizers(self):
        hp = self.hparams
        fused = "mixed" not in str(self.trainer.precision)  # Lightning's AMP plugin clips unfused optimizers only
        opt = torch.optim.AdamW(self.model.parameters(), lr=hp.lr, betas=tuple(hp.adam_betas),
                                weight_decay=hp.weight_decay, fused=fused)  # fused: one pass over all the weights
        warmup, total = max(hp.warmup_steps, 1), self.trainer.estimated_stepping_batches

        def factor(step: int) -> float:
            if step < warmup or hp.lr_schedule == "constant":
                return min(1.0, (step + 1) / warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(total - warmup, 1))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    @torch.no_grad()
    def generate(self, seeds, sampler: Sampler = "ddpm", steps: int | None = None, eta: float | None = None,
                 progress=None, spacing: Spacing | None = None, gamma: torch.Tensor | None = None):
        """Samples in [−1, 1], one per seed (same seed, same image, whatever the batch), in at least fp32 (float64
        for a float64 network). Options: :func:`~ddpm_signrelu.diffusion.sample`."""
        return sample(self.denoise, self.diffusion.schedule, self.data_shape, seeds, self.device, sampler, steps, eta,
                      progress, torch.promote_types(self.dtype, torch.float32), spacing, gamma)

    def predict_step(self, seeds: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """Samples for a batch of seeds, with the options in :attr:`sampling` (see :meth:`generate`)."""
        return self.generate(seeds.tolist(), **self.sampling)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = {"version": __version__}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse, with the differing settings named, to resume from a checkpoint of another model."""
        if CHECKPOINT_KEY not in checkpoint:
            raise CheckpointError("the checkpoint was not written by ddpm_signrelu; resume from one of this package")
        if differ := setting_differences(checkpoint.get("hyper_parameters", {}), dict(self.hparams)):
            raise CheckpointError(f"the checkpoint is from another model: {differ}; use the checkpoint's config "
                                  f"(saved as config.yaml beside the run) or start a new run")


def compile_options(compile: bool | dict) -> dict | None:
    """``torch.compile``'s keyword arguments for the ``compile`` setting (None: do not compile); unknown ones fail."""
    if isinstance(compile, bool):
        return {} if compile else None
    if not isinstance(compile, dict):
        raise ConfigError(f"compile must be true, false or a dict of torch.compile options, got {compile!r}")
    valid = [k for k in inspect.signature(torch.compile).parameters if k != "model"]
    if unknown := sorted(set(compile) - set(valid)):
        raise ConfigError(f"unknown torch.compile option(s) {unknown} in compile; valid: {valid}")
    return dict(compile)


def setting_differences(saved: dict, current: dict) -> str:
    """The settings other than :data:`EVALUATION_SETTINGS` that differ between a checkpoint's hyper-parameters and
    ``current`` ("" if none), as "key is A there but B here"; ``network`` and ``head`` with their defaults filled in."""
    def value(hparams: dict, key: str):
        return _plain(resolve_config(key, hparams[key]) if key in ("network", "head") else hparams[key])

    keys = [k for k in saved if k in current and k not in EVALUATION_SETTINGS and not k.startswith("_")]
    return "; ".join(f"{k} is {value(saved, k)} there but {value(current, k)} here" for k in keys
                     if value(saved, k) != value(current, k))


def _plain(value):
    """Lists/tuples and nested dicts compared by value (YAML gives lists where code gives tuples)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
