"""The MMR ablation (the paper's Table 5 and Figure 4b) on generated compositional image-text data.

Three variants share one backbone size, one dataset, one optimiser setting and the same seeds:

- ``single_vector``: one query and one candidate meta token, trained and scored at (1, 1) only;
- ``mmr``: 16 query / 64 candidate meta tokens trained with Matryoshka Multi-Vector Retrieval over the paper's
  five budget groups (1,1), (2,4), (4,8), (8,16), (16,64);
- ``no_mmr``: the same model trained only at the full budget (16, 64).

Each is trained from random weights (a small Qwen2.5-VL, see :mod:`.shapes_model`) on the train split of
:mod:`metaembed.data.compositional`, saved as a checkpoint, and scored with Precision@1 on the test split exported in
MMEB-eval's layout through the project's mteb MMEB path (:mod:`.evaluation`), at every budget it has. Everything repeats for every seed; the report gives mean ± std over seeds per task family
and overall, a plot of score against budget, and the raw numbers as JSON.

The protocol is fixed in :data:`PRESETS` before any run; a run records it next to its results.

Example:
    >>> from metaembed.experiments.mmr_ablation import PRESETS, run_mmr_ablation
    >>> report = run_mmr_ablation(PRESETS["smoke"], "outputs/mmr_ablation_smoke")
    >>> sorted(report["table"])
    ['mmr', 'no_mmr', 'single_vector']
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import multiprocessing
import os
import platform
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import save_checkpoint
from ..data.compositional import FAMILIES, SUBSET_NAMES, export_mmeb, generate_dataset
from ..fileio import atomic_write_text, write_json
from .evaluation import evaluate_checkpoint
from .reporting import OVERALL, aggregate, markdown_table, paired_difference, plot_scores, with_overall
from .shapes_model import ModelSpec, build_shapes_model, count_parameters
from .training import TrainSettings, train_metaembed

logger = logging.getLogger(__name__)

VARIANTS: dict[str, str] = {
    "single_vector": "single vector",
    "mmr": "MetaEmbed + MMR",
    "no_mmr": "MetaEmbed, NoMMR",
}
COLUMNS: dict[str, str] = {
    "t2i": "T2I",
    "i2t": "I2T",
    "classification": "Classification",
    "vqa": "VQA",
    "grounding": "Grounding",
    OVERALL: "Overall",
}


@dataclass(frozen=True)
class AblationProtocol:
    """Everything that defines an ablation run.

    Attributes:
        name: Preset name, recorded in the results.
        model: Backbone size and meta token layout of the multi-vector variants (the single-vector variant is
            :meth:`ModelSpec.single_vector` of it).
        train: Optimisation settings, identical for every variant.
        train_per_family: Training examples per task family.
        test_per_family: Test queries per task family.
        data_seed: Seed of the generated data (the same for every variant and model seed).
        seeds: Model seeds: initialisation, batch order and hard-negative choice.
        families: Task families.
        eval_batch_size: Items per forward pass at evaluation.
        gate_queries: Training queries per family of the content gate (see :func:`content_gate`).
        gate_margin: Points above chance that the content gate asks of every seed's overall training-split score.
    """

    name: str
    model: ModelSpec
    train: TrainSettings
    train_per_family: int
    test_per_family: int
    data_seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    families: tuple[str, ...] = FAMILIES
    eval_batch_size: int = 64
    gate_queries: int = 100
    gate_margin: float = 5.0
    notes: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model"] = self.model.to_dict()
        out["train"] = self.train.to_dict()
        return out

    def variant_spec(self, variant: str) -> ModelSpec:
        if variant not in VARIANTS:
            raise ValueError(f"Unknown variant {variant!r}; choose one of {list(VARIANTS)}.")
        return self.model.single_vector() if variant == "single_vector" else self.model

    def variant_groups(self, variant: str) -> list[tuple[int, int]]:
        """The budget groups the variant's loss trains."""
        budgets = list(self.variant_spec(variant).budgets)
        return budgets[-1:] if variant == "no_mmr" else budgets


