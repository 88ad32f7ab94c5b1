r"""Bootstrap edge stability: how often a structure search finds each edge on resampled rows.

For ``B = n_boot`` resamples :math:`D^{(1)}, \dots, D^{(B)}` of the ``N`` rows of the data, each
drawn uniformly *with replacement* (``N`` rows each, intervention masks ``do`` kept with their
rows), and a search that maps a data set to a ``[T, T]`` boolean adjacency :math:`\hat A`, the
confidence of the directed entry ``i → j`` is

.. math::
    c_{ij} = \frac{1}{B} \sum_{b=1}^{B} \mathbf{1}\big[\hat A(D^{(b)})_{ij}\big],

a value in ``[0, 1]``. An undirected edge ``i — j`` of the search (present in both directions)
counts for both ``i → j`` and ``j → i``, so ``max(c_ij, c_ji)`` is the stability of the pair's
adjacency and ``c_ij`` alone that of the orientation as well. Pass the result as
``TaskGraph(..., confidence=c)`` to export it as the edge attribute ``confidence`` and draw
unstable edges faded (:meth:`~taskgraph.graph.TaskGraph.plot`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from taskgraph.exceptions import ValidationError

__all__ = ["bootstrap_confidence", "hybrid_adjacency"]


def hybrid_adjacency(data: Any) -> np.ndarray:
    """The default search: ``dag | undirected`` of one
    :func:`~taskgraph.structure.score_search.hybrid_search` run."""
    from taskgraph.structure.score_search import hybrid_search

    dag, undirected, _ = hybrid_search(data)
    return np.asarray(dag, dtype=bool) | np.asarray(undirected, dtype=bool)


def bootstrap_confidence(
    data: Any,
    search: Callable[[Any], Any] | None = None,
    *,
    n_boot: int = 20,
    seed: int = 0,
) -> np.ndarray:
    r"""Fraction of bootstrap resamples of ``data`` in which ``search`` finds each edge.

    :math:`c_{ij} = \frac{1}{B}\sum_{b=1}^{B} \mathbf{1}[\hat A(D^{(b)})_{ij}]` over ``B =
    n_boot`` row resamples :math:`D^{(b)}` drawn with replacement (see the module docstring).

    Args:
        data (MultiTaskData): the data set; resampled with :meth:`MultiTaskData.subset`, which
            keeps ``env`` and ``do`` with their rows.
        search (callable, optional): maps a :class:`~taskgraph.data.MultiTaskData` to a
            ``[T, T]`` adjacency (bool, or any array whose non-zero entries are edges
            ``i → j``). (default: ``None``, one
            :func:`~taskgraph.structure.score_search.hybrid_search` per resample and its
            ``dag | undirected``; needs all-classification tasks)
        n_boot (int): number of resamples ``B``, at least 1. (default: ``20``)
        seed (int): seed of the :func:`numpy.random.default_rng` that draws the rows.
            (default: ``0``)

    Returns:
        numpy.ndarray: ``[T, T]`` float64 confidences in ``[0, 1]`` (multiples of
        ``1 / n_boot``), ready for ``TaskGraph(..., confidence=...)``.

    Raises:
        ValidationError: if ``n_boot`` is not an integer ``>= 1``, ``data`` has no rows, or
            ``search`` returns an array that is not ``[T, T]``.
    """
    if isinstance(n_boot, (bool, np.bool_)) or not isinstance(n_boot, (int, np.integer)):
        raise ValidationError(f"n_boot: expected an integer >= 1, got {n_boot!r}")
    if n_boot < 1:
        raise ValidationError(f"n_boot: expected an integer >= 1, got {n_boot!r}")
    if search is None:
        search = hybrid_adjacency
    elif not callable(search):
        raise ValidationError(f"search: expected a callable, got {type(search).__name__}")
    n_rows, n_tasks = len(data), data.n_tasks
    if n_rows == 0:
        raise ValidationError("data: cannot resample a data set without rows")
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_tasks, n_tasks), dtype=np.int64)
    for _ in range(int(n_boot)):
        rows = rng.integers(0, n_rows, size=n_rows)
        adj = search(data.subset(rows))
        if hasattr(adj, "detach"):  # a torch tensor
            adj = adj.detach().cpu().numpy()
        adj = np.asarray(adj)
        if adj.shape != (n_tasks, n_tasks):
            raise ValidationError(
                f"search: expected a [{n_tasks}, {n_tasks}] adjacency, got shape "
                f"{list(adj.shape)}"
            )
        counts += adj != 0
    return counts / float(n_boot)
