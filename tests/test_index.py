"""MetaEmbedIndex: exactness per dtype, prefix layout, persistence, crashes, corruption, concurrency."""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading

import pytest
import torch
from maxsim_reference import normalized, reference_maxsim
from safetensors import safe_open

from metaembed.index import CorruptIndexError, MetaEmbedIndex, ShardedIndex, bytes_per_vector
from metaembed.index import storage as storage_module
from metaembed.index.quantization import dequantize
from metaembed.scoring import maxsim

DIM, R_C, N = 48, 8, 120


def structured_corpus(
    n: int = N, n_queries: int = 6, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Candidates with a low-rank structure and queries planted near known targets (clear rankings)."""
    generator = torch.Generator().manual_seed(seed)
    basis = torch.randn(8, DIM, generator=generator)
    latent = torch.randn(n, 1, 8, generator=generator) + 0.4 * torch.randn(n, R_C, 8, generator=generator)
    candidates = torch.nn.functional.normalize(
        latent @ basis + 0.3 * torch.randn(n, R_C, DIM, generator=generator), dim=-1
    )
    targets = torch.randperm(n, generator=generator)[:n_queries].tolist()
    queries = torch.nn.functional.normalize(
        candidates[targets, :4].repeat(1, 4, 1) + 0.05 * torch.randn(n_queries, 16, DIM, generator=generator),
        dim=-1,
    )
    return candidates, queries, targets


def build(dtype: str = "float32", vectors: torch.Tensor | None = None, **kwargs) -> MetaEmbedIndex:
    vectors = structured_corpus()[0] if vectors is None else vectors
    index = MetaEmbedIndex(DIM, max_candidate_vectors=vectors.shape[1], dtype=dtype, **kwargs)
    index.extend(
        [f"doc-{i}" for i in range(len(vectors))], vectors, metadata=[{"n": i} for i in range(len(vectors))]
    )
    return index


def stored_vectors(index: MetaEmbedIndex) -> torch.Tensor:
    """The index's stored vectors dequantized, item-major [N, r_c_max, d] (what it actually scores)."""
    return torch.stack([index.get_vectors(i) for i in index.ids])


# Exactness ----------------------------------------------------------------------------------------

# Against the float64 reference over the *stored* values, only the compute rounding remains: dots
# rounded to bfloat16 (2**-9 relative) or float16, and for int8 the query's own per-row int8 rounding.
STORED_TOLERANCE = {"float32": 1e-5, "bfloat16": 2**-8, "float16": 2**-10, "int8": 0.01, "float8_e4m3": 2**-8}
# Against the float64 reference over the *original* float32 vectors, the storage rounding adds up:
# about 2**-9 relative per value (bf16), 2**-12 (fp16), 1/254 of the vector's max (int8) and 2**-4
# relative (fp8 e4m3). Per query vector that bounds the error of one max by these figures.
ORIGINAL_TOLERANCE = {"float32": 1e-5, "bfloat16": 0.01, "float16": 0.002, "int8": 0.02, "float8_e4m3": 0.06}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "int8", "float8_e4m3"])
def test_exact_against_float64_reference(dtype):
    candidates, queries, targets = structured_corpus()
    index = build(dtype, candidates)
    budget = (4, 8)
    scores = index.score(queries, budget=budget)
    stored = reference_maxsim(queries, stored_vectors(index), budget)
    original = reference_maxsim(queries, candidates, budget)
    torch.testing.assert_close(scores.double(), stored, atol=budget[0] * STORED_TOLERANCE[dtype], rtol=0)
    torch.testing.assert_close(scores.double(), original, atol=budget[0] * ORIGINAL_TOLERANCE[dtype], rtol=0)
    # Rank agreement: every query finds its planted target first, and the top-10 mostly agree.
    result = index.search(queries, budget=budget, k=10)
    assert [ids[0] for ids in result.ids] == [f"doc-{t}" for t in targets]
    expected_top = original.topk(10, dim=1).indices
    overlap = [
        len(set(result.positions[i].tolist()) & set(expected_top[i].tolist())) / 10
        for i in range(len(queries))
    ]
    assert sum(overlap) / len(overlap) >= (1.0 if dtype in ("float32", "float16") else 0.8)


