"""Graph algorithms on the task edges, as networkx calls on index graphs.

Every function takes a ``[T, T]`` boolean edge mask (``mask[i, j]`` is the edge ``i -> j``) or a
float adjacency and answers with task indices. The networkx graph built from a mask has the nodes
``0 .. T-1`` in order and the edges in row-major order, so every node's successors are visited in
index order and every result is deterministic:

- :func:`find_cycle`: ``networkx.find_cycle`` (depth-first from the lowest index);
- :func:`is_dag`: ``networkx.is_directed_acyclic_graph``;
- :func:`topological_order`: ``networkx.lexicographical_topological_sort`` (Kahn's algorithm, the
  lowest index first among ready nodes);
- :func:`generations`: ``networkx.topological_generations`` (the longest-path layer of every node,
  roots in layer 0);
- :func:`to_dag`: drops the weakest edge of the cycle :func:`find_cycle` returns until none is left.

Undirected edges (a ``[T, T]`` symmetric boolean mask beside the directed one) are not cycles;
:func:`extension_order` orders the tasks so that orienting every undirected edge forward gives a
DAG without new v-structures whenever the graph is a CPDAG (:func:`orient_undirected`).
"""

from __future__ import annotations

import networkx as nx
import numpy as np

__all__ = [
    "extension_order",
    "find_cycle",
    "generations",
    "is_dag",
    "orient_undirected",
    "to_dag",
    "topological_order",
]


def index_digraph(mask: np.ndarray) -> nx.DiGraph:
    """``networkx.DiGraph`` with nodes ``0 .. T-1`` and the edges of ``mask`` in row-major order."""
    g = nx.DiGraph()
    g.add_nodes_from(range(mask.shape[0]))
    src, dst = np.nonzero(mask)
    g.add_edges_from(zip(src.tolist(), dst.tolist()))
    return g


def _cycle(g: nx.DiGraph) -> list[int] | None:
    try:
        edges = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        return None
    return [u for u, _ in edges]


def find_cycle(mask: np.ndarray) -> list[int] | None:
    """A directed cycle ``[v0, ..., vk]`` (edges ``v_i -> v_{i+1}`` and ``vk -> v0``) or None.

    Depth-first search from the lowest index, successors in index order: the cycle closed by the
    first back edge met.
    """
    return _cycle(index_digraph(mask))


def is_dag(mask: np.ndarray) -> bool:
    """``True`` if ``mask`` has no directed cycle."""
    return nx.is_directed_acyclic_graph(index_digraph(mask))


def topological_order(mask: np.ndarray) -> list[int] | None:
    """Indices with every edge going forward, the lowest index first among ready nodes.

    Returns:
        the order, or ``None`` if ``mask`` has a cycle.
    """
    try:
        return list(nx.lexicographical_topological_sort(index_digraph(mask)))
    except nx.NetworkXUnfeasible:
        return None


def generations(mask: np.ndarray) -> list[int]:
    """Longest-path layer of every node of a DAG (roots are layer 0).

    Raises:
        networkx.NetworkXUnfeasible: if ``mask`` has a cycle.
    """
    layer = [0] * mask.shape[0]
    for depth, members in enumerate(nx.topological_generations(index_digraph(mask))):
        for v in members:
            layer[v] = depth
    return layer


def to_dag(adjacency: np.ndarray) -> np.ndarray:
    """A copy of ``adjacency`` with edges removed until it is acyclic.

    Repeatedly takes the cycle of :func:`find_cycle` and sets its edge of smallest ``|w|`` to 0
    (ties: the first in row-major order).
    """
    adj = np.array(adjacency, dtype=np.float64)
    g = index_digraph(adj != 0)
    while (cycle := _cycle(g)) is not None:
        cycle_edges = list(zip(cycle, cycle[1:] + cycle[:1]))
        i, j = min(cycle_edges, key=lambda e: (abs(adj[e]), e))
        adj[i, j] = 0.0
        g.remove_edge(i, j)  # the other edges keep their order
    return adj


def extension_order(directed: np.ndarray, undirected: np.ndarray) -> list[int] | None:
    """A topological order of the directed edges that also orders the undirected ones well.

    Kahn's algorithm over the directed edges in which, among the ready tasks (every directed
    parent placed), the one with the most already placed undirected neighbours goes next (ties:
    the lowest index): a maximum cardinality search inside every undirected component.
    Orienting each undirected edge from the earlier to the later task is then acyclic, and when
    the graph is a CPDAG it adds no v-structure: in a CPDAG every task of an undirected
    component has the same directed parents (so a component's tasks become ready together),
    the components are chordal, and a maximum cardinality search of a chordal graph places
    every task after a clique of its neighbours. Without undirected edges this is
    :func:`topological_order`.

    Args:
        directed: ``[T, T]`` boolean mask of the directed edges (``i -> j``).
        undirected: ``[T, T]`` symmetric boolean mask of the undirected edges.

    Returns:
        the order, or ``None`` if the directed edges have a cycle.
    """
    n = directed.shape[0]
    indegree = directed.sum(axis=0).astype(int)
    placed_neighbours = np.zeros(n, dtype=int)
    done = np.zeros(n, dtype=bool)
    order: list[int] = []
    for _ in range(n):
        ready = np.flatnonzero(~done & (indegree == 0))
        if ready.size == 0:
            return None
        v = int(ready[np.argmax(placed_neighbours[ready])])  # argmax: first (lowest) on ties
        order.append(v)
        done[v] = True
        indegree -= directed[v].astype(int)
        placed_neighbours += undirected[v].astype(int)
    return order


def orient_undirected(directed: np.ndarray, undirected: np.ndarray) -> np.ndarray | None:
    """The DAG mask that orients every undirected edge along :func:`extension_order`.

    For a CPDAG this is a member of its Markov equivalence class (same skeleton and
    v-structures); for any graph whose directed edges are acyclic it is acyclic.

    Returns:
        the ``[T, T]`` boolean mask, or ``None`` if the directed edges have a cycle.
    """
    order = extension_order(directed, undirected)
    if order is None:
        return None
    rank = np.empty(len(order), dtype=int)
    rank[order] = np.arange(len(order))
    forward = rank[:, None] < rank[None, :]
    return directed | (undirected & forward)
