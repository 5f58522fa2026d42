"""`metaembed train`: config, data, LoRA, the MiniLM learning run and a tiny Qwen2.5-VL end to end."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset

from metaembed.checkpoint import save_checkpoint
from metaembed.training import DataConfig, TrainConfig, load_train_config, prepare_dataset
from metaembed.training.lora import apply_lora, lora_target_modules, merge_lora


@pytest.fixture
def one_thread():
    """These runs are many small ops: one thread beats two that fight other processes for two cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ------------------------------------------------------------------------------------------------ config
def test_config_files_and_errors(tmp_path):
    (tmp_path / "cfg.yaml").write_text(
        "model: some/backbone\noutput_dir: out\ndata:\n  train: pairs.jsonl\nlora: {r: 8}\n"
        "training: {max_steps: 3}\n"
    )
    config = load_train_config(tmp_path / "cfg.yaml", {"output_dir": "elsewhere"})
    assert (config.output_dir, config.data.train, config.lora.r, config.lora.alpha) == (
        "elsewhere",
        "pairs.jsonl",
        8,
        32,
    )
    assert config.loss.temperature == 0.03 and config.training == {"max_steps": 3}
    (tmp_path / "cfg.json").write_text(json.dumps({"model": "m", "output_dir": "o", "data": "d.jsonl"}))
    assert load_train_config(tmp_path / "cfg.json").data.train == "d.jsonl"

    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['epochs'\] in the config"):
        TrainConfig.from_dict({"model": "m", "output_dir": "o", "data": "d", "epochs": 3})
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['rank'\] in 'lora'"):
        TrainConfig.from_dict({"model": "m", "output_dir": "o", "data": "d", "lora": {"rank": 3}})
    with pytest.raises(ValueError, match="needs 'model'"):
        TrainConfig.from_dict({"output_dir": "o", "data": "d"})
    with pytest.raises(ValueError, match=r"needs 'data\.train'"):
        TrainConfig.from_dict({"model": "m", "output_dir": "o"})
    with pytest.raises(ValueError, match="LoRA needs"):
        TrainConfig.from_dict({"model": "m", "output_dir": "o", "data": "d", "lora": {"dropout": 1.5}})
    with pytest.raises(ValueError, match=r"\.yaml, \.yml or \.json"):
        (tmp_path / "cfg.toml").write_text("")
        load_train_config(tmp_path / "cfg.toml")


def test_train_command_is_registered():
    from metaembed.cli import build_parser

    args = build_parser(["train", "--config", "x.yaml"]).parse_args(
        ["train", "--config", "x.yaml", "--max-steps", "7"]
    )
    assert args.func.__module__ == "metaembed.commands.train" and args.max_steps == 7


# ------------------------------------------------------------------------------------------------ data
def test_rows_become_query_positive_and_numbered_negatives():
    rows = Dataset.from_dict(
        {
            "query": ["q0", "q1"],
            "positive": ["p0", "p1"],
            "negatives": [["n0a", "n0b", "n0c"], ["n1a", "n1b"]],
            "extra": [1, 2],
        }
    )
    prepared = prepare_dataset(rows, DataConfig(num_negatives=2))
    assert prepared.column_names == ["query", "positive", "negative_1", "negative_2"]
    assert prepared[0] == {"query": "q0", "positive": "p0", "negative_1": "n0a", "negative_2": "n0b"}
    # Without a negatives column: in-batch negatives only.
    pairs = prepare_dataset(rows.remove_columns("negatives"), DataConfig())
    assert pairs.column_names == ["query", "positive"]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("positive", None, "Row 2 of the training data has no positive"),
        ("positive", "  ", "Row 2 of the training data has no positive"),
        ("query", "", "Row 2 of the training data has no query"),
        ("negatives", [], r"Row 2 of the training data has 0 hard negative\(s\) but the data uses 1"),
    ],
)
def test_bad_rows_are_named(column, value, message):
    data = {"query": ["a", "b", "c"], "positive": ["pa", "pb", "pc"], "negatives": [["na"], ["nb"], ["nc"]]}
    data[column] = [*data[column][:2], value]
    with pytest.raises(ValueError, match=message):
        prepare_dataset(Dataset.from_dict(data), DataConfig())


