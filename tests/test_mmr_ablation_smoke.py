"""The MMR ablation experiment: a seconds-long smoke run in `make test`, the full CPU run marked slow."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from metaembed import cli
from metaembed.data.compositional import FAMILIES, generate_dataset, iter_items, vocabulary_texts
from metaembed.experiments.mmr_ablation import PRESETS, VARIANTS, content_gate
from metaembed.experiments.reporting import aggregate, paired_difference
from metaembed.experiments.shapes_model import build_shapes_model, build_word_tokenizer
from metaembed.experiments.training import ProcessedBatches, train_metaembed, unique_positive_batches

SMOKE = PRESETS["smoke"]


def test_word_tokenizer_covers_every_generated_text():
    tokenizer = build_word_tokenizer(vocabulary_texts())
    examples = generate_dataset(30, "train", seed=0)
    texts = {item.text for family in FAMILIES for item in iter_items(examples[family])}
    for text in texts:
        assert tokenizer.unk_token_id not in tokenizer(text)["input_ids"], text
    assert tokenizer.tokenize("two shapes: a small red circle") == [
        "two",
        "shapes",
        ":",
        "a",
        "small",
        "red",
        "circle",
    ]


def test_batches_never_repeat_a_positive():
    examples = [e for family in FAMILIES for e in generate_dataset(20, "train", seed=0)[family]]
    stream = unique_positive_batches(examples, 16, seed=0)
    for _ in range(20):
        batch = next(stream)
        assert len(batch) == 16
        assert len({e.positive.key for e in batch}) == 16
    with pytest.raises(ValueError, match="distinct positives"):
        next(unique_positive_batches(examples[:1] * 4, 2, seed=0))


def test_worker_processes_yield_the_same_batches():
    examples = [e for family in FAMILIES for e in generate_dataset(8, "train", seed=0)[family]]
    _, processor = build_shapes_model(SMOKE.model, 0)
    stream = ProcessedBatches(examples, processor, batch_size=4, seed=3, image_size=56)

    def first(num_workers: int, n: int = 4) -> list:
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=num_workers)
        return [batch for batch, _ in zip(loader, range(n))]

    single, parallel = first(0), first(2)
    assert len(single) == len(parallel) == 4
    for one, two in zip(single, parallel):
        for side_one, side_two in zip(one, two):
            assert set(side_one.keys()) == set(side_two.keys())
            for key in side_one:
                torch.testing.assert_close(side_one[key], side_two[key], rtol=0, atol=0)


def test_training_is_deterministic_per_seed():
    examples = [e for family in FAMILIES for e in generate_dataset(6, "train", seed=0)[family]]
    settings = dataclasses.replace(SMOKE.train, steps=2)

    def run(seed: int) -> tuple[list[float], torch.Tensor]:
        model, processor = build_shapes_model(SMOKE.model, seed)
        log = train_metaembed(
            model, processor, examples, groups=SMOKE.model.budgets, settings=settings, seed=seed
        )
        return [r["loss"] for r in log], model.meta_tokens.weight.detach().clone()

    first, second = run(0), run(0)
    assert first[0] == second[0]
    torch.testing.assert_close(first[1], second[1], rtol=0, atol=0)


def test_claims_use_seed_paired_differences():
    runs = [
        {"variant": v, "seed": s, "scores": {"1x1": {"t2i": base + s / 100}}}
        for v, base in (("mmr", 0.5), ("no_mmr", 0.2))
        for s in range(3)
    ]
    assert paired_difference(runs, ("mmr", "1x1"), ("no_mmr", "1x1"))["verdict"] == "supported"
    assert paired_difference(runs, ("no_mmr", "1x1"), ("mmr", "1x1"))["verdict"] == "not supported"
    cell = aggregate(runs)["mmr"]["1x1"]["overall"]
    assert cell["mean"] == pytest.approx(51.0) and cell["std"] == pytest.approx(1.0) and cell["n"] == 3


def test_content_gate_needs_every_seed_above_chance_by_the_margin():
    def run(variant: str, seed: int, overall: float) -> dict:
        return {
            "variant": variant,
            "seed": seed,
            "train_probe": {"t2i": overall - 0.01, "vqa": overall + 0.01},
        }

    runs = [run("mmr", 0, 0.20), run("mmr", 1, 0.16), run("no_mmr", 0, 0.30), run("no_mmr", 1, 0.149)]
    gate = content_gate(runs, chance_percent=10.0, margin=5.0)
    assert gate["mmr"]["passed"] and gate["mmr"]["scores"] == pytest.approx([20.0, 16.0])
    # One seed 4.9 points above chance fails the variant.
    assert not gate["no_mmr"]["passed"]


def test_smoke_run_from_the_command_line(tmp_path, capsys):
    output = tmp_path / "ablation"
    threads = torch.get_num_threads()
    try:
        # One thread: the tiny model gains nothing from two, and loses a lot when other jobs share the cores.
        argv = [
            "experiment",
            "mmr-ablation",
            "--preset",
            "smoke",
            "--output-dir",
            str(output),
            "--threads",
            "1",
        ]
        assert cli.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "| MetaEmbed + MMR | (1, 1) |" in printed
    assert "Content gate" in printed

    report = json.loads((output / "results.json").read_text())
    assert report["protocol"]["name"] == "smoke"
    assert len(report["runs"]) == len(VARIANTS) * len(SMOKE.seeds)
    budgets = [f"{q}x{c}" for q, c in SMOKE.model.budgets]
    assert sorted(report["table"]) == sorted(VARIANTS)
    assert list(report["table"]["single_vector"]) == ["1x1"]
    for variant in ("mmr", "no_mmr"):
        assert list(report["table"][variant]) == budgets
        for cells in report["table"][variant].values():
            assert set(cells) == {*FAMILIES, "overall"}
            assert all(cell["n"] == len(SMOKE.seeds) and 0 <= cell["mean"] <= 100 for cell in cells.values())
    groups = {run["variant"]: run["groups"] for run in report["runs"]}
    assert groups["mmr"] == [list(b) for b in SMOKE.model.budgets]
    assert groups["no_mmr"] == [list(SMOKE.model.budgets[-1])]
    assert groups["single_vector"] == [[1, 1]]
    assert set(report["claims"]) >= {"multi_vector_beats_single_vector", "no_mmr_low_budget_collapses"}
    assert set(report["content_gate"]) == set(VARIANTS)
    for run in report["runs"]:
        assert set(run["train_probe"]) == set(FAMILIES)
    assert report["claims_readable"] == all(entry["passed"] for entry in report["content_gate"].values())
    assert (output / "mmeb-train-probe" / "ShapesVQA" / "test-00000-of-00001.parquet").is_file()
    assert (output / "mmr_ablation.png").stat().st_size > 0
    assert "mean ± std" in (output / "table.md").read_text()
    assert (output / "mmeb" / "ShapesT2I" / "test-00000-of-00001.parquet").is_file()

    # The exploratory hard-negative re-scoring reads the run as the README says.
    script = Path(__file__).parents[1] / "benchmarks" / "mmr_ablation_hard_negatives.py"
    spec = importlib.util.spec_from_file_location("mmr_ablation_hard_negatives", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([str(output / "results.json"), "--json", str(output / "hard.json")]) == 0
    hard = json.loads((output / "hard.json").read_text())
    assert [(r["variant"], r["seed"]) for r in hard["runs"]] == [
        (r["variant"], r["seed"]) for r in report["runs"]
    ]
    for run, original in zip(hard["runs"], report["runs"]):
        assert list(run["scores"]) == list(original["scores"])
    lists = pq.read_table(output / "mmeb-hard-negatives" / "ShapesT2I" / "test-00000-of-00001.parquet")
    assert all(2 <= len(targets) <= 4 for targets in lists.column("tgt_text").to_pylist())
    assert 25.0 <= hard["chance_percent"]["t2i"] <= 50.0


@pytest.mark.slow
def test_full_cpu_ablation(tmp_path):
    """The README's figure: the `cpu` preset end to end (about 18 minutes on 2 cores with two jobs).

    Beyond the report's shape it checks that every model still learns more than the task format (the content gate):
    a training pipeline that silently stops learning fails here. It pins no finding about MMR.
    """
    from metaembed.experiments.mmr_ablation import run_mmr_ablation

    report = run_mmr_ablation(PRESETS["cpu"], tmp_path / "cpu", device="cpu", jobs=2)
    assert len(report["runs"]) == len(VARIANTS) * len(PRESETS["cpu"].seeds)
    for variant in ("mmr", "no_mmr"):
        assert len(report["table"][variant]) == len(PRESETS["cpu"].model.budgets)
    assert (tmp_path / "cpu" / "mmr_ablation.png").is_file()
    assert report["claims_readable"], report["content_gate"]


def test_parallel_jobs_give_the_same_runs_as_one_job(tmp_path):
    """Two worker processes of one thread each reproduce the one-process run of one thread exactly."""
    from metaembed.experiments.mmr_ablation import run_mmr_ablation

    protocol = dataclasses.replace(SMOKE, seeds=(0,))
    threads = torch.get_num_threads()
    try:
        serial = run_mmr_ablation(protocol, tmp_path / "serial", device="cpu", jobs=1, threads=1)
    finally:
        torch.set_num_threads(threads)
    parallel = run_mmr_ablation(protocol, tmp_path / "parallel", device="cpu", jobs=2, threads=1)
    assert [(r["variant"], r["seed"]) for r in parallel["runs"]] == [
        (r["variant"], r["seed"]) for r in serial["runs"]
    ]
    for one, two in zip(serial["runs"], parallel["runs"]):
        assert one["scores"] == two["scores"]
        assert one["train_probe"] == two["train_probe"]
        assert [r["loss"] for r in one["train_log"]] == [r["loss"] for r in two["train_log"]]
    assert parallel["environment"]["jobs"] == 2 and parallel["environment"]["threads"] == 1
    with pytest.raises(ValueError, match=r"jobs must be >= 1, got 0; pass 1"):
        run_mmr_ablation(protocol, tmp_path / "bad", device="cpu", jobs=0)
    assert not (tmp_path / "bad").exists()


def test_repeated_seeds_or_variants_are_refused_before_anything_is_written(tmp_path):
    from metaembed.experiments.mmr_ablation import run_mmr_ablation

    with pytest.raises(ValueError, match=r"The seeds \[0\] are listed more than once"):
        run_mmr_ablation(dataclasses.replace(SMOKE, seeds=(0, 0)), tmp_path / "seeds", device="cpu")
    with pytest.raises(ValueError, match=r"The variants \['mmr'\] are listed more than once"):
        run_mmr_ablation(SMOKE, tmp_path / "variants", device="cpu", variants=["mmr", "mmr"])
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("option", ["--jobs", "--threads"])
def test_cli_refuses_a_non_positive_jobs_or_threads(option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["experiment", "mmr-ablation", "--preset", "smoke", option, "0"])
    assert exit_info.value.code == 2
    assert f"{option}: expected a whole number >= 1, got 0" in capsys.readouterr().err


def test_a_failing_worker_stops_the_parallel_run_with_its_error(tmp_path):
    from metaembed.experiments.mmr_ablation import run_mmr_ablation

    # More queries per batch than distinct positives: every training fails at its first batch, in the worker.
    protocol = dataclasses.replace(SMOKE, train=dataclasses.replace(SMOKE.train, batch_size=500))
    with pytest.raises(ValueError, match="distinct positives, fewer than batch_size=500"):
        run_mmr_ablation(protocol, tmp_path / "run", device="cpu", jobs=2, threads=1)
    assert not (tmp_path / "run" / "results.json").exists()
