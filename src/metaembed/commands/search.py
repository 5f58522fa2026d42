"""`metaembed search INDEX "query" --budget 4,8 --k 10`: ranked ids, scores and metadata."""

from __future__ import annotations

import argparse
import json


def budget_pair(text: str) -> tuple[int, int]:
    """Parses `"4,8"` into `(4, 8)`."""
    try:
        r_q, r_c = (int(part) for part in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"a budget is two integers 'r_q,r_c', got {text!r}") from error
    return r_q, r_c


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search",
        help="Search an on-disk index at a budget.",
        description="Encodes the queries with the index's model and prints the top hits.",
    )
    parser.add_argument("index", help="Index directory written by `metaembed index`.")
    parser.add_argument("queries", nargs="+", help="One or more query texts.")
    parser.add_argument("--budget", type=budget_pair, default=None, help="r_q,r_c (default: every vector).")
    parser.add_argument("--k", type=int, default=10, help="Hits per query.")
    parser.add_argument(
        "--two-stage", action="store_true", help="Shortlist at --first-stage, re-rank at --rerank."
    )
    parser.add_argument("--first-stage", type=budget_pair, default=(1, 1))
    parser.add_argument("--rerank", type=budget_pair, default=None, help="r_q,r_c (default: every vector).")
    parser.add_argument(
        "--candidates", type=int, default=1000, help="Shortlist size of the two-stage search."
    )
    parser.add_argument("--model", default=None, help="Query encoder (default: the model the index records).")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..indexing import load_model, search_index

    model = processor = None
    if args.model:
        model, processor = load_model(args.model)
    two_stage = args.two_stage or args.rerank is not None
    hits = search_index(
        args.index,
        args.queries,
        model=model,
        processor=processor,
        budget=None if two_stage else args.budget,
        k=args.k,
        first_stage=args.first_stage if two_stage else None,
        rerank=args.rerank if two_stage else None,
        candidates=args.candidates,
    )
    if args.json:
        print(json.dumps([{"query": q, "hits": h} for q, h in zip(args.queries, hits)], indent=2))
        return 0
    for query, query_hits in zip(args.queries, hits):
        print(f"\nQuery: {query}")
        for rank, hit in enumerate(query_hits, start=1):
            metadata = json.dumps(hit["metadata"], ensure_ascii=False)
            if len(metadata) > 120:
                metadata = metadata[:117] + "..."
            print(f"{rank:>3}. {hit['score']:8.4f}  {hit['id']}  {metadata}")
    return 0
