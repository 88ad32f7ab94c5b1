"""CPDAGs and identifiability-aware metrics; the undirected mark of TaskGraph and its exports."""

from __future__ import annotations

import csv
import itertools
import json
import math

import networkx as nx
import numpy as np
import pytest

from taskgraph.exceptions import GraphFormatError, ValidationError
from taskgraph.graph import LOADABLE_FORMATS, TaskGraph
from taskgraph.graph.algorithms import extension_order, orient_undirected
from taskgraph.metrics import (
    compare_edges,
    compelled_scores,
    cpdag,
    shd_cpdag,
    skeleton_scores,
    structure,
)

SUFFIXES = {"graphml": ".graphml", "gexf": ".gexf", "json": ".json"}

# asia (Lauritzen & Spiegelhalter 1988), bnlearn's arc list
ASIA = ["asia", "tub", "smoke", "lung", "bronc", "either", "xray", "dysp"]
ASIA_ARCS = [
    ("asia", "tub"),
    ("smoke", "lung"),
    ("smoke", "bronc"),
    ("tub", "either"),
    ("lung", "either"),
    ("either", "xray"),
    ("either", "dysp"),
    ("bronc", "dysp"),
]


def _adj(n: int, edges: list[tuple[int, int]]) -> np.ndarray:
    a = np.zeros((n, n), dtype=int)
    for i, j in edges:
        a[i, j] = 1
    return a


def _named(names: list[str], arcs: list[tuple[str, str]]) -> np.ndarray:
    idx = {n: i for i, n in enumerate(names)}
    return _adj(len(names), [(idx[u], idx[v]) for u, v in arcs])


def _v_structures(a: np.ndarray) -> set[tuple[int, int, int]]:
    n = a.shape[0]
    sk = (a | a.T).astype(bool)
    out = set()
    for c in range(n):
        parents = np.flatnonzero(a[:, c])
        for i, j in itertools.combinations(parents, 2):
            if not sk[i, j]:
                out.add((int(i), c, int(j)))
    return out


def _cpdag_by_definition(a: np.ndarray) -> np.ndarray:
    """Brute force: an edge is compelled iff every Markov-equivalent DAG orients it alike."""
    edges = list(zip(*np.nonzero(a)))
    target = _v_structures(a)
    seen = np.zeros_like(a)
    for flips in itertools.product([False, True], repeat=len(edges)):
        b = np.zeros_like(a)
        for (i, j), flip in zip(edges, flips):
            b[(j, i) if flip else (i, j)] = 1
        g = nx.from_numpy_array(b, create_using=nx.DiGraph)
        if nx.is_directed_acyclic_graph(g) and _v_structures(b) == target:
            seen |= b
    return seen


