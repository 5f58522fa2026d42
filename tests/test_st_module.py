"""MetaEmbed as a sentence-transformers MultiVectorEncoder: budgets, inputs, similarity, saving and loading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from sentence_transformers.util.similarity import maxsim

from metaembed import maxsim_scores
from metaembed.checkpoint import save_checkpoint
from metaembed.st_module import BudgetedMaxSim, build_multi_vector_encoder
from metaembed.testing import publish_to_hub_cache

TEXTS = ["a red circle left of a blue square", "MaxSim sums the best matches", "x " * 30]
DOCUMENTS = ["two green triangles above a yellow star", "the quick brown fox", "def encode(items): ..."]


@pytest.fixture(scope="module")
def qwen2_encoder(tiny_models):
    model, processor = tiny_models("qwen2")
    return model, processor, build_multi_vector_encoder(model, processor)


def test_encode_matches_metaembed_model_at_every_budget(qwen2_encoder):
    model, processor, encoder = qwen2_encoder
    for budget in (1, 3, None):
        queries = encoder.encode_query(TEXTS, budget=budget, batch_size=2)
        reference = model.encode_queries(TEXTS, processor, budget=budget)
        assert [tuple(q.shape) for q in queries] == [tuple(reference.shape[1:])] * len(TEXTS)
        torch.testing.assert_close(torch.stack(queries), reference, atol=1e-5, rtol=0)
    for budget in (1, 5, 8):
        documents = encoder.encode_document(DOCUMENTS, budget=budget)
        reference = model.encode_candidates(DOCUMENTS, processor, budget=budget)
        torch.testing.assert_close(torch.stack(documents), reference, atol=1e-5, rtol=0)
    # The default is the full count; a single string unwraps to one [r, dim] tensor.
    assert encoder.encode_document(DOCUMENTS[0]).shape == (8, 64)
    assert encoder.encode_query(TEXTS[0]).shape == (4, 64)


def test_budget_pair_picks_each_sides_count(qwen2_encoder):
    _, _, encoder = qwen2_encoder
    assert encoder.encode_query(TEXTS[:1], budget=(2, 6))[0].shape == (2, 64)
    assert encoder.encode_document(DOCUMENTS[:1], budget=(2, 6))[0].shape == (6, 64)
    assert "budget" in encoder.get_model_kwargs()


@pytest.mark.parametrize(
    ("method", "budget", "expected"),
    [
        ("encode_query", 5, "1..4"),
        ("encode_query", 0, "1..4"),
        ("encode_document", 9, "1..8"),
        ("encode_document", (1, 9), "1..8"),
        ("encode_query", 1.5, "1..4"),
    ],
)
def test_budget_outside_the_counts_is_a_value_error_naming_the_range(qwen2_encoder, method, budget, expected):
    _, _, encoder = qwen2_encoder
    with pytest.raises(ValueError, match=expected.replace(".", r"\.")):
        getattr(encoder, method)(TEXTS[:1], budget=budget)


def test_causal_backbone_runs_only_the_meta_tokens_a_budget_needs(qwen2_encoder):
    model, processor, encoder = qwen2_encoder
    lengths = []
    handle = model.backbone.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True
    )
    try:
        encoder.encode_query(["hello"], budget=1)
        encoder.encode_query(["hello"], budget=4)
        encoder.encode_document(["hello"], budget=1)
        encoder.encode_document(["hello"], budget=8)
    finally:
        handle.remove()
    query_length = processor(["hello"], role="query")["input_ids"].shape[1]
    candidate_length = processor(["hello"], role="candidate")["input_ids"].shape[1]
    # query: input + r_q; candidate: input + all 4 query-meta + r_c.
    assert lengths == [query_length + 1, query_length + 4, candidate_length + 5, candidate_length + 12]


def test_prompt_becomes_the_task_instruction(qwen2_encoder):
    model, processor, encoder = qwen2_encoder
    instruction = "Find the docstring that answers the question."
    via_st = encoder.encode_query(TEXTS, prompt=instruction)
    reference = model.encode_queries(TEXTS, processor, instruction=instruction)
    torch.testing.assert_close(torch.stack(via_st), reference, atol=1e-5, rtol=0)
    assert not torch.allclose(reference, model.encode_queries(TEXTS, processor), atol=1e-3)


def test_numpy_output_progress_bar_and_batch_size(qwen2_encoder):
    model, processor, encoder = qwen2_encoder
    arrays = encoder.encode_document(DOCUMENTS, convert_to_numpy=True, batch_size=1, show_progress_bar=True)
    assert all(isinstance(a, np.ndarray) and a.shape == (8, 64) for a in arrays)
    reference = model.encode_candidates(DOCUMENTS, processor).numpy()
    np.testing.assert_allclose(np.stack(arrays), reference, atol=1e-5)


def test_every_input_form_on_a_vision_language_backbone(tiny_models, rgb_image, tmp_path):
    model, processor = tiny_models("qwen2_5_vl")
    encoder = build_multi_vector_encoder(model, processor)
    path = tmp_path / "shape.png"
    rgb_image(70, 40, "green").save(path)
    items = [
        "a red circle",
        rgb_image(64, 48),
        str(path),
        {"text": "what colour is the square?", "image": rgb_image(90, 30, "yellow")},
        {"image": str(path)},
    ]
    for budget in (1, None):
        via_st = encoder.encode_query(items, budget=budget, batch_size=2)
        reference = model.encode_queries(items, processor, budget=budget)
        torch.testing.assert_close(torch.stack(via_st), reference, atol=1e-5, rtol=0)
    documents = encoder.encode_document(items, budget=3)
    torch.testing.assert_close(
        torch.stack(documents), model.encode_candidates(items, processor, budget=3), atol=1e-5, rtol=0
    )
    with pytest.raises(ValueError, match="single items"):
        encoder.encode_query([[{"role": "user", "content": "hi"}]])


def test_similarity_unchanged_and_with_a_budget(qwen2_encoder):
    _, _, encoder = qwen2_encoder
    queries = encoder.encode_query(TEXTS)
    documents = encoder.encode_document(DOCUMENTS)
    torch.testing.assert_close(encoder.similarity(queries, documents), maxsim(queries, documents))
    q, d = torch.stack(queries), torch.stack(documents)
    for budget in ((1, 1), (2, 4), (4, 8)):
        expected = maxsim_scores(q[:, : budget[0]], d[:, : budget[1]])
        torch.testing.assert_close(encoder.similarity(queries, documents, budget=budget), expected)
        torch.testing.assert_close(encoder.similarity(q, d, budget=budget), expected)
    pairwise = encoder.similarity_pairwise(queries, documents, budget=(2, 4))
    torch.testing.assert_close(pairwise, maxsim_scores(q[:, :2], d[:, :4]).diagonal())
    # numpy embeddings and one bare [r, dim] query work as in sentence-transformers
    arrays = [x.numpy() for x in queries]
    torch.testing.assert_close(
        encoder.similarity(arrays, documents, budget=(1, 2)), maxsim_scores(q[:, :1], d[:, :2])
    )
    assert encoder.similarity(queries[0], documents, budget=(1, 1)).shape == (1, 3)


@pytest.mark.parametrize(
    ("budget", "expected"),
    [((5, 1), "query budget must be in 1..4"), ((1, 0), "candidate budget must be in 1..8"), ((1,), "pair")],
)
def test_similarity_budget_outside_the_counts(qwen2_encoder, budget, expected):
    _, _, encoder = qwen2_encoder
    queries, documents = encoder.encode_query(TEXTS[:1]), encoder.encode_document(DOCUMENTS[:1])
    with pytest.raises(ValueError, match=expected):
        encoder.similarity(queries, documents, budget=budget)


def test_similarity_rejects_narrow_embeddings_and_dimension_mismatch(qwen2_encoder):
    _, _, encoder = qwen2_encoder
    queries = encoder.encode_query(TEXTS[:1], budget=1)
    documents = encoder.encode_document(DOCUMENTS[:1])
    with pytest.raises(ValueError, match="encode them at a budget of at least 2"):
        encoder.similarity(queries, documents, budget=(2, 2))
    with pytest.raises(ValueError, match="dimension 64 but document vectors have 32"):
        encoder.similarity(queries, [torch.randn(8, 32)])
    with pytest.raises(ValueError, match="dimension"):
        BudgetedMaxSim((1, 1))(torch.randn(2, 1, 8), torch.randn(3, 1, 16))


def test_documents_without_vectors_never_win(qwen2_encoder):
    _, _, encoder = qwen2_encoder
    # Real documents that all score negatively against the query: a zero document would score 0 and win.
    query = torch.nn.functional.normalize(torch.ones(1, 2, 64), dim=-1)
    negative = [-query[0].clone() * 0.5, -query[0].clone() * 0.9]
    candidates = [negative[0], torch.zeros(2, 64), negative[1], torch.zeros(0, 64)]
    for scorer in (encoder.similarity, BudgetedMaxSim((2, 2)), BudgetedMaxSim()):
        scores = scorer(list(query), candidates)
        assert scores.argmax().item() == 0, scores
        assert scores[0, 1] < scores[0, 2] and scores[0, 3] < scores[0, 2]
    # Zero-padded rows inside a document do not take part in its max either.
    padded = torch.cat([negative[0], torch.zeros(3, 64)])
    torch.testing.assert_close(encoder.similarity(query, [padded]), encoder.similarity(query, [negative[0]]))


def test_budgeted_maxsim_in_sentence_transformers_losses_and_evaluators(qwen2_encoder):
    from sentence_transformers.multi_vector_encoder.evaluation import MultiVectorInformationRetrievalEvaluator
    from sentence_transformers.multi_vector_encoder.scoring import colbert_scores

    _, _, encoder = qwen2_encoder
    torch.manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(3, 4, 16), dim=-1)
    documents = torch.nn.functional.normalize(torch.randn(3, 2, 8, 16), dim=-1)  # the losses' [Q, N, t, d]
    scorer = BudgetedMaxSim((2, 3))
    torch.testing.assert_close(
        scorer(queries, documents), colbert_scores(queries[:, :2], documents[:, :, :3])
    )
    with pytest.raises(ValueError, match="at least 5"):
        BudgetedMaxSim((5, 1))(queries, documents)

    scorer = BudgetedMaxSim.from_model(encoder, (1, 2))
    with pytest.raises(ValueError, match=r"1\.\.4"):
        BudgetedMaxSim.from_model(encoder, (5, 2))
    corpus = dict(enumerate(DOCUMENTS))
    evaluator = MultiVectorInformationRetrievalEvaluator(
        queries={i: t for i, t in enumerate(TEXTS)},
        corpus={str(k): v for k, v in corpus.items()},
        relevant_docs={i: {str(i)} for i in range(3)},
        score_functions={"maxsim_1x2": scorer},
        show_progress_bar=False,
        write_csv=False,
    )
    results = evaluator(encoder)
    q, d = torch.stack(encoder.encode_query(TEXTS)), torch.stack(encoder.encode_document(DOCUMENTS))
    hits = (maxsim_scores(q[:, :1], d[:, :2]).argmax(dim=1) == torch.arange(3)).float().mean().item()
    assert results[f"{evaluator.name}_maxsim_1x2_accuracy@1".lstrip("_")] == pytest.approx(hits)


def test_save_checkpoint_replaces_weights_and_keeps_other_files(tiny_models, tmp_path):
    model, processor = tiny_models("qwen2")
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "checkpoint-10").mkdir()
    (directory / "model-00001-of-00002.safetensors").write_text("stale shard")
    save_checkpoint(model, processor, directory, prompts={"query": "Q-instruction"}, document_budget=5)
    assert not (directory / "model-00001-of-00002.safetensors").exists()
    assert (directory / "checkpoint-10").is_dir()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging folder left behind"
    st_config = json.loads((directory / "config_sentence_transformers.json").read_text())
    assert st_config["model_type"] == "MultiVectorEncoder" and st_config["similarity_fn_name"] == "maxsim"
    assert st_config["prompts"]["query"] == "Q-instruction"
    modules = json.loads((directory / "modules.json").read_text())
    assert modules == [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers_metaembed.MetaEmbedModule"}
    ]
    with pytest.raises(ValueError, match=r"1\.\.8"):
        save_checkpoint(model, processor, tmp_path / "bad", document_budget=9)


# Runs where `import metaembed` fails: every class must come from the checkpoint's own code.
FRESH_LOADER = textwrap.dedent(
    """
    import json, sys
    sys.modules["metaembed"] = None
    try:
        import metaembed  # noqa: F401
        raise SystemExit("metaembed should not be importable here")
    except ImportError:
        pass
    import torch
    from sentence_transformers import MultiVectorEncoder
    from transformers import AutoModel, AutoProcessor

    if __name__ == "__main__":
        sources, reference_file, resave = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
        reference = torch.load(reference_file)
        report = {}
        for source in sources:
            encoder = MultiVectorEncoder(source, trust_remote_code=True, device="cpu")
            queries = torch.stack(encoder.encode_query(reference["texts"], budget=2))
            documents = torch.stack(encoder.encode_document(reference["documents"]))
            model = AutoModel.from_pretrained(source, trust_remote_code=True)
            processor = AutoProcessor.from_pretrained(source, trust_remote_code=True)
            report[source] = {
                "module": type(encoder[0]).__module__,
                "query_diff": (queries - reference["queries"]).abs().max().item(),
                "document_diff": (documents - reference["documents_full"]).abs().max().item(),
                "auto_diff": (model.encode_queries(reference["texts"], processor, budget=2)
                              - reference["queries"]).abs().max().item(),
                "similarity_diff": (encoder.similarity(list(queries), list(documents), budget=(1, 3))
                                    - reference["scores_1x3"]).abs().max().item(),
            }
        encoder.save_pretrained(resave)
        pool_queries = encoder.encode_query(reference["texts"] * 2, budget=2, device=["cpu", "cpu"], chunk_size=2)
        report["pool_diff"] = (torch.stack(pool_queries[:3]) - reference["queries"]).abs().max().item()
        print("REPORT" + json.dumps(report))
    """
)


def _run_fresh(tmp_path, sources, reference, resave, env_extra=None):
    reference_file = tmp_path / "reference.pt"
    torch.save(reference, reference_file)
    script = tmp_path / "fresh_loader.py"
    script.write_text(FRESH_LOADER)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        **(env_extra or {}),
    }
    result = subprocess.run(
        [sys.executable, str(script), ",".join(map(str, sources)), str(reference_file), str(resave)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("REPORT"))
    return json.loads(line[len("REPORT") :])


def test_one_checkpoint_both_apis_in_a_fresh_process(tiny_models, tmp_path):
    """save_checkpoint dir, an ST save_pretrained dir and a Hub-cache repo id all load with MultiVectorEncoder and
    AutoModel where metaembed is not importable, with identical embeddings; multi-process encoding works there."""
    model, processor = tiny_models("qwen2")
    saved = save_checkpoint(model, processor, tmp_path / "saved")
    build_multi_vector_encoder(model, processor).save_pretrained(str(tmp_path / "st_saved"))
    hf_home = tmp_path / "hf_home"
    publish_to_hub_cache(saved, "metaembed-test/tiny-qwen2", hf_home)
    queries = model.encode_queries(TEXTS, processor, budget=2)
    documents = model.encode_candidates(DOCUMENTS, processor)
    reference = {
        "texts": TEXTS,
        "documents": DOCUMENTS,
        "queries": queries,
        "documents_full": documents,
        "scores_1x3": maxsim_scores(queries[:, :1], documents[:, :3]),
    }
    sources = [saved, tmp_path / "st_saved", "metaembed-test/tiny-qwen2"]
    report = _run_fresh(tmp_path, sources, reference, tmp_path / "resaved", {"HF_HOME": str(hf_home)})
    for source in map(str, sources):
        entry = report[source]
        assert entry["module"].startswith("transformers_modules."), entry
        for key in ("query_diff", "document_diff", "auto_diff", "similarity_diff"):
            assert entry[key] <= 1e-5, (source, key, entry)
    assert report["pool_diff"] <= 1e-5
    # Re-saved by sentence-transformers from the loaded checkpoint: still the portable module reference.
    modules = json.loads((tmp_path / "resaved" / "modules.json").read_text())
    assert modules[0]["type"] == "sentence_transformers_metaembed.MetaEmbedModule"
    assert (tmp_path / "resaved" / "sentence_transformers_metaembed.py").exists()
    assert (tmp_path / "resaved" / "modeling_metaembed.py").exists()


def test_loading_without_trust_remote_code_is_refused(tiny_models, tmp_path):
    from sentence_transformers import MultiVectorEncoder

    model, processor = tiny_models("qwen2")
    saved = save_checkpoint(model, processor, tmp_path / "saved")
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        MultiVectorEncoder(str(saved), device="cpu")


def test_saved_prompts_become_instructions_after_loading(tiny_models, tmp_path):
    from sentence_transformers import MultiVectorEncoder

    model, processor = tiny_models("qwen2")
    saved = save_checkpoint(
        model, processor, tmp_path / "saved", prompts={"query": "Find the matching docstring."}
    )
    encoder = MultiVectorEncoder(str(saved), trust_remote_code=True, device="cpu")
    expected = model.encode_queries(TEXTS, processor, instruction="Find the matching docstring.")
    torch.testing.assert_close(torch.stack(encoder.encode_query(TEXTS)), expected, atol=1e-5, rtol=0)
    plain = model.encode_candidates(DOCUMENTS, processor)
    torch.testing.assert_close(torch.stack(encoder.encode_document(DOCUMENTS)), plain, atol=1e-5, rtol=0)