def test_search_returns_ranked_ids_scores_and_positions():
    candidates, queries, _ = structured_corpus()
    index = build("float32", candidates)
    result = index.search(queries, budget=(16, 8), k=5)
    expected = reference_maxsim(queries, candidates, (16, 8))
    top = expected.topk(5, dim=1)
    assert result.positions.tolist() == top.indices.tolist()
    assert result.ids == [[f"doc-{p}" for p in row] for row in top.indices.tolist()]
    torch.testing.assert_close(result.scores.double(), top.values, atol=1e-4, rtol=0)
    assert index.search(queries[:1], k=500).scores.shape == (1, N)  # k > N: every item, ranked


# Layout and memory ---------------------------------------------------------------------------------


def test_prefix_property_budget_reads_a_contiguous_prefix():
    candidates, queries, _ = structured_corpus()
    index = build("bfloat16", candidates)
    for r_c in (1, 2, 4, 8):
        ((prefix, scales),) = index.prefix(r_c)
        assert scales is None
        assert prefix.is_contiguous()
        assert torch.equal(prefix, candidates[:, :r_c].to(torch.bfloat16).transpose(0, 1))
        torch.testing.assert_close(
            index.score(queries, budget=(2, r_c)),
            maxsim(queries[:, :2].to(torch.bfloat16), candidates[:, :r_c].to(torch.bfloat16)),
            atol=1e-6,
            rtol=0,
        )


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float8_e4m3", "int8"])
def test_memory_is_reported_exactly(dtype):
    vectors = normalized(10, 8, 512)
    index = MetaEmbedIndex(512, max_candidate_vectors=8, dtype=dtype)
    index.extend([str(i) for i in range(10)], vectors)
    for row in index.memory_report([1, 4, 8]):
        r_c = row["r_c"]
        ((vectors, scales),) = index.prefix(r_c)
        actual = vectors.nbytes + (0 if scales is None else scales.nbytes)
        assert row["bytes"] == index.nbytes(r_c) == actual
        assert row["bytes_per_candidate"] == r_c * bytes_per_vector(dtype, 512)
        assert 0 <= row["overhead"] < 0.01  # within 1% of N * r_c * d * itemsize
    assert index.storage_nbytes() == index.nbytes() + 10 * 4  # plus the int32 lengths


def test_ragged_candidates():
    generator = torch.Generator().manual_seed(5)
    items = [normalized(n, DIM, generator=generator) for n in (1, 3, 8, 5)]
    queries = normalized(3, 4, DIM, generator=generator)
    index = MetaEmbedIndex(DIM, max_candidate_vectors=8, dtype="float32")
    index.extend(["a", "b", "c", "d"], items)
    for budget in [(4, 8), (2, 2), (1, 4)]:
        torch.testing.assert_close(
            index.score(queries, budget).double(), reference_maxsim(queries, items, budget), atol=1e-5, rtol=0
        )
    assert index.get_vectors("b").shape == (3, DIM)
    assert torch.equal(index.get_vectors("b"), items[1])


# Sharding and two-stage search ---------------------------------------------------------------------


def test_sharded_merge_equals_single_shard(tmp_path):
    candidates, queries, _ = structured_corpus()
    single = build("float32", candidates)
    cuts = [0, 17, 70, N]
    shards = []
    for number, (start, stop) in enumerate(itertools.pairwise(cuts)):
        shard = MetaEmbedIndex(DIM, max_candidate_vectors=R_C, dtype="float32")
        shard.extend([f"doc-{i}" for i in range(start, stop)], candidates[start:stop])
        shards.append(shard)
        shard.save(tmp_path / f"shard-{number}")
    for sharded in (ShardedIndex(shards), ShardedIndex.open([tmp_path / f"shard-{i}" for i in range(3)])):
        assert len(sharded) == N
        for budget in [(1, 1), (4, 8), (16, 8)]:
            expected = single.search(queries, budget=budget, k=10)
            got = sharded.search(queries, budget=budget, k=10)
            assert got.ids == expected.ids
            assert torch.equal(got.positions, expected.positions)
            torch.testing.assert_close(got.scores, expected.scores, atol=1e-5, rtol=1e-6)


