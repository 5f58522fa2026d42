"""Aggregating ablation runs: a table shaped like the paper's Table 5, the claims it tests, and a plot.

Runs are records ``{"variant", "seed", "scores": {budget: {family: precision@1}}}``. Aggregates are the mean and the
sample standard deviation (``ddof=1``) over seeds, in percent. "overall" is the unweighted mean of the families
of one run (as MMEB's overall is the mean of its subsets), then averaged over seeds.

Example:
    >>> runs = [{"variant": "mmr", "seed": s, "scores": {"1x1": {"t2i": 0.5 + s / 10}}} for s in range(3)]
    >>> aggregate(runs)["mmr"]["1x1"]["t2i"]
    {'mean': 60.0, 'std': 10.0, 'n': 3}
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..fileio import save_figure

OVERALL = "overall"


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    values = [100.0 * v for v in values]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.fmean(values), 4), "std": round(std, 4), "n": len(values)}


def with_overall(scores: Mapping[str, float]) -> dict[str, float]:
    """A run's per-family scores plus their unweighted mean under ``"overall"``."""
    out = dict(scores)
    out[OVERALL] = statistics.fmean(scores.values())
    return out


def aggregate(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``{variant: {budget: {family or "overall": {"mean", "std", "n"}}}}`` in percent over seeds."""
    grouped: dict[str, dict[str, dict[str, list[float]]]] = {}
    for run in runs:
        for budget, scores in run["scores"].items():
            cell = grouped.setdefault(run["variant"], {}).setdefault(budget, {})
            for family, value in (with_overall(scores)).items():
                cell.setdefault(family, []).append(value)
    return {
        variant: {
            budget: {family: _mean_std(v) for family, v in cells.items()} for budget, cells in budgets.items()
        }
        for variant, budgets in grouped.items()
    }


def markdown_table(
    table: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
    variants: Mapping[str, str],
    columns: Mapping[str, str],
) -> str:
    """The aggregate as a Markdown table: one row per (variant, budget), one column per family and overall.

    Args:
        table: The output of :func:`aggregate`.
        variants: Variant key -> row label, in row order.
        columns: Family key (and ``"overall"``) -> column label, in column order.
    """
    header = ["variant", "budget (r_q, r_c)", *columns.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, label in variants.items():
        for budget, cells in table.get(variant, {}).items():
            r_q, r_c = budget.split("x")
            values = []
            for key in columns:
                cell = cells.get(key)
                values.append("-" if cell is None else f"{cell['mean']:.1f} ± {cell['std']:.1f}")
            lines.append(f"| {label} | ({r_q}, {r_c}) | " + " | ".join(values) + " |")
    return "\n".join(lines)


def paired_difference(
    runs: Sequence[Mapping[str, Any]], a: tuple[str, str], b: tuple[str, str], family: str = OVERALL
) -> dict[str, Any]:
    """Seed-paired difference ``a - b`` in points, where ``a`` and ``b`` are ``(variant, budget)``.

    The verdict rule, fixed before any run: ``"supported"`` when the mean difference is positive and every seed
    agrees in sign, ``"not supported"`` when the mean difference is zero or negative, ``"mixed"`` otherwise.
    """

    def score(variant: str, budget: str) -> dict[int, float]:
        out = {}
        for run in runs:
            if run["variant"] == variant and budget in run["scores"]:
                scores = with_overall(run["scores"][budget])
                out[run["seed"]] = 100.0 * scores[family]
        return out

    left, right = score(*a), score(*b)
    seeds = sorted(set(left) & set(right))
    diffs = [left[s] - right[s] for s in seeds]
    if not diffs:
        return {"a": list(a), "b": list(b), "family": family, "seeds": [], "verdict": "no data"}
    mean = statistics.fmean(diffs)
    if mean <= 0:
        verdict = "not supported"
    elif all(d > 0 for d in diffs):
        verdict = "supported"
    else:
        verdict = "mixed"
    return {
        "a": list(a),
        "b": list(b),
        "family": family,
        "seeds": seeds,
        "differences": [round(d, 4) for d in diffs],
        "mean_difference": round(mean, 4),
        "verdict": verdict,
    }


def plot_scores(
    table: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
    variants: Mapping[str, str],
    panels: Mapping[str, str],
    path: str | Path,
    title: str,
    chance: Mapping[str, float] | None = None,
) -> Path:
    """Score against budget per variant, one panel per family and one for overall, with ±1 std error bars.

    A variant with a single budget (the single-vector baseline) is drawn as a marker at its budget and a dashed
    reference line across the others. ``chance`` (percent per panel key) adds a dotted grey line: the expected score
    of a random ranking.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets: list[str] = []
    for variant in variants:
        for budget in table.get(variant, {}):
            if budget not in budgets:
                budgets.append(budget)
    budgets.sort(key=lambda b: tuple(int(x) for x in b.split("x")))
    positions = {b: i for i, b in enumerate(budgets)}
    columns = 3
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.3 * rows), squeeze=False)
    for ax, (key, label) in zip(axes.flat, panels.items()):
        for index, (variant, name) in enumerate(variants.items()):
            cells = table.get(variant, {})
            points = [(positions[b], c[key]["mean"], c[key]["std"]) for b, c in cells.items() if key in c]
            if not points:
                continue
            xs, ys, errors = zip(*sorted(points))
            colour = f"C{index}"
            if len(points) == 1:
                ax.axhline(ys[0], color=colour, linestyle="--", linewidth=1)
                ax.errorbar(xs, ys, yerr=errors, color=colour, marker="s", capsize=3, label=name)
            else:
                ax.errorbar(xs, ys, yerr=errors, color=colour, marker="o", capsize=3, label=name)
        if chance is not None and key in chance:
            ax.axhline(chance[key], color="grey", linestyle=":", linewidth=1, label="chance")
        ax.set_title(label)
        ax.set_xticks(range(len(budgets)))
        ax.set_xticklabels([f"({b.replace('x', ',')})" for b in budgets], fontsize=8)
        ax.set_xlabel("budget (r_q, r_c)")
        ax.set_ylabel("Precision@1 (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)


__all__ = ["OVERALL", "aggregate", "markdown_table", "paired_difference", "plot_scores", "with_overall"]
