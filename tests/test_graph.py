"""Tests of taskgraph.graph.TaskGraph and taskgraph._io (atomic writes)."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import hypothesis.strategies as st
import networkx as nx
import numpy as np
import pydot
import pytest
import torch
from hypothesis import HealthCheck, given, settings

import taskgraph.graph as graph_mod
from taskgraph._io import atomic_path, atomic_write
from taskgraph.exceptions import (
    CycleError,
    GraphFileError,
    GraphFormatError,
    TaskGraphError,
    UnknownTaskError,
    ValidationError,
)
from taskgraph.graph import LOADABLE_FORMATS, SUPPORTED_FORMATS, TaskGraph
from taskgraph.tasks import Task, TaskSet

SUFFIXES = {"graphml": ".graphml", "gexf": ".gexf", "json": ".json", "dot": ".dot", "csv": ".csv"}
AWKWARD = ["a b", "<&>\"'", "é,x\\", " sp ", "node", "#x", 'α"\\"β', "->", "ταυ 😀", "=;{}[]"]
TRICKY_FLOATS = [0.1 + 0.2, 1e-300, -3.3333333333333335, 5e-324, 1.7976931348623157e308, -2.5]


def rich_graph() -> TaskGraph:
    """Awkward names, signed weights, routing, named modules, candidates, raw, meta."""
    rng = np.random.default_rng(0)
    t = len(AWKWARD)
    adj = np.where(rng.random((t, t)) < 0.35, rng.normal(size=(t, t)), 0.0)
    np.fill_diagonal(adj, 0.0)
    for k, w in enumerate(TRICKY_FLOATS):
        adj[k, k + 1] = w
    routing = rng.random((t, 3))
    routing[0, 1] = 0.0
    routing[2, 0] = 1.0
    return TaskGraph(
        adj,
        AWKWARD,
        routing=routing,
        modules=["m 1", 'm"2', "m<3&"],
        candidates=rng.random((t, t)) < 0.5,
        raw=rng.random((t, t)),
        learned=True,
        meta={
            "method": "gcnet",
            "seed": 3,
            "threshold": 0.30000000000000004,
            "flag": True,
            "id": "graph-id",
            "note": "line1\nline2\t<&>",
            "big": 2**70,
        },
    )


def plain_graph() -> TaskGraph:
    """No extras, an isolated task, not learned."""
    return TaskGraph([[0, 0.5, 0], [0, 0, 0], [0, 0, 0]], ["a", "b", "isolated"], learned=False)


# ------------------------------------------------------------------------------------ basics


def test_orientation_regression():
    g = TaskGraph([[0.0, 0.7], [0.0, 0.0]], ["a", "b"])
    assert g.adjacency[0, 1] == 0.7 and g.adjacency[1, 0] == 0.0
    edge_index, weight = g.to_edge_index()
    assert edge_index.tolist() == [[0], [1]]
    assert weight.tolist() == pytest.approx([0.7])
    assert list(g.to_networkx().edges()) == [("a", "b")]
    assert g.edges() == [("a", "b", 0.7)]
    assert g.parents("b") == ["a"] and g.children("a") == ["b"]
    assert g.topological_order() == ["a", "b"]
    from torch_geometric.utils import to_dense_adj

    dense = to_dense_adj(edge_index, edge_attr=weight, max_num_nodes=2)[0]
    assert torch.equal(dense, g.to_tensor())


def test_properties_and_copies():
    g = rich_graph()
    assert g.names == AWKWARD and g.n_tasks == len(AWKWARD)
    assert g.modules == ["m 1", 'm"2', "m<3&"] and g.n_modules == 3
    assert g.n_edges == int(np.count_nonzero(g.adjacency))
    assert g.adjacency.dtype == np.float64
    a = g.adjacency
    a[0, 1] = 99.0
    assert g.adjacency[0, 1] != 99.0
    names = g.names
    names[0] = "changed"
    assert g.names[0] == AWKWARD[0]
    meta = g.meta
    meta["method"] = "other"
    assert g.meta["method"] == "gcnet"
    assert g.routing.shape == (len(AWKWARD), 3) and g.raw.shape == g.candidates.shape
    assert g.to_numpy().dtype == np.float64
    assert g.to_tensor(torch.float64).dtype == torch.float64
    assert repr(g) == f"TaskGraph(tasks={g.n_tasks}, edges={g.n_edges}, modules=3, learned=True)"


def test_repr_and_defaults():
    g = TaskGraph(
        np.zeros((3, 3)), TaskSet([Task("x", "binary"), "y", "z"]), routing=np.ones((3, 2))
    )
    assert g.names == ["x", "y", "z"]
    assert g.modules == ["module_0", "module_1"]
    assert repr(TaskGraph.empty(["a", "b"])) == "TaskGraph(tasks=2, edges=0, learned=False)"
    assert TaskGraph.empty(["a"], learned=True).learned
    plain = TaskGraph([[0, 1], [0, 0]], ["a", "b"])
    assert plain.routing is None and plain.modules == [] and plain.raw is None
    assert plain.candidates is None and plain.meta == {}


def test_inputs_torch_bool_and_negative_zero():
    g = TaskGraph(torch.tensor([[0.0, 2.0], [-0.0, 0.0]]), ["a", "b"])
    assert g.n_edges == 1 and math.copysign(1.0, g.adjacency[1, 0]) == 1.0
    b = TaskGraph(np.array([[False, True], [False, False]]), ("a", "b"))
    assert b.edges() == [("a", "b", 1.0)]
    c = TaskGraph([[0, 1], [0, 0]], ["a", "b"], candidates=[[0, 1], [1, 0]])
    assert c.candidates.dtype == bool and c.candidates.tolist() == [[False, True], [True, False]]


BAD_INPUTS = [
    (dict(adjacency=np.zeros((2, 3))), ValidationError, "adjacency"),
    (dict(adjacency=[[0, float("nan")], [0, 0]]), ValidationError, "adjacency"),
    (dict(adjacency=[[0, float("inf")], [0, 0]]), ValidationError, "adjacency"),
    (dict(adjacency=[[1.0, 0], [0, 0]]), ValidationError, "diagonal"),
    (dict(adjacency=[["x", "y"], ["z", "w"]]), ValidationError, "adjacency"),
    (dict(adjacency=[[0, 1], [0]]), ValidationError, "adjacency"),
    (dict(tasks=["a", "a"]), UnknownTaskError, "duplicate"),
    (dict(tasks=["a", ""]), ValidationError, "tasks"),
    (dict(tasks=["a", "b\nc"]), ValidationError, r"U\+000A"),
    (dict(tasks=["a", "b\x00"]), ValidationError, "tasks"),
    (dict(tasks="ab"), ValidationError, "tasks"),
    (dict(tasks=["a", 3]), ValidationError, "tasks"),
    (dict(tasks=["a", "b", "c"]), ValidationError, "adjacency"),
    (dict(routing=[[0.5], [1.5]]), ValidationError, "routing"),
    (dict(routing=[[0.5]]), ValidationError, "routing"),
    (dict(routing=np.zeros((2, 0))), ValidationError, "routing"),
    (dict(routing=[[0.5], [0.5]], modules=["m", "n"]), ValidationError, "modules"),
    (dict(routing=[[0.5], [0.5]], modules=["a"]), ValidationError, "modules"),
    (dict(modules=["m"]), ValidationError, "modules"),
    (dict(candidates=[[0, 0.5], [0, 0]]), ValidationError, "candidates"),
    (dict(candidates=np.zeros((3, 3), bool)), ValidationError, "candidates"),
    (dict(meta={"x": [1, 2]}), ValidationError, "meta"),
    (dict(meta={"learned": True}), ValidationError, "meta"),
    (dict(meta={"taskgraph_x": 1}), ValidationError, "meta"),
    (dict(meta={"x": float("nan")}), ValidationError, "meta"),
    (dict(meta={"a\nb": 1}), ValidationError, "meta"),
    (dict(meta=[("a", 1)]), ValidationError, "meta"),
    (dict(raw=[[0, float("nan")], [0, 0]]), ValidationError, "raw"),
    (dict(raw=np.zeros((3, 3))), ValidationError, "raw"),
    (dict(learned="yes"), ValidationError, "learned"),
]


@pytest.mark.parametrize("changes, exc, needle", BAD_INPUTS)
def test_bad_inputs_raise_named_errors(changes, exc, needle):
    kwargs = dict(adjacency=[[0.0, 1.0], [0.0, 0.0]], tasks=["a", "b"])
    kwargs.update(changes)
    with pytest.raises(exc, match=needle) as info:
        TaskGraph(kwargs.pop("adjacency"), kwargs.pop("tasks"), **kwargs)
    assert isinstance(info.value, (TaskGraphError, ValueError))


def test_equality_and_allclose():
    g = rich_graph()
    assert g == rich_graph() and g is not rich_graph()
    assert g != plain_graph() and g != "not a graph"
    other = TaskGraph(
        g.adjacency + 1e-12 * (g.adjacency != 0),
        g.names,
        routing=g.routing,
        modules=g.modules,
        candidates=g.candidates,
        raw=g.raw,
        meta=g.meta,
    )
    assert other != g and other.allclose(g, atol=1e-9)
    assert not other.allclose(g, atol=0.0)
    assert TaskGraph.empty(["a"], meta={"x": 1}) != TaskGraph.empty(["a"], meta={"x": 1.0})
    assert TaskGraph.empty(["a"]) != TaskGraph.empty(["a"], learned=True)


# ------------------------------------------------------------------------------------ PyG


def test_edge_index_round_trip_and_order():
    g = rich_graph()
    edge_index, weight = g.to_edge_index(dtype=torch.float64)
    assert edge_index.dtype == torch.long and edge_index.shape == (2, g.n_edges)
    keys = (edge_index[0] * g.n_tasks + edge_index[1]).tolist()
    assert keys == sorted(keys)  # row-major
    back = TaskGraph.from_edge_index(edge_index, weight, g.names)
    assert np.array_equal(back.adjacency, g.adjacency)
    back = TaskGraph.from_edge_index(edge_index.numpy(), None, g.names)
    assert np.array_equal(back.adjacency, (g.adjacency != 0).astype(float))
    empty_ei, empty_w = TaskGraph.empty(["a", "b"]).to_edge_index()
    assert empty_ei.shape == (2, 0) and empty_w.shape == (0,)


def test_edge_index_raw_and_routing():
    g = TaskGraph(
        [[0, 0.0], [0.6, 0]],
        ["a", "b"],
        raw=[[0, 0.3], [0.9, 0]],
        routing=[[0.0, 1.0], [0.25, 0.0]],
        modules=["m0", "m1"],
    )
    ei, w = g.to_edge_index("raw")
    assert ei.tolist() == [[0, 1], [1, 0]] and w.tolist() == pytest.approx([0.3, 0.9])
    rei, rw = g.routing_edge_index()
    assert rei.tolist() == [[0, 1], [1, 0]]  # m0 -> b (0.25), m1 -> a (1.0)
    assert rw.tolist() == pytest.approx([0.25, 1.0])
    with pytest.raises(ValidationError, match="weights"):
        plain_graph().to_edge_index("raw")
    with pytest.raises(ValidationError, match="weights"):
        g.to_edge_index("bogus")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="routing"):
        plain_graph().routing_edge_index()


@pytest.mark.parametrize(
    "edge_index, weight, needle",
    [
        ([[0, 2], [1, 0]], None, "edge_index"),
        ([[0, 0], [1, 1]], None, "duplicate"),
        ([[0, 1, 0]], None, "edge_index"),
        (np.array([[0.0], [1.0]]), None, "integer"),
        ([[0], [1]], [1.0, 2.0], "edge_weight"),
        ([[0], [1]], [float("nan")], "edge_weight"),
        ([[0], [0]], None, "diagonal"),
    ],
)
def test_from_edge_index_errors(edge_index, weight, needle):
    with pytest.raises(ValidationError, match=needle):
        TaskGraph.from_edge_index(edge_index, weight, ["a", "b"])


# ------------------------------------------------------------------------------------ networkx


def test_networkx_round_trip_and_attributes():
    g = rich_graph()
    nxg = g.to_networkx()
    assert isinstance(nxg, nx.DiGraph)
    assert list(nxg.nodes)[: g.n_tasks] == g.names
    assert nxg.nodes[AWKWARD[0]] == {"kind": "task", "index": 0, "label": AWKWARD[0]}
    assert nxg.nodes["m 1"]["kind"] == "module"
    u, v = AWKWARD[0], AWKWARD[1]
    data = nxg.edges[u, v]
    assert type(data["weight"]) is float and data["weight"] == 0.1 + 0.2
    assert (
        data["kind"] == "task"
        and type(data["raw"]) is float
        and isinstance(data["candidate"], bool)
    )
    assert nxg.edges["m 1", AWKWARD[2]] == {"weight": 1.0, "kind": "routing"}
    assert not nxg.has_edge('m"2', AWKWARD[0])  # zero gate: no edge
    assert nxg.graph["method"] == "gcnet" and nxg.graph["learned"] is True
    assert TaskGraph.from_networkx(nxg) == g
    shuffled = list(reversed(g.names))
    assert TaskGraph.from_networkx(nxg, tasks=shuffled) == g.subgraph(shuffled)


def test_to_networkx_is_graphml_writable(tmp_path):
    g = TaskGraph(
        [[0, -1.5], [0, 0]],
        ["a", "b"],
        raw=[[0, 0.2], [0.1, 0]],
        candidates=[[0, 1], [1, 0]],
        routing=[[0.5], [0.0]],
        meta={"m": "x"},
    )
    path = tmp_path / "direct.graphml"
    nx.write_graphml(g.to_networkx(), path)
    nx.write_gexf(g.to_networkx(), tmp_path / "direct.gexf")
    json.dumps(nx.node_link_data(g.to_networkx(), edges="edges"))
    assert TaskGraph.from_networkx(nx.read_graphml(path)) == g


def test_from_networkx_plain_graph():
    h = nx.DiGraph(method="pc", alpha=0.05)
    h.add_edge("x", "y")
    h.add_edge("y", "z", weight=-2.0)
    h.add_node("w")
    g = TaskGraph.from_networkx(h)
    assert g.names == ["x", "y", "z", "w"]
    assert g.edges() == [("x", "y", 1.0), ("y", "z", -2.0)]
    assert g.meta == {"method": "pc", "alpha": 0.05} and g.learned


@pytest.mark.parametrize(
    "build, exc, needle",
    [
        (lambda: nx.path_graph(3, create_using=nx.DiGraph), GraphFormatError, "str"),
        (lambda: nx.Graph([("a", "b")]), GraphFormatError, "directed"),
        (lambda: nx.MultiDiGraph([("a", "b")]), GraphFormatError, "multigraph"),
        (
            lambda: _with(nx.DiGraph([("a", "b")]), node=("a", "kind", "blob")),
            GraphFormatError,
            "kind",
        ),
        (lambda: _task_to_module(), GraphFormatError, "module"),
        (lambda: _with(nx.DiGraph([("a", "b")]), graph=("lst", [1])), GraphFormatError, "lst"),
        (
            lambda: _with(nx.DiGraph([("a", "b")]), edge=("weight", "heavy")),
            GraphFormatError,
            "weight",
        ),
        (lambda: [("a", "b")], ValidationError, "networkx"),
    ],
)
def test_from_networkx_errors(build, exc, needle):
    with pytest.raises(exc, match=needle):
        TaskGraph.from_networkx(build())


def test_from_networkx_task_mismatch():
    h = nx.DiGraph([("a", "b")])
    with pytest.raises(UnknownTaskError, match="not task nodes"):
        TaskGraph.from_networkx(h, tasks=["a", "b", "c"])
    with pytest.raises(UnknownTaskError, match="not in tasks"):
        TaskGraph.from_networkx(h, tasks=["a"])


def _with(g, node=None, graph=None, edge=None):
    if node:
        g.nodes[node[0]][node[1]] = node[2]
    if graph:
        g.graph[graph[0]] = graph[1]
    if edge:
        for _, _, d in g.edges(data=True):
            d[edge[0]] = edge[1]
    return g


def _task_to_module():
    g = nx.DiGraph()
    g.add_node("a", kind="task")
    g.add_node("m", kind="module")
    g.add_edge("a", "m", weight=0.5)
    return g


def test_to_dict_round_trip():
    g = rich_graph()
    d = json.loads(json.dumps(g.to_dict()))
    assert TaskGraph.from_dict(d) == g
    with pytest.raises(GraphFormatError, match="adjacency"):
        TaskGraph.from_dict({"names": ["a"]})
    with pytest.raises(GraphFormatError, match="version"):
        TaskGraph.from_dict({**d, "taskgraph_version": 99})


# ------------------------------------------------------------------------------------ editing


def _triangle() -> TaskGraph:
    return TaskGraph([[0, 0.5, -0.2], [0, 0, 0.05], [-0.7, 0, 0]], ["a", "b", "c"], meta={"k": 1})


def test_threshold():
    g = _triangle()
    assert g.threshold(0.1).edges() == [("a", "b", 0.5), ("a", "c", -0.2), ("c", "a", -0.7)]
    assert g.threshold(0.1, absolute=False).edges() == [("a", "b", 0.5)]
    assert g.threshold(0.5).edges() == [("c", "a", -0.7)]  # strict: |w| > value
    assert g.threshold(0.1).meta == {"k": 1}
    with pytest.raises(ValidationError, match="value"):
        g.threshold(float("nan"))
    with pytest.raises(ValidationError, match="value"):
        g.threshold("0.1")  # type: ignore[arg-type]


def test_top_k():
    g = _triangle()
    assert g.top_k(2).edges() == [("a", "b", 0.5), ("c", "a", -0.7)]
    assert g.top_k(0).n_edges == 0 and g.top_k(10) == g
    assert g.top_k(1, per_node=True).edges() == [
        ("a", "b", 0.5),
        ("a", "c", -0.2),
        ("c", "a", -0.7),
    ]
    tie = TaskGraph([[0, 1.0, -1.0], [0, 0, 0], [0, 1.0, 0]], ["a", "b", "c"])
    assert tie.top_k(1).edges() == [("a", "b", 1.0)]  # ties: row-major first
    assert tie.top_k(1, per_node=True).edges() == [("a", "b", 1.0), ("a", "c", -1.0)]
    with pytest.raises(ValidationError, match="k"):
        g.top_k(-1)
    with pytest.raises(ValidationError, match="k"):
        g.top_k(1.5)  # type: ignore[arg-type]


def test_dag_and_topological_order():
    cyc = TaskGraph([[0, 0.9, 0], [0, 0, 0.2], [0.5, 0, 0]], ["a", "b", "c"])
    assert not cyc.is_dag()
    assert cyc.find_cycle() == ["a", "b", "c"]
    with pytest.raises(CycleError, match="'a' -> 'b' -> 'c' -> 'a'"):
        cyc.topological_order()
    dag = cyc.to_dag()
    assert dag.is_dag() and dag.edges() == [("a", "b", 0.9), ("c", "a", 0.5)]  # weakest b->c gone
    assert dag.topological_order() == ["c", "a", "b"]
    # lowest index first among ready tasks
    g = TaskGraph([[0, 0, 0], [0, 0, 0], [1.0, 0, 0]], ["a", "b", "c"])
    assert g.topological_order() == ["b", "c", "a"]
    assert g.to_dag() == g and g.find_cycle() is None


def test_to_dag_two_cycles_deterministic():
    # cycles a->b->a (|w| 0.3 weakest) and b->c->d->b (c->d -0.1 weakest by |w|)
    adj = np.zeros((4, 4))
    adj[0, 1], adj[1, 0] = 1.0, 0.3
    adj[1, 2], adj[2, 3], adj[3, 1] = 0.8, -0.1, -0.9
    g = TaskGraph(adj, ["a", "b", "c", "d"], routing=np.full((4, 1), 0.5), meta={"x": "y"})
    dag = g.to_dag()
    assert dag.is_dag()
    assert dag.edges() == [("a", "b", 1.0), ("b", "c", 0.8), ("d", "b", -0.9)]
    assert dag.meta == g.meta and np.array_equal(dag.routing, g.routing)
    assert dag == g.to_dag()


def test_skeleton_subgraph_rename():
    g = rich_graph()
    sk = g.skeleton()
    assert sk.dtype == bool and np.array_equal(sk, sk.T)
    assert np.array_equal(sk, (g.adjacency != 0) | (g.adjacency != 0).T)
    keep = [AWKWARD[3], AWKWARD[0], AWKWARD[1]]
    sub = g.subgraph(keep)
    idx = [3, 0, 1]
    assert sub.names == keep
    assert np.array_equal(sub.adjacency, g.adjacency[np.ix_(idx, idx)])
    assert np.array_equal(sub.routing, g.routing[idx])
    assert np.array_equal(sub.raw, g.raw[np.ix_(idx, idx)])
    assert np.array_equal(sub.candidates, g.candidates[np.ix_(idx, idx)])
    assert sub.modules == g.modules and sub.meta == g.meta
    with pytest.raises(UnknownTaskError, match="nope"):
        g.subgraph(["nope"])
    r = _triangle().rename({"a": "A"})
    assert r.names == ["A", "b", "c"] and r.edges()[0] == ("A", "b", 0.5)
    with pytest.raises(UnknownTaskError):
        _triangle().rename({"zz": "y"})
    with pytest.raises(UnknownTaskError, match="duplicate"):
        _triangle().rename({"a": "b"})
    assert g.rename({"m 1": "module one"}).modules[0] == "module one"


# ------------------------------------------------------------------------------------ files


@pytest.mark.parametrize("fmt", LOADABLE_FORMATS)
@pytest.mark.parametrize("make", [rich_graph, plain_graph], ids=["rich", "plain"])
def test_file_round_trip(tmp_path, fmt, make):
    g = make()
    path = g.save(tmp_path / "nested" / "dir" / f"graph{SUFFIXES[fmt]}")
    assert path == tmp_path / "nested" / "dir" / f"graph{SUFFIXES[fmt]}" and path.stat().st_size
    loaded = TaskGraph.load(path)
    assert loaded == g
    assert loaded.adjacency.tobytes() == g.adjacency.tobytes()  # bit-exact
    assert [type(v) for v in loaded.meta.values()] == [type(v) for v in g.meta.values()]
    assert os.listdir(path.parent) == [path.name]  # no temporary files left


@pytest.mark.parametrize("fmt", LOADABLE_FORMATS)
def test_tricky_floats_exact(tmp_path, fmt):
    n = len(TRICKY_FLOATS) + 1
    adj = np.zeros((n, n))
    for k, w in enumerate(TRICKY_FLOATS):
        adj[k, k + 1] = w
        adj[k + 1, k] = -w / 3
    g = TaskGraph(adj, [f"t{k}" for k in range(n)], raw=adj.T * 0.7, meta={"f": 0.1 + 0.2})
    back = TaskGraph.load(g.save(tmp_path / f"g{SUFFIXES[fmt]}"))
    assert back.adjacency.tobytes() == g.adjacency.tobytes()
    assert back.raw.tobytes() == g.raw.tobytes() and back.meta["f"] == 0.1 + 0.2


def test_format_argument_and_aliases(tmp_path):
    g = plain_graph()
    path = g.save(tmp_path / "graph.txt", format="node-link")
    assert json.loads(path.read_text())["directed"] is True
    assert TaskGraph.load(path, format="json") == g
    assert _parse_dot(g.save(tmp_path / "g.gv").read_text(encoding="utf-8"))[1] == g.names
    assert g.save(tmp_path / "g.txt", format="gv").read_text(encoding="utf-8").startswith(
        "strict digraph"
    )
    assert TaskGraph.load(g.save(str(tmp_path / "G.GRAPHML"))) == g
    with pytest.raises(ValidationError, match="path") as info:
        g.save(tmp_path / "graph.txt")
    for fmt in SUPPORTED_FORMATS:
        assert fmt in str(info.value)
    with pytest.raises(ValidationError, match="format"):
        g.save(tmp_path / "graph.json", format="yaml")
    with pytest.raises(ValidationError, match="path"):
        TaskGraph.load(tmp_path / "graph.xyz")


def test_graphml_is_tool_friendly(tmp_path):
    g = rich_graph()
    path = g.save(tmp_path / "g.graphml")
    root = ET.parse(path).getroot()
    ns = {"g": "http://graphml.graphdrawing.org/xmlns"}
    keys = {
        (k.get("for"), k.get("attr.name")): k.get("attr.type") for k in root.findall("g:key", ns)
    }
    assert keys[("edge", "weight")] == "double"
    assert keys[("node", "kind")] == "string" and keys[("node", "label")] == "string"
    graph_el = root.find("g:graph", ns)
    assert graph_el.get("edgedefault") == "directed"
    ids = [n.get("id") for n in graph_el.findall("g:node", ns)]
    assert ids == g.names + g.modules
    n_edges = len(graph_el.findall("g:edge", ns))
    assert n_edges == g.n_edges + int(np.count_nonzero(g.routing))  # no phantom edges


def test_gexf_and_json_layout(tmp_path):
    g = rich_graph()
    gexf = g.save(tmp_path / "g.gexf")
    plain = nx.read_gexf(gexf)
    assert list(plain.nodes)[: g.n_tasks] == g.names
    assert plain.number_of_edges() == g.n_edges + int(np.count_nonzero(g.routing))
    assert "<description>" in gexf.read_text(encoding="utf-8")
    doc = json.loads(g.save(tmp_path / "g.json").read_text(encoding="utf-8"))
    assert doc["taskgraph"]["version"] == graph_mod.FORMAT_VERSION
    assert doc["directed"] is True and "edges" in doc and "links" not in doc
    assert doc["graph"]["taskgraph_meta"]["method"] == "gcnet"
    assert [n["id"] for n in doc["nodes"]][: g.n_tasks] == g.names


def test_csv_layout(tmp_path):
    g = TaskGraph(
        [[0, 0.5, 0], [0, 0, 0], [0, 0, 0]],
        ["a,1", 'b"', "c"],
        routing=[[1], [0], [0]],
        modules=["m"],
    )
    rows = g.save(tmp_path / "g.csv").read_text(encoding="utf-8").splitlines()
    assert rows == [
        "source,target,weight,kind,undirected",
        '"a,1","b""",0.5,task,false',
        'm,"a,1",1.0,routing,',
    ]
    empty = TaskGraph.empty(["a", "b"]).save(tmp_path / "e.csv")
    assert empty.read_text(encoding="utf-8") == "source,target,weight,kind,undirected\n"


