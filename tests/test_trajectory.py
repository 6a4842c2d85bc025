"""Trajectory statistics: E_α, magnitude, the count-sketch, ρ_S, and the callback that logs them."""

import copy
import itertools
import math

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from ddpm_signrelu.callbacks import TrajectoryStatistics
from ddpm_signrelu.data import DigitsDataModule
from ddpm_signrelu.errors import ConfigError
from ddpm_signrelu.metrics.trajectory import (CountSketch, euclidean_distances, loss_distances, magnitude,
                                              mst_weight)

from test_training import tiny_model


def cloud(n: int, dim: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def prufer_tree(sequence, n: int) -> list[tuple[int, int]]:
    """The labelled tree on n nodes with Prüfer ``sequence``: every such tree once, over all n^(n-2) sequences."""
    degree = [1] * n
    for v in sequence:
        degree[v] += 1
    edges = []
    for v in sequence:
        leaf = min(i for i in range(n) if degree[i] == 1)
        edges.append((leaf, v))
        degree[leaf] -= 1
        degree[v] -= 1
    edges.append(tuple(i for i in range(n) if degree[i] == 1))
    return edges


@pytest.mark.parametrize("n", [2, 3, 5, 6])
@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0])
def test_mst_weight_is_the_lightest_spanning_tree_over_all_trees(n, alpha):
    d = euclidean_distances(cloud(n, seed=n))
    lightest = min(sum(float(d[i, j]) ** alpha for i, j in prufer_tree(seq, n))
                   for seq in itertools.product(range(n), repeat=n - 2))
    assert mst_weight(d, alpha) == pytest.approx(lightest, rel=1e-12)


def test_mst_weight_is_the_summed_ph0_lifetimes_of_the_rips_filtration():
    from ripser import ripser

    for seed, alpha in [(0, 1.0), (1, 1.0), (2, 0.5), (3, 2.0)]:
        d = euclidean_distances(cloud(40, dim=5, seed=seed))
        bars = ripser(d.numpy(), distance_matrix=True, maxdim=0)["dgms"][0]
        finite = bars[np.isfinite(bars[:, 1])]
        assert len(finite) == 39
        assert mst_weight(d, alpha) == pytest.approx(float(np.sum((finite[:, 1] - finite[:, 0]) ** alpha)), rel=1e-6)
    duplicates = euclidean_distances(torch.cat([cloud(5), cloud(5)]))  # zero-length edges count as zero
    assert mst_weight(duplicates) == pytest.approx(mst_weight(euclidean_distances(cloud(5))), rel=1e-12)


def test_magnitude_of_sets_with_known_value():
    for s, d in [(1.0, 0.3), (38.0, 0.01), (2.0, 5.0)]:
        two = torch.tensor([[0.0, d], [d, 0.0]], dtype=torch.float64)
        expected = 2 / (1 + math.exp(-s * d))
        assert magnitude(two, s) == pytest.approx((expected, expected), rel=1e-12)
    far = euclidean_distances(cloud(7)) * 1e3  # far apart: every point counts once
    assert magnitude(far, 1.0) == pytest.approx((7.0, 7.0), rel=1e-9)
    same = torch.zeros(4, 4, dtype=torch.float64)  # one point four times: a singular Z, the magnitude of one point
    assert magnitude(same, 5.0) == pytest.approx((1.0, 1.0), rel=1e-9)
    # on the real line, Mag(sA) = 1 + Σ_i tanh(s (a_{i+1} − a_i) / 2) (Leinster), and every weight is positive
    for s, line in [(1.0, [0.0, 1.0, 2.0]), (3.0, [0.0, 0.05, 0.4, 0.41, 2.0])]:
        a = torch.tensor(line, dtype=torch.float64)
        expected = 1 + sum(math.tanh(s * (b - c) / 2) for b, c in zip(line[1:], line[:-1]))
        assert magnitude((a[:, None] - a[None, :]).abs(), s) == pytest.approx((expected, expected), rel=1e-10)
    # a weighting with negative entries: PMag counts only the positive ones
    square = torch.tensor([[0.0, 1, 1, 2], [1, 0, 2, 1], [1, 2, 0, 1], [2, 1, 1, 0]], dtype=torch.float64)
    w = torch.linalg.solve(torch.exp(-0.2 * square), torch.ones(4, dtype=torch.float64))
    mag, pmag = magnitude(square, 0.2)
    assert mag == pytest.approx(float(w.sum())) and pmag == pytest.approx(float(w.clamp(min=0).sum()))


