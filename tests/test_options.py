"""Every value of every choice the package advertises, end to end in-process: a few optimizer steps through
``Trainer.fit``, a validation pass and samples, on a tiny model (one case per value, not the cartesian product);
and the numbers of the ``min_snr`` and ``vlb`` losses."""

import math

import lightning as L
import pytest
import torch
from helpers import gaussian_bayes_denoiser

from ddpm_signrelu.callbacks import RiskMetrics
from ddpm_signrelu.data import DigitsDataModule
from ddpm_signrelu.diffusion import (BETA_SCHEDULES, LOSSES, PARAMETERIZATIONS, PROPOSALS, SAMPLERS, SPACINGS,
                                     VARIANCES, DenoisingLoss, Diffusion, NoiseSchedule, vb_term)
from ddpm_signrelu.lit import DiffusionModel
from ddpm_signrelu.lit.module import LR_SCHEDULES
from ddpm_signrelu.nn import ACTIVATIONS, ATOM_FORMS, HEADS, LOGITS_MODES, NETWORKS

T = 25
TINY_NETWORKS = {"unet": {"name": "unet", "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "groups": 4,
                          "head_channels": 8},
                 "mlp": {"name": "mlp", "width": 16, "depth": 1}}
BASE = {"data_shape": (1, 8, 8), "num_levels": 17, "network": TINY_NETWORKS["unet"],
        "head": {"name": "ratio_atoms", "num_atoms": 3}, "num_timesteps": T, "lr": 1e-2, "bound_strata": 3}


def case(name: str, model: dict | None = None, sampling: dict | None = None, proposal: str | None = None):
    return pytest.param(model or {}, sampling or {}, proposal, id=name)


CASES = [
    *[case(f"loss={v}", {"loss": v}) for v in LOSSES],
    *[case(f"head={h}-{p}", {"head": {"name": h, "parameterization": p}}) for h in HEADS for p in PARAMETERIZATIONS],
    *[case(f"logits={v}", {"head": {"name": "ratio_atoms", "logits": v}}) for v in LOGITS_MODES],
    *[case(f"temperature={v}", {"head": {"name": "ratio_atoms", "temperature": v}}) for v in (True, False)],
    *[case(f"atom_form={v}", {"head": {"name": "ratio_atoms", "atom_form": v}}) for v in ATOM_FORMS],
    *[case(f"head={h}-kernel_size=3", {"head": {"name": h, "kernel_size": 3}}) for h in HEADS],
    *[case(f"beta_schedule={v}", {"beta_schedule": v}) for v in BETA_SCHEDULES],
    *[case(f"variance={v}", {"variance": v}) for v in VARIANCES],
    *[case(f"sampler={s}-eta={eta}", sampling={"sampler": s, "eta": eta}) for s in SAMPLERS
      for eta in ((0.0, 0.5) if s == "ddim" else (None,))],
    *[case(f"spacing={v}", sampling={"sampler": "dpmpp_2m", "steps": 6, "spacing": v}) for v in SPACINGS],
    *[case(f"activation={v}", {"network": {**TINY_NETWORKS["unet"], "activation": v}}) for v in ACTIVATIONS],
    *[case(f"network={v}", {"network": TINY_NETWORKS[v]}) for v in NETWORKS],
    *[case(f"lr_schedule={v}", {"lr_schedule": v}) for v in LR_SCHEDULES],
    *[case(f"proposal={v}", proposal=v) for v in PROPOSALS],
]


def finite(value) -> bool:
    return math.isfinite(float(value))


@pytest.mark.parametrize("model_options,sampling,proposal", CASES)
def test_option_trains_validates_and_samples(tmp_path, model_options, sampling, proposal):
    L.seed_everything(0)
    model = DiffusionModel(**{**BASE, **model_options})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    callbacks = [RiskMetrics(num_items=4, num_strata=2, proposal=proposal, batch_size=64)] if proposal else []
    trainer = L.Trainer(max_steps=2, val_check_interval=2, check_val_every_n_epoch=None, limit_val_batches=1,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=callbacks, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=8, val_size=8))
    metrics = trainer.callback_metrics
    assert trainer.global_step == 2 and finite(metrics["train/loss"])
    changed = {n.split(".")[1] for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"backbone", "head"}
    for key in ("val/loss", "val/bpd", "val/dsm_x0") + (("risk/vlb_heldout", "risk/excess") if proposal else ()):
        assert finite(metrics[key]), key
    assert float(metrics["val/bpd"]) > 0
    samples = model.generate([0, 1], **sampling)
    assert samples.shape == (2, 1, 8, 8) and samples.dtype == torch.float32
    assert torch.isfinite(samples).all() and samples.abs().max() <= 1 and not torch.equal(samples[0], samples[1])


