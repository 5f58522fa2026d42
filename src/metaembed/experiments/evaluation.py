"""Scoring a trained model on the exported shape subsets through the project's mteb MMEB path, at every budget.

The test split is exported in MMEB-eval's layout (:func:`metaembed.data.compositional.export_mmeb`); each family
becomes an :class:`metaembed.evaluation.MMEBSubset` and an ``MMEBTask`` reading that folder, exactly as a published
MMEB subset is read (``<|image_1|>`` removed, candidates de-duplicated by ``(text, image path)``, Precision@1 over
each query's own list, ties resolved as mteb does: see :mod:`metaembed.evaluation.mmeb_tasks`). The model is saved
as a checkpoint and loaded back by :class:`metaembed.evaluation.MetaEmbedWrapper`, and
:func:`metaembed.evaluation.run_budget_sweep` encodes every input once at the full budget and scores every budget
from prefixes of those vectors.

Example:
    >>> scores = evaluate_checkpoint("ckpt", "shapes-mmeb", ["t2i", "vqa"], budgets=[(1, 1), (16, 64)])
    >>> sorted(scores)
    ['16x64', '1x1']
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Sequence
from typing import Any

from ..data.compositional import (
    CLASSIFICATION_INSTRUCTION,
    GROUNDING_INSTRUCTION,
    I2T_INSTRUCTION,
    META_TASKS,
    SUBSET_NAMES,
    T2I_INSTRUCTION,
    VQA_INSTRUCTION,
)

logger = logging.getLogger(__name__)

# mteb category (query modalities 2 candidate modalities; MMEB text always carries an instruction) and description.
_SUBSET_INFO: dict[str, tuple[str, str, str]] = {
    "t2i": (
        "t2it",
        T2I_INSTRUCTION,
        "Generated shape scenes: caption to image, one-edit hard negative images.",
    ),
    "i2t": (
        "it2t",
        I2T_INSTRUCTION,
        "Generated shape scenes: image to caption, one-edit hard negative captions.",
    ),
    "classification": (
        "it2t",
        CLASSIFICATION_INSTRUCTION,
        "Generated shapes: count, colour and shape labels.",
    ),
    "vqa": ("it2t", VQA_INSTRUCTION, "Generated shape scenes: colour, shape, count and relation questions."),
    "grounding": (
        "it2t",
        GROUNDING_INSTRUCTION,
        "Generated shape scenes: referring expression to description.",
    ),
}


def budget_name(budget: Sequence[int]) -> str:
    """``(2, 4)`` -> ``"2x4"``, the key of a budget in results."""
    return f"{budget[0]}x{budget[1]}"


def shapes_subset(family: str) -> Any:
    """The :class:`~metaembed.evaluation.MMEBSubset` of a shape task family (all generated subsets are "OOD")."""
    from ..evaluation import MMEBSubset

    category, instruction, description = _SUBSET_INFO[family]
    return MMEBSubset(
        SUBSET_NAMES[family], META_TASKS[family], "OOD", category, instruction.strip(), description
    )


@functools.cache
def _task_class(family: str) -> type:
    from ..evaluation import MMEBTask
    from ..evaluation.mmeb_tasks import mmeb_task_metadata

    subset = shapes_subset(family)
    # MMEB's metadata with the dataset pointed at generated data: nothing of it exists on the Hub.
    metadata = mmeb_task_metadata(subset).model_copy(
        update={
            "dataset": {"path": "generated/metaembed-shapes", "revision": "v1", "name": subset.name},
            "reference": None,
            "date": None,
            "bibtex_citation": "",
            "license": "apache-2.0",
        }
    )
    name = "ShapesTask" + re.sub(r"[^0-9A-Za-z]", "", subset.name)
    return type(name, (MMEBTask,), {"subset": subset, "metadata": metadata, "__module__": __name__})


def shapes_mmeb_tasks(data_dir: str | os.PathLike, families: Sequence[str]) -> list[Any]:
    """mteb tasks (``MMEBTask``) over the shape subsets exported under ``data_dir``."""
    unknown = [f for f in families if f not in SUBSET_NAMES]
    if unknown:
        raise ValueError(f"Unknown task families {unknown}; choose among {list(SUBSET_NAMES)}.")
    return [_task_class(family)(data_dir=os.fspath(data_dir)) for family in families]


def evaluate_checkpoint(
    checkpoint_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    families: Sequence[str],
    budgets: Sequence[Sequence[int]],
    *,
    device: str | None = None,
    batch_size: int = 64,
    name: str | None = None,
    results_dir: str | os.PathLike | None = None,
) -> dict[str, dict[str, float]]:
    """Precision@1 of a saved checkpoint on the exported shape subsets, at every budget, through mteb.

    Args:
        checkpoint_dir: A directory written by :func:`metaembed.checkpoint.save_checkpoint`.
        data_dir: The MMEB-layout export of the test split.
        families: Task families to score.
        budgets: `(r_q, r_c)` pairs, validated by the checkpoint's config.
        device: Where to encode (CUDA when available by default).
        batch_size: Items per forward pass.
        name: ``org/name`` recorded in mteb's results.
        results_dir: Where mteb writes its result files (kept in memory when None).

    Returns:
        ``{budget name: {family: precision@1 in [0, 1]}}``.
    """
    import mteb

    from ..evaluation import MetaEmbedWrapper, run_budget_sweep

    wrapper = MetaEmbedWrapper(
        os.fspath(checkpoint_dir), device=device, backend="transformers", dtype="float32", name=name
    )
    tasks = shapes_mmeb_tasks(data_dir, families)
    sweep = run_budget_sweep(
        wrapper,
        tasks,
        [tuple(b) for b in budgets],
        cache=mteb.ResultCache(os.fspath(results_dir)) if results_dir is not None else None,
        encode_kwargs={"batch_size": batch_size},
        overwrite_strategy="always",
        record_default=False,
    )
    family_of = {task.metadata.name: family for task, family in zip(tasks, families)}
    return {
        budget_name(budget): {family_of[task]: float(score) for task, score in scores.items()}
        for budget, scores in sorted(sweep.scores.items())
    }


__all__ = ["budget_name", "evaluate_checkpoint", "shapes_mmeb_tasks", "shapes_subset"]
