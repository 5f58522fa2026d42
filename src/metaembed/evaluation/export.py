"""Leaderboard export: mteb's results layout plus the ``ModelMeta`` code for mteb's model registry.

The results themselves are written by mteb (``mteb.ResultCache(output_dir)``) while the sweep runs::

    <output_dir>/results/<org__name>/<revision>/<task>.json                                  # full budget (default)
    <output_dir>/results/<org__name>/<revision>/experiments/budget_[r_q,r_c]/<task>.json     # one per budget
    (each folder also holds model_meta.json and run_settings.jsonl)

This module adds ``<output_dir>/model_meta.py``, to paste into mteb's registry, and reads the results back with mteb's
own loader to check them.

Example:
    >>> paths = export_leaderboard(model.mteb_model_meta, "outputs/eval")  # doctest: +SKIP
    >>> results = load_exported_results("outputs/eval", model.mteb_model_meta, tasks)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .model_meta import model_meta_registry_code

if TYPE_CHECKING:
    from mteb.abstasks.abstask import AbsTask
    from mteb.models.model_meta import ModelMeta
    from mteb.results import BenchmarkResults

logger = logging.getLogger(__name__)

REGISTRY_FILE = "model_meta.py"


def export_leaderboard(meta: ModelMeta, output_dir: str | os.PathLike) -> dict[str, Path]:
    """Writes the registry code next to the results mteb already wrote.

    Returns:
        ``{"results": <output_dir>/results, "model_meta": <output_dir>/model_meta.py}``.
    """
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    code_path = output / REGISTRY_FILE
    code_path.write_text(model_meta_registry_code(meta), encoding="utf-8")
    results = output / "results" / meta.model_name_as_path() / (meta.revision or "no_revision_available")
    if not results.is_dir():
        logger.warning(
            "No results under %s yet; run the evaluation with this output directory first.", results
        )
    return {"results": output / "results", "model_meta": code_path}


def load_exported_results(
    output_dir: str | os.PathLike,
    meta: ModelMeta,
    tasks: Sequence[AbsTask],
    budgets: Sequence[Sequence[int]] | None = None,
) -> BenchmarkResults:
    """Reads the results back with mteb's ``ResultCache.load_results``, validating them against ``tasks``.

    Args:
        output_dir: The evaluation's output directory.
        meta: The model's meta (any budget; the experiments are selected by ``budgets``).
        tasks: The task objects evaluated (validation checks splits and subsets against their metadata).
        budgets: Budget experiments to load; None loads the default (full-budget) results.
    """
    from mteb.cache import ResultCache

    cache = ResultCache(cache_path=output_dir)
    metas = [meta.model_copy(update={"experiment_kwargs": None})]
    if budgets is not None:
        metas = [meta.model_copy(update={"experiment_kwargs": {"budget": tuple(b)}}) for b in budgets]
    return cache.load_results(
        models=metas,
        tasks=list(tasks),
        include_remote=False,
        validate_and_filter=True,
        load_experiments="match_kwargs",
    )


__all__ = ["REGISTRY_FILE", "export_leaderboard", "load_exported_results"]
