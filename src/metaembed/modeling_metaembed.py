# Shipped inside every MetaEmbed checkpoint: imports only torch and transformers.
"""MetaEmbed: a backbone plus learnable Meta Tokens whose final hidden states form nested multi-vector embeddings.

Every input is laid out as ``[input | query meta tokens | candidate meta tokens]``. A query is represented by the
hidden states at the first ``r_q`` query-meta positions, a candidate by those at the first ``r_c`` candidate-meta
positions, each vector L2-normalised. With a causal backbone, meta token ``i`` sees only the input and the meta
tokens before it, so the model appends just the meta tokens a budget needs and the result is exactly the prefix of
the full encoding. A bidirectional backbone always encodes all of them and the budget is a slice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_metaembed import MetaEmbedConfig

logger = logging.getLogger(__name__)


@dataclass
class MetaEmbedOutput(ModelOutput):
    """Output of [`MetaEmbedModel.forward`].

    Args:
        embeddings (`torch.FloatTensor` of shape `(batch_size, r, dim)`):
            The budget's multi-vector embeddings, float32, L2-normalised when `config.normalize` is set.
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`, *optional*):
            The backbone's last hidden states over `[input | appended meta tokens]`, returned when
            `output_hidden_states=True`.
    """

    embeddings: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None


def maxsim_scores(
    query_embeddings: torch.Tensor,
    candidate_embeddings: torch.Tensor,
    candidate_block_size: int = 1024,
) -> torch.Tensor:
    """MaxSim late-interaction scores, ``s(q, c) = sum_i max_j <q_i, c_j>``, accumulated in float32.

    Args:
        query_embeddings: `[n_q, r_q, d]`.
        candidate_embeddings: `[n_c, r_c, d]`.
        candidate_block_size: Candidates scored per GEMM, bounding memory at `n_q * r_q * block * r_c` floats.

    Returns:
        `[n_q, n_c]` float32 scores on the queries' device.

    Example:
        >>> q = torch.nn.functional.normalize(torch.randn(2, 4, 8), dim=-1)
        >>> maxsim_scores(q, q).shape
        torch.Size([2, 2])
    """
    if query_embeddings.ndim != 3 or candidate_embeddings.ndim != 3:
        raise ValueError(
            "maxsim_scores expects query embeddings [n_q, r_q, d] and candidate embeddings [n_c, r_c, d], "
            f"got shapes {tuple(query_embeddings.shape)} and {tuple(candidate_embeddings.shape)}."
        )
    if query_embeddings.shape[-1] != candidate_embeddings.shape[-1]:
        raise ValueError(
            f"Query vectors have dimension {query_embeddings.shape[-1]} but candidate vectors have "
            f"{candidate_embeddings.shape[-1]}; both sides must come from the same model."
        )
    n_q, r_q, dim = query_embeddings.shape
    n_c, r_c, _ = candidate_embeddings.shape
    queries = query_embeddings.reshape(n_q * r_q, dim).float()
    scores = queries.new_empty(n_q, n_c)
    for start in range(0, n_c, candidate_block_size):
        block = candidate_embeddings[start : start + candidate_block_size].to(queries.device).float()
        similarity = queries @ block.reshape(-1, dim).T  # [n_q * r_q, block * r_c]
        similarity = similarity.view(n_q, r_q, block.shape[0], r_c)
        scores[:, start : start + block.shape[0]] = similarity.amax(dim=-1).sum(dim=1)
    return scores


class MetaEmbedPreTrainedModel(PreTrainedModel):
    config_class = MetaEmbedConfig
    base_model_prefix = "metaembed"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    # The backbone's own `_no_split_modules` (decoder layers, vision blocks) are collected by `post_init`; the meta
    # token table and the projection are small and may sit on any device.
    _no_split_modules: list[str] = []
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        std = getattr(self.config.backbone_config.get_text_config(), "initializer_range", 0.02) or 0.02
        if isinstance(module, MetaEmbedModel):
            init.normal_(module.meta_tokens.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)


class MetaEmbedModel(MetaEmbedPreTrainedModel):
    r"""A backbone without language-model head, a table of Meta Tokens, and an optional projection.

    The table holds `num_query_meta_tokens + num_candidate_meta_tokens` rows of the backbone's hidden size: the
    query-side rows first. `forward` returns `[batch, r, dim]` L2-normalised embeddings for one role and budget.

    Example:

    ```python
    >>> from transformers import AutoModel, AutoProcessor
    >>> model = AutoModel.from_pretrained("path/to/metaembed-checkpoint", trust_remote_code=True)
    >>> processor = AutoProcessor.from_pretrained("path/to/metaembed-checkpoint", trust_remote_code=True)
    >>> queries = model.encode_queries(["a red circle left of a blue square"], processor, budget=4)
    >>> candidates = model.encode_candidates(["two shapes", "a cat"], processor, budget=8)
    >>> model.score(queries, candidates).shape
    torch.Size([1, 2])
    ```
    """

    def __init__(self, config: MetaEmbedConfig, backbone: PreTrainedModel | None = None):
        super().__init__(config)
        if backbone is not None:
            # Share the live backbone's config, whose attention implementation is already resolved.
            self.config.backbone_config = backbone.config
        self.backbone = (
            backbone if backbone is not None else AutoModel.from_config(self.config.backbone_config)
        )
        self.meta_tokens = nn.Embedding(config.num_meta_tokens, config.hidden_size)
        self.projection = (
            nn.Linear(config.hidden_size, config.embedding_dim) if config.embedding_dim is not None else None
        )
        self.post_init()

    # ------------------------------------------------------------------------------------------------ building
    @classmethod
    def from_backbone(
        cls,
        backbone: str | PreTrainedModel,
        *,
        backbone_kwargs: dict[str, Any] | None = None,
        seed: int | None = 0,
        **config_kwargs: Any,
    ) -> MetaEmbedModel:
        """Builds a MetaEmbed model around a pretrained backbone.

        The Meta Tokens are initialised from the statistics of the backbone's own token embeddings: each row is
        drawn from a Gaussian with the per-dimension mean and standard deviation of the input embedding matrix.
        They start in the region of embedding space the backbone was trained on (so the first forward passes are
        well conditioned), yet every row is distinct, so the meta positions produce different vectors from the
        first step. The draw is seeded for reproducibility.

        Args:
            backbone: A Hub id (e.g. `"Qwen/Qwen2.5-VL-3B-Instruct"`), a local directory, or a loaded model. A model
                with a head (e.g. `Qwen2_5_VLForConditionalGeneration`) is reduced to its base model.
            backbone_kwargs: Passed to `AutoModel.from_pretrained` when `backbone` is a path or Hub id (for
                instance `dtype=torch.bfloat16`, `attn_implementation="sdpa"`).
            seed: Seed of the meta token initialisation; `None` leaves the global RNG in charge.
            **config_kwargs: [`MetaEmbedConfig`] arguments (`num_query_meta_tokens`, `budgets`, `embedding_dim`...).

        Example:
            >>> model = MetaEmbedModel.from_backbone("Qwen/Qwen2.5-VL-3B-Instruct", backbone_kwargs={"dtype": "auto"})
        """
        if isinstance(backbone, PreTrainedModel):
            loaded = backbone
        else:
            loaded = AutoModel.from_pretrained(backbone, **(backbone_kwargs or {}))
        base = loaded.base_model
        config = MetaEmbedConfig(backbone_config=base.config, **config_kwargs)
        model = cls(config, backbone=base)
        model.to(base.dtype)
        embedding = base.get_input_embeddings().weight.detach().float()
        generator = torch.Generator(device="cpu")
        if seed is not None:
            generator.manual_seed(seed)
        else:
            generator.seed()
        mean, std = embedding.mean(dim=0).cpu(), embedding.std(dim=0).cpu()
        noise = torch.randn(config.num_meta_tokens, config.hidden_size, generator=generator)
        with torch.no_grad():
            model.meta_tokens.weight.copy_(mean + noise * std)
        return model.to(embedding.device)

    # ------------------------------------------------------------------------------------------------ plumbing
    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.backbone.set_input_embeddings(value)

    def _meta_layout(self, role: str, budget: int) -> tuple[int, int]:
        """Returns (number of meta tokens to append, offset of this role's first vector among them)."""
        n_query = self.config.num_query_meta_tokens
        offset = 0 if role == "query" else n_query
        if self.config.is_causal:
            return offset + budget, offset
        return self.config.num_meta_tokens, offset

    def _placeholder_token_id(self) -> int:
        """A text token id for the meta positions in `input_ids` (VLMs read it to find image tokens)."""
        config = self.config.backbone_config
        reserved = {
            getattr(config, name, None)
            for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        }
        pad = getattr(config.get_text_config(), "pad_token_id", None)
        if pad is not None and pad not in reserved:
            return pad
        return next(i for i in range(len(reserved) + 1) if i not in reserved)

    # ------------------------------------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        role: str = "query",
        budget: int | None = None,
        output_hidden_states: bool = False,
        **backbone_kwargs: Any,
    ) -> MetaEmbedOutput:
        r"""Encodes a batch for one role at one budget.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Left-padded token ids from [`MetaEmbedProcessor`], without meta tokens (the model appends them).
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
                1 for real tokens, 0 for padding.
            pixel_values, image_grid_thw, mm_token_type_ids:
                Image inputs of a Qwen-VL backbone, as its processor returns them.
            role (`str`, defaults to `"query"`):
                `"query"` or `"candidate"`.
            budget (`int`, *optional*):
                Number of vectors to return, `1..num_query_meta_tokens` for queries and
                `1..num_candidate_meta_tokens` for candidates; `None` returns all of the role's vectors.
            output_hidden_states (`bool`, defaults to `False`):
                Also return the backbone's last hidden states.
            **backbone_kwargs:
                Passed through to the backbone (for instance `token_type_ids` are dropped, attention kwargs kept).

        Returns:
            [`MetaEmbedOutput`] whose `embeddings` is `[batch_size, budget, dim]`.
        """
        role = self.config.check_role(role)
        budget = self.config.check_budget(role, budget)
        if input_ids is None:
            raise ValueError("MetaEmbedModel.forward needs input_ids; build them with MetaEmbedProcessor.")
        if input_ids.ndim != 2 or input_ids.shape[0] == 0:
            raise ValueError(
                f"input_ids must be a non-empty [batch, sequence] tensor, got shape {tuple(input_ids.shape)}."
            )
        if pixel_values is not None and not self.config.is_multimodal:
            raise ValueError(
                f"This MetaEmbed model has a text-only backbone ({self.config.backbone_config.model_type}) and "
                "cannot encode images; pass text only or use a vision-language backbone."
            )
        backbone_kwargs.pop("token_type_ids", None)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)

        batch_size, input_length = input_ids.shape
        n_append, offset = self._meta_layout(role, budget)
        token_embeds = self.backbone.get_input_embeddings()(input_ids)
        meta_embeds = self.meta_tokens.weight[:n_append].to(token_embeds.dtype)
        inputs_embeds = torch.cat([token_embeds, meta_embeds.unsqueeze(0).expand(batch_size, -1, -1)], dim=1)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch_size, n_append)], dim=1)
        # Left padding: positions count real tokens only, so an item's encoding does not depend on its batch.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)

        kwargs: dict[str, Any] = {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask}
        if pixel_values is not None:
            # Multimodal rotary positions come from the backbone's own `get_rope_index` over the token types (text
            # 0, image 1); the meta tokens are text and continue after the last real token. The backbone finds the
            # image positions by comparing `inputs_embeds` with the image token's embedding.
            if mm_token_type_ids is None:
                mm_token_type_ids = (input_ids == self.config.backbone_config.image_token_id).int()
            n_meta_types = mm_token_type_ids.new_zeros(batch_size, n_append)
            placeholder = input_ids.new_full((batch_size, n_append), self._placeholder_token_id())
            position_ids, _ = self.backbone.get_rope_index(
                torch.cat([input_ids, placeholder], dim=1),
                mm_token_type_ids=torch.cat([mm_token_type_ids, n_meta_types], dim=1),
                image_grid_thw=image_grid_thw,
                attention_mask=attention_mask,
            )
            kwargs.update(pixel_values=pixel_values, image_grid_thw=image_grid_thw)
        kwargs["position_ids"] = position_ids
        if self.config.is_causal:
            kwargs["use_cache"] = False
        outputs = self.backbone(**kwargs, **backbone_kwargs)
        hidden_states = outputs.last_hidden_state

        start = input_length + offset
        embeddings = hidden_states[:, start : start + budget]
        if self.projection is not None:
            embeddings = self.projection(embeddings)
        embeddings = embeddings.float()
        if self.config.normalize:
            embeddings = F.normalize(embeddings, p=2, dim=-1)
        return MetaEmbedOutput(
            embeddings=embeddings, last_hidden_state=hidden_states if output_hidden_states else None
        )

    # ------------------------------------------------------------------------------------------------ convenience
    @torch.inference_mode()
    def _encode(
        self,
        items: Sequence[Any],
        processor: Any,
        role: str,
        budget: int | None,
        batch_size: int,
        instruction: str | None,
        show_progress_bar: bool,
    ) -> torch.Tensor:
        budget = self.config.check_budget(role, budget)
        if isinstance(items, (str, dict)) or not isinstance(items, Sequence):
            items = [items]
        if len(items) == 0:
            raise ValueError(f"Cannot encode an empty list of {role} items; pass at least one item.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        starts = range(0, len(items), batch_size)
        if show_progress_bar:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"Encoding {role}s", total=math.ceil(len(items) / batch_size))
        chunks = []
        for start in starts:
            batch = processor(
                list(items[start : start + batch_size]), role=role, instruction=instruction, start_index=start
            )
            batch = {key: value.to(self.device) for key, value in batch.items()}
            chunks.append(self(**batch, role=role, budget=budget).embeddings.cpu())
        return torch.cat(chunks)

    def encode_queries(
        self,
        items: Sequence[Any],
        processor: Any,
        budget: int | None = None,
        batch_size: int = 8,
        instruction: str | None = None,
        show_progress_bar: bool = False,
    ) -> torch.Tensor:
        """Encodes queries: texts, PIL images, image paths or `{"text": ..., "image": ...}` dicts.

        Args:
            items: The queries.
            processor: The checkpoint's [`MetaEmbedProcessor`] (`AutoProcessor.from_pretrained(...)`).
            budget: Query vectors per item, `1..num_query_meta_tokens`; `None` for all.
            batch_size: Items per forward pass.
            instruction: Task instruction placed before the `"Query: "` prefix; `None` uses the processor's default.
            show_progress_bar: Show a tqdm bar.

        Returns:
            `[n, budget, dim]` float32 embeddings on the CPU.

        Example:
            >>> embeddings = model.encode_queries(["what is MaxSim?"], processor, budget=4)
        """
        return self._encode(items, processor, "query", budget, batch_size, instruction, show_progress_bar)

    def encode_candidates(
        self,
        items: Sequence[Any],
        processor: Any,
        budget: int | None = None,
        batch_size: int = 8,
        instruction: str | None = None,
        show_progress_bar: bool = False,
    ) -> torch.Tensor:
        """Encodes candidates (documents, images, image+text pairs); see [`encode_queries`] for the arguments.

        Returns:
            `[n, budget, dim]` float32 embeddings on the CPU, `budget` in `1..num_candidate_meta_tokens`.

        Example:
            >>> embeddings = model.encode_candidates(["MaxSim sums, over query vectors, the best match."], processor)
        """
        return self._encode(items, processor, "candidate", budget, batch_size, instruction, show_progress_bar)

    def score(
        self,
        query_embeddings: torch.Tensor,
        candidate_embeddings: torch.Tensor,
        budget: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """MaxSim scores at a budget: the first `r_q` query vectors against the first `r_c` candidate vectors.

        Args:
            query_embeddings: `[n_q, R_q, dim]` with `R_q >= r_q`.
            candidate_embeddings: `[n_c, R_c, dim]` with `R_c >= r_c`.
            budget: `(r_q, r_c)`; `None` uses every vector given.

        Returns:
            `[n_q, n_c]` float32 scores.

        Example:
            >>> model.score(queries, candidates, budget=(4, 8))
        """
        if budget is None:
            r_q, r_c = query_embeddings.shape[1], candidate_embeddings.shape[1]
            self.config.check_budget_pair((r_q, r_c))
        else:
            r_q, r_c = self.config.check_budget_pair(budget)
        if query_embeddings.ndim != 3 or query_embeddings.shape[1] < r_q:
            raise ValueError(
                f"Query embeddings of shape {tuple(query_embeddings.shape)} hold fewer than r_q={r_q} vectors; "
                "encode the queries at a budget at least as large."
            )
        if candidate_embeddings.ndim != 3 or candidate_embeddings.shape[1] < r_c:
            raise ValueError(
                f"Candidate embeddings of shape {tuple(candidate_embeddings.shape)} hold fewer than r_c={r_c} "
                "vectors; encode the candidates at a budget at least as large."
            )
        return maxsim_scores(query_embeddings[:, :r_q], candidate_embeddings[:, :r_c])


__all__ = ["MetaEmbedModel", "MetaEmbedOutput", "MetaEmbedPreTrainedModel", "maxsim_scores"]
