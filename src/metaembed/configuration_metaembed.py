# Shipped inside every MetaEmbed checkpoint: imports only torch and transformers.
"""Configuration of MetaEmbed models.

MetaEmbed appends a fixed set of learnable *Meta Tokens* to the input of a backbone and uses their final hidden
states as a nested set of multi-vector embeddings: ``num_query_meta_tokens`` vectors for queries and
``num_candidate_meta_tokens`` vectors for candidates. A *budget* ``(r_q, r_c)`` selects the first ``r_q`` query
vectors and the first ``r_c`` candidate vectors.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Any

from transformers import AutoConfig, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

DEFAULT_BUDGETS: tuple[tuple[int, int], ...] = ((1, 1), (2, 4), (4, 8), (8, 16), (16, 64))
ROLES = ("query", "candidate")

# Backbones whose self-attention is bidirectional: every meta token sees every other one, so all of them are
# always encoded and a budget is a slice. Every other backbone is treated as causal.
BIDIRECTIONAL_MODEL_TYPES = frozenset(
    {
        "bert",
        "modernbert",
        "roberta",
        "xlm-roberta",
        "distilbert",
        "electra",
        "mpnet",
        "deberta",
        "deberta-v2",
        "nomic_bert",
        "new",
    }
)


def _as_budget_pair(budget: Any) -> tuple[int, int]:
    if (
        not isinstance(budget, Sequence)
        or isinstance(budget, str)
        or len(budget) != 2
        or not all(isinstance(r, int) and not isinstance(r, bool) for r in budget)
    ):
        raise ValueError(f"Each budget must be a pair of integers (r_q, r_c), got {budget!r}.")
    return int(budget[0]), int(budget[1])


class MetaEmbedConfig(PretrainedConfig):
    r"""Configuration of a [`MetaEmbedModel`].

    Args:
        backbone_config (`PretrainedConfig` or `dict`, *optional*):
            Configuration of the backbone, any model that `AutoModel` builds: Qwen2.5-VL (the paper's), Qwen2-VL,
            Qwen3-VL, or a text encoder/decoder such as BERT, ModernBERT, Qwen2 or Qwen3. A dict must carry
            `model_type`. Defaults to a default `qwen2_5_vl` configuration.
        num_query_meta_tokens (`int`, *optional*, defaults to 16):
            Number of query-side Meta Tokens, the largest query budget `r_q`.
        num_candidate_meta_tokens (`int`, *optional*, defaults to 64):
            Number of candidate-side Meta Tokens, the largest candidate budget `r_c`.
        budgets (`list[tuple[int, int]]`, *optional*):
            The nested budget groups `(r_q, r_c)` trained by Matryoshka Multi-Vector Retrieval and swept at
            evaluation. Defaults to `[(1, 1), (2, 4), (4, 8), (8, 16), (16, 64)]`, clipped to the counts.
        embedding_dim (`int`, *optional*):
            `None` (the paper's setting) returns hidden states of the backbone's hidden size; an integer adds a
            linear projection to that many dimensions.
        normalize (`bool`, *optional*, defaults to `True`):
            Whether every output vector is L2-normalised.
        causal (`bool`, *optional*):
            Whether the backbone attends causally. `None` infers it from the backbone's `model_type` (encoders such
            as BERT and ModernBERT are bidirectional, decoders are causal).

    Example:

    ```python
    >>> from transformers import Qwen2Config
    >>> config = MetaEmbedConfig(backbone_config=Qwen2Config(hidden_size=64, num_hidden_layers=2))
    >>> config.num_query_meta_tokens, config.num_candidate_meta_tokens
    (16, 64)
    >>> config.check_budget("candidate", 8)
    8
    ```
    """

    model_type = "metaembed"
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(
        self,
        backbone_config: PretrainedConfig | dict | None = None,
        num_query_meta_tokens: int = 16,
        num_candidate_meta_tokens: int = 64,
        budgets: Sequence[Sequence[int]] | None = None,
        embedding_dim: int | None = None,
        normalize: bool = True,
        causal: bool | None = None,
        **kwargs,
    ):
        if backbone_config is None:
            backbone_config = CONFIG_MAPPING["qwen2_5_vl"]()
        elif isinstance(backbone_config, dict):
            backbone_config = dict(backbone_config)
            model_type = backbone_config.pop("model_type", None)
            if model_type not in CONFIG_MAPPING:
                raise ValueError(
                    f"backbone_config must name a model_type that transformers knows, got {model_type!r}."
                )
            backbone_config = CONFIG_MAPPING[model_type](**backbone_config)
        elif isinstance(backbone_config, PretrainedConfig):
            # A copy: PretrainedConfig.__init__ below resets the attention implementation of sub-configs, which
            # must not leak into the caller's (possibly live) backbone config.
            backbone_config = copy.deepcopy(backbone_config)
        else:
            raise TypeError(
                f"backbone_config must be a PretrainedConfig or a dict with 'model_type', got {type(backbone_config)}."
            )
        for name, value in (
            ("num_query_meta_tokens", num_query_meta_tokens),
            ("num_candidate_meta_tokens", num_candidate_meta_tokens),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if embedding_dim is not None and (not isinstance(embedding_dim, int) or embedding_dim < 1):
            raise ValueError(f"embedding_dim must be None or an integer >= 1, got {embedding_dim!r}.")

        if budgets is None:
            budgets = sorted(
                {
                    (min(q, num_query_meta_tokens), min(c, num_candidate_meta_tokens))
                    for q, c in DEFAULT_BUDGETS
                }
            )
        budgets = [_as_budget_pair(b) for b in budgets]
        if not budgets:
            raise ValueError("budgets must hold at least one (r_q, r_c) pair.")
        for r_q, r_c in budgets:
            if not 1 <= r_q <= num_query_meta_tokens:
                raise ValueError(
                    f"Budget {(r_q, r_c)} has r_q={r_q} outside the allowed range 1..{num_query_meta_tokens}."
                )
            if not 1 <= r_c <= num_candidate_meta_tokens:
                raise ValueError(
                    f"Budget {(r_q, r_c)} has r_c={r_c} outside the allowed range 1..{num_candidate_meta_tokens}."
                )
        for previous, current in itertools.pairwise(budgets):
            if current == previous or current[0] < previous[0] or current[1] < previous[1]:
                raise ValueError(
                    f"budgets must increase on both sides without repeats, but {current} follows {previous} "
                    f"in {budgets}."
                )

        self.backbone_config = backbone_config
        self.num_query_meta_tokens = num_query_meta_tokens
        self.num_candidate_meta_tokens = num_candidate_meta_tokens
        self.budgets = [list(b) for b in budgets]
        self.embedding_dim = embedding_dim
        self.normalize = normalize
        self.causal = causal
        super().__init__(**kwargs)

    @property
    def is_causal(self) -> bool:
        """Whether the backbone attends causally (explicit `causal`, else inferred from its `model_type`)."""
        if self.causal is not None:
            return bool(self.causal)
        return self.backbone_config.model_type not in BIDIRECTIONAL_MODEL_TYPES

    @property
    def is_multimodal(self) -> bool:
        """Whether the backbone has a vision tower (Qwen-VL style)."""
        return getattr(self.backbone_config, "vision_config", None) is not None

    @property
    def hidden_size(self) -> int:
        """Hidden size of the backbone's language model: the width of the meta token table."""
        return self.backbone_config.get_text_config().hidden_size

    @property
    def output_dim(self) -> int:
        """Dimension of every output vector."""
        return self.embedding_dim if self.embedding_dim is not None else self.hidden_size

    @property
    def num_meta_tokens(self) -> int:
        """Rows of the meta token table: query-side then candidate-side."""
        return self.num_query_meta_tokens + self.num_candidate_meta_tokens

    def max_budget(self, role: str) -> int:
        """The full vector count for `role` ("query" or "candidate")."""
        self.check_role(role)
        return self.num_query_meta_tokens if role == "query" else self.num_candidate_meta_tokens

    @staticmethod
    def check_role(role: str) -> str:
        if role not in ROLES:
            raise ValueError(f"role must be 'query' or 'candidate', got {role!r}.")
        return role

    def check_budget(self, role: str, budget: int | None) -> int:
        """Validates a single-side budget and returns it (the full count when `budget` is None).

        This is the one place budgets are validated: the model, the processor-facing encode helpers and the
        sentence-transformers module all call it.

        Raises:
            ValueError: if `role` is unknown or `budget` is not an integer within `1..max_budget(role)`.
        """
        limit = self.max_budget(role)
        if budget is None:
            return limit
        if isinstance(budget, bool) or not isinstance(budget, int):
            # Accept integer-valued numpy / torch scalars, refuse floats and strings.
            if (
                hasattr(budget, "item")
                and getattr(budget, "ndim", 0) == 0
                and float(budget.item()).is_integer()
            ):
                budget = int(budget.item())
            else:
                raise ValueError(f"The {role} budget must be an integer in 1..{limit}, got {budget!r}.")
        if not 1 <= budget <= limit:
            raise ValueError(f"The {role} budget must be in 1..{limit}, got {budget}.")
        return budget

    def check_budget_pair(self, budget: Sequence[int] | None) -> tuple[int, int]:
        """Validates a `(r_q, r_c)` pair (None means the full budget) and returns it as a tuple."""
        if budget is None:
            return self.num_query_meta_tokens, self.num_candidate_meta_tokens
        if isinstance(budget, str) or not isinstance(budget, Sequence) or len(budget) != 2:
            raise ValueError(f"A budget must be a pair (r_q, r_c), got {budget!r}.")
        return self.check_budget("query", budget[0]), self.check_budget("candidate", budget[1])


__all__ = ["MetaEmbedConfig"]
