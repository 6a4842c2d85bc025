"""Multinomial diffusion on a table's categories (Hoogeboom et al., 2021, as TabDDPM uses it) against the shipped
one-hot Gaussian diffusion, all else as a Credit Default config has it (network, head, data and codec, the numbers'
diffusion, optimiser, steps, EMA). A measurement outside the package: ``benchmarks.tabular_quality --models
ours_multinomial`` trains and scores it beside the others.

    python -m benchmarks.multinomial --config run.yaml --out folder --rows 21000 --seeds 2 --steps 50

Each one-hot block of the codec (a category, or a related column's state) with K labels is one categorical variable:
q(x_t | x_0) = Cat(ᾱ_t·x_0 + (1 − ᾱ_t)/K) on the config's β schedule. The network sees the numbers' x_t and the blocks'
one-hot x_t; its x̂0 on a block, through a softmax, is p̂(x_0 | x_t). The loss is TabDDPM's: the numbers' x0_mse plus
T·KL(q(x_{t−1} | x_t, x_0) ‖ q(x_{t−1} | x_t, p̂)) averaged over the blocks (−log p̂(x_0) at t = 1). Sampling walks
``--steps`` points of DDIM (η = 0) on the numbers; on the blocks it draws from q(x_s | x_t, p̂) ∝
(ᾱ_t/ᾱ_s·x_t + (1 − ᾱ_t/ᾱ_s)/K) ⊙ (ᾱ_s·p̂ + (1 − ᾱ_s)/K) between grid points, and from p̂ at the last. No held-out
bound (the package's is Gaussian): the run trains the config's ``max_steps`` and samples ``last.ckpt``. Writes
``samples_<seed>.csv`` and ``fit.json`` (training seconds), as the peers do.
"""

import argparse
import json
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint

from ddpm_signrelu.checkpoints import read_checkpoint
from ddpm_signrelu.data import CreditDefaultDataModule
from ddpm_signrelu.data.table import write_csv
from ddpm_signrelu.diffusion.samplers import step_coefficients, timestep_grid
from ddpm_signrelu.lit import DiffusionModel


