"""GraphML through networkx: every attribute typed, the graph-level record as graph attributes.

Nodes, edges and graph attributes follow :mod:`taskgraph.graph.convert`. Besides the exact record
(``taskgraph_version``, ``learned``, ``taskgraph_meta``, ...), each meta item is also written as a
plain graph attribute for readability, except keys networkx writers treat specially (e.g. ``id``);
on load ``taskgraph_meta`` wins. Weights are doubles, written with :func:`repr` by networkx, so
float64 values round-trip bit-exactly.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING

import networkx as nx

from taskgraph.exceptions import GraphFormatError
from taskgraph.graph.convert import _file_graph, from_networkx

if TYPE_CHECKING:  # pragma: no cover
    from taskgraph.graph.core import TaskGraph


def write_graphml(graph: TaskGraph, fh: IO[bytes]) -> None:
    """Write ``graph`` as UTF-8 GraphML to the binary file ``fh``."""
    nx.write_graphml(_file_graph(graph, xml_safe=True), fh, encoding="utf-8", prettyprint=True)


def read_graphml(cls: type[TaskGraph], data: bytes) -> TaskGraph:
    """Parse GraphML ``data`` written by :func:`write_graphml` or by another tool."""
    try:
        g = nx.parse_graphml(data)
    except Exception as exc:
        raise GraphFormatError(
            f"not a readable GraphML document ({type(exc).__name__}: {exc})"
        ) from exc
    return from_networkx(cls, g, None, strict="taskgraph_version" in g.graph)
