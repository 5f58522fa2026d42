"""The mteb path end to end on generated fixtures with a tiny checkpoint "pushed" to a simulated Hub cache:
`metaembed eval` offline by repo id, Precision@1 against an independent computation from the model's own
embeddings, the sweep against separate single-budget runs, the results read back by mteb's loader, the ModelMeta,
and a ViDoRe-shaped dataset through the same loader."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from metaembed.evaluation.fixtures import write_mmeb_fixture, write_tiny_checkpoint, write_vidore_fixture
from metaembed.testing import publish_to_hub_cache

SUBSETS = ("VOC2007", "MSCOCO_t2i", "RefCOCO")
REPO_ID = "acme/tiny-metaembed"
BUDGETS = [
    (1, 1),
    (2, 4),
    (4, 8),
]  # the tiny checkpoint's trained groups (4 query and 8 candidate meta tokens)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Writes the fixtures, publishes the checkpoint to a Hub cache, and runs `metaembed eval` on it offline."""
    import huggingface_hub.constants

    from metaembed.cli import main

    assert huggingface_hub.constants.HF_HUB_OFFLINE, "these tests must run with HF_HUB_OFFLINE=1"
    base = tmp_path_factory.mktemp("evaluation")
    mmeb = write_mmeb_fixture(base / "mmeb", subsets=SUBSETS)
    checkpoint = write_tiny_checkpoint(base / "checkpoint")
    revision = publish_to_hub_cache(checkpoint, REPO_ID, base / "hf")
    output = base / "out"
    argv = ["eval", "--model", REPO_ID, "--cache-dir", str(base / "hf" / "hub"), "--tasks", *SUBSETS]
    argv += ["--mmeb-dir", str(mmeb), "--budgets", "all", "--output-dir", str(output), "--batch-size", "8"]
    assert main(argv) == 0
    summary = json.loads((output / "sweep_summary.json").read_text())
    return SimpleNamespace(
        base=base, mmeb=mmeb, checkpoint=checkpoint, revision=revision, output=output, summary=summary
    )


@pytest.fixture(scope="module")
def tasks(run):
    from metaembed.evaluation.task_selection import resolve_tasks

    return resolve_tasks(SUBSETS, mmeb_dir=run.mmeb)


def _results_dir(run) -> Path:
    return run.output / "results" / REPO_ID.replace("/", "__") / run.revision


