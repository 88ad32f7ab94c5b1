"""The :class:`TaskGraph` value type: construction, properties, conversions and editing.

Files, drawing and the graph algorithms live beside this module (:mod:`taskgraph.graph.readwrite`,
:mod:`taskgraph.graph.drawing`, :mod:`taskgraph.graph.algorithms`); the methods here validate their
arguments and delegate.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import networkx as nx
import numpy as np
import torch

from taskgraph.exceptions import (
    CycleError,
    GraphFormatError,
    UnknownTaskError,
    ValidationError,
)
from taskgraph.graph import algorithms, convert, drawing, readwrite
from taskgraph.graph.convert import FORMAT_VERSION
from taskgraph.graph.validation import (
    MetaValue,
    _bool_matrix,
    _edge_index_matrix,
    _float_matrix,
    _is_int,
    _opt_equal,
    _routing_matrix,
    _undirected_mask,
    _validate_meta,
    _validate_names,
)
from taskgraph.tasks import TaskSet

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["TaskGraph"]


def _confidence_matrix(value: Any, n: int) -> np.ndarray:
    """Validate the ``confidence`` argument: ``[n, n]``, finite (no NaN), values in ``[0, 1]``."""
    arr = _float_matrix(value, "confidence", n, n)
    bad = (arr < 0.0) | (arr > 1.0)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValidationError(
            f"confidence: entries must lie in [0, 1], found {arr[i, j]} at [{i}, {j}]"
        )
    return arr


class TaskGraph:
    r"""A weighted causal graph over tasks, with optional task → module routing.

    Orientation follows PyG, networkx and NOTEARS: ``adjacency[i, j] != 0`` is the edge
    task ``i`` → task ``j`` (``i`` causes / sends messages to ``j``). Instances are immutable
    values: every method that changes the graph returns a new one.

    **Undirected edges.** An edge ``i — j`` whose orientation the learner could not fix (an
    undirected edge of a CPDAG) is stored as both directions in the adjacency plus the mark
    ``undirected[i, j] = undirected[j, i] = True``. Everything that reads the adjacency (message
    passing, ``edges()``, ``parents``/``children``, ``n_edges``, PyG ``edge_index``) sees both
    directions; the mark tells a two-way pair the learner means as one unoriented edge from a
    2-cycle. Every file format keeps it, :meth:`plot` draws it without arrowheads, and the
    acyclicity methods do not count it as a cycle (:meth:`is_dag`, :meth:`to_dag`).

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
        undirected (array-like, optional): ``[T, T]`` symmetric boolean mask of the undirected
            edges; a marked pair needs non-zero weights in both directions. An all-``False``
            mask is the same as ``None``.
        confidence (array-like, optional): ``[T, T]`` edge stability in ``[0, 1]`` (e.g. the
            fraction of bootstrap resamples in which ``i → j`` was found,
            :func:`taskgraph.structure.bootstrap.bootstrap_confidence`); ``NaN`` is not
            allowed. Kept beside the adjacency like ``raw``, exported as the edge attribute
            ``confidence`` and drawn as edge opacity by :meth:`plot`.

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

    __slots__ = ("_names", "_index", "_adj", "_routing", "_modules", "_cand", "_learned",
                 "_meta", "_raw", "_undir", "_conf")

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
        undirected: Any = None,
        confidence: Any = None,
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
        routing_arr, module_names = _routing_matrix(routing, modules, names)
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
        self._undir: np.ndarray | None = _undirected_mask(undirected, adj, names)
        self._conf: np.ndarray | None = (
            None if confidence is None else _confidence_matrix(confidence, n)
        )

    # ---------------------------------------------------------------- constructors

    @classmethod
    def from_dense(cls, adjacency: Any, tasks: TaskSet | Sequence[str], **kwargs: Any) -> TaskGraph:
        """Build from a dense ``[T, T]`` matrix ``A[src, dst]`` (same as the constructor)."""
        return cls(adjacency, tasks, **kwargs)

    @classmethod
    def from_cpdag(
        cls, cpdag: Any, tasks: TaskSet | Sequence[str], **kwargs: Any
    ) -> TaskGraph:
        """Build from a CPDAG (or any partially directed graph) in the two-way convention.

        ``cpdag[i, j] != 0`` and ``cpdag[j, i] == 0`` is the directed edge ``i → j``; non-zero
        entries in both directions are the undirected edge ``i — j``, which gets the
        ``undirected`` mark. This is the array :func:`taskgraph.metrics.cpdag` returns and the
        one causal-learn's CPDAGs convert to (:func:`taskgraph.structure.from_causallearn`).

        Args:
            cpdag (array-like): ``[T, T]`` weights (0/1 or any finite values).
            tasks (TaskSet or sequence of str): the ``T`` task names.
            **kwargs: further constructor arguments (``meta``, ``routing``, ...), but not
                ``undirected``.
        """
        if "undirected" in kwargs:
            raise ValidationError("undirected: from_cpdag derives the mark from cpdag itself")
        n = len(_validate_names(tasks))
        arr = _float_matrix(cpdag, "cpdag", n, n)
        two_way = (arr != 0) & (arr.T != 0)
        return cls(arr, tasks, undirected=two_way, **kwargs)

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
        adj = _edge_index_matrix(edge_index, edge_weight, names)
        return cls(adj, names, **kwargs)

    @classmethod
    def from_networkx(
        cls, g: nx.DiGraph, tasks: TaskSet | Sequence[str] | None = None
    ) -> TaskGraph:
        """Inverse of :meth:`to_networkx`.

        Nodes with ``kind="module"`` are modules; every other node (``kind="task"`` or no kind)
        is a task. Task → task edges give the adjacency (``weight``, default 1; optional ``raw``,
        ``confidence``, ``candidate`` and ``undirected``, which must be set on both directions
        of a pair), module → task edges the routing gates. Graph attributes give ``learned``,
        ``taskgraph_candidates``, ``taskgraph_raw``, ``taskgraph_confidence`` and the meta (all
        other scalar attributes, or the JSON object ``taskgraph_meta`` when present).

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
        return convert.from_networkx(cls, g, tasks, strict=False)

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
            undirected=data.get("undirected"),
            confidence=data.get("confidence"),
        )

    def _evolve(self, **changes: Any) -> TaskGraph:
        """A copy with ``changes``; a new adjacency keeps the marks of pairs still two-way."""
        kwargs: dict[str, Any] = {
            "adjacency": self._adj,
            "tasks": self._names,
            "routing": self._routing,
            "modules": self._modules if self._routing is not None else None,
            "candidates": self._cand,
            "learned": self._learned,
            "meta": self._meta,
            "raw": self._raw,
            "undirected": self._undir,
            "confidence": self._conf,
        }
        if "adjacency" in changes and "undirected" not in changes and self._undir is not None:
            new = np.asarray(changes["adjacency"]) != 0
            kwargs["undirected"] = self._undir & new & new.T
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
    def confidence(self) -> np.ndarray | None:
        """``[T, T]`` float64 edge confidence in ``[0, 1]`` (a copy), or ``None``."""
        return None if self._conf is None else self._conf.copy()

    @property
    def undirected(self) -> np.ndarray | None:
        """``[T, T]`` symmetric boolean mask of the undirected edges (a copy), or ``None``."""
        return None if self._undir is None else self._undir.copy()

    @property
    def n_edges(self) -> int:
        """Number of task → task edges (non-zero weights; an undirected edge counts twice)."""
        return int(np.count_nonzero(self._adj))

    @property
    def n_undirected(self) -> int:
        """Number of undirected edges ``i — j`` (each pair once)."""
        return 0 if self._undir is None else int(np.count_nonzero(np.triu(self._undir)))

    def undirected_edges(self) -> list[tuple[str, str]]:
        """Undirected edges ``(a, b)``, ``a`` before ``b`` in task order, in row-major order."""
        if self._undir is None:
            return []
        src, dst = np.nonzero(np.triu(self._undir))
        return [(self._names[i], self._names[j]) for i, j in zip(src.tolist(), dst.tolist())]

    def _directed_mask(self) -> np.ndarray:
        """``[T, T]`` boolean mask of the directed edges (undirected pairs left out)."""
        mask = self._adj != 0
        return mask if self._undir is None else mask & ~self._undir

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
            "undirected": None if self._undir is None else self._undir.tolist(),
            "confidence": None if self._conf is None else self._conf.tolist(),
        }

    # ---------------------------------------------------------------- networkx

    def to_networkx(self) -> nx.DiGraph:
        """A ``networkx.DiGraph`` with only python-native scalar attributes.

        Nodes: the task names in order (``kind="task"``, ``index``, ``label``), then the modules
        (``kind="module"``). Edges: task edges with ``kind="task"``, ``weight`` (python float),
        ``raw``, ``confidence`` (python float) and ``candidate`` when given, and ``undirected``
        (bool, ``True`` on both directions of an undirected edge) when the graph has undirected
        edges; routing edges module → task with ``kind="routing"`` and ``weight`` = gate
        (non-zero gates only). Graph attributes: the meta items, ``learned``, and JSON strings
        ``taskgraph_candidates`` / ``taskgraph_raw`` / ``taskgraph_confidence`` when given.
        The result can be passed to ``nx.write_graphml`` directly.
        """
        return convert.to_networkx(self)

    # ---------------------------------------------------------------- editing

    def threshold(self, value: float, absolute: bool = True) -> TaskGraph:
        """Keep edges with ``|w| > value`` (or ``w > value`` when ``absolute=False``).

        Routing, candidates, raw weights, confidence and meta are kept unchanged. An undirected
        edge keeps its mark while both directions stay; if one goes, the other is a directed
        edge.
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

        Each direction of an undirected edge is one entry; a pair that keeps only one direction
        becomes a directed edge.
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
        """``True`` if the directed task edges have no cycle.

        Undirected edges are not cycles: when this holds, :meth:`to_dag` orients them into a
        DAG without removing anything. :attr:`n_undirected` tells a DAG from such a graph.
        """
        return algorithms.is_dag(self._directed_mask())

    def find_cycle(self) -> list[str] | None:
        """A directed cycle ``[a, b, ..., z]`` (with the edge ``z -> a``), or ``None``.

        Only directed edges form cycles (an undirected edge ``i — j`` is not the 2-cycle
        ``i -> j -> i``).
        """
        cycle = algorithms.find_cycle(self._directed_mask())
        return None if cycle is None else [self._names[i] for i in cycle]

    def topological_order(self) -> list[str]:
        """Task names with every edge going forward; among ready tasks the lowest index first.

        With undirected edges, the order of
        :func:`~taskgraph.graph.algorithms.extension_order`: directed edges go forward and,
        among ready tasks, the one with the most undirected neighbours already placed goes
        first; :meth:`to_dag` orients the undirected edges along this order.

        Raises:
            CycleError: if the directed edges have a cycle (the message shows one).
        """
        if self._undir is None:
            order = algorithms.topological_order(self._adj != 0)
        else:
            order = algorithms.extension_order(self._directed_mask(), self._undir)
        if order is None:
            cycle = self.find_cycle() or []
            shown = " -> ".join(repr(n) for n in [*cycle, *cycle[:1]])
            raise CycleError(f"the task graph is not a DAG; it has the cycle {shown}")
        return [self._names[i] for i in order]

    def to_dag(self) -> TaskGraph:
        """Remove directed edges until the graph is acyclic, then orient the undirected ones.

        Repeatedly finds a cycle of directed edges (depth-first from the lowest index) and drops
        its edge of smallest ``|w|`` (ties: the first in row-major order). Then every undirected
        edge ``i — j`` keeps the direction of :meth:`topological_order` (its weight in that
        direction) and loses the other: for a CPDAG the result is a DAG of its Markov
        equivalence class (:func:`~taskgraph.graph.algorithms.orient_undirected`). The result
        has no undirected mark. Deterministic.
        """
        if self._undir is None:
            adj = algorithms.to_dag(self._adj)
            return self if np.array_equal(adj, self._adj) else self._evolve(adjacency=adj)
        directed = algorithms.to_dag(np.where(self._directed_mask(), self._adj, 0.0)) != 0
        keep = algorithms.orient_undirected(directed, self._undir)
        assert keep is not None  # the directed edges are acyclic now
        return self._evolve(adjacency=np.where(keep, self._adj, 0.0), undirected=None)

    def cpdag(self) -> TaskGraph:
        """The CPDAG (essential graph) of this DAG: its reversible edges marked undirected.

        An edge is *compelled* (kept directed) when every DAG with the same skeleton and
        v-structures orients it the same way, else *reversible* (made the undirected edge
        ``i — j``, with the weight ``w`` of ``i → j`` in both directions). Computed by
        causal-learn's ``dag2cpdag`` (:func:`~taskgraph.graph.equivalence.dag_to_cpdag`).
        Routing, candidates, raw weights, confidence and meta are kept.

        Raises:
            ValidationError: if the graph has undirected edges or a cycle (a two-way pair
                without the mark is a 2-cycle).
        """
        if self._undir is not None:
            raise ValidationError(
                "the graph already has undirected edges; cpdag() takes a DAG (use to_dag() first)"
            )
        cycle = self.find_cycle()
        if cycle is not None:
            shown = " -> ".join(repr(n) for n in [*cycle, *cycle[:1]])
            raise ValidationError(f"cpdag() takes a DAG; the graph has the cycle {shown}")
        from taskgraph.graph.equivalence import dag_to_cpdag

        mask = dag_to_cpdag(self._adj != 0)
        adj = np.where(mask, self._adj + self._adj.T, 0.0)
        return self._evolve(adjacency=adj, undirected=mask & mask.T)

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
            undirected=None if self._undir is None else self._undir[ix],
            confidence=None if self._conf is None else self._conf[ix],
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
            and _opt_equal(self._undir, other._undir)
            and _opt_equal(self._conf, other._conf)
        )

    __hash__ = None  # type: ignore[assignment]

    def allclose(self, other: TaskGraph, atol: float = 1e-8, rtol: float = 0.0) -> bool:
        """Like ``==`` but float arrays (adjacency, routing, raw, confidence) compared within
        tolerance."""
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
            and _opt_equal(self._undir, other._undir)
            and close(self._conf, other._conf)
        )

    def __repr__(self) -> str:
        extra = f", undirected={self.n_undirected}" if self._undir is not None else ""
        extra += f", modules={self.n_modules}" if self._routing is not None else ""
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
                of ``"json"``). GraphML, GEXF and JSON load back to an equal graph; DOT (for
                Graphviz) and CSV (a plain edge list) are export-only.
            all_ranks (bool): write on every process of a distributed run.

        Returns:
            pathlib.Path: the path written.

        Raises:
            ValidationError: if the format is unknown (the message lists the supported ones).
            GraphFileError: if the file cannot be written (a previous file is left unchanged).
        """
        return readwrite.save(self, path, format, all_ranks=all_ranks)

    @classmethod
    def load(cls, path: str | os.PathLike[str], format: str | None = None) -> TaskGraph:
        """Read a graph written by :meth:`save` (or a plain directed graph in a known format).

        Args:
            path (str or PathLike): the file; its suffix picks the format unless ``format`` is
                given (``.graphml``, ``.gexf``, ``.json``).
            format (str, optional): one of :data:`LOADABLE_FORMATS` (``"node-link"`` is an alias
                of ``"json"``).

        Raises:
            ValidationError: if the format is unknown, or is DOT or CSV: those are export-only
                (the message says so).
            GraphFileError: (an ``OSError``) if the file is missing or unreadable.
            GraphFormatError: if the content is not a valid task graph (bad syntax, an edge to an
                undeclared node, a non-finite weight, missing required fields, ...).
        """
        return readwrite.load(cls, path, format)

    # ---------------------------------------------------------------- plotting

    def plot(
        self,
        path: str | os.PathLike[str] | None = None,
        ax: Axes | None = None,
        threshold: float = 0.0,
        *,
        layout: str | Mapping[str, tuple[float, float]] = "auto",
        show_modules: bool = True,
        node_size: float | None = None,
        font_size: float | None = None,
        figsize: tuple[float, float] | None = None,
        dpi: int = 150,
        title: str | None = None,
        truth: TaskGraph | Any = None,
        routing_threshold: float = drawing.ROUTING_THRESHOLD,
    ) -> Figure:
        """Draw the graph with matplotlib (Agg; no pyplot state is touched).

        Task edges are solid arrows whose width is proportional to ``|w|`` (blue for positive,
        red for negative weights); an undirected edge is one line without arrowheads. Tasks are
        circles labelled with their names (wrapped, the circles sized to hold them). Modules
        are squares of another colour, routing gates dashed grey arrows module → task whose
        width and opacity grow with the gate; gates ``<= routing_threshold`` are left out.
        When the graph has ``confidence``, the opacity of every task edge is ``0.15 + 0.85 c``
        with ``c`` its confidence (the larger of the two directions for an undirected edge), so
        unstable edges fade; without ``truth`` only.

        With ``truth``, every pair adjacent in either graph is drawn once, coloured and styled
        by how it compares (legend with counts; :func:`taskgraph.metrics.compare_edges`):
        correct (green), reversed (orange), left undirected where the true edge is directed
        (cyan, dash-dot), oriented where the true edge is undirected (purple, dash-dot), false
        positive (red, dashed) and missing (brown, dotted, in the true direction). The truth is
        compared as given: pass ``truth.cpdag()`` to score orientations only where the data
        can fix them. Positions then follow the true graph, so drawings of several learners
        against one truth line up.

        Args:
            path (str or PathLike, optional): write the figure here (atomically); the suffix
                picks the image format (default PNG).
            ax (matplotlib Axes, optional): draw into these axes instead of a new figure.
            threshold (float): draw only task edges with ``|w| > threshold``.
            layout (str or dict): ``"auto"`` (``"layered"`` for DAGs with edges, undirected
                ones oriented by :meth:`to_dag`, else ``"circular"``), ``"layered"``,
                ``"circular"``, ``"spring"``, or a dict of positions ``{name: (x, y)}`` for
                every drawn node.
            show_modules (bool): draw modules and routing edges when the graph has routing.
            node_size (float, optional): marker area in points²; default: large enough for the
                widest label (1200 to 3600).
            font_size (float, optional): label font size; default 9, smaller (down to 5) when
                a label would not fit the largest node.
            figsize (tuple, optional): figure size in inches for a new figure.
            dpi (int): resolution of the written image.
            title (str, optional): axes title (default: a summary of the graph).
            truth (TaskGraph or array, optional): the true graph (same tasks; an array in this
                graph's task order; two-way pairs and undirected marks are undirected edges).
            routing_threshold (float): gates at or below it are not drawn, in ``[0, 1)``.
                (default: ``0.1``)

        Returns:
            matplotlib.figure.Figure: the figure drawn into.
        """
        return drawing.plot(
            self,
            path,
            ax,
            threshold,
            layout=layout,
            show_modules=show_modules,
            node_size=node_size,
            font_size=font_size,
            figsize=figsize,
            dpi=dpi,
            title=title,
            truth=truth,
            routing_threshold=routing_threshold,
        )
