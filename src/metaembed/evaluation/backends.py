"""The encoders behind the mteb wrapper: one call, ``encode(items, role, budget, instruction)`` -> ``[n, r, d]``.

- :class:`TransformersBackend` loads the checkpoint with ``AutoModel`` / ``AutoProcessor`` (``trust_remote_code``) and
  calls ``MetaEmbedModel.encode_queries`` / ``encode_candidates``.
- :class:`SentenceTransformersBackend` wraps the checkpoint loaded as sentence-transformers' ``MultiVectorEncoder``
  (mteb's ``MultiVectorWrapper`` loads it) and calls ``encode_query`` / ``encode_document`` with ``budget=``.

Both take the same items (strings, PIL images, image paths, ``{"text", "image"}`` dicts) and return float32 tensors on
the CPU.

Example:
    >>> backend = TransformersBackend.load("path/to/checkpoint", device="cpu")
    >>> backend.encode(["a red circle"], role="query", budget=2, instruction=None, batch_size=8).shape
    torch.Size([1, 2, 2048])
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, Protocol

import torch

logger = logging.getLogger(__name__)


class EncoderBackend(Protocol):
    """What the wrapper needs from an encoder."""

    config: Any
    device: torch.device

    def encode(
        self, items: Sequence[Any], *, role: str, budget: int | None, instruction: str | None, batch_size: int
    ) -> torch.Tensor: ...


def _torch_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return getattr(torch, dtype)
    except AttributeError as error:
        raise ValueError(f"Unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16.") from error


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, else CUDA when available, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TransformersBackend:
    """A MetaEmbed checkpoint through transformers' Auto classes.

    Args:
        model: A loaded ``MetaEmbedModel`` (from the checkpoint's own code or this package).
        processor: Its ``MetaEmbedProcessor``.
    """

    def __init__(self, model: Any, processor: Any):
        self.model = model.eval()
        self.processor = processor
        self.config = model.config

    @property
    def device(self) -> torch.device:
        return self.model.device

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = "auto",
        attn_implementation: str | None = None,
    ) -> TransformersBackend:
        """Loads ``AutoModel`` and ``AutoProcessor`` from a checkpoint directory (``trust_remote_code=True``)."""
        from transformers import AutoModel, AutoProcessor

        device = default_device(device)
        kwargs = model_kwargs(device, dtype, attn_implementation)
        model = AutoModel.from_pretrained(os.fspath(path), trust_remote_code=True, **kwargs).to(device)
        processor = AutoProcessor.from_pretrained(os.fspath(path), trust_remote_code=True)
        return cls(model, processor)

    def encode(
        self, items: Sequence[Any], *, role: str, budget: int | None, instruction: str | None, batch_size: int
    ) -> torch.Tensor:
        encode = self.model.encode_queries if role == "query" else self.model.encode_candidates
        return encode(
            list(items), self.processor, budget=budget, batch_size=batch_size, instruction=instruction
        )


class SentenceTransformersBackend:
    """A MetaEmbed checkpoint loaded as sentence-transformers' ``MultiVectorEncoder`` (its shipped MetaEmbed module).

    ``budget`` goes to ``encode_query`` / ``encode_document`` as the module's forward kwarg and the instruction as the
    sentence-transformers prompt, which the module hands to the processor as its instruction. An empty instruction
    means "the processor's default" on this path (the module reads ``prompt or None``); the transformers path passes
    it through, so the two differ only for a checkpoint that saves a default query instruction.

    Args:
        encoder: A loaded ``MultiVectorEncoder`` whose first module is the MetaEmbed module.
    """

    def __init__(self, encoder: Any):
        config = getattr(encoder[0], "metaembed_config", None)
        if getattr(config, "model_type", None) != "metaembed":
            raise ValueError(
                f"The sentence-transformers model's first module is {type(encoder[0]).__name__}, not MetaEmbed's; "
                "it is not a MetaEmbed checkpoint."
            )
        self.encoder = encoder
        self.config = config

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    def encode(
        self, items: Sequence[Any], *, role: str, budget: int | None, instruction: str | None, batch_size: int
    ) -> torch.Tensor:
        encode = self.encoder.encode_query if role == "query" else self.encoder.encode_document
        kwargs: dict[str, Any] = {"batch_size": batch_size, "show_progress_bar": False}
        if budget is not None:
            kwargs["budget"] = budget
        if instruction is not None:
            kwargs["prompt"] = instruction
        vectors = encode(list(items), **kwargs)
        return torch.stack([torch.as_tensor(v).float().cpu() for v in vectors])


def model_kwargs(
    device: torch.device, dtype: str | torch.dtype | None, attn_implementation: str | None
) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for the model: its dtype and attention implementation."""
    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype, device)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    return kwargs


__all__ = [
    "EncoderBackend",
    "SentenceTransformersBackend",
    "TransformersBackend",
    "default_device",
    "model_kwargs",
]
