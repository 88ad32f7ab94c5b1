r"""Causal discovery baselines on task labels: PC, GES, DirectLiNGAM (causal-learn) and a
correlation-threshold heuristic, plus the converters from causal-learn's graph encodings.

Every adjacency taskgraph hands out is ``A[src, dst]``: ``A[i, j] != 0`` means task ``i`` →
task ``j``. causal-learn uses two other encodings; they are turned into ours here, and only here:

- :func:`from_causallearn` reads a ``GeneralGraph`` endpoint matrix, where ``graph[a, b]`` is the
  mark at node ``a``'s end of the edge ``a – b`` (``-1`` tail, ``1`` arrowhead, ``2`` circle).
  So ``i → j`` is ``graph[i, j] = -1, graph[j, i] = 1``.
- :func:`from_lingam` reads LiNGAM's ``adjacency_matrix_`` ``B`` with ``B[i, j]`` = effect of
  ``j`` on ``i`` (row = effect), so ``A = B.T``.

A CPDAG edge whose orientation the data cannot fix (``i — j``) becomes a **two-way pair**
``A[i, j] = A[j, i] = 1`` with the graph's ``undirected`` mark; structure metrics read a
two-way pair as one undirected edge.

Example:
    >>> g = discover(data, "pc", alpha=0.01)          # CPDAG over the tasks of ``data``
    >>> g = discover(data, "lingam", residualize=True)  # signed weights, labels residualised on x
    >>> g = discover(data, "corr", n_edges=5)          # top-5 |corr| pairs, both directions
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from taskgraph.data import MultiTaskData
from taskgraph.exceptions import GraphFormatError, MissingDependencyError, ValidationError
from taskgraph.graph import TaskGraph
from taskgraph.tasks import TaskSet

__all__ = ["discover", "from_causallearn", "from_lingam", "METHODS"]

#: Discovery methods accepted by :func:`discover`.
METHODS: tuple[str, ...] = ("pc", "ges", "lingam", "corr")

#: Fewest rows a test/score is run on (complete rows; pairwise-complete rows for ``corr``).
MIN_ROWS = 20

# Method-specific keyword arguments :func:`discover` forwards (anything else is an error, so a
# typo is not silently swallowed by causal-learn's ``**kwargs``).
_METHOD_KWARGS: dict[str, tuple[str, ...]] = {
    "pc": ("indep_test", "stable", "uc_rule", "uc_priority", "max_k", "background_knowledge"),
    "ges": ("score_func", "maxP", "parameters", "lambda_value"),
    "lingam": ("measure",),
    "corr": ("n_edges",),
}

# causal-learn ``Endpoint`` values.
_TAIL, _NULL, _ARROW, _CIRCLE = -1, 0, 1, 2
_TAIL_AND_ARROW, _ARROW_AND_ARROW = 4, 5  # a directed and a bidirected edge on one pair

Names = Sequence[str] | TaskSet


# --------------------------------------------------------------------------- converters
def from_causallearn(
    graph: Any,
    names: Names,
    *,
    bidirected: Literal["both", "drop"] = "both",
    meta: dict[str, Any] | None = None,
) -> TaskGraph:
    r"""Convert a causal-learn graph (endpoint encoding) into a :class:`TaskGraph`.

    Edge by edge, with ``m_i = graph[i, j]`` the mark at ``i`` and ``m_j = graph[j, i]`` the
    mark at ``j``:

    ========================  ==================  =====================================
    causal-learn              meaning             ``A`` (ours, ``A[src, dst]``)
    ========================  ==================  =====================================
    ``m_i=-1, m_j=1``         ``i → j``           ``A[i, j] = 1``
    ``m_i=-1, m_j=-1``        ``i — j``           ``A[i, j] = A[j, i] = 1``, undirected
    any circle (``2``)        PAG ``o-o``, ``o→`` ``A[i, j] = A[j, i] = 1``, undirected
    ``m_i=1, m_j=1``          ``i ↔ j``           by ``bidirected`` (see below)
    ``4``/``5`` pair codes    directed + ``↔``    the directed part + ``bidirected`` rule
    ========================  ==================  =====================================

    A circle mark says "tail or arrowhead, unknown", so an edge with any circle is treated as
    undirected. Undirected edges carry the :class:`TaskGraph` ``undirected`` mark (exports keep
    it, plots draw it without arrowheads). A bidirected edge (a latent confounder, no direct
    effect either way) is kept as a two-way pair without the mark by default
    (``bidirected="both"``: the tasks stay adjacent, as in the skeleton) or removed
    (``bidirected="drop"``: only causal edges remain); either way its pairs are recorded
    in ``meta["bidirected"]``, a JSON string of ``[name_i, name_j]`` pairs with ``i < j``
    (meta values are scalars; the key is absent when there is none).

    Args:
        graph: a causal-learn ``GeneralGraph`` (``.graph``), a ``CausalGraph`` from ``pc``/``fci``
            (``.G``), the dict ``ges`` returns (``["G"]``), or a square endpoint matrix.
        names (list of str or TaskSet): the node names, in causal-learn's column order.
        bidirected (str): ``"both"`` or ``"drop"``, see above.
        meta (dict, optional): extra entries for the graph's ``meta``.

    Returns:
        TaskGraph: 0/1 adjacency ``[T, T]`` in ``A[src, dst]`` orientation, ``learned=True``,
        ``meta`` = ``{"source": "causal-learn", **meta}`` (plus ``"bidirected"``, see above).

    Raises:
        GraphFormatError: if the matrix is not square, does not match ``names``, or holds an
            endpoint code or mark combination causal-learn does not produce.
    """
    if bidirected not in ("both", "drop"):
        raise ValidationError(f"bidirected: expected 'both' or 'drop', got {bidirected!r}")
    marks = _endpoint_matrix(graph)
    labels = _names_list(names)
    t = len(labels)
    if marks.shape != (t, t):
        raise GraphFormatError(
            f"graph: endpoint matrix has shape {marks.shape} but {t} names were given"
        )
    adj = np.zeros((t, t))
    undirected = np.zeros((t, t), dtype=bool)
    both_ways: list[list[str]] = []
    for i in range(t):
        for j in range(i + 1, t):
            m_i, m_j = int(marks[i, j]), int(marks[j, i])
            if m_i == _NULL and m_j == _NULL:
                continue
            directed, bidir = _decode_pair(m_i, m_j, labels[i], labels[j])
            if directed in ("i->j", "both"):
                adj[i, j] = 1.0
            if directed in ("j->i", "both"):
                adj[j, i] = 1.0
            if directed == "both":
                undirected[i, j] = undirected[j, i] = True
            if bidir:
                both_ways.append([labels[i], labels[j]])
                if bidirected == "both":
                    adj[i, j] = adj[j, i] = 1.0
    info: dict[str, Any] = {"source": "causal-learn"}
    if both_ways:
        info["bidirected"] = json.dumps(both_ways, ensure_ascii=False)
    info.update(meta or {})
    return TaskGraph(adj, names, learned=True, meta=info, undirected=undirected)


def from_lingam(
    adjacency_matrix: Any,
    names: Names,
    *,
    threshold: float | None = None,
    meta: dict[str, Any] | None = None,
) -> TaskGraph:
    r"""Convert a LiNGAM ``adjacency_matrix_`` (``B[i, j]`` = effect of ``j`` on ``i``) into a
    :class:`TaskGraph` with signed weights ``A = B^\top`` (``A[i, j]`` = effect of ``i`` on
    ``j``).

    Args:
        adjacency_matrix: the ``[T, T]`` matrix, or a fitted LiNGAM model (any object with an
            ``adjacency_matrix_`` attribute).
        names (list of str or TaskSet): the node names, in LiNGAM's column order.
        threshold (float, optional): drop weights with ``|w| <= threshold``. The unthresholded
            weights are kept as ``raw``.
        meta (dict, optional): extra entries for the graph's ``meta``.

    Returns:
        TaskGraph: signed weights ``[T, T]`` in ``A[src, dst]`` orientation (zero diagonal),
        ``raw`` = all weights, ``learned=True``, ``meta`` = ``{"source": "lingam", **meta}``.
    """
    b = getattr(adjacency_matrix, "adjacency_matrix_", adjacency_matrix)
    try:
        b = np.asarray(b, dtype=np.float64)
    except (TypeError, ValueError):
        raise GraphFormatError(
            f"adjacency_matrix: expected a numeric [T, T] matrix, got {type(b).__name__}"
        ) from None
    labels = _names_list(names)
    t = len(labels)
    if b.shape != (t, t):
        raise GraphFormatError(f"adjacency_matrix: has shape {b.shape} but {t} names were given")
    if not np.isfinite(b).all():
        raise GraphFormatError("adjacency_matrix: weights must be finite")
    raw = b.T.copy()
    np.fill_diagonal(raw, 0.0)
    adj = raw.copy()
    if threshold is not None:
        adj[np.abs(adj) <= _as_float(threshold, "threshold")] = 0.0
    info: dict[str, Any] = {"source": "lingam"}
    info.update(meta or {})
    return TaskGraph(adj, names, learned=True, meta=info, raw=raw)


def _endpoint_matrix(graph: Any) -> np.ndarray:
    """The integer endpoint matrix behind any causal-learn graph container."""
    obj = graph
    if isinstance(obj, dict):
        if "G" not in obj:
            raise GraphFormatError("graph: a dict must be the result of ges() (key 'G')")
        obj = obj["G"]
    if hasattr(obj, "G") and not isinstance(obj, np.ndarray):  # CausalGraph
        obj = obj.G
    obj = getattr(obj, "graph", obj)  # GeneralGraph
    try:
        marks = np.asarray(obj, dtype=np.float64)
    except (TypeError, ValueError):
        raise GraphFormatError(
            f"graph: expected a causal-learn graph or an endpoint matrix, got "
            f"{type(graph).__name__}"
        ) from None
    if marks.ndim != 2 or marks.shape[0] != marks.shape[1]:
        raise GraphFormatError(f"graph: endpoint matrix must be square, got {marks.shape}")
    if not np.array_equal(marks, np.round(marks)):
        raise GraphFormatError("graph: endpoint codes must be integers")
    return marks.astype(np.int64)


def _decode_pair(m_i: int, m_j: int, name_i: str, name_j: str) -> tuple[str, bool]:
    """Decode the two marks of edge ``i – j``: (``"i->j" | "j->i" | "both" | "none"``,
    whether the pair also carries a bidirected edge)."""
    pair = (m_i, m_j)
    simple = {
        (_TAIL, _ARROW): ("i->j", False),
        (_ARROW, _TAIL): ("j->i", False),
        (_TAIL, _TAIL): ("both", False),
        (_ARROW, _ARROW): ("none", True),
        # causal-learn's codes for a directed (or undirected) edge and a bidirected edge on
        # the same pair: 4 = tail and arrowhead at that end, 5 = arrowhead and arrowhead.
        (_TAIL_AND_ARROW, _ARROW_AND_ARROW): ("i->j", True),
        (_ARROW_AND_ARROW, _TAIL_AND_ARROW): ("j->i", True),
        (_TAIL_AND_ARROW, _TAIL_AND_ARROW): ("both", True),
    }
    if pair in simple:
        return simple[pair]
    if _CIRCLE in pair and _NULL not in pair and set(pair) <= {_TAIL, _ARROW, _CIRCLE}:
        return "both", False
    raise GraphFormatError(
        f"graph: invalid endpoint marks on edge {name_i!r} – {name_j!r}: "
        f"graph[i, j] = {m_i}, graph[j, i] = {m_j}"
    )


def _names_list(names: Names) -> list[str]:
    if isinstance(names, TaskSet):
        return names.names
    if isinstance(names, str):
        raise ValidationError("names: expected a list of task names, got a single string")
    return list(names)


# --------------------------------------------------------------------------- discovery
def discover(
    data: MultiTaskData,
    method: str = "pc",
    *,
    residualize: bool = False,
    alpha: float = 0.05,
    threshold: float | None = None,
    max_rows: int | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> TaskGraph:
    r"""Learn a task graph from the labels of ``data`` with a classical discovery method.

    Methods (each column is one task's label used as a number: binary ``0/1``, multiclass the
    class index ``0..C-1``, regression the value — so a multiclass task enters as an ordinal
    variable; tests that assume linear-Gaussian data only see its linear part):

    - ``"pc"``: causal-learn PC, Fisher-z test at level ``alpha`` (``indep_test="chisq"`` or
      ``"gsq"`` for all-discrete labels). Returns the CPDAG.
    - ``"ges"``: causal-learn GES with the BIC score (``score_func="local_score_BDeu"`` for
      discrete labels). Returns the CPDAG.
    - ``"lingam"``: causal-learn DirectLiNGAM. Orients every edge (needs non-Gaussian
      continuous labels); signed weights, ``|w| <= threshold`` dropped when ``threshold`` is set.
    - ``"corr"``: Pearson correlation on pairwise-complete rows. An edge ``i — j`` (both
      directions, weight ``|r_ij|``) for ``|r_ij| > threshold``; with ``threshold=None`` and
      ``n_edges=k``, the ``k`` strongest pairs; with neither, the pairs whose Fisher-z test
      rejects ``r = 0`` at level ``alpha``. ``raw`` is the full ``|r|`` matrix (zero diagonal).

    A CPDAG edge ``i — j`` (orientation not identifiable) becomes ``A[i, j] = A[j, i] = 1``;
    see :func:`from_causallearn`. PC, GES and LiNGAM use the rows where every task is labelled
    (after ``residualize``); a task whose label is constant there is left isolated.

    Args:
        data (MultiTaskData): labels ``y[N, T]`` (NaN = missing) and features ``x``.
        method (str): ``"pc"``, ``"ges"``, ``"lingam"`` or ``"corr"``.
        residualize (bool): replace each task's label by the residual of a least-squares fit
            ``y_k ≈ w_k^\top x + b_k`` (flattened ``x``, intercept, fit on that task's labelled
            rows), removing dependence that runs through the shared input ``x``.
        alpha (float): significance level (PC; ``corr`` without ``threshold``/``n_edges``).
        threshold (float, optional): weight cut-off (``lingam``: ``|w|``; ``corr``: ``|r|``).
            Ignored by PC and GES.
        max_rows (int, optional): use at most this many rows (a random subset drawn with
            ``seed``), taken after the complete-row filter.
        seed (int): seed of the row subset and of LiNGAM.
        **kwargs: method options forwarded to causal-learn — PC: ``indep_test``, ``stable``,
            ``uc_rule``, ``uc_priority``, ``max_k``, ``background_knowledge`` (a causal-learn
            ``BackgroundKnowledge`` whose nodes are ``GraphNode(task_name)``); GES:
            ``score_func``, ``maxP``, ``parameters``, ``lambda_value``; LiNGAM: ``measure``;
            corr: ``n_edges``.

    Returns:
        TaskGraph: over ``data.tasks``, ``learned=True``, ``meta`` with ``"method"``,
        ``"alpha"``, ``"residualize"``, ``"n_rows"`` (rows used) and ``"threshold"`` (when
        given); ``adjacency`` and ``raw`` are float64.

    Raises:
        ValidationError: unknown ``method`` or keyword, bad ``alpha``/``threshold``/
            ``max_rows``, ``data`` not a :class:`MultiTaskData`, or fewer than
            :data:`MIN_ROWS` usable rows.
        MissingDependencyError: if causal-learn is not installed.
    """
    if not isinstance(data, MultiTaskData):
        raise ValidationError(f"data: expected a MultiTaskData, got {type(data).__name__}")
    if method not in METHODS:
        raise ValidationError(f"method: unknown method {method!r}; choose one of {list(METHODS)}")
    unknown = sorted(set(kwargs) - set(_METHOD_KWARGS[method]))
    if unknown:
        raise ValidationError(
            f"discover: unexpected keyword(s) {unknown} for method {method!r}; "
            f"it accepts {list(_METHOD_KWARGS[method])}"
        )
    alpha = _as_float(alpha, "alpha")
    if not 0.0 < alpha < 1.0:
        raise ValidationError(f"alpha: expected a level in (0, 1), got {alpha!r}")
    if threshold is not None:
        threshold = _as_float(threshold, "threshold")
        if not threshold >= 0.0:
            raise ValidationError(f"threshold: expected a non-negative number, got {threshold!r}")
    if max_rows is not None and (
        not isinstance(max_rows, int) or isinstance(max_rows, bool) or max_rows < MIN_ROWS
    ):
        raise ValidationError(f"max_rows: expected an integer >= {MIN_ROWS}, got {max_rows!r}")

    y = data.y.detach().cpu().double().numpy()
    if residualize:
        y = _residualize(y, data.x.detach().cpu().double().reshape(len(data), -1).numpy(), data)
    meta = {
        "method": method,
        "alpha": alpha,
        "residualize": bool(residualize),
    }
    if threshold is not None:
        meta["threshold"] = threshold
    rng = np.random.default_rng(seed)
    if method == "corr":
        y = _subsample(y, max_rows, rng)
        return _discover_corr(y, data.tasks, alpha, threshold, meta, **kwargs)

    complete = ~np.isnan(y).any(axis=1)
    n_complete = int(complete.sum())
    if n_complete < MIN_ROWS:
        raise ValidationError(
            f"data: only {n_complete} of {len(y)} rows have every task labelled; method "
            f"{method!r} needs at least {MIN_ROWS} complete rows (method='corr' uses "
            f"pairwise-complete rows)"
        )
    y = _subsample(y[complete], max_rows, rng)
    meta["n_rows"] = len(y)
    varying = _varying_columns(y, data.y.detach().cpu().double().numpy())
    t = data.n_tasks
    if method == "lingam":
        weights = np.zeros((t, t))
        if len(varying) >= 2:
            sub = _run_lingam(y[:, varying], seed, **kwargs)
            weights[np.ix_(varying, varying)] = sub
        return from_lingam(weights, data.tasks, threshold=threshold, meta=meta)

    marks = np.zeros((t, t), dtype=np.int64)
    if len(varying) >= 2:
        runner = _run_pc if method == "pc" else _run_ges
        names = [data.tasks[k].name for k in varying]
        marks[np.ix_(varying, varying)] = runner(y[:, varying], names, alpha, **kwargs)
    return from_causallearn(marks, data.tasks, meta=meta)


# --------------------------------------------------------------------------- helpers
def _residualize(y: np.ndarray, x: np.ndarray, data: MultiTaskData) -> np.ndarray:
    """Per task, least-squares residuals of ``y[:, k]`` on ``[1, x]`` over its labelled rows."""
    n = len(x)
    design = np.concatenate([np.ones((n, 1)), x], axis=1)
    observed = ~np.isnan(y)
    out = np.full_like(y, np.nan)
    full = observed.all(axis=0)
    if full.any():
        coef = np.linalg.lstsq(design, y[:, full], rcond=None)[0]
        out[:, full] = y[:, full] - design @ coef
    for k in np.flatnonzero(~full):
        rows = observed[:, k]
        if int(rows.sum()) <= design.shape[1]:
            raise ValidationError(
                f"data: task {data.tasks[k].name!r} has {int(rows.sum())} labelled rows, too "
                f"few to residualise on {design.shape[1] - 1} features (residualize=True)"
            )
        coef = np.linalg.lstsq(design[rows], y[rows, k], rcond=None)[0]
        out[rows, k] = y[rows, k] - design[rows] @ coef
    return out


def _as_float(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise ValidationError(f"{name}: expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{name}: expected a number, got {value!r}") from None


def _subsample(y: np.ndarray, max_rows: int | None, rng: np.random.Generator) -> np.ndarray:
    if max_rows is None or len(y) <= max_rows:
        return y
    return y[np.sort(rng.choice(len(y), size=max_rows, replace=False))]


def _varying_columns(y: np.ndarray, y_orig: np.ndarray) -> list[int]:
    """Columns of ``y`` that are not constant, relative to the magnitude of the original label
    (a residualised constant label is rounding noise, not signal)."""
    out = []
    for k in range(y.shape[1]):
        col = y_orig[~np.isnan(y_orig[:, k]), k]
        scale = max(float(np.std(col)), float(np.abs(col).max())) if len(col) else 0.0
        if float(np.std(y[:, k])) > 1e-9 * max(scale, 1e-30):
            out.append(k)
    return out


def _import_causallearn(what: str) -> Any:
    try:
        if what == "pc":
            from causallearn.search.ConstraintBased.PC import pc

            return pc
        if what == "ges":
            from causallearn.search.ScoreBased.GES import ges

            return ges
        from causallearn.search.FCMBased.lingam import DirectLiNGAM

        return DirectLiNGAM
    except ImportError as exc:
        raise MissingDependencyError(
            f"discover(method={what!r}) needs causal-learn: pip install causal-learn ({exc})"
        ) from None


def _call_quietly(fn: Any, *args: Any, method: str, **kwargs: Any) -> Any:
    """Run a causal-learn call with its prints swallowed and its value errors made ours."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return fn(*args, **kwargs)
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise ValidationError(f"data: causal-learn {method} failed on the labels: {exc}") from exc


