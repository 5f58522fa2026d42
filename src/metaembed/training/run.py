"""`train(config)`: MMR training of a MetaEmbed model with sentence-transformers' `MultiVectorEncoderTrainer`.

The run: build a MetaEmbed model from a backbone (or load a MetaEmbed checkpoint), inject LoRA adapters, wrap the
model as a `MultiVectorEncoder`, train with [`MMRLoss`](metaembed.st_module.MMRLoss), then merge the adapters and
write one checkpoint that loads with `AutoModel` and with `MultiVectorEncoder`.

Why merge rather than ship an adapter: a MetaEmbed checkpoint is more than backbone deltas (the meta token table,
the config with its counts and budgets, the processor, the shipped code), and a fresh MetaEmbed model built from a
backbone has no Hub checkpoint an adapter could point to as its base. A merged checkpoint loads with no peft at
serving time, costs nothing extra per forward, and is the same format whether LoRA was used or not. The cost is
disk: the full weights instead of a few MB of adapters.

Multi-GPU: launch with `accelerate launch -m metaembed.cli train --config cfg.yaml` (or `torchrun -m
metaembed.cli ...`); the trainer picks the processes up, and the loss gathers the positives of every process.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig

logger = logging.getLogger(__name__)


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _dtype_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Turns `dtype: bfloat16` (a YAML string) into `torch.bfloat16`; "auto" stays a string."""
    kwargs = dict(kwargs)
    for key in ("dtype", "torch_dtype"):
        value = kwargs.get(key)
        if isinstance(value, str) and value != "auto":
            if not isinstance(getattr(torch, value, None), torch.dtype):
                raise ValueError(
                    f"backbone_kwargs.{key} must name a torch dtype (e.g. bfloat16), got {value!r}."
                )
            kwargs[key] = getattr(torch, value)
    return kwargs


def is_metaembed_checkpoint(path: str) -> bool:
    """Whether `path` (a folder or Hub id) holds a MetaEmbed `config.json`, read without running any code."""
    from transformers import PretrainedConfig

    try:
        values, _ = PretrainedConfig.get_config_dict(path)
    except OSError:
        return False
    return values.get("model_type") == "metaembed"


def load_model_and_processor(config: TrainConfig) -> tuple[Any, Any]:
    """The MetaEmbed model and processor a run starts from: a checkpoint to continue, or a new model around a
    backbone (meta tokens initialised from the backbone's embedding statistics)."""
    from ..modeling_metaembed import MetaEmbedModel
    from ..processing_metaembed import MetaEmbedProcessor

    if is_metaembed_checkpoint(config.model):
        logger.info("Continuing training of the MetaEmbed checkpoint %s.", config.model)
        model = MetaEmbedModel.from_pretrained(config.model, **_dtype_kwargs(config.backbone_kwargs))
        processor = MetaEmbedProcessor.from_pretrained(config.model, **config.processor)
        return model, processor
    logger.info("Building a MetaEmbed model around the backbone %s.", config.model)
    model = MetaEmbedModel.from_backbone(
        config.model,
        backbone_kwargs=_dtype_kwargs(config.backbone_kwargs),
        seed=config.seed,
        num_query_meta_tokens=config.num_query_meta_tokens,
        num_candidate_meta_tokens=config.num_candidate_meta_tokens,
        budgets=config.budgets,
        embedding_dim=config.embedding_dim,
    )
    processor = MetaEmbedProcessor.from_backbone(
        config.model, **{"num_meta_tokens": model.config.num_meta_tokens, **config.processor}
    )
    return model, processor


def training_arguments(config: TrainConfig, gather: bool, lora: bool = True):
    """`MultiVectorEncoderTrainingArguments` from the config's `training` section, with this project's defaults:
    the paper's learning rate and warm-up, no duplicate texts in a batch (they would be false negatives), no
    external loggers, equal batches on every process when positives are gathered, and (with LoRA, where every
    trainable parameter takes part in every step) no search for unused parameters under DDP."""
    from sentence_transformers.base.training_args import BatchSamplers
    from sentence_transformers.multi_vector_encoder.training_args import MultiVectorEncoderTrainingArguments

    values = {
        "learning_rate": 1e-4,
        "warmup_steps": 500,
        "per_device_train_batch_size": 48,
        "batch_sampler": BatchSamplers.NO_DUPLICATES,
        "report_to": "none",
        "seed": config.seed,
        "dataloader_drop_last": gather,
        **({"ddp_find_unused_parameters": False} if lora else {}),
        **config.training,
    }
    # transformers 5 renamed gradient checkpointing; both spellings are accepted in the config.
    renamed = {
        "gradient_checkpointing": "activation_checkpointing",
        "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs",
    }
    for old, new in renamed.items():
        if old in values:
            values.setdefault(new, values.pop(old))
    if not torch.cuda.is_available():
        values.setdefault("use_cpu", True)  # transformers refuses bf16 without an accelerator unless told
    if values.get("activation_checkpointing"):
        values.setdefault("activation_checkpointing_kwargs", {"use_reentrant": False})
    return MultiVectorEncoderTrainingArguments(output_dir=config.output_dir, **values)