def _csv_rows(g: TaskGraph) -> list[list[str]]:
    """The rows a CSV export of ``g`` must have, header first."""
    rows = [["source", "target", "weight", "kind", "undirected"]]
    mark = g.undirected if g.undirected is not None else np.zeros((g.n_tasks,) * 2, dtype=bool)
    rows += [
        [u, v, repr(w), "task", "true" if mark[g.index(u), g.index(v)] else "false"]
        for u, v, w in g.edges()
    ]
    if g.routing is not None:
        for k, t in zip(*np.nonzero(g.routing.T)):
            rows.append([g.modules[k], g.names[t], repr(float(g.routing[t, k])), "routing", ""])
    return rows


def _read_csv(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


def test_csv_export_rows(tmp_path):
    g = rich_graph()
    rows = _read_csv(g.save(tmp_path / "g.csv"))
    assert rows == _csv_rows(g)
    assert len(rows) == 1 + g.n_edges + int(np.count_nonzero(g.routing))
    weights = {(u, v): float(w) for u, v, w, kind, _ in rows[1:] if kind == "task"}
    assert weights == {(u, v): w for u, v, w in g.edges()}  # exact float64


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_unquote(token: str) -> str:
    """A DOT double-quoted string as the text it stands for."""
    assert len(token) >= 2 and token[0] == token[-1] == '"', token
    return re.sub(r"\\(.)", r"\1", token[1:-1], flags=re.S)


def _parse_dot(text: str) -> tuple[pydot.Dot, list[str], dict[tuple[str, str], dict[str, str]]]:
    """Parse DOT with pydot: the graph, the node names in order, the edges with attributes."""
    graphs = pydot.graph_from_dot_data(text)
    assert graphs is not None and len(graphs) == 1
    (dot,) = graphs
    nodes = [_dot_unquote(n.get_name()) for n in dot.get_nodes()]
    edges = {
        (_dot_unquote(e.get_source()), _dot_unquote(e.get_destination())): {
            k: _dot_unquote(v) for k, v in e.get_attributes().items()
        }
        for e in dot.get_edges()
    }
    return dot, nodes, edges


def _check_dot(g: TaskGraph, text: str) -> None:
    """``text`` parses to the nodes of ``g`` (tasks, modules) and its task and routing edges."""
    dot, nodes, edges = _parse_dot(text)
    assert dot.get_type() == "digraph"
    assert nodes == g.names + g.modules
    # an undirected edge a — b is one DOT edge from the earlier task, without arrowhead
    undirected = {(v, u) for u, v in g.undirected_edges()}
    tasks = {(u, v): w for u, v, w in g.edges() if (u, v) not in undirected}
    for u, v in g.undirected_edges():
        attrs = edges[u, v]
        assert attrs["dir"] == "none" and attrs["undirected"] == "true"
        assert float(attrs["edge_weight_reverse"]) == g.adjacency[g.index(v), g.index(u)]
    routing: dict[tuple[str, str], float] = {}
    if g.routing is not None:
        for t, k in zip(*np.nonzero(g.routing)):
            routing[g.modules[k], g.names[t]] = float(g.routing[t, k])
    assert set(edges) == set(tasks) | set(routing)
    for key, attrs in edges.items():
        kind = "task" if key in tasks else "routing"
        assert attrs["kind"] == kind
        assert float(attrs["edge_weight"]) == (tasks if kind == "task" else routing)[key]
        assert "weight" not in attrs  # Graphviz's layout weight is left at its default


def test_dot_export_is_parseable(tmp_path):
    g = rich_graph()
    text = g.save(tmp_path / "g.dot").read_text(encoding="utf-8")
    _check_dot(g, text)
    dot, _, edges = _parse_dot(text)
    assert _dot_unquote(dot.get_attributes()["rankdir"]) == "LR"
    assert json.loads(_dot_unquote(dot.get_attributes()["taskgraph_meta"])) == g.meta
    for (u, v), attrs in edges.items():
        if attrs["kind"] == "routing":
            assert attrs["style"] == "dashed"
        else:
            positive = float(attrs["edge_weight"]) > 0
            assert attrs["color"] == ("#1f77b4" if positive else "#d62728")
            assert float(attrs["raw"]) == g.raw[g.index(u), g.index(v)]
        assert math.isfinite(float(attrs["penwidth"]))  # also for weights near the float maximum
    node = dot.get_node(_dot_quote(AWKWARD[2]))[0]
    assert _dot_unquote(node.get_attributes()["label"]) == AWKWARD[2]
    _check_dot(plain_graph(), plain_graph().save(tmp_path / "p.gv").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "name, fmt",
    [("g.dot", None), ("g.gv", None), ("g.csv", None), ("g.txt", "dot"), ("g.txt", "csv")],
)
def test_export_only_formats_refuse_to_load(tmp_path, name, fmt):
    path = plain_graph().save(tmp_path / name, format=fmt)
    with pytest.raises(ValidationError, match="export-only") as info:
        TaskGraph.load(path, format=fmt)
    message = str(info.value)
    assert "GraphML" in message and "JSON" in message and name in message
    assert not isinstance(info.value, GraphFormatError)  # the content is never read
    with pytest.raises(ValidationError, match="export-only"):
        TaskGraph.load(tmp_path / f"missing{Path(name).suffix}", format=fmt)


# ---- foreign files


def test_load_foreign_files(tmp_path):
    h = nx.DiGraph()
    h.add_edge("x", "y", weight=2.0)
    h.add_edge("y", "z")
    nx.write_graphml(h, tmp_path / "f.graphml")
    nx.write_gexf(h, tmp_path / "f.gexf")
    for suffix in ("graphml", "gexf"):
        g = TaskGraph.load(tmp_path / f"f.{suffix}")
        assert g.names == ["x", "y", "z"] and g.edges() == [("x", "y", 2.0), ("y", "z", 1.0)]
    (tmp_path / "f.csv").write_text("source,target,weight\nx,y,2\ny,z,\n", encoding="utf-8")
    (tmp_path / "f.dot").write_text("digraph G { x -> y [weight=2]; }", encoding="utf-8")
    for suffix in ("csv", "dot"):
        with pytest.raises(ValidationError, match="export-only"):
            TaskGraph.load(tmp_path / f"f.{suffix}")
    (tmp_path / "f.json").write_text(
        json.dumps(nx.node_link_data(h, edges="links")), encoding="utf-8"
    )
    assert TaskGraph.load(tmp_path / "f.json").edges() == [("x", "y", 2.0), ("y", "z", 1.0)]


# ---- errors


def test_missing_and_unreadable_files(tmp_path):
    missing = tmp_path / "nope.graphml"
    with pytest.raises(GraphFileError, match="nope.graphml") as info:
        TaskGraph.load(missing)
    assert isinstance(info.value, OSError)
    with pytest.raises(GraphFileError, match="d.json"):
        TaskGraph.load(_make_dir(tmp_path / "d.json"))  # a directory
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(GraphFileError, match="file"):
        plain_graph().save(blocker / "sub" / "g.json")


def _make_dir(path: Path) -> Path:
    path.mkdir()
    return path


def _valid_text(fmt: str) -> str:
    with tempfile.TemporaryDirectory() as d:
        return plain_graph().save(Path(d) / f"g{SUFFIXES[fmt]}").read_text(encoding="utf-8")


CORRUPT = [
    ("graphml", lambda t: t[: len(t) // 2], "GraphML"),
    ("graphml", lambda t: "", "GraphML"),
    ("graphml", lambda t: t.replace(">0.5<", ">nan<"), "finite"),
    ("graphml", lambda t: t.replace('target="b"', 'target="ghost"'), "ghost"),
    ("gexf", lambda t: t.replace("</gexf>", ""), "GEXF"),
    ("gexf", lambda t: t.replace('weight="0.5"', 'weight="inf"'), "finite"),
    ("json", lambda t: t[:-10], "JSON"),
    ("json", lambda t: t.replace('"target": "b"', '"target": "ghost"'), "ghost"),
    ("json", lambda t: t.replace('"weight": 0.5', '"weight": NaN'), "finite"),
    ("json", lambda t: t.replace('"nodes"', '"nodez"'), "nodes"),
    ("json", lambda t: t.replace('"index": 2', '"index": 7'), "index"),
    ("json", lambda t: t.replace('"directed": true', '"directed": false'), "directed"),
    ("json", lambda t: t.replace('"kind": "task",\n      "source"', '"source"'), "kind"),
    ("json", lambda t: t.replace('"taskgraph_version": 1', '"taskgraph_version": 99'), "version"),
    ("json", lambda t: "[1, 2]", "node-link"),
]


@pytest.mark.parametrize("fmt, corrupt, needle", CORRUPT)
def test_corrupt_files_raise_format_error(tmp_path, fmt, corrupt, needle):
    text = _valid_text(fmt)
    bad = corrupt(text)
    assert bad != text
    path = tmp_path / f"bad{SUFFIXES[fmt]}"
    path.write_text(bad, encoding="utf-8")
    with pytest.raises(GraphFormatError, match=needle) as info:
        TaskGraph.load(path)
    assert isinstance(info.value, ValueError) and "bad" in str(info.value)


def test_binary_garbage(tmp_path):
    for fmt in SUPPORTED_FORMATS:
        path = tmp_path / f"junk{SUFFIXES[fmt]}"
        path.write_bytes(b"\xff\xfe\x00garbage\x80")
        expected = GraphFormatError if fmt in LOADABLE_FORMATS else ValidationError
        with pytest.raises(expected):
            TaskGraph.load(path)


# ---- atomic writes


def _failing_writer(graph, fh):
    fh.write(b"partial garbage")
    raise RuntimeError("boom mid-write")


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
def test_failed_save_leaves_previous_file(tmp_path, monkeypatch, fmt):
    path = tmp_path / f"g{SUFFIXES[fmt]}"
    rich_graph().save(path)
    before = path.read_bytes()
    monkeypatch.setitem(graph_mod._WRITERS, fmt, _failing_writer)
    with pytest.raises(RuntimeError, match="boom"):
        plain_graph().save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]
    fresh = tmp_path / f"fresh{SUFFIXES[fmt]}"
    with pytest.raises(RuntimeError):
        plain_graph().save(fresh)
    assert not fresh.exists() and os.listdir(tmp_path) == [path.name]


def test_failed_networkx_writer_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "g.graphml"
    plain_graph().save(path)
    before = path.read_bytes()

    def broken(g, fh, **kwargs):
        fh.write(b"<?xml version='1.0'?><graphml>")
        raise ValueError("writer died")

    monkeypatch.setattr(nx, "write_graphml", broken)
    with pytest.raises(ValueError, match="writer died"):
        rich_graph().save(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["g.graphml"]


def test_atomic_write_helpers(tmp_path):
    target = tmp_path / "a" / "b.txt"
    with atomic_write(target) as fh:
        fh.write("héllo\n")
    assert target.read_text(encoding="utf-8") == "héllo\n"
    os.chmod(target, 0o640)
    with atomic_write(target, "wb") as fh:
        fh.write(b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert (target.stat().st_mode & 0o777) == 0o640  # permissions of the old file kept
    with pytest.raises(KeyError), atomic_write(target) as fh:
        fh.write("half")
        raise KeyError("stop")
    assert target.read_bytes() == b"\x00\x01" and os.listdir(target.parent) == ["b.txt"]
    with atomic_path(tmp_path / "c.npy") as tmp:
        assert tmp.suffix == ".npy" and tmp.parent == tmp_path
        np.save(tmp, np.arange(3))
    assert np.load(tmp_path / "c.npy").tolist() == [0, 1, 2]
    with pytest.raises(OSError), atomic_path(tmp_path / "d.bin") as tmp:
        tmp.write_bytes(b"x")
        raise OSError("disk full")
    assert not (tmp_path / "d.bin").exists()
    assert sorted(os.listdir(tmp_path)) == ["a", "c.npy"]
    with pytest.raises(GraphFileError, match="directory"), atomic_write(tmp_path) as fh:
        pass
    with pytest.raises(ValidationError, match="mode"), atomic_write(target, "r") as fh:
        pass


# ------------------------------------------------------------------------------------ plot


def test_plot_writes_png(tmp_path):
    g = rich_graph()
    path = tmp_path / "plots" / "g.png"
    fig = g.plot(path, threshold=0.1)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert "#x" in texts and "m<3&" in texts and "=;{}[]" in texts
    assert os.listdir(path.parent) == ["g.png"]


def test_plot_into_axes_and_layouts(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    dag = _triangle().to_dag()
    assert dag.plot(ax=ax) is fig
    assert len(ax.patches) == dag.n_edges
    for layout in ("circular", "spring", "layered"):
        dag.plot(layout=layout)
    pos = {"a": (0, 0), "b": (1, 0), "c": (0, 1)}
    dag.plot(tmp_path / "g.svg", layout=pos)
    assert (tmp_path / "g.svg").read_text().lstrip().startswith("<?xml")
    with pytest.raises(ValidationError, match="layout"):
        _triangle().plot(layout="layered")  # cyclic
    with pytest.raises(ValidationError, match="layout"):
        dag.plot(layout={"a": (0, 0)})
    with pytest.raises(ValidationError, match="path"):
        dag.plot(tmp_path / "g.docx")
    TaskGraph.empty(["solo"]).plot()


# ------------------------------------------------------------------------------------ property

NAME_ALPHABET = st.characters(exclude_categories=["Cc", "Cs"], exclude_characters="\ufffe\uffff")
SPECIAL = st.sampled_from(
    [
        '"',
        "'",
        "<",
        ">",
        "&",
        ",",
        "\\",
        " ",
        "->",
        "#",
        "//",
        "/*",
        ";",
        "=",
        "[",
        "{",
        "é",
        "😀",
        "\u2028",
        "\ufeff",
        "node",
        "graph",
        "taskgraph_version",
        "1e5",
        "-",
    ]
)
NAMES = st.lists(
    st.one_of(
        st.text(NAME_ALPHABET, min_size=1, max_size=6),
        st.lists(SPECIAL, min_size=1, max_size=4).map("".join),
    ),
    min_size=1,
    max_size=8,
    unique=True,
)
WEIGHTS = st.floats(allow_nan=False, allow_infinity=False, width=64)
META_VALUES = st.one_of(st.text(max_size=8), st.integers(), st.booleans(), WEIGHTS)
META_KEYS = st.text(NAME_ALPHABET, min_size=1, max_size=6).filter(
    lambda k: k != "learned" and not k.startswith("taskgraph")
)


@st.composite
def task_graphs(draw) -> TaskGraph:
    names = draw(NAMES)
    t = len(names)

    def matrix(elements):
        flat = draw(st.lists(elements, min_size=t * t, max_size=t * t))
        return np.array(flat, dtype=float).reshape(t, t)

    adj = matrix(st.one_of(st.just(0.0), WEIGHTS))
    np.fill_diagonal(adj, 0.0)
    kwargs = {}
    if draw(st.booleans()):
        k = draw(st.integers(1, 3))
        gates = st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0))
        kwargs["routing"] = np.array(draw(st.lists(gates, min_size=t * k, max_size=t * k))).reshape(
            t, k
        )
        if draw(st.booleans()):
            kwargs["modules"] = draw(
                st.lists(
                    st.text(NAME_ALPHABET, min_size=1, max_size=5).filter(lambda m: m not in names),
                    min_size=k,
                    max_size=k,
                    unique=True,
                )
            )
    if draw(st.booleans()):
        kwargs["candidates"] = matrix(st.sampled_from([0.0, 1.0])).astype(bool)
    if draw(st.booleans()):
        kwargs["raw"] = matrix(st.one_of(st.just(0.0), WEIGHTS))
    if draw(st.booleans()):
        two_way = (adj != 0) & (adj.T != 0)
        kwargs["undirected"] = two_way & matrix(st.sampled_from([0.0, 1.0])).astype(bool)
        kwargs["undirected"] &= kwargs["undirected"].T
    kwargs["meta"] = draw(st.dictionaries(META_KEYS, META_VALUES, max_size=3))
    kwargs["learned"] = draw(st.booleans())
    return TaskGraph(adj, names, **kwargs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(task_graphs())
def test_property_round_trips(g):
    assert TaskGraph.from_networkx(g.to_networkx()) == g
    assert TaskGraph.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    ei, w = g.to_edge_index(dtype=torch.float64)
    assert np.array_equal(TaskGraph.from_edge_index(ei, w, g.names).adjacency, g.adjacency)
    with tempfile.TemporaryDirectory() as d:
        for fmt in LOADABLE_FORMATS:
            loaded = TaskGraph.load(g.save(Path(d) / f"g{SUFFIXES[fmt]}"))
            assert loaded == g, fmt
            assert loaded.names == g.names
        _check_dot(g, g.save(Path(d) / "g.dot").read_text(encoding="utf-8"))
        assert _read_csv(g.save(Path(d) / "g.csv")) == _csv_rows(g)


@settings(max_examples=40, deadline=None)
@given(task_graphs())
def test_property_to_dag(g):
    dag = g.to_dag()
    assert dag.is_dag()
    order = dag.topological_order()
    pos = {n: i for i, n in enumerate(order)}
    assert all(pos[u] < pos[v] for u, v, _ in dag.edges())
    assert dag.undirected is None
    kept = dag.adjacency != 0
    assert np.array_equal(dag.adjacency[kept], g.adjacency[kept])  # only removes edges
    assert (g.adjacency != 0)[kept].all()
    if g.is_dag():  # undirected edges are oriented, nothing else removed
        assert dag.n_edges == g.n_edges - g.n_undirected
        if g.undirected is None:
            assert dag == g
