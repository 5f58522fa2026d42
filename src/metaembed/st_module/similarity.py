"""A budgeted MaxSim that sentence-transformers losses and evaluators accept as `similarity_fct`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from sentence_transformers.multi_vector_encoder.scoring import colbert_scores
from sentence_transformers.util.similarity import maxsim

from .sentence_transformers_metaembed import budgeted_maxsim, check_budget_pair


class BudgetedMaxSim:
    """MaxSim over the first `r_q` query vectors and the first `r_c` document vectors.

    One callable serves both sentence-transformers conventions:

    - all-pairs scoring, `fn(queries, documents)` with `[n, r, d]` tensors, lists of `[r, d]` tensors or numpy
      arrays (what `encode_query` / `encode_document` return), as `MultiVectorEncoder.similarity` and the
      information-retrieval / reranking evaluators call it (`score_functions={"maxsim@(4,8)": fn}`);
    - the contrastive losses' convention, `fn(queries[Q, q, d], documents[Q, N, t, d], queries_mask=...,
      documents_mask=...)` returning `[Q, Q * N]` query-major scores, as
      `MultiVectorMultipleNegativesRankingLoss(similarity_fct=fn)` calls it.

    All-zero document vectors are masked out, so an empty or zero-padded document never wins a ranking.

    Args:
        budget: `(r_q, r_c)`; None scores every vector.
        config: A `MetaEmbedConfig` that validates the budget (`config.check_budget_pair`); without one the budget
            is bounded by the vectors the embeddings hold.

    Raises:
        ValueError: for a budget outside the allowed range, or query and document vectors of different dimensions.

    Example:
        >>> scorer = BudgetedMaxSim((2, 4), config=model.config)
        >>> scorer(model.encode_query(["a query"]), model.encode_document(["a document"])).shape
        torch.Size([1, 1])
        >>> loss = MultiVectorMultipleNegativesRankingLoss(model, similarity_fct=BudgetedMaxSim((1, 1)))
    """

    def __init__(self, budget: Sequence[int] | None = None, *, config: Any | None = None):
        self.config = config
        self.budget = check_budget_pair(budget, config)
        self.__name__ = "maxsim" if budget is None else f"maxsim_at_{self.budget[0]}_{self.budget[1]}"

    @classmethod
    def from_model(cls, model: Any, budget: Sequence[int] | None = None) -> BudgetedMaxSim:
        """A scorer validated by the MetaEmbed config of a `MultiVectorEncoder` or `MetaEmbedModel`."""
        config = getattr(model, "config", None)
        if getattr(config, "model_type", None) != "metaembed":
            raise ValueError(
                f"{type(model).__name__} is not a MetaEmbed model; its config cannot bound a budget."
            )
        return cls(budget, config=config)

    def get_config_dict(self) -> dict[str, Any]:
        return {"budget": None if self.budget == (None, None) else list(self.budget)}

    def __call__(
        self,
        queries: Any,
        documents: Any,
        queries_mask: torch.Tensor | None = None,
        documents_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        kwargs.pop("budget", None)
        budget = None if self.budget == (None, None) else self.budget
        a_mask = kwargs.pop("a_mask", queries_mask)
        b_mask = kwargs.pop("b_mask", documents_mask)
        if isinstance(documents, torch.Tensor) and documents.ndim == 4:
            return self._contrastive(queries, documents, a_mask, b_mask, **kwargs)
        return budgeted_maxsim(
            queries,
            documents,
            budget,
            config=self.config,
            score_fn=maxsim,
            a_mask=a_mask,
            b_mask=b_mask,
            **kwargs,
        )

    def _contrastive(
        self,
        queries: torch.Tensor,
        documents: torch.Tensor,
        queries_mask: torch.Tensor | None,
        documents_mask: torch.Tensor | None,
        **kwargs: Any,
    ) -> torch.Tensor:
        groups, ways, width, dim = documents.shape
        # Score the documents flattened to [groups * ways, width, dim] with the shared slicing and masking, then
        # restore colbert_scores' query-major layout through colbert_scores itself.
        flat_mask = None if documents_mask is None else documents_mask.reshape(groups * ways, -1)
        flat = documents.reshape(groups * ways, width, dim)

        def score(queries, flat_documents, a_mask=None, b_mask=None, **score_kwargs):
            stacked = flat_documents.reshape(groups, ways, -1, dim)
            stacked_mask = None if b_mask is None else b_mask.reshape(groups, ways, -1)
            return colbert_scores(
                queries, stacked, queries_mask=a_mask, documents_mask=stacked_mask, **score_kwargs
            )

        budget = None if self.budget == (None, None) else self.budget
        return budgeted_maxsim(
            queries,
            flat,
            budget,
            config=self.config,
            score_fn=score,
            a_mask=queries_mask,
            b_mask=flat_mask,
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"BudgetedMaxSim(budget={self.get_config_dict()['budget']})"


__all__ = ["BudgetedMaxSim"]
