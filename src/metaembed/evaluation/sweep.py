"""The budget sweep: encode every input once at the full budget, then score every budget by slicing.

For each task the sweep runs ``mteb.evaluate`` once per budget with the same loaded model and a shared
:class:`.EmbeddingStore`: the first budget encodes queries and candidates at the full budget and stores them; every
other budget reads prefixes of those vectors. Each budget is an mteb experiment (``budget_[r_q,r_c]``), so mteb writes
its results in its own layout; the full budget is also recorded as the model's default (no experiment).

Example:
    >>> import mteb
    >>> from metaembed.evaluation import MetaEmbedWrapper, resolve_tasks, run_budget_sweep
    >>> model = MetaEmbedWrapper("my-org/metaembed-qwen2.5-vl-3b")
    >>> sweep = run_budget_sweep(model, resolve_tasks(["MMEB"]), budgets="all", cache=mteb.ResultCache("out"))
    >>> sweep.scores[(16, 64)]["MMEB-VOC2007"]  # doctest: +SKIP
    0.81
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import mteb
import torch

from .wrapper import EmbeddingStore, MetaEmbedWrapper

if TYPE_CHECKING:
    from mteb.abstasks.abstask import AbsTask
    from mteb.cache import ResultCache
    from mteb.results import TaskResult

logger = logging.getLogger(__name__)

Budget = tuple[int, int]
_PAIR = re.compile(r"(\d+)\s*[x,]\s*(\d+)")


def parse_budgets(spec: str | Sequence[Sequence[int]] | None, config: Any) -> list[Budget]:
    """Budgets from ``"all"`` (the checkpoint's trained groups), ``"full"``, ``"1x1,4x8"`` / ``"1,1;4,8"`` or pairs.

    Every budget is validated by the checkpoint's config; the result is sorted and free of repeats.

    Raises:
        ValueError: for malformed text or a budget outside the meta token counts.

    Example:
        >>> parse_budgets("1x1,16x64", model.config)  # doctest: +SKIP
        [(1, 1), (16, 64)]
    """
    if spec is None or spec == "all":
        pairs: Iterable[Sequence[int]] = [tuple(b) for b in config.budgets]
    elif spec == "full":
        pairs = [(config.num_query_meta_tokens, config.num_candidate_meta_tokens)]
    elif isinstance(spec, str):
        pairs = [(int(q), int(c)) for q, c in _PAIR.findall(spec)]
        if not pairs or _PAIR.sub("", spec).strip(" ,;()[]"):
            raise ValueError(
                f"Cannot read budgets {spec!r}; write 'all', 'full', or pairs such as '1x1,4x8,16x64'."
            )
    else:
        pairs = spec
    return sorted({config.check_budget_pair(tuple(pair)) for pair in pairs})


@dataclass
class SweepResult:
    """Main scores per budget and task, with what the table and plot need.

    Attributes:
        model_name: ``org/name``.
        revision: The checkpoint revision.
        budgets: The budgets swept, ascending.
        scores: budget -> task name -> main score (0..1).
        main_scores: task name -> name of its main score (``precision_at_1``, ``ndcg_at_5``...).
        task_results: budget -> mteb ``TaskResult`` objects.
        embed_dim: Width of every vector.
        index_bytes_per_element: Bytes per stored value (4 for float32, 2 for bfloat16).
        wall_seconds: Wall time of the sweep.
        encode_calls: How many (task, role) inputs were encoded: once each, whatever the number of budgets.
    """

    model_name: str
    revision: str | None
    budgets: list[Budget]
    scores: dict[Budget, dict[str, float]] = field(default_factory=dict)
    main_scores: dict[str, str] = field(default_factory=dict)
    task_results: dict[Budget, list[TaskResult]] = field(default_factory=dict)
    embed_dim: int = 0
    index_bytes_per_element: int = 4
    wall_seconds: float = 0.0
    encode_calls: int = 0

    def index_bytes_per_candidate(self, budget: Budget) -> int:
        """Memory one candidate takes in an index at ``budget``: ``r_c * d * bytes``."""
        return budget[1] * self.embed_dim * self.index_bytes_per_element


def run_budget_sweep(
    model: MetaEmbedWrapper,
    tasks: Sequence[AbsTask],
    budgets: str | Sequence[Sequence[int]] | None = "all",
    *,
    cache: ResultCache | None = None,
    encode_kwargs: dict[str, Any] | None = None,
    overwrite_strategy: str = "only-missing",
    index_dtype: torch.dtype = torch.float32,
    record_default: bool = True,
) -> SweepResult:
    """Evaluates ``tasks`` at every budget, encoding each input once.

    Args:
        model: The loaded checkpoint (its own budget is ignored; each budget gets a view of it).
        tasks: mteb tasks (MMEB tasks, ViDoRe, any retrieval task).
        budgets: See :func:`parse_budgets`; ``"all"`` sweeps the checkpoint's trained budget groups.
        cache: Where mteb writes results (``mteb.ResultCache(output_dir)``); None keeps them in memory.
        encode_kwargs: mteb encode kwargs (``batch_size``, ``show_progress_bar``).
        overwrite_strategy: mteb's: ``"only-missing"`` resumes an interrupted sweep, ``"always"`` recomputes.
        index_dtype: Dtype the full-budget embeddings are kept in between budgets.
        record_default: Also record the full budget as the model's default (no experiment), which is what the MTEB
            leaderboard shows for the model.

    Returns:
        A :class:`SweepResult`.
    """
    config = model.config
    chosen = parse_budgets(budgets, config)
    full = (config.num_query_meta_tokens, config.num_candidate_meta_tokens)
    store = EmbeddingStore(dtype=index_dtype)
    base = model.at_budget(None)
    base.store = store
    result = SweepResult(
        model_name=model.mteb_model_meta.name or "",
        revision=model.mteb_model_meta.revision,
        budgets=chosen,
        embed_dim=int(model.mteb_model_meta.embed_dim or 0),
        index_bytes_per_element=torch.empty((), dtype=index_dtype).element_size(),
    )
    runs: list[Budget | None] = [*chosen, *([None] if record_default and full in chosen else [])]
    encode_kwargs = {"batch_size": 32, "show_progress_bar": False, **(encode_kwargs or {})}
    started = time.perf_counter()
    for task in tasks:
        name = task.metadata.name
        result.main_scores[name] = task.metadata.main_score
        preloaded = task.data_loaded
        if not preloaded:
            task.load_data()
        try:
            for budget in runs:
                view = base.at_budget(budget)
                logger.info("%s at budget %s", name, budget or f"{full} (default)")
                outcome = mteb.evaluate(
                    view,
                    task,
                    cache=cache,
                    encode_kwargs=dict(encode_kwargs),
                    overwrite_strategy=overwrite_strategy,
                    co2_tracker=False,
                    show_progress_bar=False,
                )
                if budget is None:
                    continue
                for task_result in outcome.task_results:
                    result.task_results.setdefault(budget, []).append(task_result)
                    result.scores.setdefault(budget, {})[name] = float(task_result.get_score())
        finally:
            store.clear(name)
            if not preloaded:
                task.unload_data()
    result.wall_seconds = time.perf_counter() - started
    result.encode_calls = store.encode_calls
    return result


__all__ = ["SweepResult", "parse_budgets", "run_budget_sweep"]
