"""One checkpoint, both APIs: `save_checkpoint` writes what transformers and sentence-transformers each load.

The directory holds the transformers checkpoint (`config.json` with `auto_map`, safetensors weights, the shipped
modeling / configuration / processing code, the processor's files) and the sentence-transformers files
(`modules.json`, the module config, `config_sentence_transformers.json` with MaxSim and the prompts, and the
shipped module code). It loads with `AutoModel` / `AutoProcessor` and with `MultiVectorEncoder`, all with
`trust_remote_code=True`, where this project is not installed.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Moved into place last, in this order: a reader that sees a new config.json also sees the new weights and code.
_LAST_FILES = ("processor_config.json", "config.json", "config_sentence_transformers.json", "modules.json")
_WEIGHT_PATTERNS = ("model*.safetensors", "model*.safetensors.index.json", "pytorch_model*.bin*")


def save_checkpoint(
    model: Any,
    processor: Any,
    directory: str | os.PathLike,
    *,
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
    query_budget: int | None = None,
    document_budget: int | None = None,
) -> Path:
    """Saves a MetaEmbed model and processor as a checkpoint for transformers and sentence-transformers.

    The files are written to a temporary folder next to `directory` and then moved in one by one with atomic
    renames, the configs last; weight files of an earlier save that the new one does not have are removed, other
    files in `directory` (a trainer's `checkpoint-*` folders, a README) are left alone. LoRA layers injected by
    peft are folded into their base weights.

    Args:
        model: A `MetaEmbedModel`.
        processor: Its `MetaEmbedProcessor`.
        directory: Where to write; created if missing.
        prompts: sentence-transformers prompts (`{"query": ..., "document": ...}`); each becomes a task instruction.
        default_prompt_name: The prompt plain `encode` uses.
        query_budget: Default budget of `encode_query` (None: all query vectors).
        document_budget: Default budget of `encode_document` (None: all candidate vectors).

    Returns:
        The checkpoint directory.

    Example:
        >>> from metaembed import MetaEmbedModel, MetaEmbedProcessor
        >>> model = MetaEmbedModel.from_backbone("Qwen/Qwen2.5-VL-3B-Instruct")
        >>> processor = MetaEmbedProcessor.from_backbone("Qwen/Qwen2.5-VL-3B-Instruct")
        >>> save_checkpoint(model, processor, "metaembed-3b")
        >>> # AutoModel.from_pretrained("metaembed-3b", trust_remote_code=True)
        >>> # MultiVectorEncoder("metaembed-3b", trust_remote_code=True)
    """
    from .st_module.files import write_sentence_transformers_files
    from .st_module.sentence_transformers_metaembed import lora_merged_state_dict

    if getattr(getattr(model, "config", None), "model_type", None) != "metaembed":
        raise ValueError(f"save_checkpoint saves a MetaEmbedModel, got {type(model).__name__}.")
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.staging-"))
    try:
        model.save_pretrained(staging, state_dict=lora_merged_state_dict(model))
        processor.save_pretrained(staging)
        write_sentence_transformers_files(
            staging,
            prompts=prompts,
            default_prompt_name=default_prompt_name,
            query_budget=query_budget,
            document_budget=document_budget,
        )
        _move_into_place(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Saved MetaEmbed checkpoint to %s", directory)
    return directory


def _move_into_place(staging: Path, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    new_files = sorted(p.relative_to(staging) for p in staging.rglob("*") if p.is_file())
    names = {p.as_posix() for p in new_files}
    for pattern in _WEIGHT_PATTERNS:
        for stale in directory.glob(pattern):
            if stale.name not in names:
                stale.unlink()
    ordered = sorted(
        new_files,
        key=lambda p: (p.name in _LAST_FILES, _LAST_FILES.index(p.name) if p.name in _LAST_FILES else 0),
    )
    for relative in ordered:
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / relative, target)


__all__ = ["save_checkpoint"]
