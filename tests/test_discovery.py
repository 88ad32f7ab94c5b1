"""Tests of taskgraph.structure.discovery: causal-learn conversions and discovery baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from taskgraph.data import MultiTaskData
from taskgraph.exceptions import GraphFormatError, ValidationError
from taskgraph.structure import discover, from_causallearn, from_lingam
from taskgraph.tasks import Task

NAMES = ["a", "b", "c"]
# Our orientation, A[src, dst], of the three 3-node structures.
TRUE_EDGES = {
    "chain": [("a", "b"), ("b", "c")],
    "fork": [("b", "a"), ("b", "c")],
    "collider": [("a", "b"), ("c", "b")],
}


def _adj(g) -> np.ndarray:
    a = g.adjacency
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _edge_set(g) -> set[tuple[str, str]]:
    a = _adj(g)
    return {(g.names[i], g.names[j]) for i, j in zip(*np.nonzero(a))}


def _two_way(edges: list[tuple[str, str]]) -> set[tuple[str, str]]:
    return set(edges) | {(j, i) for i, j in edges}


def _simulate(structure: str, n: int, noise: str, seed: int) -> np.ndarray:
    """Linear SEM over (a, b, c) with coefficient 0.8 on every true edge."""
    rng = np.random.default_rng(seed)
    if noise == "gauss":
        e = rng.normal(size=(n, 3))
    else:  # uniform: non-Gaussian, so LiNGAM identifies every direction
        e = rng.uniform(-1.0, 1.0, size=(n, 3))
    y = np.zeros((n, 3))
    col = {name: k for k, name in enumerate(NAMES)}
    order = {"chain": "abc", "fork": "bac", "collider": "acb"}[structure]
    for node in order:
        k = col[node]
        parents = [col[s] for s, d in TRUE_EDGES[structure] if d == node]
        y[:, k] = sum((0.8 * y[:, p] for p in parents), np.zeros(n)) + e[:, k]
    return y


def _data(y: np.ndarray, x: np.ndarray | None = None, kinds: str = "rrr") -> MultiTaskData:
    kind = {"r": ("regression", None), "b": ("binary", None), "m": ("multiclass", 3)}
    tasks = [Task(name, *kind[k]) for name, k in zip(NAMES, kinds)]
    if x is None:
        x = np.random.default_rng(123).normal(size=(len(y), 2))
    return MultiTaskData(x, y, tasks)


def _marks(n: int, edges: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Endpoint matrix from (i, j, mark at i, mark at j) tuples (causal-learn layout)."""
    g = np.zeros((n, n), dtype=int)
    for i, j, m_i, m_j in edges:
        g[i, j], g[j, i] = m_i, m_j
    return g


# --------------------------------------------------------------------------- from_causallearn
@pytest.mark.parametrize(
    "structure, marks",
    [
        # i -> j is graph[i, j] = -1 (tail at i), graph[j, i] = 1 (arrowhead at j)
        ("chain", _marks(3, [(0, 1, -1, 1), (1, 2, -1, 1)])),
        ("fork", _marks(3, [(1, 0, -1, 1), (1, 2, -1, 1)])),
        ("collider", _marks(3, [(0, 1, -1, 1), (2, 1, -1, 1)])),
    ],
)
def test_from_causallearn_endpoint_matrix_orientation(structure, marks):
    g = from_causallearn(marks, NAMES)
    assert g.names == NAMES
    assert _edge_set(g) == set(TRUE_EDGES[structure])
    assert "bidirected" not in g.meta


def test_from_causallearn_undirected_edge_is_two_way():
    g = from_causallearn(_marks(3, [(0, 2, -1, -1)]), NAMES)
    assert _edge_set(g) == {("a", "c"), ("c", "a")}
    assert g.undirected_edges() == [("a", "c")]


