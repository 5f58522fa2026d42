"""Writes the sentence-transformers files of a MetaEmbed checkpoint directory.

A transformers checkpoint (`config.json` with `auto_map`, safetensors weights, shipped code, processor files)
becomes a `MultiVectorEncoder` checkpoint with four more files:

- `modules.json`: one module, saved in the root, of type `sentence_transformers_metaembed.MetaEmbedModule`;
- `sentence_transformers_metaembed_config.json`: that module's options (default budgets);
- `config_sentence_transformers.json`: `model_type` `MultiVectorEncoder`, similarity `maxsim`, prompts;
- `sentence_transformers_metaembed.py`: the module's code, which sentence-transformers imports with
  `trust_remote_code=True`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_text
from .encoder import MODULE_CLASS_REFERENCE
from .sentence_transformers_metaembed import MODULE_CONFIG_NAME, SHIPPED_FILE_NAME

ST_FILE_NAMES = ("modules.json", "config_sentence_transformers.json", MODULE_CONFIG_NAME, SHIPPED_FILE_NAME)


def _write_json(path: Path, payload: Any) -> None:
    """Atomic: a temporary file in the same folder, then a rename."""
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def sentence_transformers_config(
    prompts: dict[str, str] | None = None, default_prompt_name: str | None = None
) -> dict[str, Any]:
    """The content of `config_sentence_transformers.json` for a MetaEmbed checkpoint."""
    import sentence_transformers
    import torch
    import transformers

    merged = {"query": "", "document": ""}
    merged.update(prompts or {})
    if default_prompt_name is not None and default_prompt_name not in merged:
        raise ValueError(
            f"default_prompt_name {default_prompt_name!r} is not one of the prompts {sorted(merged)}."
        )
    return {
        "model_type": "MultiVectorEncoder",
        "__version__": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "pytorch": torch.__version__,
        },
        "prompts": merged,
        "default_prompt_name": default_prompt_name,
        "similarity_fn_name": "maxsim",
    }


def write_sentence_transformers_files(
    directory: str | os.PathLike,
    *,
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
    query_budget: int | None = None,
    document_budget: int | None = None,
) -> list[Path]:
    """Adds the sentence-transformers files to a saved MetaEmbed transformers checkpoint.

    Args:
        directory: A directory holding a MetaEmbed `config.json` (from `MetaEmbedModel.save_pretrained`).
        prompts: sentence-transformers prompts by name (`"query"`, `"document"`); each becomes a task instruction.
        default_prompt_name: The prompt `encode` uses when none is named.
        query_budget: Default query budget of `encode_query`, validated against the saved config (None: all).
        document_budget: Default document budget of `encode_document` (None: all).

    Returns:
        The paths written.

    Raises:
        ValueError: if `directory` holds no MetaEmbed `config.json`, or a default budget is out of range.

    Example:
        >>> model.save_pretrained("ckpt"); processor.save_pretrained("ckpt")
        >>> write_sentence_transformers_files("ckpt", prompts={"query": "Find the matching docstring."})
    """
    directory = Path(directory)
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    if config.get("model_type") != "metaembed":
        raise ValueError(
            f"{directory} holds no MetaEmbed config.json (model_type {config.get('model_type')!r}); save the model "
            "with MetaEmbedModel.save_pretrained first, or use metaembed.checkpoint.save_checkpoint."
        )
    from ..configuration_metaembed import MetaEmbedConfig

    metaembed_config = MetaEmbedConfig.from_pretrained(directory)
    if query_budget is not None:
        metaembed_config.check_budget("query", query_budget)
    if document_budget is not None:
        metaembed_config.check_budget("candidate", document_budget)

    written = [directory / name for name in ST_FILE_NAMES]
    _write_json(written[0], [{"idx": 0, "name": "0", "path": "", "type": MODULE_CLASS_REFERENCE}])
    _write_json(written[1], sentence_transformers_config(prompts, default_prompt_name))
    _write_json(written[2], {"query_budget": query_budget, "document_budget": document_budget})
    shutil.copyfile(Path(__file__).with_name(SHIPPED_FILE_NAME), written[3])
    return written


__all__ = ["ST_FILE_NAMES", "sentence_transformers_config", "write_sentence_transformers_files"]