def _random_dag(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    a = np.triu((rng.random((n, n)) < p).astype(int), k=1)
    perm = rng.permutation(n)
    return a[np.ix_(perm, perm)]


# ------------------------------------------------------------------------------------ CPDAG


def test_cpdag_hand_cases():
    chain = _adj(3, [(0, 1), (1, 2)])  # a -> b -> c: Markov equivalent to a <- b <- c
    assert cpdag(chain).tolist() == [[0, 1, 0], [1, 0, 1], [0, 1, 0]]
    collider = _adj(3, [(0, 2), (1, 2)])  # a -> c <- b: compelled
    assert cpdag(collider).tolist() == collider.tolist()
    # a -> c <- b, c -> d: d's edge compelled by Meek's rule 1 (a -> c - d, a, d apart)
    meek = _adj(4, [(0, 2), (1, 2), (2, 3)])
    assert cpdag(meek).tolist() == meek.tolist()
    # a fork with an extra root: x -> y only -> everything reversible
    assert cpdag(_adj(2, [(0, 1)])).tolist() == [[0, 1], [1, 0]]
    assert cpdag(np.zeros((3, 3))).sum() == 0
    assert cpdag(TaskGraph(chain, ["a", "b", "c"])).tolist() == cpdag(chain).tolist()


def test_cpdag_asia():
    c = cpdag(_named(ASIA, ASIA_ARCS))
    idx = {n: i for i, n in enumerate(ASIA)}
    pairs = [(u, v, c[idx[u], idx[v]], c[idx[v], idx[u]]) for u in ASIA for v in ASIA]
    undirected = {(u, v) for u, v, fwd, bwd in pairs if idx[u] < idx[v] and fwd and bwd}
    directed = {(u, v) for u, v, fwd, bwd in pairs if fwd and not bwd}
    assert undirected == {("asia", "tub"), ("smoke", "lung"), ("smoke", "bronc")}
    assert directed == {
        ("tub", "either"),
        ("lung", "either"),
        ("either", "xray"),
        ("either", "dysp"),
        ("bronc", "dysp"),
    }


def test_cpdag_matches_the_definition_on_random_dags():
    rng = np.random.default_rng(0)
    for _ in range(40):
        a = _random_dag(rng, int(rng.integers(2, 7)), 0.45)
        if a.sum() > 9:
            continue
        assert np.array_equal(cpdag(a), _cpdag_by_definition(a)), a.tolist()


def test_cpdag_refuses_non_dags():
    with pytest.raises(ValidationError, match="dag: .*cycle"):
        cpdag(_adj(3, [(0, 1), (1, 2), (2, 0)]))
    with pytest.raises(ValidationError, match="dag: .*cycle"):
        cpdag(_adj(2, [(0, 1), (1, 0)]))
    with pytest.raises(ValidationError, match="dag: .*undirected"):
        cpdag(TaskGraph.from_cpdag([[0, 1], [1, 0]], ["a", "b"]))
    with pytest.raises(ValidationError, match="dag"):
        cpdag(np.zeros((2, 3)))


# ------------------------------------------------------------------------------------ metrics


def test_shd_cpdag_hand_cases():
    chain = _adj(3, [(0, 1), (1, 2)])
    reversed_chain = _adj(3, [(2, 1), (1, 0)])
    fork = _adj(3, [(1, 0), (1, 2)])
    collider = _adj(3, [(0, 1), (2, 1)])
    assert shd_cpdag(reversed_chain, chain) == 0  # Markov equivalent
    assert shd_cpdag(fork, chain) == 0
    assert structure(reversed_chain, chain)["shd"] == 2  # plain SHD counts both reversals
    # the collider's CPDAG a -> b <- c against a - b - c: 2 pairs directed vs undirected
    assert shd_cpdag(collider, chain) == 2
    # a prediction that is already a CPDAG is taken as given
    pdag = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]])  # a - b, b - c missing
    assert shd_cpdag(pdag, chain) == 1
    assert shd_cpdag(np.zeros((3, 3)), chain) == 2
    extra = _adj(3, [(0, 1), (1, 2), (0, 2)])  # a complete DAG: all undirected, 1 extra pair
    assert shd_cpdag(extra, chain) == 1
    with pytest.raises(ValidationError, match="threshold"):
        shd_cpdag(chain, chain, threshold=-1)
    with pytest.raises(ValidationError, match="pred: shape"):
        shd_cpdag(np.zeros((2, 2)), chain)


