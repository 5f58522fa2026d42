"""The training configuration: a YAML or JSON file (or a dict) validated into dataclasses.

A complete file, with the paper's recipe for a Qwen2.5-VL backbone::

    model: Qwen/Qwen2.5-VL-3B-Instruct     # a backbone, or a MetaEmbed checkpoint to continue training
    output_dir: outputs/metaembed-3b
    num_query_meta_tokens: 16              # new models only
    num_candidate_meta_tokens: 64
    backbone_kwargs: {dtype: bfloat16, attn_implementation: sdpa}
    processor: {max_pixels: 802816}
    data:
      train: data/train.jsonl              # local files (.jsonl/.json/.csv/.parquet), a save_to_disk folder,
                                           # or {name: org/dataset, split: train, config: ...}
      query_column: query
      positive_column: positive
      negatives_column: negatives          # a list (or one string) of hard negatives per row; optional
      positive_image_column: image         # optional image columns (paths or datasets Image features)
    lora: {r: 32, alpha: 32, dropout: 0.1}  # on q/k/v/o/gate/up/down; the meta token table trains fully
    loss: {temperature: 0.03, mmr: true}
    training:                              # any MultiVectorEncoderTrainingArguments field
      learning_rate: 1.0e-4
      warmup_steps: 500
      max_steps: 4000
      per_device_train_batch_size: 48
      bf16: true
      gradient_checkpointing: true
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DataConfig:
    """Where the training pairs come from and which columns hold what.

    Args:
        train: Local file(s) (`.jsonl`, `.json`, `.csv`, `.parquet`), a `save_to_disk` folder, or a dict
            `{name, split, config}` for `datasets.load_dataset` (a Hub id or a local dataset script/folder).
        eval: The same, for an evaluation loss; optional.
        query_column, positive_column: Text columns (None when that side is image only).
        negatives_column: Hard negatives: a list per row or one string; optional (in-batch negatives only).
        query_image_column, positive_image_column, negatives_image_column: Image columns (a path, relative to
            `image_root` if set, or a datasets `Image` feature); the negatives' one holds a list.
        image_root: Folder that relative image paths are resolved against.
        num_negatives: Hard negatives used per row; defaults to the count in the first row. Rows with more are
            cut, rows with fewer are an error naming the row.
    """

    train: Any = None
    eval: Any = None
    query_column: str | None = "query"
    positive_column: str | None = "positive"
    negatives_column: str | None = "negatives"
    query_image_column: str | None = None
    positive_image_column: str | None = None
    negatives_image_column: str | None = None
    image_root: str | None = None
    num_negatives: int | None = None

    @property
    def has_images(self) -> bool:
        return any((self.query_image_column, self.positive_image_column, self.negatives_image_column))


@dataclass
class LoraSettings:
    """LoRA adapters via peft; `enabled: false` trains every parameter instead.

    `target_modules: auto` picks the backbone's attention and MLP projections (q/k/v/o/gate/up/down for decoders,
    query/key/value/attention.output.dense/intermediate.dense/output.dense for BERT, Wqkv/Wo/Wi for ModernBERT),
    leaving any vision tower frozen. The meta token table (and the projection, if any) always trains fully.
    """

    enabled: bool = True
    r: int = 32
    alpha: int = 32
    dropout: float = 0.1
    target_modules: Any = "auto"


@dataclass
class LossSettings:
    """The MMR loss (see `metaembed.st_module.MMRLoss`); `gather_across_devices: auto` gathers when several
    processes train."""

    temperature: float = 0.03
    mmr: bool = True
    budgets: list[list[int]] | None = None
    weights: list[float] | None = None
    gather_across_devices: Any = "auto"


@dataclass
class TrainConfig:
    """Everything `metaembed train` needs. See the module docstring for a complete file.

    Args:
        model: A backbone (Hub id or folder) or a MetaEmbed checkpoint (its `config.json` says `metaembed`).
        output_dir: Where the trained checkpoint (both APIs) and the trainer's own checkpoints go.
        num_query_meta_tokens, num_candidate_meta_tokens, budgets, embedding_dim: The MetaEmbed config of a new
            model (ignored when continuing from a MetaEmbed checkpoint).
        backbone_kwargs: Passed to `AutoModel.from_pretrained` for a new model (`dtype`, `attn_implementation`).
        processor: `MetaEmbedProcessor` options (`max_length`, `max_pixels`, instructions...).
        prompts: sentence-transformers prompts written into the checkpoint.
        data, lora, loss: See [`DataConfig`], [`LoraSettings`], [`LossSettings`].
        training: `MultiVectorEncoderTrainingArguments` fields.
        seed: Seeds the meta token initialisation and the trainer.
    """

    model: str = ""
    output_dir: str = ""
    num_query_meta_tokens: int = 16
    num_candidate_meta_tokens: int = 64
    budgets: list[list[int]] | None = None
    embedding_dim: int | None = None
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    processor: dict[str, Any] = field(default_factory=dict)
    prompts: dict[str, str] | None = None
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    training: dict[str, Any] = field(default_factory=dict)
    seed: int = 42

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Builds and validates a config from plain values (what a YAML / JSON file holds).

        Raises:
            ValueError: for unknown keys (listing the known ones), or a missing `model`, `output_dir` or
                `data.train`.
        """
        if not isinstance(values, dict):
            raise ValueError(f"A training config must be a mapping, got {type(values).__name__}.")
        nested = {"data": DataConfig, "lora": LoraSettings, "loss": LossSettings}
        kwargs = _known_fields(cls, values, "the config")
        for key, settings_class in nested.items():
            if key in kwargs:
                section = kwargs[key] if kwargs[key] is not None else {}
                if isinstance(section, (str, list)) and key == "data":
                    section = {"train": section}
                if not isinstance(section, dict):
                    raise ValueError(f"'{key}' must be a mapping, got {section!r}.")
                kwargs[key] = settings_class(**_known_fields(settings_class, section, f"'{key}'"))
        config = cls(**kwargs)
        config.validate()
        return config

    def validate(self) -> None:
        if not self.model:
            raise ValueError(
                "The config needs 'model': a backbone (Hub id or folder) or a MetaEmbed checkpoint."
            )
        if not self.output_dir:
            raise ValueError("The config needs 'output_dir', where the trained checkpoint is written.")
        if self.data.train is None:
            raise ValueError(
                "The config needs 'data.train': training files, a dataset folder or {name: ...}."
            )
        if self.data.positive_column is None and self.data.positive_image_column is None:
            raise ValueError(
                "Set data.positive_column and/or data.positive_image_column: every row needs a positive."
            )
        if self.data.query_column is None and self.data.query_image_column is None:
            raise ValueError("Set data.query_column and/or data.query_image_column: every row needs a query.")
        if self.lora.enabled and (self.lora.r < 1 or self.lora.alpha <= 0 or not 0 <= self.lora.dropout < 1):
            raise ValueError(
                f"LoRA needs r >= 1, alpha > 0 and 0 <= dropout < 1, got r={self.lora.r}, alpha={self.lora.alpha}, "
                f"dropout={self.lora.dropout}."
            )
        if "output_dir" in self.training:
            raise ValueError("Set 'output_dir' at the top level of the config, not under 'training'.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _known_fields(settings_class: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(settings_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"Unknown key(s) {unknown} in {where}; the known keys are {sorted(known)}.")
    return dict(values)


def load_train_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Reads a `.yaml` / `.yml` / `.json` training config; relative data and output paths stay relative to the
    working directory.

    Args:
        path: The config file.
        overrides: Top-level values replacing the file's (e.g. `{"output_dir": ...}` from the command line).

    Example:
        >>> config = load_train_config("configs/minilm.yaml", {"output_dir": "outputs/run-2"})
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No training config at {path}.")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as error:  # pragma: no cover - pyyaml comes with datasets
            raise ImportError(
                "Reading a YAML config needs pyyaml: pip install pyyaml (or use JSON)."
            ) from error
        values = yaml.safe_load(text)
    elif path.suffix.lower() == ".json":
        values = json.loads(text)
    else:
        raise ValueError(f"The training config must be .yaml, .yml or .json, got {path.name}.")
    values = dict(values or {})
    values.update(overrides or {})
    return TrainConfig.from_dict(values)


__all__ = ["DataConfig", "LoraSettings", "LossSettings", "TrainConfig", "load_train_config"]
