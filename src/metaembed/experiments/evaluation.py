"""Scoring a model on subsets exported in MMEB-eval's layout, at every budget, from one encoding pass.

Every query is encoded once at the full query budget and every distinct candidate once at the full candidate
budget; each budget ``(r_q, r_c)`` then reads prefixes of those vectors (for a causal backbone the prefix *is* the
budgeted encoding). The metric is MMEB's Precision@1: the share of queries whose positive (the first candidate)
scores above every other candidate of its own list.

The data side follows MMEB-eval exactly: ``<|image_1|>`` is removed from texts, ``""`` means no image, image paths
are relative to ``<root>/images``, and candidates are de-duplicated by ``(text, image path)`` within a subset.

Ties: a positive that ties with another candidate counts as a miss (a model that gives every input the same vector
scores 0, never 100%).

Example:
    >>> scores = score_mmeb_layout(model, processor, "shapes-mmeb", ["ShapesT2I"], budgets=[(1, 1), (2, 4)])
    >>> sorted(scores)
    ['1x1', '2x4']
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.compositional import IMAGES_DIR, MMEB_IMAGE_MARKER, PARQUET_NAME
from ..modeling_metaembed import maxsim_scores

logger = logging.getLogger(__name__)


def budget_name(budget: Sequence[int]) -> str:
    """``(2, 4)`` -> ``"2x4"``, the key of a budget in results."""
    return f"{budget[0]}x{budget[1]}"


def _read_subset(root: Path, subset: str) -> tuple[list[Any], list[Any], list[list[int]]]:
    """Queries, distinct candidates and each query's candidate indices (positive first) of one subset."""
    import pyarrow.parquet as pq

    path = root / subset / PARQUET_NAME
    if not path.is_file():
        raise FileNotFoundError(f"No {PARQUET_NAME} for subset {subset!r} under {root} (looked for {path}).")
    table = pq.read_table(path).to_pydict()
    image_root = root / IMAGES_DIR

    def item(text: str, image: str, row: int) -> Any:
        text = text.replace(MMEB_IMAGE_MARKER.strip(), "").strip()
        if not image:
            return text
        file = image_root / image
        if not file.is_file():
            raise FileNotFoundError(f"{subset} row {row}: image {image!r} is missing (looked for {file}).")
        return {"text": text or None, "image": str(file)}

    queries = [item(t, i, row) for row, (t, i) in enumerate(zip(table["qry_text"], table["qry_img_path"]))]
    index: dict[tuple[str, str], int] = {}
    candidates: list[Any] = []
    lists: list[list[int]] = []
    for row, (texts, images) in enumerate(zip(table["tgt_text"], table["tgt_img_path"])):
        ids: list[int] = []
        for text, image in zip(texts, images):
            key = (text, image)
            if key not in index:
                index[key] = len(candidates)
                candidates.append(item(text, image, row))
            if index[key] not in ids:
                ids.append(index[key])
        lists.append(ids)
    return queries, candidates, lists


def precision_at_1(scores: torch.Tensor, lists: Sequence[Sequence[int]]) -> float:
    """Share of queries whose first listed candidate scores strictly above the others of its list.

    Example:
        >>> precision_at_1(torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.2, 0.1]]), [[0, 1, 2], [0, 1]])
        0.5
    """
    hits = 0
    for row, ids in enumerate(lists):
        values = scores[row, list(ids)]
        hits += bool(len(ids) == 1 or values[0] > values[1:].max())
    return hits / len(lists)


def score_mmeb_layout(
    model: Any,
    processor: Any,
    root: str | os.PathLike,
    subsets: Sequence[str],
    budgets: Sequence[Sequence[int]],
    batch_size: int = 64,
) -> dict[str, dict[str, float]]:
    """Precision@1 of ``model`` on MMEB-layout ``subsets`` under ``root``, at every budget.

    Args:
        model: A `MetaEmbedModel` (on any device; embeddings come back on the CPU).
        processor: Its `MetaEmbedProcessor`.
        root: Directory with ``<subset>/test-00000-of-00001.parquet`` and ``images/``.
        subsets: Subset folder names.
        budgets: `(r_q, r_c)` pairs, each validated by the model's config.
        batch_size: Items per forward pass.

    Returns:
        ``{budget name: {subset: precision@1}}``.
    """
    root = Path(root)
    budgets = [model.config.check_budget_pair(tuple(b)) for b in budgets]
    results: dict[str, dict[str, float]] = {budget_name(b): {} for b in budgets}
    model.eval()
    for subset in subsets:
        queries, candidates, lists = _read_subset(root, subset)
        query_vectors = model.encode_queries(queries, processor, batch_size=batch_size)
        candidate_vectors = model.encode_candidates(candidates, processor, batch_size=batch_size)
        for r_q, r_c in budgets:
            scores = maxsim_scores(query_vectors[:, :r_q], candidate_vectors[:, :r_c])
            results[budget_name((r_q, r_c))][subset] = precision_at_1(scores, lists)
        logger.info(
            "%s: %d queries, %d distinct candidates, P@1 %s",
            subset,
            len(queries),
            len(candidates),
            {name: round(r[subset], 3) for name, r in results.items()},
        )
    return results


__all__ = ["budget_name", "precision_at_1", "score_mmeb_layout"]