def test_count_sketch_keeps_distances_within_its_stated_error():
    dim = 2**14
    g = torch.Generator().manual_seed(0)
    shapes = [(300, 200), (50_000,), (7, 11, 13)]
    points = [[torch.randn(*s, generator=g) * (1 + k) for s in shapes] for k in range(12)]
    sketch = CountSketch(sum(math.prod(s) for s in shapes), dim, seed=3)
    flat = torch.stack([torch.cat([t.reshape(-1) for t in p]) for p in points])
    sketched = torch.stack([sketch(p) for p in points])
    assert sketched.shape == (12, dim) and sketched.dtype == torch.float32
    # linear in its input, and the sketch of the pieces is that of their concatenation
    assert torch.allclose(sketch([a - b for a, b in zip(points[0], points[1])]), sketched[0] - sketched[1], atol=1e-3)
    exact, approx = euclidean_distances(flat), euclidean_distances(sketched)
    off = ~torch.eye(12, dtype=torch.bool)
    relative = (approx[off] / exact[off] - 1).abs()
    bound = math.sqrt(2 / dim)  # the std of the squared distance's relative error; the distance's is half of it
    assert float(relative.max()) < 2 * bound and float(relative.mean()) < bound / 2
    assert float(relative.max()) > 1e-4  # a sketch, not a copy: the error is there, and small
    other = CountSketch(len(flat[0]), dim, seed=4)
    assert not torch.equal(other([flat[0]]), sketched[0])  # the seed picks buckets and signs
    with pytest.raises(ValueError, match="made for"):
        sketch([flat[0][:-1]])


def test_loss_distance_is_the_mean_absolute_loss_difference():
    losses = torch.rand(5, 9, generator=torch.Generator().manual_seed(1))
    d = loss_distances(losses)
    for i, j in itertools.product(range(5), repeat=2):
        assert float(d[i, j]) == pytest.approx(sum(abs(float(losses[i, k] - losses[j, k])) for k in range(9)) / 9)


class Recorder(Callback):
    """Independent record of the run: every weight and Σ η‖g‖² from the full concatenated gradient."""

    def __init__(self):
        self.weights, self.sum_lr_gradnorm2 = {}, 0.0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = torch.cat([p.grad.reshape(-1) for p in pl_module.model.parameters()])
        self.sum_lr_gradnorm2 += optimizer.param_groups[0]["lr"] * float(grads.double().square().sum())

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.weights[trainer.global_step] = [p.detach().clone() for p in pl_module.model.parameters()]


