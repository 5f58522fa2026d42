"""MetaEmbedConfig: defaults, validation, nested backbone configs and serialisation."""

from __future__ import annotations

import pytest

from metaembed import MetaEmbedConfig
from metaembed.testing import FAMILIES, tiny_backbone_config


@pytest.mark.parametrize("family", FAMILIES)
def test_every_backbone_family_round_trips(family, tmp_path):
    config = MetaEmbedConfig(backbone_config=tiny_backbone_config(family))
    config.save_pretrained(tmp_path)
    loaded = MetaEmbedConfig.from_pretrained(tmp_path)
    assert loaded.backbone_config.model_type == family
    assert loaded.hidden_size == 64
    assert loaded.budgets == [[1, 1], [2, 4], [4, 8], [8, 16], [16, 64]]
    assert loaded.is_causal is (family not in ("bert", "modernbert"))
    assert loaded.is_multimodal is family.endswith("_vl")


def test_backbone_config_from_dict():
    config = MetaEmbedConfig(
        backbone_config={"model_type": "bert", "hidden_size": 32, "num_attention_heads": 4}
    )
    assert type(config.backbone_config).__name__ == "BertConfig"
    assert config.output_dim == 32
    assert MetaEmbedConfig(backbone_config={"model_type": "bert"}, embedding_dim=16).output_dim == 16


def test_default_budgets_clip_to_small_counts():
    config = MetaEmbedConfig(num_query_meta_tokens=4, num_candidate_meta_tokens=8)
    assert config.budgets == [[1, 1], [2, 4], [4, 8]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_query_meta_tokens": 0}, "num_query_meta_tokens must be an integer >= 1"),
        ({"num_candidate_meta_tokens": -3}, "num_candidate_meta_tokens must be an integer >= 1"),
        ({"budgets": [(1, 1), (17, 64)]}, r"r_q=17 outside the allowed range 1..16"),
        ({"budgets": [(1, 65)]}, r"r_c=65 outside the allowed range 1..64"),
        ({"budgets": [(0, 1)]}, r"r_q=0 outside the allowed range 1..16"),
        ({"budgets": [(2, 4), (1, 8)]}, r"must increase on both sides"),
        ({"budgets": [(2, 4), (2, 4)]}, r"must increase on both sides"),
        ({"budgets": [(1.5, 4)]}, r"pair of integers"),
        ({"budgets": []}, r"at least one"),
        ({"embedding_dim": 0}, r"embedding_dim must be None or an integer >= 1"),
        ({"backbone_config": {"model_type": "not-a-model"}}, r"model_type that transformers knows"),
    ],
)
def test_invalid_arguments_raise_with_the_allowed_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MetaEmbedConfig(**kwargs)


@pytest.mark.parametrize(
    ("role", "budget", "message"),
    [
        ("query", 0, r"query budget must be in 1..16, got 0"),
        ("query", 17, r"query budget must be in 1..16, got 17"),
        ("candidate", 65, r"candidate budget must be in 1..64, got 65"),
        ("candidate", 2.5, r"must be an integer in 1..64"),
        ("query", "4", r"must be an integer in 1..16"),
        ("query", True, r"must be an integer in 1..16"),
        ("document", 1, r"role must be 'query' or 'candidate'"),
    ],
)
def test_check_budget_rejects_bad_budgets(role, budget, message):
    with pytest.raises(ValueError, match=message):
        MetaEmbedConfig().check_budget(role, budget)


def test_check_budget_accepts_integers_and_defaults_to_full():
    import numpy as np
    import torch

    config = MetaEmbedConfig()
    assert config.check_budget("query", None) == 16
    assert config.check_budget("candidate", None) == 64
    assert config.check_budget("candidate", np.int64(8)) == 8
    assert config.check_budget("query", torch.tensor(3)) == 3
    assert config.check_budget_pair((4, 8)) == (4, 8)
    assert config.check_budget_pair(None) == (16, 64)
    with pytest.raises(ValueError, match="pair"):
        config.check_budget_pair(4)
