"""Drawing a task graph with matplotlib: :meth:`TaskGraph.plot` and the colours of every export.

Task edges are solid arrows, blue (:data:`POS_COLOR`) for positive and red (:data:`NEG_COLOR`)
for negative weights, width by ``|w|``; an undirected edge is one line without arrowheads. A
graph with ``confidence`` draws each task edge with opacity :func:`confidence_alpha` of its
confidence.
With ``truth=`` the colours and line styles say how each edge compares with the true graph
instead (:data:`COMPARE_STYLES`, the categories of
:func:`~taskgraph.graph.equivalence.compare_marks`). Routing gates above
``routing_threshold`` (:data:`ROUTING_THRESHOLD`) are dashed grey (:data:`ROUTING_COLOR`) arrows
module → task whose width and opacity grow with the gate. Tasks are circles filled with
:data:`TASK_FILL`, modules squares filled with :data:`MODULE_FILL`; labels are wrapped and the
nodes sized to hold them (:func:`fit_labels`). The DOT export uses the same colours. matplotlib
is imported only when a graph is drawn, and only its object API (Agg canvas) is used: no pyplot
state is touched.
"""

from __future__ import annotations

import math
import numbers
import os
import textwrap
from collections.abc import Callable, Mapping
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

__all__ = [
    "plot",
    "layout_positions",
    "fit_labels",
    "confidence_alpha",
    "COMPARE_STYLES",
    "ROUTING_THRESHOLD",
]

POS_COLOR = "#1f77b4"
NEG_COLOR = "#d62728"
ROUTING_COLOR = "#7f7f7f"
TASK_FILL = "#cfe2f3"
MODULE_FILL = "#fce5cd"

#: Gates at or below this value are left out of a drawing (``routing_threshold=``).
ROUTING_THRESHOLD = 0.1

#: ``category: (colour, line style, legend label)`` of an edge drawn against ``truth=``.
COMPARE_STYLES: dict[str, tuple[str, str, str]] = {
    "true_positive": ("#2ca02c", "-", "correct"),
    "reversed": ("#ff7f0e", "-", "reversed"),
    "unoriented": ("#17becf", "-.", "left undirected (true edge directed)"),
    "overoriented": ("#9467bd", "-.", "oriented (true edge undirected)"),
    "false_positive": ("#d62728", "--", "false positive (no true edge)"),
    "false_negative": ("#8c564b", ":", "missing (false negative)"),
}

#: Opacity of a task edge of confidence 0 (:func:`confidence_alpha`); confidence 1 is opaque.
MIN_CONFIDENCE_ALPHA = 0.15

LABEL_WIDTH = 12  #: characters per label line
LABEL_LINES = 3  #: label lines at most (the last one cut with an ellipsis)
MAX_NODE_SIZE = 3600.0  #: largest node area (points²) :func:`fit_labels` chooses


