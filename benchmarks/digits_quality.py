"""Sample quality of a digits model against the held-out digits.

    python -m benchmarks.digits_quality --samples samples/digits/samples_500x8x8x1.npz

Prints, for N samples against N held-out real digits (the DigitsDataModule split, seed 0):
- SVC confidence: mean max-probability of an RBF SVC trained on the real training split, on the samples
  and on the held-out digits, and their ratio;
- class shares of the samples under that classifier (smallest and all);
- k-NN precision and recall (k = 3, pixel space) of the samples against the held-out digits, and the
  same for N real training digits as a reference, with the ratios;
- near-copies: samples whose nearest training digit is closer than 1/3 the distance to the second.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.svm import SVC

from ddpm_signrelu.data import DigitsDataModule
from ddpm_signrelu.metrics import knn_precision_recall, near_copies


def split_with_labels(val_size: int, seed: int):
    """The DigitsDataModule split (same permutation), as 0..16 levels with labels."""
    digits = load_digits()
    x, y = torch.from_numpy(digits.data).double(), torch.from_numpy(digits.target)
    dm = DigitsDataModule(val_size=val_size, seed=seed)
    dm.setup()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    held, train = perm[:val_size], perm[val_size:]
    assert torch.equal(x[held].to(dm.storage_dtype).view(-1, 1, 8, 8), dm.val_data)
    return x[train], y[train], x[held], y[held]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", required=True, help=".npz written by sample.py (uint8, NHWC)")
    p.add_argument("--val_size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    samples = np.load(args.samples)["arr_0"].astype(np.float64).reshape(-1, 64) * 16 / 255
    samples = torch.from_numpy(np.round(samples))
    x_train, y_train, x_held, _ = split_with_labels(args.val_size, args.seed)
    n = min(len(samples), len(x_held))
    samples, x_held = samples[:n], x_held[:n]

    svc = SVC(probability=True, random_state=0).fit(x_train.numpy(), y_train.numpy())
    conf_fake = svc.predict_proba(samples.numpy()).max(1).mean()
    conf_real = svc.predict_proba(x_held.numpy()).max(1).mean()
    shares = np.bincount(svc.predict(samples.numpy()), minlength=10) / n
    reference = x_train[torch.randperm(len(x_train), generator=torch.Generator().manual_seed(1))[:n]]
    p_fake, r_fake = knn_precision_recall(x_held, samples)
    p_ref, r_ref = knn_precision_recall(x_held, reference)
    copies = int(near_copies(samples, x_train).sum())

    print(f"samples: {n} from {args.samples}; held-out real digits: {n}")
    print(f"SVC confidence: samples {conf_fake:.4f}, held-out {conf_real:.4f}, ratio {conf_fake / conf_real:.3f}")
    print(f"class shares: min {shares.min():.3f}; " + " ".join(f"{c}:{s:.3f}" for c, s in enumerate(shares)))
    print(f"precision: samples {p_fake:.3f}, real reference {p_ref:.3f}, ratio {p_fake / p_ref:.3f}")
    print(f"recall:    samples {r_fake:.3f}, real reference {r_ref:.3f}, ratio {r_fake / r_ref:.3f}")
    print(f"near-copies of a training digit: {copies} of {n} ({copies / n:.1%})")


if __name__ == "__main__":
    main()
