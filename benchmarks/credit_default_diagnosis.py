"""Where a discriminator tells synthetic Credit Default rows from real ones: its ROC-AUC on each column alone and on
groups of columns, and the month-to-month structure of the amounts that the groups point at.

    python -m benchmarks.credit_default_diagnosis            # every model tabular_quality has scored; seed-0 set
    python -m benchmarks.credit_default_diagnosis --report   # the table from the rows so far

Resumable: each diagnosed set is a row of ``--out/diagnosis.jsonl``; a rerun diagnoses only the models scored since.

For ``real`` the scored rows are the real training rows (the reference: about 0.5 everywhere); for a model or a
peer, its seed-0 synthetic set of ``benchmarks.tabular_quality`` (as many rows as the training split, DDIM, 50 steps). The
discriminator is the study's (CatBoost with the tuned parameters, fitted on half of scored + real test rows, scored on
the other half); "rows within the bounds" refits it on all columns of only the scored rows that keep the two bounds
below (:func:`within_bounds`): how much of its lead those two structures carry. The structure figures, over the
5 pairs of consecutive months k, k+1 (the file's months run backwards: ``BILL_AMT1`` is the latest statement):

- bill change: the median of |BILL_AMT_k − BILL_AMT_k+1| / max(|BILL_AMT_k+1|, 1);
- score change: the median of the same difference between the codec's normal scores;
- equal bills: the share of pairs with BILL_AMT_k = BILL_AMT_k+1, and of those with equal non-zero bills;
- paid in full: the share of pairs with PAY_AMT_k = BILL_AMT_k+1 > 0 (the payment in month k settles the statement
  before it);
- negative charges: the share of pairs whose new charges, BILL_AMT_k − BILL_AMT_k+1 + PAY_AMT_k, are below 0 (a
  statement fell by more than the payment made on the one before: real rows almost never do);
- over the limit: the share of statements above the client's credit limit ``LIMIT_BAL``;
- the figure ``--docs/<--out's folder name>_months.png``: for the bills and for the payments, the distribution of the
  relative change between consecutive months (the share of equal pairs, then log10 of the change).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks import tabular_quality as tq
from benchmarks.common import read_rows, run_or_report, write_block
from ddpm_signrelu.data.table import Table, TableCodec, take

BILLS = [f"BILL_AMT{k}" for k in range(1, 7)]
PAYMENTS = [f"PAY_AMT{k}" for k in range(1, 7)]
GROUPS = {"statuses `PAY_*`": ["PAY_0", *(f"PAY_{k}" for k in range(2, 7))], "bills `BILL_AMT*`": BILLS,
          "payments `PAY_AMT*`": PAYMENTS, "`BILL_AMT1`, `BILL_AMT2`": BILLS[:2],
          "`PAY_AMT1`, `BILL_AMT2`": [PAYMENTS[0], BILLS[1]], "all columns": None}


LIMIT = "LIMIT_BAL"
OVER = 1.1  # within the bounds: no statement above 1.1x the limit (3 % of real rows hold one) ...
SLACK = 0.01  # ... and no month's charges below -1 % of the limit (2 % of real rows)
EDGES = np.linspace(-4, 1, 21)  # log10 of the relative change between consecutive months


def changes(amounts: np.ndarray) -> list[float]:
    """The shares of consecutive-month pairs that are equal, then of log10 |change| / max(|earlier|, 1) in each bin
    of :data:`EDGES` (the ends clipped into the first and last)."""
    later, earlier = amounts[:, :-1], amounts[:, 1:]
    relative = (np.abs(later - earlier) / np.maximum(np.abs(earlier), 1)).ravel()
    moved = np.log10(relative[relative > 0]).clip(EDGES[0], EDGES[-1])
    return [float((relative == 0).mean()), *(np.histogram(moved, EDGES)[0] / relative.size).tolist()]


def amounts(table: Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(bills (N, 6), payments (N, 6), the new charges of months 1-5 (N, 5), the limits (N, 1)) of the rows of
    ``table``."""
    bills = np.stack([table[b].astype(float) for b in BILLS], 1)
    payments = np.stack([table[p].astype(float) for p in PAYMENTS], 1)
    return bills, payments, bills[:, :-1] - bills[:, 1:] + payments[:, :-1], table[LIMIT].astype(float)[:, None]


def within_bounds(table: Table) -> np.ndarray:
    """(N,) bool: the rows with no statement above :data:`OVER` x their limit and no month's charges below
    −:data:`SLACK` x their limit."""
    bills, _, charges, limit = amounts(table)
    return (bills <= OVER * limit).all(1) & (charges >= -SLACK * limit).all(1)


def structure(table: Table, codec: TableCodec) -> dict:
    """The month-to-month figures of the docstring for the rows of ``table``."""
    bills, payments, charges, limit = amounts(table)
    modelled = [c.name for c in codec.modelled]
    z = codec.scores(table)[:, [modelled.index(b) for b in BILLS]]
    later, earlier = bills[:, :-1], bills[:, 1:]
    return {"bill change": float(np.median(np.abs(later - earlier) / np.maximum(np.abs(earlier), 1))),
            "score change": float(np.median(np.abs(z[:, :-1] - z[:, 1:]))),
            "equal bills": float((later == earlier).mean()),
            "equal non-zero bills": float(((later == earlier) & (earlier != 0)).mean()),
            "paid in full": float(((payments[:, :-1] == earlier) & (earlier > 0)).mean()),
            "negative charges": float((charges < 0).mean()),
            "over the limit": float((bills > limit).mean()),
            "bill changes": changes(bills), "payment changes": changes(payments)}


