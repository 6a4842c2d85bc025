"""Credit Default synthesis: ML-efficacy, fidelity and privacy of the generated tables, early stopping against
shorter and 5x longer training, SignReLU + ratio head against SiLU + epsilon head, one-hot against ordinal categories.

    python -m benchmarks.tabular_quality                     # trains what is missing, scores, writes the report
    python -m benchmarks.tabular_quality --max_minutes 60    # a piece: starts no training or scoring after 60 min
    python -m benchmarks.tabular_quality --report            # docs/credit_default.md from the rows so far

Models (``configs/credit_default.yaml`` and one change each; every run in ``--out/<model>``, resumed where a piece
stopped):

- ``ours``: the config as shipped, the checkpoint of the best held-out bound (``best.ckpt``: hold-out early stopping);
- ``ours_long``: the same training, no early stopping, for 5x the steps at which ``ours`` had its best bound
  (``last.ckpt``);
- ``ours_0.3x``, ``ours_1.5x``: the same, for 0.3x and 1.5x the config's ``max_steps`` (whole validation intervals):
  with ``ours`` and ``ours_long``, the scores along the training;
- ``silu_eps``: with ``configs/silu_eps.yaml`` (SiLU, plain epsilon head, epsilon loss), early-stopped the same way;
- ``silu_eps_x0``: the same under the config's own loss, the x0 regression;
- ``ours_eps``: the config under the epsilon loss (L_simple): with the two above, the loss apart from the network;
- ``ours_ordinal``: categories as ordinal integer columns instead of one-hot blocks;
- ``ours_8_atoms``: the ratio head with 8 atoms instead of 16 (a fifth off the training step: ``tabular_step``);
- ``ours_multinomial``: the one-hot blocks (categories, relation states) diffused as categories (multinomial diffusion,
  TabDDPM's loss), the config's ``max_steps`` in full (``benchmarks/multinomial.py``);
- peers, fitted on the same training rows by ``benchmarks/peer_worker.py`` in their own environment
  (``--peers_python``; ``benchmarks/requirements-peers.txt``): ``tabddpm`` (synthcity's TabDDPM), ``ctgan``, ``tvae``
  (the ``ctgan`` package), each with its package's defaults (``PEERS`` can set their epochs: TabDDPM 1,000, CTGAN
  and TVAE 300 by default); their rows are read back through the table's column spec, whole-number columns rounded as
  our decoder rounds them.

Scores, each on ``--seeds`` sets of as many synthetic rows as real training rows (``ddim``, ``--steps`` steps), and for
``real`` on the real training rows themselves (the reference):

- ML-efficacy (TabDDPM's protocol): CatBoost, its hyper-parameters tuned once on the real training rows (a small grid,
  scored on the real validation rows), fitted on the rows scored and tested on the real test rows: macro F1 and
  ROC-AUC of the target; ``real`` repeats the fit with each seed;
- SDMetrics' quality report against the real test rows (a third-party evaluator): column shapes, column pair trends
  and their mean, the overall score;
- fidelity against the real test rows: the mean Kolmogorov-Smirnov distance of the numerical columns, the mean total
  variation distance of the categorical ones, the mean absolute difference of the association matrices (Pearson
  between numbers, Cramér's V between categories, the correlation ratio between the two), and the ROC-AUC of a
  CatBoost discriminator telling real test rows from as many scored rows (0.5: indistinguishable);
- privacy: each row's distance to the closest real training record (DCR; in the codec's space: normal scores and
  one-hot blocks), the median over the scored rows against the median over the real test rows, and the share of
  scored rows closer to the training rows than to the test rows (about 0.5 for rows drawn afresh from the population).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from benchmarks.common import read_rows, relocate_run, run_or_report, write_block
from ddpm_signrelu.checkpoints import load_model, read_checkpoint, table_codec
from ddpm_signrelu.cli import build_run
from ddpm_signrelu.data.table import Table, TableCodec, parse_table, read_csv, stratified, take, write_csv
from ddpm_signrelu.runs import checkpoint_step

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "credit_default.yaml"
SILU_EPS = ["--config", str(ROOT / "configs" / "silu_eps.yaml")]
MODELS = {"ours": [], "silu_eps": SILU_EPS, "ours_ordinal": ["--data.init_args.encoding", "ordinal"],
          "silu_eps_x0": [*SILU_EPS, "--model.loss", "x0_mse"], "ours_eps": ["--model.loss", "eps_mse"],
          "ours_0.3x": [], "ours_1.5x": [], "ours_long": [],
          "ours_plain_codec": ["--data.init_args.relation_share", "null", "--data.init_args.sequences", "null"],
          "ours_pay_seq": ["--data.init_args.sequences", json.dumps([[f"{a}{i}" for i in range(1, 7)]
                                                                    for a in ("BILL_AMT", "PAY_AMT")])],
          "ours_8_atoms": ["--model.head", json.dumps({"name": "ratio_atoms", "num_atoms": 8, "parameterization": "v"})]}
# that model's rows drawn 1.5x over, the target in its training share
STRATIFIED = {"ours_stratified": "ours", "ours_8_atoms_stratified": "ours_8_atoms",
              "ours_long_stratified": "ours_long"}
FRACTIONS = {"ours_0.3x": 0.3, "ours_1.5x": 1.5}  # of the config's max_steps
MULTINOMIAL = "ours_multinomial"  # the categories diffused as categories: benchmarks/multinomial.py
PEERS = {"tabddpm": None, "ctgan": None, "tvae": None}  # epochs (None: the package's default); see the module docstring
REPORT_ORDER = ["real", "ours_0.3x", "ours", "ours_stratified", "ours_8_atoms_stratified", "ours_1.5x", "ours_long",
                "ours_long_stratified", "ours_eps", "silu_eps", "silu_eps_x0", "ours_ordinal", MULTINOMIAL,
                "ours_plain_codec", "ours_pay_seq", "ours_8_atoms", *PEERS]
GRID = [{"depth": d, "learning_rate": lr} for d in (4, 6, 8) for lr in (0.03, 0.1)]


def marker(kind: str, out: str) -> str:
    """The marker in docs/credit_default.md before a results block of ``kind`` (this module's or the diagnosis's) for
    the study in the folder ``out``: the shipped study's (``.../credit_default``), or another named by its folder."""
    name = Path(out).name
    return f"<!-- {kind}{'' if name == 'credit_default' else ' ' + name} results: written by the benchmark -->"


