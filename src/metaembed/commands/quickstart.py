"""`metaembed quickstart`: the offline end-to-end demo behind `make demo`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quickstart",
        help="Run the offline end-to-end demo.",
        description=(
            "Builds a retrieval set from the standard library's docstrings, trains MetaEmbed on the real "
            "all-MiniLM-L6-v2 with MMR, ships and reloads the checkpoint by a simulated Hub id, indexes and "
            "searches the held-out documents, and evaluates every budget through mteb."
        ),
    )
    # Defaults live in QuickstartSettings only; an option left out keeps the settings' value.
    parser.add_argument("--output-dir", type=Path, help="Where everything is written (outputs/quickstart).")
    parser.add_argument("--train-steps", type=int, help="Training steps per variant.")
    parser.add_argument("--batch-size", type=int, help="(query, document) pairs per step.")
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--max-test-pairs", type=int, help="Held-out pairs to evaluate on.")
    parser.add_argument("--max-train-pairs", type=int)
    parser.add_argument(
        "--no-nommr", action="store_true", help="Skip the NoMMR ablation (halves training time)."
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..quickstart import QuickstartSettings, run_quickstart

    options = {
        "output_dir": args.output_dir,
        "train_steps": args.train_steps,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "max_test_pairs": args.max_test_pairs,
        "max_train_pairs": args.max_train_pairs,
    }
    settings = QuickstartSettings(**{key: value for key, value in options.items() if value is not None})
    if args.no_nommr:
        settings.with_nommr = False
    run_quickstart(settings)
    return 0
