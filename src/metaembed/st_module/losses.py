"""Matryoshka Multi-Vector Retrieval (MMR): one InfoNCE loss per budget group, averaged.

For each budget group `(r_q, r_c)` the loss is InfoNCE over MaxSim scores of the first `r_q` query vectors against
the first `r_c` candidate vectors, divided by a temperature. The candidates of a query are every positive of the
batch (gathered across processes with their gradients when asked) plus that query's own hard negatives, which are
not shared with the other queries.

The token similarities are computed once, at the largest budget: `sim[i, j, s, t] = <q_i,s, c_j,t>`. A running
maximum over the candidate vectors (`cummax`) then holds, for every prefix length `r_c`, the best match of each
query vector among the first `r_c` candidate vectors, so every group's scores are a slice and a sum of it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .encoder import find_metaembed_module

logger = logging.getLogger(__name__)

TEXT_FEATURES = frozenset({"input_ids", "attention_mask"})


def _check_groups(budgets: Sequence[Sequence[int]], weights: Sequence[float] | None) -> tuple[list, list]:
    groups = [(int(r_q), int(r_c)) for r_q, r_c in budgets]
    if not groups:
        raise ValueError("MMR needs at least one budget group (r_q, r_c).")
    for previous, current in itertools.pairwise(groups):
        if current == previous or current[0] < previous[0] or current[1] < previous[1]:
            raise ValueError(
                f"Budget groups must grow on both sides without repeats, but {current} follows {previous} in "
                f"{groups}."
            )
    if weights is None:
        weights = [1.0] * len(groups)
    weights = [float(w) for w in weights]
    if len(weights) != len(groups) or any(not w > 0 for w in weights):
        raise ValueError(
            f"Give one positive weight per budget group: {len(groups)} groups {groups}, weights {weights}."
        )
    return groups, weights


class _ContiguousGradient(torch.autograd.Function):
    """Identity whose backward hands on a contiguous gradient.

    On gloo, `torch.distributed.nn.all_gather` sends its gradient back with `scatter` into buffers made by
    `torch.empty_like(grad)`, which keeps a non-contiguous gradient's strides while gloo writes contiguous bytes:
    the gradient arrives scrambled. The einsum below produces exactly such a (permuted) gradient, so it is made
    contiguous before it reaches the gather (NCCL's reduce-scatter path is unaffected).
    """

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx: Any, gradient: Tensor) -> Tensor:
        return gradient.contiguous()


def group_scores(similarity: Tensor, budgets: Sequence[tuple[int, int]]) -> list[Tensor]:
    """MaxSim scores of every budget group from one full-budget token similarity.

    Args:
        similarity: `[..., R_q, R_c]` token similarities at the largest budget.
        budgets: `(r_q, r_c)` groups with `r_q <= R_q`, `r_c <= R_c`.

    Returns:
        One `[...]` score tensor per group: `sum_{s < r_q} max_{t < r_c} similarity[..., s, t]`.

    Example:
        >>> sim = torch.tensor([[1.0, 3.0], [2.0, 0.0]])
        >>> [s.item() for s in group_scores(sim, [(1, 1), (2, 2)])]
        [1.0, 5.0]
    """
    prefix_max = similarity.cummax(dim=-1).values
    widths = sorted({r_c for _, r_c in budgets})
    columns = prefix_max.index_select(-1, torch.tensor([w - 1 for w in widths], device=similarity.device))
    return [columns[..., :r_q, widths.index(r_c)].sum(dim=-1) for r_q, r_c in budgets]


def mmr_loss(
    query_embeddings: Tensor,
    positive_embeddings: Tensor,
    negative_embeddings: Tensor | None = None,
    *,
    budgets: Sequence[Sequence[int]],
    weights: Sequence[float] | None = None,
    temperature: float = 0.03,
    gather_across_devices: bool = False,
    return_group_losses: bool = False,
) -> Tensor | tuple[Tensor, list[Tensor]]:
    """The MMR loss of a batch of embeddings.

    Args:
        query_embeddings: `[B, R_q, d]`, at least the largest group's `r_q` vectors.
        positive_embeddings: `[B, R_c, d]`, the positive candidate of each query.
        negative_embeddings: `[B, K, R_c, d]` hard negatives, query `i`'s own in row `i` (K may be 0), or None.
        budgets: The `(r_q, r_c)` groups, growing on both sides.
        weights: One positive weight per group (default 1); the loss is the weighted mean of the group losses.
        temperature: The InfoNCE temperature tau (scores are divided by it).
        gather_across_devices: Score every query against the positives of all processes (gathered with their
            gradients); every process must hold the same number of queries.
        return_group_losses: Also return the per-group losses.

    Returns:
        The scalar loss (and the list of group losses).

    Example:
        >>> q = torch.nn.functional.normalize(torch.randn(4, 2, 8), dim=-1)
        >>> p = torch.nn.functional.normalize(torch.randn(4, 4, 8), dim=-1)
        >>> mmr_loss(q, p, budgets=[(1, 1), (2, 4)]).shape
        torch.Size([])
    """
    groups, weights = _check_groups(budgets, weights)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if query_embeddings.ndim != 3 or positive_embeddings.ndim != 3:
        raise ValueError(
            f"Expected query embeddings [B, R_q, d] and positive embeddings [B, R_c, d], got shapes "
            f"{tuple(query_embeddings.shape)} and {tuple(positive_embeddings.shape)}."
        )
    batch_size, max_q, dim = query_embeddings.shape
    if positive_embeddings.shape[0] != batch_size:
        raise ValueError(
            f"Got {batch_size} queries but {positive_embeddings.shape[0]} positives; give one positive per query."
        )
    if positive_embeddings.shape[-1] != dim:
        raise ValueError(
            f"Query vectors have dimension {dim} but candidate vectors have {positive_embeddings.shape[-1]}."
        )
    largest_q = max(r_q for r_q, _ in groups)
    largest_c = max(r_c for _, r_c in groups)
    if max_q < largest_q or positive_embeddings.shape[1] < largest_c:
        raise ValueError(
            f"The groups {groups} need {largest_q} query and {largest_c} candidate vectors, but the embeddings hold "
            f"{max_q} and {positive_embeddings.shape[1]}."
        )
    query_embeddings = query_embeddings[:, :largest_q]
    positives = positive_embeddings[:, :largest_c]
    offset = 0
    if gather_across_devices:
        from sentence_transformers.util import all_gather, get_rank

        positives = _ContiguousGradient.apply(all_gather(positives.contiguous(), with_grad=True))
        offset = get_rank() * batch_size

    similarity = torch.einsum("ash,bth->abst", query_embeddings, positives)
    if negative_embeddings is not None and negative_embeddings.shape[1] > 0:
        if negative_embeddings.ndim != 4 or negative_embeddings.shape[0] != batch_size:
            raise ValueError(
                f"Hard negatives must be [B, K, R_c, d] with B={batch_size}, got {tuple(negative_embeddings.shape)}."
            )
        negatives = negative_embeddings[:, :, :largest_c]
        similarity = torch.cat(
            [similarity, torch.einsum("ash,akth->akst", query_embeddings, negatives)], dim=1
        )

    labels = torch.arange(batch_size, device=query_embeddings.device) + offset
    group_losses = [
        F.cross_entropy(scores.float() / temperature, labels) for scores in group_scores(similarity, groups)
    ]
    total = sum(w * loss for w, loss in zip(weights, group_losses)) / sum(weights)
    return (total, group_losses) if return_group_losses else total


class MMRLoss(nn.Module):
    """Matryoshka Multi-Vector Retrieval loss for `MultiVectorEncoderTrainer` and a MetaEmbed `MultiVectorEncoder`.

    Every query is encoded once at the largest group's `r_q` and every candidate once at its `r_c` (a causal
    backbone appends just those meta tokens); each smaller group reads a prefix of those vectors (see
    [`mmr_loss`]). The candidate columns (positive and negatives) of a text batch run in one forward pass.

    Args:
        model: A `MultiVectorEncoder` holding a MetaEmbed module.
        budgets: `(r_q, r_c)` groups; defaults to the model config's `budgets` (the paper's (1,1), (2,4), (4,8),
            (8,16), (16,64), clipped to the meta token counts). Each is validated by the config.
        weights: One positive weight per group (default all 1).
        temperature: InfoNCE temperature tau, default 0.03.
        mmr: False trains only the largest group (the paper's NoMMR ablation).
        gather_across_devices: Score each query against the positives of every process, gathered with gradients,
            as sentence-transformers' MNRL does.
        report_group_losses: Return a dict of weighted group losses (they sum to the loss), which the trainer logs
            one by one.

    Inputs:
        `(query, positive)` pairs or `(query, positive, negative_1, ..., negative_n)` tuples; negatives are each
        query's own.

    Example:
        >>> from sentence_transformers import MultiVectorEncoder, MultiVectorEncoderTrainer
        >>> model = MultiVectorEncoder("path/to/metaembed-checkpoint", trust_remote_code=True)
        >>> loss = MMRLoss(model)
        >>> trainer = MultiVectorEncoderTrainer(model=model, train_dataset=dataset, loss=loss)
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        budgets: Sequence[Sequence[int]] | None = None,
        weights: Sequence[float] | None = None,
        temperature: float = 0.03,
        mmr: bool = True,
        gather_across_devices: bool = False,
        report_group_losses: bool = False,
    ):
        super().__init__()
        self.model = model
        config = find_metaembed_module(model).metaembed_config
        budgets = [
            config.check_budget_pair(tuple(b)) for b in (config.budgets if budgets is None else budgets)
        ]
        budgets, weights = _check_groups(budgets, weights)
        if not mmr:
            budgets, weights = budgets[-1:], [1.0]
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.budgets = budgets
        self.weights = weights
        self.temperature = float(temperature)
        self.mmr = mmr
        self.gather_across_devices = gather_across_devices
        self.report_group_losses = report_group_losses
        self.query_budget = max(r_q for r_q, _ in budgets)
        self.candidate_budget = max(r_c for _, r_c in budgets)

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "budgets": [list(b) for b in self.budgets],
            "weights": self.weights,
            "temperature": self.temperature,
            "mmr": self.mmr,
            "gather_across_devices": self.gather_across_devices,
        }

    def embed_candidates(self, columns: list[dict[str, Any]]) -> Tensor:
        """`[n_columns * B, r_c, d]` candidate vectors, column-major; text columns share one forward pass."""
        merged = _merge_left_padded(columns)
        if merged is not None:
            return self.model(merged, task="document", budget=self.candidate_budget)["token_embeddings"]
        return torch.cat(
            [
                self.model(column, task="document", budget=self.candidate_budget)["token_embeddings"]
                for column in columns
            ]
        )

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None):
        features = [dict(f) for f in sentence_features]
        if len(features) < 2:
            raise ValueError(
                "MMRLoss needs (query, positive) pairs or (query, positive, negative_1, ...) tuples; got "
                f"{len(features)} column(s)."
            )
        queries = self.model(features[0], task="query", budget=self.query_budget)["token_embeddings"]
        candidates = self.embed_candidates(features[1:])
        batch_size = queries.shape[0]
        width, dim = candidates.shape[1:]
        positives = candidates[:batch_size]
        negatives = candidates[batch_size:].view(len(features) - 2, batch_size, width, dim).transpose(0, 1)
        total, group_losses = mmr_loss(
            queries,
            positives,
            negatives,
            budgets=self.budgets,
            weights=self.weights,
            temperature=self.temperature,
            gather_across_devices=self.gather_across_devices,
            return_group_losses=True,
        )
        if not self.report_group_losses:
            return total
        norm = sum(self.weights)
        return {
            f"mmr_{r_q}x{r_c}": w * loss / norm
            for (r_q, r_c), w, loss in zip(self.budgets, self.weights, group_losses)
        }

    @property
    def citation(self) -> str:
        return """
@inproceedings{xiao2026metaembed,
    title={MetaEmbed: Scaling Multimodal Retrieval at Test-Time with Flexible Late Interaction},
    author={Zilin Xiao and Qi Ma and Mengting Gu and Chun-cheng Jason Chen and Xintao Chen and Vicente Ordonez and Vijai Mohan},
    booktitle={International Conference on Learning Representations},
    year={2026},
    eprint={2509.18095},
    archivePrefix={arXiv}
}
"""


def _merge_left_padded(columns: list[dict[str, Any]]) -> dict[str, Tensor] | None:
    """Concatenates text-only columns into one left-padded batch (the processor pads on the left, so the meta
    tokens stay at the end of every row); None when a column carries images or other features."""
    tensors = [{k: v for k, v in column.items() if isinstance(v, Tensor)} for column in columns]
    if len(columns) == 1:
        return tensors[0] if set(tensors[0]) <= TEXT_FEATURES else None
    if any(set(t) != TEXT_FEATURES for t in tensors):
        return None
    width = max(t["input_ids"].shape[1] for t in tensors)
    return {
        key: torch.cat([F.pad(t[key], (width - t[key].shape[1], 0)) for t in tensors])
        for key in ("input_ids", "attention_mask")
    }


__all__ = ["MMRLoss", "group_scores", "mmr_loss"]
