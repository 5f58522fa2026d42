"""`metaembed eval`: evaluate a checkpoint on MMEB, ViDoRe or any mteb retrieval task at every budget.

Every input is encoded once at the full budget; each budget is scored from prefixes of those vectors. One run writes,
under ``--output-dir``:

- ``results/<org__name>/<revision>/...``: mteb's results layout, one experiment per budget (``experiments/
  budget_[r_q,r_c]/<task>.json``) and the full budget as the model's default (``<task>.json``);
- ``model_meta.py``: the ``ModelMeta`` (and its budget-aware loader) to paste into mteb's model registry;
- ``sweep.md`` / ``sweep_summary.json`` / ``sweep.png``: the table printed at the end, as Markdown and JSON, and the
  plot of score against budget.

Example:
    metaembed eval --model my-org/metaembed-qwen2.5-vl-3b --tasks MMEB --budgets all --output-dir outputs/eval
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def _local_dataset(value: str) -> tuple[str, str]:
    task, separator, directory = value.partition("=")
    if not separator or not task or not directory:
        raise argparse.ArgumentTypeError(f"expected TASK=DIRECTORY, got {value!r}")
    return task, directory


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="Evaluate a checkpoint on MTEB/MMEB tasks at every budget.",
        description=(
            "Evaluates a MetaEmbed checkpoint with mteb at every budget, encoding each input once at the full budget "
            "and scoring each budget by slicing. Writes mteb results (one experiment per budget), the ModelMeta "
            "code for mteb's registry, a table and a plot to --output-dir."
        ),
    )
    parser.add_argument(
        "--model", required=True, help="Hub repo id (org/name) or local checkpoint directory."
    )
    parser.add_argument(
        "--revision", default=None, help="Hub revision (default main; recorded as a commit hash)."
    )
    parser.add_argument(
        "--name", default=None, help="org/name recorded in results (default: the repo id, or local/<folder>)."
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=["MMEB"],
        metavar="TASK",
        help=(
            "MMEB, MMEB-IND, MMEB-OOD, MMEB-Classification/-VQA/-Retrieval/-VisualGrounding, an MMEB subset "
            "(VOC2007), an mteb benchmark (ViDoRe(v2)) or mteb task name. Default: MMEB."
        ),
    )
    parser.add_argument(
        "--budgets",
        default="all",
        help="'all' (the checkpoint's trained budget groups), 'full', or pairs such as 1x1,8x16,16x64.",
    )
    parser.add_argument("--output-dir", default="outputs/eval", help="Where results, table and plot go.")
    parser.add_argument(
        "--mmeb-dir", default=None, help="Local MMEB-eval copy (default: $METAEMBED_MMEB_DIR, then the Hub)."
    )
    parser.add_argument(
        "--mmeb-image-dir",
        default=None,
        help="Folder MMEB image paths are relative to (default: unzipped images).",
    )
    parser.add_argument(
        "--local-dataset",
        type=_local_dataset,
        action="append",
        default=[],
        metavar="TASK=DIR",
        help="Read an mteb task's dataset from a local copy of its Hub repo (repeatable).",
    )
    parser.add_argument("--cache-dir", default=None, help="Hugging Face Hub cache (default: $HF_HOME/hub).")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default=None, help="Default: cuda when available, else cpu.")
    parser.add_argument(
        "--dtype", default="auto", help="auto (bfloat16 on GPU, float32 on CPU), float32, ..."
    )
    parser.add_argument("--attn-implementation", default=None, help="e.g. sdpa or flash_attention_2.")
    parser.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "sentence-transformers", "transformers"],
        help="auto: sentence-transformers (mteb's MultiVectorWrapper) when the checkpoint ships its files.",
    )
    parser.add_argument(
        "--index-dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="Dtype the full-budget embeddings are kept in between budgets (and counted in index bytes).",
    )
    parser.add_argument(
        "--training-datasets",
        nargs="*",
        default=None,
        metavar="TASK",
        help="Task names (or MMEB groups, e.g. MMEB-IND) the checkpoint was trained on, for mteb's zero-shot flag.",
    )
    parser.add_argument("--overwrite", action="store_true", help="Recompute results that already exist.")
    parser.add_argument(
        "--no-instructions", action="store_true", help="Do not pass task prompts as instructions."
    )
    parser.add_argument("--progress", action="store_true", help="Show encoding progress bars.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import datasets
    import mteb
    import torch

    from ..evaluation.export import export_leaderboard
    from ..evaluation.report import format_sweep_table, plot_sweep, write_sweep_summary
    from ..evaluation.sweep import run_budget_sweep
    from ..evaluation.task_selection import resolve_tasks
    from ..evaluation.wrapper import MetaEmbedWrapper

    if not args.progress:
        datasets.disable_progress_bars()
    if not getattr(args, "verbose", False):
        logging.getLogger("mteb").setLevel(logging.WARNING)
    tasks = resolve_tasks(
        args.tasks,
        mmeb_dir=args.mmeb_dir,
        mmeb_image_dir=args.mmeb_image_dir,
        local_datasets=dict(args.local_dataset),
    )
    for task in tasks:
        check = getattr(task, "check_available", None)
        if check is not None:
            check()  # before the (possibly long) model load
    training = None
    if args.training_datasets is not None:
        training = {task.metadata.name for task in resolve_tasks(args.training_datasets)}
    model = MetaEmbedWrapper(
        args.model,
        args.revision,
        args.device,
        name=args.name,
        cache_dir=args.cache_dir,
        backend=args.backend,
        dtype=args.dtype,
        attn_implementation=args.attn_implementation,
        use_instructions=not args.no_instructions,
        training_datasets=training,
    )
    output = Path(args.output_dir)
    logger.info(
        "Evaluating %s @ %s on %d tasks, results in %s",
        model.mteb_model_meta.name,
        model.mteb_model_meta.revision,
        len(tasks),
        output,
    )
    sweep = run_budget_sweep(
        model,
        tasks,
        args.budgets,
        cache=mteb.ResultCache(cache_path=output),
        encode_kwargs={"batch_size": args.batch_size, "show_progress_bar": args.progress},
        overwrite_strategy="always" if args.overwrite else "only-missing",
        index_dtype=getattr(torch, args.index_dtype),
    )
    table = format_sweep_table(sweep)
    (output / "sweep.md").write_text(table + "\n", encoding="utf-8")
    write_sweep_summary(sweep, output / "sweep_summary.json")
    plot = plot_sweep(sweep, output / "sweep.png")
    exported = export_leaderboard(model.mteb_model_meta, output)
    print(table)
    print(f"\nmteb results: {exported['results']}\nModelMeta for mteb's registry: {exported['model_meta']}")
    print(f"Plot: {plot}\nSummary: {output / 'sweep_summary.json'}")
    return 0