def test_min_snr_loss_is_the_clipped_snr_times_the_x0_error():
    """min(SNR_t, γ)·(1/D)‖x0 − x̂0‖² for x̂0 = 0: SNR_t = ᾱ_t/(1 − ᾱ_t) from β alone."""
    s = NoiseSchedule.from_name("linear", 100)
    x0 = torch.linspace(-1, 1, 24, dtype=torch.float64).view(6, 1, 2, 2)
    t = torch.tensor([0, 5, 20, 40, 70, 99])
    diffusion = Diffusion(s, "x0", DenoisingLoss("min_snr", 5.0), None)
    loss = diffusion.loss_per_example(lambda x, _: torch.zeros_like(x), x0, t, torch.randn_like(x0))
    ab = torch.cumprod(1 - s.betas, 0)[t]
    snr = ab / (1 - ab)
    assert (snr[:2] > 5).all() and (snr[2:] < 5).all()
    torch.testing.assert_close(loss, snr.clamp(max=5.0) * x0.square().mean((1, 2, 3)), rtol=1e-12, atol=0)


def test_v_mse_loss_is_the_v_error_of_a_v_head():
    """(1/D)‖v − v̂‖² with v = √ᾱ·ε − √(1 − ᾱ)·x0, for a v-network whose error v̂ − v is known."""
    s = NoiseSchedule.from_name("linear", 100)
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.rand(6, 1, 2, 2, generator=g, dtype=torch.float64) * 2 - 1, torch.randn(6, 1, 2, 2, generator=g,
                                                                                             dtype=torch.float64)
    t, error = torch.tensor([0, 5, 20, 40, 70, 99]), 0.1 * torch.randn(6, 1, 2, 2, generator=g, dtype=torch.float64)
    a, sd = (s.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1), (1 - s.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1))
    v = a * noise - sd * x0
    diffusion = Diffusion(s, "v", DenoisingLoss("v_mse"), None)
    loss = diffusion.loss_per_example(lambda x, _: v + error, x0, t, noise)
    torch.testing.assert_close(loss, error.square().mean((1, 2, 3)), rtol=1e-9, atol=1e-15)


def test_vlb_loss_is_unbiased_for_the_bound_less_its_constants():
    """E[loss] = (1/D)·Σ_{t≥2} (L_{t−1} − C_t) for the Bayes denoiser of N(m, s²) data. Exactly, per step,
    L_{t−1} − C_t = w_t‖x0 − x̂0‖² with E‖x0 − D*(x_t)‖² = D·Var(x0 | x_t), Var(x0 | x_t) = s²(1 − ᾱ)/(ᾱ s² + 1 − ᾱ):
    the term is :func:`vb_term` at x̂0 = x0 + √Var·1 less :func:`vb_term` at x̂0 = x0 (which is C_t)."""
    s, mean, std, dim, n = NoiseSchedule.from_name("linear", 100), 0.3, 0.5, 4, 200_000
    ab = s.alphas_cumprod
    post_var = std**2 * (1 - ab) / (ab * std**2 + 1 - ab)
    steps = torch.arange(1, 100)
    zeros = torch.zeros(len(steps), dim, dtype=torch.float64)
    off = post_var[steps, None].sqrt().expand(-1, dim)
    exact = ((vb_term(s, zeros, zeros, steps, off, None) - vb_term(s, zeros, zeros, steps, zeros, None)) / dim).sum()
    g = torch.Generator().manual_seed(5)
    x0 = mean + std * torch.randn(n, dim, generator=g, dtype=torch.float64)
    vlb = DenoisingLoss("vlb")
    t = vlb.timesteps(100, n, generator=g)
    noise = torch.randn(n, dim, generator=g, dtype=torch.float64)
    loss = Diffusion(s, "x0", vlb, None).loss_per_example(gaussian_bayes_denoiser(s, mean, std), x0, t, noise)
    se = loss.std().item() / math.sqrt(n)
    assert t.min() == 1 and t.max() == 99
    assert loss.mean().item() == pytest.approx(exact.item(), abs=4 * se)
    assert 4 * se < 0.05 * exact.item()  # w_{t±1} in place of w_t would be off by > 50 %
