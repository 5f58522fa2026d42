"""Building a sentence-transformers `MultiVectorEncoder` around an in-memory MetaEmbed model.

sentence-transformers records a module's class in `modules.json` as its import path. The class defined in the
installed package would be recorded as `metaembed.st_module.sentence_transformers_metaembed.MetaEmbedModule`,
which does not resolve where this project is not installed. So the project never hands sentence-transformers the
installed class: [`metaembed_module_class`] resolves the shipped file through transformers' dynamic module loader,
exactly as a fresh process loading a checkpoint does. A model built here then saves (`save_pretrained`) a
`modules.json` naming `sentence_transformers_metaembed.MetaEmbedModule` plus a copy of that file, pickles into
multi-process encoding workers, and behaves byte for byte like a model loaded from a checkpoint.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from .sentence_transformers_metaembed import SHIPPED_FILE_NAME

logger = logging.getLogger(__name__)

MODULE_CLASS_REFERENCE = f"{Path(SHIPPED_FILE_NAME).stem}.MetaEmbedModule"


@functools.cache
def metaembed_module_class() -> type:
    """The `MetaEmbedModule` class as checkpoints ship it (resolved by transformers' dynamic module loader).

    Example:
        >>> module = metaembed_module_class()(model, processor)
    """
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    return get_class_from_dynamic_module(MODULE_CLASS_REFERENCE, str(Path(__file__).parent))


def build_multi_vector_encoder(
    model: Any,
    processor: Any,
    *,
    query_budget: int | None = None,
    document_budget: int | None = None,
    prompts: dict[str, str] | None = None,
    device: str | None = None,
    **kwargs: Any,
):
    """Wraps a `MetaEmbedModel` and its processor as a `MultiVectorEncoder` (no disk round trip).

    Args:
        model: A `MetaEmbedModel` (from `MetaEmbedModel.from_backbone`, `from_pretrained`, or training).
        processor: Its `MetaEmbedProcessor`.
        query_budget: Default query budget of `encode_query` (None: all query vectors).
        document_budget: Default document budget of `encode_document` (None: all candidate vectors).
        prompts: sentence-transformers prompts; a prompt becomes the batch's task instruction.
        device: Where the encoder runs; defaults to the model's current device (sentence-transformers' own default
            would move the model to an accelerator).
        **kwargs: Other `MultiVectorEncoder` arguments.

    Returns:
        A `MultiVectorEncoder` whose `similarity` also takes `budget=(r_q, r_c)`.

    Example:
        >>> encoder = build_multi_vector_encoder(model, processor)
        >>> encoder.encode_query(["what is MaxSim?"], budget=2)[0].shape
        torch.Size([2, 384])
    """
    from sentence_transformers import MultiVectorEncoder

    module = metaembed_module_class()(
        model, processor, query_budget=query_budget, document_budget=document_budget
    )
    return MultiVectorEncoder(
        modules=[module],
        device=device or str(model.device),
        prompts=prompts,
        similarity_fn_name=kwargs.pop("similarity_fn_name", "maxsim"),
        # Our own code: lets a trainer reload its checkpoints through the shipped module reference.
        trust_remote_code=kwargs.pop("trust_remote_code", True),
        **kwargs,
    )


def find_metaembed_module(encoder: Any) -> Any:
    """The `MetaEmbedModule` inside a `MultiVectorEncoder` (also through DDP / compile wrappers).

    Raises:
        ValueError: if the encoder holds none, i.e. it was not built from a MetaEmbed checkpoint.
    """
    inner = getattr(encoder, "module", encoder)
    inner = getattr(inner, "_orig_mod", inner)
    for module in inner.modules():
        if type(module).__name__ == "MetaEmbedModule" and hasattr(module, "metaembed_config"):
            return module
    raise ValueError(
        f"{type(inner).__name__} holds no MetaEmbedModule; load a MetaEmbed checkpoint with "
        "MultiVectorEncoder(path, trust_remote_code=True) or build one with build_multi_vector_encoder()."
    )


__all__ = [
    "MODULE_CLASS_REFERENCE",
    "build_multi_vector_encoder",
    "find_metaembed_module",
    "metaembed_module_class",
]
