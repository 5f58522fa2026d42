"""Training data: load query / positive / negatives rows and lay them out for `MultiVectorEncoderTrainer`.

The trainer reads columns positionally: the first is the query, the second the positive, the rest hard negatives.
Each row becomes `query, positive, negative_1, ..., negative_K` with a fixed K. An item is a string, or, when image
columns are configured, a `{"text": ..., "image": ...}` dict (either may be missing).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .config import DataConfig

logger = logging.getLogger(__name__)

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def load_source(source: Any, split: str = "train"):
    """Loads a `datasets.Dataset` from a file, a list of files, a `save_to_disk` folder, a dict for
    `datasets.load_dataset`, or returns a `Dataset` given as is.

    Raises:
        ValueError: for a file type that is not JSON lines, JSON, CSV or Parquet, or a missing path.
    """
    import datasets

    if isinstance(source, datasets.Dataset):
        return source
    if isinstance(source, dict):
        source = dict(source)
        name = source.pop("name", None) or source.pop("path", None)
        if name is None:
            raise ValueError(f"A dataset given as a mapping needs 'name' (or 'path'), got {sorted(source)}.")
        if os.path.isdir(name) and (Path(name) / "dataset_info.json").exists():
            return datasets.load_from_disk(name)
        return datasets.load_dataset(
            name, source.pop("config", None), split=source.pop("split", split), **source
        )
    files = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    paths = [Path(f) for f in files]
    if len(paths) == 1 and paths[0].is_dir():
        return datasets.load_from_disk(str(paths[0]))
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ValueError(f"Training data not found: {missing}.")
    suffixes = {p.suffix.lower() for p in paths}
    builders = {FILE_BUILDERS.get(s) for s in suffixes}
    if None in builders or len(builders) != 1:
        raise ValueError(
            f"Data files must all be one of {sorted(FILE_BUILDERS)}, got {sorted(suffixes)} ({[str(p) for p in paths]})."
        )
    return datasets.load_dataset(builders.pop(), data_files=[str(p) for p in paths], split="train")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class RowFormatter:
    """Turns one raw row into `{query, positive, negative_1..K}` items, raising errors that name the row."""

    def __init__(self, config: DataConfig, num_negatives: int, source_name: str):
        self.config = config
        self.num_negatives = num_negatives
        self.source_name = source_name
        self.image_root = Path(config.image_root) if config.image_root else None

    def _image(self, value: Any) -> Any:
        if _empty(value):
            return None
        if isinstance(value, str) and self.image_root is not None and not os.path.isabs(value):
            return str(self.image_root / value)
        return value

    def _item(self, text: Any, image: Any, row: int, what: str) -> Any:
        if text is not None and not isinstance(text, str):
            raise ValueError(
                f"Row {row} of {self.source_name}: the {what} text must be a string, got {type(text).__name__}."
            )
        image = self._image(image)
        if _empty(text) and image is None:
            return None
        if not self.config.has_images:
            return text
        return {"text": None if _empty(text) else text, "image": image}

    def __call__(self, example: dict[str, Any], row: int) -> dict[str, Any]:
        c = self.config
        get = example.get
        query = self._item(
            get(c.query_column) if c.query_column else None, get(c.query_image_column), row, "query"
        )
        if query is None:
            raise ValueError(
                f"Row {row} of {self.source_name} has no query (columns {c.query_column!r} / "
                f"{c.query_image_column!r} are empty); every row needs a query and a positive."
            )
        positive = self._item(
            get(c.positive_column) if c.positive_column else None,
            get(c.positive_image_column),
            row,
            "positive",
        )
        if positive is None:
            raise ValueError(
                f"Row {row} of {self.source_name} has no positive (columns {c.positive_column!r} / "
                f"{c.positive_image_column!r} are empty); every row needs a query and a positive."
            )
        texts = _as_list(get(c.negatives_column)) if c.negatives_column else []
        images = _as_list(get(c.negatives_image_column)) if c.negatives_image_column else []
        count = max(len(texts), len(images))
        negatives = [
            self._item(
                texts[i] if i < len(texts) else None, images[i] if i < len(images) else None, row, "negative"
            )
            for i in range(count)
        ]
        negatives = [n for n in negatives if n is not None]
        if len(negatives) < self.num_negatives:
            raise ValueError(
                f"Row {row} of {self.source_name} has {len(negatives)} hard negative(s) but the data uses "
                f"{self.num_negatives} per row; give every row as many, or set data.num_negatives lower."
            )
        row_out = {"query": query, "positive": positive}
        row_out.update({f"negative_{i + 1}": n for i, n in enumerate(negatives[: self.num_negatives])})
        return row_out


def _count_negatives(example: dict[str, Any], config: DataConfig) -> int:
    texts = _as_list(example.get(config.negatives_column)) if config.negatives_column else []
    images = _as_list(example.get(config.negatives_image_column)) if config.negatives_image_column else []
    return sum(
        1
        for i in range(max(len(texts), len(images)))
        if not (
            _empty(texts[i] if i < len(texts) else None) and _empty(images[i] if i < len(images) else None)
        )
    )


def prepare_dataset(dataset: Any, config: DataConfig, source_name: str = "the training data"):
    """Validates the rows and returns a dataset with columns `query, positive, negative_1..K`.

    Args:
        dataset: A `datasets.Dataset` with the configured columns.
        config: The data configuration.
        source_name: How errors refer to the data.

    Raises:
        ValueError: a configured column is missing, or a row (named by its index) lacks a query or a positive, or
            has fewer hard negatives than the others.
    """
    import datasets

    if len(dataset) == 0:
        raise ValueError(f"{source_name} is empty.")
    for column in (
        config.query_column,
        config.positive_column,
        config.query_image_column,
        config.positive_image_column,
        config.negatives_image_column,
    ):
        if column is not None and column not in dataset.column_names:
            raise ValueError(
                f"{source_name} has no column {column!r}; its columns are {dataset.column_names}."
            )
    negatives_column = config.negatives_column
    if negatives_column is not None and negatives_column not in dataset.column_names:
        if negatives_column != "negatives":  # the default name is optional; a configured one is not
            raise ValueError(
                f"{source_name} has no column {negatives_column!r}; its columns are {dataset.column_names}."
            )
        config = DataConfig(**{**vars(config), "negatives_column": None})
    num_negatives = config.num_negatives
    if num_negatives is None:
        num_negatives = _count_negatives(dataset[0], config)
    formatter = RowFormatter(config, num_negatives, source_name)
    image_features = {
        name: dataset.features[name]
        for name in (config.query_image_column, config.positive_image_column)
        if name is not None and isinstance(dataset.features[name], datasets.Image)
    }
    features = None
    if config.has_images:
        # Paths stay strings; datasets Image features stay images (decoded to PIL when a batch is read).
        image_type = next(iter(image_features.values()), datasets.Value("string"))
        item = {"text": datasets.Value("string"), "image": image_type}
        columns = ["query", "positive", *(f"negative_{i + 1}" for i in range(num_negatives))]
        features = datasets.Features({name: item for name in columns})
    prepared = dataset.map(
        formatter,
        with_indices=True,
        remove_columns=dataset.column_names,
        features=features,
        desc=f"Checking {source_name}",
    )
    logger.info("%s: %d rows, %d hard negative(s) per row.", source_name, len(prepared), num_negatives)
    return prepared


def load_training_data(config: DataConfig, split: str = "train"):
    """Loads and prepares `config.train` (split "train") or `config.eval` (split "eval")."""
    source = config.train if split == "train" else config.eval
    if source is None:
        return None
    name = f"the {split} data ({source if isinstance(source, (str, os.PathLike)) else type(source).__name__})"
    return prepare_dataset(load_source(source), config, source_name=name)


__all__ = ["load_source", "load_training_data", "prepare_dataset"]