def test_from_causallearn_reads_causallearn_objects():
    """Orientation regression against causal-learn's own encoder, not a hand-made matrix."""
    from causallearn.graph.Edge import Edge
    from causallearn.graph.Endpoint import Endpoint
    from causallearn.graph.GeneralGraph import GeneralGraph
    from causallearn.graph.GraphNode import GraphNode

    nodes = [GraphNode(n) for n in NAMES]
    gg = GeneralGraph(nodes)
    gg.add_directed_edge(nodes[0], nodes[1])  # a -> b
    gg.add_edge(Edge(nodes[1], nodes[2], Endpoint.TAIL, Endpoint.TAIL))  # b - c
    g = from_causallearn(gg, NAMES)
    assert _edge_set(g) == {("a", "b"), ("b", "c"), ("c", "b")}
    assert _adj(g)[0, 1] == 1.0 and _adj(g)[1, 0] == 0.0
    # the same through the containers pc() and ges() return
    assert _edge_set(from_causallearn({"G": gg}, NAMES)) == _edge_set(g)


def test_from_causallearn_bidirected_and_circle_marks():
    marks = _marks(3, [(0, 1, 1, 1), (1, 2, 2, 1)])  # a <-> b, b o-> c
    g = from_causallearn(marks, NAMES)
    assert _edge_set(g) == _two_way([("a", "b"), ("b", "c")])
    assert g.undirected_edges() == [("b", "c")]  # a <-> b is two-way but not unoriented
    assert json.loads(g.meta["bidirected"]) == [["a", "b"]]
    dropped = from_causallearn(marks, NAMES, bidirected="drop")
    assert _edge_set(dropped) == _two_way([("b", "c")])
    assert json.loads(dropped.meta["bidirected"]) == [["a", "b"]]
    # a directed edge sharing its pair with a bidirected one (codes 4 / 5)
    mixed = from_causallearn(_marks(2, [(0, 1, 4, 5)]), ["a", "b"], bidirected="drop")
    assert _edge_set(mixed) == {("a", "b")}


@pytest.mark.parametrize(
    "marks", [_marks(3, [(0, 1, -1, 0)]), _marks(3, [(0, 1, 3, 1)]), np.zeros((2, 3))]
)
def test_from_causallearn_rejects_invalid_marks(marks):
    with pytest.raises(GraphFormatError):
        from_causallearn(marks, NAMES)


def test_from_causallearn_checks_names_length():
    with pytest.raises(GraphFormatError, match="names"):
        from_causallearn(np.zeros((2, 2)), NAMES)


# --------------------------------------------------------------------------- from_lingam
def test_from_lingam_transposes_and_keeps_signs():
    b = np.zeros((3, 3))
    b[1, 0] = 0.8  # row = effect: a -> b
    b[2, 1] = -0.5  # b -> c, negative
    b[0, 2] = 0.01  # c -> a, tiny
    g = from_lingam(b, NAMES, threshold=0.05)
    a = _adj(g)
    assert a[0, 1] == pytest.approx(0.8) and a[1, 2] == pytest.approx(-0.5)
    assert _edge_set(g) == {("a", "b"), ("b", "c")}
    raw = g.raw.detach().cpu().numpy() if isinstance(g.raw, torch.Tensor) else g.raw
    assert raw[2, 0] == pytest.approx(0.01)  # kept unthresholded in raw
    assert _edge_set(from_lingam(b, NAMES)) == {("a", "b"), ("b", "c"), ("c", "a")}


def test_from_lingam_accepts_fitted_model_and_checks_shape():
    class Fitted:
        adjacency_matrix_ = np.array([[0.0, 0.0], [1.5, 0.0]])

    assert _edge_set(from_lingam(Fitted(), ["a", "b"])) == {("a", "b")}
    with pytest.raises(GraphFormatError):
        from_lingam(np.zeros((3, 3)), ["a", "b"])


