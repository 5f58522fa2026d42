"""Model cards parse with huggingface_hub and their snippets run; the push plan is complete and loads with both
APIs when a repo is rebuilt from it in the simulated Hub cache."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard

from metaembed.hub import copy_plan, push_checkpoint, upload_plan
from metaembed.model_cards import build_model_card, save_model_card, scores_from_mapping
from metaembed.testing import publish_to_hub_cache

REPO_ID = "metaembed-tests/tiny-card"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_models):
    from metaembed.checkpoint import save_checkpoint

    model, processor = tiny_models("qwen2_5_vl")
    directory = tmp_path_factory.mktemp("card") / "checkpoint"
    save_checkpoint(model, processor, directory)
    scores = scores_from_mapping(
        {(1, 1): {"Demo A": 0.25, "Demo B": 0.5}, (4, 8): {"Demo A": 0.5, "Demo B": 0.75}},
        metric_type="ndcg_at_10",
        dataset_type="metaembed-tests/demo",
    )
    save_model_card(
        directory,
        model_id=REPO_ID,
        base_model="Qwen/Qwen2.5-VL-3B-Instruct",
        datasets=["metaembed-tests/demo"],
        scores=scores,
        training_details="Random weights, for tests.",
    )
    return directory


def test_card_metadata_round_trips_through_huggingface_hub(checkpoint):
    card = ModelCard.load(checkpoint / "README.md")
    data = card.data
    assert data.library_name == "sentence-transformers"
    assert data.pipeline_tag == "visual-document-retrieval"
    assert data.base_model == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert data.license == "apache-2.0"
    assert data.datasets == ["metaembed-tests/demo"]
    assert {"sentence-transformers", "mteb", "metaembed"} <= set(data.tags)
    results = {(r.dataset_name, r.metric_config): r.metric_value for r in data.eval_results}
    assert results == {
        ("Demo A", "budget=1,1"): 0.25,
        ("Demo B", "budget=1,1"): 0.5,
        ("Demo A", "budget=4,8"): 0.5,
        ("Demo B", "budget=4,8"): 0.75,
    }


def test_card_body_has_the_budget_table_and_citation(checkpoint):
    text = (checkpoint / "README.md").read_text()
    # (r_q, r_c) | query vectors | candidate vectors | bytes per candidate (r_c * 64 * 2) | per query | mean quality
    assert "| (1, 1) | 1 | 1 | 128 | 128 | 0.3750 |" in text
    assert "| (2, 4) | 2 | 4 | 512 | 256 | not evaluated |" in text
    assert "| (4, 8) | 4 | 8 | 1,024 | 512 | 0.6250 |" in text
    assert "arXiv:2509.18095" in text
    for heading in ("### transformers", "### sentence-transformers", "### MTEB", "## Training"):
        assert heading in text


def test_card_refuses_a_checkpoint_that_is_not_metaembed(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="not a MetaEmbed checkpoint"):
        build_model_card(tmp_path, model_id="x/y")


def test_upload_plan_is_complete(checkpoint):
    plan = upload_plan(checkpoint)
    expected = {
        "README.md",
        "config.json",
        "model.safetensors",
        "configuration_metaembed.py",
        "modeling_metaembed.py",
        "processing_metaembed.py",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "modules.json",
        "config_sentence_transformers.json",
    }
    assert expected <= set(plan.files)
    assert not any(name.startswith(".") or name.endswith(".tmp") for name in plan.files)
    assert push_checkpoint(checkpoint, REPO_ID, dry_run=True).files == plan.files


@pytest.mark.parametrize(
    "removed", ["modeling_metaembed.py", "modules.json", "model.safetensors", "README.md"]
)
def test_upload_plan_names_missing_files(checkpoint, tmp_path, removed):
    copy = copy_plan(upload_plan(checkpoint), tmp_path / "copy")
    os.remove(copy / removed)
    expected = "safetensors" if removed == "model.safetensors" else re.escape(removed)
    with pytest.raises(FileNotFoundError, match=expected):
        upload_plan(copy)


def test_repo_rebuilt_from_the_plan_loads_with_both_apis_and_runs_the_card_snippets(checkpoint, tmp_path):
    repo = copy_plan(upload_plan(checkpoint), tmp_path / "repo")
    hf_home = tmp_path / "hf_home"
    publish_to_hub_cache(repo, REPO_ID, hf_home)
    card_text = (repo / "README.md").read_text()
    snippets = re.findall(r"^```python\n(.*?)^```", card_text, flags=re.DOTALL | re.MULTILINE)
    transformers_snippet, st_snippet = snippets[0], snippets[1]
    script = "import sys\nsys.modules['metaembed'] = None\n" + transformers_snippet + "\n" + st_snippet
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("tensor(") >= 2, result.stdout


def test_push_cli_dry_run_prints_the_plan(checkpoint, capsys):
    from metaembed.cli import main

    assert main(["push", str(checkpoint), REPO_ID, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Would upload" in out and "modeling_metaembed.py" in out
