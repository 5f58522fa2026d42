"""The 36 MMEB subsets as mteb retrieval tasks with per-query candidate lists.

Each subset becomes an ``AbsTaskRetrieval`` whose queries are scored only against their own candidates (mteb's
``top_ranked``), with Precision@1 as the main score. Precision@1 with a single positive per query is hit@1: the share
of queries whose positive ranks first.

Ties. mteb scores rankings with ``pytrec_eval``, which orders equal scores by document id, descending. Candidate ids
are ``c0000000, c0000001, ...`` in order of first appearance in the subset, so when two *distinct* candidates score
exactly the same, the one that appears later in the file ranks first. Identical candidates cannot tie: they are
de-duplicated by ``(text, image path)`` (see :mod:`.mmeb_data`). VLM2Vec's own scripts take ``argmax`` over each
row's list, which resolves every tie in favour of the positive (so a model that gives every input the same embedding
scores 100% there); the rule here does not reward such collapse. Each result also carries
``positive_tied_at_top``, the share of queries whose positive shares the top score with another candidate, so the
effect of ties is visible (it is 0 for any non-degenerate float model).

Example:
    >>> import mteb
    >>> from metaembed.evaluation.mmeb_tasks import get_mmeb_tasks
    >>> tasks = get_mmeb_tasks(["VOC2007", "MMEB-MSCOCO_t2i"], data_dir="path/to/MMEB-eval")
    >>> [task.metadata.main_score for task in tasks]
    ['precision_at_1', 'precision_at_1']
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any, ClassVar

from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.task_metadata import TaskMetadata

from .mmeb_data import load_mmeb_subset, resolve_data_dir
from .mmeb_subsets import (
    MMEB_CITATION,
    MMEB_PARQUET_NAME,
    MMEB_REPO_ID,
    MMEB_REVISION,
    MMEB_SPLIT,
    MMEB_SUBSETS,
    TASK_NAME_PREFIX,
    MMEBSubset,
)

MAIN_SCORE = "precision_at_1"
TIE_SCORE = "positive_tied_at_top"


class MMEBTask(AbsTaskRetrieval):
    """Base class of the MMEB tasks: loads one MMEB-eval subset and ranks each query among its own candidates.

    Args:
        data_dir: MMEB-eval root in the published layout; defaults to ``$METAEMBED_MMEB_DIR``, then the Hub copy at
            the pinned revision.
        image_dir: Folder the parquet image paths are relative to; defaults to where ``images.zip`` unzips.
    """

    # The instruction is inside every MMEB query text, as MMEB publishes it. It is not declared as the task prompt,
    # so no instruction-following model adds it a second time.
    subset: ClassVar[MMEBSubset]

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        image_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.data_dir = data_dir
        self.image_dir = image_dir

    def check_available(self) -> None:
        """Fails fast (before a model is loaded) when the subset's parquet file cannot be found.

        Raises:
            FileNotFoundError: naming the missing file or the unavailable Hub copy.
        """
        root = resolve_data_dir(self.data_dir, [self.subset.name], self.metadata.revision)
        parquet = root / self.subset.name / MMEB_PARQUET_NAME
        if not parquet.is_file():
            raise FileNotFoundError(
                f"MMEB subset {self.subset.name}: {parquet} does not exist. Expected one folder per subset holding "
                f"{MMEB_PARQUET_NAME}, as in {MMEB_REPO_ID}."
            )

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Reads the subset's parquet file (images stay on disk until a model reads them)."""
        if self.data_loaded:
            return
        split = load_mmeb_subset(
            self.subset, data_dir=self.data_dir, image_dir=self.image_dir, revision=self.metadata.revision
        )
        self.dataset = {"default": {MMEB_SPLIT: split}}
        self.data_loaded = True

    def task_specific_scores(
        self,
        scores: dict[str, dict[str, float]],
        qrels: dict[str, dict[str, int]],
        results: dict[str, dict[str, float]],
        hf_split: str,
        hf_subset: str,
    ) -> dict[str, float]:
        """Adds ``positive_tied_at_top``: the share of queries whose positive ties another candidate for first."""
        tied = 0
        for query_id, relevant in qrels.items():
            ranked = results.get(query_id, {})
            if not ranked:
                continue
            top = max(ranked.values())
            positives = [doc for doc in relevant if ranked.get(doc) == top]
            if positives and sum(1 for score in ranked.values() if score == top) > 1:
                tied += 1
        return {TIE_SCORE: tied / max(1, len(qrels))}


