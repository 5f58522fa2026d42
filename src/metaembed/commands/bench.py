"""``metaembed bench``: benchmarks. ``metaembed bench scoring`` runs :mod:`metaembed.bench.scoring`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..fileio import write_json
from ..scoring import DEFAULT_BUDGETS

logger = logging.getLogger(__name__)


def _budget(text: str) -> tuple[int, int]:
    try:
        r_q, r_c = (int(part) for part in text.replace("x", ",").split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"A budget is 'r_q,r_c' (e.g. 16,64), got {text!r}.") from error
    if r_q < 1 or r_c < 1:
        raise argparse.ArgumentTypeError(f"Budget values must be positive, got {text!r}.")
    return r_q, r_c


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``bench`` and its ``scoring`` sub-command to the ``metaembed`` parser."""
    parser = subparsers.add_parser("bench", help="Benchmark budgeted MaxSim scoring against peers.")
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    scoring = benchmarks.add_parser(
        "scoring",
        help="The paper's efficiency table: ours vs sentence-transformers maxsim, a naive einsum, and the card's ceilings.",
        description=(
            "Measures budgeted MaxSim (one query, and per query in a batch) against sentence-transformers' "
            "maxsim, a naive chunked einsum and a plain GEMM, plus the device's bf16 GEMM rate and copy "
            "bandwidth, on seeded synthetic embeddings. Defaults: N=10k, d=2048, Q=32 on cpu; N=100k, "
            "d=3584, Q=1000 on cuda."
        ),
    )
    scoring.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="Device to benchmark.")
    scoring.add_argument("--candidates", type=int, default=None, help="Number of candidates N.")
    scoring.add_argument("--dim", type=int, default=None, help="Vector dimension d.")
    scoring.add_argument("--queries", type=int, default=None, help="Batch size Q of the batched measurement.")
    scoring.add_argument(
        "--dtype",
        default="bfloat16",
        help="Index storage dtype: bfloat16, float16, float8_e4m3 or int8 (quantized ones are also compared to bf16).",
    )
    scoring.add_argument(
        "--budgets",
        nargs="+",
        type=_budget,
        default=list(DEFAULT_BUDGETS),
        metavar="RQ,RC",
        help="Budgets to measure, e.g. --budgets 1,1 8,16 16,64 (default: the paper's five groups).",
    )
    scoring.add_argument(
        "--strategy",
        choices=["auto", "slots", "stacked"],
        default="auto",
        help="Scoring GEMM layout: per-slot GEMMs with a running max, or stacked GEMMs and one max.",
    )
    scoring.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="Timed runs per measurement (the best is reported, the median kept in the JSON).",
    )
    scoring.add_argument(
        "--peer-seconds",
        type=float,
        default=None,
        help="Target seconds per timed peer run before subsampling N.",
    )
    scoring.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's own choice)."
    )
    scoring.add_argument("--seed", type=int, default=0, help="Seed of the synthetic embeddings.")
    scoring.add_argument(
        "--json", type=Path, default=None, metavar="PATH", help="Write the results as JSON here."
    )
    scoring.set_defaults(func=_run_scoring)


def _run_scoring(args: argparse.Namespace) -> int:
    import torch

    from ..bench.scoring import ScoringBenchmarkConfig, format_table, run_scoring_benchmark
    from ..index import canonical_dtype

    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be positive, got {args.threads}.")
        torch.set_num_threads(args.threads)
    config = ScoringBenchmarkConfig(
        device=args.device,
        candidates=args.candidates,
        dim=args.dim,
        queries=args.queries,
        dtype=canonical_dtype(args.dtype),
        budgets=args.budgets,
        repeats=args.repeats,
        peer_seconds=args.peer_seconds,
        strategy=args.strategy,
        seed=args.seed,
    )
    result = run_scoring_benchmark(config)
    if args.json is not None:
        write_json(args.json, result)
        logger.info("Wrote %s", args.json)
    print(format_table(result))  # the final table is the command's output
    return 0
