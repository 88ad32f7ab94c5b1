r"""The task graph: a learned causal graph over the tasks of a multi-task problem.

A :class:`TaskGraph` holds a weighted adjacency matrix ``A[src, dst]`` over the tasks (``A[i, j]
!= 0`` means task ``i`` → task ``j``, as in PyG, networkx and NOTEARS; weights are float and may be
negative), the task names in their fixed order, and optionally

- ``routing[T, K]``: MT-CRL gates in ``[0, 1]``, how much task ``t`` reads encoder module ``k``,
  exported as *module → task* edges;
- ``candidates[T, T]``: the boolean search space of structure learning;
- ``raw[T, T]``: un-thresholded weights (e.g. edge probabilities) kept beside the adjacency;
- ``confidence[T, T]``: edge stability in ``[0, 1]`` (e.g. bootstrap frequencies,
  :func:`taskgraph.structure.bootstrap.bootstrap_confidence`), the edge attribute ``confidence``;
- ``undirected[T, T]``: the symmetric mark of edges ``i — j`` the learner could not orient (both
  directions in the adjacency), as in a CPDAG;
- ``meta``: graph-level attributes (method, seed, threshold, ...) with str/int/float/bool values;
- ``learned``: ``False`` for learners without structure (an empty graph flagged as not learned).

Conversions: dense numpy/torch, PyG ``edge_index`` (``flow="source_to_target"``), networkx, and the
files GraphML, GEXF and node-link JSON, which load back to an equal graph (task names verbatim,
float64 weights bit-exact), plus the export-only DOT (Graphviz) and CSV (edge list).

**Task names** are any non-empty strings (unicode, spaces, quotes, commas, ``<``, ``&``,
backslashes) *without control characters* (Unicode category ``Cc``: newline, tab, ``\x00``, ...),
lone surrogates or the non-characters ``U+FFFE``/``U+FFFF``: those cannot be stored in XML 1.0
(GraphML, GEXF) and would be altered by line-based tools, so the constructor rejects them.

Modules of this package:

- :mod:`~taskgraph.graph.core`: the :class:`TaskGraph` value type;
- :mod:`~taskgraph.graph.validation`: argument checks;
- :mod:`~taskgraph.graph.convert`: the networkx schema shared by every file format;
- :mod:`~taskgraph.graph.algorithms`: cycles, topological order, layers, ``to_dag`` (networkx),
  the orientation of undirected edges;
- :mod:`~taskgraph.graph.equivalence`: the CPDAG of a DAG (causal-learn) and the edge-by-edge
  comparison of two graphs;
- :mod:`~taskgraph.graph.readwrite`: files, one module per format;
- :mod:`~taskgraph.graph.drawing`: :meth:`TaskGraph.plot` with matplotlib.
"""

from taskgraph.graph.convert import FORMAT_VERSION
from taskgraph.graph.core import TaskGraph
from taskgraph.graph.readwrite import (
    _READERS,  # noqa: F401  (the format tables, reachable as taskgraph.graph._WRITERS too)
    _WRITERS,  # noqa: F401
    LOADABLE_FORMATS,
    SUPPORTED_FORMATS,
)
from taskgraph.graph.validation import MetaValue

__all__ = ["TaskGraph", "SUPPORTED_FORMATS", "LOADABLE_FORMATS", "FORMAT_VERSION", "MetaValue"]
