"""The ``metaembed`` command line.

Each sub-command lives in its own module under :mod:`metaembed.commands` and exposes
``register(subparsers)``; modules are imported only when their command runs, so ``metaembed --help``
stays fast and a missing optional dependency only affects the command that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# command name -> (module, one-line help). Keep this table the single place that lists commands.
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("metaembed.commands.bench", "Benchmark budgeted MaxSim scoring against peers."),
    "train": ("metaembed.commands.train", "Train a MetaEmbed model with the MMR loss."),
    "eval": ("metaembed.commands.evaluate", "Evaluate a checkpoint on MTEB/MMEB tasks at every budget."),
    "index": ("metaembed.commands.index", "Encode a folder or JSONL file into an on-disk index."),
    "search": ("metaembed.commands.search", "Search an on-disk index at a budget."),
    "push": ("metaembed.commands.push", "Upload a checkpoint with its code, configs and model card."),
    "quickstart": ("metaembed.commands.quickstart", "Run the offline end-to-end demo."),
    "experiment": ("metaembed.commands.experiment", "Run the reproducible experiments (MMR ablation)."),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """Builds the parser, importing only the module of the command named in ``argv``."""
    parser = argparse.ArgumentParser(
        prog="metaembed", description="MetaEmbed for the Hugging Face ecosystem."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Log at DEBUG level.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    requested = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        if name == requested:
            importlib.import_module(module_name).register(subparsers)
        else:
            subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``metaembed`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.command is None or not hasattr(args, "func"):
        parser.print_help()
        return 0 if args.command is None else 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
