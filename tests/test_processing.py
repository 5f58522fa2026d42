"""MetaEmbedProcessor: formatting per role, input forms, left padding, images, truncation and saving."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from metaembed import MetaEmbedProcessor
from metaembed.testing import build_backbone_processor


@pytest.fixture(scope="module")
def vlm_processor():
    return MetaEmbedProcessor.from_backbone(build_backbone_processor("qwen2_5_vl"), num_meta_tokens=12)


@pytest.fixture(scope="module")
def text_processor():
    return MetaEmbedProcessor.from_backbone(build_backbone_processor("bert"), num_meta_tokens=12)


def test_vlm_formats_follow_the_official_template(vlm_processor):
    fmt = vlm_processor.format_text
    assert fmt("hello", False, "query") == "<|im_start|>user\nQuery: hello<|im_end|><|endoftext|>"
    assert fmt("hello", False, "candidate") == "<|im_start|>user\nhello<|im_end|><|endoftext|>"
    assert fmt(None, True, "query") == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Query: Describe the image.<|im_end|><|endoftext|>"
    )
    assert fmt("what is it?", True, "candidate", instruction="Represent the given image.") == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Represent the given image.\nwhat is it?"
        "<|im_end|><|endoftext|>"
    )


def test_instruction_comes_before_the_query_prefix(text_processor):
    processor = MetaEmbedProcessor(text_processor.tokenizer, query_instruction="Find the docstring.")
    assert processor.format_text("sort a list", False, "query") == "Find the docstring.\nQuery: sort a list"
    assert processor.format_text("sort a list", False, "candidate") == "sort a list"
    assert processor.format_text("x", False, "query", instruction="Other.") == "Other.\nQuery: x"


def test_every_input_form(vlm_processor, rgb_image, tmp_path):
    path = tmp_path / "square.png"
    rgb_image(40, 40).save(path)
    batch = vlm_processor(
        [
            "plain text",
            rgb_image(),
            str(path),
            path,
            {"text": "with text", "image": str(path)},
            {"text": "only text"},
        ],
        role="candidate",
    )
    assert batch["input_ids"].shape[0] == 6
    assert batch["image_grid_thw"].shape == (4, 3)
    image_token = vlm_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    rows_with_images = (batch["input_ids"] == image_token).any(dim=1).tolist()
    assert rows_with_images == [False, True, True, True, True, False]
    # A string that merely ends in .png but names no file is text.
    assert "pixel_values" not in vlm_processor(["no-such-file.png"], role="query")


def test_batches_are_left_padded(vlm_processor, text_processor):
    for processor in (vlm_processor, text_processor):
        batch = processor(["short", "a much longer input with many more tokens in it"], role="query")
        mask = batch["attention_mask"]
        assert mask[0, 0] == 0 and mask[0, -1] == 1 and mask[1].all()


def test_text_backbone_truncates_input_but_leaves_room_for_meta_tokens(text_processor):
    assert text_processor.max_length == 512 - 12
    batch = text_processor(["word " * 2000], role="candidate")
    assert batch["input_ids"].shape[1] == 500


def test_large_images_are_resized_within_max_pixels(rgb_image):
    processor = MetaEmbedProcessor.from_backbone(
        build_backbone_processor("qwen2_5_vl"), max_pixels=64 * 28 * 28
    )
    batch = processor([rgb_image(3000, 1000)], role="candidate")
    patches = int(batch["image_grid_thw"].prod())
    assert patches * 14 * 14 <= 64 * 28 * 28
    # Tiny images are upscaled to the 28-pixel minimum edge instead of failing.
    assert processor([rgb_image(5, 300)], role="candidate")["image_grid_thw"].shape == (1, 3)


def test_a_20000_pixel_image_file_keeps_memory_bounded(tmp_path):
    """A 20000x20000 JPEG (1.2 GB decoded as RGB) is decoded at reduced scale and resized within max_pixels."""
    from PIL import Image

    path = tmp_path / "huge.jpg"
    Image.new("L", (20000, 20000), 128).save(path, quality=50)
    script = textwrap.dedent(
        f"""
        import resource, torch
        from metaembed import MetaEmbedProcessor
        from metaembed.testing import build_backbone_processor
        processor = MetaEmbedProcessor.from_backbone(build_backbone_processor("qwen2_5_vl"))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        batch = processor([{str(path)!r}], role="candidate")
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(int(batch["image_grid_thw"].prod()), (after - before) // 1024)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    patches, grown_mib = map(int, result.stdout.split()[-2:])
    assert patches * 14 * 14 <= 1024 * 28 * 28
    assert grown_mib < 300, f"processing the huge image grew memory by {grown_mib} MiB"


def test_unreadable_image_names_the_item_and_path(vlm_processor, tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    with pytest.raises(ValueError, match=rf"Item 3: cannot read image file '{corrupt}'"):
        vlm_processor(["a", "b", "c", {"image": str(corrupt)}], role="candidate")
    with pytest.raises(ValueError, match=r"Item 13: cannot read image file"):
        vlm_processor([str(corrupt)], role="candidate", start_index=13)


def test_image_on_a_text_backbone_is_a_clear_error(text_processor, rgb_image):
    with pytest.raises(
        ValueError, match=r"Item 1 holds an image, but this MetaEmbed processor wraps a text-only"
    ):
        text_processor(["text", rgb_image()], role="query")


def test_bad_items(text_processor):
    with pytest.raises(ValueError, match=r"Item 0: unknown keys \['caption'\]"):
        text_processor([{"caption": "x"}])
    with pytest.raises(ValueError, match=r"Item 1: expected a string"):
        text_processor(["ok", 42])


def test_empty_text_keeps_the_instruction(text_processor):
    batch = text_processor([""], role="query", instruction="Find it.")
    decoded = text_processor.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert "Find it." in decoded.replace(" ", " ") and "Query:" in decoded


@pytest.mark.parametrize("family", ["qwen2_5_vl", "bert"])
def test_save_and_load_round_trip(family, tmp_path, rgb_image):
    from transformers import AutoProcessor

    processor = MetaEmbedProcessor.from_backbone(
        build_backbone_processor(family),
        query_instruction="Retrieve.",
        max_pixels=256 * 28 * 28,
        num_meta_tokens=12,
    )
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["auto_map"] == {"AutoProcessor": "processing_metaembed.MetaEmbedProcessor"}
    assert (tmp_path / "processing_metaembed.py").exists()
    items = (
        ["hello there", {"text": "a chart", "image": rgb_image()}] if family.endswith("vl") else ["hi", "x y"]
    )
    reference = processor(items, role="query")
    for loaded in (
        MetaEmbedProcessor.from_pretrained(tmp_path),
        AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True),
    ):
        assert loaded.to_dict() == processor.to_dict()
        batch = loaded(items, role="query")
        assert batch.keys() == reference.keys()
        for key in batch:
            torch.testing.assert_close(batch[key], reference[key])
    overridden = MetaEmbedProcessor.from_pretrained(tmp_path, max_pixels=64 * 28 * 28)
    assert overridden.max_pixels == 64 * 28 * 28


def test_saving_never_leaves_partial_config(tmp_path, monkeypatch, text_processor):
    text_processor.save_pretrained(tmp_path)
    before = (tmp_path / "processor_config.json").read_text()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        MetaEmbedProcessor(text_processor.tokenizer, query_instruction="changed").save_pretrained(tmp_path)
    assert (tmp_path / "processor_config.json").read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