def test_sharded_rejects_mismatched_shards():
    with pytest.raises(ValueError, match="disagree"):
        ShardedIndex([MetaEmbedIndex(8), MetaEmbedIndex(16)])
    a, b = MetaEmbedIndex(4, max_candidate_vectors=1), MetaEmbedIndex(4, max_candidate_vectors=1)
    a.append("x", torch.ones(1, 4))
    b.append("x", torch.ones(1, 4))
    with pytest.raises(ValueError, match="repeats ids"):
        ShardedIndex([a, b])


@pytest.mark.parametrize("backend", ["exact", "faiss"])
def test_two_stage_with_all_candidates_equals_exhaustive(backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    candidates, queries, targets = structured_corpus()
    index = build("float32", candidates)
    exhaustive = index.search(queries, budget=(16, 8), k=10)
    two_stage = index.search(
        queries, first_stage=(1, 1), rerank=(16, 8), candidates=N, k=10, first_stage_backend=backend
    )
    assert two_stage.ids == exhaustive.ids
    torch.testing.assert_close(two_stage.scores, exhaustive.scores, atol=1e-5, rtol=0)
    # A real shortlist still finds every planted target on this well-separated data.
    short = index.search(
        queries, first_stage=(1, 1), rerank=(16, 8), candidates=20, k=1, first_stage_backend=backend
    )
    assert [ids[0] for ids in short.ids] == [f"doc-{t}" for t in targets]


def test_faiss_missing_is_a_clear_error(monkeypatch):
    index = build("float32")
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r"pip install 'metaembed\[faiss\]'"):
        index.search(torch.randn(1, 1, DIM), first_stage=(1, 1), rerank=(1, 8), first_stage_backend="faiss")
    with pytest.raises(ValueError, match="first_stage must be"):
        index.search(torch.randn(1, 2, DIM), first_stage=(2, 2), first_stage_backend="faiss")
    with pytest.raises(ValueError, match="not both"):
        index.search(torch.randn(1, 2, DIM), budget=(1, 1), first_stage=(1, 1))


# Persistence ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3", "int8"])
def test_save_open_round_trip_memory_mapped(tmp_path, dtype):
    candidates, queries, _ = structured_corpus()
    index = build(dtype, candidates)
    index.save(tmp_path / "idx")
    opened = MetaEmbedIndex.open(tmp_path / "idx")
    assert opened.ids == index.ids and opened.dtype == dtype
    assert opened.get_metadata("doc-7") == {"n": 7}
    torch.testing.assert_close(opened.score(queries, (4, 8)), index.score(queries, (4, 8)), atol=0, rtol=0)
    # The segment is a plain safetensors file: any reader sees the budget-major vectors.
    (segment_file,) = (tmp_path / "idx").glob("segment-*.safetensors")
    with safe_open(segment_file, framework="pt") as handle:
        vectors = handle.get_tensor("vectors")
        scales = handle.get_tensor("scales") if "scales" in handle.keys() else None  # noqa: SIM118
        assert json.loads(handle.metadata()["ids"]) == index.ids
    assert vectors.shape == (R_C, N, DIM)
    torch.testing.assert_close(
        dequantize(vectors[:, 7], None if scales is None else scales[:, 7]), index.get_vectors("doc-7")
    )


def test_append_after_open_writes_only_a_new_segment(tmp_path):
    candidates, queries, _ = structured_corpus()
    first = MetaEmbedIndex(DIM, max_candidate_vectors=R_C)
    first.extend([f"doc-{i}" for i in range(60)], candidates[:60])
    first.save(tmp_path)
    (old_segment,) = tmp_path.glob("segment-*")
    stamp = old_segment.stat().st_mtime_ns
    reopened = MetaEmbedIndex.open(tmp_path)
    reopened.extend([f"doc-{i}" for i in range(60, N)], candidates[60:], metadata=[{"late": True}] * (N - 60))
    reopened.save()
    assert old_segment.exists() and old_segment.stat().st_mtime_ns == stamp
    assert len(list(tmp_path.glob("segment-*"))) == 2
    final = MetaEmbedIndex.open(tmp_path)
    assert len(final) == N and final.get_metadata("doc-100") == {"late": True}
    torch.testing.assert_close(
        final.score(queries, (4, 8)), build("bfloat16", candidates).score(queries, (4, 8)), atol=0, rtol=0
    )
    final.compact()
    final.save()
    assert len(list(tmp_path.glob("segment-*"))) == 1  # the merged segment replaced both
    assert MetaEmbedIndex.open(tmp_path).ids == final.ids


