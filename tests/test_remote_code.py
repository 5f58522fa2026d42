"""Checkpoints load with AutoConfig / AutoModel / AutoProcessor (trust_remote_code) where metaembed is absent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open

from metaembed.testing import publish_to_hub_cache

FAMILIES_TO_SHIP = ["qwen2_5_vl", "bert"]

# Runs in a fresh interpreter where `import metaembed` fails, so every class must come from the checkpoint's code.
LOADER = textwrap.dedent(
    """
    import json, sys
    sys.modules["metaembed"] = None  # the project is installed in this venv: make it unimportable
    try:
        import metaembed  # noqa: F401
        raise SystemExit("metaembed should not be importable here")
    except ImportError:
        pass
    import torch
    from PIL import Image
    from transformers import AutoConfig, AutoModel, AutoProcessor

    source, reference_file, use_image = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    config = AutoConfig.from_pretrained(source, trust_remote_code=True)
    model, info = AutoModel.from_pretrained(source, trust_remote_code=True, output_loading_info=True)
    processor = AutoProcessor.from_pretrained(source, trust_remote_code=True)
    items = ["a red circle left of a blue square", ""]
    if use_image:
        items.append({"text": "what is this?", "image": Image.new("RGB", (64, 48), "red")})
    queries = model.encode_queries(items, processor)
    candidates = model.encode_candidates(items, processor, budget=3)
    reference = torch.load(reference_file)
    bf16 = AutoModel.from_pretrained(source, trust_remote_code=True, dtype=torch.bfloat16)
    bf16_queries = bf16.encode_queries(items, processor)
    print(json.dumps({
        "config_module": type(config).__module__,
        "model_module": type(model).__module__,
        "processor_module": type(processor).__module__,
        "missing": sorted(info["missing_keys"]),
        "unexpected": sorted(info["unexpected_keys"]),
        "mismatched": [str(x) for x in info["mismatched_keys"]],
        "query_diff": (queries - reference["queries"]).abs().max().item(),
        "candidate_diff": (candidates - reference["candidates"]).abs().max().item(),
        "bf16_dtype": str(bf16.meta_tokens.weight.dtype),
        "bf16_cosine_min": torch.nn.functional.cosine_similarity(bf16_queries, queries, dim=-1).min().item(),
    }))
    """
)


@pytest.fixture(scope="module", params=FAMILIES_TO_SHIP)
def saved_checkpoint(request, tmp_path_factory, tiny_models):
    family = request.param
    model, processor = tiny_models(family)
    directory = tmp_path_factory.mktemp(f"checkpoint-{family}")
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    from PIL import Image

    items = ["a red circle left of a blue square", ""]
    if model.config.is_multimodal:
        items.append({"text": "what is this?", "image": Image.new("RGB", (64, 48), "red")})
    reference = {
        "queries": model.encode_queries(items, processor),
        "candidates": model.encode_candidates(items, processor, budget=3),
    }
    torch.save(reference, directory.parent / f"reference-{family}.pt")
    model.reference_items = items
    return family, directory, directory.parent / f"reference-{family}.pt", model


def _load_in_fresh_process(source: str, reference, use_image: bool, env: dict[str, str], cwd) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", LOADER, source, str(reference), "1" if use_image else "0"],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _assert_loaded_exactly(report: dict) -> None:
    for key in ("config_module", "model_module", "processor_module"):
        assert report[key].startswith("transformers_modules"), report
    assert report["missing"] == [] and report["unexpected"] == [] and report["mismatched"] == []
    assert report["query_diff"] == 0.0 and report["candidate_diff"] == 0.0
    assert report["bf16_dtype"] == "torch.bfloat16"
    assert report["bf16_cosine_min"] > 0.98


def test_checkpoint_layout(saved_checkpoint):
    _, directory, _, model = saved_checkpoint
    names = {path.name for path in directory.iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json"} <= names
    assert {"configuration_metaembed.py", "modeling_metaembed.py", "processing_metaembed.py"} <= names
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in names)
    config = json.loads((directory / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_metaembed.MetaEmbedConfig",
        "AutoModel": "modeling_metaembed.MetaEmbedModel",
    }
    with safe_open(directory / "model.safetensors", "pt") as weights:
        keys = set(weights.keys())
    assert keys == set(model.state_dict())
    assert "meta_tokens.weight" in keys


def test_loads_from_a_directory_in_a_fresh_process(saved_checkpoint, tmp_path):
    family, directory, reference, _ = saved_checkpoint
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    report = _load_in_fresh_process(str(directory), reference, family.endswith("_vl"), env, tmp_path)
    _assert_loaded_exactly(report)


def test_loads_from_a_simulated_hub_cache_offline(saved_checkpoint, tmp_path):
    family, directory, reference, _ = saved_checkpoint
    hf_home = tmp_path / "hf_home"
    repo_id = f"metaembed-tests/tiny-{family}"
    revision = publish_to_hub_cache(directory, repo_id, hf_home)
    assert len(revision) == 40
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    report = _load_in_fresh_process(repo_id, reference, family.endswith("_vl"), env, tmp_path)
    _assert_loaded_exactly(report)


def test_round_trip_in_process_preserves_outputs(saved_checkpoint):
    from transformers import AutoModel, AutoProcessor

    _, directory, reference, model = saved_checkpoint
    loaded = AutoModel.from_pretrained(directory, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(directory, trust_remote_code=True)
    expected = torch.load(reference)
    queries = loaded.encode_queries(model.reference_items, processor)
    torch.testing.assert_close(queries, expected["queries"], atol=0, rtol=0)


def test_without_trust_remote_code_transformers_refuses_cleanly(saved_checkpoint):
    from transformers import AutoConfig, AutoModel

    _, directory, _, _ = saved_checkpoint
    for loader in (AutoConfig, AutoModel):
        with pytest.raises(ValueError, match="trust_remote_code"):
            loader.from_pretrained(directory, trust_remote_code=False)
