"""Budgeted MaxSim scoring.

MaxSim scores a query against a candidate as ``s(q, c) = sum_i max_j <q_i, c_j>`` over the first ``r_q``
query vectors and the first ``r_c`` candidate vectors (the *budget*). This module computes it the way a
GEMM likes it: every query of a batch is stacked into one ``[n_q * r_q, d]`` matrix, and each candidate
vector *slot* ``j`` (the ``j``-th vector of every candidate, a ``[n_c, d]`` matrix) is one GEMM against
it, followed by an element-wise running max over the slots and a float32 sum over the query vectors.
With candidates stored budget-major (``[r_c, n_c, d]``, as :class:`metaembed.index.MetaEmbedIndex`
stores them) every slot is a contiguous matrix and a smaller budget is a contiguous prefix.

Precision: the GEMM accumulates in float32 inside the BLAS kernel and its outputs (the dot products) are
rounded to the compute dtype (bfloat16: relative error at most 2**-9) before the max; the sum over query
vectors is always accumulated in float32. Pass ``compute_dtype=torch.float32`` for float32 dot products.

Ragged inputs (lists of ``[r_i, d]`` tensors) are padded: queries with zero vectors (which add exactly
0 to every score) and candidates by repeating their last real vector (which leaves every max
unchanged), so padding can never win a max and no mask is needed in the hot loop. A candidate with no
vectors at all scores ``-inf`` against every query, so it never wins a ranking.

Example:
    >>> import torch
    >>> from metaembed.scoring import maxsim
    >>> queries = torch.nn.functional.normalize(torch.randn(2, 16, 32), dim=-1)
    >>> candidates = torch.nn.functional.normalize(torch.randn(5, 64, 32), dim=-1)
    >>> maxsim(queries, candidates, budget=(4, 8)).shape
    torch.Size([2, 5])
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BUDGETS",
    "DEFAULT_CHUNK_BYTES",
    "Budget",
    "iter_block_scores",
    "maxsim",
    "pad_candidates",
    "pad_queries",
    "score_slots",
    "validate_budget",
]

Budget = tuple[int, int]
"""A budget ``(r_q, r_c)``: the number of query vectors and of candidate vectors scored."""

DEFAULT_BUDGETS: tuple[Budget, ...] = ((1, 1), (2, 4), (4, 8), (8, 16), (16, 64))
"""The budget groups of the MetaEmbed paper."""

DEFAULT_CHUNK_BYTES = 256 * 2**20
"""Default memory budget, in bytes, for the temporaries of one scoring block on the CPU (4x on CUDA,
where bigger blocks keep large GEMMs efficient)."""

Strategy = Literal["auto", "slots", "stacked"]

_QUANTIZED_DTYPES = (torch.int8, torch.float8_e4m3fn)
_FP8_MAX = float(torch.finfo(torch.float8_e4m3fn).max)
_warned_fallbacks: set[str] = set()


def validate_budget(
    budget: Sequence[int] | None, *, max_query_vectors: int, max_candidate_vectors: int
) -> Budget:
    """Checks a budget against the vectors available and returns it as a tuple.

    Args:
        budget: ``(r_q, r_c)``, or None for every available vector.
        max_query_vectors: The most query vectors available (``r_q`` may not exceed it).
        max_candidate_vectors: The most candidate vectors available (``r_c`` may not exceed it).

    Returns:
        The budget as ``(r_q, r_c)``.

    Raises:
        ValueError: If the budget is not a pair of integers within ``1..max_query_vectors`` and
            ``1..max_candidate_vectors``.

    Example:
        >>> validate_budget((4, 8), max_query_vectors=16, max_candidate_vectors=64)
        (4, 8)
    """
    if budget is None:
        return (int(max_query_vectors), int(max_candidate_vectors))
    if (
        isinstance(budget, (str, bytes))
        or not isinstance(budget, Sequence)
        or len(budget) != 2
        or not all(isinstance(r, (int, np.integer)) and not isinstance(r, bool) for r in budget)
    ):
        raise ValueError(f"A budget must be a pair of integers (r_q, r_c), got {budget!r}.")
    r_q, r_c = int(budget[0]), int(budget[1])
    if not 1 <= r_q <= max_query_vectors:
        raise ValueError(
            f"Budget r_q={r_q} is outside the allowed range 1..{max_query_vectors}: the queries carry "
            f"{max_query_vectors} vectors. Pick r_q in that range."
        )
    if not 1 <= r_c <= max_candidate_vectors:
        raise ValueError(
            f"Budget r_c={r_c} is outside the allowed range 1..{max_candidate_vectors}: the candidates "
            f"carry {max_candidate_vectors} vectors. Pick r_c in that range."
        )
    return (r_q, r_c)


def _as_tensor(x: Any, what: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise TypeError(f"{what} must be a torch.Tensor or numpy array, got {type(x).__name__}.")


def _as_ragged(items: Any, what: str) -> list[Tensor] | Tensor:
    """Returns a 3-D tensor as is (a 2-D one as a batch of one), or a list of 2-D tensors."""
    if isinstance(items, (Tensor, np.ndarray)):
        tensor = _as_tensor(items, what)
        if tensor.dim() == 2:
            tensor = tensor.unsqueeze(0)
        if tensor.dim() != 3:
            raise ValueError(
                f"{what} must be [n, r, d] (or one [r, d] item, or a list of [r_i, d]), got shape "
                f"{tuple(tensor.shape)}."
            )
        return tensor
    if isinstance(items, (list, tuple)):
        out = []
        for i, item in enumerate(items):
            tensor = _as_tensor(item, f"{what}[{i}]")
            if tensor.dim() != 2:
                raise ValueError(f"{what}[{i}] must be [r_i, d], got shape {tuple(tensor.shape)}.")
            out.append(tensor)
        if not out:
            raise ValueError(f"{what} is an empty list: pass at least one item.")
        dims = {t.shape[1] for t in out}
        if len(dims) > 1:
            raise ValueError(f"{what} mix vector dimensions {sorted(dims)}: every item needs the same d.")
        return out
    raise TypeError(f"{what} must be a tensor [n, r, d] or a list of [r_i, d] tensors, got {type(items)}.")


def pad_queries(queries: Any) -> tuple[Tensor, Tensor]:
    """Pads ragged queries with zero vectors, which add exactly 0 to every MaxSim score.

    Args:
        queries: ``[n, r, d]`` tensor, one ``[r, d]`` query, or a list of ``[r_i, d]`` tensors.

    Returns:
        ``(padded [n, max r_i, d], lengths [n] int64)``.

    Example:
        >>> padded, lengths = pad_queries([torch.ones(2, 4), torch.ones(3, 4)])
        >>> padded.shape, lengths.tolist()
        (torch.Size([2, 3, 4]), [2, 3])
    """
    items = _as_ragged(queries, "queries")
    if isinstance(items, Tensor):
        return items, torch.full((items.shape[0],), items.shape[1], dtype=torch.int64)
    lengths = torch.tensor([t.shape[0] for t in items], dtype=torch.int64)
    padded = torch.nn.utils.rnn.pad_sequence(items, batch_first=True)
    if padded.shape[1] == 0:
        padded = padded.new_zeros(len(items), 1, items[0].shape[1])
    return padded, lengths


def pad_candidates(candidates: Any) -> tuple[Tensor, Tensor]:
    """Pads ragged candidates by repeating each one's last real vector, which leaves every max unchanged.

    A candidate with no vectors is padded with zeros; its length stays 0 so callers can mask it
    (:func:`maxsim` gives it ``-inf``).

    Args:
        candidates: ``[n, r, d]`` tensor, one ``[r, d]`` candidate, or a list of ``[r_i, d]`` tensors.

    Returns:
        ``(padded [n, max r_i, d], lengths [n] int64)``.

    Example:
        >>> padded, lengths = pad_candidates([torch.tensor([[1.0, 0.0]]), torch.eye(2)])
        >>> padded[0].tolist()
        [[1.0, 0.0], [1.0, 0.0]]
    """
    items = _as_ragged(candidates, "candidates")
    if isinstance(items, Tensor):
        return items, torch.full((items.shape[0],), items.shape[1], dtype=torch.int64)
    lengths = torch.tensor([t.shape[0] for t in items], dtype=torch.int64)
    width = max(1, int(lengths.max()))
    dim = items[0].shape[1]
    padded = items[0].new_zeros(len(items), width, dim)
    for i, item in enumerate(items):
        r = item.shape[0]
        if r:
            padded[i, :r] = item
            padded[i, r:] = item[r - 1]
    return padded, lengths


# --------------------------------------------------------------------------------------------------
# The kernel
# --------------------------------------------------------------------------------------------------


@dataclass
class _PreparedQueries:
    """Queries flattened to ``[M, d]`` in the form the candidate storage dtype needs.

    For int8 storage (and float8 on CUDA) the queries are quantized per row too, so the GEMM runs on
    the low-precision kernel; their positive row scales are applied after the max over slots.
    """

    flat: Tensor  # [M, d] in the compute dtype
    quantized: Tensor | None = None  # [M', d] int8 / float8, M' >= M rows padded for kernel constraints
    row_scale: Tensor | None = None  # [M] float32, multiplied into the maxes when ``quantized`` is set
    fast: bool = True  # False once the low-precision kernel failed on this device

    @property
    def rows(self) -> int:
        return self.flat.shape[0]


def _resolve_compute_dtype(storage_dtype: torch.dtype, compute_dtype: torch.dtype | None) -> torch.dtype:
    if compute_dtype is not None:
        return compute_dtype
    if storage_dtype in _QUANTIZED_DTYPES:
        return torch.bfloat16
    if not storage_dtype.is_floating_point:
        raise ValueError(f"Candidates must be floating point, int8 or float8_e4m3fn, got {storage_dtype}.")
    return storage_dtype


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def _quantize_rows(
    flat: Tensor, dtype: torch.dtype, row_multiple: int, min_rows: int
) -> tuple[Tensor, Tensor]:
    """Symmetric per-row quantization; pads with zero rows to the kernel's row constraints."""
    values = flat.float()
    top = 127.0 if dtype == torch.int8 else _FP8_MAX
    scale = values.abs().amax(dim=1).clamp_min(1e-12) / top
    scaled = values / scale[:, None]
    quantized = scaled.round_().clamp_(-127, 127).to(dtype) if dtype == torch.int8 else scaled.to(dtype)
    rows = max(min_rows, _round_up(quantized.shape[0], row_multiple))
    if rows != quantized.shape[0]:
        quantized = torch.cat([quantized, quantized.new_zeros(rows - quantized.shape[0], flat.shape[1])])
    return quantized, scale


