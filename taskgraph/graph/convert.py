"""The networkx schema of a task graph, shared by :meth:`TaskGraph.to_networkx` and every file.

A :class:`~taskgraph.graph.TaskGraph` becomes a ``networkx.DiGraph``:

- nodes are the task names (node id *and* ``label`` attribute) with ``kind="task"`` and ``index``
  (position in the task order), then the modules with ``kind="module"``;
- edges exist only for non-zero weights: task edges have ``kind="task"``, ``weight`` and, when
  given, ``raw``, ``confidence`` and ``candidate``; when the graph has undirected edges, every
  task edge has the boolean ``undirected`` (``True`` on both directions ``i -> j`` and ``j -> i``
  of an undirected edge ``i — j``); routing edges go module → task with ``kind="routing"`` and
  ``weight`` = gate;
- graph attributes are the meta items, ``learned`` and the JSON strings ``taskgraph_candidates``
  (``[src, dst]`` index pairs of the candidate mask), ``taskgraph_raw`` (the ``[T][T]`` raw
  matrix) and ``taskgraph_confidence`` (the ``[T][T]`` confidence matrix), so values of absent
  edges need no phantom edges.

Files add an exact graph-level record (:func:`_file_graph`, :func:`_header_native`):
``taskgraph_version``, ``learned``, ``taskgraph_meta`` (the meta with its types) and the three
index-based attributes above. :func:`from_networkx` reads both this schema and plain directed
graphs (every node a task, a missing ``weight`` is 1); the helpers after it are shared by the
file readers.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np

from taskgraph.exceptions import GraphFormatError, UnknownTaskError, ValidationError
from taskgraph.graph.validation import (
    _META_PREFIX,
    _META_RESERVED,
    _bad_char,
    _float_matrix,
    _is_int,
    _json_dumps,
    _validate_names,
)
from taskgraph.tasks import TaskSet

if TYPE_CHECKING:  # pragma: no cover
    from taskgraph.graph.core import TaskGraph

FORMAT_VERSION = 1
"""Version of the taskgraph file layout written by :meth:`TaskGraph.save`."""

# Graph attributes added by networkx readers, never meta.
_NX_READER_KEYS = frozenset({"node_default", "edge_default"})
# Graph attributes some networkx writers treat specially (GraphML pops "id").
_XML_UNSAFE_KEYS = frozenset({"id", "node_default", "edge_default", "mode", "name"})


# --------------------------------------------------------------------------------------------
# TaskGraph -> networkx
# --------------------------------------------------------------------------------------------


def to_networkx(graph: TaskGraph) -> nx.DiGraph:
    """The ``networkx.DiGraph`` of :meth:`TaskGraph.to_networkx` (python-native attributes)."""
    names, modules, adj = graph._names, graph._modules, graph._adj
    g = nx.DiGraph()
    g.graph.update(graph._meta)
    g.graph["learned"] = graph._learned
    if graph._cand is not None:
        g.graph["taskgraph_candidates"] = _json_dumps(_candidate_pairs(graph))
    if graph._raw is not None:
        g.graph["taskgraph_raw"] = _json_dumps(graph._raw.tolist())
    if graph._conf is not None:
        g.graph["taskgraph_confidence"] = _json_dumps(graph._conf.tolist())
    for i, name in enumerate(names):
        g.add_node(name, kind="task", index=i, label=name)
    for k, name in enumerate(modules):
        g.add_node(name, kind="module", index=k, label=name)
    src, dst = np.nonzero(adj)
    for i, j in zip(src.tolist(), dst.tolist()):
        attrs: dict[str, Any] = {"weight": float(adj[i, j]), "kind": "task"}
        if graph._raw is not None:
            attrs["raw"] = float(graph._raw[i, j])
        if graph._conf is not None:
            attrs["confidence"] = float(graph._conf[i, j])
        if graph._cand is not None:
            attrs["candidate"] = bool(graph._cand[i, j])
        if graph._undir is not None:
            attrs["undirected"] = bool(graph._undir[i, j])
        g.add_edge(names[i], names[j], **attrs)
    if graph._routing is not None:
        mod, task = np.nonzero(graph._routing.T)
        for k, t in zip(mod.tolist(), task.tolist()):
            g.add_edge(
                modules[k], names[t], weight=float(graph._routing[t, k]), kind="routing"
            )
    return g


def _candidate_pairs(graph: TaskGraph) -> list[list[int]]:
    assert graph._cand is not None
    return [[int(i), int(j)] for i, j in zip(*np.nonzero(graph._cand))]


def _file_graph(graph: TaskGraph, *, xml_safe: bool) -> nx.DiGraph:
    """:func:`to_networkx` plus the exact graph-level record used by every file format.

    With ``xml_safe`` the readable copies of the meta items leave out keys that networkx XML
    writers treat specially and values XML cannot hold (``taskgraph_meta`` keeps them all).
    """
    g = to_networkx(graph)
    header: dict[str, Any] = {
        "taskgraph_version": FORMAT_VERSION,
        "learned": graph._learned,
        "taskgraph_meta": _json_dumps(graph._meta),
    }
    for key in ("taskgraph_candidates", "taskgraph_raw", "taskgraph_confidence"):
        if key in g.graph:
            header[key] = g.graph[key]
    readable = {
        k: v
        for k, v in graph._meta.items()
        if not xml_safe
        or (
            k not in _XML_UNSAFE_KEYS
            and _bad_char(k) is None
            and not (isinstance(v, str) and _bad_char(v) is not None)
        )
    }
    g.graph.clear()
    g.graph.update(header)
    g.graph.update(readable)
    return g


def _header_native(graph: TaskGraph) -> dict[str, Any]:
    """Graph-level record with native JSON values (node-link JSON, GEXF description)."""
    header: dict[str, Any] = {
        "taskgraph_version": FORMAT_VERSION,
        "learned": graph._learned,
        "taskgraph_meta": dict(graph._meta),
    }
    if graph._cand is not None:
        header["taskgraph_candidates"] = _candidate_pairs(graph)
    if graph._raw is not None:
        header["taskgraph_raw"] = graph._raw.tolist()
    if graph._conf is not None:
        header["taskgraph_confidence"] = graph._conf.tolist()
    return header


# --------------------------------------------------------------------------------------------
# networkx -> TaskGraph
# --------------------------------------------------------------------------------------------


def _edge_matrix(gattrs: dict[str, Any], key: str, edges: dict[tuple[int, int], float],
                 n: int) -> np.ndarray | None:
    """A ``[n, n]`` float matrix kept beside the adjacency (``raw``, ``confidence``): the whole
    matrix from the graph attribute ``key`` (a JSON string) when present, else the per-edge
    values (0 elsewhere), else ``None``."""
    if gattrs.get(key) is not None:
        return _float_matrix(_maybe_json(gattrs[key], key), key, n, n)
    if not edges:
        return None
    out = np.zeros((n, n))
    for (i, j), value in edges.items():
        out[i, j] = value
    return out


def from_networkx(
    cls: type[TaskGraph], g: Any, tasks: TaskSet | Sequence[str] | None, *, strict: bool
) -> TaskGraph:
    """Build a ``cls`` from ``g`` (see :meth:`TaskGraph.from_networkx`).

    Args:
        cls: the class to build (:class:`TaskGraph` or a subclass).
        g: the graph.
        tasks: task order, or ``None`` for the nodes' ``index`` order (else the node order).
        strict: ``True`` for files written by taskgraph: every node and edge must carry a
            ``kind`` and every edge a ``weight``, and the ``index`` attributes must number the
            nodes.
    """
    if not isinstance(g, nx.Graph):
        raise ValidationError(f"g: expected a networkx.DiGraph, got {type(g).__name__}")
    if g.is_multigraph():
        raise GraphFormatError("g: a multigraph (parallel edges) is not a task graph")
    if not g.is_directed():
        raise GraphFormatError("g: expected a directed graph, got an undirected one")
    gattrs = dict(g.graph)
    version = gattrs.get("taskgraph_version")
    if version is not None and (not _is_int(version) or version > FORMAT_VERSION):
        raise GraphFormatError(
            f"unsupported taskgraph_version {version!r}: written by a newer taskgraph "
            f"(this version reads <= {FORMAT_VERSION})"
        )

    task_nodes: list[tuple[str, Any]] = []
    module_nodes: list[tuple[str, Any]] = []
    for node, data in g.nodes(data=True):
        if not isinstance(node, str):
            raise GraphFormatError(
                f"node ids must be task names (str), got {type(node).__name__} {node!r}; "
                "relabel the graph first (networkx.relabel_nodes)"
            )
        kind = data.get("kind")
        if kind is None:
            if strict:
                raise GraphFormatError(
                    f"node {node!r} has no 'kind' attribute: an edge refers to a node that "
                    "is not declared, or the file was edited"
                )
            kind = "task"
        if kind == "task":
            task_nodes.append((node, data.get("index")))
        elif kind == "module":
            module_nodes.append((node, data.get("index")))
        else:
            raise GraphFormatError(
                f"node {node!r}: unknown kind {kind!r} (expected 'task' or 'module')"
            )
    # Index-based graph attributes (taskgraph_raw, taskgraph_confidence, taskgraph_candidates)
    # refer to this order.
    natural = _node_order(task_nodes, "task", strict)
    if tasks is None:
        names = natural
    else:
        names = _validate_names(tasks)
        present = {n for n, _ in task_nodes}
        missing = [n for n in names if n not in present]
        if missing:
            raise UnknownTaskError(f"tasks: {missing} are not task nodes of the graph")
        extra = [n for n, _ in task_nodes if n not in set(names)]
        if extra:
            raise UnknownTaskError(f"g: task nodes {extra} are not in tasks")
    if not names:
        raise GraphFormatError("the graph has no task nodes")
    modules = _node_order(module_nodes, "module", strict)

    t_index = {name: i for i, name in enumerate(names)}
    m_index = {name: k for k, name in enumerate(modules)}
    n, n_mod = len(names), len(modules)
    adj = np.zeros((n, n))
    routing = np.zeros((n, n_mod)) if n_mod else None
    raw_edges: dict[tuple[int, int], float] = {}
    conf_edges: dict[tuple[int, int], float] = {}
    cand_edges: dict[tuple[int, int], bool] = {}
    undirected = np.zeros((n, n), dtype=bool)
    default_weight = None if strict else 1.0
    for u, v, data in g.edges(data=True):
        kind = data.get("kind")
        if kind is None and strict:
            raise GraphFormatError(f"edge {u!r} -> {v!r} has no 'kind' attribute")
        if u in t_index and v in t_index:
            i, j = t_index[u], t_index[v]
            if kind == "candidate":
                cand_edges[i, j] = True
                continue
            if kind not in (None, "task"):
                raise GraphFormatError(
                    f"edge {u!r} -> {v!r} between tasks has kind {kind!r} (expected 'task')"
                )
            adj[i, j] = _edge_float(data, "weight", u, v, default_weight)
            if "raw" in data:
                raw_edges[i, j] = _edge_float(data, "raw", u, v, None)
            if "confidence" in data:
                conf_edges[i, j] = _edge_float(data, "confidence", u, v, None)
            if "candidate" in data:
                cand_edges[i, j] = _parse_bool(data["candidate"], f"edge {u!r} -> {v!r}: candidate")
            if "undirected" in data:
                undirected[i, j] = _parse_bool(
                    data["undirected"], f"edge {u!r} -> {v!r}: undirected"
                )
        elif u in m_index and v in t_index:
            if kind not in (None, "routing"):
                raise GraphFormatError(
                    f"edge {u!r} -> {v!r} from a module has kind {kind!r} (expected 'routing')"
                )
            assert routing is not None
            routing[t_index[v], m_index[u]] = _edge_float(data, "weight", u, v, default_weight)
        elif u in t_index and v in m_index:
            raise GraphFormatError(
                f"edge {u!r} -> {v!r} goes from a task to a module; routing edges go "
                "module -> task"
            )
        else:
            raise GraphFormatError(f"edge {u!r} -> {v!r} connects two modules")

    learned = _parse_bool(gattrs.get("learned", True), "learned")
    raw = _edge_matrix(gattrs, "taskgraph_raw", raw_edges, n)
    confidence = _edge_matrix(gattrs, "taskgraph_confidence", conf_edges, n)
    candidates: Any = None
    if gattrs.get("taskgraph_candidates") is not None:
        pairs = _maybe_json(gattrs["taskgraph_candidates"], "taskgraph_candidates")
        candidates = _pairs_to_mask(pairs, n)
    elif cand_edges:
        candidates = np.zeros((n, n), dtype=bool)
        for (i, j), value in cand_edges.items():
            candidates[i, j] = value
    if names != natural:
        perm = [natural.index(name) for name in names]
        if gattrs.get("taskgraph_raw") is not None:
            raw = raw[np.ix_(perm, perm)]
        if gattrs.get("taskgraph_confidence") is not None:
            confidence = confidence[np.ix_(perm, perm)]
        if gattrs.get("taskgraph_candidates") is not None:
            candidates = candidates[np.ix_(perm, perm)]
    return cls(
        adj,
        names,
        routing=routing,
        modules=modules or None,
        candidates=candidates,
        learned=learned,
        meta=_graph_meta(gattrs),
        raw=raw,
        undirected=undirected,
        confidence=confidence,
    )


def _graph_meta(gattrs: Mapping[str, Any]) -> dict[str, Any]:
    """The meta: the JSON object ``taskgraph_meta``, else every plain graph attribute."""
    if gattrs.get("taskgraph_meta") is not None:
        meta = _maybe_json(gattrs["taskgraph_meta"], "taskgraph_meta")
        if not isinstance(meta, dict):
            raise GraphFormatError("taskgraph_meta: expected a JSON object")
        return meta
    meta = {}
    for key, value in gattrs.items():
        if key in _META_RESERVED or key in _NX_READER_KEYS:
            continue
        if isinstance(key, str) and key.startswith(_META_PREFIX):
            continue
        if not isinstance(value, (str, bool, numbers.Real, np.bool_)):
            raise GraphFormatError(
                f"graph attribute {key!r} has type {type(value).__name__}; graph "
                "attributes become meta, whose values must be str, int, float or bool"
            )
        meta[key] = value
    return meta


# --------------------------------------------------------------------------------------------
# helpers of from_networkx and the file readers
# --------------------------------------------------------------------------------------------


def _node_order(nodes: list[tuple[str, Any]], what: str, strict: bool) -> list[str]:
    """Order nodes by their ``index`` attributes when these number them 0..n-1."""
    indices = [idx for _, idx in nodes]
    if all(_is_int(i) for i in indices) and sorted(indices) == list(range(len(nodes))):
        return [name for name, _ in sorted(nodes, key=lambda item: item[1])]
    if strict and nodes:
        raise GraphFormatError(
            f"the 'index' attributes of the {what} nodes do not number them 0..{len(nodes) - 1}"
        )
    return [name for name, _ in nodes]


def _edge_float(data: Mapping[str, Any], key: str, u: str, v: str, default: float | None) -> float:
    if key not in data:
        if default is None:
            raise GraphFormatError(f"edge {u!r} -> {v!r} has no {key!r} attribute")
        return default
    value = data[key]
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        out = float(value)
    except (TypeError, ValueError):
        raise GraphFormatError(
            f"edge {u!r} -> {v!r}: {key} must be a number, got {value!r}"
        ) from None
    if not math.isfinite(out):
        raise GraphFormatError(f"edge {u!r} -> {v!r}: {key} must be finite, got {value!r}")
    return out


def _parse_bool(value: Any, what: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if _is_int(value) and value in (0, 1):
        return bool(value)
    raise GraphFormatError(f"{what}: expected a boolean, got {value!r}")


def _maybe_json(value: Any, what: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise GraphFormatError(f"{what}: invalid JSON ({exc})") from None
    return value


def _pairs_to_mask(pairs: Any, n: int) -> np.ndarray:
    mask = np.zeros((n, n), dtype=bool)
    if not isinstance(pairs, list):
        raise GraphFormatError("taskgraph_candidates: expected a list of [source, target] pairs")
    for pair in pairs:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(_is_int(x) and 0 <= x < n for x in pair)
        ):
            raise GraphFormatError(
                f"taskgraph_candidates: expected [source, target] index pairs in [0, {n}), "
                f"got {pair!r}"
            )
        mask[pair[0], pair[1]] = True
    return mask
