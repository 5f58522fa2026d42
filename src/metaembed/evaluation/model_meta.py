"""mteb ``ModelMeta`` for MetaEmbed checkpoints, one experiment per budget, and the code to paste into mteb's registry.

A MetaEmbed checkpoint is many models in one: each budget ``(r_q, r_c)`` is an mteb *experiment* of the same model
(``experiment_kwargs={"budget": (r_q, r_c)}``), so mteb stores its results under
``results/<org__name>/<revision>/experiments/budget_[r_q,r_c]/``. Without a budget the meta describes the checkpoint's
default, its full budget, whose results sit directly under ``results/<org__name>/<revision>/``.

Example:
    >>> from metaembed.evaluation.model_meta import metaembed_model_meta
    >>> meta = metaembed_model_meta("my-org/metaembed-qwen2.5-vl-3b", budget=(4, 8))
    >>> meta.experiment_name, meta.similarity_fn_name.value, meta.modalities
    ('budget_[4,8]', 'MaxSim', ['image', 'text'])
"""

from __future__ import annotations

import logging
import os
import typing
from collections.abc import Sequence
from typing import Any

from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.types._metadata import Licenses

from .checkpoint_info import CheckpointInfo, resolve_checkpoint

logger = logging.getLogger(__name__)

METAEMBED_CITATION = r"""
@article{xiao2025metaembed,
  author = {Xiao, Zilin and Ma, Qi and Gu, Mengting and Chen, Chun-cheng Jason and Chen, Xintao and Ordonez, Vicente and Mohan, Vijai},
  journal = {arXiv preprint arXiv:2509.18095},
  title = {MetaEmbed: Scaling Multimodal Retrieval at Test-Time with Flexible Late Interaction},
  year = {2025},
}
"""
REGISTRY_LOADER_NAME = "MetaEmbedMultiVectorWrapper"
_KNOWN_LICENSES = frozenset(typing.get_args(Licenses))


