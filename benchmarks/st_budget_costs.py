"""What budgets cost through sentence-transformers, and what MMR costs over a single group.

1. Encoding: `MultiVectorEncoder.encode_document` / `encode_query` at budget 1 against the full count, on a causal
   (Qwen2-shaped, random weights) backbone: a causal backbone runs only the meta tokens a budget needs.
2. The MMR loss against a single-group InfoNCE on the same batch, forward + backward: on fixed embeddings (the
   scoring head alone, where the groups' extra work lives) and through the model (a whole training step).
3. With `--learning`: the held-out Recall@1 table per budget, before and after the MiniLM docstring run.

Prints Markdown tables and writes JSON. Run: `python benchmarks/st_budget_costs.py --json outputs/st_budget_costs.json`
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from metaembed.fileio import write_json

logger = logging.getLogger("st_budget_costs")


def _median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _causal_encoder(hidden_size: int, layers: int, query_tokens: int, candidate_tokens: int):
    from metaembed.st_module import build_multi_vector_encoder
    from metaembed.testing import build_tiny_metaembed

    model, processor = build_tiny_metaembed(
        "qwen2",
        hidden_size=hidden_size,
        num_layers=layers,
        num_query_meta_tokens=query_tokens,
        num_candidate_meta_tokens=candidate_tokens,
    )
    return build_multi_vector_encoder(model, processor, device="cpu")


def encode_costs(args: argparse.Namespace) -> dict[str, Any]:
    encoder = _causal_encoder(args.hidden_size, args.layers, 16, 64)
    words = [
        "the",
        "budget",
        "decides",
        "how",
        "many",
        "meta",
        "tokens",
        "a",
        "causal",
        "backbone",
        "has",
        "to",
        "run",
    ]
    texts = [" ".join(words[i % len(words) :] + words[: i % len(words)]) for i in range(args.items)]
    length = encoder.preprocess(texts[:1], task="document")["input_ids"].shape[1]
    rows = []
    for method, role, budgets in (
        ("encode_document", "document", (1, 64)),
        ("encode_query", "query", (1, 16)),
    ):
        seconds = {
            budget: _median_seconds(
                lambda budget=budget, method=method: getattr(encoder, method)(
                    texts, budget=budget, batch_size=args.batch_size
                ),
                args.repeats,
            )
            for budget in budgets
        }
        low, high = budgets
        rows.append(
            {
                "call": method,
                "budget_low": low,
                "budget_high": high,
                "seconds_low": seconds[low],
                "seconds_high": seconds[high],
                "ratio_high_over_low": seconds[high] / seconds[low],
                "tokens_low": length + (16 if role == "document" else 0) + low,
                "tokens_high": length + (16 if role == "document" else 0) + high,
            }
        )
    return {
        "backbone": f"qwen2, hidden {args.hidden_size}, {args.layers} layers, random weights, 16/64 meta tokens",
        "items": args.items,
        "batch_size": args.batch_size,
        "input_tokens": length,
        "rows": rows,
    }


def loss_costs(args: argparse.Namespace) -> dict[str, Any]:
    from metaembed.st_module import MMRLoss, mmr_loss

    groups = [(1, 1), (2, 4), (4, 8), (8, 16), (16, 64)]
    generator = torch.Generator().manual_seed(0)
    batch, negatives, dim = args.loss_batch, 1, args.loss_dim
    query = F.normalize(torch.randn(batch, 16, dim, generator=generator), dim=-1).requires_grad_()
    positive = F.normalize(torch.randn(batch, 64, dim, generator=generator), dim=-1).requires_grad_()
    negative = F.normalize(
        torch.randn(batch, negatives, 64, dim, generator=generator), dim=-1
    ).requires_grad_()

    def head(budgets):
        def step():
            loss = mmr_loss(query, positive, negative, budgets=budgets)
            loss.backward()
            query.grad = positive.grad = negative.grad = None

        return step

    head_single = _median_seconds(head(groups[-1:]), args.repeats * 3)
    head_mmr = _median_seconds(head(groups), args.repeats * 3)

    encoder = _causal_encoder(args.hidden_size, args.layers, 16, 64)
    texts = [f"query {i} about the budgets of late interaction" for i in range(args.step_batch)]
    documents = [
        f"document {i}: MaxSim sums, over query vectors, the best match" for i in range(args.step_batch)
    ]
    features = [
        encoder.preprocess(texts, task="query"),
        encoder.preprocess(documents, task="document"),
        encoder.preprocess(documents[::-1], task="document"),
    ]

    def full(loss_fn):
        def step():
            loss_fn(features).backward()
            encoder.zero_grad()

        return step

    step_single = _median_seconds(full(MMRLoss(encoder, mmr=False)), args.repeats)
    step_mmr = _median_seconds(full(MMRLoss(encoder)), args.repeats)
    return {
        "groups": groups,
        "scoring_head": {
            "shape": f"B={batch}, 1 hard negative, R_q=16, R_c=64, d={dim}",
            "seconds_single_group": head_single,
            "seconds_mmr": head_mmr,
            "ratio": head_mmr / head_single,
        },
        "training_step": {
            "shape": f"B={args.step_batch}, 1 hard negative, {encoder[0].model.config.backbone_config.model_type} "
            f"hidden {args.hidden_size} x {args.layers} layers",
            "seconds_single_group": step_single,
            "seconds_mmr": step_mmr,
            "ratio": step_mmr / step_single,
        },
    }


def learning_table(args: argparse.Namespace) -> dict[str, Any]:
    from metaembed.testing import minilm_path
    from metaembed.training.stdlib_demo import train_on_stdlib_docstrings

    result = train_on_stdlib_docstrings(minilm_path(), Path(args.workdir), steps=args.steps, batch_size=8)
    print(result.table())
    return result.to_json()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="outputs/st_budget_costs.json", help="Where to write the results.")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is steadiest on shared CPUs)."
    )
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loss-batch", type=int, default=32)
    parser.add_argument("--loss-dim", type=int, default=512)
    parser.add_argument("--step-batch", type=int, default=16)
    parser.add_argument("--learning", action="store_true", help="Also run the MiniLM docstring learning run.")
    parser.add_argument("--steps", type=int, default=200, help="Steps of the learning run.")
    parser.add_argument("--workdir", default="outputs/stdlib-run", help="Folder of the learning run.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    results: dict[str, Any] = {"threads": args.threads, "torch": torch.__version__}
    results["encode"] = encode_costs(args)
    print(f"\nEncode time through MultiVectorEncoder ({results['encode']['backbone']}, {args.items} items):")
    print("| call | budget | seconds | tokens per item | budget | seconds | tokens per item | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for row in results["encode"]["rows"]:
        print(
            f"| {row['call']} | {row['budget_low']} | {row['seconds_low']:.3f} | {row['tokens_low']} | "
            f"{row['budget_high']} | {row['seconds_high']:.3f} | {row['tokens_high']} | "
            f"{row['ratio_high_over_low']:.2f}x |"
        )
    results["loss"] = loss_costs(args)
    print("\nMMR (5 groups) against the single largest group, forward + backward:")
    print("| what | single group (s) | MMR (s) | ratio |\n|---|---|---|---|")
    for name in ("scoring_head", "training_step"):
        row = results["loss"][name]
        print(f"| {name} ({row['shape']}) | {row['seconds_single_group']:.4f} | {row['seconds_mmr']:.4f} | "
              f"{row['ratio']:.3f}x |")  # fmt: skip
    if args.learning:
        results["learning"] = learning_table(args)
    output = write_json(args.json, results, default=str)
    print(f"\nWrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
