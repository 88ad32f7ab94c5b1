"""GMTL joint prior and decoding: unit and property-based tests (G1-G4 of the reference)."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import taskgraph as tg
from taskgraph import MultiTaskData, Task, TaskGraph, TaskSet, ValidationError
from taskgraph.inference import GMTL, ConvergenceWarning, JointPrior
from taskgraph.mrf.map import loopy_max_product as _loopy_max_product

FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------- helpers
def _tasks(sizes):
    return TaskSet([Task(f"t{k}", "binary") if c == 2 else Task(f"t{k}", "multiclass", c)
                    for k, c in enumerate(sizes)])


def _random_data(sizes, n, seed, missing=0.0, coupling=0.7):
    """Labels with pairwise dependence (each task copies a random earlier one w.p. coupling)."""
    g = np.random.default_rng(seed)
    y = np.zeros((n, len(sizes)))
    for k, c in enumerate(sizes):
        own = g.integers(0, c, n)
        if k:
            src = g.integers(0, k)
            copy = g.random(n) < coupling
            own = np.where(copy, y[:, src].astype(int) % c, own)
        y[:, k] = own
    if missing:
        y[g.random(y.shape) < missing] = np.nan
    x = g.normal(size=(n, 2))
    return MultiTaskData(x, y, _tasks(sizes))


def _random_log_probs(sizes, n, seed, scale=1.5, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    width = max(sizes)
    lp = torch.full((n, len(sizes), width), -math.inf, dtype=dtype)
    for k, c in enumerate(sizes):
        lp[:, k, :c] = (scale * torch.randn(n, c, generator=g, dtype=dtype)).log_softmax(-1)
    return lp


def _brute_force(lp, log_prior_flat, sizes, alpha):
    """Best objective per example by a Python loop over examples and combinations."""
    best = []
    combos = list(itertools.product(*[range(c) for c in sizes]))
    for i in range(lp.shape[0]):
        vals = []
        for j, combo in enumerate(combos):
            s = sum(float(lp[i, k, c]) for k, c in enumerate(combo))
            vals.append(s - alpha * float(log_prior_flat[j]))
        best.append(max(vals))
    return torch.tensor(best, dtype=torch.float64)


def _best_by_enumeration(lp, log_prior_flat, sizes, alpha):
    """Best objective per example: a loop over every combination, vectorised over examples."""
    best = torch.full((lp.shape[0],), -math.inf, dtype=torch.float64)
    for j, combo in enumerate(itertools.product(*[range(c) for c in sizes])):
        s = sum(lp[:, k, c].double() for k, c in enumerate(combo))
        best = torch.maximum(best, s - alpha * float(log_prior_flat[j]))
    return best


def _random_tree_graph(t, seed):
    g = np.random.default_rng(seed)
    adj = np.zeros((t, t))
    for k in range(1, t):
        adj[g.integers(0, k), k] = 1.0
    return adj


# ---------------------------------------------------------------------------- G1, G2
@pytest.mark.parametrize("kind", ["full", "independent", "graph"])
def test_alpha_zero_is_per_task_argmax(kind):
    sizes = [2, 3, 4]
    data = _random_data(sizes, 300, seed=0)
    prior = JointPrior.fit(data, kind=kind)
    lp = _random_log_probs(sizes, 500, seed=1, dtype=torch.float32)
    labels = GMTL(prior, alpha=0.0).decode(lp)
    assert labels.dtype == torch.long and labels.shape == (500, 3)
    assert torch.equal(labels, lp.argmax(dim=-1))


def test_alpha_zero_through_learner_keeps_regression(mixed_data):
    learner = tg.learners.create("hard_sharing", mixed_data.tasks, epochs=2, verbose=False)
    learner.fit(mixed_data)
    prior = JointPrior.fit(mixed_data)
    assert prior.coupled == ["bin", "multi"]
    plain = learner.predict(mixed_data.x)
    joint0 = learner.predict(mixed_data.x, inference=GMTL(prior, alpha=0.0))
    assert torch.equal(plain, joint0)
    joint1 = learner.predict(mixed_data.x, inference=GMTL(prior, alpha=1.0))
    assert torch.equal(joint1[:, 2], plain[:, 2])  # regression values kept


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.5])
def test_independent_prior_is_label_shift_correction(alpha):
    sizes = [2, 3, 3]
    data = _random_data(sizes, 400, seed=2, missing=0.1)
    prior = JointPrior.fit(data, kind="independent")
    lp = _random_log_probs(sizes, 300, seed=3)
    expected = torch.stack(
        [(lp[:, k, :c] - alpha * prior.unary[k]).argmax(dim=1) for k, c in enumerate(sizes)],
        dim=1)
    for method in ("auto", "exact"):
        dec = GMTL(prior, alpha, method=method)
        assert torch.equal(dec.decode(lp), expected)
    assert dec.info_["enumeration"] == ["t0", "t1", "t2"]


# ---------------------------------------------------------------------------- G3 (property)
@FAST
@given(
    sizes=st.lists(st.integers(2, 4), min_size=1, max_size=4),
    n=st.integers(1, 12),
    alpha=st.floats(0.0, 3.0),
    chunk=st.integers(1, 13),
    seed=st.integers(0, 10_000),
)
def test_chunked_exact_equals_naive_loop(sizes, n, alpha, chunk, seed):
    g = np.random.default_rng(seed)
    table = g.dirichlet(np.ones(int(np.prod(sizes)))).reshape(sizes) + 1e-3
    prior = JointPrior.from_table(table / table.sum(), _tasks(sizes))
    lp = _random_log_probs(sizes, n, seed)
    dec = GMTL(prior, alpha, chunk_size=chunk)
    labels = dec.decode(lp)
    best = _brute_force(lp, prior.log_table().reshape(-1), sizes, alpha)
    torch.testing.assert_close(dec.score(lp, labels), best, rtol=0, atol=1e-9)
    # chunking does not change the answer
    assert torch.equal(labels, GMTL(prior, alpha).decode(lp))


@FAST
@given(
    t=st.integers(2, 7),
    c=st.integers(2, 3),
    alpha=st.floats(0.1, 3.0),
    seed=st.integers(0, 10_000),
)
def test_tree_max_product_equals_exact(t, c, alpha, seed):
    sizes = [c] * t
    data = _random_data(sizes, 200, seed, missing=0.05, coupling=0.8)
    prior = JointPrior.fit(data, graph=_random_tree_graph(t, seed))
    assert prior.is_forest and len(prior.edges) == t - 1
    lp = _random_log_probs(sizes, 25, seed + 1)
    dec = GMTL(prior, alpha)
    labels = dec.decode(lp)
    assert dec.info_["exact"] and sorted(dec.info_["tree"]) == sorted(prior.coupled)
    table = prior.log_table(normalize=False).reshape(-1)
    best = _best_by_enumeration(lp, table, sizes, alpha)
    torch.testing.assert_close(dec.score(lp, labels), best, rtol=0, atol=1e-9)


@FAST
@given(t=st.integers(3, 6), seed=st.integers(0, 10_000), alpha=st.floats(0.2, 2.0))
def test_loopy_max_product_is_exact_on_trees(t, seed, alpha):
    """Loopy max-product run on a tree converges to the exact MAP."""
    sizes = [2, 3] * 3
    sizes = sizes[:t]
    data = _random_data(sizes, 200, seed, coupling=0.8)
    prior = JointPrior.fit(data, graph=_random_tree_graph(t, seed))
    lp = _random_log_probs(sizes, 30, seed + 7)
    dec = GMTL(prior, alpha)
    unary, edges, pair = dec._factors(torch.float64, torch.device("cpu"))
    phi = {v: lp[:, v, :sizes[v]] + unary[v] for v in range(t)}
    result, frac, _ = _loopy_max_product(phi, edges, pair, damping=0.0, max_iter=50,
                                         tol=1e-9, chunk_size=None)
    assert frac == 1.0
    labels = torch.stack([result[v] for v in range(t)], dim=1)
    best = _best_by_enumeration(lp, prior.log_table(normalize=False).reshape(-1), sizes, alpha)
    torch.testing.assert_close(dec.score(lp, labels), best, rtol=0, atol=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_exact_claims_hold_on_graphs_with_cycles(seed):
    """On ≤ 12 tasks with cycles, 'auto' decodes exactly (variable elimination) and says so;
    forced loopy max-product says it is approximate."""
    t = [6, 8, 10, 12][seed]
    bench = tg.datasets.planted_dag(n_tasks=t, n_edges=int(1.6 * t), n_samples=600,
                                    n_test=20, seed=seed)
    prior = JointPrior.fit(bench.train, graph=bench.true_graph)
    assert not prior.is_forest
    lp = _random_log_probs([2] * t, 40, seed)
    table = prior.log_table(normalize=False).reshape(-1)
    for alpha in (0.5, 1.5):
        dec = GMTL(prior, alpha)
        labels = dec.decode(lp)
        assert dec.info_["exact"] is True
        assert dec.info_["elimination"] or dec.info_["tree"]
        best_fn = _best_by_enumeration(lp, table, [2] * t, alpha)
        torch.testing.assert_close(dec.score(lp, labels), best_fn, rtol=0, atol=1e-8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            loopy = GMTL(prior, alpha, method="max_product")
            approx = loopy.decode(lp)
        assert loopy.info_["exact"] is False and loopy.info_["loopy"]
        assert bool((loopy.score(lp, approx) <= best_fn + 1e-8).all())


def test_loopy_warns_when_not_converged():
    bench = tg.datasets.planted_dag(n_tasks=8, n_edges=14, n_samples=500, n_test=20, seed=0)
    prior = JointPrior.fit(bench.train, graph=bench.true_graph)
    lp = _random_log_probs([2] * 8, 50, 0)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        GMTL(prior, 1.0, method="max_product", max_iter=1).decode(lp)


def test_exact_method_refuses_dense_graph():
    bench = tg.datasets.planted_dag(n_tasks=10, n_edges=30, n_samples=300, n_test=20, seed=0)
    prior = JointPrior.fit(bench.train, graph=bench.true_graph)
    lp = _random_log_probs([2] * 10, 5, 0)
    with pytest.raises(ValidationError, match="max_product"):
        GMTL(prior, 1.0, method="exact", max_combinations=8).decode(lp)


# ---------------------------------------------------------------------------- G4: the prior
def test_prior_hand_computed_2x2():
    y = np.array([[0, 0], [0, 0], [0, 1], [1, 1], [np.nan, 1]])
    data = MultiTaskData(np.zeros((5, 1)), y, ["a", "b"])
    full = JointPrior.fit(data, kind="full", pseudocount=1.0)
    # complete rows only: counts (0,0)=2 (0,1)=1 (1,0)=0 (1,1)=1, +1 each, / (4 + 4)
    expected = np.array([[3, 2], [1, 2]]) / 8
    np.testing.assert_allclose(full.log_table().exp().numpy(), expected)
    assert full.n_rows == 4
    assert math.isclose(float(full.log_table().exp().sum()), 1.0)
    # flattening is consistent between the table, log_potential and decoding
    combos = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_allclose(full.log_potential(combos).exp().numpy(), expected.ravel())
    uniform = torch.full((1, 2, 2), math.log(0.5))
    assert GMTL(full, 1.0).decode(uniform).tolist() == [[1, 0]]  # the rarest cell wins
    ind = JointPrior.fit(data, kind="independent", pseudocount=1.0)
    np.testing.assert_allclose(ind.unary[0].exp().numpy(), [4 / 6, 2 / 6])  # 4 rows
    np.testing.assert_allclose(ind.unary[1].exp().numpy(), [3 / 7, 4 / 7])  # 5 rows
    graph = JointPrior.fit(data, kind="graph", graph=np.array([[0, 1], [0, 0]]))
    pair = expected  # pairwise-complete rows are the 4 complete rows
    pmi = np.log(pair) - np.log(pair.sum(1))[:, None] - np.log(pair.sum(0))[None, :]
    np.testing.assert_allclose(graph.pairwise[0].numpy(), pmi)


def test_graph_prior_on_two_tasks_equals_full_table():
    bench = tg.datasets.anticausal(n_samples=1500, seed=0)
    full = JointPrior.fit(bench.train, kind="full", pseudocount=0.0)
    graph = JointPrior.fit(bench.train, kind="graph", pseudocount=0.0)  # Chow-Liu: one edge
    assert graph.edges == [("y1", "y2")]
    torch.testing.assert_close(graph.log_table(), full.log_table())


def test_chow_liu_recovers_a_chain():
    g = np.random.default_rng(0)
    n = 3000
    y0 = g.integers(0, 2, n)
    y1 = np.where(g.random(n) < 0.9, y0, 1 - y0)
    y2 = np.where(g.random(n) < 0.9, y1, 1 - y1)
    y3 = g.integers(0, 2, n)
    y = np.stack([y2, y0, y3, y1], axis=1).astype(float)  # shuffled columns
    data = MultiTaskData(np.zeros((n, 1)), y, ["c", "a", "free", "b"])
    prior = JointPrior.fit(data, kind="graph")
    assert prior.graph_source == "chow_liu" and prior.is_forest
    assert {frozenset(e) for e in prior.edges} >= {frozenset(("a", "b")), frozenset(("b", "c"))}


def test_graph_prior_missing_labels_and_edges_to_regression(mixed_tasks, mixed_data):
    adj = np.ones((3, 3)) - np.eye(3)
    prior = JointPrior.fit(mixed_data, graph=TaskGraph(adj, mixed_tasks))
    assert prior.kind == "graph" and prior.edges == [("bin", "multi")]  # regression edges dropped
    assert prior.graph.n_edges == 1


def test_mixed_class_counts_list_equals_padded():
    sizes = [2, 4, 3]
    data = _random_data(sizes, 300, seed=5)
    lp = _random_log_probs(sizes, 50, seed=6)
    as_list = [lp[:, k, :c] for k, c in enumerate(sizes)]
    for kind in ("full", "graph"):
        dec = GMTL(JointPrior.fit(data, kind=kind), 1.0)
        assert torch.equal(dec.decode(lp), dec.decode(as_list))


def test_regression_rows_are_ignored(mixed_tasks, mixed_data):
    prior = JointPrior.fit(mixed_data, kind="full")
    lp = torch.full((7, 3, 3), -math.inf)
    lp[:, 0, :2] = torch.randn(7, 2).log_softmax(-1)
    lp[:, 1, :3] = torch.randn(7, 3).log_softmax(-1)
    labels = GMTL(prior, 1.0).decode(lp)
    assert torch.equal(labels[:, 2], torch.zeros(7, dtype=torch.long))
    as_list = [lp[:, 0, :2], lp[:, 1], None]
    assert torch.equal(GMTL(prior, 1.0).decode(as_list), labels)


def test_tasks_subset_decodes_others_independently():
    sizes = [2, 2, 3]
    data = _random_data(sizes, 300, seed=8)
    prior = JointPrior.fit(data, kind="full", tasks=["t0", "t2"])
    assert prior.coupled == ["t0", "t2"] and prior.n_combinations == 6
    lp = _random_log_probs(sizes, 40, seed=9)
    labels = GMTL(prior, 2.0).decode(lp)
    assert torch.equal(labels[:, 1], lp[:, 1, :2].argmax(dim=1))


# ---------------------------------------------------------------------------- limits, errors
def test_full_prior_refuses_large_tables_pointing_to_graph():
    data = _random_data([2] * 20, 100, seed=0)
    with pytest.raises(ValidationError, match="kind='graph'"):
        JointPrior.fit(data, kind="full")
    small = JointPrior.fit(_random_data([3, 3, 3], 100, seed=0), kind="full")
    with pytest.raises(ValidationError, match="kind='graph'"):
        GMTL(small, 1.0, max_combinations=10).decode(_random_log_probs([3, 3, 3], 4, 0))


def test_graph_prior_scales_where_the_table_cannot():
    """50 binary tasks (2**50 cells): graph-prior decoding is exact on the planted skeleton."""
    bench = tg.datasets.planted_dag(n_tasks=50, n_edges=60, n_samples=800, n_test=20, seed=0)
    prior = JointPrior.fit(bench.train, graph=bench.true_graph)
    assert prior.n_combinations == 2**50
    lp = _random_log_probs([2] * 50, 300, 0, dtype=torch.float32)
    dec = GMTL(prior, 1.0)
    labels = dec.decode(lp)
    assert labels.shape == (300, 50) and dec.info_["exact"]
    tree = JointPrior.fit(bench.train, kind="graph")  # Chow-Liu tree
    dec_tree = GMTL(tree, 1.0)
    dec_tree.decode(lp)
    assert dec_tree.info_["exact"] and len(dec_tree.info_["tree"]) == 50
    with pytest.raises(ValidationError, match="tasks="):
        prior.log_table()


def test_check_tasks_and_argument_errors(mixed_data):
    other = _random_data([2, 3], 50, seed=0)
    prior = JointPrior.fit(other, kind="full")
    learner = tg.learners.create("hard_sharing", mixed_data.tasks, epochs=1, verbose=False)
    learner.fit(mixed_data)
    with pytest.raises(ValidationError, match="prior whose tasks differ"):
        learner.predict(mixed_data.x, inference=GMTL(prior, 1.0))
    with pytest.raises(ValidationError, match="alpha"):
        GMTL(prior, -0.1)
    with pytest.raises(ValidationError, match="method"):
        GMTL(prior, 1.0, method="beam")
    with pytest.raises(ValidationError, match="max_product"):
        GMTL(prior, 1.0, method="max_product")  # a full table is not factorised
    with pytest.raises(ValidationError, match="damping"):
        GMTL(JointPrior.fit(other, kind="graph"), 1.0, damping=1.0)
    with pytest.raises(ValidationError, match="regression"):
        JointPrior.fit(mixed_data, tasks=["bin", "reg"])
    with pytest.raises(ValidationError, match="kind"):
        JointPrior.fit(other, kind="pairwise")
    with pytest.raises(ValidationError, match="graph"):
        JointPrior.fit(other, kind="full", graph=np.zeros((2, 2)))
    with pytest.raises(ValidationError, match="pseudocount"):
        JointPrior.fit(other, kind="full", pseudocount=-1)
    sparse = MultiTaskData(np.zeros((3, 1)), [[0, 0], [1, 1], [0, 0]], ["a", "b"])
    with pytest.raises(ValidationError, match="pseudocount > 0"):
        JointPrior.fit(sparse, kind="full", pseudocount=0.0)
    with pytest.raises(ValidationError, match="log_probs"):
        GMTL(prior, 1.0).decode(torch.zeros(4, 3, 3))  # 3 tasks, prior has 2
    bad = _random_log_probs([2, 3], 4, 0)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValidationError, match="NaN"):
        GMTL(prior, 1.0).decode(bad)
    with pytest.raises(ValidationError, match="graph"):
        JointPrior.fit(other, graph=TaskGraph(np.zeros((2, 2)), ["x", "t1"]))


def test_from_table_matches_fit_and_validates():
    bench = tg.datasets.anticausal(n_samples=500, seed=0)
    truth = JointPrior.from_table(bench.info["train_prior"], bench.tasks)
    np.testing.assert_allclose(truth.log_table().exp().numpy(), bench.info["train_prior"])
    with pytest.raises(ValidationError, match="shape"):
        JointPrior.from_table(np.ones((2, 2)) / 4, bench.tasks)
    with pytest.raises(ValidationError, match="zero probability"):
        JointPrior.from_table(np.eye(3) / 3, bench.tasks)


@pytest.mark.parametrize("kind", ["full", "independent", "graph"])
def test_prior_state_round_trip_decodes_alike(kind, tmp_path):
    data = _random_data([2, 3, 2], 400, seed=0)
    prior = JointPrior.fit(data, kind=kind)
    path = tmp_path / "prior.pt"
    torch.save(prior.state_dict(), path)
    back = JointPrior.from_state(data.tasks, torch.load(path, weights_only=True))
    lp = _random_log_probs([2, 3, 2], 50, seed=1)
    torch.testing.assert_close(GMTL(back, alpha=0.7).decode(lp), GMTL(prior, alpha=0.7).decode(lp))
    assert back.kind == prior.kind and back.edges == prior.edges


@pytest.mark.parametrize("kind,graph", [("full", None), ("independent", None),
                                        ("graph", None), ("graph", "given")])
def test_weighted_prior_equals_the_prior_of_repeated_rows(kind, graph):
    """JointPrior.fit(weight=w) with integer weights = the prior of the data with row n
    repeated w_n times (counts, pseudocount, Chow-Liu choice and a given graph alike)."""
    bench = tg.datasets.planted_dag(n_tasks=4, n_edges=3, n_samples=300, seed=0)
    data = bench.train
    w = np.random.default_rng(0).integers(0, 4, len(data))
    rep = data.subset(np.repeat(np.arange(len(data)), w))
    adj = np.triu(np.ones((4, 4)), 1) if graph == "given" else None
    a = JointPrior.fit(data, kind=kind, graph=adj, weight=w)
    b = JointPrior.fit(rep, kind=kind, graph=adj)
    assert a.edges == b.edges
    torch.testing.assert_close(a.log_table(), b.log_table())
    with pytest.raises(ValidationError, match="weight"):
        JointPrior.fit(data, kind=kind, weight=-np.ones(len(data)))