# The protocols, each fixed before its first full run and never changed after it. The CPU presets are sized to
# about 20 minutes on two cores; the GPU preset is the same experiment with a 10x larger backbone, 5x the training
# data and 7.5x the steps of `cpu-v1`.
_CPU_MODEL = ModelSpec(
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    vision_depth=2,
    vision_hidden_size=64,
    vision_heads=2,
)
PRESETS: dict[str, AblationProtocol] = {
    "cpu": AblationProtocol(
        name="cpu",
        model=_CPU_MODEL,
        train=TrainSettings(steps=1200, batch_size=32, learning_rate=1e-3, warmup_steps=120, image_size=56),
        train_per_family=2560,
        test_per_family=200,
        notes=(
            "CPU version 2 (the default): cpu-v1's model, data, loss and optimiser with 56 px images (a 2x2 grid "
            "of merged visual tokens, one per scene cell: a quarter of the vision cost) and 3x the steps; a content "
            "gate must pass before the claims are read. Chosen on a development split (test stream of data seed 7) "
            "with the single-vector variant only, before any run on the reported test data. 18 minutes on 2 "
            "cores with --jobs 2 (27 with one job of two threads)."
        ),
    ),
    "cpu-v1": AblationProtocol(
        name="cpu-v1",
        model=_CPU_MODEL,
        train=TrainSettings(steps=400, batch_size=32, learning_rate=1e-3, warmup_steps=40),
        train_per_family=2560,
        test_per_family=200,
        notes=(
            "The first CPU protocol (named `cpu` when it ran): 112 px images, 400 steps. Its run learned only the "
            "task format; kept so that the recorded result stays reproducible."
        ),
    ),
    "gpu": AblationProtocol(
        name="gpu",
        model=ModelSpec(
            hidden_size=256,
            num_layers=4,
            num_heads=8,
            num_kv_heads=4,
            vision_depth=4,
            vision_hidden_size=128,
            vision_heads=4,
        ),
        train=TrainSettings(
            steps=3000, batch_size=64, learning_rate=5e-4, warmup_steps=300, num_workers=6, log_every=100
        ),
        train_per_family=12800,
        test_per_family=500,
        eval_batch_size=256,
        notes="GPU version: one GPU, about an hour.",
    ),
    "smoke": AblationProtocol(
        name="smoke",
        model=ModelSpec(
            hidden_size=32,
            num_layers=1,
            num_heads=2,
            num_kv_heads=1,
            vision_depth=1,
            vision_hidden_size=32,
            vision_heads=2,
            num_query_meta_tokens=4,
            num_candidate_meta_tokens=8,
            budgets=((1, 1), (2, 4), (4, 8)),
        ),
        train=TrainSettings(steps=2, batch_size=4, warmup_steps=1, log_every=1),
        train_per_family=8,
        test_per_family=3,
        seeds=(0, 1),
        eval_batch_size=64,
        notes="Smoke test: seconds, checks the pipeline, not the science.",
    ),
}


def _claims(runs: Sequence[dict[str, Any]], protocol: AblationProtocol) -> dict[str, Any]:
    """The paper's three claims as seed-paired differences (verdict rule in :func:`paired_difference`)."""
    budgets = [f"{q}x{c}" for q, c in protocol.model.budgets]
    lowest, full = budgets[0], budgets[-1]
    single = ("single_vector", "1x1")
    claims: dict[str, Any] = {
        "multi_vector_beats_single_vector": {
            family: paired_difference(runs, ("mmr", full), single, family)
            for family in (*protocol.families, OVERALL)
        },
        "mmr_every_budget_at_least_single_vector": {
            budget: paired_difference(runs, ("mmr", budget), single) for budget in budgets
        },
        "no_mmr_low_budget_collapses": {
            budget: paired_difference(runs, ("mmr", budget), ("no_mmr", budget)) for budget in budgets
        },
        "mmr_full_budget_cost": paired_difference(runs, ("no_mmr", full), ("mmr", full)),
        "mmr_scales_from_lowest_to_full": paired_difference(runs, ("mmr", full), ("mmr", lowest)),
    }
    return claims


