r"""The task graph: a learned causal graph over the tasks of a multi-task problem.

A :class:`TaskGraph` holds a weighted adjacency matrix ``A[src, dst]`` over the tasks (``A[i, j]
!= 0`` means task ``i`` → task ``j``, as in PyG, networkx and NOTEARS; weights are float and may be
negative), the task names in their fixed order, and optionally

- ``routing[T, K]``: MT-CRL gates in ``[0, 1]``, how much task ``t`` reads encoder module ``k``,
  exported as *module → task* edges;
- ``candidates[T, T]``: the boolean search space of structure learning;
- ``raw[T, T]``: un-thresholded weights (e.g. edge probabilities) kept beside the adjacency;
- ``meta``: graph-level attributes (method, seed, threshold, ...) with str/int/float/bool values;
- ``learned``: ``False`` for learners without structure (an empty graph flagged as not learned).

Conversions: dense numpy/torch, PyG ``edge_index`` (``flow="source_to_target"``), networkx, and the
files GraphML, GEXF, node-link JSON, DOT and CSV. Every conversion keeps task names verbatim and
float64 weights bit-exact.

**Task names** are any non-empty strings (unicode, spaces, quotes, commas, ``<``, ``&``,
backslashes) *without control characters* (Unicode category ``Cc``: newline, tab, ``\x00``, ...),
lone surrogates or the non-characters ``U+FFFE``/``U+FFFF``: those cannot be stored in XML 1.0
(GraphML, GEXF) and would be altered by line-based tools, so the constructor rejects them.

**File formats** (the suffix picks one: ``.graphml``, ``.gexf``, ``.json``, ``.dot``/``.gv``,
``.csv``). Every file is written atomically (:func:`taskgraph._io.atomic_write`) and a file written
by :meth:`TaskGraph.save` loads back to an equal graph.

- Nodes are the task names (node id *and* ``label`` attribute), with ``kind="task"`` and
  ``index`` (position in the task order). Modules are nodes with ``kind="module"``.
- Edges exist only for non-zero weights: task edges have ``kind="task"``, ``weight`` (double) and,
  when given, ``raw`` (double) and ``candidate`` (bool); routing edges go module → task with
  ``kind="routing"`` and ``weight`` = gate. No zero-weight edges are ever written, so Gephi and
  Cytoscape draw exactly the edges of the graph.
- Graph-level data that are not edges are graph attributes with JSON strings (exact, ASCII-only):
  ``taskgraph_version`` (int), ``learned`` (bool), ``taskgraph_meta`` (JSON object, the exact meta
  with types), ``taskgraph_candidates`` (JSON list of ``[src, dst]`` index pairs of the candidate
  mask, so candidate-but-absent pairs need no phantom edges), ``taskgraph_raw`` (JSON ``[T][T]``
  matrix, so raw values of absent edges survive; indices follow the nodes' ``index`` order).
  GraphML also writes each meta item as a plain graph attribute for readability (except keys
  networkx writers treat specially, e.g. ``id``); on load ``taskgraph_meta`` wins.
- GEXF has no graph attributes: the same graph-level object is stored as JSON in the GEXF
  ``<meta><description>`` element.
- Node-link JSON (``networkx.node_link_data(g, edges="edges")``, ``"directed": true``) stores the
  graph-level values as native JSON and carries a top-level ``"taskgraph": {"version": 1}``.
- DOT is written and parsed by this module (no pydot/pygraphviz needed). Node ids and all values
  are quoted; inside quotes ``\`` is written ``\\`` and ``"`` is written ``\"`` (so Graphviz labels
  render names correctly). Only the graph-level record is written as graph attributes (Graphviz
  gives meaning to names like ``size``), plus drawing hints (``color``, ``penwidth``, ``shape``).
  The reader parses the DOT subset it writes (plus comments, unquoted ids, ``node``/``edge``
  defaults and edge chains); subgraphs and ports are rejected.
- CSV has the header ``source,target,weight,kind,raw`` and one row per item, distinguished by
  ``kind``: ``graph`` rows (``source`` = ``taskgraph_version``/``learned``/``raw``/``candidates``,
  ``target`` = value), ``meta`` rows (``source`` = key, ``target`` = JSON value), ``node`` rows
  (one per task, in order, so isolated tasks survive), ``module`` rows, ``task`` edges
  (``raw`` column filled when raw weights exist), ``routing`` edges (``source`` = module),
  ``candidate`` rows (one per candidate pair) and ``raw`` rows (raw values of absent edges).

Weights are written with :func:`repr`, which round-trips every float64 exactly. Files not written by
taskgraph load too when they are plain directed graphs (every node a task, missing ``weight`` = 1).
"""

from __future__ import annotations

import csv
import heapq
import io
import json
import math
import numbers
import os
import re
import textwrap
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal
from xml.sax.saxutils import escape as _xml_escape

import networkx as nx
import numpy as np
import torch

from taskgraph._io import atomic_write
from taskgraph.exceptions import (
    CycleError,
    GraphFileError,
    GraphFormatError,
    UnknownTaskError,
    ValidationError,
)
from taskgraph.tasks import TaskSet

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["TaskGraph", "SUPPORTED_FORMATS", "FORMAT_VERSION"]

FORMAT_VERSION = 1
"""Version of the taskgraph file layout written by :meth:`TaskGraph.save`."""

SUPPORTED_FORMATS: tuple[str, ...] = ("graphml", "gexf", "json", "dot", "csv")
"""File formats of :meth:`TaskGraph.save` / :meth:`TaskGraph.load`."""

_SUFFIX_FORMATS = {
    ".graphml": "graphml",
    ".gexf": "gexf",
    ".json": "json",
    ".dot": "dot",
    ".gv": "dot",
    ".csv": "csv",
}
_FORMAT_ALIASES = {"node-link": "json", "node_link": "json", "nodelink": "json", "gv": "dot"}

_META_RESERVED = frozenset({"learned"})
_META_PREFIX = "taskgraph"
# Graph attributes added by networkx readers, never meta.
_NX_READER_KEYS = frozenset({"node_default", "edge_default"})
# Graph attributes some networkx writers treat specially (GraphML pops "id").
_XML_UNSAFE_KEYS = frozenset({"id", "node_default", "edge_default", "mode", "name"})

_POS_COLOR = "#1f77b4"
_NEG_COLOR = "#d62728"
_ROUTING_COLOR = "#7f7f7f"
_TASK_FILL = "#cfe2f3"
_MODULE_FILL = "#fce5cd"

MetaValue = str | int | float | bool


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _bad_char(text: str) -> str | None:
    """First character of ``text`` that cannot live in a task name (or ``None``)."""
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cs") or ch in "\ufffe\uffff":
            return ch
    return None


def _has_surrogate(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cs" for ch in text)


def _check_name(name: Any, arg: str, what: str) -> str:
    if not isinstance(name, str):
        raise ValidationError(
            f"{arg}: {what} names must be str, got {type(name).__name__} {name!r}"
        )
    if not name:
        raise ValidationError(f"{arg}: {what} names must be non-empty strings")
    bad = _bad_char(name)
    if bad is not None:
        raise ValidationError(
            f"{arg}: {what} name {name!r} contains the character U+{ord(bad):04X}; names may not "
            "hold control characters, surrogates or U+FFFE/U+FFFF (they cannot be stored in "
            "GraphML/GEXF/CSV/DOT files)"
        )
    return str(name)


def _validate_names(tasks: Any, arg: str = "tasks", what: str = "task") -> list[str]:
    if isinstance(tasks, TaskSet):
        names = list(tasks.names)
    elif isinstance(tasks, (str, bytes)) or not isinstance(tasks, Iterable):
        raise ValidationError(
            f"{arg}: expected a TaskSet or a sequence of {what} names, got {type(tasks).__name__}"
        )
    else:
        names = list(tasks)
    names = [_check_name(n, arg, what) for n in names]
    if not names and what == "task":
        raise ValidationError(f"{arg}: a task graph needs at least one task")
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    dupes = sorted(n for n, c in counts.items() if c > 1)
    if dupes:
        raise UnknownTaskError(f"{arg}: duplicate {what} names {dupes}")
    return names


def _as_array(value: Any, arg: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.is_complex():
            raise ValidationError(f"{arg}: expected a real-valued array, got dtype {t.dtype}")
        if t.dtype == torch.bool or not t.is_floating_point():
            return t.numpy()  # bool and integer tensors keep their dtype
        return t.to(torch.float64).numpy()
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and other junk
        raise ValidationError(f"{arg}: cannot convert to an array ({exc})") from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise ValidationError(f"{arg}: expected a numeric array, got dtype {arr.dtype}")
    return arr


def _float_matrix(value: Any, arg: str, n_rows: int, n_cols: int | None) -> np.ndarray:
    """Validate a 2-D finite float array; return a read-only float64 copy (-0.0 made 0.0)."""
    arr = _as_array(value, arg)
    if arr.ndim != 2 or arr.shape[0] != n_rows or (n_cols is not None and arr.shape[1] != n_cols):
        want = f"[{n_rows}, {n_cols if n_cols is not None else 'K'}]"
        raise ValidationError(f"{arg}: expected shape {want}, got {list(arr.shape)}")
    out = arr.astype(np.float64) + 0.0
    finite = np.isfinite(out)
    if not finite.all():
        i, j = np.argwhere(~finite)[0]
        raise ValidationError(f"{arg}: entries must be finite, found {out[i, j]} at [{i}, {j}]")
    out.setflags(write=False)
    return out


def _bool_matrix(value: Any, arg: str, n: int) -> np.ndarray:
    arr = _as_array(value, arg)
    if arr.shape != (n, n):
        raise ValidationError(f"{arg}: expected shape [{n}, {n}], got {list(arr.shape)}")
    if arr.dtype != np.bool_:
        if not np.isin(arr, (0, 1)).all():
            raise ValidationError(f"{arg}: expected a boolean mask (or 0/1 values)")
    out = arr.astype(bool)
    out.setflags(write=False)
    return out


def _meta_value(key: str, value: Any) -> MetaValue:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (str, np.str_)):
        if _has_surrogate(value):
            raise ValidationError(f"meta: value of {key!r} holds a lone surrogate")
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        if not math.isfinite(v):
            raise ValidationError(f"meta: value of {key!r} must be finite, got {v}")
        return v
    raise ValidationError(
        f"meta: value of {key!r} must be str, int, float or bool, got {type(value).__name__}"
    )


def _validate_meta(meta: Any) -> dict[str, MetaValue]:
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise ValidationError(f"meta: expected a dict, got {type(meta).__name__}")
    out: dict[str, MetaValue] = {}
    for key, value in meta.items():
        if not isinstance(key, str) or not key or _bad_char(key) is not None:
            raise ValidationError(
                f"meta: keys must be non-empty strings without control characters, got {key!r}"
            )
        if key in _META_RESERVED or key.startswith(_META_PREFIX):
            raise ValidationError(
                f"meta: key {key!r} is reserved ('learned' and keys starting with 'taskgraph')"
            )
        out[key] = _meta_value(key, value)
    return out


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def _json_dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))


