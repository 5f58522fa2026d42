"""Reading MMEB-eval subsets into mteb's retrieval format: queries, a de-duplicated corpus, qrels and per-query lists.

MMEB-eval stores one folder per subset holding ``test-00000-of-00001.parquet`` with four columns: ``qry_text``,
``qry_img_path``, ``tgt_text`` (a list) and ``tgt_img_path`` (a list). The first target of every row is the positive. The
images come as ``images.zip`` at the root; the paths in the parquet files are relative to the folder it unzips to.

The conversion:

- text loses MMEB's ``<|image_1|>`` placeholder (the MetaEmbed processor inserts the backbone's own image tokens) and
  is otherwise kept verbatim, task instruction included, as MMEB publishes it;
- an empty string means "no image";
- candidates are de-duplicated by ``(text, image path)`` over the whole subset, as VLM2Vec's evaluation does, so each
  distinct candidate is encoded once and a query's list holds each candidate once (a negative identical to the
  positive is the positive, not a competitor);
- images are not opened here: the ``image`` columns hold file paths behind ``datasets.Image()``, decoded only when a
  model reads them. Every referenced file is checked to exist, so a missing file fails before any encoding.

Example:
    >>> from metaembed.evaluation.mmeb_data import load_mmeb_subset
    >>> from metaembed.evaluation.mmeb_subsets import SUBSETS_BY_NAME
    >>> split = load_mmeb_subset(SUBSETS_BY_NAME["VOC2007"], data_dir="path/to/MMEB-eval")
    >>> sorted(split)
    ['corpus', 'queries', 'relevant_docs', 'top_ranked']
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .mmeb_subsets import MMEB_PARQUET_NAME, MMEB_REPO_ID, MMEB_REVISION, MMEBSubset

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "METAEMBED_MMEB_DIR"
IMAGE_DIR_ENV = "METAEMBED_MMEB_IMAGE_DIR"
IMAGE_MARKER = "<|image_1|>"
REQUIRED_COLUMNS = ("qry_text", "qry_img_path", "tgt_text", "tgt_img_path")


def clean_text(text: str | None) -> str:
    """Removes MMEB's ``<|image_1|>`` placeholder and surrounding whitespace.

    Example:
        >>> clean_text("<|image_1|>\\nRepresent the given image.")
        'Represent the given image.'
    """
    return (text or "").replace(IMAGE_MARKER, "").strip()


# ----------------------------------------------------------------------------------------------------- locations
def resolve_data_dir(
    data_dir: str | os.PathLike | None = None,
    subsets: Sequence[str] = (),
    revision: str = MMEB_REVISION,
) -> Path:
    """Finds the MMEB-eval root: ``data_dir``, else ``$METAEMBED_MMEB_DIR``, else the Hub dataset at ``revision``.

    The Hub path downloads only the requested subsets' folders and ``images.zip`` (or reuses the local cache, which is
    all that happens with ``HF_HUB_OFFLINE=1``).

    Raises:
        FileNotFoundError: if the given directory does not exist, or the Hub copy is unavailable offline.
    """
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_dir():
            source = "data_dir" if data_dir is not None else f"${DATA_DIR_ENV}"
            raise FileNotFoundError(f"MMEB-eval directory {str(path)!r} (from {source}) does not exist.")
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = [f"{name}/*" for name in subsets] + ["images.zip"]
    try:
        return Path(
            snapshot_download(MMEB_REPO_ID, repo_type="dataset", revision=revision, allow_patterns=patterns)
        )
    except LocalEntryNotFoundError as error:
        raise FileNotFoundError(
            f"{MMEB_REPO_ID} at revision {revision} is not in the local Hugging Face cache and the Hub cannot be "
            f"reached. Download it once, or point ${DATA_DIR_ENV} (or --mmeb-dir) at a copy in the same layout."
        ) from error


def _extract_images(archive: Path, target: Path) -> Path:
    """Unzips ``images.zip`` once into ``target`` (a marker file records completion)."""
    marker = target / ".extracted"
    if marker.exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    logger.info("Extracting %s to %s (once)", archive, target)
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(target)
    marker.write_text(archive.name)
    return target


def _image_dir_candidates(root: Path, image_dir: str | os.PathLike | None) -> list[Path]:
    explicit = image_dir if image_dir is not None else os.environ.get(IMAGE_DIR_ENV)
    if explicit:
        return [Path(explicit).expanduser()]
    candidates = [root / "images"]
    archive = root / "images.zip"
    if archive.exists() and not (root / "images").is_dir():
        writable = os.access(root, os.W_OK) and not _is_hub_snapshot(root)
        target = root / "images" if writable else _cache_dir() / "mmeb-images" / root.name
        candidates = [_extract_images(archive, target)]
    expanded = []
    for candidate in candidates:
        expanded.append(candidate)
        if candidate.is_dir():
            expanded.extend(sorted(child for child in candidate.iterdir() if child.is_dir()))
    return [*expanded, root]


def _is_hub_snapshot(path: Path) -> bool:
    return path.parent.name == "snapshots"


def _cache_dir() -> Path:
    return Path(os.environ.get("METAEMBED_CACHE", Path.home() / ".cache" / "metaembed"))


def resolve_image_root(
    root: Path, sample_paths: Iterable[str], image_dir: str | os.PathLike | None = None
) -> Path:
    """The folder that MMEB's relative image paths resolve against.

    Tries, in order: ``image_dir`` (or ``$METAEMBED_MMEB_IMAGE_DIR``); ``<root>/images`` and its sub-folders (where
    ``images.zip`` unzips to, extracting it once if only the archive is there); ``root`` itself. The first folder that
    holds the first sample path wins.
    """
    candidates = _image_dir_candidates(root, image_dir)
    sample = next((path for path in sample_paths if path), None)
    if sample is None:
        return candidates[0]
    for candidate in candidates:
        if (candidate / sample).is_file():
            return candidate
    return candidates[0]


# ----------------------------------------------------------------------------------------------------- reading
@dataclass
class _Rows:
    qry_text: list[str]
    qry_img_path: list[str]
    tgt_text: list[list[str]]
    tgt_img_path: list[list[str]]


def _read_parquet(path: Path, subset: MMEBSubset) -> _Rows:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise FileNotFoundError(
            f"MMEB subset {subset.name}: {path} does not exist. Expected one folder per subset holding "
            f"{MMEB_PARQUET_NAME}, as in {MMEB_REPO_ID}."
        )
    table = pq.read_table(path)
    missing = [column for column in REQUIRED_COLUMNS if column not in table.column_names]
    if missing:
        raise ValueError(
            f"MMEB subset {subset.name}: {path} lacks the columns {missing}; it has {table.column_names}."
        )
    return _Rows(*(table.column(column).to_pylist() for column in REQUIRED_COLUMNS))


def _check_instruction(subset: MMEBSubset, texts: list[str]) -> None:
    head = subset.instruction.rstrip(":. ")
    mismatched = [text for text in texts if not text.startswith(head)]
    if mismatched:
        logger.warning(
            "MMEB subset %s: %d of %d query texts do not start with the documented instruction %r (first: %r). "
            "The texts are used as published; only the documentation differs.",
            subset.name,
            len(mismatched),
            len(texts),
            subset.instruction,
            mismatched[0][:120],
        )


def load_mmeb_subset(
    subset: MMEBSubset,
    data_dir: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
    revision: str = MMEB_REVISION,
) -> dict[str, Any]:
    """Loads one MMEB subset as mteb retrieval split data.

    Args:
        subset: The subset to load.
        data_dir: The MMEB-eval root (one folder per subset). Defaults to ``$METAEMBED_MMEB_DIR``, then the Hub.
        image_dir: The folder image paths are relative to. Defaults to ``$METAEMBED_MMEB_IMAGE_DIR``, then the
            folder ``images.zip`` unzips to under the root.
        revision: The Hub revision, when the data comes from the Hub.

    Returns:
        ``{"queries", "corpus", "relevant_docs", "top_ranked"}``: ``queries`` and ``corpus`` are ``datasets.Dataset``
        with ``id``, ``text`` and, where the subset's side has images, a lazy ``image`` column; ``relevant_docs`` maps
        each query id to its positive; ``top_ranked`` maps each query id to its de-duplicated candidate ids.

    Raises:
        FileNotFoundError: if the parquet file, or an image file a row names, is missing (the error names the file
            and the row).
        ValueError: if a row is malformed (no candidates, text and image lists of different lengths), or images
            appear on a side the subset declares text-only.
    """
    import datasets

    root = resolve_data_dir(data_dir, [subset.name], revision)
    parquet = root / subset.name / MMEB_PARQUET_NAME
    rows = _read_parquet(parquet, subset)
    first_image = next(
        (p for p in [*rows.qry_img_path, *(p for paths in rows.tgt_img_path for p in paths)] if p),
        None,
    )
    image_root = resolve_image_root(root, [first_image] if first_image else [], image_dir)
    checked: set[Path] = set()

    def image_path(relative: str | None, row: int, column: str, position: int | None = None) -> str | None:
        if not relative:
            return None
        side_has_image = subset.query_has_image if column == "qry_img_path" else subset.candidate_has_image
        where = f"row {row}, column {column}" + (f"[{position}]" if position is not None else "")
        if not side_has_image:
            raise ValueError(
                f"MMEB subset {subset.name}: {parquet} {where} names an image ({relative!r}) but the task declares "
                f"category {subset.category!r} (no images on that side). Update MMEB_SUBSETS in "
                "metaembed/evaluation/mmeb_subsets.py."
            )
        full = image_root / relative
        if full not in checked and not full.is_file():
            raise FileNotFoundError(
                f"MMEB subset {subset.name}: image file {str(full)!r} is missing ({parquet}, {where}). Unzip "
                f"images.zip from {MMEB_REPO_ID} under the data directory, or set --mmeb-image-dir / "
                f"${IMAGE_DIR_ENV} to the folder the image paths are relative to."
            )
        checked.add(full)
        return str(full)

    query_ids, query_texts, query_images = [], [], []
    corpus_index: dict[tuple[str, str | None], str] = {}
    corpus_texts, corpus_images = [], []
    relevant_docs: dict[str, dict[str, int]] = {}
    top_ranked: dict[str, list[str]] = {}
    for row in range(len(rows.qry_text)):
        texts, paths = list(rows.tgt_text[row] or []), list(rows.tgt_img_path[row] or [])
        if not texts:
            raise ValueError(f"MMEB subset {subset.name}: {parquet} row {row} has no candidates in tgt_text.")
        if len(paths) != len(texts):
            raise ValueError(
                f"MMEB subset {subset.name}: {parquet} row {row} has {len(texts)} tgt_text entries but "
                f"{len(paths)} tgt_img_path entries; they must pair up."
            )
        query_id = f"q{row:06d}"
        query_ids.append(query_id)
        query_texts.append(clean_text(rows.qry_text[row]))
        query_images.append(image_path(rows.qry_img_path[row], row, "qry_img_path"))
        candidates: list[str] = []
        for position, (text, path) in enumerate(zip(texts, paths)):
            key = (clean_text(text), image_path(path, row, "tgt_img_path", position))
            if key not in corpus_index:
                corpus_index[key] = f"c{len(corpus_index):07d}"
                corpus_texts.append(key[0])
                corpus_images.append(key[1])
            candidate = corpus_index[key]
            if candidate not in candidates:
                candidates.append(candidate)
        relevant_docs[query_id] = {candidates[0]: 1}
        top_ranked[query_id] = candidates
    _check_instruction(subset, query_texts)

    def build(
        ids: list[str], texts: list[str], images: list[str | None], with_image: bool
    ) -> datasets.Dataset:
        columns: dict[str, list] = {"id": ids, "text": texts}
        if with_image:
            columns["image"] = images
        dataset = datasets.Dataset.from_dict(columns)
        return dataset.cast_column("image", datasets.Image()) if with_image else dataset

    corpus_ids = list(corpus_index.values())
    logger.info(
        "MMEB subset %s: %d queries, %d distinct candidates (%d listed)",
        subset.name,
        len(query_ids),
        len(corpus_ids),
        sum(len(paths) for paths in rows.tgt_img_path),
    )
    return {
        "queries": build(query_ids, query_texts, query_images, subset.query_has_image),
        "corpus": build(corpus_ids, corpus_texts, corpus_images, subset.candidate_has_image),
        "relevant_docs": relevant_docs,
        "top_ranked": top_ranked,
    }


__all__ = [
    "DATA_DIR_ENV",
    "IMAGE_DIR_ENV",
    "clean_text",
    "load_mmeb_subset",
    "resolve_data_dir",
    "resolve_image_root",
]
