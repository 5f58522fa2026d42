"""The quickstart (`make demo`) end to end at toy scale: every step runs and its outputs are consistent."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard

from metaembed.quickstart import QuickstartSettings, format_table, run_quickstart


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    settings = QuickstartSettings(
        output_dir=tmp_path_factory.mktemp("quickstart"),
        train_steps=2,
        batch_size=4,
        num_query_meta_tokens=2,
        num_candidate_meta_tokens=4,
        max_document_words=24,
        max_train_pairs=32,
        max_test_pairs=24,
        with_nommr=True,
    )
    return settings, run_quickstart(settings)


def test_every_budget_of_both_variants_and_the_baseline_is_in_the_table(summary):
    _, result = summary
    rows = result["rows"]
    budgets = [(1, 1), (2, 4)]
    for label in ("MetaEmbed (MMR)", "MetaEmbed (NoMMR)"):
        assert [tuple(r["budget"]) for r in rows if r["model"] == label] == budgets
    baseline = [r for r in rows if r["budget"] is None]
    assert len(baseline) == 1 and baseline[0]["index_bytes_per_document"] == 384 * 2
    for row in rows:
        # One relevant document per query: a hit at rank 1 is an nDCG@10 of 1, so recall@1 never exceeds nDCG@10.
        assert 0.0 <= row["recall_at_1"] <= row["ndcg_at_10"] + 1e-9 <= 1.0 + 1e-9
        assert row["latency_ms_per_query"] > 0
    mmr = {tuple(r["budget"]): r for r in rows if r["model"] == "MetaEmbed (MMR)"}
    assert (
        mmr[(2, 4)]["index_bytes_per_document"] == 4 * mmr[(1, 1)]["index_bytes_per_document"] == 4 * 384 * 2
    )
    assert "| MetaEmbed (MMR) | (1, 1) |" in result["table_markdown"]


def test_checkpoint_is_shipped_reloaded_and_indexed(summary):
    settings, result = summary
    assert result["reload_max_difference"] < 1e-5
    assert result["indexed"] == result["test_pairs"] == 24 and result["skipped"] == []
    # The shortlist (50) holds all 24 indexed documents, so re-ranking it at the high budget is exhaustive search.
    assert result["two_stage_top3_agreement"] == 1.0
    card = ModelCard.load(settings.output_dir / "metaembed-minilm-mmr" / "README.md")
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert {r.metric_config for r in card.data.eval_results} == {"budget=1,1", "budget=2,4"}
    snapshot = settings.output_dir / "hf_home" / "hub" / "models--metaembed-demo--minilm-stdlib-docstrings"
    assert (snapshot / "refs" / "main").read_text() == result["hub_revision"]
    assert (settings.output_dir / "quickstart.png").stat().st_size > 10_000
    assert json.loads((settings.output_dir / "summary.json").read_text())["test_pairs"] == 24


def test_format_table_shows_single_vector_rows():
    from metaembed.quickstart import Row

    table = format_table([Row("baseline", None, 0.5, 0.25, 1.0, 768)])
    assert "| baseline | single vector | 0.5000 | 0.2500 | 1.00 | 768 |" in table


def test_cli_options_left_out_keep_the_settings_defaults(monkeypatch):
    import metaembed.quickstart as quickstart
    from metaembed.cli import main

    received = []
    monkeypatch.setattr(quickstart, "run_quickstart", received.append)
    assert main(["quickstart"]) == 0
    assert received == [QuickstartSettings()]
    assert main(["quickstart", "--train-steps", "7", "--no-nommr"]) == 0
    assert received[1].train_steps == 7 and received[1].with_nommr is False
    assert received[1].batch_size == QuickstartSettings().batch_size
