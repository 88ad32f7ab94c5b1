r"""DOT for Graphviz, written through networkx and pydot. Export-only.

The file is ``networkx.drawing.nx_pydot.to_pydot(g).to_string()`` of a graph built for drawing:

- every node id and attribute value is a DOT double-quoted string in which ``\`` is written
  ``\\`` and ``"`` is written ``\"``, so any task name (quotes, backslashes, ``->``, ``:``,
  keywords such as ``node``, unicode) is one node id and Graphviz labels render it verbatim;
- nodes are the tasks, then the modules, with the attributes of :mod:`taskgraph.graph.convert`
  (``kind``, ``index``, ``label``) and drawing hints (``shape``, ``style``, ``fillcolor``);
- edges exist only for non-zero weights: task edges with ``kind="task"``, ``edge_weight`` (written
  with :func:`repr`, exact), ``raw``, ``confidence`` and ``candidate`` when the graph has them,
  coloured blue for positive and red for negative weights with ``penwidth`` growing with
  ``|w|``; with ``confidence`` the colour carries an alpha byte ``0.15 + 0.85 c`` (``#RRGGBBAA``,
  as :meth:`TaskGraph.plot` fades unstable edges); an undirected edge ``i — j`` (``i`` first in
  task order) is *one* edge ``i -> j`` drawn with ``dir="none"`` (no arrowhead) and
  ``undirected="true"``, whose ``edge_weight`` is the weight of ``i -> j`` and
  ``edge_weight_reverse`` the weight of ``j -> i`` (``raw``, ``confidence`` and ``candidate``
  are those of ``i -> j``; with confidence also ``confidence_reverse``, that of ``j -> i``, and
  the alpha of the larger one); every other task edge has ``undirected="false"`` when the graph
  has undirected edges; routing edges module → task with ``kind="routing"``, ``edge_weight`` =
  gate, dashed grey;
- graph attributes: ``rankdir="LR"``, ``taskgraph_version``, ``learned`` and ``taskgraph_meta``
  (the meta as a JSON object); Graphviz ignores the attributes it does not know.

The weight is ``edge_weight``, not ``weight``: Graphviz reads ``weight`` as a layout weight that
must be a non-negative integer in ``dot`` (negative or fractional task weights would be
misread, and very large ones make ``dot`` fail), so no ``weight`` attribute is written.

taskgraph does not read DOT back: :meth:`TaskGraph.load` raises a
:class:`~taskgraph.exceptions.ValidationError` (:data:`EXPORT_ONLY`). GraphML and node-link JSON
are the lossless formats.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

import networkx as nx
import numpy as np

from taskgraph.exceptions import MissingDependencyError
from taskgraph.graph.convert import FORMAT_VERSION, to_networkx
from taskgraph.graph.drawing import MODULE_FILL, NEG_COLOR, POS_COLOR, ROUTING_COLOR, TASK_FILL
from taskgraph.graph.validation import _json_dumps

if TYPE_CHECKING:  # pragma: no cover
    from taskgraph.graph.core import TaskGraph

EXPORT_ONLY = (
    "DOT is an export-only format (written for Graphviz; taskgraph does not read it back). "
    "Save the graph as GraphML (.graphml) or node-link JSON (.json) for a lossless round trip"
)
"""Why :meth:`TaskGraph.load` refuses DOT files."""


def _quote(text: str) -> str:
    """``text`` as a DOT double-quoted string (``\\`` and ``"`` escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _attrs(attrs: Mapping[str, Any]) -> dict[str, str]:
    """Attribute values quoted for DOT (pydot leaves quoted strings as they are)."""
    return {key: _quote(_value(value)) for key, value in attrs.items()}


def _dot_graph(graph: TaskGraph) -> nx.DiGraph:
    """The graph handed to ``to_pydot``: quoted node ids and values plus drawing attributes."""
    g = to_networkx(graph)
    wmax = float(np.abs(graph._adj).max()) or 1.0
    out = nx.DiGraph(name="taskgraph")
    out.graph["graph"] = _attrs(
        {
            "rankdir": "LR",
            "taskgraph_version": FORMAT_VERSION,
            "learned": graph._learned,
            "taskgraph_meta": _json_dumps(graph._meta),
        }
    )
    for node, data in g.nodes(data=True):
        if data["kind"] == "task":
            style = {"shape": "ellipse", "style": "filled", "fillcolor": TASK_FILL}
        else:
            style = {"shape": "box", "style": "filled", "fillcolor": MODULE_FILL}
        out.add_node(_quote(node), **_attrs({**data, **style}))
    index = {name: i for i, name in enumerate(graph._names)}
    for u, v, data in g.edges(data=True):
        w = data["weight"]
        attrs = {"edge_weight": w, **{k: x for k, x in data.items() if k != "weight"}}
        if data.get("undirected"):
            if index[u] > index[v]:
                continue  # drawn once, from the earlier task
            attrs["edge_weight_reverse"] = float(graph._adj[index[v], index[u]])
            if graph._conf is not None:
                attrs["confidence_reverse"] = float(graph._conf[index[v], index[u]])
            attrs["dir"] = "none"
        if data["kind"] == "task":
            color = POS_COLOR if w > 0 else NEG_COLOR
            if "confidence" in data:
                conf = max(data["confidence"], attrs.get("confidence_reverse", 0.0))
                color += f"{round(255 * (0.15 + 0.85 * conf)):02x}"
            style = {
                "color": color,
                "penwidth": f"{0.5 + 3.0 * (abs(w) / wmax):.3g}",  # ratio first: no overflow
            }
        else:
            style = {"color": ROUTING_COLOR, "style": "dashed", "penwidth": f"{0.5 + 2.0 * w:.3g}"}
        out.add_edge(_quote(u), _quote(v), **_attrs({**attrs, **style}))
    return out


def write_dot(graph: TaskGraph, fh: IO[bytes]) -> None:
    """Write ``graph`` as UTF-8 DOT to the binary file ``fh``.

    Raises:
        MissingDependencyError: if pydot is not installed.
    """
    try:
        import pydot  # noqa: F401  (imported by networkx's to_pydot)
    except ImportError as exc:
        raise MissingDependencyError(
            "writing DOT files needs the package pydot (pip install pydot)"
        ) from exc
    text = nx.nx_pydot.to_pydot(_dot_graph(graph)).to_string()
    fh.write(text.encode("utf-8"))