def test_compelled_scores_hand_cases():
    # truth: a -> c <- b, c -> d (all compelled), plus e -> a (reversible? no: e - a is
    # reversible: e -> a -> c, flipping gives a -> e, no new v-structure)
    names = ["a", "b", "c", "d", "e"]
    truth = _adj(5, [(0, 2), (1, 2), (2, 3), (4, 0)])
    c = cpdag(truth)
    assert c[4, 0] == c[0, 4] == 1 and c[0, 2] == 1 and c[2, 0] == 0
    # prediction: a -> c right, c <- b reversed (c -> b), d missing, e <- a on the reversible
    # pair (not counted), b -> e extra (FP)
    pred = _adj(5, [(0, 2), (2, 1), (0, 4), (1, 4)])
    s = compelled_scores(pred, truth)
    tp, fp, fn = 1, 2, 2  # FP: reversed c -> b, extra b -> e; FN: b -> c, c -> d
    assert s["n_compelled_true"] == 3
    assert s["compelled_precision"] == pytest.approx(tp / (tp + fp))
    assert s["compelled_recall"] == pytest.approx(tp / (tp + fn))
    assert s["compelled_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    # an undirected prediction of a compelled edge is a miss, not a false claim
    und = TaskGraph.from_cpdag(np.maximum(_adj(5, [(0, 2)]), _adj(5, [(0, 2)]).T), names)
    s = compelled_scores(und, TaskGraph(truth, names))
    assert s["compelled_recall"] == 0.0 and s["compelled_precision"] == 0.0
    # a chain has no compelled edge: NaN
    chain = _adj(3, [(0, 1), (1, 2)])
    s = compelled_scores(chain, chain)
    assert math.isnan(s["compelled_f1"]) and s["n_compelled_true"] == 0
    perfect = compelled_scores(truth, truth)
    assert perfect["compelled_f1"] == perfect["compelled_precision"] == 1.0


def test_skeleton_scores_match_structure():
    truth = _adj(4, [(0, 1), (1, 2), (2, 3)])
    pred = _adj(4, [(1, 0), (1, 2), (0, 3)])
    s = skeleton_scores(pred, truth)
    assert s["skeleton_precision"] == pytest.approx(2 / 3)
    assert s["skeleton_recall"] == pytest.approx(2 / 3)
    full = structure(pred, truth)
    assert {k: full[k] for k in s} == s


def test_compare_edges_hand_case():
    names = ["a", "b", "c", "d", "e", "f"]
    # truth (as given, a CPDAG): a -> b, b - c, c -> d, d -> e, e - f
    truth = TaskGraph.from_cpdag(
        _adj(6, [(0, 1), (1, 2), (2, 1), (2, 3), (3, 4), (4, 5), (5, 4)]), names
    )
    # pred: a -> b (tp), b -> c (overoriented), d -> c (reversed), e - f marked (tp),
    # a -> f (false positive); d -> e missing (false negative)
    adj = _adj(6, [(0, 1), (1, 2), (3, 2), (4, 5), (5, 4), (0, 5)]).astype(float)
    pred = TaskGraph(adj, names, undirected=(adj != 0) & (adj.T != 0))
    cats = compare_edges(pred, truth)
    assert cats == {
        "true_positive": [("a", "b"), ("e", "f")],
        "reversed": [("d", "c")],
        "unoriented": [],
        "overoriented": [("b", "c")],
        "false_positive": [("a", "f")],
        "false_negative": [("d", "e")],
    }
    # and the reverse roles: b - c is now unoriented, listed in the true direction
    back = compare_edges(truth, pred)
    assert back["unoriented"] == [("b", "c")] and back["reversed"] == [("c", "d")]
    # shd_cpdag counts the non-true-positive pairs (both are already partially directed)
    assert shd_cpdag(pred, truth) == 4
    # arrays give index pairs
    assert compare_edges(_adj(2, [(0, 1)]), _adj(2, [(1, 0)]))["reversed"] == [(0, 1)]


def test_structure_new_keys_and_unchanged_old_ones():
    names = ASIA
    truth = TaskGraph(_named(ASIA, ASIA_ARCS), names)
    # the true CPDAG as a marked prediction: every identifiability-aware score is perfect
    marked = truth.cpdag()
    s = structure(marked, truth)
    assert s["cpdag_shd"] == 0 and s["skeleton_f1"] == 1.0 and s["compelled_f1"] == 1.0
    assert s["n_compelled_true"] == 5
    # the old keys read the adjacency only: the same as for the plain two-way array
    plain = structure(marked.adjacency, truth.adjacency)
    for key in ("shd", "directed_f1", "skeleton_f1", "tp", "fp", "fn", "misoriented", "auroc"):
        assert s[key] == plain[key], key
    assert s["shd"] == 3  # three two-way pairs, each misoriented once
    # a Markov-equivalent DAG (asia <- tub): CPDAG SHD 0, plain SHD 1
    flipped = truth.adjacency
    flipped[0, 1], flipped[1, 0] = 0, 1
    s = structure(flipped, truth)
    assert s["shd"] == 1 and s["cpdag_shd"] == 0 and s["compelled_f1"] == 1.0
    # names are aligned, marks included
    perm = marked.subgraph(list(reversed(names)))
    assert structure(perm, truth)["cpdag_shd"] == 0
    # a marked pair thresholded to one direction stays undirected for the new keys
    w = marked.adjacency
    w[1, 0] = 0.05  # tub -> asia weak
    weak = TaskGraph(w, names, undirected=marked.undirected)
    s = structure(weak, truth, threshold=0.1)
    assert s["cpdag_shd"] == 0 and s["n_edges_pred"] == marked.n_edges - 1


# ------------------------------------------------------------------------------------ the mark


def _marked() -> TaskGraph:
    """a - b undirected (weights 0.4 / 0.6), b -> c, c <-> d unmarked two-way, routing."""
    adj = np.zeros((4, 4))
    adj[0, 1], adj[1, 0], adj[1, 2], adj[2, 3], adj[3, 2] = 0.4, 0.6, 0.9, 0.2, -0.3
    und = np.zeros((4, 4), dtype=bool)
    und[0, 1] = und[1, 0] = True
    return TaskGraph(
        adj, ["a", "b", "c", "d"], undirected=und, routing=np.full((4, 2), 0.5),
        raw=adj * 2, candidates=adj != 0, meta={"method": "pc"},
    )


def test_mark_validation_and_properties():
    g = _marked()
    assert g.n_undirected == 1 and g.undirected_edges() == [("a", "b")]
    assert g.n_edges == 5 and repr(g).startswith("TaskGraph(tasks=4, edges=5, undirected=1")
    assert g.undirected[1, 0] and not g.undirected[2, 3]
    assert TaskGraph(g.adjacency, g.names, undirected=np.zeros((4, 4))).undirected is None
    one_way = np.zeros((2, 2), dtype=bool)
    one_way[0, 1] = True
    with pytest.raises(ValidationError, match="undirected: .*symmetric"):
        TaskGraph([[0, 1], [1, 0]], ["a", "b"], undirected=one_way)
    with pytest.raises(ValidationError, match="undirected: .*both directions"):
        TaskGraph([[0, 1], [0, 0]], ["a", "b"], undirected=one_way | one_way.T)
    with pytest.raises(ValidationError, match="undirected: expected shape"):
        TaskGraph([[0, 1], [1, 0]], ["a", "b"], undirected=np.ones((3, 3)))
    with pytest.raises(ValidationError, match="undirected"):
        TaskGraph.from_cpdag([[0, 1], [1, 0]], ["a", "b"], undirected=None)


def test_mark_survives_editing_and_comparison():
    g = _marked()
    assert g == _marked() and g.allclose(_marked())
    plain = TaskGraph(g.adjacency, g.names, routing=g.routing, raw=g.raw,
                      candidates=g.candidates, meta=g.meta)
    assert g != plain and not g.allclose(plain)
    sub = g.subgraph(["b", "a", "c"])
    assert sub.undirected_edges() == [("b", "a")]
    assert g.rename({"a": "A"}).undirected_edges() == [("A", "b")]
    assert g.threshold(0.1).undirected_edges() == [("a", "b")]
    half = g.threshold(0.5)  # a -> b (0.4) goes: b -> a is a directed edge now
    assert half.undirected is None and ("b", "a", 0.6) in half.edges()
    assert g.top_k(5).n_undirected == 1
    assert TaskGraph.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    assert TaskGraph.from_networkx(g.to_networkx()) == g
    assert g.to_networkx().edges["a", "b"]["undirected"] is True
    assert g.to_networkx().edges["c", "d"]["undirected"] is False


def test_mark_acyclicity():
    g = TaskGraph.from_cpdag(_adj(3, [(0, 1), (1, 0), (1, 2), (2, 1)]), ["a", "b", "c"])
    assert g.is_dag() and g.find_cycle() is None  # undirected edges are not cycles
    assert g.topological_order() == ["a", "b", "c"]
    dag = g.to_dag()
    assert dag.undirected is None and dag.edges() == [("a", "b", 1.0), ("b", "c", 1.0)]
    # an unmarked two-way pair is a 2-cycle
    assert not TaskGraph(_adj(2, [(0, 1), (1, 0)]), ["a", "b"]).is_dag()
    # a directed cycle beside an undirected edge is still a cycle; to_dag breaks it
    adj = _adj(4, [(0, 1), (1, 2), (2, 0), (2, 3), (3, 2)]).astype(float)
    adj[2, 0] = 0.5
    cyc = TaskGraph(adj, list("abcd"), undirected=(adj != 0) & (adj.T != 0))
    assert not cyc.is_dag() and cyc.find_cycle() == ["a", "b", "c"]
    fixed = cyc.to_dag()
    assert fixed.is_dag() and fixed.n_edges == 3 and fixed.adjacency[2, 0] == 0


def test_to_dag_of_a_cpdag_is_markov_equivalent():
    rng = np.random.default_rng(1)
    for _ in range(60):
        n = int(rng.integers(2, 9))
        a = _random_dag(rng, n, 0.4)
        names = [f"t{i}" for i in range(n)]
        c = TaskGraph(a, names).cpdag()
        member = c.to_dag()
        b = (member.adjacency != 0).astype(int)
        assert member.undirected is None and member.is_dag()
        assert np.array_equal(b | b.T, a | a.T)
        assert _v_structures(b) == _v_structures(a), (a.tolist(), b.tolist())
        assert np.array_equal(cpdag(b), cpdag(a))
        assert TaskGraph.from_cpdag(cpdag(a), names) == TaskGraph(cpdag(a).astype(float), names,
                                                                  undirected=c.undirected)


def test_extension_order_on_a_chordal_component():
    # undirected a - b - c - d with chord b - d; a -> nothing directed
    und = np.zeros((4, 4), dtype=bool)
    for i, j in [(0, 1), (1, 2), (2, 3), (1, 3)]:
        und[i, j] = und[j, i] = True
    directed = np.zeros((4, 4), dtype=bool)
    assert extension_order(directed, und) == [0, 1, 2, 3]
    dag = orient_undirected(directed, und).astype(int)
    assert _v_structures(dag) == set()
    cyc = np.zeros((2, 2), dtype=bool)
    cyc[0, 1] = cyc[1, 0] = True
    assert extension_order(cyc, np.zeros((2, 2), dtype=bool)) is None


# ------------------------------------------------------------------------------------ files


@pytest.mark.parametrize("fmt", LOADABLE_FORMATS)
def test_mark_file_round_trip(tmp_path, fmt):
    g = _marked()
    loaded = TaskGraph.load(g.save(tmp_path / f"g{SUFFIXES[fmt]}"))
    assert loaded == g and loaded.undirected_edges() == [("a", "b")]
    plain = TaskGraph([[0, 1], [0, 0]], ["x", "y"]).save(tmp_path / f"p{SUFFIXES[fmt]}")
    assert TaskGraph.load(plain).undirected is None


def test_mark_in_a_file_must_be_symmetric(tmp_path):
    g = _marked()
    doc = json.loads(g.save(tmp_path / "g.json").read_text(encoding="utf-8"))
    for edge in doc["edges"]:
        if (edge["source"], edge["target"]) == ("b", "a"):
            edge["undirected"] = False
    (tmp_path / "bad.json").write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(GraphFormatError, match="undirected"):
        TaskGraph.load(tmp_path / "bad.json")


def test_mark_in_csv_and_dot(tmp_path):
    g = _marked()
    with open(g.save(tmp_path / "g.csv"), encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["source", "target", "weight", "kind", "undirected"]
    marks = {(r[0], r[1]): r[4] for r in rows[1:] if r[3] == "task"}
    assert marks == {("a", "b"): "true", ("b", "a"): "true", ("b", "c"): "false",
                     ("c", "d"): "false", ("d", "c"): "false"}
    assert all(r[4] == "" for r in rows[1:] if r[3] == "routing")
    import pydot

    (dot,) = pydot.graph_from_dot_data(g.save(tmp_path / "g.dot").read_text(encoding="utf-8"))
    edges = {(e.get_source(), e.get_destination()): e.get_attributes() for e in dot.get_edges()}
    assert ('"b"', '"a"') not in edges  # one edge per undirected pair
    ab = edges['"a"', '"b"']
    assert ab["dir"] == '"none"' and ab["undirected"] == '"true"'
    assert float(ab["edge_weight"].strip('"')) == 0.4
    assert float(ab["edge_weight_reverse"].strip('"')) == 0.6
    assert "dir" not in edges['"c"', '"d"'] and edges['"c"', '"d"']["undirected"] == '"false"'


# ------------------------------------------------------------------------------------ plot


def _legend_labels(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_plot_against_truth(tmp_path):
    names = ["a", "b", "c", "d", "e", "f"]
    truth = TaskGraph.from_cpdag(
        _adj(6, [(0, 1), (1, 2), (2, 1), (2, 3), (3, 4), (4, 5), (5, 4)]), names
    )
    adj = _adj(6, [(0, 1), (1, 2), (3, 2), (4, 5), (5, 4), (0, 5)]).astype(float)
    routing = np.array([[0.9, 0.05], [0.5, 0.0], [0.1, 0.2], [0.0, 0.0], [0.3, 0.0], [1.0, 0.0]])
    pred = TaskGraph(adj, names, undirected=(adj != 0) & (adj.T != 0), routing=routing)
    path = tmp_path / "cmp.png"
    fig = pred.plot(path, truth=truth)
    assert path.read_bytes().startswith(b"\x89PNG")
    labels = _legend_labels(fig)
    for expected in ("correct (2)", "reversed (1)", "oriented (true edge undirected) (1)",
                     "false positive (no true edge) (1)", "missing (false negative) (1)",
                     "undirected edge (no arrowhead)", "task", "module"):
        assert expected in labels, labels
    assert not any(label.startswith("left undirected") for label in labels)  # none of those
    # one patch per compared pair, plus the routing gates above 0.1 (0.9, 0.5, 0.2, 0.3, 1.0)
    patches = fig.axes[0].patches
    assert len(patches) == 6 + 5
    from matplotlib.colors import to_hex

    from taskgraph.graph.drawing import ROUTING_COLOR

    gates = [p for p in patches if to_hex(p.get_edgecolor()) == ROUTING_COLOR]
    alphas = sorted(round(p.get_alpha(), 6) for p in gates)
    assert alphas == sorted(round(0.15 + 0.65 * g, 6) for g in (0.9, 0.5, 0.2, 0.3, 1.0))
    # undirected edges have no arrowhead
    styles = {type(p.get_arrowstyle()).__name__ for p in patches}
    assert {"CurveFilledB", "Curve"} <= styles
    # truth as an array in the graph's task order, and a truth over other tasks
    fig = pred.plot(truth=truth.adjacency, routing_threshold=0.0)
    assert len(fig.axes[0].patches) == 6 + 7
    with pytest.raises(ValidationError, match="truth"):
        pred.plot(truth=TaskGraph.empty(["x", "y"]))
    with pytest.raises(ValidationError, match="truth"):
        pred.plot(truth=np.zeros((2, 2)))
    with pytest.raises(ValidationError, match="routing_threshold"):
        pred.plot(routing_threshold=1.0)


def test_plot_undirected_without_truth_and_labels_that_fit():
    g = _marked()
    fig = g.plot()
    labels = _legend_labels(fig)
    assert "undirected edge (no arrowhead)" in labels
    # a - b once without arrowhead, b -> c, and the unmarked c <-> d as two arrows
    assert len([p for p in fig.axes[0].patches if p.get_linestyle() != "--"]) == 4
    long = ["a_task_with_a_very_long_name_indeed_that_goes_on_and_on", "short"]
    fig = TaskGraph([[0, 1], [0, 0]], long).plot()
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert "short" in texts
    (wrapped,) = texts - {"short"}
    assert wrapped.count("\n") == 2 and wrapped.endswith("…")
    assert all(len(line) <= 12 for line in wrapped.split("\n"))
    from taskgraph.graph.drawing import fit_labels

    labels, size, font = fit_labels(["ab", "cd"], None, None)
    assert labels == ["ab", "cd"] and size == 1200.0 and font == 9.0
    labels, size, font = fit_labels(long, None, None)
    assert size <= 3600.0 and 5.0 <= font < 9.0
    assert fit_labels(long, 900.0, 11.0)[1:] == (900.0, 11.0)  # given sizes are kept
