"""The sweep's table (rows budgets, columns tasks, MMEB averages and index bytes per candidate) and its plot.

Scores are shown in percent, as MMEB and ViDoRe report them.

Example:
    >>> print(format_sweep_table(sweep))  # doctest: +SKIP
    | budget  | VOC2007 | MSCOCO_t2i | ... | Overall | index bytes/cand |
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..fileio import save_figure, write_json
from .benchmark import OVERALL, summarize_mmeb
from .mmeb_subsets import DOMAINS, META_TASKS, TASK_NAME_PREFIX
from .mmeb_tasks import MMEB_TASK_CLASSES
from .sweep import Budget, SweepResult

logger = logging.getLogger(__name__)

VIDORE_V2_TASKS = (
    "Vidore2ESGReportsRetrieval",
    "Vidore2EconomicsReportsRetrieval",
    "Vidore2BioMedicalLecturesRetrieval",
    "Vidore2ESGReportsHLRetrieval",
)
VIDORE_V2_MEAN = "ViDoRe(v2)"


def _short(task_name: str) -> str:
    return task_name.removeprefix(TASK_NAME_PREFIX) if task_name in MMEB_TASK_CLASSES else task_name


def sweep_rows(sweep: SweepResult) -> tuple[list[str], list[list[str]]]:
    """The table as a header and rows of strings: one row per budget."""
    tasks = list(sweep.main_scores)
    aggregate_columns: list[str] = []
    first = sweep.scores.get(sweep.budgets[0], {}) if sweep.budgets else {}
    mmeb_summary = summarize_mmeb(first)
    aggregate_columns += [c for c in (*META_TASKS, *DOMAINS, OVERALL) if c in mmeb_summary]
    vidore = [t for t in tasks if t in VIDORE_V2_TASKS]
    if vidore:
        aggregate_columns.append(VIDORE_V2_MEAN)
    header = ["budget", *(_short(t) for t in tasks), *aggregate_columns, "index bytes/cand"]
    rows = []
    for budget in sweep.budgets:
        scores = sweep.scores.get(budget, {})
        summary = summarize_mmeb(scores)
        if vidore:
            summary[VIDORE_V2_MEAN] = sum(scores[t] for t in vidore if t in scores) / len(vidore)
        cells = [f"({budget[0]},{budget[1]})"]
        cells += [f"{100 * scores[t]:.1f}" if t in scores else "-" for t in tasks]
        cells += [f"{100 * summary[c]:.1f}" if c in summary else "-" for c in aggregate_columns]
        cells.append(f"{sweep.index_bytes_per_candidate(budget):,}")
        rows.append(cells)
    return header, rows


def format_sweep_table(sweep: SweepResult) -> str:
    """A Markdown table of the sweep (percent scores; the last column is index memory per candidate)."""
    header, rows = sweep_rows(sweep)
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.rjust(width) for cell, width in zip(cells, widths)) + " |"

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    metrics = sorted(set(sweep.main_scores.values()))
    caption = (
        f"{sweep.model_name} @ {sweep.revision or 'no revision'}: main scores in % ({', '.join(metrics)}); "
        f"index bytes/cand = r_c x {sweep.embed_dim} x {sweep.index_bytes_per_element} bytes."
    )
    return "\n".join([caption, line(header), separator, *(line(row) for row in rows)])


def plot_sweep(sweep: SweepResult, path: str | os.PathLike) -> Path:
    """Saves a PNG of score against budget: MMEB's overall and meta-task averages (or each task), ViDoRe's mean."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    labels = [f"({q},{c})" for q, c in sweep.budgets]
    series: dict[str, list[float]] = {}
    for budget in sweep.budgets:
        scores = sweep.scores.get(budget, {})
        summary = summarize_mmeb(scores)
        lines = {k: v for k, v in summary.items() if k in (*META_TASKS, OVERALL)} if summary else {}
        if not lines:
            lines = {_short(t): scores[t] for t in scores}
        vidore = [scores[t] for t in VIDORE_V2_TASKS if t in scores]
        if vidore:
            lines[VIDORE_V2_MEAN] = sum(vidore) / len(vidore)
        for key, value in lines.items():
            series.setdefault(key, []).append(100 * value)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for key, values in series.items():
        width = 2.5 if key == OVERALL else 1.5
        axis.plot(labels[: len(values)], values, marker="o", linewidth=width, label=key)
    axis.set_xlabel("budget (r_q, r_c)")
    axis.set_ylabel("score (%)")
    axis.set_title(f"{sweep.model_name}: score against budget")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return save_figure(figure, path)


def write_sweep_summary(sweep: SweepResult, path: str | os.PathLike) -> Path:
    """Writes the sweep's scores, MMEB averages and index sizes as JSON."""

    def key(budget: Budget) -> str:
        return f"{budget[0]}x{budget[1]}"

    payload = {
        "model": sweep.model_name,
        "revision": sweep.revision,
        "main_scores": sweep.main_scores,
        "embed_dim": sweep.embed_dim,
        "budgets": {
            key(b): {
                "scores": sweep.scores.get(b, {}),
                "mmeb": summarize_mmeb(sweep.scores.get(b, {})),
                "index_bytes_per_candidate": sweep.index_bytes_per_candidate(b),
            }
            for b in sweep.budgets
        },
        "encode_calls": sweep.encode_calls,
        "wall_seconds": round(sweep.wall_seconds, 3),
    }
    return write_json(path, payload)


__all__ = ["format_sweep_table", "plot_sweep", "sweep_rows", "write_sweep_summary"]