def test_missing_columns_and_images_on_a_text_backbone(tmp_path):
    rows = Dataset.from_dict({"question": ["a"], "answer": ["b"]})
    with pytest.raises(ValueError, match=r"has no column 'query'; its columns are \['question', 'answer'\]"):
        prepare_dataset(rows, DataConfig())
    prepared = prepare_dataset(rows, DataConfig(query_column="question", positive_column="answer"))
    assert prepared[0] == {"query": "a", "positive": "b"}
    with pytest.raises(ValueError, match="Row 0 of the training data: the query text must be a string"):
        prepare_dataset(Dataset.from_dict({"query": [3], "positive": ["b"]}), DataConfig())

    from metaembed.testing import build_tiny_metaembed
    from metaembed.training import train

    model, processor = build_tiny_metaembed("qwen2", num_query_meta_tokens=2, num_candidate_meta_tokens=2)
    start = save_checkpoint(model, processor, tmp_path / "start")
    (tmp_path / "img.png").write_bytes(b"")
    with pytest.raises(ValueError, match="text only"):
        train(
            {
                "model": str(start),
                "output_dir": str(tmp_path / "out"),
                "data": {"train": {"name": "unused"}, "positive_image_column": "image"},
            },
            train_dataset=Dataset.from_dict({"query": ["q"], "positive": ["p"], "image": ["img.png"]}),
        )


# ------------------------------------------------------------------------------------------------ LoRA
def test_lora_targets_follow_the_architecture(tiny_models):
    decoder = lora_target_modules(tiny_models("qwen2_5_vl")[0])
    assert len(decoder) == 2 * 7 and all(".language_model." in name for name in decoder)
    assert {name.rsplit(".", 1)[1] for name in decoder} == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    bert = lora_target_modules(tiny_models("bert")[0])
    assert {name.split("layer.0.", 1)[1] for name in bert if "layer.0." in name} == {
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    }
    assert len(lora_target_modules(tiny_models("modernbert")[0])) == 2 * 4
    with pytest.raises(ValueError, match=r"lora\.target_modules"):
        lora_target_modules(tiny_models("qwen2")[0], ["nothing_like_this"])


def test_lora_trains_adapters_and_meta_tokens_then_merges_exactly():
    from metaembed.st_module.sentence_transformers_metaembed import lora_merged_state_dict
    from metaembed.testing import build_tiny_metaembed

    model, processor = build_tiny_metaembed("qwen2", num_query_meta_tokens=2, num_candidate_meta_tokens=4)
    apply_lora(model, r=4, alpha=8, dropout=0.0)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "meta_tokens.weight" in trainable
    assert all("lora_" in name for name in trainable - {"meta_tokens.weight"})
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.2)
    adapted = model.encode_queries(["merge me"], processor)
    view = lora_merged_state_dict(model)
    assert merge_lora(model) == 2 * 7
    torch.testing.assert_close(model.encode_queries(["merge me"], processor), adapted, atol=1e-5, rtol=0)
    state = model.state_dict()
    assert set(view) == set(state) and all(torch.equal(view[k], state[k]) for k in state)


# ------------------------------------------------------------------------------------------------ learning
def test_minilm_learns_on_stdlib_docstrings_at_every_budget(tmp_path, one_thread):
    """all-MiniLM-L6-v2 + 4 query / 8 candidate meta tokens, LoRA, 150 MMR steps of 8 pairs (1.4 epochs, about 2
    minutes on one CPU thread): held-out Recall@1 (160 queries from modules never trained on, each against all 160
    documents) must gain at least 0.15 at every budget. The untrained model is near chance (1/160)."""
    from metaembed.testing import minilm_path
    from metaembed.training.stdlib_demo import train_on_stdlib_docstrings

    result = train_on_stdlib_docstrings(minilm_path(), tmp_path, steps=150, batch_size=8)
    print(result.table())
    assert list(result.before) == [(1, 1), (2, 4), (4, 8)]
    for budget, before in result.before.items():
        assert result.after[budget] >= before + 0.15, result.table()
    assert (tmp_path / "recall_at_1.json").exists()


@pytest.mark.slow
def test_minilm_learns_longer_with_hard_negatives(tmp_path, one_thread):
    from metaembed.testing import minilm_path
    from metaembed.training.stdlib_demo import train_on_stdlib_docstrings

    result = train_on_stdlib_docstrings(
        minilm_path(), tmp_path, steps=600, batch_size=16, max_length=48, hard_negatives=True
    )
    print(result.table())
    for budget, before in result.before.items():
        assert result.after[budget] >= before + 0.25, result.table()


# ------------------------------------------------------------------------------------------------ end to end
def _shape_image(color: str, shape: str):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (56, 56), "white")
    draw = ImageDraw.Draw(image)
    box = (8, 8, 48, 48)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=color)
    return image


