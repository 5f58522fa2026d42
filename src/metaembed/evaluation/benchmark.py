"""The ``MMEB`` benchmark object and MMEB's aggregate scores.

MMEB reports, all as unweighted means of the subsets' Precision@1: one average per meta task (classification, VQA,
retrieval, visual grounding), the in-domain (20 subsets) and out-of-domain (16) averages, and the overall mean of the
36.

Example:
    >>> from metaembed.evaluation.benchmark import summarize_mmeb
    >>> summarize_mmeb({"MMEB-VOC2007": 0.25, "MMEB-MSCOCO_t2i": 0.5, "MMEB-RefCOCO": 0.75})
    {'Classification': 0.25, 'Retrieval': 0.5, 'Visual Grounding': 0.75, 'IND': 0.375, 'OOD': 0.75, 'Overall': 0.5}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mteb.benchmarks.benchmark import Benchmark, BenchmarkAggregation, CustomGroup, CustomGrouping

from .mmeb_subsets import DOMAINS, META_TASKS, MMEB_CITATION, SUBSETS_BY_NAME, TASK_NAME_PREFIX
from .mmeb_tasks import get_mmeb_tasks

if TYPE_CHECKING:
    from mteb.results import ModelResult

OVERALL = "Overall"
META_TASK_GROUPING = "Meta task"
DOMAIN_GROUPING = "Domain"


def summarize_mmeb(scores: Mapping[str, float]) -> dict[str, float]:
    """MMEB's averages over the subsets present in ``scores``.

    Args:
        scores: mteb task name (``"MMEB-VOC2007"``) or subset name -> main score. Non-MMEB names are ignored.

    Returns:
        One entry per meta task and domain that has at least one subset in ``scores``, in MMEB's order, then
        ``"Overall"``, the mean of every MMEB subset present (the mean of the 36 on a full run).
    """
    present: dict[str, float] = {}
    for name, score in scores.items():
        subset_name = name.removeprefix(TASK_NAME_PREFIX)
        if subset_name in SUBSETS_BY_NAME:
            present[subset_name] = float(score)
    summary: dict[str, float] = {}
    for label, attribute in [*((m, "meta_task") for m in META_TASKS), *((d, "domain") for d in DOMAINS)]:
        values = [
            score for name, score in present.items() if getattr(SUBSETS_BY_NAME[name], attribute) == label
        ]
        if values:
            summary[label] = sum(values) / len(values)
    if present:
        summary[OVERALL] = sum(present.values()) / len(present)
    return summary


class MMEBBenchmark(Benchmark):
    """MMEB as an mteb ``Benchmark``, scored the way MMEB reports it.

    ``get_score`` returns ``"Mean(Task)"`` (the overall mean), ``"Meta task::<meta task>"`` and ``"Domain::IND"`` /
    ``"Domain::OOD"`` per model, from the task results alone (the MMEB tasks live in this package, not in mteb's task
    registry, so nothing is looked up by name).
    """

    def _get_model_score(self, model_result: ModelResult) -> dict[str, float | None]:
        filtered = model_result.select_tasks(self.tasks).task_results
        if len(filtered) < len(self.tasks):
            missing = sorted({task.metadata.name for task in self.tasks} - {tr.task_name for tr in filtered})
            raise ValueError(f"Some scores of benchmark are missing: {missing}.")
        summary = summarize_mmeb({tr.task_name: tr.get_score() for tr in filtered})
        scores: dict[str, float | None] = {"Mean(Task)": summary.get(OVERALL)}
        scores.update({f"{META_TASK_GROUPING}::{m}": summary.get(m) for m in META_TASKS})
        scores.update({f"{DOMAIN_GROUPING}::{d}": summary.get(d) for d in DOMAINS})
        return scores


def get_mmeb_benchmark(
    data_dir: str | os.PathLike | None = None, image_dir: str | os.PathLike | None = None
) -> MMEBBenchmark:
    """The ``MMEB`` benchmark: the 36 MMEB tasks, reading data from ``data_dir`` (see :class:`.MMEBTask`).

    Example:
        >>> benchmark = get_mmeb_benchmark()
        >>> len(benchmark.tasks), benchmark.name
        (36, 'MMEB')
    """
    tasks = get_mmeb_tasks(data_dir=data_dir, image_dir=image_dir)
    by_name: dict[str, Any] = {task.metadata.name.removeprefix(TASK_NAME_PREFIX): task for task in tasks}

    def grouping(name: str, attribute: str, labels: tuple[str, ...]) -> CustomGrouping:
        return CustomGrouping(
            name=name,
            groups=[
                CustomGroup(
                    label=label,
                    tasks=[
                        task
                        for key, task in by_name.items()
                        if getattr(SUBSETS_BY_NAME[key], attribute) == label
                    ],
                )
                for label in labels
            ],
        )

    return MMEBBenchmark(
        name="MMEB",
        tasks=tasks,
        description=(
            "Massive Multimodal Embedding Benchmark: 36 datasets in four meta tasks (classification, VQA, retrieval, "
            "visual grounding), 20 in-domain and 16 out-of-domain. Each query is ranked against its own candidates; "
            "the score is Precision@1."
        ),
        reference="https://arxiv.org/abs/2410.05160",
        citation=MMEB_CITATION,
        aggregations=(
            BenchmarkAggregation.MEAN_TASK,
            grouping(META_TASK_GROUPING, "meta_task", META_TASKS),
            grouping(DOMAIN_GROUPING, "domain", DOMAINS),
        ),
    )


__all__ = ["OVERALL", "MMEBBenchmark", "get_mmeb_benchmark", "summarize_mmeb"]
