"""Writes the README.md model card of a MetaEmbed checkpoint.

The card's YAML header is built with `huggingface_hub.ModelCardData` (so the Hub parses it, `model-index`
included) and its body from `template.md` beside this file: what MetaEmbed is, the budget table (quality, vectors,
bytes per item), usage for transformers, sentence-transformers and MTEB, training details and the citation.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..fileio import atomic_write_text

logger = logging.getLogger(__name__)

TEMPLATE_PATH = Path(__file__).with_name("template.md")
BYTES_PER_VALUE = 2  # bfloat16 index


@dataclass(frozen=True)
class BudgetScore:
    """One evaluation result at one budget, as the card's `model-index` records it.

    Args:
        budget: `(r_q, r_c)`.
        task_type: Hub task type, e.g. `"retrieval"` or `"visual-document-retrieval"`.
        dataset_name: Human-readable dataset name, e.g. `"MMEB VOC2007"`.
        dataset_type: Hub dataset id, e.g. `"TIGER-Lab/MMEB-eval"`.
        metric_type: Metric id, e.g. `"ndcg_at_10"` or `"precision_at_1"`.
        value: The score (0..1 or 0..100, as the evaluator reports it).
        dataset_config: Subset name, if any.
        dataset_split: Split, e.g. `"test"`.
    """

    budget: tuple[int, int]
    task_type: str
    dataset_name: str
    dataset_type: str
    metric_type: str
    value: float
    dataset_config: str | None = None
    dataset_split: str | None = "test"

    def to_eval_result(self) -> EvalResult:
        r_q, r_c = self.budget
        return EvalResult(
            task_type=self.task_type,
            dataset_type=self.dataset_type,
            dataset_name=self.dataset_name,
            dataset_config=self.dataset_config,
            dataset_split=self.dataset_split,
            metric_type=self.metric_type,
            metric_value=float(self.value),
            metric_name=f"{self.metric_type} @ budget ({r_q},{r_c})",
            metric_config=f"budget={r_q},{r_c}",
        )


def transformers_snippet(model_id: str, budget: tuple[int, int], multimodal: bool) -> str:
    r_q, r_c = budget
    candidates = (
        '[{"text": "A bar chart of quarterly revenue.", "image": Image.new("RGB", (64, 64))}, "A cat on a mat."]'
        if multimodal
        else '["MaxSim sums, over query vectors, the best-matching document vector.", "A cat on a mat."]'
    )
    image_import = "from PIL import Image\n" if multimodal else ""
    return (
        f"{image_import}from transformers import AutoModel, AutoProcessor\n\n"
        f'model = AutoModel.from_pretrained("{model_id}", trust_remote_code=True)\n'
        f'processor = AutoProcessor.from_pretrained("{model_id}", trust_remote_code=True)\n'
        f'queries = model.encode_queries(["How is late interaction scored?"], processor, budget={r_q})\n'
        f"candidates = model.encode_candidates({candidates}, processor, budget={r_c})\n"
        f"print(model.score(queries, candidates, budget=({r_q}, {r_c})))"
    )


def sentence_transformers_snippet(model_id: str, budget: tuple[int, int]) -> str:
    r_q, r_c = budget
    return (
        "from sentence_transformers import MultiVectorEncoder\n\n"
        f'model = MultiVectorEncoder("{model_id}", trust_remote_code=True)\n'
        f'queries = model.encode_query(["How is late interaction scored?"], budget={r_q})\n'
        "documents = model.encode_document(\n"
        '    ["MaxSim sums, over query vectors, the best-matching document vector.", "A cat on a mat."],\n'
        f"    budget={r_c},\n"
        ")\n"
        f"print(model.similarity(queries, documents, budget=({r_q}, {r_c})))"
    )


def default_mteb_snippet(model_id: str, budget: tuple[int, int]) -> str:
    r_q, r_c = budget
    return (
        "# pip install metaembed  (this project: the mteb wrapper with budgets); mteb downloads the task's data\n"
        "import mteb\n"
        "from metaembed.evaluation import MetaEmbedWrapper\n\n"
        f'model = MetaEmbedWrapper("{model_id}", budget=({r_q}, {r_c}))\n'
        'results = mteb.evaluate(model, mteb.get_tasks(tasks=["Vidore2ESGReportsRetrieval"]))\n'
        "# every budget in one pass: metaembed eval --model "
        f'{model_id} --tasks "ViDoRe(v2)" --budgets all'
    )


def _human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _load_config(checkpoint_dir: Path) -> dict[str, Any]:
    config_path = checkpoint_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{checkpoint_dir} has no config.json; save the model there first.")
    config = json.loads(config_path.read_text())
    if config.get("model_type") != "metaembed":
        raise ValueError(
            f"{config_path} describes a {config.get('model_type')!r} model, not a MetaEmbed checkpoint "
            "(model_type 'metaembed')."
        )
    return config


def _count_parameters(checkpoint_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for weights in sorted(checkpoint_dir.glob("*.safetensors")):
        with safe_open(weights, "pt") as file:
            for key in file.keys():  # noqa: SIM118 - safe_open handles are not iterable
                total += _numel(file.get_slice(key).get_shape())
    return total


def _numel(shape: Sequence[int]) -> int:
    count = 1
    for size in shape:
        count *= int(size)
    return count


def build_model_card(
    checkpoint_dir: str | os.PathLike,
    *,
    model_id: str,
    base_model: str | None = None,
    license: str = "apache-2.0",
    datasets: Sequence[str] = (),
    language: Sequence[str] | None = None,
    scores: Iterable[BudgetScore] = (),
    training_details: str | None = None,
    example_budget: tuple[int, int] | None = None,
    mteb_snippet: str | None = None,
) -> ModelCard:
    """Builds the model card of a saved MetaEmbed checkpoint.

    Args:
        checkpoint_dir: A directory holding the checkpoint's `config.json` and safetensors weights.
        model_id: The Hub repo id the card's snippets load, e.g. `"my-org/metaembed-3b"`.
        base_model: Hub id of the backbone, e.g. `"Qwen/Qwen2.5-VL-3B-Instruct"`.
        license: SPDX-style license id.
        datasets: Hub ids of the training data.
        language: Language codes.
        scores: Evaluation results per budget, written to `model-index` and summarised in the budget table.
        training_details: Markdown describing the training run.
        example_budget: The budget the usage snippets use (defaults to the middle of `config.budgets`).
        mteb_snippet: Replaces the default MTEB usage snippet.

    Returns:
        A `huggingface_hub.ModelCard`; `card.save(path)` writes it, `ModelCard.load(path)` parses it back.

    Example:
        >>> card = build_model_card("outputs/checkpoint", model_id="my-org/metaembed-minilm", base_model="sentence-transformers/all-MiniLM-L6-v2")
        >>> card.data.tags[:2]
        ['sentence-transformers', 'mteb']
    """
    checkpoint_dir = Path(checkpoint_dir)
    config = _load_config(checkpoint_dir)
    backbone = config["backbone_config"]
    text_backbone = backbone.get("text_config") or backbone
    dim = config.get("embedding_dim") or text_backbone["hidden_size"]
    multimodal = backbone.get("vision_config") is not None
    budgets = [tuple(b) for b in config["budgets"]]
    example_budget = tuple(example_budget or budgets[len(budgets) // 2])
    scores = list(scores)

    by_budget: dict[tuple[int, int], list[BudgetScore]] = {}
    for score in scores:
        by_budget.setdefault(tuple(score.budget), []).append(score)
    metric_names = sorted({score.metric_type for score in scores})
    if len(metric_names) == 1:
        quality_header = f"mean {metric_names[0]}"
    elif metric_names:
        quality_header = "mean score (" + ", ".join(metric_names) + ")"
    else:
        quality_header = "quality"
    rows = []
    for r_q, r_c in sorted(set(budgets) | set(by_budget)):
        results = by_budget.get((r_q, r_c), [])
        quality = f"{sum(s.value for s in results) / len(results):.4f}" if results else "not evaluated"
        rows.append(
            {
                "r_q": r_q,
                "r_c": r_c,
                "candidate_bytes": f"{r_c * dim * BYTES_PER_VALUE:,}",
                "query_bytes": f"{r_q * dim * BYTES_PER_VALUE:,}",
                "quality": quality,
            }
        )
    evaluated_sets = sorted({s.dataset_name for s in scores})
    quality_note = (
        f"Quality is the mean over {len(evaluated_sets)} evaluation set(s): {', '.join(evaluated_sets)}."
        if scores
        else "This checkpoint has not been evaluated yet; `metaembed eval` fills this column."
    )

    card_data = ModelCardData(
        model_name=model_id.split("/")[-1],
        library_name="sentence-transformers",
        pipeline_tag="visual-document-retrieval" if multimodal else "sentence-similarity",
        base_model=base_model,
        license=license,
        datasets=list(datasets) or None,
        language=list(language) if language else None,
        tags=[
            "sentence-transformers",
            "mteb",
            "metaembed",
            "multi-vector",
            "late-interaction",
            "matryoshka",
            "transformers",
            *(["vision-language"] if multimodal else []),
        ],
        eval_results=[score.to_eval_result() for score in scores] or None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=model_id.split("/")[-1],
        base_model=base_model,
        backbone_type=backbone["model_type"],
        n_parameters=_human_count(_count_parameters(checkpoint_dir)),
        modalities="text and images" if multimodal else "text",
        num_query_meta_tokens=config["num_query_meta_tokens"],
        num_candidate_meta_tokens=config["num_candidate_meta_tokens"],
        dim=dim,
        budget_rows=rows,
        quality_header=quality_header,
        quality_note=quality_note,
        transformers_snippet=transformers_snippet(model_id, example_budget, multimodal),
        sentence_transformers_snippet=sentence_transformers_snippet(model_id, example_budget),
        mteb_snippet=mteb_snippet or default_mteb_snippet(model_id, example_budget),
        training_details=training_details or "No training details were recorded for this checkpoint.",
    )


def save_model_card(checkpoint_dir: str | os.PathLike, **kwargs: Any) -> Path:
    """Builds the card with [`build_model_card`] and writes it atomically to `checkpoint_dir/README.md`."""
    card = build_model_card(checkpoint_dir, **kwargs)
    path = atomic_write_text(Path(checkpoint_dir) / "README.md", str(card))
    logger.info("Wrote the model card to %s", path)
    return path


def scores_from_mapping(
    results: Mapping[tuple[int, int], Mapping[str, float]],
    *,
    metric_type: str,
    dataset_type: str,
    task_type: str = "retrieval",
) -> list[BudgetScore]:
    """Converts `{budget: {dataset_name: value}}` (what a budget sweep returns) into [`BudgetScore`]s.

    Each dataset name is also the `dataset_config`: the Hub's `model-index` groups results by dataset type and
    config, so subsets that share a dataset type (MMEB's 36) stay apart only through their config.
    """
    return [
        BudgetScore(
            budget=tuple(budget),
            task_type=task_type,
            dataset_name=name,
            dataset_type=dataset_type,
            dataset_config=name,
            metric_type=metric_type,
            value=value,
        )
        for budget, per_dataset in results.items()
        for name, value in per_dataset.items()
    ]
