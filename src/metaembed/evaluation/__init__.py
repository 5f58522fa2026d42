"""Evaluating MetaEmbed checkpoints with mteb: MMEB, ViDoRe and any retrieval task, at every budget.

- :class:`MetaEmbedWrapper`: the mteb model (mteb's ``MultiVectorWrapper`` search path with budgets and instructions);
  :func:`metaembed_model_meta` builds its ``ModelMeta`` (one experiment per budget).
- :func:`get_mmeb_tasks` / :func:`get_mmeb_benchmark`: the 36 MMEB subsets as mteb retrieval tasks with per-query
  candidate lists, Precision@1, and MMEB's per-meta-task, IND/OOD and overall averages.
- :func:`resolve_tasks`: MMEB names, mteb tasks and benchmarks (e.g. ``ViDoRe(v2)``) by name.
- :func:`run_budget_sweep`: encode once at the full budget, score every budget by slicing, results in mteb's layout.
- :func:`export_leaderboard`: the ``ModelMeta`` code for mteb's registry next to the results.

The command line is ``metaembed eval`` (:mod:`metaembed.commands.evaluate`).

Example:
    >>> import mteb
    >>> from metaembed.evaluation import MetaEmbedWrapper, resolve_tasks, run_budget_sweep, format_sweep_table
    >>> model = MetaEmbedWrapper("my-org/metaembed-qwen2.5-vl-3b")
    >>> sweep = run_budget_sweep(model, resolve_tasks(["MMEB"]), "all", cache=mteb.ResultCache("outputs/eval"))
    >>> print(format_sweep_table(sweep))
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MMEB_SUBSETS": ".mmeb_subsets",
    "MMEBSubset": ".mmeb_subsets",
    "MMEBTask": ".mmeb_tasks",
    "get_mmeb_tasks": ".mmeb_tasks",
    "MMEBBenchmark": ".benchmark",
    "get_mmeb_benchmark": ".benchmark",
    "summarize_mmeb": ".benchmark",
    "load_mmeb_subset": ".mmeb_data",
    "resolve_tasks": ".task_selection",
    "use_local_dataset": ".task_selection",
    "MetaEmbedWrapper": ".wrapper",
    "EmbeddingStore": ".wrapper",
    "metaembed_model_meta": ".model_meta",
    "model_meta_registry_code": ".model_meta",
    "NotMetaEmbedCheckpointError": ".checkpoint_info",
    "resolve_checkpoint": ".checkpoint_info",
    "run_budget_sweep": ".sweep",
    "parse_budgets": ".sweep",
    "SweepResult": ".sweep",
    "format_sweep_table": ".report",
    "plot_sweep": ".report",
    "export_leaderboard": ".export",
    "load_exported_results": ".export",
}


def __getattr__(name: str) -> Any:
    # Lazy, so that `import metaembed.evaluation` does not import mteb until something is used.
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)


__all__ = sorted(_EXPORTS)
