"""A run's results as files a person opens: the task graph in every export format, its picture,
per-task metrics (JSON and a table) and ``report.html``, one self-contained page with the
picture embedded, the metrics table, the edge list and the exact command.

:func:`write_results` writes them into a folder that appears complete or not at all (built
beside it and renamed into place), so a failed run leaves ``--out`` as it was.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from taskgraph._io import json_safe
from taskgraph.graph import SUPPORTED_FORMATS, TaskGraph

__all__ = ["write_results", "atomic_dir", "check_out_dir", "render_html", "metrics_rows"]


def check_out_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as a results folder: absent, empty, or an earlier result (it holds
    ``command.txt``); anything else is refused, since the folder is replaced as a whole."""
    from taskgraph.exceptions import ValidationError

    target = Path(path)
    if target.exists() and (not target.is_dir() or (
            any(target.iterdir()) and not (target / "command.txt").is_file())):
        raise ValidationError(f"--out: {str(target)!r} exists and is not an earlier taskgraph "
                              "result folder; choose a new or empty folder (it is replaced "
                              "as a whole)")
    return target


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path`` (an
    existing folder is swapped out and removed), on an exception it is deleted and ``path`` is
    untouched."""
    target = check_out_dir(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)         # mkdtemp makes 0700; a result folder is ordinary
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def metrics_rows(metrics: Mapping[str, float], kinds: Mapping[str, str]) -> list[dict[str, Any]]:
    """``evaluate()``'s flat ``{"task/metric": v}`` as one row per task."""
    rows: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        if "/" not in key:
            continue
        task, metric = key.rsplit("/", 1)
        rows.setdefault(task, {"task": task, "kind": kinds.get(task, "")})[metric] = value
    return list(rows.values())


def _metric_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return ["task", "kind"] + sorted({k for r in rows for k in r} - {"task", "kind"})


def _table_html(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape("" if v is None else str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(*, title: str, command: str, png: bytes | None, graph: TaskGraph,
                metrics: Sequence[Mapping[str, Any]] | None, summary: Mapping[str, Any]
                ) -> str:
    """The report page (plain HTML, the picture embedded as a data URI)."""
    edges = [{"source": s, "target": t, "weight": w} for s, t, w in graph.edges()]
    confidence = graph.meta.get("confidence")
    edge_cols = ["source", "target", "weight"] + (["confidence"] if confidence else [])
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:.3em .6em;text-align:left}th{background:#f3f3f3}"
        "code{background:#f6f6f6;padding:.2em .4em}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Command: <code>{html.escape(command)}</code></p>",
        _table_html([{"item": k, "value": v} for k, v in summary.items()], ["item", "value"]),
        "<h2>Task graph</h2>",
        f"<p>Tasks: {', '.join(html.escape(n) for n in graph.names)}. "
        f"{graph.n_edges} task → task edges"
        f"{'' if graph.learned else ' (not learned by this method)'}.</p>",
    ]
    if png is not None:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<img alt='task graph' src='data:image/png;base64,{data}' "
                     f"style='max-width:100%'>")
    parts.append("<h2>Edges</h2>")
    parts.append(_table_html(edges, edge_cols) if edges else "<p>No edges.</p>")
    if metrics:
        parts += ["<h2>Validation metrics</h2>", _table_html(metrics, _metric_columns(metrics))]
    parts.append(f"<p><small>Written {time.strftime('%Y-%m-%d %H:%M')} by taskgraph.</small>"
                 f"</p></body></html>")
    return "\n".join(parts)


def write_results(out: str | os.PathLike[str], *, graph: TaskGraph, command: str,
                  title: str, summary: Mapping[str, Any],
                  metrics: Mapping[str, float] | None = None,
                  kinds: Mapping[str, str] | None = None, learner: Any = None) -> Path:
    """Write a run into the folder ``out`` atomically: ``model.pt`` (when a learner is given),
    ``graph.<format>`` for every export format, ``graph.png``, ``metrics.json`` and
    ``metrics.txt`` (when metrics are given), ``command.txt`` and ``report.html``."""
    from taskgraph.metrics import format_table

    rows = None if metrics is None else metrics_rows(metrics, kinds or {})
    with atomic_dir(out) as tmp:
        if learner is not None:
            learner.save(tmp / "model.pt")
        for fmt in SUPPORTED_FORMATS:
            graph.save(tmp / f"graph.{fmt}", format=fmt)
        graph.plot(tmp / "graph.png", title=title)
        png = (tmp / "graph.png").read_bytes()
        if metrics is not None:
            (tmp / "metrics.json").write_text(json.dumps(json_safe(dict(metrics)), indent=2,
                                                         sort_keys=True))
            (tmp / "metrics.txt").write_text(
                format_table(rows, _metric_columns(rows), floatfmt=".4f") + "\n")
        (tmp / "command.txt").write_text(command + "\n")
        (tmp / "report.html").write_text(render_html(
            title=title, command=command, png=png, graph=graph, metrics=rows,
            summary=summary), encoding="utf-8")
    return Path(out)
