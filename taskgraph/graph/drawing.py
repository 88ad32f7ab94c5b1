"""Drawing a task graph with matplotlib: :meth:`TaskGraph.plot` and the colours of every export.

Task edges are solid arrows, blue (:data:`POS_COLOR`) for positive and red (:data:`NEG_COLOR`)
for negative weights; routing edges are dashed grey (:data:`ROUTING_COLOR`) arrows module → task.
Tasks are circles filled with :data:`TASK_FILL`, modules squares filled with :data:`MODULE_FILL`.
The DOT export uses the same colours. matplotlib is imported only when a graph is drawn, and only
its object API (Agg canvas) is used: no pyplot state is touched.
"""

from __future__ import annotations

import math
import numbers
import os
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np

from taskgraph._io import atomic_write
from taskgraph.exceptions import ValidationError
from taskgraph.graph.algorithms import generations

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from taskgraph.graph.core import TaskGraph

__all__ = ["plot", "layout_positions"]

POS_COLOR = "#1f77b4"
NEG_COLOR = "#d62728"
ROUTING_COLOR = "#7f7f7f"
TASK_FILL = "#cfe2f3"
MODULE_FILL = "#fce5cd"


def _draw_nodes(ax: Axes, xy: list[Any], size: float, marker: str, fill: str) -> None:
    """One scatter of nodes (tasks: circles, modules: squares) above the edges."""
    arr = np.array(xy)
    ax.scatter(arr[:, 0], arr[:, 1], s=size, marker=marker, c=fill, edgecolors="black",
               linewidths=1.0, zorder=3, clip_on=False)