# --------------------------------------------------------------------------------------------
# graph algorithms on boolean masks (indices, deterministic)
# --------------------------------------------------------------------------------------------


def _find_cycle(mask: np.ndarray) -> list[int] | None:
    """A directed cycle ``[v0, ..., vk]`` (edges ``v_i -> v_{i+1}`` and ``vk -> v0``) or None.

    Depth-first search from the lowest index, successors in index order: deterministic.
    """
    n = mask.shape[0]
    succ = [np.flatnonzero(mask[i]).tolist() for i in range(n)]
    color = [0] * n  # 0 new, 1 on stack, 2 done
    parent = [-1] * n
    for start in range(n):
        if color[start]:
            continue
        color[start] = 1
        stack = [(start, iter(succ[start]))]
        while stack:
            v, it = stack[-1]
            for w in it:
                if color[w] == 0:
                    color[w] = 1
                    parent[w] = v
                    stack.append((w, iter(succ[w])))
                    break
                if color[w] == 1:
                    cycle = [v]
                    while cycle[-1] != w:
                        cycle.append(parent[cycle[-1]])
                    return cycle[::-1]
            else:
                color[v] = 2
                stack.pop()
    return None


def _kahn_order(mask: np.ndarray) -> list[int]:
    """Topological order (lowest index first among ready nodes); shorter than n if cyclic."""
    n = mask.shape[0]
    indeg = mask.sum(axis=0).astype(int).tolist()
    ready = [i for i in range(n) if indeg[i] == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        v = heapq.heappop(ready)
        order.append(v)
        for w in np.flatnonzero(mask[v]).tolist():
            indeg[w] -= 1
            if indeg[w] == 0:
                heapq.heappush(ready, w)
    return order


def _generations(mask: np.ndarray) -> list[int]:
    """Longest-path layer of every node of a DAG (roots are layer 0)."""
    layer = [0] * mask.shape[0]
    for v in _kahn_order(mask):
        for w in np.flatnonzero(mask[v]).tolist():
            layer[w] = max(layer[w], layer[v] + 1)
    return layer


# --------------------------------------------------------------------------------------------
# the class
# --------------------------------------------------------------------------------------------


class TaskGraph:
    r"""A weighted causal graph over tasks, with optional task → module routing.

    Orientation follows PyG, networkx and NOTEARS: ``adjacency[i, j] != 0`` is the edge
    task ``i`` → task ``j`` (``i`` causes / sends messages to ``j``). Instances are immutable
    values: every method that changes the graph returns a new one.

    Args:
        adjacency (array-like): ``[T, T]`` float weights (numpy, torch or nested lists; bool is
            read as 0/1). Finite, zero diagonal. An edge is present where the weight is not 0.
        tasks (TaskSet or sequence of str): the ``T`` unique task names, in node order.
        routing (array-like, optional): ``[T, K]`` gates in ``[0, 1]``; ``routing[t, k]`` is how
            much task ``t`` reads encoder module ``k`` (MT-CRL).
        modules (sequence of str, optional): the ``K`` module names (default ``module_0`` ...
            ``module_{K-1}``); must differ from the task names. Only with ``routing``.
        candidates (array-like, optional): ``[T, T]`` boolean mask of candidate edges (the search
            space of structure learning).
        learned (bool): ``False`` for learners without a learned structure. (default: ``True``)
        meta (dict, optional): graph-level attributes with str, int, float (finite) or bool
            values; keys ``learned`` and ``taskgraph*`` are reserved.
        raw (array-like, optional): ``[T, T]`` finite un-thresholded weights (e.g. edge
            probabilities), kept beside the thresholded adjacency.

    Raises:
        ValidationError: on a bad argument; the message names it.
        UnknownTaskError: on duplicate task or module names.

    Example:
        >>> g = TaskGraph([[0, 0.8], [0, 0]], ["a", "b"], meta={"method": "gcnet"})
        >>> g.edges()
        [('a', 'b', 0.8)]
        >>> g
        TaskGraph(tasks=2, edges=1, learned=True)
    """

    __slots__ = (
        "_names",
        "_index",
        "_adj",
        "_routing",
        "_modules",
        "_cand",
        "_learned",
        "_meta",
        "_raw",
    )

    def __init__(
        self,
        adjacency: Any,
        tasks: TaskSet | Sequence[str],
        *,
        routing: Any = None,
        modules: Sequence[str] | None = None,
        candidates: Any = None,
        learned: bool = True,
        meta: Mapping[str, Any] | None = None,
        raw: Any = None,
    ) -> None:
        names = _validate_names(tasks)
        n = len(names)
        adj = _float_matrix(adjacency, "adjacency", n, n)
        diag = np.flatnonzero(np.diag(adj))
        if diag.size:
            d = int(diag[0])
            raise ValidationError(
                f"adjacency: the diagonal must be 0 (no self-loops); task {names[d]!r} has "
                f"weight {adj[d, d]!r} on itself"
            )
        if routing is None:
            if modules is not None:
                raise ValidationError("modules: given without routing")
            routing_arr, module_names = None, []
        else:
            routing_arr = _float_matrix(routing, "routing", n, None)
            k = routing_arr.shape[1]
            if k == 0:
                raise ValidationError("routing: expected at least one module column, got [T, 0]")
            if ((routing_arr < 0) | (routing_arr > 1)).any():
                i, j = np.argwhere((routing_arr < 0) | (routing_arr > 1))[0]
                raise ValidationError(
                    f"routing: gates must lie in [0, 1], found {routing_arr[i, j]} at [{i}, {j}]"
                )
            if modules is None:
                module_names = [f"module_{m}" for m in range(k)]
            else:
                module_names = _validate_names(modules, "modules", "module")
                if len(module_names) != k:
                    raise ValidationError(
                        f"modules: expected {k} names (routing has {k} columns), "
                        f"got {len(module_names)}"
                    )
            clash = sorted(set(module_names) & set(names))
            if clash:
                raise ValidationError(
                    f"modules: module names {clash} are also task names; pass distinct modules="
                )
        if not isinstance(learned, (bool, np.bool_)):
            raise ValidationError(f"learned: expected a bool, got {type(learned).__name__}")
        self._names: list[str] = names
        self._index: dict[str, int] = {name: i for i, name in enumerate(names)}
        self._adj: np.ndarray = adj
        self._routing: np.ndarray | None = routing_arr
        self._modules: list[str] = module_names
        self._cand: np.ndarray | None = (
            None if candidates is None else _bool_matrix(candidates, "candidates", n)
        )
        self._learned: bool = bool(learned)
        self._meta: dict[str, MetaValue] = _validate_meta(meta)
        self._raw: np.ndarray | None = None if raw is None else _float_matrix(raw, "raw", n, n)

    # ---------------------------------------------------------------- constructors

    @classmethod
    def from_dense(cls, adjacency: Any, tasks: TaskSet | Sequence[str], **kwargs: Any) -> TaskGraph:
        """Build from a dense ``[T, T]`` matrix ``A[src, dst]`` (same as the constructor)."""
        return cls(adjacency, tasks, **kwargs)

    @classmethod
    def empty(
        cls, tasks: TaskSet | Sequence[str], learned: bool = False, **kwargs: Any
    ) -> TaskGraph:
        """A graph without edges over ``tasks``; by default flagged as not learned."""
        n = len(_validate_names(tasks))
        return cls(np.zeros((n, n)), tasks, learned=learned, **kwargs)

    @classmethod
    def from_edge_index(
        cls,
        edge_index: Any,
        edge_weight: Any,
        tasks: TaskSet | Sequence[str],
        **kwargs: Any,
    ) -> TaskGraph:
        """Build from a PyG ``edge_index`` (``flow="source_to_target"``).

        Args:
            edge_index (LongTensor or array): ``[2, E]``; column ``(i, j)`` is the edge i → j.
            edge_weight (Tensor or array, optional): ``[E]`` weights; ``None`` means all 1.
            tasks (TaskSet or sequence of str): the ``T`` task names; indices refer to them.
            **kwargs: further constructor arguments (``routing``, ``meta``, ...).

        Raises:
            ValidationError: on a bad shape, an index outside ``[0, T)``, a duplicate edge or a
                non-finite weight.
        """
        names = _validate_names(tasks)
        n = len(names)
        ei = _as_array(edge_index, "edge_index")
        if ei.ndim != 2 or ei.shape[0] != 2:
            raise ValidationError(f"edge_index: expected shape [2, E], got {list(ei.shape)}")
        if ei.dtype.kind not in "iu":
            raise ValidationError(f"edge_index: expected an integer array, got dtype {ei.dtype}")
        ei = ei.astype(np.int64)
        n_edges = ei.shape[1]
        if n_edges and (ei.min() < 0 or ei.max() >= n):
            raise ValidationError(
                f"edge_index: node indices must lie in [0, {n}) for {n} tasks, "
                f"got range [{ei.min()}, {ei.max()}]"
            )
        if edge_weight is None:
            w = np.ones(n_edges)
        else:
            w = _as_array(edge_weight, "edge_weight").astype(np.float64)
            if w.shape != (n_edges,):
                raise ValidationError(
                    f"edge_weight: expected shape [{n_edges}] (one per edge_index column), "
                    f"got {list(w.shape)}"
                )
            if not np.isfinite(w).all():
                raise ValidationError("edge_weight: weights must be finite")
        flat = ei[0] * n + ei[1]
        uniq, counts = np.unique(flat, return_counts=True)
        if (counts > 1).any():
            dup = int(uniq[counts > 1][0])
            raise ValidationError(
                f"edge_index: duplicate edge {names[dup // n]!r} -> {names[dup % n]!r}"
            )
        adj = np.zeros((n, n))
        adj[ei[0], ei[1]] = w
        return cls(adj, names, **kwargs)

    @classmethod
    def from_networkx(
        cls, g: nx.DiGraph, tasks: TaskSet | Sequence[str] | None = None
    ) -> TaskGraph:
        """Inverse of :meth:`to_networkx`.

        Nodes with ``kind="module"`` are modules; every other node (``kind="task"`` or no kind)
        is a task. Task → task edges give the adjacency (``weight``, default 1; optional ``raw``
        and ``candidate``), module → task edges the routing gates. Graph attributes give
        ``learned``, ``taskgraph_candidates``, ``taskgraph_raw`` and the meta (all other scalar
        attributes, or the JSON object ``taskgraph_meta`` when present).

        Args:
            g (networkx.DiGraph): node ids are the task (and module) names.
            tasks (TaskSet or sequence of str, optional): task order; must name exactly the task
                nodes. By default the nodes' ``index`` attributes when they number the tasks
                ``0..T-1``, else the node order.

        Raises:
            GraphFormatError: if ``g`` is not a simple directed graph with string node ids or
                its attributes are invalid.
            UnknownTaskError: if ``tasks`` and the task nodes differ.
        """
        return cls._from_nx(g, tasks, strict=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskGraph:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(data, Mapping):
            raise GraphFormatError(f"data: expected a dict, got {type(data).__name__}")
        missing = [k for k in ("names", "adjacency") if k not in data]
        if missing:
            raise GraphFormatError(f"data: missing required keys {missing}")
        version = data.get("taskgraph_version", FORMAT_VERSION)
        if not _is_int(version) or version > FORMAT_VERSION:
            raise GraphFormatError(
                f"data: unsupported taskgraph_version {version!r} (this version reads "
                f"<= {FORMAT_VERSION})"
            )
        return cls(
            data["adjacency"],
            data["names"],
            routing=data.get("routing"),
            modules=data.get("modules"),
            candidates=data.get("candidates"),
            learned=data.get("learned", True),
            meta=data.get("meta"),
            raw=data.get("raw"),
        )

    def _evolve(self, **changes: Any) -> TaskGraph:
        kwargs: dict[str, Any] = {
            "adjacency": self._adj,
            "tasks": self._names,
            "routing": self._routing,
            "modules": self._modules if self._routing is not None else None,
            "candidates": self._cand,
            "learned": self._learned,
            "meta": self._meta,
            "raw": self._raw,
        }
        kwargs.update(changes)
        return TaskGraph(kwargs.pop("adjacency"), kwargs.pop("tasks"), **kwargs)

    # ---------------------------------------------------------------- properties

    @property
    def names(self) -> list[str]:
        """The task names in node order."""
        return list(self._names)

    @property
    def n_tasks(self) -> int:
        """Number of tasks ``T``."""
        return len(self._names)

    @property
    def adjacency(self) -> np.ndarray:
        """``[T, T]`` float64 weights ``A[src, dst]`` (a copy)."""
        return self._adj.copy()

    @property
    def routing(self) -> np.ndarray | None:
        """``[T, K]`` float64 routing gates (a copy), or ``None``."""
        return None if self._routing is None else self._routing.copy()

    @property
    def modules(self) -> list[str]:
        """The ``K`` module names (empty without routing)."""
        return list(self._modules)

    @property
    def n_modules(self) -> int:
        """Number of modules ``K`` (0 without routing)."""
        return len(self._modules)

    @property
    def candidates(self) -> np.ndarray | None:
        """``[T, T]`` boolean candidate-edge mask (a copy), or ``None``."""
        return None if self._cand is None else self._cand.copy()

    @property
    def learned(self) -> bool:
        """``False`` for graphs of learners without a learned structure."""
        return self._learned

    @property
    def meta(self) -> dict[str, MetaValue]:
        """Graph-level attributes (a copy)."""
        return dict(self._meta)

    @property
    def raw(self) -> np.ndarray | None:
        """``[T, T]`` float64 un-thresholded weights (a copy), or ``None``."""
        return None if self._raw is None else self._raw.copy()

    @property
    def n_edges(self) -> int:
        """Number of task → task edges (non-zero weights)."""
        return int(np.count_nonzero(self._adj))

    def index(self, name: str) -> int:
        """Position of task ``name``; raises :class:`UnknownTaskError` naming it."""
        try:
            return self._index[name]
        except (KeyError, TypeError):
            raise UnknownTaskError(f"unknown task {name!r}; known tasks: {self._names}") from None

    def parents(self, name: str) -> list[str]:
        """Tasks with an edge into ``name``, in task order."""
        j = self.index(name)
        return [self._names[i] for i in np.flatnonzero(self._adj[:, j])]

    def children(self, name: str) -> list[str]:
        """Tasks that ``name`` has an edge into, in task order."""
        i = self.index(name)
        return [self._names[j] for j in np.flatnonzero(self._adj[i])]

    def edges(self) -> list[tuple[str, str, float]]:
        """Task edges ``(source, target, weight)`` in row-major order of the adjacency."""
        src, dst = np.nonzero(self._adj)
        return [
            (self._names[i], self._names[j], float(self._adj[i, j]))
            for i, j in zip(src.tolist(), dst.tolist())
        ]

    # ---------------------------------------------------------------- dense / PyG

    def to_numpy(self) -> np.ndarray:
        """``[T, T]`` float64 adjacency ``A[src, dst]`` (a copy)."""
        return self._adj.copy()

    def to_tensor(
        self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """``[T, T]`` adjacency as a tensor, e.g. for PyG dense layers (``adj[src, dst]``)."""
        return torch.tensor(self._adj, dtype=dtype, device=device)

    def _weights(self, weights: str) -> np.ndarray:
        if weights == "adjacency":
            return self._adj
        if weights == "raw":
            if self._raw is None:
                raise ValidationError("weights: this graph has no raw weights (raw=None)")
            return self._raw
        raise ValidationError(f"weights: expected 'adjacency' or 'raw', got {weights!r}")

    def to_edge_index(
        self,
        weights: Literal["adjacency", "raw"] = "adjacency",
        dtype: torch.dtype = torch.float32,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """PyG ``edge_index`` and ``edge_weight`` (``flow="source_to_target"``).

        Args:
            weights (str): ``"adjacency"`` (the edges) or ``"raw"`` (every non-zero raw entry,
                e.g. soft edge probabilities).
            dtype (torch.dtype): dtype of the weights. (default: ``torch.float32``)

        Returns:
            ``(edge_index, edge_weight)``: LongTensor ``[2, E]`` where column ``(i, j)`` is the
            edge i → j, in row-major order (sorted by source, then target); weights ``[E]``.
        """
        mat = self._weights(weights)
        src, dst = np.nonzero(mat)
        edge_index = torch.from_numpy(np.stack([src, dst]).astype(np.int64).reshape(2, -1))
        edge_weight = torch.from_numpy(mat[src, dst].copy()).to(dtype)
        return edge_index, edge_weight

    def routing_edge_index(
        self, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Bipartite PyG edges module → task for the non-zero routing gates.

        Returns:
            ``(edge_index, edge_weight)``: LongTensor ``[2, E]`` with row 0 the module index and
            row 1 the task index (sorted by module, then task), and gates ``[E]``.

        Raises:
            ValidationError: if the graph has no routing.
        """
        if self._routing is None:
            raise ValidationError("routing: this graph has no routing (routing=None)")
        mod, task = np.nonzero(self._routing.T)
        edge_index = torch.from_numpy(np.stack([mod, task]).astype(np.int64).reshape(2, -1))
        edge_weight = torch.from_numpy(self._routing[task, mod].copy()).to(dtype)
        return edge_index, edge_weight

    def to_dict(self) -> dict[str, Any]:
        """Plain-python form (lists, str, float, bool, None).

        Safe for JSON and for ``torch.load(..., weights_only=True)`` checkpoints; inverse of
        :meth:`from_dict`.
        """
        return {
            "taskgraph_version": FORMAT_VERSION,
            "names": list(self._names),
            "adjacency": self._adj.tolist(),
            "routing": None if self._routing is None else self._routing.tolist(),
            "modules": list(self._modules) if self._routing is not None else None,
            "candidates": None if self._cand is None else self._cand.tolist(),
            "learned": self._learned,
            "meta": dict(self._meta),
            "raw": None if self._raw is None else self._raw.tolist(),
        }

    # ---------------------------------------------------------------- networkx

    def to_networkx(self) -> nx.DiGraph:
        """A ``networkx.DiGraph`` with only python-native scalar attributes.

        Nodes: the task names in order (``kind="task"``, ``index``, ``label``), then the modules
        (``kind="module"``). Edges: task edges with ``kind="task"``, ``weight`` (python float),
        ``raw`` and ``candidate`` when given; routing edges module → task with ``kind="routing"``
        and ``weight`` = gate (non-zero gates only). Graph attributes: the meta items,
        ``learned``, and JSON strings ``taskgraph_candidates`` / ``taskgraph_raw`` when given.
        The result can be passed to ``nx.write_graphml`` directly.
        """
        g = nx.DiGraph()
        g.graph.update(self._meta)
        g.graph["learned"] = self._learned
        if self._cand is not None:
            g.graph["taskgraph_candidates"] = _json_dumps(self._candidate_pairs())
        if self._raw is not None:
            g.graph["taskgraph_raw"] = _json_dumps(self._raw.tolist())
        for i, name in enumerate(self._names):
            g.add_node(name, kind="task", index=i, label=name)
        for k, name in enumerate(self._modules):
            g.add_node(name, kind="module", index=k, label=name)
        src, dst = np.nonzero(self._adj)
        for i, j in zip(src.tolist(), dst.tolist()):
            attrs: dict[str, Any] = {"weight": float(self._adj[i, j]), "kind": "task"}
            if self._raw is not None:
                attrs["raw"] = float(self._raw[i, j])
            if self._cand is not None:
                attrs["candidate"] = bool(self._cand[i, j])
            g.add_edge(self._names[i], self._names[j], **attrs)
        if self._routing is not None:
            mod, task = np.nonzero(self._routing.T)
            for k, t in zip(mod.tolist(), task.tolist()):
                g.add_edge(
                    self._modules[k],
                    self._names[t],
                    weight=float(self._routing[t, k]),
                    kind="routing",
                )
        return g

    def _candidate_pairs(self) -> list[list[int]]:
        assert self._cand is not None
        return [[int(i), int(j)] for i, j in zip(*np.nonzero(self._cand))]

    @classmethod
    def _from_nx(cls, g: Any, tasks: TaskSet | Sequence[str] | None, *, strict: bool) -> TaskGraph:
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
        # Index-based graph attributes (taskgraph_raw, taskgraph_candidates) refer to this order.
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
        cand_edges: dict[tuple[int, int], bool] = {}
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
                if "candidate" in data:
                    cand_edges[i, j] = _parse_bool(
                        data["candidate"], f"edge {u!r} -> {v!r}: candidate"
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
        raw: Any = None
        if gattrs.get("taskgraph_raw") is not None:
            raw = _maybe_json(gattrs["taskgraph_raw"], "taskgraph_raw")
            raw = _float_matrix(raw, "taskgraph_raw", n, n)
        elif raw_edges:
            raw = np.zeros((n, n))
            for (i, j), value in raw_edges.items():
                raw[i, j] = value
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
            if gattrs.get("taskgraph_candidates") is not None:
                candidates = candidates[np.ix_(perm, perm)]
        if gattrs.get("taskgraph_meta") is not None:
            meta = _maybe_json(gattrs["taskgraph_meta"], "taskgraph_meta")
            if not isinstance(meta, dict):
                raise GraphFormatError("taskgraph_meta: expected a JSON object")
        else:
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
        return cls(
            adj,
            names,
            routing=routing,
            modules=modules or None,
            candidates=candidates,
            learned=learned,
            meta=meta,
            raw=raw,
        )

    # ---------------------------------------------------------------- editing

    def threshold(self, value: float, absolute: bool = True) -> TaskGraph:
        """Keep edges with ``|w| > value`` (or ``w > value`` when ``absolute=False``).

        Routing, candidates, raw weights and meta are kept unchanged.
        """
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise ValidationError(f"value: expected a real number, got {type(value).__name__}")
        if math.isnan(value):
            raise ValidationError("value: threshold must not be NaN")
        keep = (np.abs(self._adj) > value) if absolute else (self._adj > value)
        return self._evolve(adjacency=np.where(keep, self._adj, 0.0))

    def top_k(self, k: int, per_node: bool = False) -> TaskGraph:
        """Keep the ``k`` edges of largest ``|w|``, globally or per destination task.

        Ties are broken by row-major position (lower source, then lower target, wins).

        Args:
            k (int): number of edges to keep (``>= 0``).
            per_node (bool): keep the ``k`` strongest *incoming* edges of every task instead.
        """
        if not _is_int(k) or k < 0:
            raise ValidationError(f"k: expected an integer >= 0, got {k!r}")
        keep = np.zeros_like(self._adj, dtype=bool)
        src, dst = np.nonzero(self._adj)
        strength = np.abs(self._adj[src, dst])
        # lexsort sorts by the last key first: strength desc, then src, then dst.
        order = np.lexsort((dst, src, -strength))
        if per_node:
            taken = np.zeros(self.n_tasks, dtype=int)
            for e in order:
                if taken[dst[e]] < k:
                    keep[src[e], dst[e]] = True
                    taken[dst[e]] += 1
        else:
            sel = order[:k]
            keep[src[sel], dst[sel]] = True
        return self._evolve(adjacency=np.where(keep, self._adj, 0.0))

    def is_dag(self) -> bool:
        """``True`` if the task edges have no directed cycle."""
        return len(_kahn_order(self._adj != 0)) == self.n_tasks

    def find_cycle(self) -> list[str] | None:
        """A directed cycle ``[a, b, ..., z]`` (with the edge ``z -> a``), or ``None``."""
        cycle = _find_cycle(self._adj != 0)
        return None if cycle is None else [self._names[i] for i in cycle]

    def topological_order(self) -> list[str]:
        """Task names with every edge going forward; among ready tasks the lowest index first.

        Raises:
            CycleError: if the graph has a cycle (the message shows one).
        """
        mask = self._adj != 0
        order = _kahn_order(mask)
        if len(order) < self.n_tasks:
            cycle = self.find_cycle() or []
            shown = " -> ".join(repr(n) for n in [*cycle, *cycle[:1]])
            raise CycleError(f"the task graph is not a DAG; it has the cycle {shown}")
        return [self._names[i] for i in order]

    def to_dag(self) -> TaskGraph:
        """Remove edges until the graph is acyclic.

        Repeatedly finds a cycle (depth-first from the lowest index) and drops its edge of
        smallest ``|w|`` (ties: the first in row-major order). Deterministic.
        """
        adj = self._adj.copy()
        while (cycle := _find_cycle(adj != 0)) is not None:
            cycle_edges = list(zip(cycle, cycle[1:] + cycle[:1]))
            i, j = min(cycle_edges, key=lambda e: (abs(adj[e]), e))
            adj[i, j] = 0.0
        return self if np.array_equal(adj, self._adj) else self._evolve(adjacency=adj)

    def skeleton(self) -> np.ndarray:
        """``[T, T]`` symmetric boolean mask: ``True`` where ``i -> j`` or ``j -> i``."""
        mask = self._adj != 0
        return mask | mask.T

    def subgraph(self, names: Iterable[str]) -> TaskGraph:
        """The graph induced on ``names`` (in the given order); routing rows follow."""
        keep = _validate_names(names, "names")
        idx = [self.index(n) for n in keep]
        ix = np.ix_(idx, idx)
        return self._evolve(
            adjacency=self._adj[ix],
            tasks=keep,
            routing=None if self._routing is None else self._routing[idx],
            candidates=None if self._cand is None else self._cand[ix],
            raw=None if self._raw is None else self._raw[ix],
        )

    def rename(self, mapping: Mapping[str, str]) -> TaskGraph:
        """Rename tasks and/or modules with ``{old: new}``; names not in ``mapping`` are kept."""
        if not isinstance(mapping, Mapping):
            raise ValidationError(f"mapping: expected a dict, got {type(mapping).__name__}")
        known = set(self._names) | set(self._modules)
        unknown = [k for k in mapping if k not in known]
        if unknown:
            raise UnknownTaskError(f"mapping: unknown task or module names {unknown}")
        return self._evolve(
            tasks=[mapping.get(n, n) for n in self._names],
            modules=[mapping.get(m, m) for m in self._modules]
            if self._routing is not None
            else None,
        )

    relabel = rename

    # ---------------------------------------------------------------- comparison

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskGraph):
            return NotImplemented
        return (
            self._names == other._names
            and self._modules == other._modules
            and self._learned == other._learned
            and self._meta == other._meta
            and {k: type(v) for k, v in self._meta.items()}
            == {k: type(v) for k, v in other._meta.items()}
            and np.array_equal(self._adj, other._adj)
            and _opt_equal(self._routing, other._routing)
            and _opt_equal(self._cand, other._cand)
            and _opt_equal(self._raw, other._raw)
        )

    __hash__ = None  # type: ignore[assignment]

    def allclose(self, other: TaskGraph, atol: float = 1e-8, rtol: float = 0.0) -> bool:
        """Like ``==`` but float arrays (adjacency, routing, raw) compared within tolerance."""
        if not isinstance(other, TaskGraph):
            raise ValidationError(f"other: expected a TaskGraph, got {type(other).__name__}")

        def close(a: np.ndarray | None, b: np.ndarray | None) -> bool:
            if a is None or b is None:
                return a is None and b is None
            return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=atol))

        return (
            self._names == other._names
            and self._modules == other._modules
            and self._learned == other._learned
            and self._meta == other._meta
            and close(self._adj, other._adj)
            and close(self._routing, other._routing)
            and _opt_equal(self._cand, other._cand)
            and close(self._raw, other._raw)
        )

    def __repr__(self) -> str:
        extra = f", modules={self.n_modules}" if self._routing is not None else ""
        return (
            f"TaskGraph(tasks={self.n_tasks}, edges={self.n_edges}{extra}, learned={self._learned})"
        )

    # ---------------------------------------------------------------- files

    def save(self, path: str | os.PathLike[str], format: str | None = None, *,
             all_ranks: bool = False) -> Path:
        """Write the graph to ``path`` atomically, creating parent directories.

        Under ``torchrun`` only rank 0 writes; the other ranks return the path without writing
        (``all_ranks=True`` writes on every rank).

        Args:
            path (str or PathLike): target file; its suffix picks the format unless ``format``
                is given (``.graphml``, ``.gexf``, ``.json``, ``.dot``/``.gv``, ``.csv``).
            format (str, optional): one of :data:`SUPPORTED_FORMATS` (``"node-link"`` is an alias
                of ``"json"``).
            all_ranks (bool): write on every process of a distributed run.

        Returns:
            pathlib.Path: the path written.

        Raises:
            ValidationError: if the format is unknown (the message lists the supported ones).
            GraphFileError: if the file cannot be written (a previous file is left unchanged).
        """
        target, fmt = _resolve_format(path, format)
        from taskgraph.distributed import is_main_process

        if not (all_ranks or is_main_process()):
            return target
        try:
            with atomic_write(target, "wb") as fh:
                _WRITERS[fmt](self, fh)
        except GraphFileError:
            raise
        except OSError as exc:
            raise GraphFileError(f"cannot write {str(target)!r}: {exc}") from exc
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str], format: str | None = None) -> TaskGraph:
        """Read a graph written by :meth:`save` (or a plain directed graph in a known format).

        Raises:
            ValidationError: if the format is unknown.
            GraphFileError: (an ``OSError``) if the file is missing or unreadable.
            GraphFormatError: if the content is not a valid task graph (bad syntax, an edge to an
                undeclared node, a non-finite weight, missing required fields, ...).
        """
        source, fmt = _resolve_format(path, format)
        try:
            data = source.read_bytes()
        except FileNotFoundError as exc:
            raise GraphFileError(f"cannot read {str(source)!r}: no such file") from exc
        except OSError as exc:
            raise GraphFileError(f"cannot read {str(source)!r}: {exc.strerror or exc}") from exc
        try:
            return _READERS[fmt](cls, data)
        except ValidationError as exc:
            raise GraphFormatError(
                f"{str(source)!r} is not a valid task graph ({fmt}): {exc}"
            ) from exc

    def _file_graph(self, *, xml_safe: bool) -> nx.DiGraph:
        """:meth:`to_networkx` plus the exact graph-level record used by every file format."""
        g = self.to_networkx()
        header: dict[str, Any] = {
            "taskgraph_version": FORMAT_VERSION,
            "learned": self._learned,
            "taskgraph_meta": _json_dumps(self._meta),
        }
        for key in ("taskgraph_candidates", "taskgraph_raw"):
            if key in g.graph:
                header[key] = g.graph[key]
        readable = {
            k: v
            for k, v in self._meta.items()
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

    def _header_native(self) -> dict[str, Any]:
        """Graph-level record with native JSON values (node-link JSON, GEXF description)."""
        header: dict[str, Any] = {
            "taskgraph_version": FORMAT_VERSION,
            "learned": self._learned,
            "taskgraph_meta": dict(self._meta),
        }
        if self._cand is not None:
            header["taskgraph_candidates"] = self._candidate_pairs()
        if self._raw is not None:
            header["taskgraph_raw"] = self._raw.tolist()
        return header

    # ---------------------------------------------------------------- plotting

    def plot(
        self,
        path: str | os.PathLike[str] | None = None,
        ax: Axes | None = None,
        threshold: float = 0.0,
        *,
        layout: str | Mapping[str, tuple[float, float]] = "auto",
        show_modules: bool = True,
        node_size: float = 1200.0,
        font_size: float = 9.0,
        figsize: tuple[float, float] | None = None,
        dpi: int = 150,
        title: str | None = None,
    ) -> Figure:
        """Draw the graph with matplotlib (Agg; no pyplot state is touched).

        Task edges are solid arrows whose width is proportional to ``|w|`` (blue for positive,
        red for negative weights); tasks are circles labelled with their names. Modules are
        squares of another colour, routing edges dashed grey arrows module → task with width
        proportional to the gate.

        Args:
            path (str or PathLike, optional): write the figure here (atomically); the suffix
                picks the image format (default PNG).
            ax (matplotlib Axes, optional): draw into these axes instead of a new figure.
            threshold (float): draw only task edges with ``|w| > threshold``.
            layout (str or dict): ``"auto"`` (``"layered"`` for DAGs with edges, else
                ``"circular"``), ``"layered"``, ``"circular"``, ``"spring"``, or a dict of
                positions ``{name: (x, y)}`` for every drawn node.
            show_modules (bool): draw modules and routing edges when the graph has routing.
            node_size (float): marker area in points².
            font_size (float): label font size.
            figsize (tuple, optional): figure size in inches for a new figure.
            dpi (int): resolution of the written image.
            title (str, optional): axes title (default: a summary of the graph).

        Returns:
            matplotlib.figure.Figure: the figure drawn into.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.patches import FancyArrowPatch

        if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, numbers.Real):
            raise ValidationError(f"threshold: expected a real number, got {threshold!r}")
        fmt = None
        if path is not None:
            fmt = Path(path).suffix.lower().lstrip(".") or "png"
            supported = FigureCanvasAgg(Figure()).get_supported_filetypes()
            if fmt not in supported:
                raise ValidationError(
                    f"path: cannot write a {fmt!r} image; supported suffixes: {sorted(supported)}"
                )
        draw_modules = show_modules and self._routing is not None
        pos = self._layout(layout, draw_modules)

        if ax is None:
            xy = np.array(list(pos.values()))
            width, height = np.ptp(xy[:, 0]), np.ptp(xy[:, 1])
            size = (min(16.0, 4.0 + 1.3 * width), min(12.0, 3.0 + 1.3 * height))
            fig = Figure(figsize=figsize or size)
            FigureCanvasAgg(fig)
            ax = fig.add_subplot()
        else:
            fig = ax.figure  # type: ignore[assignment]
        ax.set_axis_off()
        shrink = math.sqrt(node_size) / 2 + 2

        shown = np.abs(self._adj) > threshold
        wmax = float(np.abs(self._adj[shown]).max()) if shown.any() else 1.0
        task_xy = np.array([pos[n] for n in self._names])
        for i, j in zip(*np.nonzero(shown)):
            w = float(self._adj[i, j])
            # Curve reciprocal edges apart, and edges that would run straight through a node.
            bend = 0.15 if shown[j, i] else 0.0
            if _passes_through(task_xy, i, j):
                bend = 0.35
            ax.add_patch(
                FancyArrowPatch(
                    pos[self._names[i]],
                    pos[self._names[j]],
                    arrowstyle="-|>",
                    mutation_scale=14,
                    linewidth=0.8 + 3.2 * abs(w) / wmax,
                    color=_POS_COLOR if w > 0 else _NEG_COLOR,
                    connectionstyle=f"arc3,rad={bend}",
                    shrinkA=shrink,
                    shrinkB=shrink,
                    zorder=2,
                )
            )
        if draw_modules:
            assert self._routing is not None
            n = self.n_tasks
            all_xy = np.vstack([task_xy, np.array([pos[m] for m in self._modules])])
            for t, k in zip(*np.nonzero(self._routing)):
                bend = 0.25 if _passes_through(all_xy, n + k, t) else 0.0
                ax.add_patch(
                    FancyArrowPatch(
                        pos[self._modules[k]],
                        pos[self._names[t]],
                        arrowstyle="-|>",
                        mutation_scale=10,
                        linewidth=0.5 + 2.5 * float(self._routing[t, k]),
                        linestyle="--",
                        connectionstyle=f"arc3,rad={bend}",
                        color=_ROUTING_COLOR,
                        shrinkA=shrink,
                        shrinkB=shrink,
                        zorder=1,
                    )
                )
            mxy = np.array([pos[m] for m in self._modules])
            ax.scatter(
                mxy[:, 0],
                mxy[:, 1],
                s=node_size,
                marker="s",
                c=_MODULE_FILL,
                edgecolors="black",
                linewidths=1.0,
                zorder=3,
                clip_on=False,
            )
        txy = np.array([pos[n] for n in self._names])
        ax.scatter(
            txy[:, 0],
            txy[:, 1],
            s=node_size,
            marker="o",
            c=_TASK_FILL,
            edgecolors="black",
            linewidths=1.0,
            zorder=3,
            clip_on=False,
        )
        labelled = list(self._names) + (list(self._modules) if draw_modules else [])
        for name in labelled:
            x, y = pos[name]
            ax.text(
                x,
                y,
                textwrap.fill(name, 12, break_long_words=False) if len(name) > 12 else name,
                ha="center",
                va="center",
                fontsize=font_size,
                zorder=4,
                parse_math=False,
                clip_on=False,
            )

        handles = [
            Line2D([], [], color=_POS_COLOR, lw=2, label="positive weight"),
            Line2D([], [], color=_NEG_COLOR, lw=2, label="negative weight"),
            Line2D(
                [],
                [],
                marker="o",
                ls="",
                markerfacecolor=_TASK_FILL,
                markeredgecolor="black",
                markersize=9,
                label="task",
            ),
        ]
        if draw_modules:
            handles += [
                Line2D([], [], color=_ROUTING_COLOR, lw=1.5, ls="--", label="routing gate"),
                Line2D(
                    [],
                    [],
                    marker="s",
                    ls="",
                    markerfacecolor=_MODULE_FILL,
                    markeredgecolor="black",
                    markersize=9,
                    label="module",
                ),
            ]
        ax.legend(
            handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False
        )
        if title is None:
            title = f"{self.n_tasks} tasks, {int(shown.sum())} edges"
            if "method" in self._meta:
                title += f" ({self._meta['method']})"
            if not self._learned:
                title += " (not learned)"
        ax.set_title(title, fontsize=font_size + 1)
        ax.margins(0.15)
        ax.set_aspect("equal", adjustable="datalim")

        if path is not None:
            with atomic_write(path, "wb") as fh:
                fig.savefig(fh, format=fmt, dpi=dpi, bbox_inches="tight")
        return fig

    def _layout(
        self, layout: str | Mapping[str, tuple[float, float]], with_modules: bool
    ) -> dict[str, tuple[float, float]]:
        nodes = list(self._names) + (list(self._modules) if with_modules else [])
        if isinstance(layout, Mapping):
            missing = [n for n in nodes if n not in layout]
            if missing:
                raise ValidationError(f"layout: no position for {missing}")
            return {n: (float(layout[n][0]), float(layout[n][1])) for n in nodes}
        if layout not in ("auto", "layered", "circular", "spring"):
            raise ValidationError(
                f"layout: expected 'auto', 'layered', 'circular', 'spring' or a dict of "
                f"positions, got {layout!r}"
            )
        n = self.n_tasks
        mask = self._adj != 0
        if layout == "auto":
            layout = "layered" if mask.any() and self.is_dag() else "circular"
        pos: dict[str, tuple[float, float]] = {}
        if layout == "layered":
            if not self.is_dag():
                raise ValidationError("layout: 'layered' needs a DAG; use 'circular' or 'spring'")
            layers = _generations(mask)
            for layer in sorted(set(layers)):
                members = [i for i in range(n) if layers[i] == layer]
                for r, i in enumerate(members):
                    pos[self._names[i]] = (1.5 * layer, (len(members) - 1) / 2 - r)
        elif layout == "spring":
            sk = nx.Graph()
            sk.add_nodes_from(range(n))
            sk.add_edges_from(zip(*np.nonzero(mask)))
            xy = nx.spring_layout(sk, seed=0, scale=max(1.0, n / 3))
            pos = {self._names[i]: (float(xy[i][0]), float(xy[i][1])) for i in range(n)}
        else:
            radius = max(1.0, n / 4)
            for i in range(n):
                angle = math.pi / 2 - 2 * math.pi * i / n
                pos[self._names[i]] = (radius * math.cos(angle), radius * math.sin(angle))
        if with_modules:
            xs = [p[0] for p in pos.values()]
            ys = [p[1] for p in pos.values()]
            k = self.n_modules
            top, bottom = max(ys), min(ys)
            span = max(top - bottom, 1.0 * (k - 1))
            mid = (top + bottom) / 2
            for m, name in enumerate(self._modules):
                y = mid + span / 2 - (span * m / (k - 1) if k > 1 else span / 2)
                pos[name] = (min(xs) - 2.0, y)
        return pos


# --------------------------------------------------------------------------------------------
# helpers of _from_nx
# --------------------------------------------------------------------------------------------


def _passes_through(xy: np.ndarray, i: int, j: int, radius: float = 0.3) -> bool:
    """Whether the straight segment ``xy[i] -> xy[j]`` passes within ``radius`` of another node."""
    p, q = xy[i], xy[j]
    d = q - p
    length2 = float(d @ d)
    if length2 == 0.0:
        return False
    for m in range(len(xy)):
        if m in (i, j):
            continue
        t = float(np.clip((xy[m] - p) @ d / length2, 0.0, 1.0))
        if np.linalg.norm(p + t * d - xy[m]) < radius:
            return True
    return False


def _opt_equal(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.array_equal(a, b))


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


def _resolve_format(path: Any, format: str | None) -> tuple[Path, str]:
    if not isinstance(path, (str, os.PathLike)):
        raise ValidationError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    target = Path(path)
    if format is None:
        fmt = _SUFFIX_FORMATS.get(target.suffix.lower())
        if fmt is None:
            raise ValidationError(
                f"path: cannot infer the file format of {str(target)!r} from its suffix "
                f"{target.suffix!r}; use one of {sorted(_SUFFIX_FORMATS)} or pass "
                f"format= one of {list(SUPPORTED_FORMATS)}"
            )
        return target, fmt
    if not isinstance(format, str):
        raise ValidationError(f"format: expected a str, got {type(format).__name__}")
    fmt = _FORMAT_ALIASES.get(format.lower(), format.lower())
    if fmt not in SUPPORTED_FORMATS:
        raise ValidationError(
            f"format: unknown graph file format {format!r}; supported: {list(SUPPORTED_FORMATS)}"
        )
    return target, fmt


# --------------------------------------------------------------------------------------------
# GraphML
# --------------------------------------------------------------------------------------------


def _write_graphml(graph: TaskGraph, fh: IO[bytes]) -> None:
    nx.write_graphml(graph._file_graph(xml_safe=True), fh, encoding="utf-8", prettyprint=True)


def _read_graphml(cls: type[TaskGraph], data: bytes) -> TaskGraph:
    try:
        g = nx.parse_graphml(data)
    except Exception as exc:
        raise GraphFormatError(
            f"not a readable GraphML document ({type(exc).__name__}: {exc})"
        ) from exc
    return cls._from_nx(g, None, strict="taskgraph_version" in g.graph)


# --------------------------------------------------------------------------------------------
# GEXF (graph-level record in <meta><description>)
# --------------------------------------------------------------------------------------------


def _write_gexf(graph: TaskGraph, fh: IO[bytes]) -> None:
    g = graph._file_graph(xml_safe=True)
    g.graph.clear()
    buf = io.BytesIO()
    nx.write_gexf(g, buf, encoding="utf-8", prettyprint=True, version="1.2draft")
    text = buf.getvalue()
    blob = _xml_escape(json.dumps(graph._header_native(), ensure_ascii=True, allow_nan=False))
    description = f"<description>{blob}</description>".encode("ascii")
    at = text.find(b"</meta>")
    if at < 0:  # pragma: no cover - networkx always writes a <meta> element
        raise GraphFormatError("networkx wrote a GEXF file without a <meta> element")
    fh.write(text[:at] + description + text[at:])


def _gexf_header(data: bytes) -> dict[str, Any] | None:
    root = ET.fromstring(data)
    for child in root:
        if child.tag.rsplit("}", 1)[-1] != "meta":
            continue
        for sub in child:
            if sub.tag.rsplit("}", 1)[-1] == "description" and sub.text:
                try:
                    header = json.loads(sub.text)
                except json.JSONDecodeError:
                    return None  # a free-text description of a foreign file
                if isinstance(header, dict) and "taskgraph_version" in header:
                    return header
    return None


def _read_gexf(cls: type[TaskGraph], data: bytes) -> TaskGraph:
    try:
        header = _gexf_header(data)
        g = nx.read_gexf(io.BytesIO(data), node_type=None, version="1.2draft")
    except Exception as exc:
        raise GraphFormatError(
            f"not a readable GEXF document ({type(exc).__name__}: {exc})"
        ) from exc
    if header is not None:
        g.graph.clear()
        g.graph.update(header)
    else:
        for key in ("mode", "name"):
            if g.graph.get(key) in ("static", ""):
                g.graph.pop(key)
    return cls._from_nx(g, None, strict=header is not None)


# --------------------------------------------------------------------------------------------
# node-link JSON
# --------------------------------------------------------------------------------------------


def _write_json(graph: TaskGraph, fh: IO[bytes]) -> None:
    g = graph._file_graph(xml_safe=False)
    g.graph.clear()
    g.graph.update(graph._header_native())
    data = {"taskgraph": {"version": FORMAT_VERSION, "format": "node-link"}}
    data.update(nx.node_link_data(g, edges="edges"))
    text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False)
    fh.write((text + "\n").encode("utf-8"))


def _read_json(cls: type[TaskGraph], data: bytes) -> TaskGraph:
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GraphFormatError(f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise GraphFormatError("expected a node-link JSON object with 'nodes' and 'edges'")
    if doc.get("directed", True) is not True:
        raise GraphFormatError("expected a directed graph ('directed': true)")
    if doc.get("multigraph", False):
        raise GraphFormatError("a multigraph (parallel edges) is not a task graph")
    edge_key = "edges" if "edges" in doc else "links"
    nodes, edges = doc.get("nodes"), doc.get(edge_key)
    if not isinstance(nodes, list) or not isinstance(edges, list):
        raise GraphFormatError("expected the lists 'nodes' and 'edges' (or 'links')")
    g = nx.DiGraph()
    for pos, node in enumerate(nodes):
        if not isinstance(node, dict) or "id" not in node:
            raise GraphFormatError(f"nodes[{pos}]: expected an object with an 'id'")
        if not isinstance(node["id"], str):
            raise GraphFormatError(f"nodes[{pos}]: 'id' must be a task name (str)")
        if node["id"] in g:
            raise GraphFormatError(f"nodes[{pos}]: duplicate node id {node['id']!r}")
        g.add_node(node["id"], **{k: v for k, v in node.items() if k != "id"})
    for pos, edge in enumerate(edges):
        if not isinstance(edge, dict) or "source" not in edge or "target" not in edge:
            raise GraphFormatError(f"{edge_key}[{pos}]: expected an object with source and target")
        u, v = edge["source"], edge["target"]
        for end in (u, v):
            if not isinstance(end, str) or end not in g:
                raise GraphFormatError(f"{edge_key}[{pos}]: edge refers to unknown node {end!r}")
        if g.has_edge(u, v):
            raise GraphFormatError(f"{edge_key}[{pos}]: duplicate edge {u!r} -> {v!r}")
        g.add_edge(u, v, **{k: val for k, val in edge.items() if k not in ("source", "target")})
    graph_attrs = doc.get("graph", {})
    if not isinstance(graph_attrs, dict):
        raise GraphFormatError("'graph' must be an object of graph attributes")
    g.graph.update(graph_attrs)
    strict = "taskgraph" in doc or "taskgraph_version" in graph_attrs
    if strict and "taskgraph_version" not in g.graph:
        marker = doc["taskgraph"]
        version = marker.get("version") if isinstance(marker, dict) else None
        g.graph["taskgraph_version"] = version if version is not None else FORMAT_VERSION
    return cls._from_nx(g, None, strict=strict)


# --------------------------------------------------------------------------------------------
# DOT (own writer and parser)
# --------------------------------------------------------------------------------------------


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _dot_key(key: str) -> str:
    bare = re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*", key) and key.lower() not in _DOT_KEYWORDS
    return key if bare else _dot_quote(key)


def _dot_attrs(attrs: Mapping[str, Any]) -> str:
    inner = ", ".join(f"{_dot_key(k)}={_dot_quote(_dot_value(v))}" for k, v in attrs.items())
    return f"[{inner}]"


def _write_dot(graph: TaskGraph, fh: IO[bytes]) -> None:
    g = graph._file_graph(xml_safe=True)
    # Graphviz gives meaning to graph attributes (size, label, ...): write the header only.
    header = {k: v for k, v in g.graph.items() if k == "learned" or k.startswith(_META_PREFIX)}
    adj = graph._adj
    wmax = float(np.abs(adj).max()) or 1.0
    lines = [
        f"// taskgraph task graph, format version {FORMAT_VERSION}; "
        "read with taskgraph.TaskGraph.load",
        'digraph "taskgraph" {',
        f"  graph {_dot_attrs({**header, 'rankdir': 'LR'})};",
    ]
    for node, data in g.nodes(data=True):
        style = (
            {"shape": "ellipse", "style": "filled", "fillcolor": _TASK_FILL}
            if data["kind"] == "task"
            else {"shape": "box", "style": "filled", "fillcolor": _MODULE_FILL}
        )
        lines.append(f"  {_dot_quote(node)} {_dot_attrs({**data, **style})};")
    for u, v, data in g.edges(data=True):
        w = data["weight"]
        if data["kind"] == "task":
            style = {
                "color": _POS_COLOR if w > 0 else _NEG_COLOR,
                "penwidth": f"{0.5 + 3.0 * abs(w) / wmax:.3g}",
            }
        else:
            style = {"color": _ROUTING_COLOR, "style": "dashed", "penwidth": f"{0.5 + 2.0 * w:.3g}"}
        lines.append(f"  {_dot_quote(u)} -> {_dot_quote(v)} {_dot_attrs({**data, **style})};")
    lines.append("}")
    fh.write(("\n".join(lines) + "\n").encode("utf-8"))


_DOT_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>//[^\n]*|/\*.*?\*/|(?m:^\#[^\n]*))
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<edgeop>->|--)
  | (?P<punct>[{}\[\];,=:])
  | (?P<id>-?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)
          |[A-Za-z_\u0080-\U0010ffff][A-Za-z_0-9\u0080-\U0010ffff]*)
    """,
    re.VERBOSE | re.DOTALL,
)
_DOT_ESCAPE = re.compile(r'\\(\r\n|[\\"\n])')
_DOT_KEYWORDS = ("strict", "graph", "digraph", "node", "edge", "subgraph")


def _dot_tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _DOT_TOKEN.match(text, pos)
        if m is None:
            line = text.count("\n", 0, pos) + 1
            raise GraphFormatError(f"DOT syntax error at line {line}: unexpected {text[pos]!r}")
        pos = m.end()
        kind = m.lastgroup
        assert kind is not None
        value = m.group()
        if kind in ("ws", "comment"):
            continue
        if kind == "string":
            body = value[1:-1]
            value = _DOT_ESCAPE.sub(
                lambda e: "" if e.group(1) in ("\n", "\r\n") else e.group(1), body
            )
            tokens.append(("id", value))
        elif kind == "id" and value.lower() in _DOT_KEYWORDS:
            tokens.append(("kw", value.lower()))
        else:
            tokens.append((kind, value))
    return tokens


class _DotParser:
    """Parser for the DOT subset written by :func:`_write_dot` (plus common plain DOT)."""

    def __init__(self, text: str) -> None:
        self.tokens = _dot_tokens(text)
        self.pos = 0
        self.graph_attrs: dict[str, str] = {}
        self.nodes: dict[str, dict[str, str]] = {}
        self.edges: dict[tuple[str, str], dict[str, str]] = {}
        self.node_defaults: dict[str, str] = {}
        self.edge_defaults: dict[str, str] = {}

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, kind: str | None = None, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise GraphFormatError("DOT syntax error: unexpected end of file")
        if (kind is not None and tok[0] != kind) or (value is not None and tok[1] != value):
            want = value if value is not None else kind
            raise GraphFormatError(f"DOT syntax error: expected {want!r}, got {tok[1]!r}")
        self.pos += 1
        return tok

    def at(self, kind: str, value: str | None = None) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] == kind and (value is None or tok[1] == value)

    def parse(self) -> None:
        if self.at("kw", "strict"):
            self.take()
        kw = self.take("kw")[1]
        if kw == "graph":
            raise GraphFormatError("expected a directed graph ('digraph'), got 'graph'")
        if kw != "digraph":
            raise GraphFormatError(f"DOT syntax error: expected 'digraph', got {kw!r}")
        if self.at("id"):
            self.take()
        self.take("punct", "{")
        while not self.at("punct", "}"):
            if self.peek() is None:
                raise GraphFormatError("DOT syntax error: unexpected end of file (missing '}')")
            if self.at("punct", ";"):
                self.take()
                continue
            self.statement()
        self.take("punct", "}")
        if self.peek() is not None:
            raise GraphFormatError("DOT syntax error: text after the closing '}'")

    def attr_list(self) -> dict[str, str]:
        attrs: dict[str, str] = {}
        while self.at("punct", "["):
            self.take()
            while not self.at("punct", "]"):
                key = self.take("id")[1]
                self.take("punct", "=")
                attrs[key] = self.take("id")[1]
                if self.at("punct", ",") or self.at("punct", ";"):
                    self.take()
            self.take("punct", "]")
        return attrs

    def node_id(self) -> str:
        name = self.take("id")[1]
        if self.at("punct", ":"):
            raise GraphFormatError("DOT: node ports ('name:port') are not supported")
        return name

    def statement(self) -> None:
        tok = self.peek()
        assert tok is not None
        if tok[0] == "kw":
            if tok[1] == "subgraph":
                raise GraphFormatError("DOT: subgraphs are not supported")
            if tok[1] not in ("graph", "node", "edge"):
                raise GraphFormatError(f"DOT syntax error: unexpected keyword {tok[1]!r}")
            self.take()
            attrs = self.attr_list()
            {"graph": self.graph_attrs, "node": self.node_defaults, "edge": self.edge_defaults}[
                tok[1]
            ].update(attrs)
            return
        if tok == ("punct", "{"):
            raise GraphFormatError("DOT: subgraphs are not supported")
        first = self.node_id()
        if self.at("punct", "="):
            self.take()
            self.graph_attrs[first] = self.take("id")[1]
            return
        chain = [first]
        while self.at("edgeop"):
            op = self.take()[1]
            if op == "--":
                raise GraphFormatError("DOT: undirected edge '--' in a digraph")
            chain.append(self.node_id())
        attrs = self.attr_list()
        if len(chain) == 1:
            self.declare(first).update(attrs)
            return
        for u, v in zip(chain, chain[1:]):
            self.declare(u)
            self.declare(v)
            if (u, v) in self.edges:
                raise GraphFormatError(f"DOT: duplicate edge {u!r} -> {v!r}")
            self.edges[u, v] = {**self.edge_defaults, **attrs}

    def declare(self, name: str) -> dict[str, str]:
        if name not in self.nodes:
            self.nodes[name] = dict(self.node_defaults)
        return self.nodes[name]


def _read_dot(cls: type[TaskGraph], data: bytes) -> TaskGraph:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise GraphFormatError(f"not UTF-8 text ({exc})") from None
    parser = _DotParser(text)
    parser.parse()
    strict = "taskgraph_version" in parser.graph_attrs
    g = nx.DiGraph()
    for key, value in parser.graph_attrs.items():
        if key in (
            "learned",
            "taskgraph_version",
            "taskgraph_meta",
            "taskgraph_candidates",
            "taskgraph_raw",
        ):
            g.graph[key] = int(value) if key == "taskgraph_version" and value.isdigit() else value
        elif not strict:
            g.graph[key] = value  # plain DOT: graph attributes become string meta
    for name, attrs in parser.nodes.items():
        node: dict[str, Any] = {}
        if "kind" in attrs:
            node["kind"] = attrs["kind"]
        if "index" in attrs:
            try:
                node["index"] = int(attrs["index"])
            except ValueError:
                raise GraphFormatError(f"node {name!r}: index must be an integer") from None
        g.add_node(name, **node)
    for (u, v), attrs in parser.edges.items():
        edge: dict[str, Any] = {k: attrs[k] for k in ("kind", "weight", "raw") if k in attrs}
        for key in ("weight", "raw"):
            if key in edge:
                edge[key] = _edge_float(edge, key, u, v, None)
        if "candidate" in attrs:
            edge["candidate"] = _parse_bool(attrs["candidate"], f"edge {u!r} -> {v!r}: candidate")
        g.add_edge(u, v, **edge)
    return cls._from_nx(g, None, strict=strict)


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------

_CSV_HEADER = ("source", "target", "weight", "kind", "raw")


def _write_csv(graph: TaskGraph, fh: IO[bytes]) -> None:
    buf = io.StringIO(newline="")
    out = csv.writer(buf, lineterminator="\n")
    names, modules, adj, raw = graph._names, graph._modules, graph._adj, graph._raw
    out.writerow(_CSV_HEADER)
    out.writerow(["taskgraph_version", str(FORMAT_VERSION), "", "graph", ""])
    out.writerow(["learned", "true" if graph._learned else "false", "", "graph", ""])
    if raw is not None:
        out.writerow(["raw", "true", "", "graph", ""])
    if graph._cand is not None:
        out.writerow(["candidates", "true", "", "graph", ""])
    for key, value in graph._meta.items():
        out.writerow([key, json.dumps(value, ensure_ascii=False, allow_nan=False), "", "meta", ""])
    for name in names:
        out.writerow([name, "", "", "node", ""])
    for name in modules:
        out.writerow([name, "", "", "module", ""])
    for i, j in zip(*np.nonzero(adj)):
        raw_text = "" if raw is None else repr(float(raw[i, j]))
        out.writerow([names[i], names[j], repr(float(adj[i, j])), "task", raw_text])
    if graph._routing is not None:
        for k, t in zip(*np.nonzero(graph._routing.T)):
            out.writerow([modules[k], names[t], repr(float(graph._routing[t, k])), "routing", ""])
    if graph._cand is not None:
        for i, j in zip(*np.nonzero(graph._cand)):
            out.writerow([names[i], names[j], "", "candidate", ""])
    if raw is not None:
        for i, j in zip(*np.nonzero((raw != 0) & (adj == 0))):
            out.writerow([names[i], names[j], "", "raw", repr(float(raw[i, j]))])
    fh.write(buf.getvalue().encode("utf-8"))


def _csv_float(text: str, what: str, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise GraphFormatError(f"line {line}: {what} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise GraphFormatError(f"line {line}: {what} must be finite, got {text!r}")
    return value


def _read_csv(cls: type[TaskGraph], data: bytes) -> TaskGraph:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise GraphFormatError(f"not UTF-8 text ({exc})") from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise GraphFormatError(f"malformed CSV ({exc})") from None
    if not rows:
        raise GraphFormatError("empty CSV file (expected the header source,target,weight,kind)")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in ("source", "target", "weight") if c not in header]
    if missing:
        raise GraphFormatError(
            f"CSV header {header} lacks the columns {missing} (expected {','.join(_CSV_HEADER)})"
        )
    col = {name: header.index(name) for name in _CSV_HEADER if name in header}
    records: list[tuple[int, dict[str, str]]] = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not cell for cell in row):
            continue
        if len(row) != len(header):
            raise GraphFormatError(f"line {line}: expected {len(header)} fields, got {len(row)}")
        records.append((line, {name: row[i] for name, i in col.items()}))

    strict = any(
        r.get("kind") == "graph" and r["source"] == "taskgraph_version" for _, r in records
    )
    learned, has_raw, has_cand = True, False, False
    meta: dict[str, Any] = {}
    names: list[str] = []
    modules: list[str] = []
    task_rows, routing_rows, cand_rows, raw_rows = [], [], [], []
    for line, r in records:
        kind = r.get("kind", "") or ("" if strict else "task")
        if kind == "graph":
            key, value = r["source"], r["target"]
            if key == "taskgraph_version":
                if not value.isdigit() or int(value) > FORMAT_VERSION:
                    raise GraphFormatError(
                        f"line {line}: unsupported taskgraph_version {value!r} (this version "
                        f"reads <= {FORMAT_VERSION})"
                    )
            elif key in ("learned", "raw", "candidates"):
                flag = _parse_bool(value, f"line {line}: {key}")
                if key == "learned":
                    learned = flag
                elif key == "raw":
                    has_raw = flag
                else:
                    has_cand = flag
            else:
                raise GraphFormatError(f"line {line}: unknown graph attribute {key!r}")
        elif kind == "meta":
            if r["source"] in meta:
                raise GraphFormatError(f"line {line}: duplicate meta key {r['source']!r}")
            try:
                meta[r["source"]] = json.loads(r["target"])
            except json.JSONDecodeError:
                raise GraphFormatError(
                    f"line {line}: meta value of {r['source']!r} is not JSON: {r['target']!r}"
                ) from None
        elif kind == "node":
            names.append(r["source"])
        elif kind == "module":
            modules.append(r["source"])
        elif kind == "task":
            task_rows.append((line, r))
        elif kind == "routing":
            routing_rows.append((line, r))
        elif kind == "candidate":
            cand_rows.append((line, r))
        elif kind == "raw":
            raw_rows.append((line, r))
        else:
            raise GraphFormatError(
                f"line {line}: unknown kind {kind!r} (expected graph, meta, node, module, task, "
                "routing, candidate or raw)"
            )

    implicit = not strict and not names
    if implicit:  # a plain edge list: tasks in order of first appearance
        for _, r in task_rows + cand_rows + raw_rows:
            for end in (r["source"], r["target"]):
                if end not in names:
                    names.append(end)
        for _, r in routing_rows:
            if r["source"] not in modules:
                modules.append(r["source"])
            if r["target"] not in names:
                names.append(r["target"])
    index = {name: i for i, name in enumerate(names)}
    m_index = {name: k for k, name in enumerate(modules)}
    n = len(names)

    def ends(line: int, r: dict[str, str], src_index: dict[str, int]) -> tuple[int, int]:
        for end, table, what in (
            (r["source"], src_index, "source"),
            (r["target"], index, "target"),
        ):
            if end not in table:
                raise GraphFormatError(f"line {line}: edge {what} {end!r} is not a declared node")
        return src_index[r["source"]], index[r["target"]]

    adj = np.zeros((n, n))
    raw = np.zeros((n, n))
    raw_seen = has_raw
    seen: set[tuple[int, int]] = set()
    for line, r in task_rows:
        i, j = ends(line, r, index)
        if (i, j) in seen:
            raise GraphFormatError(
                f"line {line}: duplicate edge {r['source']!r} -> {r['target']!r}"
            )
        seen.add((i, j))
        if not r["weight"] and strict:
            raise GraphFormatError(f"line {line}: edge without a weight")
        adj[i, j] = _csv_float(r["weight"], "weight", line) if r["weight"] else 1.0
        if r.get("raw"):
            raw[i, j] = _csv_float(r["raw"], "raw", line)
            raw_seen = True
    for line, r in raw_rows:
        i, j = ends(line, r, index)
        raw[i, j] = _csv_float(r.get("raw", ""), "raw", line)
        raw_seen = True
    routing = np.zeros((n, len(modules))) if modules else None
    for line, r in routing_rows:
        k, t = ends(line, r, m_index)
        assert routing is not None
        routing[t, k] = _csv_float(r["weight"], "routing gate", line)
    candidates = np.zeros((n, n), dtype=bool) if (has_cand or cand_rows) else None
    for line, r in cand_rows:
        i, j = ends(line, r, index)
        assert candidates is not None
        candidates[i, j] = True
    if not names:
        raise GraphFormatError("no tasks: expected 'node' rows or task edges")
    return cls(
        adj,
        names,
        routing=routing,
        modules=modules or None,
        candidates=candidates,
        learned=learned,
        meta=meta,
        raw=raw if raw_seen else None,
    )


_WRITERS = {
    "graphml": _write_graphml,
    "gexf": _write_gexf,
    "json": _write_json,
    "dot": _write_dot,
    "csv": _write_csv,
}
_READERS = {
    "graphml": _read_graphml,
    "gexf": _read_gexf,
    "json": _read_json,
    "dot": _read_dot,
    "csv": _read_csv,
}
