"""LoRA on a MetaEmbed model's backbone with peft, and folding it back into plain weights.

The adapters are injected in place (no `PeftModel` wrapper), so the model keeps its class, its `forward` and its
save format; the meta token table (and the projection, if any) is trained fully, as in the paper. At the end the
adapters are merged and removed, and the checkpoint is a plain MetaEmbed model: see `metaembed.training.train`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import nn

logger = logging.getLogger(__name__)

# The paper's q/k/v/o/gate/up/down, in each architecture's own names. BERT has no gate: its "up" is
# intermediate.dense and its "down" is output.dense (attention.output.dense is the "o").
DECODER_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
BERT_TARGETS = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")
MODERNBERT_TARGETS = ("attn.Wqkv", "attn.Wo", "mlp.Wi", "mlp.Wo")
TARGETS_BY_MODEL_TYPE = {
    "bert": BERT_TARGETS,
    "roberta": BERT_TARGETS,
    "xlm-roberta": BERT_TARGETS,
    "electra": BERT_TARGETS,
    "modernbert": MODERNBERT_TARGETS,
}
VISION_PARTS = frozenset({"visual", "vision_tower", "vision_model", "vision_encoder"})
FULLY_TRAINED = ("meta_tokens", "projection")


def lora_target_modules(model: nn.Module, targets: str | Sequence[str] = "auto") -> list[str]:
    """Full names of the linear layers that get LoRA adapters.

    Args:
        model: A `MetaEmbedModel`.
        targets: "auto" for the paper's projections in the backbone's naming, or name suffixes to match.

    Returns:
        Sorted module names inside `model`, never inside a vision tower.

    Raises:
        ValueError: if nothing matches.

    Example:
        >>> lora_target_modules(model)[:2]
        ['backbone.encoder.layer.0.attention.output.dense', 'backbone.encoder.layer.0.attention.self.key']
    """
    model_type = model.config.backbone_config.model_type
    suffixes = TARGETS_BY_MODEL_TYPE.get(model_type, DECODER_TARGETS) if targets == "auto" else tuple(targets)
    names = sorted(
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and name.startswith("backbone.")
        and not VISION_PARTS.intersection(name.split("."))
        and any(name == suffix or name.endswith(f".{suffix}") for suffix in suffixes)
    )
    if not names:
        raise ValueError(
            f"No linear layer of the {model_type} backbone matches the LoRA targets {list(suffixes)}; set "
            "lora.target_modules to name suffixes of its attention and MLP projections."
        )
    return names


def apply_lora(
    model: nn.Module,
    *,
    r: int = 32,
    alpha: int = 32,
    dropout: float = 0.1,
    target_modules: str | Sequence[str] = "auto",
) -> list[str]:
    """Injects LoRA adapters into the backbone in place and leaves trainable only them and the meta token table.

    Returns:
        The adapted module names.

    Example:
        >>> apply_lora(model, r=32, alpha=32, dropout=0.1)
    """
    from peft import LoraConfig, inject_adapter_in_model

    names = lora_target_modules(model, target_modules)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=names, bias="none")
    inject_adapter_in_model(config, model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_("lora_" in name or name.split(".")[0] in FULLY_TRAINED)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info(
        "LoRA r=%d alpha=%d dropout=%.2f on %d layers; trainable parameters %d of %d (%.2f%%).",
        r,
        alpha,
        dropout,
        len(names),
        trainable,
        total,
        100 * trainable / total,
    )
    return names


def merge_lora(model: nn.Module) -> int:
    """Folds every LoRA adapter into its base layer and removes it; returns how many layers were merged."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for name, module in list(model.named_modules()):
        if not isinstance(module, LoraLayer):
            continue
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.get_base_layer())
        merged += 1
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return merged


__all__ = ["apply_lora", "lora_target_modules", "merge_lora"]
