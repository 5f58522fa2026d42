"""``MetaEmbedIndex``: candidates stored once at their full budget, searched at any smaller one.

Vectors are stored budget-major, ``[r_c_max, N, d]``: slot ``j`` holds the ``j``-th vector of every
candidate, so the candidates at budget ``r_c`` are the contiguous prefix ``[:r_c]`` and a search at
``r_c`` reads ``r_c / r_c_max`` of the bytes. Items arrive in blocks (segments, one per batch of
appends, merged when small); each segment is one budget-major tensor and one safetensors file on disk
(see :mod:`metaembed.index.storage`).

Placement (``device`` and ``offload``):

- ``device="cpu"``: vectors in CPU memory (or memory-mapped from disk), scored on the CPU.
- ``device="cuda"``: vectors in GPU memory, scored on the GPU.
- ``device="cuda", offload=True``: vectors stay in CPU memory (pinned when built in memory,
  memory-mapped when opened) and blocks of them are streamed to the GPU, a memory budget at a time.

Example:
    >>> import torch
    >>> from metaembed.index import MetaEmbedIndex
    >>> index = MetaEmbedIndex(dim=8, max_candidate_vectors=4, dtype="float32")
    >>> vectors = torch.nn.functional.normalize(torch.randn(3, 4, 8), dim=-1)
    >>> index.extend(["a", "b", "c"], vectors, metadata=[{"page": 1}, None, None])
    >>> result = index.search(vectors[1:2], budget=(2, 4), k=2)
    >>> result.ids[0][0]
    'b'
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..scoring import (
    DEFAULT_CHUNK_BYTES,
    Budget,
    iter_block_scores,
    pad_candidates,
    pad_queries,
    score_slots,
    validate_budget,
)
from . import storage
from .quantization import (
    STORAGE_DTYPES,
    bytes_per_vector,
    canonical_dtype,
    dequantize,
    quantize,
)
from .topk import RunningTopK

logger = logging.getLogger(__name__)

__all__ = ["MetaEmbedIndex", "SearchResult", "validate_items"]

# An in-memory segment smaller than this absorbs the next appended batch (so appending one item at a
# time does not leave thousands of tiny segments), bounding the copy each merge costs.
_MERGE_LIMIT_BYTES = 256 * 2**20
_OPEN_RETRIES = 5


@dataclass
class SearchResult:
    """Ranked results of a search: row ``i`` belongs to query ``i``, best first.

    Attributes:
        ids: The item ids, ``n_q`` lists of up to ``k`` strings.
        scores: float32 ``[n_q, k']`` MaxSim scores, ``k' = min(k, len(index))``.
        positions: int64 ``[n_q, k']`` row numbers of the items in the index (insertion order).
    """

    ids: list[list[str]]
    scores: Tensor
    positions: Tensor


@dataclass
class _Segment:
    vectors: Tensor  # [r_c_max, n, d], storage dtype, on the storage device
    scales: Tensor | None  # [r_c_max, n] float32, same device
    lengths: Tensor  # [n] int32, CPU
    info: storage.SegmentInfo | None = None  # set once persisted in the index's directory

    @property
    def count(self) -> int:
        return self.vectors.shape[1]


class MetaEmbedIndex:
    """A budget-major multi-vector index with exact budgeted MaxSim search.

    Args:
        dim: Vector dimension ``d``.
        max_candidate_vectors: Vectors stored per candidate (``r_c_max``; 64 in the paper). Items with
            fewer vectors are padded by repeating their last one, which leaves MaxSim unchanged.
        dtype: Storage dtype: ``"bfloat16"`` (default), ``"float16"``, ``"float8_e4m3"``, ``"int8"``
            (both with a float32 scale per vector) or ``"float32"``.
        device: Compute device (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
        offload: Keep vectors in CPU memory and stream blocks to ``device`` (for GPU indexes larger
            than GPU memory).
        chunk_bytes: Memory budget for the temporaries (and streamed blocks) of one scoring block;
            defaults to :data:`metaembed.scoring.DEFAULT_CHUNK_BYTES` (4x on CUDA).
        strategy: GEMM layout of the scoring kernel, see :func:`metaembed.scoring.iter_block_scores`.

    Example:
        >>> index = MetaEmbedIndex(dim=4, max_candidate_vectors=2, dtype="int8")
        >>> index.append("doc-1", torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]), {"title": "one"})
        >>> len(index), index.bytes_per_candidate(), index.get_metadata("doc-1")
        (1, 16, {'title': 'one'})
    """

    def __init__(
        self,
        dim: int,
        *,
        max_candidate_vectors: int = 64,
        dtype: str | torch.dtype = "bfloat16",
        device: str | torch.device = "cpu",
        offload: bool = False,
        chunk_bytes: int | None = None,
        strategy: str = "auto",
    ) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}.")
        if not isinstance(max_candidate_vectors, int) or max_candidate_vectors < 1:
            raise ValueError(
                f"max_candidate_vectors must be a positive integer, got {max_candidate_vectors!r}."
            )
        self.dim = dim
        self.max_candidate_vectors = max_candidate_vectors
        self.dtype = canonical_dtype(dtype)
        self.device = torch.device(device)
        self.offload = bool(offload)
        self.chunk_bytes = chunk_bytes
        self.strategy = strategy
        self._segments: list[_Segment] = []
        self._pending: list[tuple[Tensor, Tensor | None, Tensor]] = []
        self._ids: list[str] = []
        self._metadata: list[Any] = []
        self._positions: dict[str, int] = {}
        self._path: Path | None = None
        self._generation = 0
        self._faiss: Any = None

    # ----------------------------------------------------------------------------------------------
    # Properties and memory
    # ----------------------------------------------------------------------------------------------

    @property
    def storage_device(self) -> torch.device:
        """Where the vectors live: the CPU when offloaded, else the compute device."""
        return torch.device("cpu") if self.offload else self.device

    @property
    def ids(self) -> list[str]:
        """Item ids in insertion order (a copy)."""
        return list(self._ids)

    @property
    def path(self) -> Path | None:
        """The directory this index was opened from or last saved to."""
        return self._path

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._positions

    def __repr__(self) -> str:
        return (
            f"MetaEmbedIndex(items={len(self)}, dim={self.dim}, max_candidate_vectors="
            f"{self.max_candidate_vectors}, dtype={self.dtype!r}, device={str(self.device)!r}, "
            f"offload={self.offload}, segments={len(self._segments) + bool(self._pending)})"
        )

    def bytes_per_candidate(self, r_c: int | None = None) -> int:
        """Exact bytes a search at budget ``r_c`` reads per candidate (vectors and their scales)."""
        r_c = self.max_candidate_vectors if r_c is None else self._check_rc(r_c)
        return r_c * bytes_per_vector(self.dtype, self.dim)

    def nbytes(self, r_c: int | None = None) -> int:
        """Exact bytes a search at budget ``r_c`` reads: ``len(index) * bytes_per_candidate(r_c)``."""
        return len(self) * self.bytes_per_candidate(r_c)

    def memory_report(self, budgets: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Bytes read per budget, next to the ideal ``N * r_c * d * itemsize`` of the bare values.

        Example:
            >>> index = MetaEmbedIndex(dim=4, max_candidate_vectors=2, dtype="bfloat16")
            >>> index.extend(["x"], torch.ones(1, 2, 4))
            >>> index.memory_report([1, 2])[1]["bytes"]
            16
        """
        budgets = list(budgets) if budgets is not None else sorted({1, self.max_candidate_vectors})
        itemsize = torch.empty((), dtype=STORAGE_DTYPES[self.dtype]).element_size()
        report = []
        for r_c in budgets:
            actual = self.nbytes(r_c)
            ideal = len(self) * r_c * self.dim * itemsize
            report.append(
                {
                    "r_c": r_c,
                    "bytes": actual,
                    "bytes_per_candidate": self.bytes_per_candidate(r_c),
                    "ideal_bytes": ideal,
                    "overhead": (actual - ideal) / ideal if ideal else 0.0,
                }
            )
        return report

    def storage_nbytes(self) -> int:
        """Bytes of every stored tensor (vectors, scales, lengths), counted from the tensors themselves."""
        self._seal()
        total = 0
        for segment in self._segments:
            total += segment.vectors.numel() * segment.vectors.element_size()
            total += 0 if segment.scales is None else segment.scales.numel() * 4
            total += segment.lengths.numel() * 4
        return total

    # ----------------------------------------------------------------------------------------------
    # Adding items
    # ----------------------------------------------------------------------------------------------

    def append(self, item_id: str, vectors: Tensor | np.ndarray, metadata: Any = None) -> None:
        """Adds one item: ``vectors`` is ``[r, d]`` with ``1 <= r <= max_candidate_vectors``."""
        vectors = torch.as_tensor(vectors)
        if vectors.dim() != 2:
            raise ValueError(f"append takes one item's vectors [r, d], got shape {tuple(vectors.shape)}.")
        self.extend([item_id], [vectors], [metadata])

    def extend(
        self,
        ids: Sequence[str],
        embeddings: Tensor | np.ndarray | Sequence[Tensor],
        metadata: Sequence[Any] | None = None,
    ) -> None:
        """Adds a batch of items.

        Args:
            ids: One unique string id per item.
            embeddings: ``[n, r, d]`` tensor or a list of ``[r_i, d]`` tensors (ragged), floating point,
                finite, ``1 <= r_i <= max_candidate_vectors``.
            metadata: Optional JSON-serialisable value per item (a dict, usually).

        Raises:
            ValueError: On a duplicate or non-string id, a count mismatch, a wrong dimension, a
                non-floating dtype, an item with no vectors or too many, NaN/inf values (naming the
                item), or metadata that JSON cannot encode.
        """
        if isinstance(ids, str):
            raise ValueError("ids must be a sequence of strings; for a single item use append(id, vectors).")
        ids = list(ids)
        metadata = [None] * len(ids) if metadata is None else list(metadata)
        padded, lengths = self._check_items(ids, embeddings, metadata)
        if not ids:
            return
        values = padded.transpose(0, 1)  # [r_c_max, n, d] budget-major
        data, scales = quantize(values, self.dtype)
        data, scales = (
            self._place(data.contiguous()),
            None if scales is None else self._place(scales.contiguous()),
        )
        self._pending.append((data, scales, lengths.to(torch.int32)))
        for offset, item_id in enumerate(ids):
            self._positions[item_id] = len(self._ids) + offset
        self._ids.extend(ids)
        self._metadata.extend(metadata)
        self._faiss = None

    def _check_items(self, ids: list[str], embeddings: Any, metadata: list[Any]) -> tuple[Tensor, Tensor]:
        padded, lengths = validate_items(
            ids,
            embeddings,
            metadata,
            dim=self.dim,
            max_candidate_vectors=self.max_candidate_vectors,
            existing=self._positions,
        )
        if padded.shape[1] < self.max_candidate_vectors:  # repeat each item's last vector up to r_c_max
            last = padded[:, -1:].expand(-1, self.max_candidate_vectors - padded.shape[1], -1)
            padded = torch.cat([padded, last], dim=1)
        return padded, lengths

    def _place(self, tensor: Tensor) -> Tensor:
        tensor = tensor.to(self.storage_device)
        if self.offload and self.device.type == "cuda" and torch.cuda.is_available():
            tensor = tensor.pin_memory()  # asynchronous host-to-device copies while streaming
        return tensor

    def _seal(self) -> None:
        """Turns pending batches into a segment (merged into the last one while that is small)."""
        if not self._pending:
            return
        parts = self._pending
        self._pending = []
        last = self._segments[-1] if self._segments else None
        if last is not None and last.info is None and last.vectors.nbytes < _MERGE_LIMIT_BYTES:
            self._segments.pop()
            parts = [(last.vectors, last.scales, last.lengths), *parts]
        if len(parts) == 1:
            vectors, scales, lengths = parts[0]
        else:
            vectors = self._place(torch.cat([p[0] for p in parts], dim=1))
            scales = None if parts[0][1] is None else self._place(torch.cat([p[1] for p in parts], dim=1))
            lengths = torch.cat([p[2] for p in parts])
        self._segments.append(_Segment(vectors=vectors, scales=scales, lengths=lengths))

    def compact(self) -> None:
        """Merges every segment into one (in memory); the next :meth:`save` writes it as one file."""
        self._seal()
        if len(self._segments) <= 1:
            return
        segments = self._segments
        vectors = torch.cat([s.vectors for s in segments], dim=1)
        scales = (
            None
            if segments[0].scales is None
            else self._place(torch.cat([s.scales for s in segments], dim=1))
        )
        lengths = torch.cat([s.lengths for s in segments])
        self._segments = [_Segment(vectors=self._place(vectors), scales=scales, lengths=lengths)]

    @classmethod
    def from_budget_major(
        cls,
        vectors: Tensor,
        ids: Sequence[str] | None = None,
        *,
        metadata: Sequence[Any] | None = None,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        offload: bool = False,
        chunk_bytes: int | None = None,
    ) -> MetaEmbedIndex:
        """Builds an index from candidates already laid out budget-major, ``[r_c_max, N, d]``.

        The tensor is used as is (no copy) when it is already in the storage dtype and on the storage
        device; otherwise it is converted slot by slot, a memory budget at a time, so a large index never
        needs an item-major or float32 copy of itself. Every candidate has ``r_c_max`` vectors.

        Args:
            vectors: ``[r_c_max, N, d]`` floating point, finite.
            ids: One string id per candidate; defaults to ``"0"``, ``"1"``, ...
            metadata: Optional JSON-serialisable value per candidate.
            dtype: Storage dtype; defaults to the tensor's (bfloat16 / float16 / float32).
            device: Compute device; defaults to the tensor's.
            offload: Keep the vectors in CPU memory and stream blocks to ``device``.
            chunk_bytes: Memory budget of one scoring (and conversion) block.

        Example:
            >>> slots = torch.nn.functional.normalize(torch.randn(4, 10, 8), dim=-1)  # 4 vectors x 10 items
            >>> index = MetaEmbedIndex.from_budget_major(slots)
            >>> len(index), index.max_candidate_vectors, index.search(slots[:, 3].unsqueeze(0), k=1).ids
            (10, 4, [['3']])
        """
        if vectors.dim() != 3:
            raise ValueError(
                f"vectors must be budget-major [r_c_max, N, d], got shape {tuple(vectors.shape)}."
            )
        if not vectors.dtype.is_floating_point or vectors.dtype == torch.float8_e4m3fn:
            raise ValueError(f"vectors must be floating point, got {vectors.dtype}.")
        r_c, n, dim = vectors.shape
        ids = [str(i) for i in range(n)] if ids is None else list(ids)
        metadata = [None] * n if metadata is None else list(metadata)
        index = cls(
            dim,
            max_candidate_vectors=r_c,
            dtype=vectors.dtype if dtype is None else dtype,
            device=vectors.device if device is None else device,
            offload=offload,
            chunk_bytes=chunk_bytes,
        )
        if len(ids) != n or len(metadata) != n:
            raise ValueError(f"Got {n} candidates, {len(ids)} ids and {len(metadata)} metadata entries.")
        _check_ids(ids, ())
        block = max(1, (chunk_bytes or DEFAULT_CHUNK_BYTES) // (dim * 8))
        storage_dtype = STORAGE_DTYPES[index.dtype]
        in_place = (
            vectors.dtype == storage_dtype
            and vectors.device == index.storage_device
            and vectors.is_contiguous()
        )
        data = (
            vectors
            if in_place
            else torch.empty(r_c, n, dim, dtype=storage_dtype, device=index.storage_device)
        )
        scales = None
        if index.dtype in ("int8", "float8_e4m3"):
            scales = torch.empty(r_c, n, dtype=torch.float32, device=index.storage_device)
        for j in range(r_c):
            for start in range(0, n, block):
                part = vectors[j, start : start + block]
                finite = torch.isfinite(part).all(dim=1)
                if not bool(finite.all()):
                    bad = start + int(torch.argmin(finite.to(torch.int8)))
                    raise ValueError(f"Candidate {ids[bad]!r} (vector {j}) contains NaN or inf values.")
                if not in_place:
                    values, part_scales = quantize(part, index.dtype)
                    data[j, start : start + block] = values.to(index.storage_device)
                    if scales is not None:
                        scales[j, start : start + block] = part_scales.to(index.storage_device)
        _check_metadata(ids, metadata)
        lengths = torch.full((n,), r_c, dtype=torch.int32)
        index._segments.append(_Segment(vectors=data, scales=scales, lengths=lengths))
        index._ids = ids
        index._metadata = metadata
        index._positions = {item_id: position for position, item_id in enumerate(ids)}
        return index

    # ----------------------------------------------------------------------------------------------
    # Reading items
    # ----------------------------------------------------------------------------------------------

    def _locate(self, item_id: str) -> tuple[_Segment, int]:
        if item_id not in self._positions:
            raise KeyError(f"No item with id {item_id!r} in this index.")
        self._seal()
        position = self._positions[item_id]
        for segment in self._segments:
            if position < segment.count:
                return segment, position
            position -= segment.count
        raise AssertionError("positions and segments disagree")  # pragma: no cover

    def get_vectors(self, item_id: str) -> Tensor:
        """The stored vectors of an item, ``[r_i, d]`` float32 (dequantized), on the CPU."""
        segment, row = self._locate(item_id)
        length = int(segment.lengths[row])
        scales = None if segment.scales is None else segment.scales[:length, row]
        return dequantize(segment.vectors[:length, row], scales).cpu()

    def prefix(self, r_c: int | None = None) -> list[tuple[Tensor, Tensor | None]]:
        """The stored vectors a search at budget ``r_c`` reads: per segment, views (no copies) of the
        budget-major prefix ``vectors[:r_c]`` (``[r_c, n, d]``, storage dtype, contiguous) and of its
        float32 scales ``[r_c, n]`` (None unless int8 / float8).

        Example:
            >>> index = MetaEmbedIndex(dim=4, max_candidate_vectors=3, dtype="float32")
            >>> index.extend(["a", "b"], torch.arange(24.0).view(2, 3, 4))
            >>> [(tuple(v.shape), v.is_contiguous()) for v, _ in index.prefix(2)]
            [((2, 2, 4), True)]
        """
        r_c = self.max_candidate_vectors if r_c is None else self._check_rc(r_c)
        self._seal()
        return [(s.vectors[:r_c], None if s.scales is None else s.scales[:r_c]) for s in self._segments]

    def get_metadata(self, item_id: str) -> Any:
        """The metadata stored with an item."""
        if item_id not in self._positions:
            raise KeyError(f"No item with id {item_id!r} in this index.")
        return self._metadata[self._positions[item_id]]

    # ----------------------------------------------------------------------------------------------
    # Scoring and search
    # ----------------------------------------------------------------------------------------------

    def _check_rc(self, r_c: int) -> int:
        return validate_budget(
            (1, r_c), max_query_vectors=1, max_candidate_vectors=self.max_candidate_vectors
        )[1]

    def _prepare_queries(self, queries: Any, budget: Sequence[int] | None) -> tuple[Tensor, Budget]:
        padded, _ = pad_queries(queries)
        if not padded.dtype.is_floating_point or padded.dtype == torch.float8_e4m3fn:
            raise ValueError(f"Queries must be floating point, got {padded.dtype}.")
        if padded.shape[-1] != self.dim:
            raise ValueError(
                f"Dimension mismatch: queries have d={padded.shape[-1]} but this index stores d={self.dim}. "
                "Encode queries with the model the index was built with."
            )
        r_q, r_c = validate_budget(
            budget, max_query_vectors=padded.shape[1], max_candidate_vectors=self.max_candidate_vectors
        )
        scored = padded[:, :r_q]
        if not bool(torch.isfinite(scored).all()):  # only the vectors the budget scores
            raise ValueError("Queries contain NaN or inf values.")
        return scored, (r_q, r_c)

    def _blocks(
        self, queries: Tensor, r_c: int, chunk_bytes: int | None = None
    ) -> Iterator[tuple[int, int, int, Tensor]]:
        """Yields ``(q0, q1, first_position, scores)`` over every segment."""
        self._seal()
        offset = 0
        for segment in self._segments:
            scales = None if segment.scales is None else segment.scales[:r_c]
            for q0, q1, c0, _, scores in iter_block_scores(
                queries,
                segment.vectors[:r_c],
                scales,
                device=self.device,
                chunk_bytes=chunk_bytes or self.chunk_bytes,
                strategy=self.strategy,
            ):
                yield q0, q1, offset + c0, scores
            offset += segment.count

    def score(
        self, queries: Any, budget: Sequence[int] | None = None, *, chunk_bytes: int | None = None
    ) -> Tensor:
        """MaxSim scores of queries against every item, float32 ``[n_q, len(index)]`` on the CPU.

        Args:
            queries: ``[n_q, r, d]``, one ``[r, d]`` query, or a list of ``[r_i, d]`` tensors.
            budget: ``(r_q, r_c)``; defaults to every query vector and ``max_candidate_vectors``.
            chunk_bytes: Overrides the index's memory budget for this call.
        """
        q, (_, r_c) = self._prepare_queries(queries, budget)
        out = torch.empty(q.shape[0], len(self), dtype=torch.float32)
        for q0, q1, first, scores in self._blocks(q, r_c, chunk_bytes):
            out[q0:q1, first : first + scores.shape[1]] = scores.cpu()
        return out

    def search(
        self,
        queries: Any,
        budget: Sequence[int] | None = None,
        k: int = 10,
        *,
        first_stage: Sequence[int] | None = None,
        rerank: Sequence[int] | None = None,
        candidates: int = 1000,
        first_stage_backend: str = "exact",
        faiss_factory: str = "Flat",
    ) -> SearchResult:
        """Top-``k`` items per query by budgeted MaxSim, exhaustively or in two stages.

        Exhaustive: ``search(queries, budget=(r_q, r_c), k=10)``. Two-stage:
        ``search(queries, first_stage=(1, 1), rerank=(16, 64), candidates=1000)`` shortlists
        ``candidates`` items per query at the ``first_stage`` budget, then re-scores the shortlist exactly
        at the ``rerank`` budget. With ``candidates >= len(index)`` it returns the exhaustive result.

        Args:
            queries: ``[n_q, r, d]``, one ``[r, d]`` query, or a list of ``[r_i, d]`` tensors.
            budget: ``(r_q, r_c)`` of an exhaustive search (defaults to every vector).
            k: Results per query.
            first_stage: Budget of the shortlist stage (two-stage search).
            rerank: Budget of the re-scoring stage (two-stage search; defaults to every vector).
            candidates: Shortlist size per query.
            first_stage_backend: ``"exact"`` (MaxSim over every item) or ``"faiss"`` (FAISS inner-product
                search over the first vectors; ``first_stage`` must be ``(1, 1)``; needs ``faiss``).
            faiss_factory: FAISS index factory string for the ``"faiss"`` backend (``"Flat"`` is exact;
                e.g. ``"HNSW32"`` is approximate and faster on large indexes).

        Returns:
            A :class:`SearchResult`.

        Raises:
            ValueError: On a bad budget, ``k``, ``candidates`` or backend, or mismatched queries.
            ImportError: If the FAISS backend is asked for and ``faiss`` is not installed.
        """
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}.")
        two_stage = first_stage is not None or rerank is not None
        if two_stage:
            if budget is not None:
                raise ValueError(
                    "Pass either budget= (one stage) or first_stage=/rerank= (two stages), not both."
                )
            return self._two_stage(
                queries, k, first_stage or (1, 1), rerank, candidates, first_stage_backend, faiss_factory
            )
        if first_stage_backend != "exact":
            raise ValueError("first_stage_backend applies to two-stage search; pass first_stage=(1, 1).")
        q, (_, r_c) = self._prepare_queries(queries, budget)
        running = RunningTopK(q.shape[0], min(k, max(1, len(self))), device=self.device)
        for q0, q1, first, scores in self._blocks(q, r_c):
            running.update(q0, q1, scores, first)
        scores, positions = running.result(len(self))
        return self._result(scores, positions)

    def _result(self, scores: Tensor, positions: Tensor) -> SearchResult:
        ids = [[self._ids[p] for p in row] for row in positions.tolist()]
        return SearchResult(ids=ids, scores=scores, positions=positions)

    def _two_stage(
        self,
        queries: Any,
        k: int,
        first_stage: Sequence[int],
        rerank: Sequence[int] | None,
        candidates: int,
        backend: str,
        faiss_factory: str,
    ) -> SearchResult:
        if not isinstance(candidates, int) or candidates < 1:
            raise ValueError(f"candidates must be a positive integer, got {candidates!r}.")
        q, (_, r_c) = self._prepare_queries(queries, rerank)
        first_q, (f_q, f_c) = self._prepare_queries(queries, first_stage)
        if len(self) == 0:
            return self._result(torch.empty(q.shape[0], 0), torch.empty(q.shape[0], 0, dtype=torch.int64))
        shortlist_size = min(max(candidates, k), len(self))
        if backend == "exact":
            shortlist = self.search(first_q, budget=(f_q, f_c), k=shortlist_size).positions
        elif backend == "faiss":
            if (f_q, f_c) != (1, 1):
                raise ValueError(
                    f"The FAISS first stage scores single vectors: first_stage must be (1, 1), got {first_stage}."
                )
            shortlist = self._faiss_search(first_q[:, 0], shortlist_size, faiss_factory)
        else:
            raise ValueError(f"first_stage_backend must be 'exact' or 'faiss', got {backend!r}.")
        self._seal()
        offsets = np.cumsum([0] + [s.count for s in self._segments])
        all_scores, all_positions = [], []
        for i in range(q.shape[0]):
            positions = shortlist[i][shortlist[i] >= 0].sort().values  # FAISS pads missing hits with -1
            slots, scales = self._gather(positions, r_c, offsets)
            scores = score_slots(
                q[i : i + 1],
                slots,
                scales,
                device=self.device,
                chunk_bytes=self.chunk_bytes,
                strategy=self.strategy,
            )
            running = RunningTopK(1, min(k, len(positions)), device="cpu")
            running.update(0, 1, scores.cpu(), 0)
            row_scores, local = running.result(len(positions))
            all_scores.append(row_scores[0])
            all_positions.append(positions[local[0]])
        width = min(len(s) for s in all_scores)
        return self._result(
            torch.stack([s[:width] for s in all_scores]), torch.stack([p[:width] for p in all_positions])
        )

    def _gather(self, positions: Tensor, r_c: int, offsets: np.ndarray) -> tuple[Tensor, Tensor | None]:
        """Budget-major ``[r_c, len(positions), d]`` vectors (and scales) of sorted global positions."""
        segment_of = np.searchsorted(offsets, positions.numpy(), side="right") - 1
        vectors, scales = [], []
        for index in np.unique(segment_of):
            segment = self._segments[index]
            local = (positions[torch.from_numpy(segment_of == index)] - int(offsets[index])).to(
                segment.vectors.device
            )
            vectors.append(segment.vectors[:r_c].index_select(1, local))
            if segment.scales is not None:
                scales.append(segment.scales[:r_c].index_select(1, local))
        return torch.cat(vectors, dim=1), (torch.cat(scales, dim=1) if scales else None)

    def _faiss_search(self, first_vectors: Tensor, count: int, factory: str) -> Tensor:
        try:
            import faiss
        except ImportError as error:
            raise ImportError(
                "first_stage_backend='faiss' needs the optional dependency faiss: pip install "
                "'metaembed[faiss]' (faiss-cpu), or faiss-gpu; or use first_stage_backend='exact'."
            ) from error
        if self._faiss is None or self._faiss[0] != factory:
            self._seal()
            base = torch.cat(
                [
                    dequantize(s.vectors[0], None if s.scales is None else s.scales[0]).cpu()
                    for s in self._segments
                ]
            )
            base_np = np.ascontiguousarray(base.numpy(), dtype=np.float32)
            index = faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
            if not index.is_trained:
                index.train(base_np)
            index.add(base_np)
            self._faiss = (factory, index)
            logger.debug("Built a FAISS %s first-stage index over %d items.", factory, len(base_np))
        query_np = np.ascontiguousarray(first_vectors.float().cpu().numpy(), dtype=np.float32)
        _, found = self._faiss[1].search(query_np, count)
        return torch.from_numpy(found).to(torch.int64)

    # ----------------------------------------------------------------------------------------------
    # Persistence
    # ----------------------------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        return {"dim": self.dim, "max_candidate_vectors": self.max_candidate_vectors, "dtype": self.dtype}

    def save(self, path: str | Path | None = None) -> Path:
        """Saves the index to a directory atomically; only segments not yet there are written.

        A crash at any point leaves the directory's previous state readable (see
        :mod:`metaembed.index.storage`). Afterwards the index remembers the directory, so
        ``open -> extend -> save()`` appends a new segment file and a new manifest.

        Args:
            path: Target directory (created if missing); defaults to the directory it was opened from.

        Returns:
            The directory.
        """
        if path is None and self._path is None:
            raise ValueError("This index has no directory yet: pass save(path).")
        directory = Path(path) if path is not None else self._path
        same_directory = self._path is not None and directory.resolve() == self._path.resolve()
        directory.mkdir(parents=True, exist_ok=True)
        self._seal()
        generation = self._generation + 1
        infos: list[storage.SegmentInfo] = []
        first = 0
        for segment in self._segments:
            if same_directory and segment.info is not None:
                infos.append(segment.info)
            else:
                name = f"segment-{generation:06d}-{uuid.uuid4().hex[:8]}.safetensors"
                infos.append(
                    storage.write_segment(
                        directory,
                        name,
                        vectors=segment.vectors,
                        scales=segment.scales,
                        lengths=segment.lengths,
                        ids=self._ids[first : first + segment.count],
                        metadata=self._metadata[first : first + segment.count],
                        dtype=self.dtype,
                    )
                )
            first += segment.count
        storage.write_manifest(directory, config=self._config(), segments=infos, generation=generation)
        for segment, info in zip(self._segments, infos):
            segment.info = info
        self._path, self._generation = directory, generation
        storage.remove_unreferenced(directory, keep={info.file for info in infos})
        logger.debug("Saved %d items in %d segments to %s.", len(self), len(infos), directory)
        return directory

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        offload: bool = False,
        verify: bool = True,
        mmap: bool = True,
        chunk_bytes: int | None = None,
    ) -> MetaEmbedIndex:
        """Opens a saved index, reading the snapshot its manifest names.

        Args:
            path: The index directory.
            device: Compute device. With a GPU and ``offload=False`` the vectors are copied to it.
            offload: Keep vectors in (memory-mapped) CPU memory and stream blocks to ``device``.
            verify: Check every segment's crc32 (reads each byte once); sizes are always checked.
            mmap: Memory-map the vectors instead of reading them into memory.
            chunk_bytes: Memory budget of one scoring block.

        Raises:
            FileNotFoundError: If there is no index at ``path``.
            CorruptIndexError: If a file is truncated, corrupted or inconsistent.
        """
        directory = Path(path)
        for attempt in range(_OPEN_RETRIES):
            body, infos = storage.read_manifest(directory)
            try:
                segments = [
                    storage.read_segment(directory / info.file, info, verify=verify, mmap=mmap)
                    for info in infos
                ]
                break
            except FileNotFoundError as error:
                # A writer replaced the manifest and removed a segment between our two reads: retry.
                if attempt == _OPEN_RETRIES - 1:
                    raise storage.CorruptIndexError(
                        f"The index at {directory} names a segment that does not exist ({error.filename})."
                    ) from error
        index = cls(
            body["dim"],
            max_candidate_vectors=body["max_candidate_vectors"],
            dtype=body["dtype"],
            device=device,
            offload=offload,
            chunk_bytes=chunk_bytes,
        )
        for info, data in zip(infos, segments):
            if tuple(data.vectors.shape) != (index.max_candidate_vectors, info.count, index.dim) or (
                data.vectors.dtype != STORAGE_DTYPES[index.dtype]
            ):
                raise storage.CorruptIndexError(
                    f"Segment {info.file} holds {tuple(data.vectors.shape)} {data.vectors.dtype} vectors; the "
                    f"manifest expects ({index.max_candidate_vectors}, {info.count}, {index.dim}) {index.dtype}."
                )
            for offset, item_id in enumerate(data.ids):
                if item_id in index._positions:
                    raise storage.CorruptIndexError(
                        f"The id {item_id!r} appears twice in the index at {directory}."
                    )
                index._positions[item_id] = len(index._ids) + offset
            index._ids.extend(data.ids)
            index._metadata.extend(data.metadata)
            vectors = (
                data.vectors if index.storage_device.type == "cpu" else data.vectors.to(index.storage_device)
            )
            scales = data.scales if data.scales is None else data.scales.to(index.storage_device)
            index._segments.append(_Segment(vectors=vectors, scales=scales, lengths=data.lengths, info=info))
        index._path, index._generation = directory, body["generation"]
        return index

    def to(self, device: str | torch.device, *, offload: bool = False) -> MetaEmbedIndex:
        """Moves the index to another placement in place and returns it."""
        self._seal()
        self.device, self.offload = torch.device(device), bool(offload)
        for segment in self._segments:
            segment.vectors = self._place(segment.vectors)
            segment.scales = None if segment.scales is None else self._place(segment.scales)
        return self