# --------------------------------------------------------------------------- discover
@pytest.mark.parametrize("method", ["pc", "ges"])
@pytest.mark.parametrize("structure", ["chain", "fork", "collider"])
def test_pc_ges_recover_cpdag(method, structure):
    data = _data(_simulate(structure, 2000, "gauss", seed=0))
    g = discover(data, method)
    if structure == "collider":  # the v-structure is identifiable: a -> b <- c exactly
        expected = set(TRUE_EDGES[structure])
    else:  # Markov equivalent to its reversals: skeleton, both directions
        expected = _two_way(TRUE_EDGES[structure])
    assert _edge_set(g) == expected
    assert g.names == NAMES
    assert g.meta["method"] == method and g.meta["alpha"] == 0.05
    assert g.meta["n_rows"] == 2000


def test_pc_chisq_on_binary_collider():
    rng = np.random.default_rng(0)
    n = 3000
    a = rng.integers(0, 2, n)
    c = rng.integers(0, 2, n)
    flip = rng.random(n) < 0.1
    b = np.where(flip, 1 - (a | c), a | c)
    data = _data(np.stack([a, b, c], 1).astype(float), kinds="bbb")
    g = discover(data, "pc", indep_test="chisq", alpha=0.01)
    assert _edge_set(g) == set(TRUE_EDGES["collider"])


@pytest.mark.parametrize("structure", ["chain", "fork", "collider"])
def test_lingam_orients_every_edge(structure):
    data = _data(_simulate(structure, 2000, "uniform", seed=0))
    g = discover(data, "lingam", threshold=0.1)
    assert _edge_set(g) == set(TRUE_EDGES[structure])
    a = _adj(g)
    for src, dst in TRUE_EDGES[structure]:
        assert a[NAMES.index(src), NAMES.index(dst)] == pytest.approx(0.8, abs=0.1)
    assert g.meta["method"] == "lingam"


def test_corr_threshold_top_k_and_significance():
    data = _data(_simulate("collider", 2000, "gauss", seed=0))
    by_threshold = discover(data, "corr", threshold=0.3)
    assert _edge_set(by_threshold) == _two_way(TRUE_EDGES["collider"])
    a = _adj(by_threshold)
    assert np.allclose(a, a.T) and 0.4 < a[0, 1] < 0.7
    raw = by_threshold.raw
    raw = raw.detach().cpu().numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)
    assert raw.shape == (3, 3) and raw[0, 2] < 0.1 and np.allclose(np.diag(raw), 0)
    assert np.allclose(raw, np.abs(np.corrcoef(data.y.numpy().T)) * (1 - np.eye(3)), atol=1e-5)
    top1 = discover(data, "corr", n_edges=1)
    assert len(_edge_set(top1)) == 2
    assert _edge_set(top1) <= _two_way(TRUE_EDGES["collider"])
    assert _edge_set(discover(data, "corr")) == _two_way(TRUE_EDGES["collider"])
    with pytest.raises(ValidationError, match="n_edges"):
        discover(data, "corr", n_edges=4)
    with pytest.raises(ValidationError, match="at most one"):
        discover(data, "corr", threshold=0.1, n_edges=1)


def test_residualize_removes_shared_input_dependence():
    rng = np.random.default_rng(0)
    n = 2000
    x = rng.normal(size=(n, 3))
    y = np.stack(
        [
            1.5 * x[:, 0] + rng.normal(size=n),
            -1.0 * x[:, 0] + 0.5 * x[:, 1] + rng.normal(size=n),
            x[:, 2] + rng.normal(size=n),
        ],
        axis=1,
    )
    data = _data(y, x=x)
    raw_graph = discover(data, "corr", threshold=0.2)
    assert ("a", "b") in _edge_set(raw_graph)  # spurious: a and b only share x0
    resid = discover(data, "corr", threshold=0.2, residualize=True)
    assert _edge_set(resid) == set()
    assert resid.meta["residualize"] is True
    assert _edge_set(discover(data, "pc", residualize=True)) == set()


