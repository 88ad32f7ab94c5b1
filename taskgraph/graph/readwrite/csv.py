"""CSV: one plain edge list. Export-only.

The header is ``source,target,weight,kind,undirected`` (plus ``confidence`` when the graph has a
confidence matrix) and every row is one edge:

- task edges first, in row-major order of the adjacency: ``source`` and ``target`` are task names,
  ``weight`` the edge weight, ``kind`` is ``task``, ``undirected`` is ``true`` for both rows
  ``i,j`` and ``j,i`` of an undirected edge ``i — j`` and ``false`` otherwise, ``confidence``
  (when present) the edge's confidence;
- then routing edges (graphs with routing only), sorted by module, then task: ``source`` is the
  module, ``target`` the task, ``weight`` the gate, ``kind`` is ``routing``, ``undirected`` (and
  ``confidence``) empty.

Only non-zero weights are rows. Weights and confidences are written with :func:`repr`, which
round-trips every float64 exactly; names are quoted by the :mod:`csv` module where needed (commas,
quotes). The file is UTF-8 with ``\\n`` line ends. A graph without edges gives the header alone.

taskgraph does not read CSV back: an edge list cannot hold isolated tasks, the task order, the
candidate mask, raw weights and confidences of absent edges, ``learned`` or the meta, so a loaded
file would not equal the saved graph. :meth:`TaskGraph.load` raises a
:class:`~taskgraph.exceptions.ValidationError` (:data:`EXPORT_ONLY`); GraphML and node-link JSON
are the lossless formats. An edge list of another tool can be turned into a graph with
:meth:`TaskGraph.from_edge_index` or :meth:`TaskGraph.from_networkx`.
"""

from __future__ import annotations

import csv
import io
from typing import IO, TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from taskgraph.graph.core import TaskGraph

HEADER = ("source", "target", "weight", "kind", "undirected")
"""The columns of a CSV export (a graph with ``confidence`` adds the column ``confidence``)."""

EXPORT_ONLY = (
    "CSV is an export-only format (a plain edge list without isolated tasks, task order or meta; "
    "taskgraph does not read it back). Save the graph as GraphML (.graphml) or node-link JSON "
    "(.json) for a lossless round trip"
)
"""Why :meth:`TaskGraph.load` refuses CSV files."""


def write_csv(graph: TaskGraph, fh: IO[bytes]) -> None:
    """Write the edge list of ``graph`` as UTF-8 CSV to the binary file ``fh``."""
    buf = io.StringIO(newline="")
    out = csv.writer(buf, lineterminator="\n")
    names, modules, adj = graph._names, graph._modules, graph._adj
    conf = graph._conf
    out.writerow(HEADER if conf is None else (*HEADER, "confidence"))
    undirected = graph._undir
    for i, j in zip(*np.nonzero(adj)):
        mark = "true" if undirected is not None and undirected[i, j] else "false"
        row = [names[i], names[j], repr(float(adj[i, j])), "task", mark]
        out.writerow(row if conf is None else [*row, repr(float(conf[i, j]))])
    if graph._routing is not None:
        for k, t in zip(*np.nonzero(graph._routing.T)):
            row = [modules[k], names[t], repr(float(graph._routing[t, k])), "routing", ""]
            out.writerow(row if conf is None else [*row, ""])
    fh.write(buf.getvalue().encode("utf-8"))