class Blocks:
    """The one-hot blocks of a row's last coordinates as a padded (B, blocks, K_max) view; padding has probability 0."""

    def __init__(self, sizes: list[int]):
        self.sizes = torch.tensor(sizes)
        self.mask = torch.arange(max(sizes))[None] < self.sizes[:, None]  # (blocks, K_max)

    def view(self, x: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        out = x.new_full((len(x), *self.mask.shape), fill)
        out[:, self.mask] = x
        return out

    def flat(self, blocks: torch.Tensor) -> torch.Tensor:
        return blocks[:, self.mask]

    def mix(self, p: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """keep·p + (1 − keep)/K on the labels, 0 on the padding; ``keep`` (B,) broadcast over the blocks."""
        keep = keep.view(-1, 1, 1)
        return (keep * p + (1 - keep) / self.sizes.to(p)[:, None]) * self.mask.to(p)

    def softmax(self, logits: torch.Tensor) -> torch.Tensor:
        return self.view(logits, float("-inf")).softmax(-1)

    def draw(self, p: torch.Tensor, generator=None) -> torch.Tensor:
        """One-hot draws (B, blocks, K_max) from the probabilities ``p`` (Gumbel-max)."""
        u = torch.rand(p.shape, generator=generator, dtype=p.dtype).to(p.device).clamp(1e-20, 1)
        label = (p.clamp_min(1e-30).log() - (-u.log()).log()).masked_fill(~self.mask.to(p.device), float("-inf"))
        return F.one_hot(label.argmax(-1), p.shape[-1]).to(p.dtype)


def posterior(blocks: Blocks, x_t: torch.Tensor, p0: torch.Tensor, ab_t: torch.Tensor, ab_s: torch.Tensor):
    """q(x_s | x_t, x_0 ~ p0) for s < t (B, blocks, K_max), from ᾱ_t and ᾱ_s (B,)."""
    unnormed = blocks.mix(x_t, ab_t / ab_s) * blocks.mix(p0, ab_s)
    return unnormed / unnormed.sum(-1, keepdim=True)


class MultinomialModel(DiffusionModel):
    """:class:`DiffusionModel` with the last coordinates' one-hot blocks (``sizes``) diffused as categories."""

    def __init__(self, sizes: list[int], **model):
        super().__init__(**model)
        self.blocks = Blocks(sizes)
        self.numbers = self.dim - sum(sizes)
        self.register_buffer("ab", self.diffusion.schedule.alphas_cumprod.float(), persistent=False)

    def training_step(self, batch, batch_idx):
        x0, n, blocks = batch[0], self.numbers, self.blocks
        t, noise = self.training_draws(batch)
        ab = self.ab[t]
        numbers_t = ab.sqrt()[:, None] * x0[:, :n] + (1 - ab).sqrt()[:, None] * noise[:, :n]
        labels0 = blocks.view(x0[:, n:])
        labels_t = blocks.draw(blocks.mix(labels0, ab))
        x0_hat = self.diffusion.denoise(self.model, torch.cat([numbers_t, blocks.flat(labels_t)], 1), t, clip=False)
        p0 = blocks.softmax(x0_hat[:, n:])
        ab_s = torch.where(t > 0, self.ab[(t - 1).clamp(min=0)], torch.ones_like(ab))
        true, model = posterior(blocks, labels_t, labels0, ab, ab_s), posterior(blocks, labels_t, p0, ab, ab_s)
        kl = (true * (true.clamp_min(1e-30).log() - model.clamp_min(1e-30).log())).sum(-1)
        nll = -(labels0 * p0.clamp_min(1e-30).log()).sum(-1)
        categorical = torch.where(t[:, None] > 0, kl, nll).mean(1) * self.diffusion.num_timesteps
        loss = ((x0[:, :n] - x0_hat[:, :n]).pow(2).mean(1) + categorical).mean()
        self._last_loss = loss.detach()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(x0))
        return loss

    @torch.no_grad()
    def rows(self, count: int, seed: int, steps: int) -> torch.Tensor:
        """``count`` rows (count, D), the numbers by DDIM on ``steps`` points, the blocks drawn as above."""
        g, n, blocks = torch.Generator().manual_seed(seed), self.numbers, self.blocks
        grid = timestep_grid(self.diffusion.num_timesteps, steps)
        coefficients = torch.stack(step_coefficients(self.diffusion.schedule, grid[:-1], grid[1:], "ddim"), 1)
        numbers = torch.randn(count, n, generator=g)
        labels = blocks.draw(blocks.mix(torch.zeros(count, *blocks.mask.shape), torch.zeros(count)), g)
        for i, t in enumerate(grid.tolist()):
            x0_hat = self.denoise(torch.cat([numbers, blocks.flat(labels)], 1), torch.full((count,), t), clip=False)
            p0 = blocks.softmax(x0_hat[:, n:])
            if i == len(grid) - 1:
                return torch.cat([x0_hat[:, :n], blocks.flat(blocks.draw(p0, g))], 1)
            c_x0, c_xt, _ = coefficients[i].tolist()
            numbers = c_x0 * x0_hat[:, :n] + c_xt * numbers
            ab_t, ab_s = (self.ab[s].expand(count) for s in (t, int(grid[i + 1])))
            labels = blocks.draw(posterior(blocks, labels, p0, ab_t, ab_s), g)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="a Credit Default config (model, data, trainer sections)")
    p.add_argument("--out", required=True)
    p.add_argument("--rows", type=int, required=True, help="rows per synthetic set")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=int, default=50, help="sampling grid points")
    args = p.parse_args(argv)
    config, out = yaml.safe_load(Path(args.config).read_text()), Path(args.out)
    L.seed_everything(config.get("seed_everything", 0))
    dm = CreditDefaultDataModule(**config["data"]["init_args"])
    dm.setup("fit")
    sizes = [len(labels) for _, labels in dm.codec.blocks]
    model = MultinomialModel(sizes, data_shape=dm.data_shape, num_levels=None, **config["model"])
    trainer_config = config["trainer"]
    last = out / "checkpoints" / "last.ckpt"
    trainer = L.Trainer(max_steps=trainer_config["max_steps"], gradient_clip_val=trainer_config["gradient_clip_val"],
                        limit_val_batches=0, logger=False, enable_progress_bar=False, default_root_dir=out,
                        callbacks=[EMAWeightAveraging(decay=0.999),
                                   ModelCheckpoint(out / "checkpoints", save_last=True, save_top_k=0,
                                                   every_n_train_steps=trainer_config["val_check_interval"])])
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm, ckpt_path=last if last.is_file() else None)
    seconds = time.perf_counter() - start
    model.load_state_dict(read_checkpoint(last)["state_dict"])  # the EMA weights
    model.eval()
    for seed in range(args.seeds):
        write_csv(dm.codec.decode(model.rows(args.rows, seed, args.steps)), out / f"samples_{seed}.csv",
                  dm.codec.columns)
    (out / "fit.json").write_text(json.dumps({"model": "ours_multinomial", "fit_seconds": seconds,
                                              "steps": trainer.global_step}))
    print(json.dumps({"model": "ours_multinomial", "fit_seconds": round(seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
