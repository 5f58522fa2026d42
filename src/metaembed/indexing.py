"""Encoding a corpus into an on-disk MetaEmbed index, resumably and shard-per-rank, and searching it.

An index directory holds one shard per process (`shard-00000/`, `shard-00001/`, ...; each a
[`MetaEmbedIndex`] saved atomically), `metaembed_index.json` naming the model that encoded it, and
`skipped-<rank>.jsonl` listing the items that could not be encoded and why. Candidates are stored once at the full
candidate budget; every smaller budget reads a prefix.

Example:
    >>> report = build_index("my-org/metaembed-minilm", "docs.jsonl", "docs-index")
    >>> hits = search_index("docs-index", ["how do I sort a list?"], budget=(4, 8), k=5)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .fileio import atomic_write_text

logger = logging.getLogger(__name__)

INDEX_CONFIG_NAME = "metaembed_index.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp")
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
SNIPPET_CHARS = 300


@dataclass
class InputItem:
    """One corpus entry: its id, what the model encodes, metadata to store, or why it cannot be used."""

    id: str
    item: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class IndexReport:
    """What [`build_index`] did on this rank."""

    directory: Path
    shard: Path
    indexed: int
    already_present: int
    skipped: list[dict[str, str]]


# ------------------------------------------------------------------------------------------------ inputs
def _folder_items(folder: Path) -> Iterator[InputItem]:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            yield InputItem(relative, {"image": str(path)}, {"path": relative, "kind": "image"})
        elif suffix in TEXT_SUFFIXES:
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                yield InputItem(relative, error=f"cannot read text file: {error}")
                continue
            if not text.strip():
                yield InputItem(relative, error="empty file")
                continue
            yield InputItem(relative, text, {"path": relative, "kind": "text", "text": text[:SNIPPET_CHARS]})


def _jsonl_items(path: Path) -> Iterator[InputItem]:
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            fallback_id = f"line-{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                yield InputItem(fallback_id, error=f"invalid JSON on line {number}: {error.msg}")
                continue
            if not isinstance(record, dict):
                yield InputItem(fallback_id, error=f"line {number} is not a JSON object")
                continue
            item_id = str(record.get("id", fallback_id))
            text, image = record.get("text"), record.get("image")
            if image:
                image_path = Path(image)
                if not image_path.is_absolute():
                    image_path = path.parent / image_path
                image = str(image_path)
            if not (text and str(text).strip()) and not image:
                yield InputItem(item_id, error=f"line {number} has neither 'text' nor 'image'")
                continue
            item = {"text": text, "image": image} if image else str(text)
            metadata = {key: value for key, value in record.items() if key != "id"}
            yield InputItem(item_id, item, metadata)


def iter_input_items(source: str | os.PathLike) -> Iterator[InputItem]:
    """Reads a folder (images and `.txt`/`.md`/`.rst` files, ids = relative paths) or a JSONL file (one object a
    line with `text` and/or `image`, an optional `id` and any other metadata fields).

    Raises:
        FileNotFoundError: if `source` does not exist.
        ValueError: if `source` is a file that is not JSONL.
    """
    source = Path(source)
    if source.is_dir():
        return _folder_items(source)
    if not source.exists():
        raise FileNotFoundError(f"Input {source} does not exist; pass a folder or a .jsonl file.")
    if source.suffix.lower() not in (".jsonl", ".ndjson"):
        raise ValueError(f"Input {source} is neither a folder nor a .jsonl file.")
    return _jsonl_items(source)


# ------------------------------------------------------------------------------------------------ model
def load_model(
    name_or_path: str, *, revision: str | None = None, device: str | None = None, dtype: Any = None
):
    """Loads a MetaEmbed checkpoint with AutoModel / AutoProcessor (`trust_remote_code=True`), in eval mode."""
    from transformers import AutoConfig, AutoModel, AutoProcessor

    config = AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=True)
    if getattr(config, "model_type", None) != "metaembed":
        raise ValueError(f"{name_or_path} is a {config.model_type!r} checkpoint, not a MetaEmbed one.")
    kwargs = {"dtype": dtype} if dtype is not None else {}
    model = AutoModel.from_pretrained(
        name_or_path, revision=revision, trust_remote_code=True, **kwargs
    ).eval()
    if device is not None:
        model.to(device)
    processor = AutoProcessor.from_pretrained(name_or_path, revision=revision, trust_remote_code=True)
    return model, processor


def _distributed_rank_and_size() -> tuple[int, int]:
    """(rank, world size) under `accelerate launch` / `torchrun`, else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