def test_cli_writes_mteb_results_table_plot_and_registry_code(run, capsys):
    assert run.summary["model"] == REPO_ID and run.summary["revision"] == run.revision  # resolved offline
    assert set(run.summary["budgets"]) == {f"{q}x{c}" for q, c in BUDGETS}
    assert run.summary["encode_calls"] == 2 * len(
        SUBSETS
    )  # queries and candidates once per task, all budgets
    results = _results_dir(run)
    for q, c in BUDGETS:
        folder = results / "experiments" / f"budget_[{q},{c}]"
        assert sorted(p.name for p in folder.glob("MMEB-*.json")) == sorted(f"MMEB-{s}.json" for s in SUBSETS)
        assert json.loads((folder / "model_meta.json").read_text())["experiment_kwargs"] == {"budget": [q, c]}
    assert sorted(p.name for p in results.glob("MMEB-*.json")) == sorted(f"MMEB-{s}.json" for s in SUBSETS)
    table = (run.output / "sweep.md").read_text()
    assert "| budget |" in table and "Overall" in table and "index bytes/cand" in table
    assert [line.split("|")[1].strip() for line in table.splitlines()[3:]] == ["(1,1)", "(2,4)", "(4,8)"]
    png = (run.output / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    namespace: dict = {}
    exec(compile((run.output / "model_meta.py").read_text(), "model_meta.py", "exec"), namespace)
    meta = namespace["tiny_metaembed"]
    assert meta.loader.__name__ == "MetaEmbedMultiVectorWrapper" and meta.name == REPO_ID
    assert meta.revision == run.revision and meta.similarity_fn_name.value == "MaxSim"


def test_registry_code_reproduces_the_results_through_mtebs_multi_vector_wrapper(run, tasks):
    """The pasted ModelMeta loads the checkpoint as mteb's own MultiVectorWrapper (no metaembed import) and scores
    every budget as the sweep did."""
    import mteb

    namespace: dict = {}
    exec(compile((run.output / "model_meta.py").read_text(), "model_meta.py", "exec"), namespace)
    meta = namespace["tiny_metaembed"].model_copy(
        update={"loader_kwargs": {"cache_folder": str(run.base / "hf" / "hub")}}
    )
    for q, c in BUDGETS[1:2]:  # a budget below the full one: the budget must reach the encoder
        model = meta.load_model(budget=(q, c))
        assert type(model).__mro__[1].__name__ == "MultiVectorWrapper" and model.budget == (q, c)
        outcome = mteb.evaluate(
            model, tasks, cache=None, encode_kwargs={"batch_size": 8}, show_progress_bar=False
        )
        folder = _results_dir(run) / "experiments" / f"budget_[{q},{c}]"
        for task_result in outcome.task_results:
            theirs = json.loads((folder / f"{task_result.task_name}.json").read_text())["scores"]["test"][0]
            mine = task_result.scores["test"][0]
            for metric in ("main_score", "mrr_at_1000", "ndcg_at_10"):
                assert mine[metric] == pytest.approx(theirs[metric], abs=1e-5), (
                    task_result.task_name,
                    metric,
                )


def test_results_validate_with_mtebs_loader(run, tasks):
    from metaembed.evaluation.export import load_exported_results
    from metaembed.evaluation.model_meta import metaembed_model_meta

    meta = metaembed_model_meta(run.checkpoint, run.revision, name=REPO_ID)
    loaded = load_exported_results(run.output, meta, tasks, budgets=BUDGETS)
    by_experiment = {result.experiment_name: result for result in loaded.model_results}
    assert set(by_experiment) == {f"budget_[{q},{c}]" for q, c in BUDGETS}
    for (q, c), key in zip(BUDGETS, (f"{q}x{c}" for q, c in BUDGETS)):
        result = by_experiment[f"budget_[{q},{c}]"]
        assert result.model_name == REPO_ID and result.model_revision == run.revision
        scores = {tr.task_name: tr.get_score() for tr in result.task_results}
        assert scores == pytest.approx(run.summary["budgets"][key]["scores"])
        for task_result in result.task_results:
            assert task_result.scores["test"][0]["positive_tied_at_top"] == 0.0
    default = load_exported_results(run.output, meta, tasks).model_results
    assert len(default) == 1 and default[0].experiment_name is None
    assert {tr.task_name: tr.get_score() for tr in default[0].task_results} == pytest.approx(
        run.summary["budgets"]["4x8"]["scores"]
    )


def _independent_precision_at_1(model, processor, root: Path, subset: str, budget: tuple[int, int]) -> float:
    """Hit@1 from the model's own embeddings: the parquet read directly, candidates de-duplicated by
    (text, image path), the positive a hit when it scores strictly above every other candidate."""
    import pyarrow.parquet as pq

    from metaembed.modeling_metaembed import maxsim_scores

    def item(text: str, path: str):
        text = text.replace("<|image_1|>", "").strip()
        return {"text": text, "image": str(root / "images" / path)} if path else text

    rows = pq.read_table(root / subset / "test-00000-of-00001.parquet").to_pylist()
    queries = model.encode_queries(
        [item(r["qry_text"], r["qry_img_path"]) for r in rows], processor, budget=budget[0], batch_size=16
    )
    pool = list(dict.fromkeys(pair for r in rows for pair in zip(r["tgt_text"], r["tgt_img_path"])))
    candidates = model.encode_candidates(
        [item(t, p) for t, p in pool], processor, budget=budget[1], batch_size=16
    )
    position = {pair: index for index, pair in enumerate(pool)}
    hits = 0
    for query, row in zip(queries, rows):
        own = [position[pair] for pair in dict.fromkeys(zip(row["tgt_text"], row["tgt_img_path"]))]
        scores = maxsim_scores(query[None], candidates[own])[0]
        hits += int(bool((scores[0] > scores[1:]).all()))
    return hits / len(rows)


def test_precision_at_1_matches_an_independent_computation(run):
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(run.checkpoint, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(run.checkpoint, trust_remote_code=True)
    for q, c in BUDGETS:
        reported = run.summary["budgets"][f"{q}x{c}"]["scores"]
        for subset in SUBSETS:
            expected = _independent_precision_at_1(model, processor, run.mmeb, subset, (q, c))
            assert reported[f"MMEB-{subset}"] == pytest.approx(expected, abs=1e-5), (subset, (q, c))


def test_sweep_equals_separate_single_budget_runs(run, tasks):
    import mteb

    from metaembed.evaluation.wrapper import MetaEmbedWrapper

    loaded = MetaEmbedWrapper(str(run.checkpoint), "fixture", name=REPO_ID, backend="transformers")
    for q, c in BUDGETS[::2]:
        single = loaded.at_budget((q, c))  # encodes at exactly this budget, no store
        assert single.store is None and single.mteb_model_meta.experiment_name == f"budget_[{q},{c}]"
        outcome = mteb.evaluate(
            single, tasks, cache=None, encode_kwargs={"batch_size": 8}, show_progress_bar=False
        )
        swept = json.loads(
            (_results_dir(run) / "experiments" / f"budget_[{q},{c}]" / "MMEB-RefCOCO.json").read_text()
        )
        for task_result in outcome.task_results:
            assert (
                task_result.get_score() == run.summary["budgets"][f"{q}x{c}"]["scores"][task_result.task_name]
            )
            if task_result.task_name == "MMEB-RefCOCO":
                mine, theirs = task_result.scores["test"][0], swept["scores"]["test"][0]
                for metric in ("mrr_at_1000", "ndcg_at_10", "map_at_1000", "hit_rate_at_5"):
                    assert mine[metric] == pytest.approx(theirs[metric], abs=1e-6), metric


def test_model_meta_comes_from_the_checkpoint(run):
    from transformers import AutoModel

    from metaembed.evaluation.model_meta import metaembed_model_meta

    meta = metaembed_model_meta(run.checkpoint, "fixture", budget=(2, 4), name=REPO_ID)
    model = AutoModel.from_pretrained(run.checkpoint, trust_remote_code=True)
    assert meta.n_parameters == sum(p.numel() for p in model.parameters())
    assert meta.memory_usage_mb == round(
        sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    )
    assert meta.embed_dim == model.config.output_dim == 64
    text_config = model.config.backbone_config.get_text_config()
    assert meta.max_tokens == text_config.max_position_embeddings - model.config.num_meta_tokens
    assert (
        meta.experiment_name == "budget_[2,4]"
        and meta.use_instructions
        and meta.modalities == ["image", "text"]
    )
    assert meta.loader_kwargs == {"checkpoint_path": str(Path(run.checkpoint).resolve())}
    with pytest.raises(ValueError, match=r"1\.\.8"):
        metaembed_model_meta(run.checkpoint, budget=(2, 9))


def test_model_meta_reads_license_and_base_model_from_the_card(run, tmp_path):
    import shutil

    from metaembed.evaluation.model_meta import metaembed_model_meta

    carded = tmp_path / "carded"
    shutil.copytree(run.checkpoint, carded)
    card = "---\nlicense: Apache-2.0\nbase_model: Qwen/Qwen2.5-VL-3B-Instruct\n---\n# A model\n"
    (carded / "README.md").write_text(card)
    meta = metaembed_model_meta(carded)
    assert meta.license == "apache-2.0" and meta.adapted_from == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert meta.name == "local/carded" and meta.revision is None and meta.experiment_kwargs is None


def test_bad_budgets_are_refused(run):
    from metaembed.evaluation.checkpoint_info import resolve_checkpoint
    from metaembed.evaluation.sweep import parse_budgets

    config = resolve_checkpoint(run.checkpoint).metaembed_config
    assert parse_budgets("4x8, 1x1;2,4", config) == [(1, 1), (2, 4), (4, 8)]
    assert parse_budgets("full", config) == [(4, 8)] and parse_budgets("all", config) == BUDGETS
    with pytest.raises(ValueError, match="Cannot read budgets"):
        parse_budgets("1x", config)
    with pytest.raises(ValueError, match=r"1\.\.4"):
        parse_budgets("5x8", config)


def test_vidore_shaped_dataset_runs_through_the_same_loader(run, tmp_path):
    import mteb
    import pyarrow.parquet as pq
    from datasets import Dataset
    from transformers import AutoModel, AutoProcessor

    from metaembed.evaluation.sweep import run_budget_sweep
    from metaembed.evaluation.task_selection import resolve_tasks
    from metaembed.evaluation.wrapper import MetaEmbedWrapper

    root = write_vidore_fixture(tmp_path / "vidore", num_pages=12)
    name = "Vidore2ESGReportsHLRetrieval"
    (task,) = resolve_tasks([name], local_datasets={name: root})
    model = MetaEmbedWrapper(str(run.checkpoint), "fixture", name=REPO_ID)
    sweep = run_budget_sweep(model, [task], "1x1,4x8", cache=mteb.ResultCache(tmp_path / "out"))
    assert sweep.main_scores == {name: "ndcg_at_5"} and sweep.encode_calls == 2

    # nDCG@5 with one relevant page per query, from the model's own embeddings and the task's query prompt.
    reference = AutoModel.from_pretrained(run.checkpoint, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(run.checkpoint, trust_remote_code=True)
    queries = pq.read_table(root / "queries" / "test-00000-of-00001.parquet").to_pylist()
    qrels_rows = pq.read_table(root / "qrels" / "test-00000-of-00001.parquet").to_pylist()
    qrels = {r["query-id"]: r["corpus-id"] for r in qrels_rows}
    pages = Dataset.from_parquet(str(root / "corpus" / "test-00000-of-00001.parquet"))
    instruction = task.metadata.prompt["query"]
    for q, c in [(1, 1), (4, 8)]:
        query_embeddings = reference.encode_queries(
            [row["query"] for row in queries], processor, budget=q, instruction=instruction
        )
        page_embeddings = reference.encode_candidates(list(pages["image"]), processor, budget=c)
        scores = reference.score(query_embeddings, page_embeddings)
        gains = []
        for row, row_scores in zip(queries, scores):
            relevant = row_scores[qrels[row["query-id"]]]
            rank = int((row_scores > relevant).sum()) + 1
            gains.append(1 / math.log2(rank + 1) if rank <= 5 else 0.0)
        assert sweep.scores[(q, c)][name] == pytest.approx(sum(gains) / len(gains), abs=1e-5)
    results = tmp_path / "out" / "results" / REPO_ID.replace("/", "__") / "fixture"
    assert (results / "experiments" / "budget_[1,1]" / f"{name}.json").is_file()


def test_task_prompts_reach_the_processor_as_instructions(run):
    from datasets import Dataset
    from mteb._create_dataloaders import create_dataloader
    from mteb.types import PromptType
    from transformers import AutoModel, AutoProcessor

    from metaembed.evaluation.task_selection import resolve_tasks
    from metaembed.evaluation.wrapper import MetaEmbedWrapper

    reference = AutoModel.from_pretrained(run.checkpoint, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(run.checkpoint, trust_remote_code=True)
    texts = ["Which page shows a red circle on the left?", "Which page shows a blue cross on the right?"]
    queries = Dataset.from_dict({"id": ["a", "b"], "text": texts})
    wrapper = MetaEmbedWrapper(str(run.checkpoint), budget=(4, 8))
    for task, instruction in [
        (
            resolve_tasks(["Vidore2ESGReportsHLRetrieval"])[0],
            "Find a screenshot that relevant to the user's question.",
        ),
        (
            resolve_tasks(["VOC2007"], mmeb_dir=run.mmeb)[0],
            "",
        ),  # MMEB: the instruction is already in the text
    ]:
        loader = create_dataloader(queries, task_metadata=task.metadata, prompt_type=PromptType.query)
        encoded = wrapper._encode(
            loader,
            task_metadata=task.metadata,
            hf_split="test",
            hf_subset="default",
            prompt_type=PromptType.query,
        )
        expected = reference.encode_queries(texts, processor, budget=4, instruction=instruction)
        torch.testing.assert_close(encoded, expected, atol=1e-5, rtol=1e-5)
        other = reference.encode_queries(texts, processor, budget=4, instruction="Something else entirely.")
        assert (encoded - other).abs().max() > 1e-4


def test_both_backends_agree(run):
    from metaembed.evaluation.wrapper import MetaEmbedWrapper

    items = ["a red circle on the left", {"text": "Represent the given image.", "image": None}]
    items[1]["image"] = str(next((run.mmeb / "images" / "RefCOCO").glob("candidate_*.png")))
    encodings = []
    for backend in ("sentence-transformers", "transformers"):
        wrapper = MetaEmbedWrapper(str(run.checkpoint), backend=backend)
        encodings.append(
            wrapper.encoder.encode(items, role="candidate", budget=8, instruction=None, batch_size=2)
        )
    assert (
        type(MetaEmbedWrapper(str(run.checkpoint)).model).__name__ == "MultiVectorEncoder"
    )  # auto: mteb's path
    torch.testing.assert_close(encodings[0], encodings[1], atol=1e-5, rtol=1e-5)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