def _prepare_queries(
    flat: Tensor, storage_dtype: torch.dtype, compute_dtype: torch.dtype
) -> _PreparedQueries:
    """Casts the stacked query vectors, and quantizes them where a low-precision GEMM kernel exists."""
    prepared = _PreparedQueries(flat=flat.to(compute_dtype))
    if storage_dtype == torch.int8:
        # int8 x int8 -> int32 (torch._int_mm), on the CPU too; CUDA wants M > 16 and M % 8 == 0.
        cuda = flat.device.type == "cuda"
        prepared.quantized, prepared.row_scale = _quantize_rows(
            flat, torch.int8, 8 if cuda else 1, 32 if cuda else 1
        )
    elif storage_dtype == torch.float8_e4m3fn and flat.device.type == "cuda":
        # fp8 x fp8 -> bf16 (torch._scaled_mm, sm89+); no fp8 GEMM on the CPU, where blocks are upcast.
        prepared.quantized, prepared.row_scale = _quantize_rows(flat, torch.float8_e4m3fn, 16, 16)
    return prepared


def _warn_once(key: str, message: str) -> None:
    if key not in _warned_fallbacks:
        _warned_fallbacks.add(key)
        logger.warning(message)


def _slot_gemm(prepared: _PreparedQueries, block: Tensor, scale: Tensor | None) -> Tensor:
    """Dot products ``[M, n]`` of the prepared queries with one ``[n, d]`` block of candidate vectors.

    Candidate scales (quantized storage) are applied here, before the max; query row scales are not.
    """
    queries = prepared.flat
    if prepared.quantized is not None:
        if prepared.fast and block.dtype == torch.int8:
            try:
                dots = torch._int_mm(prepared.quantized, block.t())[: prepared.rows]
                return dots.to(torch.float32).mul_(scale)
            except RuntimeError as error:  # shape or device constraints of the int8 kernel
                prepared.fast = False
                _warn_once("int8", f"int8 GEMM unavailable ({error}); upcasting int8 blocks instead.")
        elif prepared.fast and block.dtype == torch.float8_e4m3fn:
            try:
                ones = torch.ones(prepared.quantized.shape[0], 1, device=block.device)
                dots = torch._scaled_mm(
                    prepared.quantized,
                    block.t(),
                    scale_a=ones,
                    scale_b=scale[None, :],
                    out_dtype=torch.bfloat16,
                )
                return dots[: prepared.rows]
            except (RuntimeError, TypeError) as error:  # needs sm89+ and 16-aligned shapes
                prepared.fast = False
                _warn_once("fp8", f"fp8 GEMM unavailable ({error}); upcasting fp8 blocks instead.")
        # Same units as the fast kernel: the quantized query values are exact in bf16.
        queries = prepared.quantized[: prepared.rows].to(queries.dtype)
    if block.dtype != queries.dtype:
        block = block.to(queries.dtype)
    dots = queries @ block.t()
    if scale is not None:
        dots.mul_(scale.to(dots.dtype))
    return dots