def _license(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.lower()
    if value in _KNOWN_LICENSES or value.startswith(("http://", "https://")):
        return value
    logger.warning(
        "License %r from the model card is not one mteb knows; leaving ModelMeta.license empty.", value
    )
    return None


def metaembed_model_meta(
    model: str | os.PathLike | CheckpointInfo,
    revision: str | None = None,
    *,
    budget: Sequence[int] | None = None,
    name: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    training_datasets: set[str] | None = None,
    public_training_code: str | None = None,
    public_training_data: str | None = None,
    release_date: str | None = None,
    loader_kwargs: dict[str, Any] | None = None,
) -> ModelMeta:
    """Builds the mteb ``ModelMeta`` of a MetaEmbed checkpoint from its files.

    ``n_parameters``, ``memory_usage_mb`` (weights as stored), ``max_tokens`` (the backbone's positions minus the meta
    tokens) and ``embed_dim`` come from the checkpoint; the similarity is MaxSim, modalities text and image,
    ``use_instructions=True`` (MMEB queries carry their instruction inline; other tasks' prompts are passed to the
    processor as the instruction).

    Args:
        model: A local directory, a Hub repo id, or an already resolved :class:`CheckpointInfo`.
        revision: Hub revision (resolved to a commit hash), or the revision to record for a local directory.
        budget: ``(r_q, r_c)`` for one budget experiment; None for the checkpoint's default (full) budget.
        name: ``org/name`` to record; defaults to the repo id or ``local/<folder>``.
        cache_dir: Hub cache directory.
        training_datasets: mteb task names the checkpoint was trained on (e.g. the in-domain MMEB subsets for a model
            trained on MMEB-train), for mteb's zero-shot marking; None when unknown.
        public_training_code: Link to the training code, if public.
        public_training_data: Link to the training data, if public.
        release_date: ``YYYY-MM-DD``.
        loader_kwargs: Extra keyword arguments for :class:`.MetaEmbedWrapper` when mteb loads the model from this meta.

    Raises:
        ValueError: if ``budget`` is outside the checkpoint's meta token counts.
    """
    from .wrapper import MetaEmbedWrapper

    info = (
        model
        if isinstance(model, CheckpointInfo)
        else resolve_checkpoint(model, revision, name=name, cache_dir=cache_dir)
    )
    experiment_kwargs = None
    if budget is not None:
        experiment_kwargs = {"budget": info.metaembed_config.check_budget_pair(budget)}
    stats = info.stats()
    kwargs = dict(loader_kwargs or {})
    if not info.is_hub:
        kwargs.setdefault("checkpoint_path", str(info.path))
    card = info.card
    base_model = card.get("base_model")
    adapted_from = base_model[0] if isinstance(base_model, list) and base_model else base_model
    if not isinstance(adapted_from, str) or adapted_from.count("/") != 1:
        adapted_from = None
    return ModelMeta(
        loader=MetaEmbedWrapper,
        loader_kwargs=kwargs,
        name=info.name,
        revision=info.revision,
        release_date=release_date,
        languages=["eng-Latn"],
        n_parameters=stats.n_parameters,
        n_embedding_parameters=info.n_embedding_parameters,
        memory_usage_mb=round(stats.n_bytes / 2**20) if stats.n_bytes is not None else None,
        max_tokens=info.max_tokens,
        embed_dim=info.embed_dim,
        license=_license(card.get("license")),
        open_weights=True,
        public_training_code=public_training_code,
        public_training_data=public_training_data,
        framework=["PyTorch", "Sentence Transformers", "Transformers", "safetensors"],
        reference=f"https://huggingface.co/{info.name}" if info.is_hub else None,
        similarity_fn_name=ScoringFunction.MAX_SIM,
        use_instructions=True,
        training_datasets=training_datasets,
        adapted_from=adapted_from,
        modalities=["image", "text"],
        model_type=["late-interaction"],
        citation=METAEMBED_CITATION,
        experiment_kwargs=experiment_kwargs,
    )


_REGISTRY_TEMPLATE = '''"""MetaEmbed {name}: mteb ModelMeta (generated by `metaembed eval`).

Paste into mteb/models/model_implementations/ (e.g. metaembed_models.py). The checkpoint ships its
sentence-transformers module, so the loader is mteb's MultiVectorWrapper plus the budget: each budget is an
experiment, `mteb.get_model("{name}", budget=(r_q, r_c))`.
"""

from __future__ import annotations

from typing import Any

from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.models.sentence_transformer_wrapper import MultiVectorWrapper
from mteb.types import PromptType


class {loader}(MultiVectorWrapper):
    """MultiVectorWrapper for MetaEmbed checkpoints; `budget=(r_q, r_c)` picks how many vectors each side keeps."""

    def __init__(self, model: str, revision: str | None = None, device: str | None = None, budget=None, **kwargs: Any):
        super().__init__(model, revision=revision, device=device, trust_remote_code=True, **kwargs)
        self.budget = None if budget is None else (int(budget[0]), int(budget[1]))

    def _encode(self, inputs, *, prompt_type: PromptType | None = None, **kwargs: Any):
        if self.budget is not None:
            kwargs["budget"] = self.budget[0] if prompt_type == PromptType.query else self.budget[1]
        return super()._encode(inputs, prompt_type=prompt_type, **kwargs)


{variable} = {meta}
'''


def model_meta_registry_code(meta: ModelMeta) -> str:
    """Python source declaring ``meta`` for mteb's model registry, with its budget-aware loader.

    The experiment (budget) is not part of the registry entry: mteb passes it at load time.

    Example:
        >>> print(model_meta_registry_code(metaembed_model_meta("my-org/metaembed-3b")))  # doctest: +SKIP
    """
    base = meta.model_copy(update={"loader": None, "loader_kwargs": {}, "experiment_kwargs": None})
    code = base.to_python().replace("loader=None,", f"loader={REGISTRY_LOADER_NAME},", 1)
    assert meta.name is not None
    variable = (
        "".join(c if c.isalnum() else "_" for c in meta.name.split("/")[-1]).strip("_").lower() or "model"
    )
    return _REGISTRY_TEMPLATE.format(
        name=meta.name, loader=REGISTRY_LOADER_NAME, variable=variable, meta=code
    )


__all__ = ["METAEMBED_CITATION", "metaembed_model_meta", "model_meta_registry_code"]
