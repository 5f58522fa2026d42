"""Budgeted MaxSim scoring (metaembed.scoring) against a float64 reference and hand-built answers."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from maxsim_reference import normalized, reference_maxsim

from metaembed.scoring import (
    iter_block_scores,
    maxsim,
    pad_candidates,
    pad_queries,
    score_slots,
    validate_budget,
)

# Dots are rounded to the compute dtype before the max (relative 2**-9 for bfloat16, 2**-12 for
# float16, each dot at most 1 for normalised vectors); the sum over r_q query vectors is float32.
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2**-8, torch.float16: 2**-10}


def test_hand_built_scores():
    queries = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    candidates = torch.tensor([[[1.0, 0.0], [0.6, 0.8]], [[0.0, -1.0], [-1.0, 0.0]]])
    # candidate 0: max(1, .6) + max(0, .8) = 1.8; candidate 1: max(0, -1) + max(-1, 0) = 0
    assert maxsim(queries, candidates)[0].tolist() == pytest.approx([1.8, 0.0])
    # budget (1, 1): only <q_0, c_0>
    assert maxsim(queries, candidates, budget=(1, 1))[0].tolist() == pytest.approx([1.0, 0.0])
    # budget (2, 1): <q_0, c_0> + <q_1, c_0>
    assert maxsim(queries, candidates, budget=(2, 1))[0].tolist() == pytest.approx([1.0, -1.0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("strategy", ["slots", "stacked"])
@pytest.mark.parametrize("budget", [(1, 1), (2, 4), (4, 8), (16, 64)])
def test_matches_float64_reference(dtype, strategy, budget):
    generator = torch.Generator().manual_seed(0)
    queries = normalized(3, 16, 64, generator=generator).to(dtype)
    candidates = normalized(40, 64, 64, generator=generator).to(dtype)
    scores = maxsim(queries, candidates, budget=budget, strategy=strategy)
    expected = reference_maxsim(queries, candidates, budget)
    assert scores.dtype == torch.float32
    assert scores.shape == (3, 40)
    torch.testing.assert_close(scores.double(), expected, atol=budget[0] * TOLERANCE[dtype], rtol=0)


def test_prefix_property():
    generator = torch.Generator().manual_seed(1)
    queries, candidates = (
        normalized(2, 16, 32, generator=generator),
        normalized(30, 64, 32, generator=generator),
    )
    for r_q, r_c in [(1, 1), (4, 8), (8, 16)]:
        budgeted = maxsim(queries, candidates, budget=(r_q, r_c))
        sliced = maxsim(queries[:, :r_q], candidates[:, :r_c])
        torch.testing.assert_close(budgeted, sliced, atol=1e-6, rtol=0)


def test_chunking_does_not_change_scores():
    generator = torch.Generator().manual_seed(2)
    queries, candidates = (
        normalized(7, 4, 32, generator=generator),
        normalized(300, 8, 32, generator=generator),
    )
    whole = maxsim(queries, candidates)
    blocks = list(iter_block_scores(queries, candidates.transpose(0, 1), chunk_bytes=8192))
    assert len({b[0] for b in blocks}) > 1 and len({b[2] for b in blocks}) > 1  # queries and candidates split
    tiny = maxsim(queries, candidates, chunk_bytes=8192)
    torch.testing.assert_close(tiny, whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(whole.double(), reference_maxsim(queries, candidates), atol=1e-5, rtol=0)


def test_ragged_inputs_padding_never_wins():
    generator = torch.Generator().manual_seed(3)
    queries = [normalized(n, 16, generator=generator) for n in (1, 3, 4)]
    # Every real dot product is negative (candidates point away from every query vector), so a zero
    # padding vector would win the max with 0 if padding were not handled.
    base = normalized(6, 16, generator=generator)
    anchor = torch.cat(queries).sum(0)
    candidates = [
        -(torch.nn.functional.normalize(anchor + 0.01 * base[i], dim=0)).expand(n, 16)
        for i, n in enumerate((1, 2, 5, 3, 1, 4))
    ]
    scores = maxsim(queries, candidates)
    expected = reference_maxsim(queries, candidates)
    assert bool((expected < 0).all())
    torch.testing.assert_close(scores.double(), expected, atol=1e-5, rtol=0)
    budgeted = maxsim(queries, candidates, budget=(2, 3))
    torch.testing.assert_close(
        budgeted.double(), reference_maxsim(queries, candidates, (2, 3)), atol=1e-5, rtol=0
    )


def test_empty_candidate_never_wins():
    queries = [torch.tensor([[-1.0, 0.0]])]
    candidates = [torch.tensor([[0.0, -1.0]]), torch.empty(0, 2), torch.tensor([[-1.0, 0.0]])]
    scores = maxsim(queries, candidates)
    assert scores[0, 1] == float("-inf")
    assert scores[0].argmax() == 2
    assert scores[0].topk(2).indices.tolist() == [2, 0]


def test_pad_helpers():
    padded, lengths = pad_candidates([torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0], [5.0, 6.0]])])
    assert lengths.tolist() == [1, 2]
    assert padded[0].tolist() == [[1.0, 2.0], [1.0, 2.0]]  # last vector repeated
    padded, lengths = pad_queries([torch.ones(1, 2), torch.ones(3, 2)])
    assert padded[0, 1:].abs().sum() == 0  # zero padding
    assert lengths.tolist() == [1, 3]
    single, _ = pad_queries(torch.ones(4, 2))  # one [r, d] query
    assert single.shape == (1, 4, 2)


@pytest.mark.parametrize(
    ("budget", "match"),
    [
        ((0, 1), r"r_q=0 .*1\.\.16"),
        ((17, 1), r"r_q=17 .*1\.\.16"),
        ((1, 0), r"r_c=0 .*1\.\.64"),
        ((1, 65), r"r_c=65 .*1\.\.64"),
        ((1.0, 2), "pair of integers"),
        ((1, 2, 3), "pair of integers"),
        ("16,64", "pair of integers"),
    ],
)
def test_budget_validation(budget, match):
    with pytest.raises(ValueError, match=match):
        validate_budget(budget, max_query_vectors=16, max_candidate_vectors=64)
    with pytest.raises(ValueError, match=match):
        maxsim(torch.randn(1, 16, 4), torch.randn(2, 64, 4), budget=budget)


def test_default_budget_uses_every_vector():
    assert validate_budget(None, max_query_vectors=16, max_candidate_vectors=64) == (16, 64)


def test_dimension_mismatch():
    with pytest.raises(ValueError, match="d=8 but candidates have d=4"):
        maxsim(torch.randn(1, 2, 8), torch.randn(3, 2, 4))
    with pytest.raises(ValueError, match="same d"):
        maxsim(torch.randn(1, 2, 4), [torch.randn(2, 4), torch.randn(2, 5)])


def test_quantized_candidates_need_an_index():
    with pytest.raises(ValueError, match="MetaEmbedIndex"):
        maxsim(torch.randn(1, 2, 4), torch.randn(3, 2, 4).to(torch.int8))


def test_score_slots_takes_budget_major_and_item_major_views():
    generator = torch.Generator().manual_seed(4)
    queries, candidates = normalized(2, 4, 16, generator=generator), normalized(9, 8, 16, generator=generator)
    budget_major = candidates.transpose(0, 1).contiguous()
    from_view = score_slots(queries, candidates.transpose(0, 1))
    from_contiguous = score_slots(queries, budget_major)
    torch.testing.assert_close(from_view, from_contiguous, atol=1e-6, rtol=0)
    torch.testing.assert_close(from_view.double(), reference_maxsim(queries, candidates), atol=1e-5, rtol=0)


@settings(max_examples=30, deadline=None)
@given(
    n_q=st.integers(1, 4),
    n_c=st.integers(1, 12),
    r_q=st.integers(1, 5),
    r_c=st.integers(1, 6),
    dim=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_property_matches_reference(n_q, n_c, r_q, r_c, dim, seed):
    generator = torch.Generator().manual_seed(seed)
    queries = torch.randn(n_q, r_q, dim, generator=generator)
    candidates = torch.randn(n_c, r_c, dim, generator=generator)
    budget = (max(1, r_q - 1), max(1, r_c - 1))
    scores = maxsim(queries, candidates, budget=budget, chunk_bytes=512)
    torch.testing.assert_close(
        scores.double(), reference_maxsim(queries, candidates, budget), atol=1e-4, rtol=1e-5
    )


@pytest.mark.parametrize(
    "module",
    [
        "metaembed.scoring",
        "metaembed.index",
        "metaembed.index.index",
        "metaembed.index.quantization",
        "metaembed.index.sharded",
        "metaembed.index.topk",
    ],
)
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0
    assert result.failed == 0
