"""Node-link JSON (``networkx.node_link_data(g, edges="edges")``, ``"directed": true``).

Nodes and edges follow :mod:`taskgraph.graph.convert`; the graph-level record is stored with native
JSON values under ``"graph"``, and a top-level ``"taskgraph": {"version": 1, "format":
"node-link"}`` marks the file. The reader also takes node-link files of other tools (``"links"``
instead of ``"edges"``, no marker): those load as plain directed graphs.
"""

from __future__ import annotations

import json
from typing import IO, TYPE_CHECKING

import networkx as nx

from taskgraph.exceptions import GraphFormatError
from taskgraph.graph.convert import FORMAT_VERSION, _file_graph, _header_native, from_networkx

if TYPE_CHECKING:  # pragma: no cover
    from taskgraph.graph.core import TaskGraph


def write_json(graph: TaskGraph, fh: IO[bytes]) -> None:
    """Write ``graph`` as indented UTF-8 node-link JSON to the binary file ``fh``."""
    g = _file_graph(graph, xml_safe=False)
    g.graph.clear()
    g.graph.update(_header_native(graph))
    data = {"taskgraph": {"version": FORMAT_VERSION, "format": "node-link"}}
    data.update(nx.node_link_data(g, edges="edges"))
    text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False)
    fh.write((text + "\n").encode("utf-8"))


def read_json(cls: type[TaskGraph], data: bytes) -> TaskGraph:
    """Parse node-link JSON ``data`` written by :func:`write_json` or by another tool."""
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
    return from_networkx(cls, g, None, strict=strict)