def content_gate(
    runs: Sequence[Mapping[str, Any]], chance_percent: float, margin: float
) -> dict[str, dict[str, Any]]:
    """Whether each variant learned content at all: the check that comes before the claims are read.

    A model that learned only the task format (which kind of candidate goes with which kind of query) sits at chance
    on every family, and then budgets cannot matter and no claim about them can be read. The gate asks every seed's
    overall Precision@1 on training queries (``run["train_probe"]``, scored at the variant's full budget) to beat
    the chance level of those queries by ``margin`` points. Training queries, not test queries: the gate asks
    whether the model fits its data, not whether it generalises, and it never looks at the reported test split.

    The gate is a floor, not proof of compositional skill: chance is a random ranking's, and a model that knows only
    the format and VQA's answer prior already sits a couple of points above it.

    Args:
        runs: Run records with ``"variant"`` and ``"train_probe"`` (``{family: precision@1 in [0, 1]}``).
        chance_percent: Overall Precision@1 (%) of a random ranking on the same training queries.
        margin: Points above chance that every seed must reach.

    Returns:
        ``{variant: {"scores": [percent per seed], "chance": percent, "margin": points, "passed": bool}}``.

    Example:
        >>> runs = [{"variant": "mmr", "seed": 0, "train_probe": {"t2i": 0.30, "vqa": 0.50}}]
        >>> content_gate(runs, chance_percent=10.0, margin=5.0)["mmr"]["passed"]
        True
    """
    gate: dict[str, dict[str, Any]] = {}
    for run in runs:
        score = 100.0 * with_overall(run["train_probe"])[OVERALL]
        entry = gate.setdefault(
            run["variant"], {"scores": [], "chance": round(chance_percent, 3), "margin": margin}
        )
        entry["scores"].append(round(score, 3))
    for entry in gate.values():
        entry["passed"] = all(score - chance_percent >= margin for score in entry["scores"])
    return gate


def chance_percent(examples: Mapping[str, Sequence[Any]]) -> dict[str, float]:
    """Expected Precision@1 (percent) of a random ranking per family and overall: the mean of 1 / candidates.

    Example:
        >>> chance_percent(generate_dataset(10, "test", 0, ("t2i",)))["t2i"]
        4.166...
    """
    chance = {f: 100 * sum(1 / len(e.candidates) for e in rows) / len(rows) for f, rows in examples.items()}
    chance[OVERALL] = sum(chance.values()) / len(examples)
    return chance


@dataclass(frozen=True)
class _RunJob:
    """One training and its two evaluations: a (variant, seed) pair of a protocol.

    Attributes:
        protocol: The ablation protocol.
        variant: A key of :data:`VARIANTS`.
        seed: The model seed.
        output_dir: The run's output directory (its checkpoint goes under ``checkpoints/``).
        data_dir: The MMEB-layout export of the test split.
        probe_dir: The MMEB-layout export of the content gate's training queries.
        device: Where to train and encode.
    """

    protocol: AblationProtocol
    variant: str
    seed: int
    output_dir: Path
    data_dir: Path
    probe_dir: Path
    device: str


def _train_and_score(job: _RunJob, train_examples: Sequence[Any]) -> dict[str, Any]:
    """Trains one variant for one seed, saves it, and scores it on the test split and the content gate's queries."""
    protocol, variant, seed = job.protocol, job.variant, job.seed
    spec = protocol.variant_spec(variant)
    groups = protocol.variant_groups(variant)
    model, processor = build_shapes_model(spec, seed)
    logger.info("Training %s, seed %d, groups %s", variant, seed, groups)
    tick = time.perf_counter()
    log = train_metaembed(
        model, processor, train_examples, groups=groups, settings=protocol.train, seed=seed, device=job.device
    )
    trained = time.perf_counter()
    parameters = count_parameters(model)
    checkpoint = save_checkpoint(
        model.cpu(), processor, job.output_dir / "checkpoints" / f"{variant}-seed{seed}"
    )
    del model
    name = f"local/shapes-{protocol.name}-{variant}-seed{seed}"
    evaluate = functools.partial(
        evaluate_checkpoint, checkpoint, device=job.device, batch_size=protocol.eval_batch_size, name=name
    )
    scores = evaluate(job.data_dir, protocol.families, spec.budgets)
    full = spec.budgets[-1]
    train_probe = evaluate(job.probe_dir, protocol.families, [full])[f"{full[0]}x{full[1]}"]
    return {
        "variant": variant,
        "seed": seed,
        "groups": [list(g) for g in groups],
        "parameters": parameters,
        "checkpoint": str(checkpoint),
        "scores": scores,
        "train_probe": train_probe,
        "train_log": log,
        "train_seconds": round(trained - tick, 2),
        "eval_seconds": round(time.perf_counter() - trained, 2),
    }