def train(name: str, args, deadline: float, dm=None) -> Path | None:
    """Train ``name`` in ``--out/<name>`` (resuming a stopped piece) and return the checkpoint to score; None when the
    deadline passed first. ``dm``: :func:`real_data`'s module, which a peer is fitted on."""
    folder = Path(args.out) / name
    done = folder / "done.json"
    if done.is_file():
        return Path(json.loads(done.read_text())["checkpoint"])
    if time.perf_counter() > deadline:
        return None
    if name in PEERS:
        return train_peer(name, folder, args, dm)
    if name in STRATIFIED:
        return train(STRATIFIED[name], args, deadline, dm)
    config = relocate_run(yaml.safe_load(CONFIG.read_text()), folder, wandb=False, csv=True)
    config["data"]["init_args"]["root"] = args.data_root
    config["trainer"]["enable_progress_bar"] = False
    if args.quick:
        quick(config)
    fixed = name == "ours_long" or name in FRACTIONS  # a set number of steps, no hold-out rule, last.ckpt scored
    if fixed:
        config["trainer"]["max_steps"] = fixed_steps(name, config["trainer"], args, deadline)
        if config["trainer"]["max_steps"] is None:
            return None
        config["trainer"]["callbacks"] = [c for c in config["trainer"]["callbacks"]
                                          if not c["class_path"].endswith("EarlyStopping")]
        for c in config["trainer"]["callbacks"]:  # unmonitored: last.ckpt follows every check, not only a better
            if c["class_path"].endswith("ModelCheckpoint"):  # bound (the run's end, and where a piece resumes)
                c["init_args"]["monitor"] = None
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.yaml").write_text(yaml.safe_dump(config))
    if name == MULTINOMIAL:
        return fit_external(name, folder, [sys.executable, "-m", "benchmarks.multinomial", "--config",
                                           str(folder / "run.yaml"), "--out", str(folder), "--rows",
                                           str(len(dm.train_data)), "--seeds", str(args.seeds), "--steps",
                                           str(args.steps)])
    resume = ["--ckpt_path", "last"] if list((folder / "checkpoints").glob("last*.ckpt")) else []
    limit = []  # a fixed run goes in pieces: it stops at the deadline and resumes from last.ckpt on the next call
    if fixed and args.max_minutes is not None:
        piece = max(600, deadline - time.perf_counter())
        limit = ["--trainer.max_time", json.dumps({"seconds": int(trained_seconds(folder / "checkpoints") + piece)})]
    command = [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(folder / "run.yaml"), *MODELS[name],
               "--trainer.default_root_dir", str(folder), *resume, *limit]
    print(f"{name}: training in {folder}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    seconds = {} if resume else {"train_seconds": time.perf_counter() - start}  # a run trained in one piece
    last = folder / "checkpoints" / "last.ckpt"
    if fixed and checkpoint_step(last) < config["trainer"]["max_steps"]:
        return None
    checkpoint = last if fixed else folder / "checkpoints" / "best.ckpt"
    done.write_text(json.dumps({"checkpoint": str(checkpoint), "best_step": checkpoint_step(checkpoint),
                                "last_step": checkpoint_step(last), **seconds}))
    return checkpoint


def train_peer(name: str, folder: Path, args, dm) -> Path:
    """Fit the peer ``name`` on the real training rows (``--out/split/train.csv``) with ``benchmarks/peer_worker.py``
    under ``--peers_python``; its synthetic sets are ``folder/samples_<seed>.csv``. Returns ``folder``."""
    if not Path(args.peers_python).is_file():
        sys.exit(f"{name}: the peers' environment {args.peers_python} is missing; create it (python3.11 -m venv "
                 f"benchmarks/.peers && benchmarks/.peers/bin/pip install -r benchmarks/requirements-peers.txt), pass "
                 f"--peers_python, or leave the peers out of --models")
    train_csv = Path(args.out) / "split" / "train.csv"
    if not train_csv.is_file():
        train_csv.parent.mkdir(parents=True, exist_ok=True)
        write_csv(dm.tables()["train"], train_csv, dm.codec.columns)
    categorical = [c.name for c in dm.codec.columns if c.kind == "categorical"]
    iterations = 2 if args.quick else PEERS[name]
    command = [args.peers_python, str(ROOT / "benchmarks" / "peer_worker.py"), "--model", name, "--train",
               str(train_csv), "--categorical", *categorical, "--target", dm.target, "--rows", str(len(dm.train_data)),
               "--seeds", str(args.seeds), "--out", str(folder), *(["--iterations", str(iterations)] * bool(iterations))]
    return fit_external(name, folder, command)


def fit_external(name: str, folder: Path, command: list[str]) -> Path:
    """Run ``command``, which fits ``name`` and writes its synthetic sets ``folder/samples_<seed>.csv`` and
    ``folder/fit.json`` (fit seconds); returns ``folder``."""
    print(f"{name}: fitting in {folder}", flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    seconds = json.loads((folder / "fit.json").read_text())["fit_seconds"]
    (folder / "done.json").write_text(json.dumps({"checkpoint": str(folder), "train_seconds": seconds}))
    return folder


def peer_rows(folder: Path, seed: int, codec: TableCodec) -> Table:
    """A peer's synthetic set ``seed``, read through the table's column spec (labels checked), whole-number columns
    rounded."""
    path = folder / f"samples_{seed}.csv"
    numerical = [c.name for c in codec.columns if c.kind == "numerical"]
    table = parse_table(path, *read_csv(path), numerical, {c.name: c.categories for c in codec.columns
                                                           if c.kind == "categorical"})
    integer = {c.name for c in codec.columns if c.integer}
    return {name: np.round(values) if name in integer else values for name, values in table.items()}


def trained_seconds(folder: Path) -> float:
    """The training seconds a resumed run starts from: Lightning's Timer restores them from the checkpoint and holds
    ``max_time`` against the whole run, not the piece. The most any checkpoint in ``folder`` holds (0 for none)."""
    timers = [read_checkpoint(path).get("callbacks", {}).get("Timer") for path in folder.glob("*.ckpt")]
    return max([0.0] + [timer["time_elapsed"]["train"] for timer in timers if timer])


def fixed_steps(name: str, trainer: dict, args, deadline: float) -> int | None:
    """The steps of a fixed run: for ``ours_long`` 5x the step of ``ours``' best bound (None while ``ours`` is not
    trained by the deadline); otherwise ``FRACTIONS[name]`` of the config's ``max_steps``, in whole validation
    intervals (at least one)."""
    if name == "ours_long":
        best = train("ours", args, deadline)
        return None if best is None else 5 * checkpoint_step(best)
    interval = trainer["val_check_interval"]
    return interval * max(1, round(FRACTIONS[name] * trainer["max_steps"] / interval))


def quick(config: dict) -> None:
    """A config shrunk to seconds: a small network, T = 100, 60 steps, small evaluations."""
    config["model"].update({"network": {**config["model"]["network"], "width": 32, "depth": 1}, "num_timesteps": 100,
                            "bound_strata": 3})
    config["data"]["init_args"].update({"batch_size": 64, "val_size": 300, "test_size": 300})
    config["trainer"].update({"max_steps": 60, "val_check_interval": 20, "limit_val_batches": 1})
    for cb in config["trainer"]["callbacks"]:
        if cb["class_path"].endswith("RiskMetrics"):
            cb["init_args"].update({"num_items": 16, "num_strata": 3})
        if cb["class_path"].endswith("EarlyStopping"):
            cb["init_args"]["patience"] = 1


def real_data(args):
    """The data module of the shipped config (the same split and codec as every model's)."""
    options = ["--data.init_args.val_size", "300", "--data.init_args.test_size", "300"] if args.quick else []
    dm = build_run("--config", str(CONFIG), "--trainer.logger", "false", "--data.init_args.root", args.data_root,
                   *options).datamodule
    dm.setup("fit")
    return dm


def synthesize(checkpoint: Path, count: int, seed: int, args, codec: TableCodec | None = None,
               stratify: str | None = None) -> Table:
    """``count`` rows of the checkpoint's model (sample seeds ``seed * count`` onwards), decoded by its own codec; with
    ``stratify`` (a categorical column) 1.5x as many drawn, as ``sample.py --stratify`` does; for a peer
    (``checkpoint``: its folder), its set ``seed`` read through ``codec``."""
    if checkpoint.is_dir():
        return peer_rows(checkpoint, seed, codec)
    drawn = count if stratify is None else math.ceil(1.5 * count)
    model, seeds, own = load_model(checkpoint), range(seed * drawn, (seed + 1) * drawn), table_codec(checkpoint)
    with torch.no_grad():
        x = torch.cat([model.generate(seeds[i:i + 3000], sampler="ddim", steps=args.steps)
                       for i in range(0, drawn, 3000)])
    return own.decode(x) if stratify is None else stratified(own.decode(x), own.column(stratify), count)


def features(table: Table, codec: TableCodec, target: str | None, names: list[str] | None = None):
    """(X, y, categorical feature indices) for CatBoost: every column but ``target``, or the columns ``names`` (y: the
    target's labels as integers; None without a target), categories as their labels."""
    import pandas as pd

    columns = [c for c in codec.columns if c.name != target and (names is None or c.name in names)]
    cat = [i for i, c in enumerate(columns) if c.kind == "categorical"]
    y = table[target].astype(int) if target else None
    return pd.DataFrame({c.name: table[c.name] for c in columns}), y, cat


def catboost(params: dict, seed: int, iterations: int):
    from catboost import CatBoostClassifier

    return CatBoostClassifier(iterations=iterations, random_seed=seed, verbose=False, thread_count=2,
                              allow_writing_files=False, **params)


def tune(tables: dict[str, Table], codec: TableCodec, target: str, args) -> dict:
    """CatBoost's parameters: the grid point with the best ROC-AUC on the real validation rows, fitted on the real
    training rows."""
    from sklearn.metrics import roc_auc_score

    x, y, cat = features(tables["train"], codec, target)
    xv, yv, _ = features(tables["val"], codec, target)
    scores = [(roc_auc_score(yv, catboost(p, 0, args.iterations).fit(x, y, cat_features=cat).predict_proba(xv)[:, 1]),
               p) for p in GRID]
    return max(scores, key=lambda s: s[0])[1]


def efficacy(table: Table, test: Table, codec: TableCodec, target: str, params: dict, seed: int, args) -> dict:
    from sklearn.metrics import f1_score, roc_auc_score

    x, y, cat = features(table, codec, target)
    xt, yt, _ = features(test, codec, target)
    if len(np.unique(y)) < 2:
        return {"f1": float("nan"), "roc_auc": float("nan")}
    model = catboost(params, seed, args.iterations).fit(x, y, cat_features=cat)
    return {"f1": float(f1_score(yt, model.predict(xt).astype(int), average="macro")),
            "roc_auc": float(roc_auc_score(yt, model.predict_proba(xt)[:, 1]))}


def fidelity(table: Table, test: Table, codec: TableCodec, params: dict, seed: int, args) -> dict:
    """Marginal distances, association difference and the discriminator's ROC-AUC against the real test rows."""
    from scipy.stats import ks_2samp

    ks, tv = [], []
    for c in codec.columns:
        if c.kind == "numerical":
            ks.append(ks_2samp(table[c.name], test[c.name]).statistic)
        else:
            p, q = (np.array([(t[c.name] == k).mean() for k in c.categories]) for t in (table, test))
            tv.append(0.5 * np.abs(p - q).sum())
    difference = np.abs(associations(table, codec) - associations(test, codec))
    off_diagonal = difference[~np.eye(len(difference), dtype=bool)]
    return {"ks": float(np.mean(ks)), "tv": float(np.mean(tv)), "association": float(off_diagonal.mean()),
            "discriminator_auc": discriminator_auc(table, test, codec, params, seed, args.iterations),
            **sdmetrics_quality(table, test, codec)}


def sdmetrics_quality(table: Table, test: Table, codec: TableCodec) -> dict:
    """SDMetrics' single-table quality report of ``table`` against the real test rows: ``sdm_shapes`` (column
    shapes: 1 − KS per number, 1 − TV per category), ``sdm_trends`` (column pair trends: correlation and contingency
    similarity) and ``sdm_score``, their mean; 1 is best."""
    import pandas as pd
    from sdmetrics.reports import QualityReport

    metadata = {"tables": {"table": {"columns": {c.name: {"sdtype": c.kind} for c in codec.columns}}}}
    report = QualityReport()
    report.generate({"table": pd.DataFrame(test)}, {"table": pd.DataFrame(table)}, metadata, verbose=False)
    scores = dict(zip(*report.get_properties().to_dict("list").values()))
    return {"sdm_shapes": float(scores["Column Shapes"]), "sdm_trends": float(scores["Column Pair Trends"]),
            "sdm_score": float(report.get_score())}


def discriminator_auc(table: Table, test: Table, codec: TableCodec, params: dict, seed: int, iterations: int,
                      names: list[str] | None = None) -> float:
    """ROC-AUC of a CatBoost classifier telling the real test rows from as many rows of ``table`` on the columns
    ``names`` (default: all), fitted on a random half of both and scored on the other half (0.5: indistinguishable)."""
    from sklearn.metrics import roc_auc_score

    g = np.random.default_rng(seed)
    rows = g.choice(len(next(iter(table.values()))), len(next(iter(test.values()))), replace=False)
    both = {k: np.concatenate([table[k][rows], test[k]]) for k in test}
    label = np.r_[np.zeros(len(rows)), np.ones(len(rows))]
    order = g.permutation(len(label))
    fit, held = order[:len(order) // 2], order[len(order) // 2:]
    x, _, cat = features(both, codec, target=None, names=names)
    model = catboost(params, seed, iterations).fit(x.iloc[fit], label[fit], cat_features=cat)
    return float(roc_auc_score(label[held], model.predict_proba(x.iloc[held])[:, 1]))


def associations(table: Table, codec: TableCodec) -> np.ndarray:
    """The (columns, columns) association matrix: |Pearson| between numbers, Cramér's V between categories, the
    correlation ratio between a number and a category; all in [0, 1]."""
    cols = codec.columns
    m = np.eye(len(cols))
    for i, a in enumerate(cols):
        for j in range(i + 1, len(cols)):
            b = cols[j]
            x, y = table[a.name], table[b.name]
            if a.kind == b.kind == "numerical":
                v = abs(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else 0.0
            elif a.kind == b.kind == "categorical":
                v = cramers_v(x, y)
            else:
                v = correlation_ratio(*((y, x) if a.kind == "numerical" else (x, y)))
            m[i, j] = m[j, i] = v
    return m


def cramers_v(x: np.ndarray, y: np.ndarray) -> float:
    _, xi = np.unique(x, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    counts = np.zeros((xi.max() + 1, yi.max() + 1))
    np.add.at(counts, (xi, yi), 1)
    expected = counts.sum(1, keepdims=True) * counts.sum(0, keepdims=True) / counts.sum()
    chi2 = ((counts - expected) ** 2 / np.where(expected > 0, expected, 1)).sum()
    k = min(counts.shape) - 1
    return float(np.sqrt(chi2 / counts.sum() / k)) if k > 0 else 0.0


def correlation_ratio(categories: np.ndarray, values: np.ndarray) -> float:
    """η: the share of the numbers' standard deviation explained by the category means."""
    total = ((values - values.mean()) ** 2).sum()
    if total == 0:
        return 0.0
    _, index = np.unique(categories, return_inverse=True)
    means = np.bincount(index, values) / np.bincount(index)
    return float(np.sqrt(((means[index] - values.mean()) ** 2).sum() / total))


def nearest(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Each row's distance to its closest row of ``reference``."""
    return torch.cat([torch.cdist(chunk, reference).min(1).values for chunk in x.split(1000)])


def privacy(table: Table, codec: TableCodec, train: torch.Tensor, test: torch.Tensor, seed: int) -> dict:
    """Distances to the closest training record, in the codec's space (``train``, ``test``: the encoded real rows),
    of as many scored rows as test rows; and the share of scored rows nearer a random training subset of the test
    split's size than the test rows (about 0.5 for fresh draws from the population, 1 for copies of training rows)."""
    g = np.random.default_rng(seed)
    scored = codec.encode(take(table, g.choice(len(next(iter(table.values()))), len(test), replace=False)))
    subset = train[torch.from_numpy(g.choice(len(train), len(test), replace=False))]
    return {"dcr_median": float(nearest(scored, train).median()),
            "closer_to_train": float((nearest(scored, subset) < nearest(scored, test)).float().mean())}


def run(args) -> None:
    deadline = time.perf_counter() + 60 * (args.max_minutes if args.max_minutes is not None else 1e9)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "rows.jsonl"
    dm = real_data(args)
    tables, codec, target = dm.tables(), dm.codec, dm.target
    params_path = out / "catboost.json"
    if not params_path.is_file():
        params_path.write_text(json.dumps(tune(tables, codec, target, args)))
    params = json.loads(params_path.read_text())
    done = {(r["model"], r["seed"]) for r in read_rows(path)}
    test = codec.encode(tables["test"])  # the real rows in the codec's space (dm.train_data: the training rows)
    dcr_test = float(nearest(test, dm.train_data).median())  # fresh real rows' distance to the training rows
    for name in ["real", *args.models]:
        checkpoint = None if name == "real" else train(name, args, deadline, dm)
        if name != "real" and checkpoint is None:
            break
        for seed in range(args.seeds):
            if (name, seed) in done:
                continue
            if time.perf_counter() > deadline:
                print(f"stopped after {args.max_minutes} minutes; run the command again to go on", flush=True)
                return report(args)
            start = time.perf_counter()
            table = tables["train"] if checkpoint is None else synthesize(
                checkpoint, len(dm.train_data), seed, args, codec, target if name in STRATIFIED else None)
            row = {"model": name, "seed": seed, **efficacy(table, tables["test"], codec, target, params, seed, args),
                   **fidelity(table, tables["test"], codec, params, seed, args),
                   **privacy(table, codec, dm.train_data, test, seed), "dcr_test_median": dcr_test}
            row["positive_rate"] = float((table[target] == "1").mean())
            if checkpoint is not None:
                row["step"] = "" if checkpoint.is_dir() else checkpoint_step(checkpoint)
            row["seconds"] = time.perf_counter() - start
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    report(args)


COLUMNS = [("f1", "macro F1 ↑"), ("roc_auc", "ROC-AUC ↑"), ("ks", "KS ↓"), ("tv", "TV ↓"),
           ("association", "assoc. diff ↓"), ("discriminator_auc", "discrim. AUC (0.5 best)"),
           ("sdm_shapes", "SDMetrics shapes ↑"), ("sdm_trends", "SDMetrics pair trends ↑"),
           ("positive_rate", "defaults"),
           ("dcr_median", "DCR median"), ("closer_to_train", "closer to train")]


def report(args) -> None:
    rows = read_rows(Path(args.out, "rows.jsonl"))
    if not rows:
        return
    lines = ["| model | step | " + " | ".join(label for _, label in COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for name in REPORT_ORDER:
        mine = [r for r in rows if r["model"] == name]
        if not mine:
            continue
        cells = [f"{np.mean([r[k] for r in mine]):.3f} ± {np.std([r[k] for r in mine]):.3f}"
                 if all(k in r for r in mine) else "–" for k, _ in COLUMNS]  # – : scored before the column existed
        lines.append(f"| {name} ({len(mine)} seeds) | {mine[0].get('step', '')} | " + " | ".join(cells) + " |")
    real = [r for r in rows if r["model"] == "real"]
    if real:
        lines += ["", f"The real test rows' own median DCR to the training rows: {real[0]['dcr_test_median']:.3f}."]
    text = "\n".join(lines)
    print(text)
    Path(args.docs).mkdir(parents=True, exist_ok=True)
    write_block(Path(args.docs) / "credit_default.md", marker("tabular_quality", args.out), text)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=[*MODELS, *STRATIFIED, MULTINOMIAL, *PEERS],
                   choices=[*MODELS, *STRATIFIED, MULTINOMIAL, *PEERS])
    p.add_argument("--peers_python", default=str(ROOT / "benchmarks" / ".peers" / "bin" / "python"),
                   help="the peers' environment (benchmarks/requirements-peers.txt)")
    p.add_argument("--data_root", default="data", help="the folder holding credit-default/UCI_Credit_Card.csv")
    p.add_argument("--seeds", type=int, default=5, help="synthetic sets (and CatBoost seeds) per model")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps per synthetic row")
    p.add_argument("--iterations", type=int, default=1000, help="CatBoost boosting rounds")
    p.add_argument("--max_minutes", type=float, help="start no training or scoring after this many minutes")
    p.add_argument("--quick", action="store_true", help="tiny models and 300-row evaluation splits: minutes")
    p.add_argument("--out", default="benchmarks/results/credit_default")
    p.add_argument("--docs", default="docs")
    run_or_report(p, argv, run, report)


if __name__ == "__main__":
    main()