def confidence_alpha(confidence: float) -> float:
    """Edge opacity for a confidence ``c`` in ``[0, 1]``: ``0.15 + 0.85 c`` (never invisible)."""
    return MIN_CONFIDENCE_ALPHA + (1.0 - MIN_CONFIDENCE_ALPHA) * float(confidence)


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
    node_size: float | None = None,
    font_size: float | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: int = 150,
    title: str | None = None,
    truth: TaskGraph | Any = None,
    routing_threshold: float = ROUTING_THRESHOLD,
) -> Figure:
    """Draw ``graph``; the arguments are those of :meth:`TaskGraph.plot`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch

    _check_real(threshold, "threshold")
    _check_real(routing_threshold, "routing_threshold")
    if not 0.0 <= routing_threshold < 1.0:
        raise ValidationError(
            f"routing_threshold: expected a value in [0, 1), got {routing_threshold}"
        )
    fmt = None
    if path is not None:
        fmt = Path(path).suffix.lower().lstrip(".") or "png"
        supported = FigureCanvasAgg(Figure()).get_supported_filetypes()
        if fmt not in supported:
            raise ValidationError(
                f"path: cannot write a {fmt!r} image; supported suffixes: {sorted(supported)}"
            )
    true_mask = None if truth is None else _truth_mask(graph, truth)
    draw_modules = show_modules and graph._routing is not None
    placed = graph if true_mask is None else _layout_graph(graph, true_mask)
    pos = layout_positions(placed, layout, draw_modules)
    labelled = list(graph._names) + (list(graph._modules) if draw_modules else [])
    xy = np.array([pos[name] for name in labelled])

    if ax is None:
        width, height = np.ptp(xy[:, 0]), np.ptp(xy[:, 1])
        size = (min(24.0, 4.0 + 1.3 * width), min(24.0, 3.0 + 1.3 * height))
        fig = Figure(figsize=figsize or size)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    else:
        fig = ax.figure  # type: ignore[assignment]
    ax.set_axis_off()
    labels, node_size, font_size = fit_labels(
        labelled, node_size, font_size, max_diameter=_room_per_node(ax, xy)
    )
    shrink = math.sqrt(node_size) / 2 + 2
    task_xy = np.array([pos[n] for n in graph._names])

    def arrow(i: int, j: int, **style: Any) -> None:
        """One task edge ``i -> j`` (``directed=False``: a line without arrowheads)."""
        directed = style.pop("directed", True)
        bend = style.pop("bend", 0.0)
        if _passes_through(task_xy, i, j):
            bend = 0.35
        ax.add_patch(
            FancyArrowPatch(
                pos[graph._names[i]],
                pos[graph._names[j]],
                arrowstyle="-|>" if directed else "-",
                mutation_scale=14,
                connectionstyle=f"arc3,rad={bend}",
                shrinkA=shrink,
                shrinkB=shrink,
                zorder=2,
                **style,
            )
        )

    shown = (np.abs(graph._adj) > threshold) & ~np.eye(graph.n_tasks, dtype=bool)
    if true_mask is None:
        handles, n_shown = _draw_weighted(graph, shown, arrow)
    else:
        handles, n_shown = _draw_compared(graph, shown, true_mask, arrow)
    if draw_modules:
        handles += _draw_routing(ax, graph, pos, task_xy, shrink, routing_threshold)
        # a square of area s looks larger than a circle of area s
        _draw_nodes(ax, [pos[m] for m in graph._modules], 0.7 * node_size, "s", MODULE_FILL)
    _draw_nodes(ax, [pos[n] for n in graph._names], node_size, "o", TASK_FILL)
    for name, text in zip(labelled, labels):
        x, y = pos[name]
        ax.text(x, y, text, ha="center", va="center", fontsize=font_size, zorder=4,
                parse_math=False, clip_on=False)

    handles.append(_marker_handle("o", TASK_FILL, "task"))
    if draw_modules:
        handles.append(_marker_handle("s", MODULE_FILL, "module"))
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False
    )
    if title is None:
        title = f"{graph.n_tasks} tasks, {n_shown} edges"
        if "method" in graph._meta:
            title += f" ({graph._meta['method']})"
        if not graph._learned:
            title += " (not learned)"
        if true_mask is not None:
            title += " vs. truth"
    ax.set_title(title, fontsize=max(font_size, 9.0) + 1)
    ax.margins(0.15)
    ax.set_aspect("equal", adjustable="datalim")

    if path is not None:
        with atomic_write(path, "wb") as fh:
            fig.savefig(fh, format=fmt, dpi=dpi, bbox_inches="tight")
    return fig


def _check_real(value: Any, name: str) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValidationError(f"{name}: expected a real number, got {value!r}")
    if math.isnan(value):
        raise ValidationError(f"{name}: must not be NaN")


def _marker_handle(marker: str, fill: str, label: str) -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], marker=marker, ls="", markerfacecolor=fill, markeredgecolor="black",
                  markersize=9, label=label)


def _line_handle(color: str, label: str, ls: str = "-", lw: float = 2.0) -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], color=color, lw=lw, ls=ls, label=label)


def _draw_weighted(
    graph: TaskGraph, shown: np.ndarray, arrow: Callable[..., None]
) -> tuple[list[Any], int]:
    """Edges coloured by the sign of their weight, width by ``|w|``, opacity by confidence (when
    the graph has it); undirected ones once."""
    undirected = np.zeros_like(shown) if graph._undir is None else graph._undir & (shown | shown.T)
    adj, conf = graph._adj, graph._conf
    wmax = float(np.abs(adj[shown]).max()) if shown.any() else 1.0
    drawn_undirected = False
    for i, j in zip(*np.nonzero(shown | undirected)):
        if undirected[i, j]:
            if i > j:
                continue  # an undirected edge is drawn once
            w = adj[i, j] if abs(adj[i, j]) >= abs(adj[j, i]) else adj[j, i]
            drawn_undirected = True
        else:
            w = adj[i, j]
        style: dict[str, Any] = {}
        if conf is not None:
            c = max(conf[i, j], conf[j, i]) if undirected[i, j] else conf[i, j]
            style["alpha"] = confidence_alpha(c)
        arrow(
            int(i), int(j),
            directed=not undirected[i, j],
            bend=0.15 if shown[j, i] and not undirected[i, j] else 0.0,  # reciprocal: curved
            linewidth=0.8 + 3.2 * abs(float(w)) / wmax,
            color=POS_COLOR if w > 0 else NEG_COLOR,
            **style,
        )
    handles = [
        _line_handle(POS_COLOR, "positive weight"),
        _line_handle(NEG_COLOR, "negative weight"),
    ]
    if conf is not None:
        handles.append(_line_handle("black", "opacity = confidence", lw=1.0))
    if drawn_undirected:
        handles.append(_line_handle("black", "undirected edge (no arrowhead)", lw=1.0))
    n_shown = int(shown.sum()) - int(np.count_nonzero(np.triu(undirected & shown & shown.T)))
    return handles, n_shown


def _draw_compared(
    graph: TaskGraph, shown: np.ndarray, true_mask: np.ndarray, arrow: Callable[..., None]
) -> tuple[list[Any], int]:
    """Edges styled by their :func:`~taskgraph.graph.equivalence.compare_marks` category."""
    from taskgraph.graph.equivalence import CATEGORIES, compare_marks, two_way

    pred = two_way(shown, graph._undir)
    cats = compare_marks(pred, true_mask)
    strength = np.maximum(np.abs(graph._adj), np.abs(graph._adj).T) * (pred | pred.T)
    wmax = float(strength.max()) or 1.0
    handles: list[Any] = []
    any_undirected = False
    for cat in CATEGORIES:
        color, ls, label = COMPARE_STYLES[cat]
        mask = true_mask if cat == "false_negative" else pred
        for i, j in cats[cat]:
            directed = not (mask[i, j] and mask[j, i])
            any_undirected |= not directed
            width = 1.5 if cat == "false_negative" else 0.8 + 3.2 * strength[i, j] / wmax
            arrow(i, j, directed=directed, linewidth=width, color=color, linestyle=ls)
        if cats[cat]:
            handles.append(_line_handle(color, f"{label} ({len(cats[cat])})", ls=ls))
    if any_undirected:
        handles.append(_line_handle("black", "undirected edge (no arrowhead)", lw=1.0))
    return handles, int(np.count_nonzero(np.triu(pred | pred.T)))


def _draw_routing(
    ax: Axes,
    graph: TaskGraph,
    pos: Mapping[str, tuple[float, float]],
    task_xy: np.ndarray,
    shrink: float,
    routing_threshold: float,
) -> list[Any]:
    """Gates above ``routing_threshold`` as module → task arrows, width and opacity by gate."""
    from matplotlib.patches import FancyArrowPatch

    assert graph._routing is not None
    n = graph.n_tasks
    all_xy = np.vstack([task_xy, np.array([pos[m] for m in graph._modules])])
    for t, k in zip(*np.nonzero(graph._routing > routing_threshold)):
        gate = float(graph._routing[t, k])
        bend = 0.25 if _passes_through(all_xy, n + k, t) else 0.0
        ax.add_patch(
            FancyArrowPatch(
                pos[graph._modules[k]],
                pos[graph._names[t]],
                arrowstyle="-|>",
                mutation_scale=10,
                linewidth=0.4 + 1.6 * gate,
                linestyle="--",
                connectionstyle=f"arc3,rad={bend}",
                color=ROUTING_COLOR,
                alpha=0.15 + 0.65 * gate,
                shrinkA=shrink,
                shrinkB=shrink,
                zorder=1,
            )
        )
    label = "routing gate (width, opacity = gate"
    label += f"; > {routing_threshold:g})" if routing_threshold > 0 else ")"
    return [_line_handle(ROUTING_COLOR, label, ls="--", lw=1.5)]


def _truth_mask(graph: TaskGraph, truth: Any) -> np.ndarray:
    """The two-way mask of ``truth`` in ``graph``'s task order."""
    from taskgraph.graph.equivalence import two_way

    names = getattr(truth, "names", None)
    if names is not None:
        if sorted(names) != sorted(graph._names):
            raise ValidationError(
                f"truth: its tasks {list(names)} differ from the graph's {graph._names}"
            )
        perm = [list(names).index(n) for n in graph._names]
        adj = np.asarray(truth.adjacency)[np.ix_(perm, perm)]
        mark = truth.undirected
        mark = None if mark is None else np.asarray(mark)[np.ix_(perm, perm)]
    else:
        try:
            adj = np.asarray(truth, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValidationError(
                f"truth: expected a TaskGraph or a [T, T] array, got {type(truth).__name__}"
            ) from None
        mark = None
        if adj.shape != (graph.n_tasks, graph.n_tasks):
            raise ValidationError(
                f"truth: expected shape {[graph.n_tasks] * 2} (the graph's tasks in order), "
                f"got {list(adj.shape)}"
            )
    off = ~np.eye(graph.n_tasks, dtype=bool)
    return two_way((np.nan_to_num(adj) != 0) & off, mark)


def _layout_graph(graph: TaskGraph, true_mask: np.ndarray) -> TaskGraph:
    """The true graph over ``graph``'s tasks and modules: the positions follow the truth."""
    undirected = true_mask & true_mask.T
    return graph._evolve(
        adjacency=true_mask.astype(np.float64),
        undirected=undirected,
        candidates=None,
        raw=None,
        confidence=None,
    )


def fit_labels(
    names: list[str],
    node_size: float | None,
    font_size: float | None,
    max_diameter: float | None = None,
) -> tuple[list[str], float, float]:
    """Node labels that fit their circles, and the node size and font size to draw them with.

    Names longer than :data:`LABEL_WIDTH` characters are wrapped at that width (long words
    split), at most :data:`LABEL_LINES` lines, the last one ending in ``…`` when cut. Labels
    are measured with matplotlib's text layout (default font); a label fits a circle whose
    diameter is the diagonal of its box plus a small margin. With ``node_size=None`` the node
    area (points², one size for every node) grows from 1200 to fit the widest label, up to
    :data:`MAX_NODE_SIZE` and to ``max_diameter`` (the room between drawn nodes); with
    ``font_size=None`` (default 9) the font shrinks (not below 5) when the label would not fit
    even then.

    Returns:
        ``(labels, node_size, font_size)``.
    """
    labels = [_wrap(name) for name in names]
    width, height = _text_extent(labels)  # points per point of font size
    limit = math.sqrt(MAX_NODE_SIZE) if max_diameter is None else min(
        math.sqrt(MAX_NODE_SIZE), max(max_diameter, 12.0)
    )
    if node_size is not None:
        limit = math.sqrt(node_size)

    def diameter(fs: float) -> float:
        return math.hypot(width * fs, height * fs) + 6.0

    if font_size is None:
        font_size = 9.0
        while font_size > 5.0 and diameter(font_size) > limit:
            font_size -= 0.5
    if node_size is None:
        node_size = float(min(limit**2, max(1200.0, diameter(font_size) ** 2)))
    return labels, float(node_size), float(font_size)


def _text_extent(labels: list[str]) -> tuple[float, float]:
    """Largest width and height of the labels at font size 1, in points."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    to_path = TextToPath()
    prop = FontProperties(size=1.0)
    width = height = 0.0
    for label in labels:
        lines = label.split("\n") or [""]
        for line in lines:
            w, _, _ = to_path.get_text_width_height_descent(line, prop, ismath=False)
            width = max(width, w)
        height = max(height, 1.2 * len(lines))  # matplotlib's default line spacing
    return width, height


def _room_per_node(ax: Axes, xy: np.ndarray) -> float | None:
    """Diameter in points that keeps circles at the closest two nodes apart (``None``: one)."""
    if len(xy) < 2:
        return None
    diff = xy[:, None, :] - xy[None, :, :]
    dist = np.sqrt((diff**2).sum(-1))
    closest = float(dist[~np.eye(len(xy), dtype=bool)].min())
    if closest == 0.0:
        return None
    box = ax.get_position()
    fig_w, fig_h = ax.figure.get_size_inches()
    span = np.ptp(xy, axis=0) * 1.3  # ax.margins(0.15) on either side
    span[span == 0] = 1.0
    per_unit = min(72 * box.width * fig_w / span[0], 72 * box.height * fig_h / span[1])
    return 0.85 * closest * per_unit


def _wrap(name: str) -> str:
    if len(name) <= LABEL_WIDTH:
        return name
    lines = textwrap.wrap(name, LABEL_WIDTH, break_long_words=True, break_on_hyphens=True)
    if len(lines) > LABEL_LINES:
        lines = lines[:LABEL_LINES]
        lines[-1] = lines[-1][: LABEL_WIDTH - 1] + "…"
    return "\n".join(lines)


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
        layers = generations(graph.to_dag()._adj != 0)  # undirected edges oriented
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
