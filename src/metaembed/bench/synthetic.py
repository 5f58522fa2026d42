"""Seeded synthetic MetaEmbed-like embeddings with a clear ranking structure.

Uniformly random unit vectors give every candidate almost the same MaxSim score, so any rounding
reshuffles the top-10 and a "top-10 overlap" measures noise. Here every item (query or candidate) has
a latent topic ``z`` in a ``latent_dim``-dimensional space; each of its vectors is
``normalize((z + 0.5 e) P + 0.5 g)`` with a shared projection ``P`` and per-vector noise ``e``, ``g``.
Scores then spread with topic similarity, as real embeddings' do.

Example:
    >>> corpus = SyntheticCorpus(dim=16, seed=0)
    >>> corpus.candidates(10, 4).shape, corpus.queries(2, 3).shape
    (torch.Size([4, 10, 16]), torch.Size([2, 3, 16]))
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SyntheticCorpus"]


class SyntheticCorpus:
    """Generates candidates (budget-major) and queries sharing one latent space.

    Args:
        dim: Vector dimension.
        latent_dim: Dimension of the topic space.
        seed: Seed of every draw.
        device: Where vectors are generated (generation on the GPU avoids a host copy).
    """

    def __init__(
        self, dim: int, *, latent_dim: int = 64, seed: int = 0, device: torch.device | str = "cpu"
    ) -> None:
        self.dim, self.latent_dim, self.device = dim, latent_dim, torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.projection = self._randn(latent_dim, dim) / latent_dim**0.5

    def _randn(self, *shape: int) -> Tensor:
        return torch.randn(*shape, generator=self.generator, device=self.device)

    def _vectors(self, topics: Tensor) -> Tensor:
        noisy = topics + 0.5 * self._randn(*topics.shape)
        values = noisy @ self.projection + 0.5 * self._randn(topics.shape[0], self.dim)
        return torch.nn.functional.normalize(values, dim=-1)

    def candidates(
        self, n: int, r_c: int, *, dtype: torch.dtype = torch.bfloat16, block: int = 4096
    ) -> Tensor:
        """Budget-major candidates ``[r_c, n, dim]``, generated a block at a time into ``dtype``."""
        out = torch.empty(r_c, n, self.dim, dtype=dtype, device=self.device)
        for start in range(0, n, block):
            stop = min(n, start + block)
            topics = self._randn(stop - start, self.latent_dim)
            for j in range(r_c):
                out[j, start:stop] = self._vectors(topics)
        return out

    def queries(self, n: int, r_q: int, *, dtype: torch.dtype = torch.bfloat16) -> Tensor:
        """Queries ``[n, r_q, dim]``."""
        topics = self._randn(n, self.latent_dim)
        return torch.stack([self._vectors(topics) for _ in range(r_q)], dim=1).to(dtype)
