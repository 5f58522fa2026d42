"""Train a MetaEmbed text model on the standard library's docstrings and measure Recall@1 per budget.

The smallest real learning run: a text backbone (all-MiniLM-L6-v2 in the tests), the docstring retrieval set of
`metaembed.data.stdlib_docstrings` (queries: one-line summaries; documents: the rest of the docstrings; the test
split holds modules never trained on), `metaembed train` driven by a YAML config, and held-out Recall@1 at every
budget before and after. The learning test, the budget-cost benchmark and the quickstart demo share it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fileio import write_json

logger = logging.getLogger(__name__)


@dataclass
class StdlibRunResult:
    """Held-out Recall@1 per budget before and after training, and where the checkpoint went."""

    before: dict[tuple[int, int], float]
    after: dict[tuple[int, int], float]
    checkpoint: Path
    train_seconds: float
    num_train_pairs: int
    num_test_pairs: int
    config: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        """A Markdown table: one row per budget."""
        lines = ["| budget (r_q, r_c) | Recall@1 before | Recall@1 after |", "|---|---|---|"]
        for budget, before in self.before.items():
            lines.append(f"| {budget} | {before:.3f} | {self.after[budget]:.3f} |")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "recall_at_1": [
                {"budget": list(b), "before": self.before[b], "after": self.after[b]} for b in self.before
            ],
            "checkpoint": str(self.checkpoint),
            "train_seconds": self.train_seconds,
            "num_train_pairs": self.num_train_pairs,
            "num_test_pairs": self.num_test_pairs,
            "config": self.config,
        }


def train_on_stdlib_docstrings(
    backbone: str | os.PathLike,
    workdir: str | os.PathLike,
    *,
    steps: int = 200,
    batch_size: int = 8,
    learning_rate: float = 2e-3,
    max_length: int = 24,
    num_query_meta_tokens: int = 4,
    num_candidate_meta_tokens: int = 8,
    hard_negatives: bool = False,
    lora: bool = True,
    seed: int = 42,
) -> StdlibRunResult:
    """Builds a MetaEmbed model around `backbone`, trains it with `metaembed train`, and evaluates it.

    Args:
        backbone: A text backbone folder or Hub id (e.g. all-MiniLM-L6-v2).
        workdir: Receives `train.jsonl`, `train.yaml` and the checkpoint folder `checkpoint/`.
        steps, batch_size, learning_rate: The run's length, batch and (constant after 5 warm-up steps) rate.
        max_length: Token cap of every input (summaries and docstring bodies are cut to it).
        num_query_meta_tokens, num_candidate_meta_tokens: The meta token counts; the budgets are the paper's
            groups clipped to them.
        hard_negatives: Train with one hard negative per query (another docstring of the same module).
        lora: LoRA (r=32, alpha=32, dropout 0.1) rather than full fine-tuning.
        seed: Seeds the meta tokens and the trainer.

    Returns:
        The [`StdlibRunResult`].

    Example:
        >>> from metaembed.testing import minilm_path
        >>> result = train_on_stdlib_docstrings(minilm_path(), "outputs/stdlib-run")
        >>> print(result.table())
    """
    import yaml

    from ..cli import main as cli_main
    from ..data.stdlib_docstrings import load_stdlib_docstrings, recall_at_1_by_budget, write_jsonl
    from ..modeling_metaembed import MetaEmbedModel
    from ..processing_metaembed import MetaEmbedProcessor
    from ..st_module import build_multi_vector_encoder

    workdir = Path(workdir)
    train_pairs = load_stdlib_docstrings("train", hard_negatives=hard_negatives)
    test_pairs = load_stdlib_docstrings("test")
    data_file = write_jsonl(train_pairs, workdir / "train.jsonl")
    queries = [pair.query for pair in test_pairs]
    documents = [pair.document for pair in test_pairs]
    counts = {
        "num_query_meta_tokens": num_query_meta_tokens,
        "num_candidate_meta_tokens": num_candidate_meta_tokens,
    }

    untrained = MetaEmbedModel.from_backbone(str(backbone), seed=seed, **counts).eval()
    processor = MetaEmbedProcessor.from_backbone(
        str(backbone), num_meta_tokens=untrained.config.num_meta_tokens, max_length=max_length
    )
    budgets = [tuple(b) for b in untrained.config.budgets]
    before = recall_at_1_by_budget(
        build_multi_vector_encoder(untrained, processor), queries, documents, budgets
    )
    del untrained

    config = {
        "model": str(backbone),
        "output_dir": str(workdir / "checkpoint"),
        **counts,
        "seed": seed,
        "processor": {"max_length": max_length},
        "data": {"train": str(data_file)},
        "lora": {"enabled": lora},
        "training": {
            "max_steps": steps,
            "per_device_train_batch_size": batch_size,
            "learning_rate": learning_rate,
            "warmup_steps": 5,
            "lr_scheduler_type": "constant_with_warmup",
            "save_strategy": "no",
            "logging_steps": max(1, steps // 5),
            "disable_tqdm": True,
        },
    }
    config_file = workdir / "train.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    start = time.perf_counter()
    if cli_main(["train", "--config", str(config_file)]) != 0:
        raise RuntimeError(f"metaembed train --config {config_file} failed.")
    seconds = time.perf_counter() - start

    from sentence_transformers import MultiVectorEncoder

    trained = MultiVectorEncoder(config["output_dir"], trust_remote_code=True, device="cpu")
    after = recall_at_1_by_budget(trained, queries, documents, budgets)
    result = StdlibRunResult(
        before, after, Path(config["output_dir"]), seconds, len(train_pairs), len(queries), config
    )
    write_json(workdir / "recall_at_1.json", result.to_json())
    logger.info("Held-out Recall@1 per budget:\n%s", result.table())
    return result


__all__ = ["StdlibRunResult", "train_on_stdlib_docstrings"]