def _block_max(prepared: _PreparedQueries, slots: Tensor, scales: Tensor | None, strategy: str) -> Tensor:
    """``max_j <q, c_j>`` for a block ``slots [r_c, n, d]``: ``[M, n]`` (before query row scales)."""
    if strategy == "stacked":
        # Every slot's GEMM writes straight into its page of one [r_c, M, n] buffer (no copy of a
        # strided block), then a single max reduction reads each dot once.
        queries = prepared.flat
        stacked = torch.empty(
            slots.shape[0], queries.shape[0], slots.shape[1], dtype=queries.dtype, device=queries.device
        )
        for j in range(slots.shape[0]):
            block = slots[j] if slots.dtype == queries.dtype else slots[j].to(queries.dtype)
            torch.mm(queries, block.t(), out=stacked[j])
        return stacked.amax(dim=0)
    best = _slot_gemm(prepared, slots[0], None if scales is None else scales[0])
    for j in range(1, slots.shape[0]):
        dots = _slot_gemm(prepared, slots[j], None if scales is None else scales[j])
        if dots.dtype != best.dtype:
            best = best.to(torch.promote_types(best.dtype, dots.dtype))
        torch.maximum(best, dots, out=best)
    return best


def _plan_chunks(
    n_queries: int,
    r_q: int,
    r_c: int,
    n: int,
    dim: int,
    storage: Tensor,
    compute_device: torch.device,
    strategy: str,
    chunk_bytes: int,
) -> tuple[int, int]:
    """Returns ``(queries per chunk, candidates per block)`` so a block's temporaries fit chunk_bytes."""
    itemsize = storage.element_size()
    per_candidate = 0  # bytes per candidate column that do not scale with the query rows
    if storage.dtype in _QUANTIZED_DTYPES:
        per_candidate += dim * 2  # the upcast slot on the fallback path
    if storage.device != compute_device:
        per_candidate += r_c * dim * itemsize  # the block streamed to the compute device
    # Per query row and candidate: the stacked dots and their max, or a slot's dots, the running max
    # and a cast.
    per_row_candidate = 4 * (r_c + 1) if strategy == "stacked" else 3 * 4
    min_block = min(n, 1024)
    max_rows = max(r_q, (chunk_bytes - min_block * per_candidate) // max(1, min_block * per_row_candidate))
    queries_per_chunk = max(1, min(n_queries, max_rows // r_q))
    rows = queries_per_chunk * r_q
    block = max(1, chunk_bytes // (rows * per_row_candidate + per_candidate))
    if block < n and block >= 64:
        block -= block % 16  # 16-aligned blocks keep fp8/int8 kernels on their fast path
    return queries_per_chunk, min(n, block)


def _auto_strategy(strategy: Strategy, rows: int, storage_dtype: torch.dtype, device: torch.device) -> str:
    if strategy not in ("auto", "slots", "stacked"):
        raise ValueError(f"strategy must be 'auto', 'slots' or 'stacked', got {strategy!r}.")
    if storage_dtype in _QUANTIZED_DTYPES:
        return "slots"  # per-slot candidate scales must be applied before the max
    if strategy == "auto":
        # Stacked GEMMs and one max reduction write and read each dot once (4 bytes of traffic per bf16
        # dot); a running max reads and writes it twice more (8). That matters only for many query rows
        # on a GPU, where it is the epilogue next to a compute-bound GEMM; on the CPU per-slot GEMMs
        # measured as fast or faster.
        return "stacked" if device.type == "cuda" and rows >= 512 else "slots"
    return strategy


def iter_block_scores(
    queries: Tensor,
    slots: Tensor,
    scales: Tensor | None = None,
    *,
    device: torch.device | str | None = None,
    compute_dtype: torch.dtype | None = None,
    chunk_bytes: int | None = None,
    strategy: Strategy = "auto",
) -> Iterator[tuple[int, int, int, int, Tensor]]:
    """Yields MaxSim scores block by block, so callers can reduce them (e.g. a running top-k).

    Args:
        queries: ``[n_q, r_q, d]``, already sliced to the budget (zero vectors for padding).
        slots: Candidates budget-major, ``[r_c, n, d]``, already sliced to the budget; any strides,
            so an item-major ``[n, r_c, d]`` tensor can be passed as ``x.transpose(0, 1)``.
            float32 / bfloat16 / float16, or int8 / float8_e4m3fn with ``scales``.
        scales: ``[r_c, n]`` float32 per-vector scales for int8 / float8 storage, else None.
        device: Compute device; blocks stored elsewhere (e.g. CPU memory for a GPU) are streamed to it.
            Defaults to the candidates' device.
        compute_dtype: dtype of the GEMM; defaults to the storage dtype (bfloat16 for int8 / float8).
        chunk_bytes: Memory budget for the temporaries of one block (default: :data:`DEFAULT_CHUNK_BYTES`).
        strategy: ``"slots"`` (one GEMM per candidate-vector slot and a running max), ``"stacked"``
            (one GEMM per slot into one ``[r_c, M, n]`` buffer, then one max), or ``"auto"`` (stacked on
            CUDA for 512 or more query rows, else slots).

    Yields:
        ``(q_start, q_end, c_start, c_end, scores)`` with float32 ``scores [q_end - q_start,
        c_end - c_start]`` on the compute device.
    """
    if queries.dim() != 3 or slots.dim() != 3:
        raise ValueError(
            f"queries must be [n_q, r_q, d] and slots [r_c, n, d], got {tuple(queries.shape)} and "
            f"{tuple(slots.shape)}."
        )
    if queries.shape[-1] != slots.shape[-1]:
        raise ValueError(
            f"Dimension mismatch: queries have d={queries.shape[-1]} but candidates have d={slots.shape[-1]}. "
            "Encode both with the same model (and the same output dimension)."
        )
    quantized = slots.dtype in _QUANTIZED_DTYPES
    if quantized and scales is None:
        raise ValueError(f"{slots.dtype} candidates need their per-vector scales [r_c, n].")
    compute_device = torch.device(device) if device is not None else slots.device
    compute_dtype = _resolve_compute_dtype(slots.dtype, compute_dtype)
    n_q, r_q, dim = queries.shape
    r_c, n, _ = slots.shape
    if n == 0 or n_q == 0:
        return
    strategy = _auto_strategy(strategy, n_q * r_q, slots.dtype, compute_device)
    if chunk_bytes is None:
        chunk_bytes = DEFAULT_CHUNK_BYTES * (4 if compute_device.type == "cuda" else 1)
    q_chunk, block = _plan_chunks(n_q, r_q, r_c, n, dim, slots, compute_device, strategy, chunk_bytes)
    streamed = slots.device != compute_device
    non_blocking = streamed and compute_device.type == "cuda" and slots.is_pinned()
    for q0 in range(0, n_q, q_chunk):
        q1 = min(n_q, q0 + q_chunk)
        flat = queries[q0:q1].to(compute_device).reshape((q1 - q0) * r_q, dim)
        prepared = _prepare_queries(flat, slots.dtype, compute_dtype)
        for c0 in range(0, n, block):
            c1 = min(n, c0 + block)
            part = slots[:, c0:c1]
            part_scales = None if scales is None else scales[:, c0:c1]
            if streamed:
                part = part.to(compute_device, non_blocking=non_blocking)
                if part_scales is not None:
                    part_scales = part_scales.to(compute_device, non_blocking=non_blocking)
            best = _block_max(prepared, part, part_scales, strategy)
            if prepared.quantized is not None:
                best = best.to(torch.float32).mul_(prepared.row_scale[:, None])
            scores = best.view(q1 - q0, r_q, c1 - c0).sum(dim=1, dtype=torch.float32)
            yield q0, q1, c0, c1, scores


def score_slots(
    queries: Tensor,
    slots: Tensor,
    scales: Tensor | None = None,
    **kwargs: Any,
) -> Tensor:
    """MaxSim scores of ``queries [n_q, r_q, d]`` against budget-major ``slots [r_c, n, d]``.

    Takes the keyword arguments of :func:`iter_block_scores`.

    Returns:
        float32 ``[n_q, n]`` scores on the compute device.

    Example:
        >>> q = torch.randn(3, 2, 8)
        >>> c = torch.randn(4, 5, 8)  # budget-major: 4 slots of 5 candidates
        >>> score_slots(q, c).shape
        torch.Size([3, 5])
    """
    device = kwargs.get("device")
    out = torch.empty(
        queries.shape[0],
        slots.shape[1],
        dtype=torch.float32,
        device=torch.device(device) if device is not None else slots.device,
    )
    for q0, q1, c0, c1, scores in iter_block_scores(queries, slots, scales, **kwargs):
        out[q0:q1, c0:c1] = scores
    return out


def maxsim(
    queries: Any,
    candidates: Any,
    budget: Sequence[int] | None = None,
    *,
    device: torch.device | str | None = None,
    compute_dtype: torch.dtype | None = None,
    chunk_bytes: int | None = None,
    strategy: Strategy = "auto",
) -> Tensor:
    """Budgeted MaxSim scores ``s(q, c) = sum_{i<r_q} max_{j<r_c} <q_i, c_j>`` of every query and candidate.

    Args:
        queries: ``[n_q, r, d]`` tensor, one ``[r, d]`` query, or a list of ``[r_i, d]`` tensors.
        candidates: ``[n_c, r, d]`` tensor, one ``[r, d]`` candidate, a list of ``[r_i, d]`` tensors, or
            a :class:`metaembed.index.MetaEmbedIndex` (scored over all its items).
        budget: ``(r_q, r_c)``; the first ``r_q`` query and ``r_c`` candidate vectors are scored.
            Defaults to all vectors. Ragged items shorter than the budget use all their vectors.
        device: Compute device; defaults to the candidates' device.
        compute_dtype: GEMM dtype; defaults to the candidates' dtype.
        chunk_bytes: Memory budget for the temporaries of one block of candidates.
        strategy: GEMM layout, see :func:`iter_block_scores`.

    Returns:
        float32 ``[n_q, n_c]`` scores on the compute device; ``-inf`` for candidates with no vectors.

    Raises:
        ValueError: On a budget outside the vectors available, or queries and candidates of different d.

    Example:
        >>> q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
        >>> c = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]])
        >>> maxsim(q, c).tolist()  # max(1, .6) + max(0, .8)
        [[1.7999999523162842]]
        >>> maxsim(q, c, budget=(1, 1)).tolist()
        [[1.0]]
    """
    if not isinstance(candidates, (Tensor, np.ndarray, list, tuple)) and hasattr(candidates, "score"):
        return candidates.score(queries, budget=budget, chunk_bytes=chunk_bytes)
    q, _ = pad_queries(queries)
    c, c_lengths = pad_candidates(candidates)
    if q.shape[-1] != c.shape[-1]:
        raise ValueError(
            f"Dimension mismatch: queries have d={q.shape[-1]} but candidates have d={c.shape[-1]}. "
            "Encode both with the same model (and the same output dimension)."
        )
    r_q, r_c = validate_budget(budget, max_query_vectors=q.shape[1], max_candidate_vectors=c.shape[1])
    if c.dtype in _QUANTIZED_DTYPES:
        raise ValueError(
            f"maxsim takes floating point candidates; {c.dtype} vectors need their scales: store them in "
            "a MetaEmbedIndex (dtype='int8' or 'float8_e4m3') and call index.score."
        )
    scores = score_slots(
        q[:, :r_q],
        c[:, :r_c].transpose(0, 1),
        device=device,
        compute_dtype=compute_dtype,
        chunk_bytes=chunk_bytes,
        strategy=strategy,
    )
    empty = c_lengths == 0
    if bool(empty.any()):
        scores[:, empty.to(scores.device)] = float("-inf")
    return scores