def train(
    config: TrainConfig | dict[str, Any],
    *,
    train_dataset: Any = None,
    eval_dataset: Any = None,
    callbacks: list[Any] | None = None,
) -> Path:
    """Trains a MetaEmbed model with MMR and writes the merged checkpoint to `config.output_dir`.

    Args:
        config: A [`TrainConfig`] or the dict a config file holds.
        train_dataset: A `datasets.Dataset` to use instead of `config.data.train` (same columns).
        eval_dataset: Likewise for `config.data.eval`.
        callbacks: Extra `transformers.TrainerCallback`s.

    Returns:
        The checkpoint directory (`config.output_dir`).

    Example:
        >>> from metaembed.training import train
        >>> train({"model": "path/to/all-MiniLM-L6-v2", "output_dir": "out", "data": {"train": "pairs.jsonl"},
        ...        "training": {"max_steps": 200, "per_device_train_batch_size": 32}})
    """
    from sentence_transformers import MultiVectorEncoderTrainer

    from ..checkpoint import save_checkpoint
    from ..st_module import MMRLoss, build_multi_vector_encoder
    from .data import load_training_data, prepare_dataset
    from .lora import apply_lora, merge_lora

    if not isinstance(config, TrainConfig):
        config = TrainConfig.from_dict(config)
    torch.manual_seed(config.seed)
    if train_dataset is not None:
        train_dataset = prepare_dataset(train_dataset, config.data, "the train dataset")
    else:
        train_dataset = load_training_data(config.data, "train")
    if eval_dataset is not None:
        eval_dataset = prepare_dataset(eval_dataset, config.data, "the eval dataset")
    else:
        eval_dataset = load_training_data(config.data, "eval")

    model, processor = load_model_and_processor(config)
    if config.data.has_images and not model.config.is_multimodal:
        raise ValueError(
            f"The data has image columns but the backbone ({model.config.backbone_config.model_type}) is text only; "
            "train a vision-language backbone, or drop the image columns."
        )
    if config.lora.enabled:
        apply_lora(
            model,
            r=config.lora.r,
            alpha=config.lora.alpha,
            dropout=config.lora.dropout,
            target_modules=config.lora.target_modules,
        )
    model.train()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = build_multi_vector_encoder(model.to(device), processor, prompts=config.prompts, device=device)

    gather = config.loss.gather_across_devices
    gather = _world_size() > 1 if gather == "auto" else bool(gather)
    loss = MMRLoss(
        encoder,
        budgets=config.loss.budgets,
        weights=config.loss.weights,
        temperature=config.loss.temperature,
        mmr=config.loss.mmr,
        gather_across_devices=gather,
    )
    logger.info(
        "MMR loss over budget groups %s (weights %s, temperature %g), gather_across_devices=%s over %d process(es).",
        loss.budgets,
        loss.weights,
        loss.temperature,
        gather,
        _world_size(),
    )
    args = training_arguments(config, gather, lora=config.lora.enabled)
    trainer = MultiVectorEncoderTrainer(
        model=encoder,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        loss=loss,
        callbacks=callbacks,
    )
    trainer.train()

    output = Path(config.output_dir)
    if trainer.is_world_process_zero():
        if config.lora.enabled:
            merged = merge_lora(model)
            logger.info("Merged the LoRA adapters of %d layers into the backbone.", merged)
        model.eval()
        save_checkpoint(model, processor, output, prompts=config.prompts)
        (output / "metaembed_training_config.json").write_text(
            json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str) + "\n"
        )
    trainer.accelerator.wait_for_everyone()
    return output


__all__ = ["is_metaembed_checkpoint", "load_model_and_processor", "train", "training_arguments"]