def diagnose(table: Table, test: Table, codec: TableCodec, params: dict, iterations: int) -> dict:
    """Discriminator ROC-AUCs (each column alone: the largest and the median; each group; all columns on the rows
    :func:`within_bounds`) and ``structure``."""
    alone = [tq.discriminator_auc(table, test, codec, params, 0, iterations, [c.name]) for c in codec.columns]
    groups = {g: tq.discriminator_auc(table, test, codec, params, 0, iterations, names) for g, names in GROUPS.items()}
    kept = np.flatnonzero(within_bounds(table))  # NaN where fewer rows than the test rows keep the bounds
    bounded = tq.discriminator_auc(take(table, kept), test, codec, params, 0, iterations) \
        if len(kept) >= len(test[LIMIT]) else float("nan")
    return {"one column, largest": max(alone), "one column, median": float(np.median(alone)), **groups,
            "rows within the bounds": bounded,
            **structure(table, codec)}


def run(args) -> None:
    """Diagnose ``real`` and every model the study has scored not yet in ``--out/diagnosis.jsonl`` (resumable), then
    report."""
    dm = tq.real_data(args)
    tables, codec = dm.tables(), dm.codec
    params = json.loads(Path(args.out, "catboost.json").read_text())
    path = Path(args.out, "diagnosis.jsonl")
    done, scored = {r["model"] for r in read_rows(path)}, {r["model"] for r in read_rows(Path(args.out, "rows.jsonl"))}
    for name in ["real", *tq.MODELS, *tq.STRATIFIED, tq.MULTINOMIAL, *tq.PEERS]:
        finished = Path(args.out, tq.STRATIFIED.get(name, name), "done.json")
        if name in done or name not in scored:
            continue
        checkpoint = None if name == "real" else Path(json.loads(finished.read_text())["checkpoint"])
        table = tables["train"] if checkpoint is None else tq.synthesize(
            checkpoint, len(dm.train_data), 0, args, codec, dm.target if name in tq.STRATIFIED else None)
        row = {"model": name, **diagnose(table, tables["test"], codec, params, args.iterations)}
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    report(args, structure(tables["test"], codec))


def report(args, test: dict | None = None) -> None:
    """The table of every diagnosed set (columns in the study's report order), the real test rows' structure
    (``test``: computed here when not given) first; "–" where a set was diagnosed before a figure existed."""
    if test is None:
        dm = tq.real_data(args)
        test = structure(dm.tables()["test"], dm.codec)
    rows = {r["model"]: r for r in read_rows(Path(args.out, "diagnosis.jsonl"))}
    names = [n for n in tq.REPORT_ORDER if n in rows]
    lines = ["| | real test rows | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for key in (k for k in rows["real"] if k != "model" and not isinstance(rows["real"][k], list)):
        reference = f"{test[key]:.3f}" if key in test else ""
        label = key if key in test else f"discrim. AUC: {key}"
        figures = (f"{rows[n][key]:.3f}" if key in rows[n] else "–" for n in names)
        lines.append(f"| {label} | {reference} | " + " | ".join(figures) + " |")
    text = "\n".join(lines)
    print(text)
    write_block(Path(args.docs) / "credit_default.md", tq.marker("credit_default_diagnosis", args.out), text)
    plot({"real test rows": test, **{n: rows[n] for n in names if "bill changes" in rows[n] and n != "real"}},
         Path(args.docs) / f"{Path(args.out).name}_months.png")


def plot(sets: dict[str, dict], path: Path) -> None:
    """The change distributions of each set (:func:`changes`), bills and payments side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    centres = (EDGES[:-1] + EDGES[1:]) / 2
    for ax, key in zip(axes, ("bill changes", "payment changes")):
        for name, figures in sets.items():
            equal, *shares = figures[key]
            style = {"color": "black", "lw": 2.5} if name == "real test rows" else {"lw": 1.2}
            line, = ax.plot(centres, shares, label=name, **style)
            ax.plot([EDGES[0] - 0.5], [equal], marker="o", color=line.get_color())
        ax.set(xlabel="log10 relative change between consecutive months (dot: equal)", ylabel="share of month pairs",
               title=key)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", default="data", help="the folder holding credit-default/UCI_Credit_Card.csv")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps per synthetic row")
    p.add_argument("--iterations", type=int, default=300, help="CatBoost boosting rounds per discriminator")
    p.add_argument("--out", default="benchmarks/results/credit_default", help="benchmarks.tabular_quality's --out")
    p.add_argument("--docs", default="docs")
    p.add_argument("--quick", action="store_true", help="300-row evaluation splits (with tabular_quality --quick)")
    run_or_report(p, argv, run, report)


if __name__ == "__main__":
    main()
