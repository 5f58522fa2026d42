"""`metaembed index` / `metaembed search`: inputs, bad items, resume after a crash, shards, and exact results."""

from __future__ import annotations

import json

import pytest
import torch

from metaembed.index import MetaEmbedIndex, ShardedIndex
from metaembed.indexing import build_index, iter_input_items, open_index, search_index

TEXTS = [
    f"document {i}: a {c} {s}"
    for i, (c, s) in enumerate(
        [
            ("red", "circle"),
            ("blue", "square"),
            ("green", "star"),
            ("yellow", "triangle"),
            ("black", "circle"),
            ("white", "square"),
            ("purple", "star"),
            ("orange", "triangle"),
            ("red", "square"),
            ("blue", "circle"),
        ]
    )
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_models):
    model, processor = tiny_models("qwen2_5_vl")
    directory = tmp_path_factory.mktemp("index-model") / "ckpt"
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("corpus")
    for i, text in enumerate(TEXTS):
        (folder / f"doc-{i:02d}.txt").write_text(text)
    Image.new("RGB", (40, 30), "red").save(folder / "red.png")
    (folder / "sub").mkdir()
    Image.new("RGB", (30, 40), "blue").save(folder / "sub" / "blue.jpg")
    (folder / "empty.txt").write_text("   \n")
    (folder / "broken.png").write_bytes(b"not an image at all")
    (folder / "ignored.bin").write_bytes(b"\x00\x01")
    return folder


GOOD_IDS = {f"doc-{i:02d}.txt" for i in range(len(TEXTS))} | {"red.png", "sub/blue.jpg"}


def test_folder_and_jsonl_inputs(corpus, tmp_path):
    items = {entry.id: entry for entry in iter_input_items(corpus)}
    assert set(items) == GOOD_IDS | {"empty.txt", "broken.png"}
    assert items["empty.txt"].error == "empty file"
    assert items["doc-01.txt"].item == TEXTS[1] and items["doc-01.txt"].metadata["kind"] == "text"
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text(
        '{"id": "a", "text": "hello", "source": "x"}\n'
        "not json\n"
        '{"image": "missing.png", "text": "caption"}\n'
        '{"title": "no text"}\n'
        "\n"
    )
    rows = list(iter_input_items(jsonl))
    assert [row.id for row in rows] == ["a", "line-2", "line-3", "line-4"]
    assert rows[0].item == "hello" and rows[0].metadata == {"text": "hello", "source": "x"}
    assert "invalid JSON on line 2" in rows[1].error
    assert rows[2].item == {"text": "caption", "image": str(tmp_path / "missing.png")}
    assert "neither 'text' nor 'image'" in rows[3].error
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(iter_input_items(tmp_path / "nope"))


def test_index_encodes_every_good_item_and_reports_bad_ones(checkpoint, corpus, tmp_path, tiny_models):
    report = build_index(
        checkpoint, corpus, tmp_path / "index", dtype="float32", batch_size=4, show_progress_bar=False
    )
    assert report.indexed == len(GOOD_IDS) and report.already_present == 0
    reasons = {record["id"]: record["reason"] for record in report.skipped}
    assert set(reasons) == {"empty.txt", "broken.png"}
    assert reasons["empty.txt"] == "empty file"
    assert "cannot read image file" in reasons["broken.png"]
    saved = [
        json.loads(line) for line in (tmp_path / "index" / "skipped-00000.jsonl").read_text().splitlines()
    ]
    assert {record["id"] for record in saved} == {"empty.txt", "broken.png"}

    index = open_index(tmp_path / "index")
    assert set(index.ids) == GOOD_IDS
    model, processor = tiny_models("qwen2_5_vl")
    expected = model.encode_candidates([TEXTS[3]], processor)[0]
    torch.testing.assert_close(index.get_vectors("doc-03.txt").float(), expected, atol=1e-5, rtol=0)
    assert index.get_metadata("doc-03.txt")["text"] == TEXTS[3]


