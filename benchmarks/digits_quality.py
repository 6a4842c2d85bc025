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


def digits_scores(images: np.ndarray, val_size: int = 500, seed: int = 0) -> dict:
    """The scores above for uint8 samples (N, 8, 8, 1) as ``sample.py`` writes them: confidence of samples and of
    held-out digits, class shares, precision and recall of samples and of the real reference, near-copies, n."""
    samples = torch.from_numpy(np.round(images.astype(np.float64).reshape(-1, 64) * 16 / 255))
    x_train, y_train, x_held, _ = split_with_labels(val_size, seed)
    n = min(len(samples), len(x_held))
    samples, x_held = samples[:n], x_held[:n]
    svc = SVC(probability=True, random_state=0).fit(x_train.numpy(), y_train.numpy())
    reference = x_train[torch.randperm(len(x_train), generator=torch.Generator().manual_seed(1))[:n]]
    p_fake, r_fake = knn_precision_recall(x_held, samples)
    p_ref, r_ref = knn_precision_recall(x_held, reference)
    return {"n": n, "conf": svc.predict_proba(samples.numpy()).max(1).mean(),
            "conf_real": svc.predict_proba(x_held.numpy()).max(1).mean(),
            "shares": np.bincount(svc.predict(samples.numpy()), minlength=10) / n, "precision": p_fake,
            "precision_real": p_ref, "recall": r_fake, "recall_real": r_ref,
            "copies": int(near_copies(samples, x_train).sum())}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", required=True, help=".npz written by sample.py (uint8, NHWC)")
    p.add_argument("--val_size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    s = digits_scores(np.load(args.samples)["arr_0"], args.val_size, args.seed)
    n, shares = s["n"], s["shares"]
    print(f"samples: {n} from {args.samples}; held-out real digits: {n}")
    print(f"SVC confidence: samples {s['conf']:.4f}, held-out {s['conf_real']:.4f}, ratio "
          f"{s['conf'] / s['conf_real']:.3f}")
    print(f"class shares: min {shares.min():.3f}; " + " ".join(f"{c}:{v:.3f}" for c, v in enumerate(shares)))
    print(f"precision: samples {s['precision']:.3f}, real reference {s['precision_real']:.3f}, ratio "
          f"{s['precision'] / s['precision_real']:.3f}")
    print(f"recall:    samples {s['recall']:.3f}, real reference {s['recall_real']:.3f}, ratio "
          f"{s['recall'] / s['recall_real']:.3f}")
    print(f"near-copies of a training digit: {s['copies']} of {n} ({s['copies'] / n:.1%})")


if __name__ == "__main__":
    main()
