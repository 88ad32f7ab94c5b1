"""Structure-prior generator, candidate edge sets, label correlation, the trivial-view loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from taskgraph import Task, TaskGraph, TaskSet, ValidationError
from taskgraph.nn.heads import OutputLayout
from taskgraph.structure.prior import (
    StructurePriorGenerator,
    all_pairs,
    candidate_edges,
    label_correlation,
    uninformative_loss,
)


def edge_set(ei: torch.Tensor) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in ei.T.tolist()}


# ---------------------------------------------------------------- generator


@pytest.mark.parametrize("feat_dim", [0, 3])
def test_generator_output_range_shape_and_asymmetry(feat_dim):
    t = 6
    torch.manual_seed(0)
    gen = StructurePriorGenerator(t, feat_dim=feat_dim)
    ei = all_pairs(t)
    feats = torch.randn(t, feat_dim) if feat_dim else None
    w = gen(ei, feats)
    assert w.shape == (t * (t - 1),)
    assert bool(((w >= 0) & (w <= 1)).all())
    torch.testing.assert_close(w, torch.sigmoid(gen.logits(ei, feats)))
    # asymmetric: w_ij and w_ji differ (the released t_i + t_j scorer could not tell them apart)
    rev = gen(ei.flip(0), feats)
    assert bool(((w - rev).abs() > 1e-4).all())
    # differentiable in its parameters
    w.sum().backward()
    assert gen.embedding.weight.grad is not None and gen.embedding.weight.grad.abs().sum() > 0


def test_generator_init_bias_and_feature_checks():
    gen = StructurePriorGenerator(4, init_bias=3.0)
    with torch.no_grad():
        gen.score[2].weight.zero_()
    torch.testing.assert_close(gen(all_pairs(4)), torch.full((12,), float(torch.sigmoid(
        torch.tensor(3.0)))))
    with_feats = StructurePriorGenerator(4, feat_dim=2)
    with pytest.raises(ValidationError, match="features"):
        with_feats(all_pairs(4))
    with pytest.raises(ValidationError, match="features"):
        with_feats(all_pairs(4), torch.zeros(4, 3))


def test_generator_scores_a_subset_of_edges_consistently():
    torch.manual_seed(1)
    gen = StructurePriorGenerator(5)
    ei = all_pairs(5)
    w = gen(ei)
    sub = ei[:, [3, 7, 11]]
    torch.testing.assert_close(gen(sub), w[[3, 7, 11]])


# ---------------------------------------------------------------- candidate edges


def test_all_pairs():
    ei = all_pairs(4)
    assert ei.shape == (2, 12)
    assert edge_set(ei) == {(i, j) for i in range(4) for j in range(4) if i != j}
    assert torch.equal(candidate_edges("all", 4), ei)
    assert all_pairs(1).shape == (2, 0)


def _correlated_labels(n: int = 3000, seed: int = 0) -> np.ndarray:
    """6 binary tasks: 0-1 strongly, 2-3 strongly, 1-4 moderately, 5 independent."""
    g = np.random.default_rng(seed)
    z = g.normal(size=(n, 6))
    lat = np.stack([
        z[:, 0], z[:, 0] + 0.3 * z[:, 1], z[:, 2], z[:, 2] + 0.4 * z[:, 3],
        0.5 * z[:, 0] + z[:, 4], z[:, 5]], axis=1)
    return (lat > 0).astype(float)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 9])
def test_heuristic_candidates_are_top_k_partners_both_directions(k):
    y = _correlated_labels()
    ei = candidate_edges("heuristic", 6, y=torch.tensor(y), k=k)
    corr = np.abs(np.corrcoef(y.T))
    np.fill_diagonal(corr, -1)
    kk = min(k, 5)
    expect = set()
    for i in range(6):
        for j in np.argsort(-corr[i])[:kk]:
            expect |= {(i, int(j)), (int(j), i)}
    assert edge_set(ei) == expect
    assert all(i != j for i, j in expect)
    if k == 1:
        assert {(0, 1), (1, 0), (2, 3), (3, 2)} <= expect
    if k >= 5:
        assert len(expect) == 30


def test_heuristic_needs_labels_and_bad_specs_raise():
    with pytest.raises(ValidationError, match="heuristic"):
        candidate_edges("heuristic", 4)
    with pytest.raises(ValidationError, match="candidates"):
        candidate_edges("everything", 4)
    with pytest.raises(ValidationError, match="shape"):
        candidate_edges(torch.zeros(3, 2, dtype=torch.long), 4)
    with pytest.raises(ValidationError, match="0..3"):
        candidate_edges(torch.tensor([[0, 4], [1, 2]]), 4)
    with pytest.raises(ValidationError, match="0..3"):
        candidate_edges(torch.tensor([[0, -1], [1, 2]]), 4)
    with pytest.raises(ValidationError, match="self-loops"):
        candidate_edges(torch.tensor([[0, 2], [1, 2]]), 4)
    g = TaskGraph(np.zeros((2, 2)), ["a", "b"])
    with pytest.raises(ValidationError, match="differ"):
        candidate_edges(g, 2, names=["a", "c"])


def test_edge_index_spec_passes_through():
    ei = torch.tensor([[0, 2, 3], [1, 0, 2]])
    assert torch.equal(candidate_edges(ei, 4), ei)
    assert torch.equal(candidate_edges([[0, 2], [1, 0]], 4), torch.tensor([[0, 2], [1, 0]]))
    assert candidate_edges(torch.zeros(2, 0, dtype=torch.long), 4).shape == (2, 0)


def test_task_graph_edges_are_included_in_both_directions():
    names = ["a", "b", "c", "d"]
    adj = np.zeros((4, 4))
    adj[0, 1] = 0.7
    adj[2, 3] = -1.0
    cand = np.zeros((4, 4), dtype=bool)
    cand[1, 3] = True
    ei = candidate_edges(TaskGraph(adj, names), 4, names=names)
    assert edge_set(ei) == {(0, 1), (1, 0), (2, 3), (3, 2)}
    ei = candidate_edges(TaskGraph(adj, names, candidates=cand), 4, names=names)
    assert edge_set(ei) == {(0, 1), (1, 0), (2, 3), (3, 2), (1, 3), (3, 1)}
    # an empty graph gives no candidates
    assert candidate_edges(TaskGraph(np.zeros((4, 4)), names), 4).shape == (2, 0)


# ---------------------------------------------------------------- label correlation


def test_label_correlation_equals_numpy_on_complete_data():
    g = np.random.default_rng(0)
    y = np.column_stack([g.integers(0, 2, 500), g.normal(size=500), g.integers(0, 3, 500),
                         g.normal(size=500)]).astype(float)
    y[:, 3] += 0.8 * y[:, 1]
    got = label_correlation(torch.tensor(y))
    expect = np.corrcoef(y.T)
    np.fill_diagonal(expect, 0.0)
    assert got.shape == (4, 4) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expect, atol=1e-6)
    np.testing.assert_allclose(got.numpy(), got.numpy().T, atol=1e-7)


def test_label_correlation_pairwise_complete_with_nan():
    g = np.random.default_rng(1)
    n = 400
    y = g.normal(size=(n, 4))
    y[:, 1] += y[:, 0]
    y[:, 3] -= 0.5 * y[:, 2]
    y[g.random((n, 4)) < 0.3] = np.nan
    y[:10, 2] = np.nan
    got = label_correlation(torch.tensor(y)).numpy()
    for i in range(4):
        for j in range(4):
            if i == j:
                assert got[i, j] == 0.0
                continue
            both = ~np.isnan(y[:, i]) & ~np.isnan(y[:, j])
            expect = np.corrcoef(y[both, i], y[both, j])[0, 1]
            assert got[i, j] == pytest.approx(expect, abs=1e-5), (i, j)


def test_label_correlation_degenerate_pairs():
    y = np.array([[0.0, 1.0, np.nan], [1.0, 1.0, np.nan], [1.0, 1.0, 2.0], [0.0, 1.0, 3.0]])
    got = label_correlation(torch.tensor(y)).numpy()
    assert np.isfinite(got).all()
    assert got[0, 1] == 0.0                 # constant column: no correlation, no NaN
    assert got[0, 2] == 0.0 and got[2, 0] == 0.0   # only 2 co-observed rows (< 3)


# ---------------------------------------------------------------- trivial view


@pytest.fixture
def mixed_layout():
    return OutputLayout(TaskSet([Task("b", "binary"), Task("m", "multiclass", 3),
                                 Task("r", "regression"), Task("m4", "multiclass", 4)]))


def test_uninformative_loss_is_minimal_and_flat_at_uniform(mixed_layout):
    lay = mixed_layout
    b = 5
    uniform = torch.zeros(b, 4, lay.out_dim, dtype=torch.float64)
    uniform[:, 1, :3] = 1.7                     # equal logits: still uniform
    uniform[:, 2, 0] = 12.0                     # regression output: ignored
    out = uniform.clone().requires_grad_(True)
    loss = uninformative_loss(lay, out)
    expect = (np.log(2) + np.log(3) + np.log(4)) / 3
    assert float(loss.detach()) == pytest.approx(expect, rel=1e-9)
    (grad,) = torch.autograd.grad(loss, out)
    assert float(grad.abs().max()) < 1e-12
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        moved = uniform + torch.randn(uniform.shape, generator=g, dtype=torch.float64)
        assert float(uninformative_loss(lay, moved)) > float(loss.detach()) + 1e-6
    # confident predictions are the worst
    confident = uniform.clone()
    confident[:, 0, 0] = 8.0
    assert float(uninformative_loss(lay, confident)) > float(loss.detach()) + 1.0


def test_uninformative_loss_ignores_labels_and_regression_only_is_zero(mixed_layout):
    out = torch.randn(3, 4, mixed_layout.out_dim)
    y = torch.tensor([[0.0, 2.0, 1.0, np.nan]] * 3)
    assert torch.equal(uninformative_loss(mixed_layout, out),
                       uninformative_loss(mixed_layout, out, y))
    reg = OutputLayout(TaskSet([Task("r", "regression")]))
    out = torch.randn(3, 1, 1, requires_grad=True)
    loss = uninformative_loss(reg, out)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(out.grad, torch.zeros_like(out))