def quiet_progress_bars() -> None:
    """Turns off the datasets and transformers progress bars: nine trainings and their evaluations would otherwise
    print hundreds of loader bars, and the log says enough."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


# A pool worker's copy of the training examples, set once by `_init_worker` rather than pickled with every job.
_WORKER_EXAMPLES: Sequence[Any] = ()


def _init_worker(train_examples: Sequence[Any], threads: int, log_level: int, progress_bars: bool) -> None:
    """Sets up a spawned worker: its copy of the training examples, its torch threads, logging like the CLI's, and
    progress bars off when the parent has them off."""
    global _WORKER_EXAMPLES
    _WORKER_EXAMPLES = train_examples
    torch.set_num_threads(threads)
    logging.basicConfig(
        level=log_level,
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not progress_bars:
        quiet_progress_bars()


def _worker_train_and_score(job: _RunJob) -> dict[str, Any]:
    """:func:`_train_and_score` on the worker's training examples."""
    return _train_and_score(job, _WORKER_EXAMPLES)


def _run_all(
    jobs_list: Sequence[_RunJob], train_examples: Sequence[Any], jobs: int, threads: int | None
) -> Iterator[dict[str, Any]]:
    """Runs every job, ``jobs`` at a time, yielding each run record as it finishes.

    One job at a time runs in this process. Several run in spawned worker processes with ``threads`` torch threads
    each: a run is a pure function of its protocol, variant and seed, so only the thread count (which can change the
    order of floating-point sums) can change its numbers, never the number of jobs. When a job fails, the jobs not
    yet started are cancelled and the error is raised at once.

    Args:
        jobs_list: The runs to do.
        train_examples: The training examples every run trains on.
        jobs: Runs at once.
        threads: Torch threads per run (None: leave this process's setting, with ``jobs`` 1 only).

    Yields:
        Run records, in the order they finish.
    """
    if jobs == 1:
        previous = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            for job in jobs_list:
                yield _train_and_score(job, train_examples)
        finally:
            torch.set_num_threads(previous)
        return
    import datasets
    import transformers

    progress_bars = datasets.is_progress_bar_enabled() or transformers.utils.logging.is_progress_bar_enabled()
    initargs = (train_examples, threads or 1, logging.getLogger().getEffectiveLevel(), progress_bars)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_init_worker, initargs=initargs
    ) as pool:
        futures = [pool.submit(_worker_train_and_score, job) for job in jobs_list]
        try:
            for future in concurrent.futures.as_completed(futures):
                yield future.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def run_mmr_ablation(
    protocol: AblationProtocol,
    output_dir: str | os.PathLike,
    *,
    device: str | None = None,
    variants: Sequence[str] = tuple(VARIANTS),
    jobs: int = 1,
    threads: int | None = None,
) -> dict[str, Any]:
    """Runs the ablation and writes ``results.json``, ``table.md`` and ``mmr_ablation.png`` to ``output_dir``.

    Args:
        protocol: A preset from :data:`PRESETS`, or a custom one.
        output_dir: Output directory; the test data is exported to ``output_dir/mmeb`` in MMEB-eval's layout.
        device: ``"cpu"``, ``"cuda"``...; defaults to CUDA when available.
        variants: The variants to run (all three by default).
        jobs: Trainings run at once, each in its own process (1: one after another in this process). Two jobs of one
            thread each finish the CPU preset 1.5x sooner on two cores than one job of two threads (18 minutes
            instead of 27): the tiny model's operations are too small to keep two threads busy.
        threads: Torch threads per training (default: this process's setting when ``jobs`` is 1, else 1). This
            process's setting is restored afterwards.

    Returns:
        The report written to ``results.json``.

    Raises:
        ValueError: An unknown or repeated variant, a repeated seed, or ``jobs`` / ``threads`` below 1.

    Note:
        With ``jobs`` above 1 the workers are spawned, so a script that calls this at import time needs the usual
        ``if __name__ == "__main__":`` guard.
    """
    for variant in variants:
        protocol.variant_spec(variant)
    for name, values in (("variants", list(variants)), ("seeds", list(protocol.seeds))):
        repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
        if repeated:
            raise ValueError(
                f"The {name} {repeated} are listed more than once; list each once (two runs of the same variant and "
                "seed would write the same checkpoint and count twice in the table)."
            )
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}; pass 1 to run the trainings one after another.")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}; pass None to keep torch's setting.")
    if jobs > 1 and threads is None:
        threads = 1
    started = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    data_dir = output_dir / "mmeb"
    logger.info("Generating data (seed %d) and exporting the test split to %s", protocol.data_seed, data_dir)
    train = generate_dataset(protocol.train_per_family, "train", protocol.data_seed, protocol.families)
    test = generate_dataset(protocol.test_per_family, "test", protocol.data_seed, protocol.families)
    export_mmeb(test, data_dir, image_size=protocol.train.image_size)
    # The content gate's training queries, exported and scored exactly like the test split.
    probe = {family: train[family][: protocol.gate_queries] for family in protocol.families}
    probe_dir = output_dir / "mmeb-train-probe"
    export_mmeb(probe, probe_dir, image_size=protocol.train.image_size)
    train_examples = [example for family in protocol.families for example in train[family]]
    subsets = {family: SUBSET_NAMES[family] for family in protocol.families}
    chance = chance_percent(test)
    probe_chance = chance_percent(probe)

    report: dict[str, Any] = {
        "experiment": "mmr-ablation",
        "protocol": protocol.to_dict(),
        "variants": {v: VARIANTS[v] for v in variants},
        "subsets": subsets,
        "metric": "Precision@1 (%) through metaembed.evaluation's MMEB tasks (mteb; ties as mteb_tasks documents)",
        "environment": {
            "device": device,
            "torch": torch.__version__,
            "threads": threads if threads is not None else torch.get_num_threads(),
            "jobs": jobs,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "chance_percent": {key: round(value, 3) for key, value in chance.items()},
        "train_probe_chance_percent": {key: round(value, 3) for key, value in probe_chance.items()},
        "data_dir": str(data_dir),
        "runs": [],
    }
    jobs_list = [
        _RunJob(protocol, variant, seed, output_dir, data_dir, probe_dir, device)
        for seed in protocol.seeds
        for variant in variants
    ]
    for run in _run_all(jobs_list, train_examples, jobs, threads):
        report["runs"].append(run)
        report["runs"].sort(
            key=lambda r: (protocol.seeds.index(r["seed"]), list(variants).index(r["variant"]))
        )
        write_json(output_dir / "results.json", report)

    report["table"] = aggregate(report["runs"])
    report["content_gate"] = content_gate(report["runs"], probe_chance[OVERALL], protocol.gate_margin)
    report["claims_readable"] = all(entry["passed"] for entry in report["content_gate"].values())
    report["claims"] = _claims(report["runs"], protocol) if set(variants) == set(VARIANTS) else {}
    if not report["claims_readable"]:
        failed = [v for v, entry in report["content_gate"].items() if not entry["passed"]]
        logger.warning(
            "The content gate failed for %s: the claims' verdicts are recorded but must not be read.", failed
        )
    report["runtime_seconds"] = round(time.perf_counter() - started, 1)
    table = markdown_table(report["table"], {v: VARIANTS[v] for v in variants}, COLUMNS)
    report["markdown_table"] = table
    seeds = ", ".join(map(str, protocol.seeds))
    chance_line = ", ".join(f"{COLUMNS[k]} {v:.1f}" for k, v in chance.items())
    gate_lines = "\n".join(
        f"- {VARIANTS[v]}: {'passed' if e['passed'] else 'FAILED'} ("
        + ", ".join(f"{score:.1f}" for score in e["scores"])
        + f" against chance {e['chance']:.1f})"
        for v, e in report["content_gate"].items()
    )
    atomic_write_text(
        output_dir / "table.md",
        f"Precision@1 (%), mean ± std over seeds {seeds} (preset `{protocol.name}`)\n\n{table}\n\n"
        f"Chance (random ranking): {chance_line}\n\n"
        f"Content gate (overall Precision@1 % on {protocol.gate_queries} training queries per family at the full "
        f"budget, per seed; every seed must beat chance by {protocol.gate_margin:g} points):\n{gate_lines}\n",
    )
    plot = plot_scores(
        report["table"],
        {v: VARIANTS[v] for v in variants},
        {key: label for key, label in COLUMNS.items() if key == OVERALL or key in protocol.families},
        output_dir / "mmr_ablation.png",
        title=f"MMR ablation on generated shapes (preset {protocol.name}, mean ± std over seeds {seeds})",
        chance=chance,
    )
    report["plot"] = str(plot)
    write_json(output_dir / "results.json", report)
    logger.info("Done in %.0fs; results in %s", report["runtime_seconds"], output_dir)
    return report


__all__ = [
    "COLUMNS",
    "PRESETS",
    "VARIANTS",
    "AblationProtocol",
    "chance_percent",
    "content_gate",
    "quiet_progress_bars",
    "run_mmr_ablation",
]