def _run_pc(y: np.ndarray, names: list[str], alpha: float, **kwargs: Any) -> np.ndarray:
    pc = _import_causallearn("pc")
    kwargs.setdefault("indep_test", "fisherz")
    cg = _call_quietly(
        pc,
        y,
        alpha=alpha,
        node_names=names,
        method="pc",
        show_progress=False,
        verbose=False,
        **kwargs,
    )
    return _endpoint_matrix(cg)


def _run_ges(y: np.ndarray, names: list[str], alpha: float, **kwargs: Any) -> np.ndarray:
    del alpha  # GES is score-based
    ges = _import_causallearn("ges")
    kwargs.setdefault("score_func", "local_score_BIC")
    record = _call_quietly(ges, y, node_names=names, method="ges", **kwargs)
    return _endpoint_matrix(record)


def _run_lingam(y: np.ndarray, seed: int, **kwargs: Any) -> np.ndarray:
    direct_lingam = _import_causallearn("lingam")
    model = direct_lingam(random_state=seed, **kwargs)
    _call_quietly(model.fit, y, method="lingam")
    return np.asarray(model.adjacency_matrix_, dtype=np.float64)


def _pairwise_corr(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation and row count of every task pair over its pairwise-complete rows.

    Pairs with fewer than 3 shared rows or a constant column get ``r = 0``.
    """
    observed = ~np.isnan(y)
    m = observed.astype(np.float64)
    col_mean = np.array(
        [y[observed[:, k], k].mean() if observed[:, k].any() else 0.0 for k in range(y.shape[1])]
    )
    z = np.where(observed, y - col_mean, 0.0)  # centring only improves the numerics
    n = m.T @ m
    sx = z.T @ m  # [i, j]: sum of z_i over rows where i and j are labelled
    sxx = (z**2).T @ m
    sxy = z.T @ z
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = sxy / n - (sx / n) * (sx.T / n)
        var_i = sxx / n - (sx / n) ** 2
        r = cov / np.sqrt(var_i * var_i.T)
    ok = (n >= 3) & np.isfinite(r) & (var_i > 1e-12 * sxx / np.maximum(n, 1))
    ok &= ok.T  # both columns must vary on the shared rows
    r = np.where(ok, np.clip(r, -1.0, 1.0), 0.0)
    np.fill_diagonal(r, 0.0)
    return r, n


def _discover_corr(
    y: np.ndarray,
    tasks: TaskSet,
    alpha: float,
    threshold: float | None,
    meta: dict[str, Any],
    n_edges: int | None = None,
) -> TaskGraph:
    t = y.shape[1]
    r, n = _pairwise_corr(y)
    off = ~np.eye(t, dtype=bool)
    if t > 1 and int(n[off].max()) < MIN_ROWS:
        raise ValidationError(
            f"data: no pair of tasks is labelled together on {MIN_ROWS} or more rows "
            f"(most: {int(n[off].max())}); method 'corr' cannot estimate correlations"
        )
    strength = np.abs(r)
    strength[n < MIN_ROWS] = 0.0
    iu, ju = np.triu_indices(t, k=1)
    if threshold is not None and n_edges is not None:
        raise ValidationError("threshold, n_edges: give at most one of them")
    if threshold is not None:
        keep = strength[iu, ju] > float(threshold)
    elif n_edges is not None:
        if (
            not isinstance(n_edges, int)
            or isinstance(n_edges, bool)
            or not (0 <= n_edges <= len(iu))
        ):
            raise ValidationError(
                f"n_edges: expected an integer in [0, {len(iu)}] (task pairs), got {n_edges!r}"
            )
        order = np.argsort(-strength[iu, ju], kind="stable")[:n_edges]
        keep = np.zeros(len(iu), dtype=bool)
        keep[order] = True
    else:
        keep = np.array(
            [_fisher_z_pvalue(r[i, j], n[i, j]) < alpha for i, j in zip(iu, ju)], dtype=bool
        )
    adj = np.zeros((t, t))
    adj[iu[keep], ju[keep]] = strength[iu[keep], ju[keep]]
    adj = adj + adj.T
    meta = {**meta, "n_rows": len(y), "n_edges": int((adj[iu, ju] > 0).sum())}
    return TaskGraph(adj, tasks, learned=True, meta=meta, raw=strength)


def _fisher_z_pvalue(r: float, n: float) -> float:
    """Two-sided p-value of ``H0: rho = 0`` from Fisher's z with ``n`` rows."""
    if n <= 3:
        return 1.0
    r = min(abs(float(r)), 1.0 - 1e-12)
    z = math.atanh(r) * math.sqrt(n - 3)
    return math.erfc(z / math.sqrt(2.0))
