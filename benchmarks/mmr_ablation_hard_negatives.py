"""Exploratory, after the fact: how often each trained ablation model ranks the positive above its one-edit hard
negatives alone.

The ablation scores T2I and I2T against 24 candidates: the positive, three one-edit hard negatives ("a red circle
left of a blue square" against "a blue circle left of a red square") and twenty other scenes. A model can get
many of those right by content that has nothing to do with composition. This script re-scores the same test queries
against the positive and its hard negatives only (chance: 1 in 4), which isolates the compositional detail the
paper says a single vector struggles with.

It was written after the `cpu` run it reads, so its numbers are descriptive, not a pre-registered test. It reuses
the run's checkpoints and the project's MMEB path unchanged: the test split is regenerated from the protocol in
``results.json``, trimmed to the positive and hard negatives, exported in MMEB-eval's layout, and scored with
Precision@1 at every budget.

Run: ``python benchmarks/mmr_ablation_hard_negatives.py outputs/mmr_ablation_v2/results.json --json out.json``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from metaembed.data.compositional import export_mmeb, generate_dataset
from metaembed.experiments.evaluation import evaluate_checkpoint
from metaembed.experiments.mmr_ablation import COLUMNS, VARIANTS, chance_percent
from metaembed.experiments.reporting import aggregate, markdown_table
from metaembed.fileio import write_json

logger = logging.getLogger("mmr_ablation_hard_negatives")

FAMILIES = ("t2i", "i2t")


def hard_negative_split(protocol: dict[str, Any]) -> dict[str, list[Any]]:
    """The run's T2I and I2T test queries, each with only its positive and its hard negatives as candidates."""
    test = generate_dataset(protocol["test_per_family"], "test", protocol["data_seed"], FAMILIES)
    return {
        family: [dataclasses.replace(e, candidates=e.candidates[: 1 + e.num_hard]) for e in test[family]]
        for family in FAMILIES
    }


def score_run(results_path: Path, work_dir: Path, device: str | None = None) -> dict[str, Any]:
    """Scores every checkpoint of the run at ``results_path`` on the hard-negative-only split."""
    report = json.loads(results_path.read_text())
    protocol = report["protocol"]
    split = hard_negative_split(protocol)
    data_dir = work_dir / "mmeb-hard-negatives"
    export_mmeb(split, data_dir, image_size=protocol["train"]["image_size"])
    chance = chance_percent(split)
    runs = []
    for run in report["runs"]:
        budgets = [tuple(int(x) for x in name.split("x")) for name in run["scores"]]
        checkpoint = Path(run["checkpoint"])
        if not checkpoint.is_absolute() and not checkpoint.exists():
            checkpoint = results_path.parent / "checkpoints" / checkpoint.name
        if not checkpoint.is_dir():
            raise FileNotFoundError(
                f"The checkpoint of {run['variant']} seed {run['seed']} is not at {run['checkpoint']} or "
                f"{checkpoint}; run this next to the ablation's output directory."
            )
        scores = evaluate_checkpoint(checkpoint, data_dir, FAMILIES, budgets, device=device)
        runs.append({"variant": run["variant"], "seed": run["seed"], "scores": scores})
        logger.info("%s seed %d: %s", run["variant"], run["seed"], scores)
    return {
        "source": str(results_path),
        "protocol": protocol["name"],
        "chance_percent": {family: round(value, 3) for family, value in chance.items()},
        "runs": runs,
        "table": aggregate(runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "results", type=Path, help="results.json of an mmr-ablation run (its checkpoints must exist)"
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="Where the trimmed split goes (default: beside)"
    )
    parser.add_argument("--json", type=Path, default=None, help="Write the scores here")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    work_dir = args.work_dir or args.results.parent
    out = score_run(args.results, work_dir, device=args.device)
    variants = {v: label for v, label in VARIANTS.items() if v in out["table"]}
    columns = {key: COLUMNS[key] for key in (*FAMILIES, "overall")}
    table = markdown_table(out["table"], variants, columns)
    chance = ", ".join(f"{COLUMNS[f]} {v:.1f}" for f, v in out["chance_percent"].items() if f in FAMILIES)
    sys.stdout.write(
        f"\nPrecision@1 (%) against the positive and its hard negatives only\n\n{table}\n\nChance: {chance}\n"
    )
    if args.json is not None:
        write_json(args.json, out)
        logger.info("Wrote %s", os.fspath(args.json))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