def test_a_crashed_run_resumes_without_losing_or_doubling_items(checkpoint, corpus, tmp_path, monkeypatch):
    original_save = MetaEmbedIndex.save
    calls = {"n": 0}

    def crash_on_second_save(self, path=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return original_save(self, path)

    monkeypatch.setattr(MetaEmbedIndex, "save", crash_on_second_save)
    with pytest.raises(KeyboardInterrupt):
        build_index(
            checkpoint,
            corpus,
            tmp_path / "index",
            dtype="float32",
            batch_size=2,
            save_every=2,
            show_progress_bar=False,
        )
    partial = open_index(tmp_path / "index")
    assert 0 < len(partial) < len(GOOD_IDS)
    monkeypatch.setattr(MetaEmbedIndex, "save", original_save)

    report = build_index(
        checkpoint,
        corpus,
        tmp_path / "index",
        dtype="float32",
        batch_size=2,
        save_every=2,
        show_progress_bar=False,
    )
    assert report.already_present == len(partial)
    assert report.already_present + report.indexed == len(GOOD_IDS)
    resumed = open_index(tmp_path / "index")
    assert sorted(resumed.ids) == sorted(GOOD_IDS)  # each exactly once
    clean = build_index(checkpoint, corpus, tmp_path / "clean", dtype="float32", show_progress_bar=False)
    assert clean.indexed == len(GOOD_IDS)
    reference = open_index(tmp_path / "clean")
    for item_id in GOOD_IDS:
        torch.testing.assert_close(resumed.get_vectors(item_id), reference.get_vectors(item_id))


def test_shards_written_per_rank_are_searched_together(checkpoint, corpus, tmp_path, tiny_models):
    for rank in (0, 1):
        build_index(
            checkpoint,
            corpus,
            tmp_path / "sharded",
            dtype="float32",
            rank=rank,
            world_size=2,
            show_progress_bar=False,
        )
    build_index(checkpoint, corpus, tmp_path / "single", dtype="float32", show_progress_bar=False)
    sharded = open_index(tmp_path / "sharded")
    assert isinstance(sharded, ShardedIndex) and len(sharded.shards) == 2
    assert sorted(sharded.shards[0].ids + sharded.shards[1].ids) == sorted(GOOD_IDS)
    model, processor = tiny_models("qwen2_5_vl")
    queries = ["a red circle", "a blue square"]
    for budget in ((1, 1), (2, 4), (4, 8)):
        got = search_index(
            tmp_path / "sharded", queries, model=model, processor=processor, budget=budget, k=5
        )
        want = search_index(
            tmp_path / "single", queries, model=model, processor=processor, budget=budget, k=5
        )
        assert [[hit["id"] for hit in hits] for hits in got] == [[hit["id"] for hit in hits] for hits in want]


def test_search_ranks_exactly_like_the_model_score(checkpoint, corpus, tmp_path, tiny_models):
    build_index(checkpoint, corpus, tmp_path / "index", dtype="float32", show_progress_bar=False)
    model, processor = tiny_models("qwen2_5_vl")
    index = open_index(tmp_path / "index")
    ids = index.ids
    candidates = torch.stack([index.get_vectors(item_id).float() for item_id in ids])
    queries = ["a red circle", "green star"]
    for budget in ((1, 1), (2, 4), (4, 8)):
        hits = search_index(
            tmp_path / "index", queries, model=model, processor=processor, budget=budget, k=len(ids)
        )
        scores = model.score(model.encode_queries(queries, processor), candidates, budget=budget)
        for row, query_hits in enumerate(hits):
            expected = sorted(range(len(ids)), key=lambda j: -scores[row, j].item())
            assert [hit["id"] for hit in query_hits][:3] == [ids[j] for j in expected[:3]]
            assert query_hits[0]["score"] == pytest.approx(scores[row].max().item(), abs=1e-4)
    two_stage = search_index(
        tmp_path / "index",
        queries,
        model=model,
        processor=processor,
        first_stage=(1, 1),
        rerank=(4, 8),
        candidates=len(ids),
        k=5,
    )
    exhaustive = search_index(
        tmp_path / "index", queries, model=model, processor=processor, budget=(4, 8), k=5
    )
    assert [[h["id"] for h in hits] for hits in two_stage] == [[h["id"] for h in hits] for hits in exhaustive]


def test_cli_index_then_search(checkpoint, corpus, tmp_path, capsys):
    from metaembed.cli import main

    out = tmp_path / "cli-index"
    assert main(["index", checkpoint, str(corpus), str(out), "--no-progress", "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    assert f"Indexed {len(GOOD_IDS)} new items" in printed and "empty.txt: empty file" in printed
    assert main(["search", str(out), "a red circle", "--budget", "2,4", "--k", "3"]) == 0
    printed = capsys.readouterr().out
    assert (
        "Query: a red circle" in printed
        and printed.count("  doc-") + printed.count(".png") + printed.count(".jpg") >= 3
    )
    assert (
        main(["search", str(out), "a red circle", "--two-stage", "--rerank", "4,8", "--k", "2", "--json"])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert len(result[0]["hits"]) == 2 and set(result[0]["hits"][0]) == {"id", "score", "metadata"}
    # Rerunning the same command resumes: nothing new, nothing doubled.
    assert main(["index", checkpoint, str(corpus), str(out), "--no-progress"]) == 0
    assert "Indexed 0 new items" in capsys.readouterr().out


def test_accelerate_launch_writes_one_shard_per_rank(checkpoint, corpus, tmp_path):
    """`accelerate launch --num_processes 2 metaembed index ...`: each rank writes its own shard, search reads both.

    `--multi_gpu` selects accelerate's multi-process launcher (torchrun underneath), the one a multi-GPU node uses;
    on this GPU-less machine it starts two CPU processes with RANK / WORLD_SIZE set. (`--cpu` always starts a single
    process unless MPI is configured.)
    """
    import os
    import subprocess
    import sys

    out = tmp_path / "launched"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "metaembed.cli",
        "index", checkpoint, str(corpus), str(out), "--no-progress",
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    sharded = open_index(out)
    assert isinstance(sharded, ShardedIndex) and len(sharded.shards) == 2
    assert all(len(shard) > 0 for shard in sharded.shards)
    assert sorted(sharded.shards[0].ids + sharded.shards[1].ids) == sorted(GOOD_IDS)
