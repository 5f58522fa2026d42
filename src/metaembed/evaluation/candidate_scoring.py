"""Scoring each query against its own candidate list with MaxSim, in blocks, on the model's device.

mteb's generic re-ranking loop gathers every query's candidates on the CPU one query at a time; with MMEB's 1000
candidates of 64 vectors of width 3584 that is about 1 GB copied per query. Here queries go in blocks: a block's
candidates are gathered once (the union of their lists), scored with one GEMM per chunk, and each query keeps the
scores of its own candidates.

Example:
    >>> import torch
    >>> q = torch.nn.functional.normalize(torch.randn(2, 2, 8), dim=-1)
    >>> d = torch.nn.functional.normalize(torch.randn(5, 3, 8), dim=-1)
    >>> ranked = rank_candidate_lists(q, d, [[0, 1, 2], [4, 3]], top_k=2)
    >>> [len(indices) for _, indices in ranked]
    [2, 2]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from metaembed.modeling_metaembed import maxsim_scores


def _device_copy(documents: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Moves the documents to the device once when they fit in half of its free memory; else leaves them in place."""
    if device.type != "cuda" or documents.device == device:
        return documents
    free, _ = torch.cuda.mem_get_info(device)
    if documents.numel() * documents.element_size() < free // 2:
        return documents.to(device)
    return documents


def rank_candidate_lists(
    query_embeddings: torch.Tensor,
    document_embeddings: torch.Tensor,
    candidates: Sequence[Sequence[int]],
    *,
    top_k: int,
    device: torch.device | str | None = None,
    query_block_size: int = 64,
    document_block_size: int = 1024,
) -> list[tuple[list[float], list[int]]]:
    """Ranks each query's own candidates by MaxSim.

    Args:
        query_embeddings: ``[n_q, r_q, d]``.
        document_embeddings: ``[n_d, r_c, d]``: every document any list refers to.
        candidates: For each query, indices into ``document_embeddings``.
        top_k: How many of each list to keep.
        device: Where to score; defaults to the queries' device.
        query_block_size: Queries whose candidate lists are gathered together.
        document_block_size: Documents per GEMM.

    Returns:
        For each query, ``(scores, document indices)`` of its ``min(top_k, len(list))`` best candidates, best first.
    """
    if len(candidates) != query_embeddings.shape[0]:
        raise ValueError(
            f"Got {query_embeddings.shape[0]} query embeddings but {len(candidates)} candidate lists; they must pair up."
        )
    device = torch.device(device) if device is not None else query_embeddings.device
    documents = _device_copy(document_embeddings, device)
    ranked: list[tuple[list[float], list[int]]] = []
    for start in range(0, len(candidates), query_block_size):
        lists = candidates[start : start + query_block_size]
        union = sorted({index for row in lists for index in row})
        column = {index: position for position, index in enumerate(union)}
        queries = query_embeddings[start : start + len(lists)].to(device)
        union_tensor = torch.as_tensor(union, dtype=torch.long, device=documents.device)
        block_scores = [
            maxsim_scores(
                queries,
                documents.index_select(0, union_tensor[offset : offset + document_block_size]),
                candidate_block_size=document_block_size,
            )
            for offset in range(0, len(union), document_block_size)
        ]
        scores = torch.cat(block_scores, dim=1) if block_scores else queries.new_empty(len(lists), 0)
        for row, own in enumerate(lists):
            if not own:
                ranked.append(([], []))
                continue
            columns = torch.as_tensor([column[index] for index in own], device=scores.device)
            values, order = torch.topk(scores[row, columns], min(top_k, len(own)))
            ranked.append((values.cpu().tolist(), [own[position] for position in order.cpu().tolist()]))
    return ranked


__all__ = ["rank_candidate_lists"]
