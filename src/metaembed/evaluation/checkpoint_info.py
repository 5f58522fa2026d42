"""Finding a MetaEmbed checkpoint (local directory or Hub repo at a revision) and reading its facts without loading it.

Everything here reads files: ``config.json``, the safetensors headers (parameter counts and bytes per dtype) and the
model card's front matter. Nothing is imported from the checkpoint's code and no weights are read.

Example:
    >>> from metaembed.evaluation.checkpoint_info import resolve_checkpoint
    >>> info = resolve_checkpoint("my-org/metaembed-qwen2.5-vl-3b")  # a Hub id, or a local directory
    >>> info.name, len(info.revision), info.stats().n_parameters > 0
    ('my-org/metaembed-qwen2.5-vl-3b', 40, True)
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4}
_DTYPE_BYTES |= {"I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


class NotMetaEmbedCheckpointError(ValueError):
    """Raised when a path or repo holds something other than a MetaEmbed checkpoint."""


@dataclass(frozen=True)
class CheckpointStats:
    """Sizes read from the safetensors headers (None when the weights are not safetensors)."""

    n_parameters: int | None
    n_bytes: int | None


@dataclass
class CheckpointInfo:
    """A resolved MetaEmbed checkpoint.

    Attributes:
        source: What the caller passed (a path or a repo id).
        name: ``org/name``: the repo id, or ``local/<folder>`` for a directory unless a name was given.
        revision: The Hub commit hash (resolved), or the caller's revision for a directory (None if not given).
        path: The local directory holding the files (a Hub cache snapshot for a repo id).
        config: The parsed ``config.json``.
        is_hub: Whether ``source`` was a Hub repo id.
    """

    source: str
    name: str
    revision: str | None
    path: Path
    config: dict[str, Any]
    is_hub: bool
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def text_config(self) -> dict[str, Any]:
        backbone = self.config.get("backbone_config") or {}
        return backbone.get("text_config") or backbone

    @property
    def hidden_size(self) -> int | None:
        return self.text_config.get("hidden_size")

    @property
    def embed_dim(self) -> int | None:
        """Width of every output vector: the projection's size, else the backbone's hidden size."""
        return self.config.get("embedding_dim") or self.hidden_size

    @property
    def num_query_meta_tokens(self) -> int:
        return int(self.config.get("num_query_meta_tokens", 16))

    @property
    def num_candidate_meta_tokens(self) -> int:
        return int(self.config.get("num_candidate_meta_tokens", 64))

    @property
    def max_tokens(self) -> int | None:
        """Input tokens the backbone accepts once the meta tokens are appended."""
        limit = self.text_config.get("max_position_embeddings")
        if limit is None:
            return None
        return int(limit) - self.num_query_meta_tokens - self.num_candidate_meta_tokens

    @property
    def n_embedding_parameters(self) -> int | None:
        vocab, hidden = self.text_config.get("vocab_size"), self.hidden_size
        return int(vocab * hidden) if vocab and hidden else None

    @cached_property
    def metaembed_config(self) -> Any:
        """The config as a :class:`metaembed.MetaEmbedConfig` (built from the file; budgets are validated by it)."""
        from metaembed.configuration_metaembed import MetaEmbedConfig

        return MetaEmbedConfig.from_dict(self.config)

    @cached_property
    def _stats(self) -> CheckpointStats:
        return read_safetensors_stats(self.path)

    def stats(self) -> CheckpointStats:
        """Parameter count and weight bytes from the safetensors headers."""
        return self._stats


def _looks_like_repo_id(value: str) -> bool:
    return bool(_REPO_ID.match(value)) and not value.startswith((".", "/", "~"))


def resolve_checkpoint(
    model: str | os.PathLike,
    revision: str | None = None,
    *,
    name: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> CheckpointInfo:
    """Finds a MetaEmbed checkpoint and reads its ``config.json``.

    Args:
        model: A local directory, or a Hub repo id (``org/name``). A repo id is fetched with ``snapshot_download``, which
            with ``HF_HUB_OFFLINE=1`` resolves from the local cache only.
        revision: Hub branch, tag or commit (``main`` by default); recorded as given for a local directory.
        name: ``org/name`` recorded in results; defaults to the repo id, or ``local/<folder name>``.
        cache_dir: Hub cache directory (defaults to ``$HF_HOME/hub``).

    Raises:
        FileNotFoundError: if ``model`` is neither an existing directory nor a repo available on the Hub or in cache.
        NotMetaEmbedCheckpointError: if its ``config.json`` is missing or does not declare ``model_type: metaembed``.
    """
    source = os.fspath(model)
    local = Path(source).expanduser()
    if local.is_dir():
        path, is_hub = local.resolve(), False
        resolved_revision = revision
        name = name or f"local/{path.name}"
    elif _looks_like_repo_id(source):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        try:
            path = Path(snapshot_download(source, revision=revision, cache_dir=cache_dir))
        except LocalEntryNotFoundError as error:
            raise FileNotFoundError(
                f"Model {source!r} (revision {revision or 'main'}) is not in the local Hugging Face cache and the Hub "
                "cannot be reached (HF_HUB_OFFLINE=1 or no network). Download it first, or pass a local directory."
            ) from error
        except HfHubHTTPError as error:
            raise FileNotFoundError(f"Cannot fetch model {source!r} from the Hub: {error}") from error
        is_hub, resolved_revision = True, path.name
        name = name or source
    else:
        raise FileNotFoundError(
            f"{source!r} is neither an existing directory nor a Hub repo id of the form org/name."
        )
    if name.count("/") != 1:
        raise ValueError(f"The model name recorded in results must look like 'org/name', got {name!r}.")

    config_file = path / "config.json"
    if not config_file.is_file():
        raise NotMetaEmbedCheckpointError(
            f"{source} has no config.json, so it is not a MetaEmbed checkpoint (nor any transformers model). Save one "
            "with metaembed.checkpoint.save_checkpoint(model, processor, directory)."
        )
    config = json.loads(config_file.read_text(encoding="utf-8"))
    model_type = config.get("model_type")
    if model_type != "metaembed":
        raise NotMetaEmbedCheckpointError(
            f"{source} is not a MetaEmbed checkpoint: its config.json declares model_type {model_type!r}, not "
            "'metaembed'. Convert a backbone with MetaEmbedModel.from_backbone(...) and save it, or evaluate a "
            "regular embedding model with mteb directly."
        )
    return CheckpointInfo(
        source=source,
        name=name,
        revision=resolved_revision,
        path=path,
        config=config,
        is_hub=is_hub,
        card=_read_card(path / "README.md"),
    )


def _read_card(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    from huggingface_hub.repocard import metadata_load

    try:
        return metadata_load(path) or {}
    except Exception as error:  # a malformed card must not block an evaluation
        logger.warning("Ignoring the front matter of %s: %s", path, error)
        return {}


def _header(file: Path) -> dict[str, Any]:
    with file.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(length))


def read_safetensors_stats(directory: Path) -> CheckpointStats:
    """Counts parameters and bytes over every safetensors file of a checkpoint, reading only the headers.

    Example:
        >>> read_safetensors_stats(Path("path/to/checkpoint")).n_parameters
        3754622976
    """
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = sorted({directory / name for name in json.loads(index.read_text())["weight_map"].values()})
    else:
        files = sorted(directory.glob("*.safetensors"))
    if not files:
        return CheckpointStats(None, None)
    n_parameters = n_bytes = 0
    for file in files:
        for key, entry in _header(file).items():
            if key == "__metadata__":
                continue
            count = math.prod(entry["shape"])
            n_parameters += count
            n_bytes += count * _DTYPE_BYTES.get(entry["dtype"], 4)
    return CheckpointStats(n_parameters, n_bytes)


__all__ = [
    "CheckpointInfo",
    "CheckpointStats",
    "NotMetaEmbedCheckpointError",
    "read_safetensors_stats",
    "resolve_checkpoint",
]
