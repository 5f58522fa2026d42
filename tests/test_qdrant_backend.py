"""The Qdrant backend in qdrant-client's local mode, checked against the exact MetaEmbedIndex."""

from __future__ import annotations

import doctest
import sys

import pytest
import torch
from maxsim_reference import normalized, reference_maxsim

qdrant_client = pytest.importorskip("qdrant_client")

from metaembed.index import MetaEmbedIndex  # noqa: E402
from metaembed.index.qdrant import QdrantMultiVectorIndex  # noqa: E402

DIM, N = 16, 40


@pytest.fixture(scope="module")
def corpus():
    generator = torch.Generator().manual_seed(7)
    candidates = normalized(N, 8, DIM, generator=generator)
    queries = normalized(4, 4, DIM, generator=generator)
    return candidates, queries


@pytest.fixture(scope="module")
def qdrant_index(corpus):
    candidates, _ = corpus
    index = QdrantMultiVectorIndex(
        qdrant_client.QdrantClient(":memory:"), "docs", dim=DIM, candidate_budgets=(1, 2, 8)
    )
    index.extend(
        [f"doc-{i}" for i in range(N)], candidates, metadata=[{"n": i} for i in range(N)], batch_size=16
    )
    return index


@pytest.fixture(scope="module")
def exact_index(corpus):
    candidates, _ = corpus
    index = MetaEmbedIndex(DIM, max_candidate_vectors=8, dtype="float32")
    index.extend([f"doc-{i}" for i in range(N)], candidates)
    return index


@pytest.mark.parametrize("budget", [(1, 1), (2, 2), (4, 8), (1, 8)])
def test_matches_exact_search_at_every_served_budget(qdrant_index, exact_index, corpus, budget):
    _, queries = corpus
    got = qdrant_index.search(queries, budget=budget, k=5)
    expected = exact_index.search(queries, budget=budget, k=5)
    assert got.ids == expected.ids
    torch.testing.assert_close(got.scores, expected.scores, atol=1e-4, rtol=0)
    assert len(qdrant_index) == N


def test_two_stage_prefetch(qdrant_index, exact_index, corpus):
    _, queries = corpus
    two_stage = qdrant_index.search(queries, first_stage=(1, 1), rerank=(4, 8), candidates=N, k=5)
    assert two_stage.ids == exact_index.search(queries, budget=(4, 8), k=5).ids
    # A shortlist of 10 re-scored at (4, 8) equals the exact two-stage search.
    short = qdrant_index.search(queries, first_stage=(1, 1), rerank=(4, 8), candidates=10, k=3)
    assert short.ids == exact_index.search(queries, first_stage=(1, 1), rerank=(4, 8), candidates=10, k=3).ids


def test_budget_scheme_and_metadata(qdrant_index):
    with pytest.raises(ValueError, match=r"serves candidate budgets \[1, 2, 8\]; r_c=4"):
        qdrant_index.search(torch.randn(1, 2, DIM), budget=(1, 4))
    with pytest.raises(ValueError, match=r"r_q=5 .*1\.\.4"):
        qdrant_index.search(torch.randn(1, 4, DIM), budget=(5, 8))
    with pytest.raises(ValueError, match="d=3"):
        qdrant_index.search(torch.randn(1, 2, 3))
    assert qdrant_index.get_metadata("doc-3") == {"n": 3}
    names = set(qdrant_index.client.get_collection("docs").config.params.vectors)
    assert names == {"rc1", "rc2", "rc8"}


def test_ragged_items_and_validation():
    client = qdrant_client.QdrantClient(":memory:")
    index = QdrantMultiVectorIndex(client, "ragged", dim=DIM, candidate_budgets=(1, 4))
    generator = torch.Generator().manual_seed(8)
    items = [normalized(n, DIM, generator=generator) for n in (1, 2, 4)]
    index.extend(["a", "b", "c"], items)
    queries = normalized(2, 3, DIM, generator=generator)
    result = index.search(queries, budget=(3, 4), k=3)
    expected = reference_maxsim(queries, items, (3, 4))
    order = expected.argsort(dim=1, descending=True)
    assert result.ids == [[["a", "b", "c"][j] for j in row] for row in order.tolist()]
    torch.testing.assert_close(result.scores.double(), expected.gather(1, order), atol=1e-4, rtol=0)
    bad = normalized(1, 4, DIM)
    bad[0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"'z'.*NaN"):
        index.extend(["z"], bad)
    with pytest.raises(ValueError, match="d=16 vectors, got d=5"):
        index.extend(["z"], torch.randn(1, 2, 5))
    with pytest.raises(ValueError, match="Dimension mismatch"):
        QdrantMultiVectorIndex(client, "ragged", dim=8, candidate_budgets=(1, 4))
    with pytest.raises(ValueError, match="has no vector 'rc2'"):
        QdrantMultiVectorIndex(client, "ragged", dim=DIM, candidate_budgets=(1, 2))


def test_docstring_example():
    import metaembed.index.qdrant as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_missing_qdrant_client_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "qdrant_client", None)
    with pytest.raises(ImportError, match=r"pip install 'metaembed\[qdrant\]'"):
        QdrantMultiVectorIndex(object(), "docs", dim=4)
