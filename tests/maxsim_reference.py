"""A float64 MaxSim reference for the scoring and index tests: obviously right, never fast."""

from __future__ import annotations

import torch
from torch import Tensor


def reference_maxsim(
    queries: list[Tensor] | Tensor, candidates: list[Tensor] | Tensor, budget: tuple[int, int] | None = None
) -> Tensor:
    """``s[a, b] = sum_{i < r_q} max_{j < r_c} <q_a,i, c_b,j>`` in float64, item by item (ragged-safe).

    A candidate with no vectors scores ``-inf``; a query with no vectors scores 0.
    """
    r_q, r_c = budget if budget is not None else (None, None)
    if isinstance(queries, Tensor) and isinstance(candidates, Tensor):
        q, c = queries[:, :r_q].double(), candidates[:, :r_c].double()
        return torch.einsum("aid,bjd->abij", q, c).amax(dim=3).sum(dim=2)
    out = torch.empty(len(queries), len(candidates), dtype=torch.float64)
    for a, query in enumerate(queries):
        q = query[:r_q].double()
        for b, candidate in enumerate(candidates):
            c = candidate[:r_c].double()
            if c.shape[0] == 0:
                out[a, b] = float("-inf")
            elif q.shape[0] == 0:
                out[a, b] = 0.0
            else:
                out[a, b] = (q @ c.T).amax(dim=1).sum()
    return out


def normalized(*shape: int, generator: torch.Generator | None = None) -> Tensor:
    """Random L2-normalised vectors (the last dimension), float32."""
    return torch.nn.functional.normalize(torch.randn(*shape, generator=generator), dim=-1)
