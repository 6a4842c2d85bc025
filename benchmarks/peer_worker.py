"""Fit one established tabular generator on a training CSV and write its synthetic sets: the peers of
``benchmarks.tabular_quality``. Runs in the peers' own environment (``benchmarks/requirements-peers.txt``: synthcity
pins torch < 2.3), so it imports neither ddpm_signrelu nor anything of the repository.

    python benchmarks/peer_worker.py --model tabddpm --train train.csv --categorical SEX ... --target y \\
        --rows 21000 --seeds 5 --out folder

Models, each with its package's documented defaults except where named:

- ``tabddpm``: TabDDPM (Kotelnikov et al., 2023) as synthcity's ``ddpm`` plugin: multinomial diffusion on the
  categories, Gaussian diffusion on quantile-transformed numbers, an MLP, conditioned on the target; ``--iterations``
  its ``n_iter`` (epochs). Categories go in as class indices; the threshold of 10 distinct values under which its
  encoder and its diffusion take a column as discrete is raised to the largest category count, so that it diffuses
  the same columns as categories as the other models (at 10, the 11-label repayment statuses were diffused as
  unscaled Gaussian numbers and nearly every generated row fell outside the training ranges and was redrawn);
- ``ctgan``, ``tvae``: CTGAN and TVAE (Xu et al., 2019) from the ``ctgan`` package; ``--iterations`` their epochs.

Categorical columns are passed as text (every package then treats them as discrete), numbers as numbers. Writes
``samples_<seed>.csv`` for seeds 0 .. ``--seeds`` − 1 and ``fit.json`` (fit seconds, versions, settings).
"""

import argparse
import json
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def fit(model: str, frame: pd.DataFrame, categorical: list[str], target: str, iterations: int | None, seed: int):
    """The fitted generator and a function ``generate(rows, seed) -> DataFrame``."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    options = {} if iterations is None else {"n_iter" if model == "tabddpm" else "epochs": iterations}
    if model == "tabddpm":
        from functools import partial

        import synthcity.plugins.core.models.tabular_ddpm as tabular_ddpm
        from synthcity.plugins import Plugins
        from synthcity.plugins.core.dataloader import GenericDataLoader
        from synthcity.utils.dataframe import discrete_columns

        labels = {c: sorted(frame[c].unique()) for c in categorical}  # class indices 0..K-1, as TabDDPM takes them
        codes = frame.assign(**{c: frame[c].map({v: k for k, v in enumerate(labels[c])}) for c in categorical})
        plugin = Plugins().get("ddpm", is_classification=True, random_state=seed, **options)
        limit = max(len(v) for v in labels.values())  # the same columns discrete as ours
        plugin.encoder.categorical_limit = limit
        tabular_ddpm.discrete_columns = partial(discrete_columns, max_classes=limit)
        plugin.fit(GenericDataLoader(codes, target_column=target))

        def generate(rows, s):
            out = plugin.generate(count=rows, random_state=s).dataframe()
            return out.assign(**{c: out[c].round().astype(int).map(dict(enumerate(labels[c]))) for c in categorical})

        return generate
    from ctgan import CTGAN, TVAE

    generator = (CTGAN if model == "ctgan" else TVAE)(**options)
    generator.set_random_state(seed)
    generator.fit(frame, discrete_columns=categorical)

    def generate(rows, s):
        generator.set_random_state(s)
        return generator.sample(rows)

    return generate


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, choices=["tabddpm", "ctgan", "tvae"])
    p.add_argument("--train", required=True, help="the training rows, a CSV with a header")
    p.add_argument("--categorical", nargs="+", required=True, help="the categorical columns (the target included)")
    p.add_argument("--target", required=True)
    p.add_argument("--rows", type=int, required=True, help="rows per synthetic set")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--iterations", type=int, help="epochs (TabDDPM: n_iter); default: the package's own")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.read_csv(args.train, dtype={c: str for c in args.categorical}, keep_default_na=False)
    start = time.perf_counter()
    generate = fit(args.model, frame, args.categorical, args.target, args.iterations, seed=0)
    seconds = time.perf_counter() - start
    for seed in range(args.seeds):
        rows = generate(args.rows, seed)[list(frame.columns)]
        rows.to_csv(out / f"samples_{seed}.csv", index=False)
    package = "synthcity" if args.model == "tabddpm" else "ctgan"
    (out / "fit.json").write_text(json.dumps({"model": args.model, "fit_seconds": seconds, "iterations": args.iterations,
                                              "package": f"{package} {version(package)}", "torch": torch.__version__,
                                              "threads": args.threads}))
    print(json.dumps({"model": args.model, "fit_seconds": round(seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
