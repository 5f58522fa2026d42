"""MetaEmbedModel: shapes, norms, prefix exactness and batch invariance on every backbone family."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from metaembed import MetaEmbedConfig, MetaEmbedModel, maxsim_scores
from metaembed.testing import FAMILIES, VLM_FAMILIES, build_tiny_metaembed

BACKBONES = [*FAMILIES, "minilm"]
TEXTS = ["a red circle left of a blue square", "MaxSim sums the best matches", "", "x " * 40]


@pytest.fixture(params=BACKBONES)
def backbone(request, tiny_models, minilm_metaembed):
    if request.param == "minilm":
        return minilm_metaembed
    return tiny_models(request.param)


def _items(model, rgb_image):
    items = list(TEXTS)
    if model.config.is_multimodal:
        items += [
            rgb_image(64, 48),
            {"text": "what colour is the square?", "image": rgb_image(90, 30, "green")},
        ]
    return items


def test_shapes_and_unit_norms_at_every_budget(backbone, rgb_image):
    model, processor = backbone
    items = _items(model, rgb_image)
    dim = model.config.output_dim
    for role, limit in (("query", 4), ("candidate", 8)):
        for budget in range(1, limit + 1):
            embeddings = model._encode(items, processor, role, budget, 8, None, False)
            assert embeddings.shape == (len(items), budget, dim)
            assert embeddings.dtype == torch.float32
            torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(len(items), budget))


def test_budgeted_encoding_is_the_prefix_of_the_full_encoding(backbone, rgb_image):
    model, processor = backbone
    items = _items(model, rgb_image)
    full_queries = model.encode_queries(items, processor)
    full_candidates = model.encode_candidates(items, processor)
    for budget in (1, 2, 3):
        torch.testing.assert_close(
            model.encode_queries(items, processor, budget=budget), full_queries[:, :budget], atol=1e-5, rtol=0
        )
    for budget in (1, 4, 7):
        torch.testing.assert_close(
            model.encode_candidates(items, processor, budget=budget),
            full_candidates[:, :budget],
            atol=1e-5,
            rtol=0,
        )


def test_item_alone_equals_item_in_a_mixed_length_batch(backbone, rgb_image):
    model, processor = backbone
    items = _items(model, rgb_image)
    for role in ("query", "candidate"):
        batched = model._encode(items, processor, role, None, len(items), None, False)
        for index, item in enumerate(items):
            alone = model._encode([item], processor, role, None, 1, None, False)
            torch.testing.assert_close(alone[0], batched[index], atol=1e-5, rtol=0)


def test_causal_backbones_append_only_the_meta_tokens_the_budget_needs(backbone):
    model, processor = backbone
    batch = processor(["a red circle"], role="query")
    length = batch["input_ids"].shape[1]
    query = model(**batch, role="query", budget=2, output_hidden_states=True)
    candidate = model(
        **processor(["a red circle"], role="candidate"), role="candidate", budget=3, output_hidden_states=True
    )
    candidate_length = processor(["a red circle"], role="candidate")["input_ids"].shape[1]
    if model.config.is_causal:
        assert query.last_hidden_state.shape[1] == length + 2
        assert candidate.last_hidden_state.shape[1] == candidate_length + 4 + 3
    else:
        assert query.last_hidden_state.shape[1] == length + 12
        assert candidate.last_hidden_state.shape[1] == candidate_length + 12


def test_roles_use_different_meta_tokens(backbone):
    model, processor = backbone
    query = model.encode_queries(["a red circle"], processor)
    candidate = model.encode_candidates(["a red circle"], processor)
    assert not torch.allclose(query[0, 0], candidate[0, 0], atol=1e-3)


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_images_change_the_embedding(family, tiny_models, rgb_image):
    model, processor = tiny_models(family)
    red, green = rgb_image(64, 48, "red"), rgb_image(64, 48, "green")
    embeddings = model.encode_candidates(
        [red, green, {"text": "a chart", "image": red}, {"text": "a chart", "image": green}, "a chart"],
        processor,
    )
    assert not torch.allclose(embeddings[0], embeddings[1], atol=1e-4)
    assert not torch.allclose(embeddings[2], embeddings[3], atol=1e-4)
    assert not torch.allclose(embeddings[2], embeddings[4], atol=1e-4)


def test_score_matches_a_reference_maxsim():
    generator = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(5, 16, 24, generator=generator), dim=-1)
    candidates = torch.nn.functional.normalize(torch.randn(7, 64, 24, generator=generator), dim=-1)
    model = MetaEmbedModel(
        MetaEmbedConfig(
            backbone_config={
                "model_type": "bert",
                "hidden_size": 24,
                "num_attention_heads": 2,
                "num_hidden_layers": 1,
                "intermediate_size": 24,
                "vocab_size": 10,
            }
        )
    )
    for r_q, r_c in ((1, 1), (2, 4), (16, 64), (3, 5)):
        expected = torch.zeros(5, 7, dtype=torch.float64)
        for i in range(5):
            for j in range(7):
                expected[i, j] = sum(
                    max(float(queries[i, a].double() @ candidates[j, b].double()) for b in range(r_c))
                    for a in range(r_q)
                )
        torch.testing.assert_close(
            model.score(queries, candidates, budget=(r_q, r_c)).double(), expected, atol=1e-5, rtol=0
        )
    torch.testing.assert_close(model.score(queries, candidates), maxsim_scores(queries, candidates))
    # Blocking over candidates gives the same answer.
    torch.testing.assert_close(
        maxsim_scores(queries, candidates, candidate_block_size=3), maxsim_scores(queries, candidates)
    )


def test_score_rejects_bad_budgets_and_shapes():
    model, _ = build_tiny_metaembed("qwen2")
    queries, candidates = torch.randn(2, 16, 64), torch.randn(3, 64, 64)
    with pytest.raises(ValueError, match=r"query budget must be in 1..16, got 17"):
        model.score(queries, candidates, budget=(17, 4))
    with pytest.raises(ValueError, match=r"candidate budget must be in 1..64, got 65"):
        model.score(queries, candidates, budget=(1, 65))
    with pytest.raises(ValueError, match="fewer than r_c=8"):
        model.score(queries, candidates[:, :4], budget=(1, 8))
    with pytest.raises(ValueError, match="dimension 64 but candidate vectors have 32"):
        model.score(queries, torch.randn(3, 8, 32), budget=(1, 8))


class TestBadInput:
    @pytest.fixture(scope="class")
    def full_model(self):
        return build_tiny_metaembed("qwen2")

    def test_empty_batch(self, full_model):
        model, processor = full_model
        with pytest.raises(ValueError, match="empty list of query items"):
            model.encode_queries([], processor)
        with pytest.raises(ValueError, match="empty batch"):
            processor([], role="candidate")
        with pytest.raises(ValueError, match="non-empty"):
            model(input_ids=torch.zeros(0, 5, dtype=torch.long), role="query")

    @pytest.mark.parametrize(
        ("role", "budget", "message"),
        [
            ("query", 0, r"query budget must be in 1..16, got 0"),
            ("query", 17, r"query budget must be in 1..16, got 17"),
            ("candidate", 65, r"candidate budget must be in 1..64, got 65"),
            ("candidate", 1.5, r"must be an integer in 1..64"),
        ],
    )
    def test_bad_budgets(self, full_model, role, budget, message):
        model, processor = full_model
        with pytest.raises(ValueError, match=message):
            model._encode(["text"], processor, role, budget, 8, None, False)
        with pytest.raises(ValueError, match=message):
            model(**processor(["text"], role=role), role=role, budget=budget)

    def test_unknown_role(self, full_model):
        model, processor = full_model
        with pytest.raises(ValueError, match="role must be 'query' or 'candidate', got 'document'"):
            model(**processor(["text"]), role="document")
        with pytest.raises(ValueError, match="role must be 'query' or 'candidate'"):
            processor(["text"], role="document")

    def test_pixel_values_on_a_text_backbone(self, full_model):
        model, processor = full_model
        with pytest.raises(ValueError, match="text-only backbone"):
            model(**processor(["text"]), pixel_values=torch.zeros(4, 1176), role="query")

    def test_empty_text_encodes_instruction_and_meta_tokens(self, full_model):
        model, processor = full_model
        with_instruction = model.encode_queries([""], processor, instruction="Find the answer.")
        without = model.encode_queries([""], processor)
        assert with_instruction.shape == (1, 16, 64)
        assert torch.isfinite(with_instruction).all()
        assert not torch.allclose(with_instruction, without, atol=1e-4)


def test_projection_changes_the_output_dimension():
    model, processor = build_tiny_metaembed(
        "qwen3", embedding_dim=24, num_query_meta_tokens=2, num_candidate_meta_tokens=3
    )
    embeddings = model.encode_candidates(["hello"], processor)
    assert embeddings.shape == (1, 3, 24)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(1, 3))


def test_gradient_checkpointing_gives_the_same_gradients():
    model, processor = build_tiny_metaembed(
        "qwen2_5_vl", num_query_meta_tokens=2, num_candidate_meta_tokens=3
    )
    batch = processor(["a red circle", "two squares"], role="candidate")

    def meta_gradient():
        model.zero_grad()
        model(**batch, role="candidate").embeddings.sum().backward()
        return model.meta_tokens.weight.grad.clone()

    model.train()
    reference = meta_gradient()
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    torch.testing.assert_close(meta_gradient(), reference, atol=1e-6, rtol=1e-5)
    model.activation_checkpointing_disable()
    model.eval()


def test_device_map_metadata_comes_from_the_backbone(tiny_models):
    model, _ = tiny_models("qwen2_5_vl")
    assert {"Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"} <= set(model._no_split_modules)


def test_from_backbone_keeps_pretrained_weights_and_initialises_meta_tokens(minilm_metaembed):
    from transformers import AutoModel

    from metaembed.testing import minilm_path

    model, _ = minilm_metaembed
    reference = AutoModel.from_pretrained(str(minilm_path()))
    torch.testing.assert_close(
        model.backbone.embeddings.word_embeddings.weight, reference.embeddings.word_embeddings.weight
    )
    torch.testing.assert_close(
        model.backbone.encoder.layer[0].attention.self.query.weight,
        reference.encoder.layer[0].attention.self.query.weight,
    )
    word = reference.embeddings.word_embeddings.weight
    meta = model.meta_tokens.weight
    # Rows match the statistics of the backbone's token embeddings, and are distinct from each other.
    assert abs(meta.mean().item() - word.mean().item()) < 0.01
    assert abs(meta.std().item() - word.std().item()) / word.std().item() < 0.2
    assert torch.cdist(meta, meta).add(torch.eye(len(meta)) * 1e3).min() > 0.1
    # Seeded: building again gives the same table.
    from metaembed import MetaEmbedModel as Model

    again = Model.from_backbone(reference, num_query_meta_tokens=4, num_candidate_meta_tokens=8)
    torch.testing.assert_close(again.meta_tokens.weight, meta)


def test_from_backbone_on_a_vlm_checkpoint_with_a_language_model_head(tmp_path):
    """Hub VLM checkpoints (e.g. Qwen/Qwen2.5-VL-3B-Instruct) are *ForConditionalGeneration: the head is dropped."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from metaembed import MetaEmbedProcessor
    from metaembed.testing import build_backbone_processor, tiny_backbone_config

    torch.manual_seed(0)
    full = Qwen2_5_VLForConditionalGeneration(tiny_backbone_config("qwen2_5_vl"))
    full.save_pretrained(tmp_path)
    build_backbone_processor("qwen2_5_vl").save_pretrained(tmp_path)
    model = MetaEmbedModel.from_backbone(str(tmp_path), num_query_meta_tokens=2, num_candidate_meta_tokens=3)
    assert type(model.backbone).__name__ == "Qwen2_5_VLModel"
    assert not any("lm_head" in key for key in model.state_dict())
    torch.testing.assert_close(
        model.backbone.language_model.layers[0].self_attn.q_proj.weight,
        full.model.language_model.layers[0].self_attn.q_proj.weight,
    )
    torch.testing.assert_close(
        model.backbone.visual.blocks[0].mlp.gate_proj.weight, full.model.visual.blocks[0].mlp.gate_proj.weight
    )
    processor = MetaEmbedProcessor.from_backbone(str(tmp_path))
    assert type(processor.backbone_processor).__name__ == "Qwen2_5_VLProcessor"
    assert model.encode_queries(["hi", {"image": Image.new("RGB", (56, 56))}], processor).shape == (2, 2, 64)