def fit(tmp_path, callbacks, max_steps, ckpt_path=None):
    L.seed_everything(0)
    model, data = tiny_model(), DigitsDataModule(batch_size=32, val_size=64)
    trainer = L.Trainer(max_steps=max_steps, val_check_interval=max_steps, check_val_every_n_epoch=None,
                        logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                        num_sanity_val_steps=0, limit_val_batches=1, default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return trainer, model, data


def test_callback_logs_the_statistics_of_the_stored_iterates(tmp_path):
    stats, recorder = TrajectoryStatistics(every_n_steps=2, window=8, num_items=16), Recorder()
    trainer, model, data = fit(tmp_path, [stats, recorder], max_steps=10)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert list(stats.steps) == [4, 6, 8, 10] and logged["topo/num_iterates"] == 4
    # ρ_S from the recorded weights, each put back into the model and scored on the seeded items' fixed draws
    g = torch.Generator().manual_seed(0)  # the seeded subsets: training items, then held-out ones
    x0 = data.to_unit(data.train_data[torch.randperm(len(data.train_data), generator=g)[:16]])
    held = data.to_unit(data.val_data[torch.randperm(len(data.val_data), generator=g)[:16]])
    n = len(data.train_data)
    scorer = copy.deepcopy(model).eval()
    losses = []
    for step in stats.steps:
        for p, w in zip(scorer.model.parameters(), recorder.weights[step]):
            p.data.copy_(w)
        with torch.no_grad():
            losses.append(scorer.diffusion.fixed_loss(scorer.model, x0, 0, list(range(16))))
    rho = loss_distances(torch.stack(losses))
    assert logged["topo/E_alpha_rhoS"] == pytest.approx(mst_weight(rho), rel=1e-5)
    assert (logged["topo/mag_rhoS"], logged["topo/pmag_rhoS"]) == pytest.approx(magnitude(rho, math.sqrt(n)),
                                                                                rel=1e-4)
    # the Euclidean statistics from the exact weight distances, within the sketch's error
    flat = torch.stack([torch.cat([w.reshape(-1) for w in recorder.weights[s]]) for s in stats.steps])
    exact = euclidean_distances(flat)
    assert logged["topo/E_alpha_euclid"] == pytest.approx(mst_weight(exact), rel=3 * math.sqrt(2 / 2**14))
    assert logged["topo/mag_euclid"] == pytest.approx(magnitude(exact, math.sqrt(n))[0], rel=0.05)
    assert 1 <= logged["topo/pmag_euclid"] <= 4 and logged["topo/E_alpha_euclid"] > 0
    assert logged["opt/sum_lr_gradnorm2"] == pytest.approx(recorder.sum_lr_gradnorm2, rel=1e-6)
    assert logged["opt/sum_lr_gradnorm2"] > 0
    # the gap on the seeded training and held-out items with the final weights
    model.eval()
    with torch.no_grad():
        for name, items in (("train/dsm", x0), ("val/dsm", held)):
            loss = float(model.diffusion.fixed_loss(model.model, items, 0, list(range(16))).mean())
            assert logged[name] == pytest.approx(loss, rel=1e-5), name
    assert logged["gap/dsm"] == pytest.approx(logged["val/dsm"] - logged["train/dsm"], abs=1e-6)
    assert logged["hparams/batch_size"] == 32 and logged["hparams/lr"] == pytest.approx(
        trainer.optimizers[0].param_groups[0]["lr"])


def test_resumed_run_logs_what_an_uninterrupted_one_does(tmp_path):
    whole, _, _ = fit(tmp_path / "whole", [TrajectoryStatistics(every_n_steps=2, window=8, num_items=16)], 10)
    first, _, _ = fit(tmp_path / "first", [TrajectoryStatistics(every_n_steps=2, window=8, num_items=16)], 6)
    first.save_checkpoint(tmp_path / "six.ckpt")
    resumed, _, _ = fit(tmp_path / "resumed", [TrajectoryStatistics(every_n_steps=2, window=8, num_items=16)], 10,
                        ckpt_path=tmp_path / "six.ckpt")
    keys = [k for k in whole.callback_metrics if k.split("/")[0] in ("topo", "opt", "gap")]
    assert len(keys) == 9
    for key in keys:
        assert float(resumed.callback_metrics[key]) == pytest.approx(float(whole.callback_metrics[key]), rel=1e-6), key


def test_bad_settings_get_one_clear_line(tmp_path):
    for kwargs in [{"every_n_steps": 0}, {"window": 5, "every_n_steps": 3}, {"sketch_dim": 0}, {"num_items": 0}]:
        with pytest.raises(ConfigError, match="TrajectoryStatistics needs"):
            TrajectoryStatistics(**kwargs)
    with pytest.raises(ConfigError, match="scale must be > 0"):
        TrajectoryStatistics(scale=-1.0)
    with pytest.raises(ConfigError, match="num_items=100 exceeds the training split"):
        fit(tmp_path, [TrajectoryStatistics(num_items=100)], 2)
