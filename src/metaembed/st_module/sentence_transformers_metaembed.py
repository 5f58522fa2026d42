# Shipped inside every MetaEmbed checkpoint: imports only torch, transformers and sentence_transformers.
"""The sentence-transformers module that makes a MetaEmbed checkpoint a ``MultiVectorEncoder``.

A checkpoint's ``modules.json`` names ``sentence_transformers_metaembed.MetaEmbedModule``. sentence-transformers
resolves that reference with transformers' dynamic module loader (``trust_remote_code=True``): it copies this file
out of the checkpoint directory or Hub snapshot and imports it, so the project itself need not be installed. The
module then loads the model and processor with ``AutoModel`` / ``AutoProcessor`` from the same checkpoint, which
pulls in the shipped modeling, configuration and processing files the same way.

Encoding takes a ``budget`` forward kwarg (``encode_query(..., budget=r_q)``, ``encode_document(..., budget=r_c)``);
a causal backbone then runs only the meta tokens that budget needs. ``model.similarity(q, d, budget=(r_q, r_c))``
scores at a budget through a hook this module installs on the model it belongs to (see
[`install_budgeted_similarity`]).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from sentence_transformers.base.modules import InputModule
from sentence_transformers.util.similarity import maxsim
from transformers import AutoConfig, AutoModel, AutoProcessor

logger = logging.getLogger(__name__)

SHIPPED_FILE_NAME = "sentence_transformers_metaembed.py"
MODULE_CONFIG_NAME = "sentence_transformers_metaembed_config.json"
# sentence-transformers tasks -> MetaEmbed roles. `None` is plain `encode()`: items are encoded as candidates.
ROLE_BY_TASK: dict[str | None, str] = {
    None: "candidate",
    "query": "query",
    "document": "candidate",
    "candidate": "candidate",
    "passage": "candidate",
    "corpus": "candidate",
}
MODEL_INPUT_NAMES = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")

Budget = int | Sequence[int] | None


# ---------------------------------------------------------------------------------------------------- budgets
def task_to_role(task: str | None) -> str:
    """Maps a sentence-transformers `task` ("query", "document", ...) to a MetaEmbed role."""
    try:
        return ROLE_BY_TASK[task]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown task {task!r}; MetaEmbed encodes 'query' or 'document' (also 'candidate', 'passage', "
            "'corpus')."
        ) from None


def resolve_budget(config: Any, role: str, budget: Budget, default: int | None = None) -> int:
    """The number of vectors to encode for `role`, validated by the checkpoint's `MetaEmbedConfig`.

    Args:
        config: The model's `MetaEmbedConfig` (its `check_budget` / `check_budget_pair` are the one place budgets
            are validated).
        role: "query" or "candidate".
        budget: An integer for this role, a `(r_q, r_c)` pair (this role's side is used, so one pair can be passed
            to both `encode_query` and `encode_document`), or None for `default`.
        default: Used when `budget` is None; None means the role's full count.

    Raises:
        ValueError: naming the allowed range, if the budget is outside it.
    """
    if budget is None:
        return config.check_budget(role, default)
    if isinstance(budget, Sequence) and not isinstance(budget, str):
        r_q, r_c = config.check_budget_pair(tuple(budget))
        return r_q if role == "query" else r_c
    return config.check_budget(role, budget)


# ---------------------------------------------------------------------------------------------------- similarity
def _as_tensor(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(value)


def _canonical_side(embeddings: Any, name: str) -> torch.Tensor | list[torch.Tensor]:
    """A `[n, r, d]` tensor or a list of `[r_i, d]` tensors (numpy inputs converted, a single `[r, d]` batched)."""
    if isinstance(embeddings, (list, tuple)):
        items = [_as_tensor(item) for item in embeddings]
        for index, item in enumerate(items):
            if item.ndim != 2:
                raise ValueError(
                    f"{name} embedding {index} has shape {tuple(item.shape)}; expected [num_vectors, dim]."
                )
        return items
    tensor = _as_tensor(embeddings)
    if tensor.ndim == 2:
        return tensor.unsqueeze(0)
    if tensor.ndim != 3:
        raise ValueError(
            f"{name} embeddings must be [n, num_vectors, dim], a list of [num_vectors, dim], or one "
            f"[num_vectors, dim]; got shape {tuple(tensor.shape)}."
        )
    return tensor


def _dim(side: torch.Tensor | list[torch.Tensor]) -> int | None:
    if isinstance(side, list):
        return side[0].shape[-1] if side else None
    return side.shape[-1]


def _take_prefix(side: torch.Tensor | list[torch.Tensor], count: int | None, role: str, vector_axis: int = 1):
    """The first `count` vectors of every item; an item holding fewer (but some) is a ValueError. Items without any
    vector stay empty: they score as documents that never win."""
    if count is None:
        return side
    widths = [item.shape[0] for item in side] if isinstance(side, list) else [side.shape[vector_axis]]
    narrowest = min((w for w in widths if w > 0), default=count)
    if narrowest < count:
        raise ValueError(
            f"The budget asks for {count} {role} vectors but some {role} embeddings hold only {narrowest}; "
            f"encode them at a budget of at least {count}, or pass a {role} budget in 1..{narrowest}."
        )
    if isinstance(side, list):
        return [item[:count] for item in side]
    return side.narrow(vector_axis, 0, count)


def nonzero_vector_mask(side: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """True for vectors that are not all zeros: padding or empty index slots never take part in a max. A corpus
    tensor is read in blocks, so the check never holds a full-size temporary."""
    if isinstance(side, list):
        return [item.ne(0).any(dim=-1) for item in side]
    return (
        torch.cat([block.ne(0).any(dim=-1) for block in side.split(256)]) if len(side) else side.ne(0).any(-1)
    )


def _combine_masks(mask: Any, derived: Any) -> Any:
    if mask is None:
        return derived
    if isinstance(derived, list):
        return [_as_tensor(given).bool() & own for given, own in zip(mask, derived)]
    return _as_tensor(mask).bool().to(derived.device) & derived


def check_budget_pair(budget: Sequence[int] | None, config: Any | None) -> tuple[int | None, int | None]:
    """Validates `(r_q, r_c)` with the model's config when there is one; without a config, the embeddings' own
    vector counts bound the budget (checked when slicing)."""
    if budget is None:
        return None, None
    if config is not None:
        return config.check_budget_pair(budget)
    if (
        isinstance(budget, str)
        or not isinstance(budget, Sequence)
        or len(budget) != 2
        or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in budget)
    ):
        raise ValueError(f"A budget must be a pair of positive integers (r_q, r_c), got {budget!r}.")
    return int(budget[0]), int(budget[1])


def budgeted_maxsim(
    query_embeddings: Any,
    document_embeddings: Any,
    budget: Sequence[int] | None = None,
    *,
    config: Any | None = None,
    score_fn: Callable[..., torch.Tensor] = maxsim,
    a_mask: Any = None,
    b_mask: Any = None,
    **kwargs: Any,
) -> torch.Tensor:
    """MaxSim of the first `r_q` query vectors against the first `r_c` document vectors.

    Documents' all-zero vectors are masked out (and documents without any vector score about -1e9), so an empty
    or zero-padded document never wins a ranking.

    Args:
        query_embeddings: `[n_q, R_q, d]`, a list of `[R_q, d]` (what `encode_query` returns), numpy alike, or one
            `[R_q, d]` query.
        document_embeddings: The same forms for documents.
        budget: `(r_q, r_c)`; None scores every vector given.
        config: The model's `MetaEmbedConfig`, which validates the budget; None bounds it by the vector counts.
        score_fn: The scoring function, `sentence_transformers.util.similarity.maxsim` (or `maxsim_pairwise`, or
            a model's own similarity method).
        a_mask, b_mask: Optional masks as `maxsim` takes them, sliced along with the embeddings.
        **kwargs: Passed to `score_fn` (e.g. `chunk_elements`, `device`).

    Returns:
        The `score_fn` result, `[n_q, n_d]` float32 for `maxsim`.

    Raises:
        ValueError: for a budget outside the allowed range, embeddings narrower than the budget, or query and
            document vectors of different dimensions.

    Example:
        >>> q = torch.nn.functional.normalize(torch.randn(2, 4, 8), dim=-1)
        >>> d = torch.nn.functional.normalize(torch.randn(3, 8, 8), dim=-1)
        >>> budgeted_maxsim(q, d, budget=(1, 2)).shape
        torch.Size([2, 3])
    """
    r_q, r_c = check_budget_pair(budget, config)
    queries = _canonical_side(query_embeddings, "Query")
    documents = _canonical_side(document_embeddings, "Document")
    query_dim, document_dim = _dim(queries), _dim(documents)
    if query_dim is not None and document_dim is not None and query_dim != document_dim:
        raise ValueError(
            f"Query vectors have dimension {query_dim} but document vectors have {document_dim}; score "
            "embeddings produced by the same model."
        )
    queries = _take_prefix(queries, r_q, "query")
    documents = _take_prefix(documents, r_c, "document")
    if a_mask is not None and r_q is not None:
        a_mask = (
            [m[:r_q] for m in a_mask] if isinstance(a_mask, (list, tuple)) else _as_tensor(a_mask)[..., :r_q]
        )
    if b_mask is not None and r_c is not None:
        b_mask = (
            [m[:r_c] for m in b_mask] if isinstance(b_mask, (list, tuple)) else _as_tensor(b_mask)[..., :r_c]
        )
    b_mask = _combine_masks(b_mask, nonzero_vector_mask(documents))
    return score_fn(queries, documents, a_mask=a_mask, b_mask=b_mask, **kwargs)


class BudgetedSimilarityMethod:
    """`model.similarity` / `model.similarity_pairwise` of a MultiVectorEncoder holding a [`MetaEmbedModule`],
    with an extra `budget=(r_q, r_c)` argument.

    `MultiVectorEncoder.similarity` forwards extra kwargs to its scoring function, which has no notion of a
    budget, and a checkpoint is loaded as a plain `MultiVectorEncoder` (its class comes from the caller, not from
    the checkpoint). The smallest hook that works for a loaded model is therefore this per-instance attribute,
    installed by [`MetaEmbedModule.on_model_ready`]: it shadows the class method, validates and slices to the
    budget, masks zero vectors, and calls the class's own method, so whatever `similarity_fn_name` the model has
    (maxsim, meanmaxsim) still decides the score. A subclass of `MultiVectorEncoder` would need users to import
    it, which a checkpoint cannot arrange; patching the private `_similarity` would be undone whenever
    `similarity_fn_name` is set.
    """

    def __init__(self, model: Any, config: Any, pairwise: bool = False):
        self.__self__ = model
        self.__name__ = "similarity_pairwise" if pairwise else "similarity"
        self.config = config
        self.pairwise = pairwise

    def __call__(
        self, embeddings1: Any, embeddings2: Any, budget: Sequence[int] | None = None, **kwargs: Any
    ) -> torch.Tensor:
        method = getattr(type(self.__self__), self.__name__)
        score_fn = functools.partial(method, self.__self__)
        return budgeted_maxsim(
            embeddings1, embeddings2, budget, config=self.config, score_fn=score_fn, **kwargs
        )

    def __repr__(self) -> str:
        return f"<budgeted {self.__name__} of {type(self.__self__).__name__}>"


def install_budgeted_similarity(model: Any, config: Any) -> None:
    """Gives `model.similarity` and `model.similarity_pairwise` a `budget=(r_q, r_c)` argument."""
    model.similarity = BudgetedSimilarityMethod(model, config)
    model.similarity_pairwise = BudgetedSimilarityMethod(model, config, pairwise=True)


# ---------------------------------------------------------------------------------------------------- LoRA view
def lora_merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The state dict with injected LoRA layers folded into their base weights, or None without LoRA layers.

    Lets a checkpoint written mid-training (by a trainer calling `save`) load as a plain MetaEmbed model. Detected
    by duck typing on peft's LoRA layers (`base_layer`, `get_delta_weight`, `active_adapters`): peft is a training
    dependency, not a serving one.
    """
    lora_layers = {
        name: module
        for name, module in model.named_modules()
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")
    }
    if not lora_layers:
        return None
    state = {}
    for key, value in model.state_dict().items():
        if ".lora_" in key or "lora_magnitude" in key:
            continue
        owner = next((name for name in lora_layers if key.startswith(f"{name}.base_layer.")), None)
        if owner is None:
            state[key] = value
            continue
        parameter = key[len(f"{owner}.base_layer.") :]
        if parameter == "weight":
            layer = lora_layers[owner]
            value = value.detach().clone()
            for adapter in layer.active_adapters:
                if adapter in getattr(layer, "lora_A", {}):
                    value += layer.get_delta_weight(adapter).to(value.dtype)
        state[f"{owner}.{parameter}"] = value
    return state


# ---------------------------------------------------------------------------------------------------- module
class MetaEmbedModule(InputModule):
    """Wraps a `MetaEmbedModel` and its `MetaEmbedProcessor` as the (only) module of a `MultiVectorEncoder`.

    `preprocess` formats items with the processor for the task's role (queries: `task="query"`; documents:
    `task="document"`; plain `encode` treats items as documents), and `forward` returns the budget's normalised
    vectors as `token_embeddings` `[batch, r, dim]` with an all-ones `attention_mask`. A sentence-transformers
    prompt becomes the batch's task instruction (before the processor's role prefix, replacing its default
    instruction).

    Args:
        model: The `MetaEmbedModel`.
        processor: Its `MetaEmbedProcessor`.
        query_budget: Default number of query vectors when `encode_query` gets no `budget` (None: all of them).
        document_budget: Default number of document vectors when `encode_document` gets no `budget`.

    Example:
        >>> from sentence_transformers import MultiVectorEncoder
        >>> model = MultiVectorEncoder("path/to/metaembed-checkpoint", trust_remote_code=True)
        >>> queries = model.encode_query(["what is MaxSim?"], budget=4)
        >>> documents = model.encode_document(["MaxSim sums the best matches."], budget=16)
        >>> model.similarity(queries, documents, budget=(2, 8)).shape
        torch.Size([1, 1])
    """

    config_file_name = MODULE_CONFIG_NAME
    config_keys = ["query_budget", "document_budget"]
    forward_kwargs = {"task", "budget"}
    save_in_root = True

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        *,
        query_budget: int | None = None,
        document_budget: int | None = None,
    ):
        super().__init__()
        config = getattr(model, "config", None)
        if getattr(config, "model_type", None) != "metaembed":
            raise ValueError(
                f"MetaEmbedModule wraps a MetaEmbedModel, got {type(model).__name__} with model_type "
                f"{getattr(config, 'model_type', None)!r}."
            )
        self.model = model
        self.metaembed_processor = processor
        self.query_budget = None if query_budget is None else config.check_budget("query", query_budget)
        self.document_budget = (
            None if document_budget is None else config.check_budget("candidate", document_budget)
        )

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def metaembed_config(self) -> Any:
        """The wrapped model's `MetaEmbedConfig`."""
        return self.model.config

    @property
    def processor(self) -> Any:
        return self.metaembed_processor

    @property
    def tokenizer(self) -> Any:
        return self.metaembed_processor.tokenizer

    @property
    def modalities(self) -> list[Any]:
        if getattr(self.metaembed_processor, "is_multimodal", False):
            # "message" is what sentence-transformers infers for batches mixing texts, images and dicts; chat
            # message dicts themselves are refused in `preprocess`.
            return ["text", "image", ("image", "text"), "message"]
        return ["text"]

    @property
    def max_seq_length(self) -> int | None:
        return self.metaembed_processor.max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int | None) -> None:
        self.metaembed_processor.max_length = value

    def get_embedding_dimension(self) -> int:
        return self.model.config.output_dim

    # ------------------------------------------------------------------------------------------------ encoding
    def preprocess(
        self,
        inputs: Sequence[Any],
        prompt: str | None = None,
        task: str | None = None,
        budget: Budget = None,
        max_length: int | None = None,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """Formats and tokenises a batch for `task`'s role.

        Args:
            inputs: Strings, PIL images, image paths or `{"text": ..., "image": ...}` dicts.
            prompt: Task instruction for this batch (a sentence-transformers prompt); empty or None keeps the
                processor's default instruction for the role.
            task: "query" or "document" (None: document).
            budget: Validated here, so a bad budget fails before any forward pass.
            max_length: Per-call input length cap (the trainer's `max_length`); the shared processor is not
                modified.
        """
        role = task_to_role(task)
        resolve_budget(self.model.config, role, budget, self._default_for(role))
        for index, item in enumerate(inputs):
            if isinstance(item, (tuple, list)) or (isinstance(item, dict) and "role" in item):
                raise ValueError(
                    f"Item {index}: MetaEmbed encodes single items (a string, a PIL image, an image path or a "
                    f"{{'text': ..., 'image': ...}} dict), got {type(item).__name__}."
                )
        processor = self.metaembed_processor
        if max_length is not None and max_length != processor.max_length:
            processor = copy.copy(processor)
            processor.max_length = max_length
        batch = processor(list(inputs), role=role, instruction=prompt or None)
        return dict(batch)

    def _default_for(self, role: str) -> int | None:
        return self.query_budget if role == "query" else self.document_budget

    def forward(
        self, features: dict[str, Any], task: str | None = None, budget: Budget = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Encodes a preprocessed batch; writes `token_embeddings` `[batch, r, dim]` and an all-ones
        `attention_mask` `[batch, r]` into `features`."""
        role = task_to_role(task)
        count = resolve_budget(self.model.config, role, budget, self._default_for(role))
        inputs = {name: features[name] for name in MODEL_INPUT_NAMES if features.get(name) is not None}
        embeddings = self.model(**inputs, role=role, budget=count).embeddings
        features["token_embeddings"] = embeddings
        features["attention_mask"] = torch.ones(
            embeddings.shape[:2], dtype=torch.long, device=embeddings.device
        )
        return features

    def on_model_ready(self, model: Any) -> None:
        """Installs `model.similarity(..., budget=(r_q, r_c))` (see [`BudgetedSimilarityMethod`])."""
        install_budgeted_similarity(model, self.model.config)

    # ------------------------------------------------------------------------------------------------ saving
    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        """Writes the transformers checkpoint (model, processor, shipped code), this module's config and this
        file, so the directory loads with `AutoModel` and with `MultiVectorEncoder` (both trust_remote_code)."""
        os.makedirs(output_path, exist_ok=True)
        self.model.save_pretrained(output_path, state_dict=lora_merged_state_dict(self.model))
        self.metaembed_processor.save_pretrained(output_path)
        self.save_config(output_path)
        source = Path(__file__)
        target = Path(output_path) / SHIPPED_FILE_NAME
        if not target.exists() or source.resolve() != target.resolve():
            shutil.copyfile(source, target)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        processor_kwargs: dict[str, Any] | None = None,
        config_kwargs: dict[str, Any] | None = None,
        backend: str = "torch",
        **kwargs: Any,
    ) -> MetaEmbedModule:
        """Loads the model and processor with `AutoModel` / `AutoProcessor` from the checkpoint's own code."""
        if backend != "torch":
            raise ValueError(f"MetaEmbed checkpoints run on the torch backend only, got backend={backend!r}.")
        if subfolder:
            raise ValueError(
                "MetaEmbedModule is saved in the checkpoint root; it cannot load from a subfolder."
            )
        hub_kwargs: dict[str, Any] = {
            "token": token,
            "cache_dir": cache_folder,
            "revision": revision,
            "local_files_only": local_files_only,
            "trust_remote_code": trust_remote_code,
        }
        module_config = cls.load_config(
            model_name_or_path,
            token=token,
            cache_folder=cache_folder,
            revision=revision,
            local_files_only=local_files_only,
        )
        model_kwargs = dict(model_kwargs or {})
        if config_kwargs:
            model_kwargs["config"] = AutoConfig.from_pretrained(
                model_name_or_path, **hub_kwargs, **config_kwargs
            )
        model = AutoModel.from_pretrained(model_name_or_path, **hub_kwargs, **model_kwargs)
        processor = AutoProcessor.from_pretrained(
            model_name_or_path, **hub_kwargs, **(processor_kwargs or {})
        )
        known = {key: module_config[key] for key in cls.config_keys if key in module_config}
        return cls(model, processor, **known)

    def __repr__(self) -> str:
        config = self.model.config
        return (
            f"MetaEmbedModule(backbone={config.backbone_config.model_type}, query_vectors="
            f"{config.num_query_meta_tokens}, document_vectors={config.num_candidate_meta_tokens}, "
            f"dim={config.output_dim}, {self.get_config_dict()})"
        )


__all__ = [
    "MODULE_CONFIG_NAME",
    "SHIPPED_FILE_NAME",
    "BudgetedSimilarityMethod",
    "MetaEmbedModule",
    "budgeted_maxsim",
    "install_budgeted_similarity",
    "lora_merged_state_dict",
    "nonzero_vector_mask",
    "resolve_budget",
    "task_to_role",
]