def test_crash_at_commit_leaves_old_index_readable(tmp_path, monkeypatch):
    candidates, queries, _ = structured_corpus()
    index = build("bfloat16", candidates[:50])
    index.save(tmp_path)
    before = MetaEmbedIndex.open(tmp_path).score(queries, (4, 8))
    index.extend(["new"], candidates[50:51])
    real_replace = os.replace

    def crash_on_manifest(src, dst):
        if str(dst).endswith(storage_module.MANIFEST_NAME):
            raise OSError("simulated power loss before the manifest rename")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_manifest)
    with pytest.raises(OSError, match="simulated"):
        index.save()
    monkeypatch.setattr(os, "replace", real_replace)
    reopened = MetaEmbedIndex.open(tmp_path)
    assert len(reopened) == 50 and "new" not in reopened
    torch.testing.assert_close(reopened.score(queries, (4, 8)), before, atol=0, rtol=0)


def test_crash_mid_segment_write_leaves_old_index_readable(tmp_path, monkeypatch):
    candidates, _, _ = structured_corpus()
    index = build("bfloat16", candidates[:50])
    index.save(tmp_path)
    index.extend([f"late-{i}" for i in range(30)], candidates[50:80])
    real_bytes = storage_module._tensor_bytes

    def die_halfway(tensor):
        chunks = list(real_bytes(tensor))
        yield chunks[0][: len(chunks[0]) // 2]
        raise OSError("simulated crash mid-write")

    monkeypatch.setattr(storage_module, "_tensor_bytes", die_halfway)
    with pytest.raises(OSError, match="mid-write"):
        index.save()
    monkeypatch.undo()
    reopened = MetaEmbedIndex.open(tmp_path)
    assert len(reopened) == 50
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # the partial file was removed
    # A real crash leaves a partial temporary file behind: it is ignored, and swept by the next save.
    (tmp_path / ".segment-000009-deadbeef.safetensors.tmp-0123abcd").write_bytes(b"partial")
    assert len(MetaEmbedIndex.open(tmp_path)) == 50
    index.save()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert len(MetaEmbedIndex.open(tmp_path)) == 80


def test_truncated_segment_is_a_clear_error(tmp_path):
    build("bfloat16").save(tmp_path)
    (segment,) = tmp_path.glob("segment-*")
    data = segment.read_bytes()
    segment.write_bytes(data[: len(data) - 100])
    with pytest.raises(CorruptIndexError, match="truncated"):
        MetaEmbedIndex.open(tmp_path)
    with pytest.raises(CorruptIndexError, match="truncated"):
        MetaEmbedIndex.open(tmp_path, verify=False)  # sizes are checked even without the checksum


def test_corrupted_byte_fails_the_checksum(tmp_path):
    build("bfloat16").save(tmp_path)
    (segment,) = tmp_path.glob("segment-*")
    data = bytearray(segment.read_bytes())
    data[-5000] ^= 0xFF
    segment.write_bytes(bytes(data))
    with pytest.raises(CorruptIndexError, match="checksum"):
        MetaEmbedIndex.open(tmp_path)


def test_corrupt_manifest_and_missing_index(tmp_path):
    with pytest.raises(FileNotFoundError, match="No MetaEmbed index"):
        MetaEmbedIndex.open(tmp_path)
    build("bfloat16").save(tmp_path)
    manifest = tmp_path / storage_module.MANIFEST_NAME
    body = json.loads(manifest.read_text())
    body["count"] = 5  # edited by hand: fails its own checksum
    manifest.write_text(json.dumps(body))
    with pytest.raises(CorruptIndexError, match="checksum"):
        MetaEmbedIndex.open(tmp_path)
    manifest.write_text('{"format": "metaembed.index", "segm')
    with pytest.raises(CorruptIndexError, match="corrupt"):
        MetaEmbedIndex.open(tmp_path)


def test_corrupt_segment_header(tmp_path):
    build("bfloat16").save(tmp_path)
    (segment,) = tmp_path.glob("segment-*")
    data = bytearray(segment.read_bytes())
    data[10:20] = b"#" * 10
    segment.write_bytes(bytes(data))
    with pytest.raises(CorruptIndexError, match="header"):
        MetaEmbedIndex.open(tmp_path, verify=False)


# Input validation -------------------------------------------------------------------------------------


def test_dimension_and_dtype_mismatch_raise_value_error():
    index = MetaEmbedIndex(DIM, max_candidate_vectors=4)
    with pytest.raises(ValueError, match=f"d={DIM} vectors, got d=12"):
        index.extend(["a"], torch.randn(1, 4, 12))
    with pytest.raises(ValueError, match="floating point"):
        index.extend(["a"], torch.ones(1, 4, DIM, dtype=torch.int64))
    with pytest.raises(ValueError, match="at most 4"):
        index.extend(["a"], torch.randn(1, 5, DIM))
    with pytest.raises(ValueError, match="Unknown index dtype"):
        MetaEmbedIndex(DIM, dtype="float64")
    index.extend(["a"], torch.randn(1, 4, DIM))
    with pytest.raises(ValueError, match="queries have d=7"):
        index.search(torch.randn(1, 2, 7))
    with pytest.raises(ValueError, match="floating point"):
        index.search(torch.ones(1, 2, DIM, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"r_c=5 .*1\.\.4"):
        index.search(torch.randn(1, 2, DIM), budget=(1, 5))
    bad_query = torch.randn(1, 2, DIM)
    bad_query[0, 1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        index.search(bad_query, budget=(2, 4))
    assert index.search(bad_query, budget=(1, 4)).ids == [["a"]]  # the NaN vector is outside the budget


def test_bad_items_are_rejected_at_add_naming_the_item():
    index = MetaEmbedIndex(DIM, max_candidate_vectors=4)
    vectors = torch.randn(3, 4, DIM)
    vectors[1, 2, 5] = float("nan")
    with pytest.raises(ValueError, match=r"'b'.*NaN or inf"):
        index.extend(["a", "b", "c"], vectors)
    vectors[1, 2, 5] = float("inf")
    with pytest.raises(ValueError, match=r"'b'.*NaN or inf"):
        index.extend(["a", "b", "c"], vectors)
    assert len(index) == 0  # a rejected batch adds nothing
    with pytest.raises(ValueError, match="no vectors"):
        index.extend(["a", "e"], [torch.randn(2, DIM), torch.empty(0, DIM)])
    with pytest.raises(ValueError, match="more than once"):
        index.extend(["a", "a"], torch.randn(2, 4, DIM))
    with pytest.raises(ValueError, match="must be strings"):
        index.extend([1], torch.randn(1, 4, DIM))
    with pytest.raises(ValueError, match="JSON"):
        index.extend(["a"], torch.randn(1, 4, DIM), metadata=[{"x": object()}])
    index.append("a", torch.randn(4, DIM))
    with pytest.raises(ValueError, match="already in the index"):
        index.append("a", torch.randn(4, DIM))
    with pytest.raises(ValueError, match="2 ids, 1 embeddings"):
        index.extend(["p", "q"], torch.randn(1, 4, DIM))


# Placement ----------------------------------------------------------------------------------------------


def test_offloaded_placement_scores_the_same_on_cpu():
    candidates, queries, _ = structured_corpus()
    resident = build("bfloat16", candidates)
    offloaded = build("bfloat16", candidates, offload=True, chunk_bytes=64 * 1024)  # many streamed blocks
    assert offloaded.storage_device.type == "cpu"
    torch.testing.assert_close(
        offloaded.score(queries, (4, 8)), resident.score(queries, (4, 8)), atol=1e-6, rtol=0
    )
    assert offloaded.search(queries, (4, 8), k=5).ids == resident.search(queries, (4, 8), k=5).ids


def test_many_small_appends_stay_one_segment():
    index = MetaEmbedIndex(DIM, max_candidate_vectors=2, dtype="float32")
    vectors = normalized(40, 2, DIM)
    for i in range(40):
        index.append(f"x{i}", vectors[i])
        if i % 10 == 9:
            index.search(vectors[:1], k=3)  # seals pending items; small segments merge
    assert len(index.prefix()) == 1
    assert index.search(vectors[17:18], k=1).ids == [["x17"]]


# Concurrency ----------------------------------------------------------------------------------------------


def test_reader_during_appends_sees_consistent_snapshots(tmp_path):
    """A writer appends, saves and compacts while a reader keeps opening: every snapshot is whole."""
    dim = 16

    def vectors_for(start: int, count: int) -> torch.Tensor:
        # Item i's vectors all equal i / 1000 in every coordinate: a reader can check each row's identity.
        values = torch.arange(start, start + count, dtype=torch.float32) / 1000
        return values[:, None, None].expand(count, 2, dim).clone()

    writer_index = MetaEmbedIndex(dim, max_candidate_vectors=2, dtype="float32")
    writer_index.extend([str(i) for i in range(5)], vectors_for(0, 5))
    writer_index.save(tmp_path)
    done = threading.Event()
    first_read = threading.Event()  # the writer starts appending only once the reader holds a snapshot
    errors: list[BaseException] = []
    seen_sizes: set[int] = set()

    def write() -> None:
        try:
            first_read.wait(timeout=30)
            start = 5
            for round_number in range(12):
                writer_index.extend([str(i) for i in range(start, start + 7)], vectors_for(start, 7))
                start += 7
                if round_number % 4 == 3:
                    writer_index.compact()  # the next save removes the superseded segment files
                writer_index.save()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            done.set()

    def read() -> None:
        try:
            while not done.is_set() or len(seen_sizes) < 2:
                snapshot = MetaEmbedIndex.open(tmp_path)
                size = len(snapshot)
                assert snapshot.ids == [str(i) for i in range(size)]
                stored = snapshot.score(torch.ones(1, 1, dim), budget=(1, 1))[0]  # = dim * i / 1000
                torch.testing.assert_close(stored, torch.arange(size, dtype=torch.float32) * dim / 1000)
                seen_sizes.add(size)
                first_read.set()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            first_read.set()

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(MetaEmbedIndex.open(tmp_path)) == 5 + 12 * 7
    assert len(seen_sizes) >= 2  # the reader really overlapped with the appends


def test_empty_index_returns_empty_results():
    index = MetaEmbedIndex(DIM, max_candidate_vectors=2)
    queries = torch.randn(2, 2, DIM)
    for result in (index.search(queries, k=5), index.search(queries, first_stage=(1, 1), rerank=(2, 2))):
        assert result.ids == [[], []]
        assert result.scores.shape == (2, 0)
    assert index.score(queries).shape == (2, 0)


def test_from_budget_major_equals_extend():
    candidates, queries, _ = structured_corpus()
    extended = build("int8", candidates)
    slots = candidates.transpose(0, 1)  # a strided view: converted block by block, not used in place
    direct = MetaEmbedIndex.from_budget_major(slots, ids=extended.ids, dtype="int8", chunk_bytes=4096)
    assert torch.equal(direct.score(queries, (4, 8)), extended.score(queries, (4, 8)))
    in_place = slots.contiguous()
    wrapped = MetaEmbedIndex.from_budget_major(in_place)
    assert wrapped.prefix()[0][0].data_ptr() == in_place.data_ptr()  # no copy
    broken = in_place.clone()
    broken[3, 17, 0] = float("inf")
    with pytest.raises(ValueError, match=r"'17' \(vector 3\).*NaN or inf"):
        MetaEmbedIndex.from_budget_major(broken, dtype="bfloat16")


def test_running_topk_with_uneven_query_chunks_equals_a_global_topk():
    from metaembed.index.topk import RunningTopK

    generator = torch.Generator().manual_seed(9)
    scores = torch.randn(5, 40, generator=generator)
    running = RunningTopK(5, 4)
    # Blocks of candidates arrive for different row ranges, as segments with different plans produce.
    for (q0, q1), (c0, c1) in [
        ((0, 2), (0, 3)),
        ((2, 5), (0, 10)),
        ((0, 5), (10, 25)),
        ((0, 3), (3, 10)),
        ((3, 5), (25, 40)),
        ((0, 3), (25, 40)),
    ]:
        running.update(q0, q1, scores[q0:q1, c0:c1], c0)
    got_scores, got_positions = running.result(limit=40)
    expected = scores.topk(4, dim=1)
    assert torch.equal(got_positions, expected.indices)
    assert torch.equal(got_scores, expected.values)
