"""The MetaEmbed index: budget-major multi-vector storage, exact budgeted search, sharding, Qdrant.

- :class:`MetaEmbedIndex`: one index (in memory, memory-mapped from disk, on a GPU, or offloaded).
- :class:`ShardedIndex`: several indexes (files, devices) searched together with a top-k merge.
- :class:`QdrantMultiVectorIndex`: the same API on a Qdrant collection (needs ``qdrant-client``).

Example:
    >>> import torch
    >>> from metaembed.index import MetaEmbedIndex
    >>> index = MetaEmbedIndex(dim=8, max_candidate_vectors=4)
    >>> index.extend(["a", "b"], torch.nn.functional.normalize(torch.randn(2, 4, 8), dim=-1))
    >>> len(index.search(torch.randn(1, 2, 8), budget=(2, 4), k=5).ids[0])
    2
"""

from __future__ import annotations

from typing import Any

from .index import MetaEmbedIndex, SearchResult
from .quantization import STORAGE_DTYPES, bytes_per_vector, canonical_dtype
from .sharded import ShardedIndex
from .storage import CorruptIndexError
from .topk import merge_topk

__all__ = [
    "STORAGE_DTYPES",
    "CorruptIndexError",
    "MetaEmbedIndex",
    "QdrantMultiVectorIndex",
    "SearchResult",
    "ShardedIndex",
    "bytes_per_vector",
    "canonical_dtype",
    "merge_topk",
]


def __getattr__(name: str) -> Any:
    # The Qdrant backend imports qdrant-client, an optional dependency: load it on first use.
    if name == "QdrantMultiVectorIndex":
        from .qdrant import QdrantMultiVectorIndex

        return QdrantMultiVectorIndex
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