def test_missing_labels():
    y = _simulate("collider", 3000, "gauss", seed=1)
    rng = np.random.default_rng(1)
    y[rng.random(y.shape) < 0.1] = np.nan  # ~73% complete rows remain
    data = _data(y)
    g = discover(data, "pc")
    assert _edge_set(g) == set(TRUE_EDGES["collider"])
    assert g.meta["n_rows"] == int((~np.isnan(y)).all(axis=1).sum())
    corr = discover(data, "corr", threshold=0.3)  # pairwise-complete rows
    assert _edge_set(corr) == _two_way(TRUE_EDGES["collider"])


def test_too_few_complete_rows_raises():
    y = _simulate("chain", 200, "gauss", seed=0)
    y[10:, 0] = np.nan
    with pytest.raises(ValidationError, match="data: only 10 of 200 rows"):
        discover(_data(y), "ges")
    discover(_data(y), "corr")  # pairwise-complete: b, c still share 200 rows


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "notears"}, r"\['pc', 'ges', 'lingam', 'corr'\]"),
        ({"method": "pc", "n_edges": 3}, "unexpected keyword"),
        ({"method": "pc", "alpha": 1.5}, "alpha"),
        ({"method": "pc", "alpha": "high"}, "alpha"),
        ({"method": "pc", "max_rows": 5}, "max_rows"),
        ({"method": "corr", "threshold": -0.1}, "threshold"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    data = _data(_simulate("chain", 100, "gauss", seed=0))
    method = kwargs.pop("method")
    with pytest.raises(ValidationError, match=match):
        discover(data, method, **kwargs)


def test_data_must_be_multitaskdata():
    with pytest.raises(ValidationError, match="data"):
        discover(np.zeros((100, 3)), "pc")


def test_constant_task_is_isolated_and_max_rows_subsamples():
    y = _simulate("chain", 1000, "gauss", seed=0)
    y[:, 2] = 1.0
    g = discover(_data(y), "pc", max_rows=500)
    assert _edge_set(g) == _two_way([("a", "b")])
    assert g.meta["n_rows"] == 500
    for method in ("ges", "lingam"):  # residualised, the constant is rounding noise: still out
        g = discover(_data(y), method, residualize=True, threshold=0.1)
        assert not ({("a", "c"), ("c", "a"), ("b", "c"), ("c", "b")} & _edge_set(g))


def test_multiclass_labels_enter_as_numbers():
    rng = np.random.default_rng(0)
    n = 2000
    a = rng.integers(0, 3, n).astype(float)
    b = np.clip(a + (rng.random(n) < 0.2) * rng.choice([-1, 1], n), 0, 2)
    c = rng.integers(0, 2, n).astype(float)
    g = discover(_data(np.stack([a, b, c], 1), kinds="mmb"), "pc")
    assert _edge_set(g) == _two_way([("a", "b")])


def test_pc_background_knowledge_uses_task_names():
    from causallearn.graph.GraphNode import GraphNode
    from causallearn.utils.PCUtils.BackgroundKnowledge import BackgroundKnowledge

    data = _data(_simulate("chain", 2000, "gauss", seed=0))
    knowledge = BackgroundKnowledge().add_required_by_node(GraphNode("a"), GraphNode("b"))
    g = discover(data, "pc", background_knowledge=knowledge)
    assert _edge_set(g) == set(TRUE_EDGES["chain"])  # a -> b required, Meek orients b -> c


@pytest.mark.parametrize("method", ["pc", "lingam", "corr"])
def test_discovered_graphs_save_and_load(method, tmp_path):
    data = _data(_simulate("collider", 500, "uniform", seed=0))
    g = discover(data, method)
    assert g.learned
    for suffix in ("json", "graphml"):
        path = g.save(tmp_path / f"g.{suffix}")
        assert type(g).load(path) == g
    marks = _marks(3, [(0, 1, 1, 1)])
    bidir = from_causallearn(marks, NAMES, meta={"method": "fci"})
    assert type(bidir).load(bidir.save(tmp_path / "b.json")) == bidir