def _class_name(subset: MMEBSubset) -> str:
    return "MMEB" + re.sub(r"[^0-9A-Za-z]", "", subset.name.title())


def mmeb_task_metadata(subset: MMEBSubset) -> TaskMetadata:
    """The mteb ``TaskMetadata`` of an MMEB subset's task: published dataset, revision, metric, modalities.

    A task over the same layout elsewhere (for instance generated data) copies it and points ``dataset`` at its own.

    Example:
        >>> mmeb_task_metadata(MMEB_SUBSETS[0]).main_score
        'precision_at_1'
    """
    return TaskMetadata(
        name=subset.task_name,
        description=(
            f"MMEB {subset.meta_task} ({subset.domain}): {subset.description} Each query is ranked against its own "
            f"candidates (the first is the positive), de-duplicated by (text, image path). The task instruction is "
            f"part of every query text, as published: {subset.instruction!r}."
        ),
        reference="https://arxiv.org/abs/2410.05160",
        dataset={"path": MMEB_REPO_ID, "revision": MMEB_REVISION, "name": subset.name},
        type="Any2AnyRetrieval",
        category=subset.category,
        modalities=["text", "image"],
        eval_splits=[MMEB_SPLIT],
        eval_langs=["eng-Latn"],
        main_score=MAIN_SCORE,
        date=("2024-10-01", "2024-10-28"),
        license="apache-2.0",
        annotations_creators="derived",
        dialect=[],
        sample_creation="found",
        bibtex_citation=MMEB_CITATION,
    )


MMEB_TASK_CLASSES: dict[str, type[MMEBTask]] = {
    subset.task_name: type(
        _class_name(subset),
        (MMEBTask,),
        {"subset": subset, "metadata": mmeb_task_metadata(subset), "__module__": __name__},
    )
    for subset in MMEB_SUBSETS
}


def mmeb_task_name(name: str) -> str | None:
    """The mteb task name for a subset or task name (``"VOC2007"`` or ``"MMEB-VOC2007"``), None if unknown."""
    for candidate in (name, TASK_NAME_PREFIX + name):
        if candidate in MMEB_TASK_CLASSES:
            return candidate
    return None


def get_mmeb_tasks(
    names: Iterable[str] | None = None,
    data_dir: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
) -> list[MMEBTask]:
    """Instantiates MMEB tasks by subset or task name (all 36 when ``names`` is None).

    Raises:
        ValueError: for a name that is not an MMEB subset (use :func:`metaembed.evaluation.resolve_tasks` for mixed
            mteb and MMEB names with close-match suggestions).
    """
    selected = list(MMEB_TASK_CLASSES) if names is None else [mmeb_task_name(name) or name for name in names]
    unknown = [name for name in selected if name not in MMEB_TASK_CLASSES]
    if unknown:
        raise ValueError(f"Not MMEB subsets: {unknown}. Known: {[s.name for s in MMEB_SUBSETS]}.")
    return [MMEB_TASK_CLASSES[name](data_dir=data_dir, image_dir=image_dir) for name in selected]


__all__ = [
    "MAIN_SCORE",
    "MMEB_TASK_CLASSES",
    "TIE_SCORE",
    "MMEBTask",
    "get_mmeb_tasks",
    "mmeb_task_metadata",
    "mmeb_task_name",
]