def plot(
    graph: TaskGraph,
    path: str | os.PathLike[str] | None = None,
    ax: Axes | None = None,
    threshold: float = 0.0,
    *,
    layout: str | Mapping[str, tuple[float, float]] = "auto",
    show_modules: bool = True,
    node_size: float = 1200.0,
    font_size: float = 9.0,
    figsize: tuple[float, float] | None = None,
    dpi: int = 150,
    title: str | None = None,
) -> Figure:
    """Draw ``graph``; the arguments are those of :meth:`TaskGraph.plot`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch

    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, numbers.Real):
        raise ValidationError(f"threshold: expected a real number, got {threshold!r}")
    fmt = None
    if path is not None:
        fmt = Path(path).suffix.lower().lstrip(".") or "png"
        supported = FigureCanvasAgg(Figure()).get_supported_filetypes()
        if fmt not in supported:
            raise ValidationError(
                f"path: cannot write a {fmt!r} image; supported suffixes: {sorted(supported)}"
            )
    draw_modules = show_modules and graph._routing is not None
    pos = layout_positions(graph, layout, draw_modules)

    if ax is None:
        xy = np.array(list(pos.values()))
        width, height = np.ptp(xy[:, 0]), np.ptp(xy[:, 1])
        size = (min(16.0, 4.0 + 1.3 * width), min(12.0, 3.0 + 1.3 * height))
        fig = Figure(figsize=figsize or size)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    else:
        fig = ax.figure  # type: ignore[assignment]
    ax.set_axis_off()
    shrink = math.sqrt(node_size) / 2 + 2

    shown = np.abs(graph._adj) > threshold
    wmax = float(np.abs(graph._adj[shown]).max()) if shown.any() else 1.0
    task_xy = np.array([pos[n] for n in graph._names])
    for i, j in zip(*np.nonzero(shown)):
        w = float(graph._adj[i, j])
        # Curve reciprocal edges apart, and edges that would run straight through a node.
        bend = 0.15 if shown[j, i] else 0.0
        if _passes_through(task_xy, i, j):
            bend = 0.35
        ax.add_patch(
            FancyArrowPatch(
                pos[graph._names[i]],
                pos[graph._names[j]],
                arrowstyle="-|>",
                mutation_scale=14,
                linewidth=0.8 + 3.2 * abs(w) / wmax,
                color=POS_COLOR if w > 0 else NEG_COLOR,
                connectionstyle=f"arc3,rad={bend}",
                shrinkA=shrink,
                shrinkB=shrink,
                zorder=2,
            )
        )
    if draw_modules:
        assert graph._routing is not None
        n = graph.n_tasks
        all_xy = np.vstack([task_xy, np.array([pos[m] for m in graph._modules])])
        for t, k in zip(*np.nonzero(graph._routing)):
            bend = 0.25 if _passes_through(all_xy, n + k, t) else 0.0
            ax.add_patch(
                FancyArrowPatch(
                    pos[graph._modules[k]],
                    pos[graph._names[t]],
                    arrowstyle="-|>",
                    mutation_scale=10,
                    linewidth=0.5 + 2.5 * float(graph._routing[t, k]),
                    linestyle="--",
                    connectionstyle=f"arc3,rad={bend}",
                    color=ROUTING_COLOR,
                    shrinkA=shrink,
                    shrinkB=shrink,
                    zorder=1,
                )
            )
        _draw_nodes(ax, [pos[m] for m in graph._modules], node_size, "s", MODULE_FILL)
    _draw_nodes(ax, [pos[n] for n in graph._names], node_size, "o", TASK_FILL)
    labelled = list(graph._names) + (list(graph._modules) if draw_modules else [])
    for name in labelled:
        x, y = pos[name]
        ax.text(
            x,
            y,
            textwrap.fill(name, 12, break_long_words=False) if len(name) > 12 else name,
            ha="center",
            va="center",
            fontsize=font_size,
            zorder=4,
            parse_math=False,
            clip_on=False,
        )

    handles = [
        Line2D([], [], color=POS_COLOR, lw=2, label="positive weight"),
        Line2D([], [], color=NEG_COLOR, lw=2, label="negative weight"),
        Line2D(
            [],
            [],
            marker="o",
            ls="",
            markerfacecolor=TASK_FILL,
            markeredgecolor="black",
            markersize=9,
            label="task",
        ),
    ]
    if draw_modules:
        handles += [
            Line2D([], [], color=ROUTING_COLOR, lw=1.5, ls="--", label="routing gate"),
            Line2D(
                [],
                [],
                marker="s",
                ls="",
                markerfacecolor=MODULE_FILL,
                markeredgecolor="black",
                markersize=9,
                label="module",
            ),
        ]
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False
    )
    if title is None:
        title = f"{graph.n_tasks} tasks, {int(shown.sum())} edges"
        if "method" in graph._meta:
            title += f" ({graph._meta['method']})"
        if not graph._learned:
            title += " (not learned)"
    ax.set_title(title, fontsize=font_size + 1)
    ax.margins(0.15)
    ax.set_aspect("equal", adjustable="datalim")

    if path is not None:
        with atomic_write(path, "wb") as fh:
            fig.savefig(fh, format=fmt, dpi=dpi, bbox_inches="tight")
    return fig


def layout_positions(
    graph: TaskGraph, layout: str | Mapping[str, tuple[float, float]], with_modules: bool
) -> dict[str, tuple[float, float]]:
    """Positions ``{name: (x, y)}`` of the tasks (and modules) for :func:`plot`.

    ``"layered"`` puts every task in the column of its longest-path layer (roots left, tasks of
    a column in task order), ``"circular"`` on a circle in task order, ``"spring"`` where
    networkx's seeded spring layout of the skeleton puts it; modules go in a column left of all.
    """
    nodes = list(graph._names) + (list(graph._modules) if with_modules else [])
    if isinstance(layout, Mapping):
        missing = [n for n in nodes if n not in layout]
        if missing:
            raise ValidationError(f"layout: no position for {missing}")
        return {n: (float(layout[n][0]), float(layout[n][1])) for n in nodes}
    if layout not in ("auto", "layered", "circular", "spring"):
        raise ValidationError(
            f"layout: expected 'auto', 'layered', 'circular', 'spring' or a dict of "
            f"positions, got {layout!r}"
        )
    n = graph.n_tasks
    mask = graph._adj != 0
    if layout == "auto":
        layout = "layered" if mask.any() and graph.is_dag() else "circular"
    pos: dict[str, tuple[float, float]] = {}
    if layout == "layered":
        if not graph.is_dag():
            raise ValidationError("layout: 'layered' needs a DAG; use 'circular' or 'spring'")
        layers = generations(mask)
        for layer in sorted(set(layers)):
            members = [i for i in range(n) if layers[i] == layer]
            for r, i in enumerate(members):
                pos[graph._names[i]] = (1.5 * layer, (len(members) - 1) / 2 - r)
    elif layout == "spring":
        sk = nx.Graph()
        sk.add_nodes_from(range(n))
        sk.add_edges_from(zip(*np.nonzero(mask)))
        xy = nx.spring_layout(sk, seed=0, scale=max(1.0, n / 3))
        pos = {graph._names[i]: (float(xy[i][0]), float(xy[i][1])) for i in range(n)}
    else:
        radius = max(1.0, n / 4)
        for i in range(n):
            angle = math.pi / 2 - 2 * math.pi * i / n
            pos[graph._names[i]] = (radius * math.cos(angle), radius * math.sin(angle))
    if with_modules:
        xs = [p[0] for p in pos.values()]
        ys = [p[1] for p in pos.values()]
        k = graph.n_modules
        top, bottom = max(ys), min(ys)
        span = max(top - bottom, 1.0 * (k - 1))
        mid = (top + bottom) / 2
        for m, name in enumerate(graph._modules):
            y = mid + span / 2 - (span * m / (k - 1) if k > 1 else span / 2)
            pos[name] = (min(xs) - 2.0, y)
    return pos


def _passes_through(xy: np.ndarray, i: int, j: int, radius: float = 0.3) -> bool:
    """Whether the straight segment ``xy[i] -> xy[j]`` passes within ``radius`` of another node."""
    p, q = xy[i], xy[j]
    d = q - p
    length2 = float(d @ d)
    if length2 == 0.0:
        return False
    for m in range(len(xy)):
        if m in (i, j):
            continue
        t = float(np.clip((xy[m] - p) @ d / length2, 0.0, 1.0))
        if np.linalg.norm(p + t * d - xy[m]) < radius:
            return True
    return False
