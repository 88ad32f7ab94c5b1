"""Graph files: the suffix table, the dispatcher and atomic writes.

=========  =====================  ===========  =============================================
format     suffixes               load         module
=========  =====================  ===========  =============================================
graphml    ``.graphml``           exact        :mod:`taskgraph.graph.readwrite.graphml`
gexf       ``.gexf``              exact        :mod:`taskgraph.graph.readwrite.gexf`
json       ``.json``              exact        :mod:`taskgraph.graph.readwrite.json` (node-link)
dot        ``.dot``, ``.gv``      export-only  :mod:`taskgraph.graph.readwrite.dot` (Graphviz)
csv        ``.csv``               export-only  :mod:`taskgraph.graph.readwrite.csv` (edge list)
=========  =====================  ===========  =============================================

Every file is written atomically (:func:`taskgraph._io.atomic_write`): it appears complete or not
at all, and a previous file is left unchanged when writing fails. GraphML, GEXF and node-link JSON
share the networkx schema of :mod:`taskgraph.graph.convert` and load back to an equal graph (names
verbatim, float64 weights bit-exact, meta with its types); files of other tools in these formats
load when they are plain directed graphs (every node a task, a missing ``weight`` is 1). DOT and
CSV are for other tools only: loading them raises a :class:`~taskgraph.exceptions.ValidationError`
that says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from taskgraph._io import atomic_write
from taskgraph.exceptions import GraphFileError, GraphFormatError, ValidationError
from taskgraph.graph.readwrite import csv as _csv
from taskgraph.graph.readwrite import dot as _dot
from taskgraph.graph.readwrite.gexf import read_gexf, write_gexf
from taskgraph.graph.readwrite.graphml import read_graphml, write_graphml
from taskgraph.graph.readwrite.json import read_json, write_json

if TYPE_CHECKING:  # pragma: no cover
    from taskgraph.graph.core import TaskGraph

__all__ = ["SUPPORTED_FORMATS", "LOADABLE_FORMATS", "save", "load"]

SUPPORTED_FORMATS: tuple[str, ...] = ("graphml", "gexf", "json", "dot", "csv")
"""File formats of :meth:`TaskGraph.save`."""

LOADABLE_FORMATS: tuple[str, ...] = ("graphml", "gexf", "json")
"""File formats of :meth:`TaskGraph.load` (DOT and CSV are export-only)."""

_SUFFIX_FORMATS = {
    ".graphml": "graphml",
    ".gexf": "gexf",
    ".json": "json",
    ".dot": "dot",
    ".gv": "dot",
    ".csv": "csv",
}
_FORMAT_ALIASES = {"node-link": "json", "node_link": "json", "nodelink": "json", "gv": "dot"}

_WRITERS: dict[str, Callable[[TaskGraph, IO[bytes]], None]] = {
    "graphml": write_graphml,
    "gexf": write_gexf,
    "json": write_json,
    "dot": _dot.write_dot,
    "csv": _csv.write_csv,
}
_READERS: dict[str, Callable[[type[TaskGraph], bytes], TaskGraph]] = {
    "graphml": read_graphml,
    "gexf": read_gexf,
    "json": read_json,
}
_EXPORT_ONLY = {"dot": _dot.EXPORT_ONLY, "csv": _csv.EXPORT_ONLY}


def _resolve_format(
    path: Any, format: str | None, formats: tuple[str, ...] = SUPPORTED_FORMATS
) -> tuple[Path, str]:
    """The path and the format name: ``format`` (or an alias) or the one of the suffix.

    ``formats`` are the ones an error message offers.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ValidationError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    target = Path(path)
    if format is None:
        fmt = _SUFFIX_FORMATS.get(target.suffix.lower())
        if fmt is None:
            suffixes = sorted(s for s, f in _SUFFIX_FORMATS.items() if f in formats)
            raise ValidationError(
                f"path: cannot infer the file format of {str(target)!r} from its suffix "
                f"{target.suffix!r}; use one of {suffixes} or pass format= one of {list(formats)}"
            )
        return target, fmt
    if not isinstance(format, str):
        raise ValidationError(f"format: expected a str, got {type(format).__name__}")
    fmt = _FORMAT_ALIASES.get(format.lower(), format.lower())
    if fmt not in SUPPORTED_FORMATS:
        raise ValidationError(
            f"format: unknown graph file format {format!r}; supported: {list(formats)}"
        )
    return target, fmt


def save(
    graph: TaskGraph,
    path: str | os.PathLike[str],
    format: str | None = None,
    *,
    all_ranks: bool = False,
) -> Path:
    """Write ``graph`` to ``path`` atomically (see :meth:`TaskGraph.save`)."""
    target, fmt = _resolve_format(path, format)
    from taskgraph.distributed import is_main_process

    if not (all_ranks or is_main_process()):
        return target
    try:
        with atomic_write(target, "wb") as fh:
            _WRITERS[fmt](graph, fh)
    except GraphFileError:
        raise
    except OSError as exc:
        raise GraphFileError(f"cannot write {str(target)!r}: {exc}") from exc
    return target


def load(
    cls: type[TaskGraph], path: str | os.PathLike[str], format: str | None = None
) -> TaskGraph:
    """Read a ``cls`` from ``path`` (see :meth:`TaskGraph.load`)."""
    source, fmt = _resolve_format(path, format, LOADABLE_FORMATS)
    if fmt in _EXPORT_ONLY:
        raise ValidationError(f"cannot load {str(source)!r}: {_EXPORT_ONLY[fmt]}")
    try:
        data = source.read_bytes()
    except FileNotFoundError as exc:
        raise GraphFileError(f"cannot read {str(source)!r}: no such file") from exc
    except OSError as exc:
        raise GraphFileError(f"cannot read {str(source)!r}: {exc.strerror or exc}") from exc
    try:
        return _READERS[fmt](cls, data)
    except ValidationError as exc:
        raise GraphFormatError(
            f"{str(source)!r} is not a valid task graph ({fmt}): {exc}"
        ) from exc
