"""Training MetaEmbed models with Matryoshka Multi-Vector Retrieval (MMR), LoRA and sentence-transformers.

Run it from a config file with `metaembed train --config cfg.yaml` (or `accelerate launch -m metaembed.cli train
--config cfg.yaml` for several GPUs or nodes), or from Python:

Example:
    >>> from metaembed.training import load_train_config, train
    >>> checkpoint = train(load_train_config("cfg.yaml"))
    >>> # AutoModel.from_pretrained(checkpoint, trust_remote_code=True)
    >>> # MultiVectorEncoder(str(checkpoint), trust_remote_code=True)
"""

from .config import DataConfig, LoraSettings, LossSettings, TrainConfig, load_train_config
from .data import load_training_data, prepare_dataset
from .lora import apply_lora, lora_target_modules, merge_lora
from .run import train

__all__ = [
    "DataConfig",
    "LoraSettings",
    "LossSettings",
    "TrainConfig",
    "apply_lora",
    "load_train_config",
    "load_training_data",
    "lora_target_modules",
    "merge_lora",
    "prepare_dataset",
    "train",
]
