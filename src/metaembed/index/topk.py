"""Top-k bookkeeping shared by the index, its shards and the two-stage search.

Ranking rule: score descending; equal scores keep insertion order (the lower position first).

Example:
    >>> import torch
    >>> scores, positions = merge_topk(
    ...     [torch.tensor([[3.0, 1.0]]), torch.tensor([[2.0, 1.0]])],
    ...     [torch.tensor([[0, 1]]), torch.tensor([[5, 6]])],
    ...     k=3,
    ... )
    >>> scores.tolist(), positions.tolist()
    ([[3.0, 2.0, 1.0]], [[0, 5, 1]])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["PLACEHOLDER_POSITION", "RunningTopK", "merge_topk", "order_results"]

PLACEHOLDER_POSITION = torch.iinfo(torch.int64).max
"""Position of an empty top-k slot (sorts after every real position on ties at ``-inf``)."""


def order_results(scores: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
    """Sorts each row by score descending, ties by position ascending."""
    positions, by_position = positions.sort(dim=1, stable=True)
    scores = scores.gather(1, by_position)
    scores, by_score = scores.sort(dim=1, descending=True, stable=True)
    return scores, positions.gather(1, by_score)


def merge_topk(scores: Sequence[Tensor], positions: Sequence[Tensor], k: int) -> tuple[Tensor, Tensor]:
    """Merges per-shard top-k lists ``[n_q, k_i]`` into one ranked ``[n_q, min(k, sum k_i)]`` list."""
    all_scores = torch.cat([s.to("cpu", torch.float32) for s in scores], dim=1)
    all_positions = torch.cat([p.to("cpu", torch.int64) for p in positions], dim=1)
    all_scores, all_positions = order_results(all_scores, all_positions)
    return all_scores[:, :k], all_positions[:, :k]


class RunningTopK:
    """Keeps the best ``k`` (score, position) pairs per query while blocks of scores stream in.

    Args:
        n_queries: Number of queries (rows).
        k: How many results to keep per query.
        device: Where the running lists live (the compute device).
    """

    def __init__(self, n_queries: int, k: int, device: torch.device | str = "cpu") -> None:
        self.k = k
        self.scores = torch.full((n_queries, k), float("-inf"), device=device)
        self.positions = torch.full((n_queries, k), PLACEHOLDER_POSITION, dtype=torch.int64, device=device)
        self._started = [False] * n_queries  # rows that already hold real results

    def update(self, q0: int, q1: int, scores: Tensor, first_position: int) -> None:
        """Offers ``scores [q1 - q0, b]`` of the candidates at positions ``first_position + 0..b-1``."""
        top = min(self.k, scores.shape[1])
        block_scores, block_index = scores.topk(top, dim=1)
        block_positions = block_index + first_position
        started = self._started[q0:q1]
        self._started[q0:q1] = [True] * (q1 - q0)
        if top == self.k and not any(started):  # the rows' first block: nothing to merge with
            self.scores[q0:q1] = block_scores
            self.positions[q0:q1] = block_positions
            return
        merged_scores = torch.cat([self.scores[q0:q1], block_scores], dim=1)
        merged_positions = torch.cat([self.positions[q0:q1], block_positions], dim=1)
        best_scores, best = merged_scores.topk(self.k, dim=1)
        self.scores[q0:q1] = best_scores
        self.positions[q0:q1] = merged_positions.gather(1, best)

    def result(self, limit: int) -> tuple[Tensor, Tensor]:
        """The ranked ``[n_q, min(k, limit)]`` scores (float32) and positions (int64), on the CPU."""
        scores, positions = order_results(self.scores.to("cpu"), self.positions.to("cpu"))
        keep = min(self.k, limit)
        return scores[:, :keep], positions[:, :keep]
