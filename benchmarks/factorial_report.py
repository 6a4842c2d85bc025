"""The factorial's tables for ``benchmarks/time_to_quality.py``'s report, from its rows: quality at equal steps,
what each factor (activation, head) costs with its seed spread, the loss per log-SNR against the plain twin, and the
network's inside (``benchmarks/network_diagnosis.py``)."""

from __future__ import annotations

import math
import statistics


def spread(values: list[float], digits: int = 1) -> str:
    """The mean, and ± half the range where there are several values."""
    mean = statistics.mean(values)
    return f"{mean:.{digits}f}" + (f" ± {(max(values) - min(values)) / 2:.{digits}f}" if len(values) > 1 else "")


def ratio_range(ratios: list[float]) -> str:
    """The geometric mean of ``ratios`` and their range where there are several."""
    mean = math.exp(statistics.mean(math.log(r) for r in ratios))
    return f"{mean:.2f}" + (f" ({min(ratios):.2f}–{max(ratios):.2f})" if len(ratios) > 1 else "")


def at_equal_steps(runs: dict) -> list[int]:
    """The steps at which every run was evaluated (the periods of a study with ``--period_steps``)."""
    steps = [{r["step"] for r in mine} for mine in runs.values()]
    return sorted(set.intersection(*steps)) if steps else []


def fid_at(runs: dict, model: str, step: int) -> dict[int, float]:
    """seed → FID of ``model`` at ``step``."""
    return {seed: r["fid"] for (name, seed), mine in runs.items() if name == model for r in mine if r["step"] == step}


def equal_steps_table(runs: dict, models: list[str], steps: list[int]) -> list[str]:
    lines = ["", "FID (domain) at equal steps, mean ± half the range over seeds:", "",
             "| model | " + " | ".join(f"step {s}" for s in steps) + " |", "|---" * (len(steps) + 1) + "|"]
    for model in models:
        cells = [fid_at(runs, model, s) for s in steps]
        lines.append(f"| {model} | " + " | ".join(spread(list(c.values())) if c else "–" for c in cells) + " |")
    return lines


def paired_ratios(runs: dict, over: str, under: str, step: int) -> list[float]:
    """FID(over) / FID(under) at ``step``, paired by seed."""
    a, b = fid_at(runs, over, step), fid_at(runs, under, step)
    return [a[s] / b[s] for s in sorted(a.keys() & b.keys())]


def effects_table(runs: dict, factorial: dict, steps: list[int]) -> list[str]:
    """What each factor costs in FID at equal steps: the ratio of the two levels at every level of the other factor,
    paired by seed (> 1: the first level is worse)."""
    acts = sorted({a for a, _ in factorial}, key=lambda a: a != "signrelu")
    heads = list(dict.fromkeys(h for _, h in factorial))
    contrasts = [(f"{acts[0]} / {acts[1]}, head {h}", factorial[acts[0], h], factorial[acts[1], h]) for h in heads]
    for a in acts:
        contrasts += [(f"{heads[i]} / {heads[i + 1]}, {a}", factorial[a, heads[i]], factorial[a, heads[i + 1]])
                      for i in range(len(heads) - 1)]
    lines = ["", "What each factor costs: FID ratio at equal steps, paired by seed (geometric mean, range):", "",
             "| contrast | " + " | ".join(f"step {s}" for s in steps) + " |", "|---" * (len(steps) + 1) + "|"]
    for label, over, under in contrasts:
        cells = [paired_ratios(runs, over, under, s) for s in steps]
        lines.append(f"| {label} | " + " | ".join(ratio_range(c) if c else "–" for c in cells) + " |")
    return lines


def by_model(rows: list[dict], period: int, key: str) -> dict[str, list]:
    """model → the ``key`` entries of its rows at ``period``, one per seed."""
    found: dict[str, list] = {}
    for r in rows:
        if r.get("period") == period and key in r:
            found.setdefault(r["model"], []).append(r[key])
    return found


