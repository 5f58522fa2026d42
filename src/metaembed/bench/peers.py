"""What the benchmark compares against: sentence-transformers' ``maxsim``, a naive chunked einsum
(the colpali-engine / pylate pattern), and a plain GEMM of the same FLOPs without the max.

Example:
    >>> import torch
    >>> queries, candidates = torch.randn(1, 2, 8), torch.randn(5, 3, 8)
    >>> naive_einsum_maxsim(queries, candidates, batch_size=2).shape
    torch.Size([1, 5])
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["naive_einsum_maxsim", "plain_gemm", "st_maxsim"]


def st_maxsim(queries: Tensor, candidates: Tensor) -> Tensor:
    """``sentence_transformers.util.similarity.maxsim`` on item-major ``[n, r_c, d]`` candidates."""
    from sentence_transformers.util.similarity import maxsim

    return maxsim(queries, candidates)


def naive_einsum_maxsim(queries: Tensor, candidates: Tensor, batch_size: int = 128) -> Tensor:
    """The common late-interaction loop: per batch of candidates, one einsum over every token pair,
    a max over candidate tokens and a sum over query tokens (float32 at the end)."""
    scores = []
    for start in range(0, candidates.shape[0], batch_size):
        batch = candidates[start : start + batch_size]
        pair_scores = torch.einsum("bnd,csd->bcns", queries, batch)
        scores.append(pair_scores.max(dim=3)[0].sum(dim=2, dtype=torch.float32))
    return torch.cat(scores, dim=1)


def plain_gemm(queries: Tensor, slots: Tensor, out: Tensor) -> Tensor:
    """The same FLOPs as MaxSim with no max: one ``[M, d] @ [d, n]`` GEMM per candidate slot into ``out``.

    ``queries`` is ``[M, d]``, ``slots`` budget-major ``[r_c, N, d]``, ``out`` ``[M, block]``; the
    candidates are covered ``block`` at a time.
    """
    block = out.shape[1]
    for j in range(slots.shape[0]):
        for start in range(0, slots.shape[1], block):
            part = slots[j, start : start + block]
            torch.mm(queries, part.t(), out=out[:, : part.shape[0]])
    return out