# ------------------------------------------------------------------------------------------------ build
def _encode_batch(
    model: Any, processor: Any, batch: list[InputItem]
) -> tuple[list[InputItem], torch.Tensor | None, list]:
    """Encodes a batch at the full candidate budget; items that fail on their own are returned as skipped."""
    try:
        return (
            batch,
            model.encode_candidates([entry.item for entry in batch], processor, batch_size=len(batch)),
            [],
        )
    except ValueError:
        pass  # find the offending items one by one
    good, vectors, skipped = [], [], []
    for entry in batch:
        try:
            vectors.append(model.encode_candidates([entry.item], processor, batch_size=1))
            good.append(entry)
        except ValueError as error:
            skipped.append({"id": entry.id, "reason": str(error)})
    return good, (torch.cat(vectors) if vectors else None), skipped


def build_index(
    model: Any,
    source: str | os.PathLike,
    directory: str | os.PathLike,
    *,
    processor: Any = None,
    model_name: str | None = None,
    batch_size: int = 16,
    save_every: int = 256,
    dtype: str = "bfloat16",
    rank: int | None = None,
    world_size: int | None = None,
    show_progress_bar: bool = True,
) -> IndexReport:
    """Encodes a folder or JSONL file into an on-disk index at the full candidate budget.

    Resumable: the shard is saved atomically every `save_every` items, and a rerun skips the ids already saved,
    so a killed run picks up where it stopped with no item lost or doubled. Under `accelerate launch` (or with
    `rank` / `world_size`) each process encodes every `world_size`-th item into its own shard. Items that cannot be
    encoded (an unreadable image, an empty file, a malformed line) are skipped, listed in
    `skipped-<rank>.jsonl` and returned in the report, never dropped silently.

    Args:
        model: A MetaEmbed model, or a checkpoint path / Hub id to load one from.
        source: A folder or a `.jsonl` file (see [`iter_input_items`]).
        directory: The index directory (created if missing).
        processor: The model's processor (loaded with the model when `model` is a path).
        model_name: Recorded in `metaembed_index.json` so `search` can load the query encoder.
        batch_size: Items per forward pass.
        save_every: Items between atomic saves.
        dtype: Storage dtype of the index (`"bfloat16"`, `"float16"`, `"float8_e4m3"`, `"int8"`, `"float32"`).
        rank: This process's rank (default: from the environment).
        world_size: Number of processes (default: from the environment).
        show_progress_bar: Show a tqdm bar.

    Returns:
        An [`IndexReport`].
    """
    from tqdm.auto import tqdm

    from .index import MetaEmbedIndex

    if isinstance(model, (str, os.PathLike)):
        model_name = model_name or str(model)
        model, processor = load_model(str(model))
    if processor is None:
        raise ValueError("Pass the model's processor, or a checkpoint path so that both can be loaded.")
    env_rank, env_size = _distributed_rank_and_size()
    rank = env_rank if rank is None else rank
    world_size = env_size if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dim, max_vectors = model.config.output_dim, model.config.num_candidate_meta_tokens
    index_config = {
        "model": model_name,
        "dim": dim,
        "max_candidate_vectors": max_vectors,
        "num_query_meta_tokens": model.config.num_query_meta_tokens,
        "dtype": dtype,
    }
    config_path = directory / INDEX_CONFIG_NAME
    if config_path.exists():
        previous = json.loads(config_path.read_text())
        clashes = {
            k: (previous.get(k), v) for k, v in index_config.items() if k != "model" and previous.get(k) != v
        }
        if clashes:
            raise ValueError(f"{directory} holds an index of another model or dtype: {clashes} (saved, now).")
    atomic_write_text(config_path, json.dumps(index_config, indent=2) + "\n")

    shard = directory / f"shard-{rank:05d}"
    if (shard / "manifest.json").exists():
        index = MetaEmbedIndex.open(shard)
        logger.info("Resuming %s: %d items already indexed.", shard, len(index))
    else:
        index = MetaEmbedIndex(dim, max_candidate_vectors=max_vectors, dtype=dtype)
    present = set(index.ids)
    skipped_path = directory / f"skipped-{rank:05d}.jsonl"
    skipped: dict[str, dict[str, str]] = {}

    mine = [entry for number, entry in enumerate(iter_input_items(source)) if number % world_size == rank]
    todo = [entry for entry in mine if entry.id not in present]
    already = len(mine) - len(todo)
    seen: set[str] = set()
    pending: list[InputItem] = []
    unsaved = 0
    indexed = 0

    def flush_skipped() -> None:
        lines = "".join(json.dumps(record) + "\n" for record in skipped.values())
        atomic_write_text(skipped_path, lines)

    def encode_pending() -> int:
        nonlocal pending
        if not pending:
            return 0
        good, vectors, failed = _encode_batch(model, processor, pending)
        for record in failed:
            skipped[record["id"]] = record
        if good:
            index.extend([entry.id for entry in good], vectors, [entry.metadata for entry in good])
        pending = []
        return len(good)

    progress = tqdm(todo, desc=f"Indexing (rank {rank})", disable=not show_progress_bar, unit="item")
    for entry in progress:
        if entry.id in seen:
            skipped[entry.id] = {"id": entry.id, "reason": "duplicate id in the input"}
            continue
        seen.add(entry.id)
        if entry.error is not None:
            skipped[entry.id] = {"id": entry.id, "reason": entry.error}
            continue
        pending.append(entry)
        if len(pending) >= batch_size:
            added = encode_pending()
            indexed += added
            unsaved += added
        if unsaved >= save_every:
            index.save(shard)
            flush_skipped()
            unsaved = 0
    indexed += encode_pending()
    if len(index):
        index.save(shard)
    flush_skipped()
    for record in skipped.values():
        logger.warning("Skipped %s: %s", record["id"], record["reason"])
    logger.info(
        "Rank %d: %d items indexed now, %d were already there, %d skipped; shard %s.",
        rank,
        indexed,
        already,
        len(skipped),
        shard,
    )
    return IndexReport(directory, shard, indexed, already, list(skipped.values()))


