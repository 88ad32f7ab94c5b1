r"""Markov equivalence: the CPDAG of a DAG and the edge-by-edge comparison of partially directed
graphs.

Partially directed graphs are ``[T, T]`` boolean masks in the **two-way convention** every
CPDAG array of taskgraph uses: ``M[i, j] and not M[j, i]`` is the directed edge ``i → j``;
``M[i, j] and M[j, i]`` is the undirected edge ``i — j``. Every unordered pair therefore has one
*mark*: absent, ``i → j``, ``j → i`` or undirected.

- :func:`dag_to_cpdag`: the CPDAG (essential graph) of a DAG, computed by causal-learn's
  ``dag2cpdag`` (Chickering's edge labelling). The DAG is handed over as causal-learn ``Dag``
  nodes and ``add_directed_edge`` calls and read back with ``is_directed_from_to`` /
  ``is_undirected_from_to``: no endpoint matrix is read here (the one reader of causal-learn's
  endpoint matrices is :func:`taskgraph.structure.from_causallearn`).
- :func:`compare_marks`: every pair of two graphs sorted into :data:`CATEGORIES`; the
  CPDAG SHD and the compelled-edge scores of :mod:`taskgraph.metrics`, and the truth overlay of
  :meth:`TaskGraph.plot`, are counts and drawings of these lists.
"""

from __future__ import annotations

import numpy as np

from taskgraph.exceptions import MissingDependencyError

__all__ = ["CATEGORIES", "dag_to_cpdag", "compare_marks", "two_way"]

#: Edge categories of :func:`compare_marks`, in drawing order.
CATEGORIES: tuple[str, ...] = (
    "true_positive",
    "reversed",
    "unoriented",
    "overoriented",
    "false_positive",
    "false_negative",
)


def two_way(mask: np.ndarray, undirected: np.ndarray | None = None) -> np.ndarray:
    """The two-way form of an edge mask with optional undirected marks.

    A pair marked undirected becomes two-way when at least one of its directions is in
    ``mask`` (a threshold may have removed the other); every other entry is kept.
    """
    out = np.array(mask, dtype=bool)
    if undirected is not None:
        marked = np.asarray(undirected, dtype=bool) & (out | out.T)
        out |= marked
    return out


def dag_to_cpdag(dag: np.ndarray) -> np.ndarray:
    """The CPDAG of a DAG, as a two-way boolean mask (see the module docstring).

    Args:
        dag: ``[T, T]`` boolean mask ``dag[i, j]`` = edge ``i → j``; must be acyclic (the caller
            checks).

    Returns:
        ``[T, T]`` bool: compelled edges one-way, reversible edges two-way.
    """
    try:
        from causallearn.graph.Dag import Dag
        from causallearn.graph.GraphNode import GraphNode
        from causallearn.utils.DAG2CPDAG import dag2cpdag
    except ImportError as exc:  # pragma: no cover - causal-learn is a dependency
        raise MissingDependencyError(
            f"the CPDAG of a DAG needs causal-learn: pip install causal-learn ({exc})"
        ) from None
    n = dag.shape[0]
    out = np.zeros((n, n), dtype=bool)
    if not dag.any():
        return out
    nodes = [GraphNode(f"X{i}") for i in range(n)]
    graph = Dag(nodes)
    for i, j in zip(*np.nonzero(dag)):
        graph.add_directed_edge(nodes[i], nodes[j])
    cpdag = dag2cpdag(graph)
    for i, j in zip(*np.nonzero(dag)):
        if cpdag.is_directed_from_to(nodes[i], nodes[j]):
            out[i, j] = True
        elif cpdag.is_undirected_from_to(nodes[i], nodes[j]):
            out[i, j] = out[j, i] = True
        else:  # pragma: no cover - dag2cpdag keeps the skeleton and never reverses an edge
            raise AssertionError(f"dag2cpdag turned the edge {i} -> {j} into something else")
    return out


def _mark(mask: np.ndarray, i: int, j: int) -> int:
    """0 absent, 1 ``i → j``, 2 ``j → i``, 3 undirected."""
    return int(mask[i, j]) + 2 * int(mask[j, i])


def _oriented(mark: int, i: int, j: int) -> tuple[int, int]:
    return (j, i) if mark == 2 else (i, j)


def compare_marks(pred: np.ndarray, truth: np.ndarray) -> dict[str, list[tuple[int, int]]]:
    """Sort every pair of two partially directed graphs (two-way masks) into categories.

    Per unordered pair ``i < j`` with predicted mark ``p`` and true mark ``t``:

    ==================  ==========================================  ==========================
    category            when                                        edge listed as
    ==================  ==========================================  ==========================
    ``true_positive``   ``p == t`` (same direction, or both         predicted
                        undirected)
    ``reversed``        both directed, opposite directions          predicted
    ``unoriented``      ``p`` undirected, ``t`` directed            true direction
    ``overoriented``    ``p`` directed, ``t`` undirected            predicted
    ``false_positive``  ``p`` present, ``t`` absent                 predicted
    ``false_negative``  ``p`` absent, ``t`` present                 true
    ==================  ==========================================  ==========================

    An undirected edge is listed as ``(i, j)`` with ``i < j``. Every list is in row-major
    order of its pairs.

    Returns:
        dict: category → list of ``(source, target)`` index pairs; every category present.
    """
    out: dict[str, list[tuple[int, int]]] = {c: [] for c in CATEGORIES}
    both = pred | pred.T | truth | truth.T
    for i, j in zip(*np.nonzero(np.triu(both, k=1))):
        i, j = int(i), int(j)
        p, t = _mark(pred, i, j), _mark(truth, i, j)
        if p == 0:
            out["false_negative"].append(_oriented(t, i, j))
        elif t == 0:
            out["false_positive"].append(_oriented(p, i, j))
        elif p == t:
            out["true_positive"].append(_oriented(p, i, j))
        elif p == 3:
            out["unoriented"].append(_oriented(t, i, j))
        elif t == 3:
            out["overoriented"].append(_oriented(p, i, j))
        else:
            out["reversed"].append(_oriented(p, i, j))
    return out
