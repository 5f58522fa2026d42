"""`metaembed push CHECKPOINT REPO_ID`: upload a complete checkpoint (code, configs, weights, card) to the Hub."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "push",
        help="Upload a checkpoint with its code, configs and model card.",
        description="Checks that a MetaEmbed checkpoint is complete, then uploads exactly its files to the Hub.",
    )
    parser.add_argument("checkpoint", help="Directory written by metaembed.checkpoint.save_checkpoint.")
    parser.add_argument("repo_id", help="Target Hub repo, e.g. my-org/metaembed-3b.")
    parser.add_argument("--private", action="store_true", help="Create the repo as private.")
    parser.add_argument("--revision", default=None, help="Branch to push to (default: main).")
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in token).")
    parser.add_argument("--dry-run", action="store_true", help="Print the upload plan without uploading.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hub import push_checkpoint

    plan = push_checkpoint(
        args.checkpoint,
        args.repo_id,
        private=args.private,
        token=args.token,
        revision=args.revision,
        dry_run=args.dry_run,
    )
    print(
        f"{'Would upload' if args.dry_run else 'Uploaded'} {len(plan.files)} files ({plan.total_bytes():,} bytes):"
    )
    for name in plan.files:
        print(f"  {name}")
    return 0
