# Shipped inside every MetaEmbed checkpoint: imports only torch, transformers and pillow (a transformers extra).
"""Processor of MetaEmbed models: instructions, the role prefix, the chat template, images and left padding.

It wraps the backbone's own processor (Qwen-VL) or tokenizer (text backbones) and never mutates it: every option
travels as a call argument. The model appends the Meta Tokens itself, so truncation never cuts them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import AutoProcessor, AutoTokenizer, BatchFeature

PROCESSOR_CONFIG_NAME = "processor_config.json"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tiff", ".tif", ".webp")
QWEN_VL_TEMPLATE = "<|im_start|>user\n{image}{text}<|im_end|><|endoftext|>"
QWEN_VL_IMAGE_TOKENS = "<|vision_start|><|image_pad|><|vision_end|>"
# Options saved in processor_config.json under "metaembed" and restored by `from_pretrained`.
OPTION_NAMES = (
    "query_prefix",
    "candidate_prefix",
    "query_instruction",
    "candidate_instruction",
    "image_only_text",
    "template",
    "image_tokens",
    "max_pixels",
    "min_image_edge",
    "max_length",
    "pad_to_multiple_of",
)


def is_image_path(value: Any) -> bool:
    """A `pathlib.Path`, or a string naming an existing file with an image extension (sentence-transformers' rule)."""
    if isinstance(value, Path):
        return True
    return isinstance(value, str) and value.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(value)


class MetaEmbedProcessor:
    r"""Formats queries and candidates for a [`MetaEmbedModel`].

    Every item, a string, a PIL image, an image path or a `{"text": ..., "image": ...}` dict, becomes
    `template.format(image=<image tokens or "">, text=<instruction><prefix><text>)`:

    - queries get `query_prefix` (`"Query: "`) after the task instruction, candidates `candidate_prefix` (`""`);
    - an item with an image and no text gets `image_only_text` (`"Describe the image."`);
    - images larger than `max_pixels` are downscaled (JPEGs are decoded at reduced size, so a huge file never
      occupies full-resolution memory); images with an edge under `min_image_edge` are upscaled;
    - batches are left-padded, so the meta tokens the model appends sit at the same positions in every row.

    Args:
        backbone_processor: The backbone's processor (Qwen-VL) or tokenizer (text-only backbones).
        query_prefix: Prefix after the instruction on queries.
        candidate_prefix: Prefix after the instruction on candidates.
        query_instruction: Default task instruction for queries (e.g. MMEB's), `None` for none.
        candidate_instruction: Default task instruction for candidates.
        image_only_text: Text used when an item has an image and no text.
        template: Format string with `{image}` and `{text}` fields. Defaults to the Qwen chat format of the official
            MetaEmbed code for vision-language backbones and `"{text}"` (plain tokenisation) for text backbones.
        image_tokens: What `{image}` becomes for an item with an image.
        max_pixels: Upper bound on the pixels of an image (default 1024 * 28 * 28, 1024 visual tokens).
        min_image_edge: Images with a shorter edge are upscaled to it (Qwen-VL needs 28).
        max_length: Maximum input tokens, meta tokens excluded. Defaults, for text backbones, to the tokenizer's
            `model_max_length` minus `num_meta_tokens`; `None` for vision-language backbones.
        pad_to_multiple_of: Pad sequence lengths to a multiple of this (the official code uses 32).
        num_meta_tokens: Meta tokens the model appends, used to derive the default `max_length`.

    Example:

    ```python
    >>> from transformers import AutoProcessor
    >>> processor = AutoProcessor.from_pretrained("path/to/metaembed-checkpoint", trust_remote_code=True)
    >>> batch = processor(["what is MaxSim?", {"text": "a chart", "image": "chart.png"}], role="query")
    >>> sorted(batch.keys())
    ['attention_mask', 'image_grid_thw', 'input_ids', 'mm_token_type_ids', 'pixel_values']
    ```
    """

    def __init__(
        self,
        backbone_processor: Any,
        *,
        query_prefix: str = "Query: ",
        candidate_prefix: str = "",
        query_instruction: str | None = None,
        candidate_instruction: str | None = None,
        image_only_text: str = "Describe the image.",
        template: str | None = None,
        image_tokens: str = QWEN_VL_IMAGE_TOKENS,
        max_pixels: int = 1024 * 28 * 28,
        min_image_edge: int = 28,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        num_meta_tokens: int = 80,
    ):
        self.backbone_processor = backbone_processor
        self.is_multimodal = getattr(backbone_processor, "image_processor", None) is not None
        self.tokenizer = backbone_processor.tokenizer if self.is_multimodal else backbone_processor
        if template is None:
            template = QWEN_VL_TEMPLATE if self.is_multimodal else "{text}"
        if "{text}" not in template:
            raise ValueError(f"template must contain a '{{text}}' field, got {template!r}.")
        if max_pixels < min_image_edge**2:
            raise ValueError(
                f"max_pixels={max_pixels} is smaller than one min_image_edge**2={min_image_edge**2}."
            )
        if max_length is None and not self.is_multimodal:
            model_max = getattr(self.tokenizer, "model_max_length", None)
            if model_max is not None and model_max < 1_000_000:
                max_length = model_max - num_meta_tokens
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must leave room for the input: got {max_length}.")
        self.query_prefix = query_prefix
        self.candidate_prefix = candidate_prefix
        self.query_instruction = query_instruction
        self.candidate_instruction = candidate_instruction
        self.image_only_text = image_only_text
        self.template = template
        self.image_tokens = image_tokens
        self.max_pixels = max_pixels
        self.min_image_edge = min_image_edge
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.num_meta_tokens = num_meta_tokens

    @classmethod
    def from_backbone(cls, processor_or_tokenizer: Any, **options: Any) -> MetaEmbedProcessor:
        """Builds a processor around a backbone's processor or tokenizer, or a path / Hub id to load one from.

        Example:
            >>> processor = MetaEmbedProcessor.from_backbone("Qwen/Qwen2.5-VL-3B-Instruct", max_pixels=512 * 28 * 28)
        """
        if isinstance(processor_or_tokenizer, (str, os.PathLike)):
            processor_or_tokenizer = _load_backbone_processor(str(processor_or_tokenizer), None)
        return cls(processor_or_tokenizer, **options)

    # ------------------------------------------------------------------------------------------------ items
    def _load_image(self, image: Any, index: int) -> Any:
        from PIL import Image, ImageOps

        source = "in-memory image"
        if isinstance(image, (str, os.PathLike)):
            path = os.fspath(image)
            source = repr(path)
            try:
                previous_limit = Image.MAX_IMAGE_PIXELS
                Image.MAX_IMAGE_PIXELS = None  # decoded at reduced size below, never at full resolution
                try:
                    with Image.open(path) as opened:
                        # JPEGs decode directly at a reduced scale: a huge file never fills memory.
                        opened.draft("RGB", self._target_size(opened.size))
                        opened.load()
                        loaded = opened
                finally:
                    Image.MAX_IMAGE_PIXELS = previous_limit
            except (OSError, ValueError, SyntaxError) as error:
                raise ValueError(f"Item {index}: cannot read image file {path!r}: {error}") from error
        elif isinstance(image, Image.Image):
            loaded = image
        else:
            raise ValueError(
                f"Item {index}: expected a PIL image or an image path for 'image', got {type(image).__name__}."
            )
        try:
            loaded = ImageOps.exif_transpose(loaded)
            if loaded.mode not in ("RGB", "L"):
                loaded = loaded.convert("RGB")
            width, height = self._target_size(loaded.size)
            if (width, height) != loaded.size:
                # Downscale before any full-resolution copy: memory stays bounded by the output size.
                loaded = loaded.resize((width, height), Image.Resampling.BICUBIC, reducing_gap=3.0)
            return loaded.convert("RGB")
        except (OSError, ValueError) as error:
            raise ValueError(f"Item {index}: cannot decode {source}: {error}") from error

    def _target_size(self, size: tuple[int, int]) -> tuple[int, int]:
        width, height = size
        if width < 1 or height < 1:
            raise ValueError(f"image has an empty size {size}")
        scale = min(1.0, (self.max_pixels / (width * height)) ** 0.5)
        width, height = max(1, int(width * scale)), max(1, int(height * scale))
        if min(width, height) < self.min_image_edge:
            up = self.min_image_edge / min(width, height)
            width, height = round(width * up), round(height * up)
            while width * height > self.max_pixels and max(width, height) > self.min_image_edge:
                # Extreme aspect ratios: keep the short edge at the minimum, shrink the long edge.
                if width >= height:
                    width -= 1
                else:
                    height -= 1
        return width, height

    def _split_item(self, item: Any, index: int) -> tuple[str | None, Any]:
        from PIL import Image

        if isinstance(item, Mapping):
            unknown = set(item) - {"text", "image"}
            if unknown:
                raise ValueError(f"Item {index}: unknown keys {sorted(unknown)}; use 'text' and/or 'image'.")
            text, image = item.get("text"), item.get("image")
            if text is not None and not isinstance(text, str):
                raise ValueError(f"Item {index}: 'text' must be a string, got {type(text).__name__}.")
            return text, image
        if isinstance(item, Image.Image) or is_image_path(item):
            return None, item
        if isinstance(item, str):
            return item, None
        raise ValueError(
            f"Item {index}: expected a string, a PIL image, an image path or a {{'text', 'image'}} dict, "
            f"got {type(item).__name__}."
        )

    def format_text(
        self, text: str | None, has_image: bool, role: str, instruction: str | None = None
    ) -> str:
        """The full input string of one item, before tokenisation."""
        if role not in ("query", "candidate"):
            raise ValueError(f"role must be 'query' or 'candidate', got {role!r}.")
        if instruction is None:
            instruction = self.query_instruction if role == "query" else self.candidate_instruction
        prefix = self.query_prefix if role == "query" else self.candidate_prefix
        if not text and has_image:
            text = self.image_only_text
        body = (f"{instruction}\n" if instruction else "") + prefix + (text or "")
        return self.template.format(image=self.image_tokens if has_image else "", text=body)

    # ------------------------------------------------------------------------------------------------ call
    def __call__(
        self,
        items: Sequence[Any],
        role: str = "query",
        instruction: str | None = None,
        start_index: int = 0,
        return_tensors: str = "pt",
    ) -> BatchFeature:
        """Formats, tokenises and left-pads a batch.

        Args:
            items: Strings, PIL images, image paths, or `{"text": ..., "image": ...}` dicts.
            role: `"query"` or `"candidate"`.
            instruction: Task instruction for this batch, overriding the role's default.
            start_index: Index of `items[0]` in the caller's full list, so errors name the right item.
            return_tensors: Tensor type, `"pt"` by default.

        Returns:
            A `BatchFeature` with `input_ids` and `attention_mask`, plus `pixel_values`, `image_grid_thw` and
            `mm_token_type_ids` when a vision-language batch holds images.
        """
        if isinstance(items, (str, Mapping)) or not isinstance(items, Sequence):
            items = [items]
        if len(items) == 0:
            raise ValueError(f"Cannot process an empty batch of {role} items; pass at least one item.")
        texts, images = [], []
        for position, item in enumerate(items):
            index = start_index + position
            text, image = self._split_item(item, index)
            if image is not None:
                if not self.is_multimodal:
                    raise ValueError(
                        f"Item {index} holds an image, but this MetaEmbed processor wraps a text-only backbone "
                        f"({type(self.tokenizer).__name__}); pass text, or use a vision-language backbone."
                    )
                images.append(self._load_image(image, index))
            texts.append(self.format_text(text, image is not None, role, instruction))

        tokenizer_kwargs: dict[str, Any] = {
            "padding": True,
            "padding_side": "left",
            "return_tensors": return_tensors,
            "pad_to_multiple_of": self.pad_to_multiple_of,
        }
        if self.max_length is not None:
            tokenizer_kwargs.update(truncation=True, max_length=self.max_length)
        if self.is_multimodal:
            if images:
                image_size = dict(getattr(self.backbone_processor.image_processor, "size", None) or {})
                image_size["longest_edge"] = self.max_pixels
                batch = self.backbone_processor(
                    text=texts, images=images, images_kwargs={"size": image_size}, **tokenizer_kwargs
                )
            else:
                batch = self.backbone_processor(text=texts, **tokenizer_kwargs)
        else:
            batch = self.tokenizer(texts, return_token_type_ids=False, **tokenizer_kwargs)
        keep = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")
        data = {key: batch[key] for key in keep if key in batch and batch[key] is not None}
        if not images:
            data.pop("mm_token_type_ids", None)
        return BatchFeature(data=data, tensor_type=None)

    # ------------------------------------------------------------------------------------------------ saving
    _auto_class: str | None = "AutoProcessor"

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoProcessor") -> None:
        """Part of the transformers remote-code protocol: records the Auto class this processor loads with."""
        if auto_class != "AutoProcessor":
            raise ValueError(f"MetaEmbedProcessor only registers with AutoProcessor, got {auto_class!r}.")
        cls._auto_class = auto_class

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in OPTION_NAMES} | {
            "num_meta_tokens": self.num_meta_tokens
        }

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> list[str]:
        """Saves the backbone processor's files and `processor_config.json` (this processor's options and the
        `auto_map` entry that lets `AutoProcessor.from_pretrained(..., trust_remote_code=True)` find it), and copies
        this file next to them."""
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        self.backbone_processor.save_pretrained(save_directory)
        config_path = save_directory / PROCESSOR_CONFIG_NAME
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        config.update(
            {
                "processor_class": type(self).__name__,
                "auto_map": {"AutoProcessor": f"processing_metaembed.{type(self).__name__}"},
                "backbone_processor_class": type(self.backbone_processor).__name__,
                "metaembed": self.to_dict(),
            }
        )
        _atomic_write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
        source = Path(__file__)
        target = save_directory / "processing_metaembed.py"
        if source.resolve() != target.resolve():
            shutil.copyfile(source, target)
        return [str(config_path)]

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> MetaEmbedProcessor:
        """Loads a processor saved by [`save_pretrained`], from a directory or a Hub repo id.

        Keyword arguments that name processor options (`max_pixels`, `query_instruction`...) override the saved
        ones; the others (`revision`, `cache_dir`, `trust_remote_code`...) go to the Hub download.
        """
        from transformers.utils import cached_file

        overrides = {
            key: kwargs.pop(key) for key in list(kwargs) if key in (*OPTION_NAMES, "num_meta_tokens")
        }
        hub_kwargs = {
            key: kwargs[key]
            for key in ("revision", "cache_dir", "token", "local_files_only", "force_download", "subfolder")
            if key in kwargs
        }
        # The backbone's AutoTokenizer reads config.json, which names this checkpoint's remote code.
        backbone_kwargs = {**hub_kwargs, "trust_remote_code": kwargs.get("trust_remote_code", True)}
        config_file = cached_file(
            str(pretrained_model_name_or_path),
            PROCESSOR_CONFIG_NAME,
            _raise_exceptions_for_missing_entries=False,
            **hub_kwargs,
        )
        config = json.loads(Path(config_file).read_text()) if config_file else {}
        if config and "metaembed" not in config:
            raise ValueError(
                f"{pretrained_model_name_or_path} has a {PROCESSOR_CONFIG_NAME} without MetaEmbed options; it is "
                "not a MetaEmbed checkpoint. Build one with MetaEmbedProcessor.from_backbone(...)."
            )
        backbone_processor = _load_backbone_processor(
            str(pretrained_model_name_or_path), config.get("backbone_processor_class"), **backbone_kwargs
        )
        options = dict(config.get("metaembed", {}))
        options.update(overrides)
        return cls(backbone_processor, **options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backbone_processor={type(self.backbone_processor).__name__}, {self.to_dict()})"


def _load_backbone_processor(path: str, class_name: str | None, **hub_kwargs: Any) -> Any:
    """Loads the wrapped processor (a transformers processor class) or, for text backbones, the tokenizer."""
    import transformers

    if class_name and class_name.endswith("Processor") and hasattr(transformers, class_name):
        return getattr(transformers, class_name).from_pretrained(path, **hub_kwargs)
    if class_name is None:
        try:
            processor = AutoProcessor.from_pretrained(path, **hub_kwargs)
            if getattr(processor, "image_processor", None) is not None:
                return processor
        except (OSError, ValueError, TypeError):
            pass
    return AutoTokenizer.from_pretrained(path, **hub_kwargs)


def _atomic_write_text(path: Path, text: str) -> None:
    """Writes `text` to `path` through a temporary file and a rename, so a crash never leaves half a file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


__all__ = ["MetaEmbedProcessor"]
