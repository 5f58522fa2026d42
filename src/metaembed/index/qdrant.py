"""A Qdrant backend: MetaEmbed candidates in a Qdrant collection, scored with its MAX_SIM multivectors.

**The budget scheme: one named multivector per served candidate budget.** Qdrant scores a multivector
query against *every* vector stored under a named vector; it has no way to read a prefix of a stored
multivector at query time. So the budget-major prefix of :class:`~metaembed.index.MetaEmbedIndex` does
not carry over, and each candidate budget ``r_c`` that should be served is stored as its own named
vector ``rc{r_c}`` holding the candidate's first ``r_c`` vectors (``Distance.DOT`` with the
``MAX_SIM`` comparator, so scores are the same sum of maxima as :func:`metaembed.scoring.maxsim`). The
query side costs nothing: the client sends the query's first ``r_q`` vectors.

- Storage is ``sum(budgets) / max(budgets)`` times one full copy: the paper's groups
  ``(1, 4, 8, 16, 64)`` store 93 vectors per candidate (1.45x); ``candidate_budgets=(1, 64)``, all a
  two-stage service needs, stores 65 (1.02x).
- Only the smallest budget gets an HNSW graph (``hnsw_m``): it is the first stage that must find
  candidates among all points. The larger budgets set ``m=0`` (no graph; building HNSW over
  multivectors is expensive): they are used to re-score a prefetched shortlist, which Qdrant does
  exactly. Two-stage search is one ``query_points`` call with a ``Prefetch``.
- Rejected alternatives: one collection per budget (payloads duplicated, no atomic upsert of an item
  across budgets, more collections to operate), and storing only the full multivector (serves no
  smaller budget at all).

Item ids are strings; Qdrant needs integers or UUIDs, so each point id is ``uuid5`` of the string id,
and the string id and the item's metadata are kept in the payload (``metaembed_id``, ``metadata``).
Adding an id that already exists replaces that point (Qdrant upsert semantics).

**Local mode and a cluster.** Tests run ``QdrantClient(":memory:")`` (or ``QdrantClient(path=...)``),
which needs no server. To use a Qdrant server or cluster, pass a client pointing at it; nothing else
changes::

    from qdrant_client import QdrantClient
    client = QdrantClient(url="https://my-cluster.example.com:6333", api_key="...")
    index = QdrantMultiVectorIndex(client, "my-docs", dim=3584, candidate_budgets=(1, 64))

On a distributed cluster, pass ``shard_number`` / ``replication_factor`` (forwarded to
``create_collection``) to spread the collection over the nodes.

Example:
    >>> import torch
    >>> from qdrant_client import QdrantClient
    >>> index = QdrantMultiVectorIndex(QdrantClient(":memory:"), "docs", dim=8, candidate_budgets=(1, 4))
    >>> vectors = torch.nn.functional.normalize(torch.randn(3, 4, 8), dim=-1)
    >>> index.extend(["a", "b", "c"], vectors)
    >>> index.search(vectors[2:3], budget=(4, 4), k=1).ids
    [['c']]
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..scoring import DEFAULT_BUDGETS, pad_queries, validate_budget
from .index import SearchResult, validate_items

__all__ = ["QdrantMultiVectorIndex"]

_ID_NAMESPACE = uuid.UUID("5b1c7c4e-6d0a-4a43-9a0e-6d6574616d62")  # fixed: point ids must be stable
_ID_KEY = "metaembed_id"
_METADATA_KEY = "metadata"


def _import_qdrant() -> Any:
    try:
        from qdrant_client import models
    except ImportError as error:
        raise ImportError(
            "The Qdrant backend needs qdrant-client: pip install 'metaembed[qdrant]' (or qdrant-client)."
        ) from error
    return models


def point_id(item_id: str) -> str:
    """The Qdrant point id (a UUID string) of an item id."""
    return str(uuid.uuid5(_ID_NAMESPACE, item_id))


class QdrantMultiVectorIndex:
    """MetaEmbed search on a Qdrant collection (see the module docstring for the design).

    Args:
        client: A ``qdrant_client.QdrantClient`` (local mode, server or cluster).
        collection_name: The collection; created if missing, else checked against ``dim`` and budgets.
        dim: Vector dimension.
        candidate_budgets: Candidate budgets ``r_c`` to serve, one named vector each. Defaults to the
            paper's ``(1, 4, 8, 16, 64)``.
        max_candidate_vectors: Most vectors per candidate; defaults to ``max(candidate_budgets)``.
        datatype: Qdrant storage datatype: ``"float32"`` (default) or ``"float16"`` (half the memory).
        on_disk: Keep the vectors on disk (memory-mapped by Qdrant) instead of in RAM.
        hnsw_m: HNSW graph degree of the smallest budget (the first stage); the others get no graph.
        **collection_kwargs: Forwarded to ``create_collection`` (e.g. ``shard_number``).

    Raises:
        ValueError: If the budgets are invalid, or an existing collection has other dimensions or budgets.
    """

    def __init__(
        self,
        client: Any,
        collection_name: str,
        *,
        dim: int,
        candidate_budgets: Sequence[int] | None = None,
        max_candidate_vectors: int | None = None,
        datatype: str = "float32",
        on_disk: bool = False,
        hnsw_m: int = 16,
        **collection_kwargs: Any,
    ) -> None:
        models = _import_qdrant()
        budgets = sorted(
            {r_c for _, r_c in DEFAULT_BUDGETS} if candidate_budgets is None else set(candidate_budgets)
        )
        if not budgets or any(not isinstance(r, int) or r < 1 for r in budgets):
            raise ValueError(f"candidate_budgets must be positive integers, got {candidate_budgets!r}.")
        self.client = client
        self.collection_name = collection_name
        self.dim = int(dim)
        self.candidate_budgets = tuple(budgets)
        self.max_candidate_vectors = int(max_candidate_vectors or budgets[-1])
        if budgets[-1] > self.max_candidate_vectors:
            raise ValueError(
                f"candidate_budgets {budgets} exceed max_candidate_vectors={self.max_candidate_vectors}."
            )
        datatypes = {"float32": models.Datatype.FLOAT32, "float16": models.Datatype.FLOAT16}
        if datatype not in datatypes:
            raise ValueError(f"datatype must be one of {sorted(datatypes)}, got {datatype!r}.")
        if client.collection_exists(collection_name):
            self._check_existing()
        else:
            vectors_config = {
                self.vector_name(r): models.VectorParams(
                    size=self.dim,
                    distance=models.Distance.DOT,
                    multivector_config=models.MultiVectorConfig(
                        comparator=models.MultiVectorComparator.MAX_SIM
                    ),
                    hnsw_config=models.HnswConfigDiff(m=hnsw_m if r == budgets[0] else 0),
                    datatype=datatypes[datatype],
                    on_disk=on_disk,
                )
                for r in budgets
            }
            client.create_collection(collection_name, vectors_config=vectors_config, **collection_kwargs)

    @staticmethod
    def vector_name(r_c: int) -> str:
        """The named vector that holds the first ``r_c`` vectors of every candidate."""
        return f"rc{r_c}"

    def _check_existing(self) -> None:
        info = self.client.get_collection(self.collection_name)
        vectors = info.config.params.vectors
        if not isinstance(vectors, dict):
            raise ValueError(
                f"Collection {self.collection_name!r} has no named vectors; it was not made by metaembed."
            )
        for r in self.candidate_budgets:
            params = vectors.get(self.vector_name(r))
            if params is None:
                raise ValueError(
                    f"Collection {self.collection_name!r} has no vector {self.vector_name(r)!r} (it serves "
                    f"{sorted(vectors)}); pass candidate_budgets matching the collection."
                )
            if params.size != self.dim:
                raise ValueError(
                    f"Dimension mismatch: collection {self.collection_name!r} stores d={params.size}, got dim={self.dim}."
                )

    def __len__(self) -> int:
        return int(self.client.count(self.collection_name, exact=True).count)

    def extend(
        self,
        ids: Sequence[str],
        embeddings: Tensor | Sequence[Tensor],
        metadata: Sequence[Any] | None = None,
        *,
        batch_size: int = 64,
    ) -> None:
        """Upserts a batch of items (same checks as :meth:`MetaEmbedIndex.extend`).

        Each item's first ``r_c`` vectors go to the named vector of every served budget ``r_c`` (all
        its vectors when it has fewer).
        """
        models = _import_qdrant()
        ids = list(ids)
        metadata = [None] * len(ids) if metadata is None else list(metadata)
        padded, lengths = validate_items(
            ids, embeddings, metadata, dim=self.dim, max_candidate_vectors=self.max_candidate_vectors
        )
        values = padded.to(torch.float32)
        for start in range(0, len(ids), batch_size):
            points = []
            for i in range(start, min(len(ids), start + batch_size)):
                length = int(lengths[i])
                vector = {
                    self.vector_name(r): values[i, : min(r, length)].tolist() for r in self.candidate_budgets
                }
                payload = {_ID_KEY: ids[i], _METADATA_KEY: metadata[i]}
                points.append(models.PointStruct(id=point_id(ids[i]), vector=vector, payload=payload))
            self.client.upsert(self.collection_name, points=points, wait=True)

    def append(self, item_id: str, vectors: Tensor, metadata: Any = None) -> None:
        """Upserts one item with vectors ``[r, d]``."""
        self.extend([item_id], [torch.as_tensor(vectors)], [metadata])

    def _check_rc(self, r_c: int) -> None:
        if r_c not in self.candidate_budgets:
            raise ValueError(
                f"This collection serves candidate budgets {list(self.candidate_budgets)}; r_c={r_c} is not "
                "one of them. Pick one, or create the collection with that budget in candidate_budgets."
            )

    def search(
        self,
        queries: Any,
        budget: Sequence[int] | None = None,
        k: int = 10,
        *,
        first_stage: Sequence[int] | None = None,
        rerank: Sequence[int] | None = None,
        candidates: int = 1000,
    ) -> SearchResult:
        """Top-``k`` items per query, exhaustively at ``budget`` or in two stages via a Qdrant prefetch.

        Args:
            queries: ``[n_q, r, d]``, one ``[r, d]`` query, or a list of ``[r_i, d]`` tensors.
            budget: ``(r_q, r_c)``; ``r_c`` must be a served candidate budget. Defaults to every query
                vector and the largest served budget.
            k: Results per query.
            first_stage: Budget of the shortlist (two-stage), e.g. ``(1, 1)``.
            rerank: Budget of the re-scoring stage (two-stage); defaults to the largest served budget.
            candidates: Shortlist size per query.

        Returns:
            A :class:`~metaembed.index.SearchResult`; ``positions`` are -1 (Qdrant has no row order) and
            rows with fewer than ``k`` hits are padded with score ``-inf``.
        """
        models = _import_qdrant()
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}.")
        padded, lengths = pad_queries(queries)
        if padded.shape[-1] != self.dim:
            raise ValueError(
                f"Dimension mismatch: queries have d={padded.shape[-1]}, the collection d={self.dim}."
            )
        if not bool(torch.isfinite(padded).all()):
            raise ValueError("Queries contain NaN or inf values.")
        largest = self.candidate_budgets[-1]
        two_stage = first_stage is not None or rerank is not None
        if two_stage and budget is not None:
            raise ValueError(
                "Pass either budget= (one stage) or first_stage=/rerank= (two stages), not both."
            )
        main = rerank if two_stage else budget
        default = (padded.shape[1], largest)
        r_q, r_c = validate_budget(
            main or default, max_query_vectors=padded.shape[1], max_candidate_vectors=largest
        )
        self._check_rc(r_c)
        prefetch_budget = None
        if two_stage:
            prefetch_budget = validate_budget(
                first_stage or (1, self.candidate_budgets[0]),
                max_query_vectors=padded.shape[1],
                max_candidate_vectors=largest,
            )
            self._check_rc(prefetch_budget[1])
        values = padded.to(torch.float32)
        requests = []
        for i in range(values.shape[0]):
            length = max(1, int(lengths[i]))
            prefetch = None
            if prefetch_budget is not None:
                f_q, f_c = prefetch_budget
                prefetch = models.Prefetch(
                    query=values[i, : min(f_q, length)].tolist(),
                    using=self.vector_name(f_c),
                    limit=max(candidates, k),
                )
            requests.append(
                models.QueryRequest(
                    query=values[i, : min(r_q, length)].tolist(),
                    using=self.vector_name(r_c),
                    prefetch=prefetch,
                    limit=k,
                    with_payload=[_ID_KEY],
                )
            )
        responses = self.client.query_batch_points(self.collection_name, requests=requests)
        width = max((len(r.points) for r in responses), default=0)
        scores = torch.full((len(responses), width), float("-inf"))
        ids = []
        for row, response in enumerate(responses):
            ids.append([point.payload[_ID_KEY] for point in response.points])
            for column, point in enumerate(response.points):
                scores[row, column] = point.score
        positions = torch.full((len(responses), width), -1, dtype=torch.int64)
        return SearchResult(ids=ids, scores=scores, positions=positions)

    def get_metadata(self, item_id: str) -> Any:
        """The metadata stored with an item."""
        points = self.client.retrieve(self.collection_name, ids=[point_id(item_id)], with_payload=True)
        if not points:
            raise KeyError(f"No item with id {item_id!r} in collection {self.collection_name!r}.")
        return points[0].payload.get(_METADATA_KEY)
