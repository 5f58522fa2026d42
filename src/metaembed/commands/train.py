"""`metaembed train --config cfg.yaml`: MMR training of a MetaEmbed model from a config file.

Several GPUs or nodes: `accelerate launch -m metaembed.cli train --config cfg.yaml` (or `torchrun -m metaembed.cli
train ...`). See `metaembed.training.config` for the file's keys.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the `train` command."""
    parser = subparsers.add_parser(
        "train",
        help="Train a MetaEmbed model with the MMR loss.",
        description=(
            "Train a MetaEmbed model (from a backbone or a MetaEmbed checkpoint) with Matryoshka Multi-Vector "
            "Retrieval and LoRA, and write a checkpoint that loads with AutoModel and MultiVectorEncoder."
        ),
    )
    parser.add_argument("--config", required=True, help="A .yaml / .yml / .json training config.")
    parser.add_argument("--output-dir", help="Overrides the config's output_dir.")
    parser.add_argument("--max-steps", type=int, help="Overrides training.max_steps.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from metaembed.training import load_train_config, train

    overrides = {"output_dir": args.output_dir} if args.output_dir else {}
    config = load_train_config(args.config, overrides)
    if args.max_steps is not None:
        config.training["max_steps"] = args.max_steps
    output = train(config)
    logger.info("Trained checkpoint: %s", output)
    return 0
