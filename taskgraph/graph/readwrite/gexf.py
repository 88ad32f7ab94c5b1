"""GEXF 1.2 through networkx, with the graph-level record as JSON in ``<meta><description>``.

GEXF has no graph attributes, so the exact record (``taskgraph_version``, ``learned``,
``taskgraph_meta``, ``taskgraph_candidates``, ``taskgraph_raw``, ``taskgraph_confidence`` as native
JSON values) is stored as one JSON object in the ``<description>`` element; nodes and edges follow
:mod:`taskgraph.graph.convert`. A GEXF file without such a description (another tool's) loads as a
plain directed graph.
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from typing import IO, TYPE_CHECKING, Any
from xml.sax.saxutils import escape as _xml_escape

import networkx as nx

from taskgraph.exceptions import GraphFormatError
from taskgraph.graph.convert import _file_graph, _header_native, from_networkx

if TYPE_CHECKING:  # pragma: no cover
    from taskgraph.graph.core import TaskGraph


def write_gexf(graph: TaskGraph, fh: IO[bytes]) -> None:
    """Write ``graph`` as UTF-8 GEXF 1.2 to the binary file ``fh``."""
    g = _file_graph(graph, xml_safe=True)
    g.graph.clear()
    buf = io.BytesIO()
    nx.write_gexf(g, buf, encoding="utf-8", prettyprint=True, version="1.2draft")
    text = buf.getvalue()
    blob = _xml_escape(json.dumps(_header_native(graph), ensure_ascii=True, allow_nan=False))
    description = f"<description>{blob}</description>".encode("ascii")
    at = text.find(b"</meta>")
    if at < 0:  # pragma: no cover - networkx always writes a <meta> element
        raise GraphFormatError("networkx wrote a GEXF file without a <meta> element")
    fh.write(text[:at] + description + text[at:])


def _gexf_header(data: bytes) -> dict[str, Any] | None:
    """The taskgraph record in ``<meta><description>``, or ``None`` for a foreign file."""
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


def read_gexf(cls: type[TaskGraph], data: bytes) -> TaskGraph:
    """Parse GEXF ``data`` written by :func:`write_gexf` or by another tool."""
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
    return from_networkx(cls, g, None, strict=header is not None)
