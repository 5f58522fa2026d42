"""``ShardedIndex``: several indexes (on disk, in memory, on different devices) searched as one.

Each shard answers its own top-``k`` and the lists are merged (score descending, ties to the earlier
shard and position), which is exactly the single-index result: every global top-``k`` item is in its
shard's top-``k``. Positions are global: shard ``s``'s rows are offset by the sizes of shards ``< s``.

Example:
    >>> import torch
    >>> from metaembed.index import MetaEmbedIndex, ShardedIndex
    >>> vectors = torch.nn.functional.normalize(torch.randn(6, 2, 8), dim=-1)
    >>> shards = [MetaEmbedIndex(dim=8, max_candidate_vectors=2, dtype="float32") for _ in range(2)]
    >>> shards[0].extend(["a", "b", "c"], vectors[:3])
    >>> shards[1].extend(["d", "e", "f"], vectors[3:])
    >>> ShardedIndex(shards).search(vectors[4:5], k=1).ids
    [['e']]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .index import MetaEmbedIndex, SearchResult
from .topk import merge_topk

__all__ = ["ShardedIndex"]


class ShardedIndex:
    """Searches several :class:`MetaEmbedIndex` shards together and merges their top-k lists.

    Args:
        shards: The shards, in order. They must agree on ``dim`` and ``max_candidate_vectors``; their
            dtypes and devices may differ. Ids must be unique across shards.

    Raises:
        ValueError: If the shards disagree on dimension or vectors per candidate, or share an id.
    """

    def __init__(self, shards: Sequence[MetaEmbedIndex]) -> None:
        shards = list(shards)
        if not shards:
            raise ValueError("A ShardedIndex needs at least one shard.")
        dims = {(s.dim, s.max_candidate_vectors) for s in shards}
        if len(dims) != 1:
            raise ValueError(
                f"Shards disagree on (dim, max_candidate_vectors): {sorted(dims)}; every shard must hold "
                "vectors of the same model."
            )
        seen: set[str] = set()
        for number, shard in enumerate(shards):
            shared = seen.intersection(shard.ids)
            if shared:
                raise ValueError(f"Shard {number} repeats ids of earlier shards, e.g. {sorted(shared)[:3]}.")
            seen.update(shard.ids)
        self.shards = shards

    @classmethod
    def open(
        cls,
        paths: Sequence[str | Path],
        *,
        devices: Sequence[str | torch.device] | None = None,
        **kwargs: Any,
    ) -> ShardedIndex:
        """Opens one saved index per path, shard ``i`` on ``devices[i]`` (default: all on the CPU).

        Other keyword arguments go to :meth:`MetaEmbedIndex.open`.
        """
        devices = list(devices) if devices is not None else ["cpu"] * len(paths)
        if len(devices) != len(paths):
            raise ValueError(f"Got {len(paths)} paths but {len(devices)} devices.")
        return cls([MetaEmbedIndex.open(p, device=d, **kwargs) for p, d in zip(paths, devices)])

    @property
    def dim(self) -> int:
        return self.shards[0].dim

    @property
    def max_candidate_vectors(self) -> int:
        return self.shards[0].max_candidate_vectors

    def __len__(self) -> int:
        return sum(len(s) for s in self.shards)

    def __contains__(self, item_id: object) -> bool:
        return any(item_id in shard for shard in self.shards)

    def get_metadata(self, item_id: str) -> Any:
        """The metadata stored with an item, from whichever shard holds it."""
        for shard in self.shards:
            if item_id in shard:
                return shard.get_metadata(item_id)
        raise KeyError(f"No item with id {item_id!r} in any of the {len(self.shards)} shards.")

    def nbytes(self, r_c: int | None = None) -> int:
        """Exact bytes a search at budget ``r_c`` reads over every shard."""
        return sum(s.nbytes(r_c) for s in self.shards)

    def search(
        self, queries: Any, budget: Sequence[int] | None = None, k: int = 10, **kwargs: Any
    ) -> SearchResult:
        """Searches every shard (same arguments as :meth:`MetaEmbedIndex.search`) and merges the top-k.

        With two-stage arguments each shard shortlists ``candidates`` of its own items, so the merged
        shortlist holds at least the single-index one.
        """
        scores, positions = [], []
        offset = 0
        for shard in self.shards:
            if len(shard):
                result = shard.search(queries, budget, k, **kwargs)
                scores.append(result.scores)
                positions.append(result.positions + offset)
            offset += len(shard)
        if not scores:
            raise ValueError("Every shard is empty: add items before searching.")
        merged_scores, merged_positions = merge_topk(scores, positions, k)
        starts = []
        offset = 0
        for shard in self.shards:
            starts.append((offset, shard))
            offset += len(shard)
        ids = [[self._id_at(p, starts) for p in row] for row in merged_positions.tolist()]
        return SearchResult(ids=ids, scores=merged_scores, positions=merged_positions)

    @staticmethod
    def _id_at(position: int, starts: list[tuple[int, MetaEmbedIndex]]) -> str:
        for start, shard in reversed(starts):
            if position >= start:
                return shard._ids[position - start]
        raise AssertionError("position before the first shard")  # pragma: no cover