def validate_items(
    ids: list[str],
    embeddings: Any,
    metadata: list[Any],
    *,
    dim: int,
    max_candidate_vectors: int,
    existing: Container[str] = (),
) -> tuple[Tensor, Tensor]:
    """Checks a batch of items to add and pads it (repeating each item's last vector).

    Returns:
        ``(padded [n, max r_i, d], lengths [n])``.

    Raises:
        ValueError: On a duplicate or non-string id, a count mismatch, a wrong dimension, a non-floating
            dtype, an item with no vectors or too many, NaN/inf values (naming the item), or metadata that
            JSON cannot encode.
    """
    _check_ids(ids, existing)
    items = embeddings if isinstance(embeddings, (list, tuple)) else torch.as_tensor(embeddings)
    if isinstance(items, Tensor) and items.dim() != 3:
        raise ValueError(
            f"Embeddings must be [n, r, d] (or a list of [r_i, d]); got shape {tuple(items.shape)}."
        )
    count = len(items) if isinstance(items, (list, tuple)) else items.shape[0]
    if count != len(ids) or len(metadata) != len(ids):
        raise ValueError(f"Got {len(ids)} ids, {count} embeddings and {len(metadata)} metadata entries.")
    if not ids:
        return torch.empty(0, max_candidate_vectors, dim), torch.empty(0, dtype=torch.int64)
    items = [torch.as_tensor(t) for t in items] if isinstance(items, (list, tuple)) else items
    padded, lengths = pad_candidates(items)
    if not padded.dtype.is_floating_point or padded.dtype == torch.float8_e4m3fn:
        raise ValueError(
            f"Embeddings must be floating point (float32, bfloat16, float16, float64), got {padded.dtype}; "
            "the index quantizes them itself."
        )
    if padded.shape[-1] != dim:
        raise ValueError(
            f"Dimension mismatch: this index stores d={dim} vectors, got d={padded.shape[-1]}. "
            "Use the model this index was built with, or a new index."
        )
    if padded.shape[1] > max_candidate_vectors:
        too_long = int(torch.argmax((lengths > max_candidate_vectors).to(torch.int8)))
        raise ValueError(
            f"Item {ids[too_long]!r} has {int(lengths[too_long])} vectors; this index stores at most "
            f"{max_candidate_vectors} per candidate."
        )
    if bool((lengths == 0).any()):
        empty = int(torch.argmax((lengths == 0).to(torch.int8)))
        raise ValueError(f"Item {ids[empty]!r} has no vectors; every candidate needs at least one.")
    finite = torch.isfinite(padded).flatten(1).all(dim=1)
    if not bool(finite.all()):
        bad = int(torch.argmin(finite.to(torch.int8)))
        raise ValueError(
            f"Item {ids[bad]!r} (position {bad} in this batch) contains NaN or inf values; fix the "
            "embedding (e.g. re-encode it) before adding it."
        )
    _check_metadata(ids, metadata)
    return padded, lengths


def _check_ids(ids: list[str], existing: Container[str]) -> None:
    for position, item_id in enumerate(ids):
        if not isinstance(item_id, str):
            raise ValueError(
                f"ids must be strings; item {position} has id {item_id!r} ({type(item_id).__name__})."
            )
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        duplicate = next(i for i in ids if i in seen or seen.add(i))
        raise ValueError(f"The id {duplicate!r} appears more than once in this batch; ids must be unique.")
    for item_id in ids:
        if item_id in existing:
            raise ValueError(f"The id {item_id!r} is already in the index; ids must be unique.")


def _check_metadata(ids: list[str], metadata: list[Any]) -> None:
    for item_id, meta in zip(ids, metadata):
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as error:
            raise ValueError(f"Metadata of item {item_id!r} is not JSON-serialisable: {error}.") from error
