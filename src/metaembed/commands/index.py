"""`metaembed index MODEL INPUT OUT`: encode a folder or JSONL file into an on-disk index (resumable, sharded)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "index",
        help="Encode a folder or JSONL file into an on-disk index.",
        description=(
            "Encodes every item at the full candidate budget into OUT. Rerunning resumes where a killed run "
            "stopped. Under `accelerate launch` each process writes its own shard."
        ),
    )
    parser.add_argument("model", help="MetaEmbed checkpoint directory or Hub repo id.")
    parser.add_argument(
        "input", help="A folder of images and text files, or a JSONL file (text / image / id)."
    )
    parser.add_argument("out", help="Index directory to create or resume.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--save-every", type=int, default=256, help="Items between atomic saves.")
    parser.add_argument(
        "--dtype", default="bfloat16", choices=["bfloat16", "float16", "float8_e4m3", "int8", "float32"]
    )
    parser.add_argument("--revision", default=None, help="Hub revision of the model.")
    parser.add_argument("--device", default=None, help="Device to encode on (default: accelerate's choice).")
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..indexing import build_index, load_model

    device = args.device
    if device is None:
        from accelerate import PartialState

        device = str(PartialState().device)
    model, processor = load_model(args.model, revision=args.revision, device=device)
    report = build_index(
        model,
        args.input,
        args.out,
        processor=processor,
        model_name=args.model,
        batch_size=args.batch_size,
        save_every=args.save_every,
        dtype=args.dtype,
        show_progress_bar=not args.no_progress,
    )
    print(
        f"Indexed {report.indexed} new items into {report.shard} "
        f"({report.already_present} were already there, {len(report.skipped)} skipped)."
    )
    if report.skipped:
        print("Skipped items:")
        for record in report.skipped:
            print(f"  {record['id']}: {record['reason']}")
    return 0