# ------------------------------------------------------------------------------------------------ search
def open_index(directory: str | os.PathLike, **kwargs: Any):
    """Opens every shard of an index directory together (a `ShardedIndex` when there are several)."""
    from .index import MetaEmbedIndex, ShardedIndex

    directory = Path(directory)
    shards = sorted(p for p in directory.glob("shard-*") if (p / "manifest.json").exists())
    if not shards:
        if (directory / "manifest.json").exists():
            return MetaEmbedIndex.open(directory, **kwargs)
        raise FileNotFoundError(f"{directory} holds no index shards; build one with `metaembed index`.")
    if len(shards) == 1:
        return MetaEmbedIndex.open(shards[0], **kwargs)
    return ShardedIndex.open(shards, **kwargs)


def search_index(
    directory: str | os.PathLike,
    queries: Sequence[Any],
    *,
    model: Any = None,
    processor: Any = None,
    budget: Sequence[int] | None = None,
    k: int = 10,
    first_stage: Sequence[int] | None = None,
    rerank: Sequence[int] | None = None,
    candidates: int = 1000,
) -> list[list[dict[str, Any]]]:
    """Encodes `queries` and searches the index, exhaustively at `budget` or in two stages.

    Returns:
        For each query, its hits best first: `{"id", "score", "metadata"}`.
    """
    directory = Path(directory)
    index = open_index(directory)
    if model is None or isinstance(model, (str, os.PathLike)):
        name = model or json.loads((directory / INDEX_CONFIG_NAME).read_text()).get("model")
        if not name:
            raise ValueError(f"{directory} does not record its model; pass --model.")
        model, processor = load_model(str(name))
    two_stage = first_stage is not None or rerank is not None
    # Encode only the query vectors the widest stage reads (None: all of them); encode_queries validates it.
    widest = budget if budget is not None else rerank
    r_q = widest[0] if widest is not None else None
    query_vectors = model.encode_queries(list(queries), processor, budget=r_q)
    if two_stage:
        result = index.search(
            query_vectors, k=k, first_stage=first_stage, rerank=rerank, candidates=candidates
        )
    else:
        result = index.search(query_vectors, budget=budget, k=k)
    hits = []
    for ids, scores in zip(result.ids, result.scores.tolist()):
        hits.append(
            [
                {"id": item_id, "score": float(score), "metadata": index.get_metadata(item_id)}
                for item_id, score in zip(ids, scores)
            ]
        )
    return hits


__all__ = [
    "IndexReport",
    "InputItem",
    "build_index",
    "iter_input_items",
    "load_model",
    "open_index",
    "search_index",
]