def test_tiny_qwen2_5_vl_trains_and_loads_with_both_apis(tmp_path, one_thread):
    from sentence_transformers import MultiVectorEncoder
    from transformers import AutoModel, AutoProcessor

    from metaembed.testing import build_tiny_metaembed
    from metaembed.training import train

    model, processor = build_tiny_metaembed(
        "qwen2_5_vl", num_query_meta_tokens=2, num_candidate_meta_tokens=4
    )
    start = save_checkpoint(model, processor, tmp_path / "start")
    rows = []
    colors, shapes = ["red", "green", "blue", "orange"], ["circle", "square"]
    for i, (color, shape) in enumerate((c, s) for c in colors for s in shapes):
        _shape_image(color, shape).save(tmp_path / f"{i}.png")
        rows.append({"query": f"a {color} {shape}", "positive": "a drawing", "positive_image": f"{i}.png"})
    for i, row in enumerate(rows):
        row["negatives"] = ["a drawing"]
        row["negative_images"] = [rows[(i + 1) % len(rows)]["positive_image"]]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    output = train(
        {
            "model": str(start),
            "output_dir": str(tmp_path / "trained"),
            "data": {
                "train": str(data),
                "positive_image_column": "positive_image",
                "negatives_image_column": "negative_images",
                "image_root": str(tmp_path),
            },
            "lora": {"r": 4, "alpha": 8},
            "training": {
                "max_steps": 3,
                "per_device_train_batch_size": 4,
                "learning_rate": 1e-2,
                "warmup_steps": 0,
                "gradient_checkpointing": True,
                "bf16": True,
                "save_strategy": "steps",
                "save_steps": 2,
                "disable_tqdm": True,
            },
        }
    )
    trained, info = AutoModel.from_pretrained(output, trust_remote_code=True, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    trained_processor = AutoProcessor.from_pretrained(output, trust_remote_code=True)
    encoder = MultiVectorEncoder(str(output), trust_remote_code=True, device="cpu")
    queries = ["a red circle", "a blue square"]
    documents = [{"text": "a drawing", "image": str(tmp_path / "0.png")}, _shape_image("blue", "square")]
    torch.testing.assert_close(
        torch.stack(encoder.encode_query(queries)),
        trained.encode_queries(queries, trained_processor),
        atol=0,
        rtol=0,
    )
    torch.testing.assert_close(
        torch.stack(encoder.encode_document(documents, budget=3)),
        trained.encode_candidates(documents, trained_processor, budget=3),
        atol=0,
        rtol=0,
    )
    # Training moved the meta tokens and (through merged LoRA) the language model, not the vision tower.
    before, after = model.state_dict(), trained.state_dict()
    assert not torch.equal(before["meta_tokens.weight"], after["meta_tokens.weight"])
    q_proj = "backbone.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(before[q_proj], after[q_proj])
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone.visual."))
    assert json.loads((output / "metaembed_training_config.json").read_text())["lora"]["r"] == 4

    # The trainer's own mid-run checkpoint (written by sentence-transformers with the adapters still injected)
    # holds folded weights and loads with both APIs too.
    step_2 = output / "checkpoint-2"
    mid, info = AutoModel.from_pretrained(step_2, trust_remote_code=True, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    mid_encoder = MultiVectorEncoder(str(step_2), trust_remote_code=True, device="cpu")
    torch.testing.assert_close(
        torch.stack(mid_encoder.encode_query(queries)),
        mid.encode_queries(queries, trained_processor),
        atol=0,
        rtol=0,
    )


def test_data_sources_files_folders_and_datasets(tmp_path):
    from metaembed.training.data import load_source

    rows = Dataset.from_dict({"query": ["q0", "q1"], "positive": ["p0", "p1"]})
    rows.to_csv(tmp_path / "pairs.csv")
    rows.to_parquet(tmp_path / "pairs.parquet")
    rows.to_json(tmp_path / "pairs.jsonl")
    rows.save_to_disk(tmp_path / "saved")
    for source in (
        tmp_path / "pairs.csv",
        str(tmp_path / "pairs.parquet"),
        [tmp_path / "pairs.jsonl", tmp_path / "pairs.jsonl"],
        tmp_path / "saved",
        {"name": str(tmp_path / "saved")},
        rows,
    ):
        loaded = load_source(source)
        assert loaded["query"][:2] == ["q0", "q1"], source
    with pytest.raises(ValueError, match="not found"):
        load_source(tmp_path / "missing.jsonl")
    (tmp_path / "pairs.txt").write_text("q\tp\n")
    with pytest.raises(ValueError, match="must all be one of"):
        load_source(tmp_path / "pairs.txt")
