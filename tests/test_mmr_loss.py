"""The MMR loss: a hand-computed reference, NoMMR, slicing against separately computed groups, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from sentence_transformers.multi_vector_encoder.losses import MultiVectorMultipleNegativesRankingLoss

from metaembed import maxsim_scores
from metaembed.st_module import MMRLoss, build_multi_vector_encoder, mmr_loss
from metaembed.st_module.losses import group_scores

QUERIES = [
    "what does encode return",
    "how are budgets validated",
    "which tokens are appended",
    "what is MaxSim",
]
POSITIVES = [
    "encode returns normalised multi-vector embeddings",
    "check_budget validates every budget in one place",
    "the meta tokens are appended after the input",
    "MaxSim sums over query vectors the best match",
]
NEGATIVES = ["the quick brown fox", "a red circle left of a blue square", "def f(x): return x", "0123456789"]


def _maxsim(query: list[list[float]], candidate: list[list[float]]) -> float:
    return sum(max(sum(a * b for a, b in zip(q, c)) for c in candidate) for q in query)


def test_matches_a_hand_computed_reference():
    # 2 queries with 2 vectors, candidates with 2 vectors, d = 2; one hard negative per query.
    q = [[[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [0.8, -0.6]]]
    p = [[[0.8, 0.6], [0.0, 1.0]], [[1.0, 0.0], [0.6, 0.8]]]
    n = [[[[0.0, -1.0], [1.0, 0.0]]], [[[0.6, 0.8], [-1.0, 0.0]]]]
    budgets, tau = [(1, 1), (2, 2)], 0.5
    expected = 0.0
    for r_q, r_c in budgets:
        for i in range(2):
            # candidates of query i: every positive, then its own hard negative (not the other query's)
            candidates = [p[0], p[1], n[i][0]]
            logits = [_maxsim(q[i][:r_q], c[:r_c]) / tau for c in candidates]
            expected += (math.log(sum(math.exp(x) for x in logits)) - logits[i]) / 2
    expected /= len(budgets)
    loss = mmr_loss(torch.tensor(q), torch.tensor(p), torch.tensor(n), budgets=budgets, temperature=tau)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_group_scores_are_prefix_maxsims():
    torch.manual_seed(0)
    similarity = torch.randn(3, 5, 4, 6)
    budgets = [(1, 1), (2, 3), (4, 6)]
    for (r_q, r_c), scores in zip(budgets, group_scores(similarity, budgets)):
        torch.testing.assert_close(scores, similarity[..., :r_q, :r_c].amax(-1).sum(-1))


def test_weights_and_group_report():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(4, 2, 8), dim=-1)
    p = F.normalize(torch.randn(4, 4, 8), dim=-1)
    total, groups = mmr_loss(q, p, budgets=[(1, 1), (2, 4)], weights=[1, 3], return_group_losses=True)
    torch.testing.assert_close(total, (groups[0] + 3 * groups[1]) / 4)
    single = mmr_loss(q, p, budgets=[(2, 4)])
    torch.testing.assert_close(groups[1], single)


@pytest.fixture(scope="module")
def encoder(tiny_models):
    model, processor = tiny_models("qwen2")
    return build_multi_vector_encoder(model, processor)


def _features(encoder, columns):
    return [
        encoder.preprocess(texts, task="query" if i == 0 else "document") | {}
        for i, texts in enumerate(columns)
    ]


def test_nommr_equals_the_single_largest_group_and_sentence_transformers_mnrl(encoder):
    features = _features(encoder, [QUERIES, POSITIVES])
    nommr = MMRLoss(encoder, mmr=False)(features)
    single = MMRLoss(encoder, budgets=[(4, 8)])(features)
    torch.testing.assert_close(nommr, single)
    # Without hard negatives, in-batch InfoNCE over MaxSim / tau is exactly ST's multi-vector MNRL at scale 1/tau.
    reference = MultiVectorMultipleNegativesRankingLoss(encoder, scale=1 / 0.03)(
        _features(encoder, [QUERIES, POSITIVES])
    )
    torch.testing.assert_close(nommr, reference, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(MMRLoss(encoder)(features), nommr)


def test_groups_derived_by_slicing_equal_groups_computed_separately(encoder):
    """Loss and gradients: one full-budget encoding sliced per group, against every group encoded at its own
    budget (a causal backbone then runs fewer meta tokens) and scored on its own."""
    model = encoder[0].model
    columns = [QUERIES, POSITIVES, NEGATIVES]
    budgets, tau = [(1, 1), (2, 4), (4, 8)], 0.05
    loss = MMRLoss(encoder, budgets=budgets, temperature=tau)(_features(encoder, columns))
    model.zero_grad()
    loss.backward()
    sliced_grad = model.meta_tokens.weight.grad.clone()

    model.zero_grad()
    expected = 0.0
    labels = torch.arange(len(QUERIES))
    for r_q, r_c in budgets:
        q = encoder(encoder.preprocess(QUERIES, task="query"), task="query", budget=r_q)["token_embeddings"]
        p = encoder(encoder.preprocess(POSITIVES, task="document"), task="document", budget=r_c)[
            "token_embeddings"
        ]
        n = encoder(encoder.preprocess(NEGATIVES, task="document"), task="document", budget=r_c)[
            "token_embeddings"
        ]
        own_negative = torch.stack(
            [maxsim_scores(q[i : i + 1], n[i : i + 1])[0, 0] for i in range(len(QUERIES))]
        )
        logits = torch.cat([maxsim_scores(q, p), own_negative[:, None]], dim=1) / tau
        expected = expected + F.cross_entropy(logits, labels) / len(budgets)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sliced_grad, model.meta_tokens.weight.grad, rtol=1e-4, atol=1e-7)
    assert sliced_grad[:4].abs().sum() > 0 and sliced_grad[4:].abs().sum() > 0
    model.zero_grad()


def test_group_losses_reported_for_the_trainer(encoder):
    features = _features(encoder, [QUERIES, POSITIVES])
    parts = MMRLoss(encoder, report_group_losses=True, weights=[1, 1, 2])(features)
    assert list(parts) == ["mmr_1x1", "mmr_2x4", "mmr_4x8"]
    torch.testing.assert_close(sum(parts.values()), MMRLoss(encoder, weights=[1, 1, 2])(features))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budgets": [(2, 4), (1, 1)]}, "grow on both sides"),
        ({"budgets": [(1, 1), (1, 1)]}, "grow on both sides"),
        ({"budgets": [(1, 9)]}, r"1\.\.8"),
        ({"budgets": [(5, 8)]}, r"1\.\.4"),
        ({"weights": [1, 1]}, "one positive weight per budget group"),
        ({"weights": [1, 0, 1]}, "one positive weight per budget group"),
        ({"temperature": 0}, "temperature"),
    ],
)
def test_bad_configuration(encoder, kwargs, message):
    with pytest.raises(ValueError, match=message):
        MMRLoss(encoder, **kwargs)


def test_bad_batches(encoder):
    with pytest.raises(ValueError, match="pairs"):
        MMRLoss(encoder)(_features(encoder, [QUERIES]))
    q = F.normalize(torch.randn(2, 4, 8), dim=-1)
    with pytest.raises(ValueError, match="dimension 8 but candidate vectors have 16"):
        mmr_loss(q, torch.randn(2, 8, 16), budgets=[(1, 1)])
    with pytest.raises(ValueError, match="need 4 query and 8 candidate vectors"):
        mmr_loss(q, torch.randn(2, 4, 8), budgets=[(4, 8)])
    with pytest.raises(ValueError, match="one positive per query"):
        mmr_loss(q, torch.randn(3, 8, 8), budgets=[(1, 1)])