def loss_by_t_table(rows: list[dict], models: list[str], twin: str, period: int, title: str) -> list[str]:
    """The denoising error at steps spread in log-SNR, each model's over ``twin``'s (mean over seeds)."""
    curves = by_model(rows, period, "loss_by_t")
    if twin not in curves:
        return []
    steps = curves[twin][0]["steps"]
    base = [statistics.mean(c["loss"][i] for c in curves[twin]) for i in range(len(steps))]
    lines = ["", title, "", "| model | " + " | ".join(f"t = {s + 1}" for s in steps) + " |",
             "|---" * (len(steps) + 1) + "|", f"| {twin} (‖x0 − x̂0‖²/D) | " + " | ".join(f"{b:.4g}" for b in base) + " |"]
    for model in models:
        if model in curves and model != twin:
            mean = [statistics.mean(c["loss"][i] for c in curves[model]) for i in range(len(steps))]
            lines.append(f"| {model} / {twin} | " + " | ".join(f"{m / b:.2f}" for m, b in zip(mean, base)) + " |")
    return lines


def diagnosis_table(rows: list[dict], models: list[str], periods: list[int]) -> list[str]:
    """The network's inside at ``periods`` (0: at initialisation), means over seeds and over the diagnosed steps."""
    lines = ["", "Inside the network (means over seeds and over 4 steps spread in log-SNR): activation inputs below 0 "
             "and below −1, the ratio head's effective number of atoms exp(H) and its f2 (median; range), the "
             "gradient norm of the training loss and the head's share of it:", "",
             "| model | step | below 0 | below −1 | atoms exp(H) | f2 median (min–max) | gradient norm | head share |",
             "|---" * 8 + "|"]
    for period in periods:
        found = by_model(rows, period, "diag")
        steps = by_model(rows, period, "step")
        for model in models:
            if model not in found:
                continue
            d = found[model]
            mean = lambda key: statistics.mean(statistics.mean(x[key]) for x in d)  # noqa: E731
            atoms = f"{mean('effective_atoms'):.2f}" if "effective_atoms" in d[0] else "–"
            f2 = (f"{mean('f2_median'):.2f} ({min(min(x['f2_min']) for x in d):.2f}–"
                  f"{max(max(x['f2_max']) for x in d):.2f})") if "f2_median" in d[0] else "–"
            grads = [x["grad_norms"] for x in d]
            head = f"{statistics.mean(g['head'] / g['total'] for g in grads):.3f}" if "head" in grads[0] else "–"
            lines.append(f"| {model} | {statistics.mean(steps[model]):.0f} | {mean('below_0'):.3f} | "
                         f"{mean('below_minus_1'):.3f} | {atoms} | {f2} | "
                         f"{statistics.mean(g['total'] for g in grads):.3g} | {head} |")
    return lines


def factorial_tables(rows: list[dict], runs: dict, models: list[str], factorial: dict, twin: str) -> list[str]:
    """Every table the rows allow: equal steps where all runs share evaluation steps, the factors' costs where
    the factorial is complete, the loss per log-SNR and the inside where the study ran with ``--diagnose``."""
    lines, steps = [], at_equal_steps(runs)
    if steps:
        lines += equal_steps_table(runs, models, steps)
        if set(factorial.values()) <= set(models):
            lines += effects_table(runs, factorial, steps)
    periods = sorted({r["period"] for r in rows if "diag" in r})
    if periods:
        last = periods[-1]
        lines += loss_by_t_table(rows, models, twin, 0, "The denoising error ‖x0 − x̂0‖²/D at initialisation, over the twin's:")
        lines += loss_by_t_table(rows, models, twin, last, f"The denoising error ‖x0 − x̂0‖²/D at period {last}, over the twin's:")
        lines += diagnosis_table(rows, models, [0, last] if last else [0])
    return lines
