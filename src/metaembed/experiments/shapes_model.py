"""The small Qwen2.5-VL MetaEmbed model of the experiments, built from config with random weights.

The backbone is a real ``Qwen2_5_VLModel`` (vision tower with 2x2 patch merging, mRoPE decoder), only narrow and
shallow. Its tokenizer is word-level over the shape generator's vocabulary, so every word of a caption is one token
(a byte-level BPE trained on a few sentences would spell colours letter by letter and waste the tiny model's
capacity on spelling).

Example:
    >>> spec = ModelSpec(hidden_size=64, num_layers=1, vision_depth=1, vision_hidden_size=32)
    >>> model, processor = build_shapes_model(spec, seed=0)
    >>> model.encode_queries(["two shapes: a small red circle left of a large blue star"], processor).shape
    torch.Size([1, 16, 64])
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from typing import Any

import torch

from ..configuration_metaembed import DEFAULT_BUDGETS, MetaEmbedConfig
from ..modeling_metaembed import MetaEmbedModel
from ..processing_metaembed import MetaEmbedProcessor
from ..testing import QWEN_SPECIAL_TOKENS, tiny_backbone_config

logger = logging.getLogger(__name__)

UNKNOWN_TOKEN = "<unk>"
# Words the MetaEmbed processor itself writes: the chat template, the query prefix and the image-only text.
PROCESSOR_TEXTS = ("<|im_start|>user\nQuery: Describe the image.<|im_end|><|endoftext|>",)


@dataclass(frozen=True)
class ModelSpec:
    """Size of the small Qwen2.5-VL backbone and the meta token layout.

    Attributes:
        hidden_size: Width of the language model (and of every embedding vector).
        num_layers: Decoder layers.
        num_heads: Attention heads of the decoder (its head size must be a multiple of 8 for the mRoPE sections).
        num_kv_heads: Key/value heads of the decoder (grouped-query attention, as in Qwen2.5-VL).
        vision_depth: Vision transformer blocks.
        vision_hidden_size: Width of the vision transformer.
        vision_heads: Heads of the vision transformer.
        num_query_meta_tokens: Query meta tokens (the paper's 16).
        num_candidate_meta_tokens: Candidate meta tokens (the paper's 64).
        budgets: The budget groups; the paper's five by default.
    """

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    vision_depth: int = 2
    vision_hidden_size: int = 64
    vision_heads: int = 2
    num_query_meta_tokens: int = 16
    num_candidate_meta_tokens: int = 64
    budgets: tuple[tuple[int, int], ...] = DEFAULT_BUDGETS

    def single_vector(self) -> ModelSpec:
        """The same backbone with one meta token per side and the single budget (1, 1)."""
        return dataclasses.replace(
            self, num_query_meta_tokens=1, num_candidate_meta_tokens=1, budgets=((1, 1),)
        )

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "budgets": [list(b) for b in self.budgets]}


@functools.lru_cache(maxsize=2)
def _word_tokenizer_json(words: tuple[str, ...]) -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(QWEN_SPECIAL_TOKENS)}
    vocab[UNKNOWN_TOKEN] = len(vocab)
    for word in words:
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNKNOWN_TOKEN))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(list(QWEN_SPECIAL_TOKENS))
    return tokenizer.to_str()


def build_word_tokenizer(texts: list[str] | tuple[str, ...] | None = None) -> Any:
    """A word-level fast tokenizer over ``texts`` (default: the shape generator's vocabulary).

    The Qwen special tokens take ids 0-6 in the same order as :func:`metaembed.testing.build_tokenizer`, so the
    ids a tiny Qwen2.5-VL config records (image, vision start/end, pad, eos) hold for this tokenizer too.

    Example:
        >>> tokenizer = build_word_tokenizer()
        >>> tokenizer.tokenize("a small red circle")
        ['a', 'small', 'red', 'circle']
    """
    from tokenizers import pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if texts is None:
        from ..data.compositional import vocabulary_texts

        texts = vocabulary_texts()
    splitter = pre_tokenizers.Whitespace()
    words: list[str] = []
    for text in (*texts, *PROCESSOR_TEXTS):
        for special in QWEN_SPECIAL_TOKENS:
            text = text.replace(special, " ")
        words += [piece for piece, _ in splitter.pre_tokenize_str(text)]
    unique = tuple(sorted(set(words)))
    from tokenizers import Tokenizer

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_word_tokenizer_json(unique)),
        unk_token=UNKNOWN_TOKEN,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
    )
    expected = list(range(len(QWEN_SPECIAL_TOKENS)))
    if tokenizer.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS)) != expected:
        raise RuntimeError("The word tokenizer must give the Qwen special tokens ids 0-6.")
    return tokenizer


def backbone_config(spec: ModelSpec, vocab_size: int) -> Any:
    """A ``Qwen2_5_VLConfig`` of the given size whose special token ids match :func:`build_word_tokenizer`."""
    config = tiny_backbone_config("qwen2_5_vl", hidden_size=spec.hidden_size, num_layers=spec.num_layers)
    text = config.text_config
    head_dim = spec.hidden_size // spec.num_heads
    if spec.hidden_size % spec.num_heads or head_dim % 8 or spec.num_heads % spec.num_kv_heads:
        raise ValueError(
            f"hidden_size={spec.hidden_size} with num_heads={spec.num_heads} and num_kv_heads={spec.num_kv_heads} "
            "needs a head size that is a multiple of 8 and heads divisible by key/value heads."
        )
    text.num_attention_heads = spec.num_heads
    text.num_key_value_heads = spec.num_kv_heads
    text.vocab_size = max(text.vocab_size, vocab_size)
    # mRoPE splits the rotary half-dimension into (temporal, height, width) sections in Qwen's 2:3:3 ratio.
    unit = head_dim // 16
    text.rope_parameters = {**text.rope_parameters, "mrope_section": [2 * unit, 3 * unit, 3 * unit]}
    vision = config.vision_config
    vision.depth = spec.vision_depth
    vision.hidden_size = spec.vision_hidden_size
    vision.intermediate_size = 2 * spec.vision_hidden_size
    vision.num_heads = spec.vision_heads
    vision.out_hidden_size = spec.hidden_size
    # A 112 px image is a 4x4 grid of merged tokens: full attention in every block (windows would not help).
    vision.fullatt_block_indexes = list(range(spec.vision_depth))
    return config


def build_shapes_processor(num_meta_tokens: int) -> MetaEmbedProcessor:
    """A MetaEmbed processor around an offline Qwen2.5-VL processor with the word tokenizer."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    backbone = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2),
        tokenizer=build_word_tokenizer(),
        video_processor=Qwen2VLVideoProcessor(patch_size=14, merge_size=2, temporal_patch_size=2),
        chat_template=None,
    )
    return MetaEmbedProcessor.from_backbone(backbone, num_meta_tokens=num_meta_tokens)


def build_shapes_model(spec: ModelSpec, seed: int) -> tuple[MetaEmbedModel, MetaEmbedProcessor]:
    """A randomly initialised MetaEmbed model of ``spec`` (seeded) and its processor."""
    processor = build_shapes_processor(spec.num_query_meta_tokens + spec.num_candidate_meta_tokens)
    config = MetaEmbedConfig(
        backbone_config=backbone_config(spec, len(processor.tokenizer)),
        num_query_meta_tokens=spec.num_query_meta_tokens,
        num_candidate_meta_tokens=spec.num_candidate_meta_tokens,
        budgets=[list(b) for b in spec.budgets],
    )
    torch.manual_seed(seed)
    model = MetaEmbedModel(config)
    return model, processor


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Parameters of the vision tower, the language model and the meta token table."""
    vision = sum(p.numel() for n, p in model.named_parameters() if ".visual." in f".{n}")
    meta = model.meta_tokens.weight.numel()
    total = sum(p.numel() for p in model.parameters())
    return {"total": total, "vision": vision, "meta_tokens": meta, "language": total - vision - meta}


__all__ = [
    "ModelSpec",
    "backbone_config",
    "build_shapes_model",
    "build_shapes_processor",
    "build_word_tokenizer",
    "count_parameters",
]
