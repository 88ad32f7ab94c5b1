"""Metrics: per-task scores, Δm against single-task baselines, and structure-recovery scores.

- :func:`task_metrics`: accuracy (and AUROC for binary tasks with probabilities) or MSE per task,
  with missing (``NaN``) labels masked, plus a ``"mean"`` over tasks.
- :func:`delta_m`: the multi-task gain Δm (%) over single-task models (Maninis et al. 2019,
  LibMTL convention).
- :func:`structure`: a learned task graph against a planted one: SHD, directed and skeleton
  precision / recall / F1, and edge AUROC / AUPRC from the learned weights (gCastle conventions),
  plus the identifiability-aware scores below.
- :func:`cpdag`, :func:`shd_cpdag`, :func:`skeleton_scores`, :func:`compelled_scores`,
  :func:`compare_edges`: scores that respect Markov equivalence — what observational data can
  orient at all (the CPDAG of the true DAG).
- :func:`auroc`, :func:`auprc`: scikit-learn's scores with missing labels dropped and ``NaN``
  where a class is absent.
- :func:`format_table`: aligned plain-text tables for the CLI.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from taskgraph.exceptions import ValidationError
from taskgraph.tasks import Task, TaskSet

__all__ = [
    "task_metrics",
    "delta_m",
    "structure",
    "cpdag",
    "shd_cpdag",
    "skeleton_scores",
    "compelled_scores",
    "compare_edges",
    "auroc",
    "auprc",
    "format_table",
    "LOWER_IS_BETTER",
]

#: Metric names for which a lower value is better (used by :func:`delta_m`).
LOWER_IS_BETTER = frozenset(
    {"mse", "rmse", "mae", "loss", "nll", "error", "shd", "cpdag_shd", "ece"}
)


def _to_numpy(value: Any, name: str, dtype: type = np.float64) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise ValidationError(f"{name}: expected a numeric array") from None
    return arr


# ---------------------------------------------------------------------------- ranking scores
def _binary_inputs(y_true: Any, score: Any) -> tuple[np.ndarray, np.ndarray]:
    y = _to_numpy(y_true, "y_true").ravel()
    s = _to_numpy(score, "score").ravel()
    if y.shape != s.shape:
        raise ValidationError(f"score: expected {y.shape[0]} scores, got {s.shape[0]}")
    keep = ~np.isnan(y) & ~np.isnan(s)
    y, s = y[keep], s[keep]
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValidationError("y_true: expected binary labels 0/1 (NaN = missing)")
    return y.astype(bool), s


def auroc(y_true: Any, score: Any) -> float:
    r"""Area under the ROC curve (scikit-learn's ``roc_auc_score``: the Mann–Whitney statistic,
    a tied positive–negative pair counts 1/2). Rows whose label or score is ``NaN`` are dropped.

    Args:
        y_true (array): ``[N]`` binary labels (0/1, ``NaN`` = missing).
        score (array): ``[N]`` scores, higher = more likely positive.

    Returns:
        float: AUROC, or ``NaN`` when only one class is present.
    """
    from sklearn.metrics import roc_auc_score

    y, s = _binary_inputs(y_true, score)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, s))


def auprc(y_true: Any, score: Any) -> float:
    r"""Area under the precision–recall curve as average precision (scikit-learn's
    ``average_precision_score``): :math:`\mathrm{AP} = \sum_k (R_k - R_{k-1}) P_k` over the
    distinct score thresholds in decreasing order, tied scores entering together. Rows with a
    ``NaN`` label or score are dropped.

    Returns:
        float: AP, or ``NaN`` when there is no positive.
    """
    from sklearn.metrics import average_precision_score

    y, s = _binary_inputs(y_true, score)
    if not y.any():
        return float("nan")
    return float(average_precision_score(y, s))


# ---------------------------------------------------------------------------- task metrics
def _task_proba(proba: Any, tasks: TaskSet, k: int, n: int) -> np.ndarray | None:
    """Probability input for task ``k``: P(y = 1) ``[N]`` for binary, ``[N, C]`` otherwise."""
    if proba is None:
        return None
    task = tasks[k]
    if isinstance(proba, Mapping):
        item = proba.get(task.name)
    elif isinstance(proba, (list, tuple)):
        if len(proba) != len(tasks):
            raise ValidationError(f"proba: expected {len(tasks)} entries, got {len(proba)}")
        item = proba[k]
    else:
        arr = _to_numpy(proba, "proba")
        if arr.shape != (n, len(tasks)):
            raise ValidationError(
                f"proba: an array must have shape [N, T] = {(n, len(tasks))} (P(y=1) per binary "
                f"task), got {arr.shape}; pass a list or dict for multiclass probabilities"
            )
        item = arr[:, k]
    if item is None:
        return None
    p = _to_numpy(item, f"proba[{task.name!r}]")
    if p.shape[0] != n:
        raise ValidationError(f"proba[{task.name!r}]: expected {n} rows, got {p.shape[0]}")
    if task.kind == "binary" and p.ndim == 2:
        p = p[:, -1]
    return p


def task_metrics(
    tasks: TaskSet | Iterable[Task | str],
    y_true: Any,
    pred: Any,
    proba: Any = None,
) -> dict[str, float]:
    """Per-task scores with missing labels masked.

    Per task ``name``:

    - classification: ``"name/accuracy"``; binary tasks with probabilities also get
      ``"name/auroc"`` (``NaN`` when the observed labels hold one class only);
    - regression: ``"name/mse"``.

    Rows whose label is ``NaN`` are ignored for that task; a task with no observed label scores
    ``NaN``.

    **Convention for** ``"mean"``: the mean over tasks of each task's *primary* score, oriented so
    that higher is better: accuracy for classification and **−MSE** for regression (``NaN`` task
    scores skipped). When at least one binary task has an AUROC, ``"mean_auroc"`` is the mean of
    the defined AUROCs.

    Args:
        tasks (TaskSet or list): the ``T`` tasks (column order of ``y_true`` and ``pred``).
        y_true (array or Tensor): ``[N, T]`` labels, ``NaN`` = missing.
        pred (array or Tensor): ``[N, T]`` predicted class indices (classification) or values
            (regression).
        proba (optional): class probabilities: an ``[N, T]`` array of :math:`P(y=1)` per binary
            task, or a list (length ``T``) / dict (by task name) of ``[N]`` or ``[N, C]`` arrays
            (``None`` entries skipped). Only binary tasks use it (for AUROC).

    Returns:
        dict: ``{"<task>/<metric>": float, ..., "mean": float}``.
    """
    tasks = TaskSet.coerce(tasks)
    y = _to_numpy(y_true, "y_true")
    p = _to_numpy(pred, "pred")
    if y.ndim == 1 and len(tasks) == 1:
        y = y[:, None]
    if p.ndim == 1 and len(tasks) == 1:
        p = p[:, None]
    if y.ndim != 2 or y.shape[1] != len(tasks):
        raise ValidationError(f"y_true: expected shape [N, {len(tasks)}], got {y.shape}")
    if p.shape != y.shape:
        raise ValidationError(f"pred: expected shape {y.shape} like y_true, got {p.shape}")
    n = y.shape[0]
    out: dict[str, float] = {}
    primary: list[float] = []
    aurocs: list[float] = []
    for k, task in enumerate(tasks):
        obs = ~np.isnan(y[:, k])
        yk, pk = y[obs, k], p[obs, k]
        empty = yk.size == 0
        if task.is_classification:
            acc = float("nan") if empty else float((pk == yk).mean())
            out[f"{task.name}/accuracy"] = acc
            primary.append(acc)
            prob = _task_proba(proba, tasks, k, n) if task.kind == "binary" else None
            if prob is not None:
                value = float("nan") if empty else auroc(yk, prob[obs])
                out[f"{task.name}/auroc"] = value
                aurocs.append(value)
        else:
            mse = float("nan") if empty else float(((pk - yk) ** 2).mean())
            out[f"{task.name}/mse"] = mse
            primary.append(-mse)
    out["mean"] = _nanmean(primary)
    if aurocs:
        out["mean_auroc"] = _nanmean(aurocs)
    return out


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _primary_metric(task: Task) -> str:
    return "accuracy" if task.is_classification else "mse"


def delta_m(
    results: Mapping[str, float],
    single_task: Mapping[str, float],
    tasks: TaskSet | Iterable[Task | str],
    *,
    metrics: Mapping[str, str | Sequence[str]] | None = None,
) -> float:
    r"""Multi-task gain Δm in percent over single-task baselines.

    .. math::
        \Delta_m = \frac{100}{K}\sum_{k=1}^{K} (-1)^{l_k}\,\frac{M_k - M_{\mathrm{STL},k}}
        {M_{\mathrm{STL},k}},

    averaged over every (task, metric) pair :math:`k`, with :math:`l_k = 1` for lower-is-better
    metrics (:data:`LOWER_IS_BETTER`: ``mse``, ``rmse``, ``mae``, ``loss``, ``nll``, ...) and
    :math:`l_k = 0` otherwise (accuracy, AUROC, ...): positive Δm means the multi-task model is
    better (Maninis et al. 2019; LibMTL).

    Args:
        results (dict): multi-task scores ``{"<task>/<metric>": value}`` (e.g. from
            :func:`task_metrics`).
        single_task (dict): single-task scores with the same keys.
        tasks (TaskSet or list): the tasks to average over.
        metrics (dict, optional): task name → metric name or list of metric names to use;
            default: ``accuracy`` for classification tasks, ``mse`` for regression.

    Returns:
        float: Δm in percent (``NaN`` if any value used is ``NaN``).

    Raises:
        ValidationError: if a needed key is absent or a single-task value is 0.
    """
    tasks = TaskSet.coerce(tasks)
    terms: list[float] = []
    for task in tasks:
        chosen = (metrics or {}).get(task.name, _primary_metric(task))
        names = [chosen] if isinstance(chosen, str) else list(chosen)
        for metric in names:
            key = f"{task.name}/{metric}"
            for source, label in ((results, "results"), (single_task, "single_task")):
                if key not in source:
                    raise ValidationError(f"{label}: missing key {key!r}")
            m, s = float(results[key]), float(single_task[key])
            if s == 0.0:
                raise ValidationError(f"single_task: {key!r} is 0; Δm divides by it")
            sign = -1.0 if metric.lower() in LOWER_IS_BETTER else 1.0
            terms.append(sign * (m - s) / abs(s))
    if not terms:
        raise ValidationError("tasks: no (task, metric) pair to average over")
    return float(100.0 * np.mean(terms))


# ---------------------------------------------------------------------------- structure metrics
def _graph_arrays(g: Any, name: str) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """``(adjacency, raw_scores_or_None, names_or_None)`` of a TaskGraph or a ``[T, T]`` array."""
    if hasattr(g, "adjacency"):
        adj = _to_numpy(g.adjacency, f"{name}.adjacency")
        raw = getattr(g, "raw", None)
        raw = None if raw is None else _to_numpy(raw, f"{name}.raw")
        names = list(getattr(g, "names", None) or []) or None
    else:
        adj, raw, names = _to_numpy(g, name), None, None
    if adj.ndim != 2 or adj.shape[0] != adj.shape[1]:
        raise ValidationError(f"{name}: expected a square [T, T] adjacency, got shape {adj.shape}")
    if raw is not None and raw.shape != adj.shape:
        raise ValidationError(f"{name}.raw: expected shape {adj.shape}, got {raw.shape}")
    return adj, raw, names


def _undirected_of(g: Any) -> np.ndarray | None:
    """The undirected mark of a TaskGraph (``None`` for arrays and unmarked graphs)."""
    mark = getattr(g, "undirected", None)
    return None if mark is None else np.asarray(mark, dtype=bool)


def _name_perm(
    names_pred: list[str] | None, names_true: list[str] | None
) -> list[int] | None:
    """Positions of the true graph's tasks in the predicted graph (``None``: same order)."""
    if names_pred is None or names_true is None or names_pred == names_true:
        return None
    if sorted(names_pred) != sorted(names_true):
        raise ValidationError(
            f"pred: task names {names_pred} differ from the true graph's {names_true}"
        )
    return [names_pred.index(n) for n in names_true]


def _edge_mask(adj: np.ndarray, threshold: float) -> np.ndarray:
    """Off-diagonal ``|A| > threshold`` (NaN read as 0)."""
    t = adj.shape[0]
    return (np.abs(np.nan_to_num(adj)) > threshold) & ~np.eye(t, dtype=bool)


def _pdag_pair(
    pred: Any, truth: Any, threshold: float = 0.0
) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """Two-way masks (see :mod:`taskgraph.graph.equivalence`) of ``pred`` aligned to ``truth``.

    A predicted edge is ``|A| > threshold``, a true edge ``A != 0``; undirected marks make their
    pairs two-way. Returns ``(pred_mask, true_mask, names)`` with ``names`` the true graph's
    task names (or the predicted graph's, or ``None`` for two arrays).
    """
    from taskgraph.graph.equivalence import two_way

    a_pred, _, names_pred = _graph_arrays(pred, "pred")
    a_true, _, names_true = _graph_arrays(truth, "truth")
    if a_pred.shape != a_true.shape:
        raise ValidationError(
            f"pred: shape {a_pred.shape} differs from the true graph's {a_true.shape}"
        )
    p = two_way(_edge_mask(a_pred, threshold), _undirected_of(pred))
    g = two_way(_edge_mask(a_true, 0.0), _undirected_of(truth))
    perm = _name_perm(names_pred, names_true)
    if perm is not None:
        p = p[np.ix_(perm, perm)]
    return p, g, names_true or names_pred


def _as_cpdag(mask: np.ndarray) -> np.ndarray:
    """A two-way mask read as a CPDAG: a DAG becomes its CPDAG, anything else stays as given."""
    from taskgraph.graph.equivalence import dag_to_cpdag

    if (mask & mask.T).any() or not _is_dag(mask):
        return mask
    return dag_to_cpdag(mask)


def cpdag(dag: Any) -> np.ndarray:
    r"""The CPDAG (essential graph) of a DAG.

    Markov-equivalent DAGs (same skeleton, same v-structures) cannot be told apart from
    observational data. An edge is *compelled* when every DAG of the class orients it the same
    way and *reversible* otherwise; the CPDAG keeps the compelled edges directed and makes the
    reversible ones undirected. Computed by causal-learn's ``dag2cpdag``
    (:func:`taskgraph.graph.equivalence.dag_to_cpdag`).

    Args:
        dag (TaskGraph or array): ``[T, T]`` with ``A[i, j] != 0`` the edge ``i → j``; acyclic,
            without undirected marks.

    Returns:
        numpy.ndarray: ``[T, T]`` int 0/1: a directed edge ``i → j`` is ``C[i, j] = 1,
        C[j, i] = 0``, an undirected edge ``i — j`` is ``C[i, j] = C[j, i] = 1``
        (:meth:`TaskGraph.from_cpdag` reads it back with the undirected mark).

    Raises:
        ValidationError: if ``dag`` is not square, has undirected marks or has a cycle
            (including a two-way pair).

    Example:
        >>> cpdag([[0, 1, 0], [0, 0, 1], [0, 0, 0]])      # a -> b -> c: all reversible
        array([[0, 1, 0],
               [1, 0, 1],
               [0, 1, 0]])
    """
    from taskgraph.graph.equivalence import dag_to_cpdag

    adj, _, _ = _graph_arrays(dag, "dag")
    if _undirected_of(dag) is not None:
        raise ValidationError("dag: has undirected edges; expected a DAG (use to_dag() first)")
    mask = _edge_mask(adj, 0.0)
    if not _is_dag(mask):
        raise ValidationError("dag: has a directed cycle (a two-way pair is a 2-cycle)")
    return dag_to_cpdag(mask).astype(int)


def shd_cpdag(pred: Any, truth: Any, threshold: float = 0.0) -> int:
    r"""Structural Hamming distance between the CPDAGs of two graphs.

    Each graph is read as a CPDAG: a DAG is replaced by its CPDAG (:func:`cpdag`); a graph that
    already has undirected edges (undirected marks, or pairs with both directions) is taken as
    the partially directed graph it is, and so is a graph with a directed cycle. Then every
    unordered pair whose mark differs counts **1**: a missing or extra edge, a reversed edge, or
    a directed edge where the other graph has an undirected one (the non-``true_positive``
    categories of :func:`compare_edges`). Two Markov-equivalent DAGs have distance 0.

    Args:
        pred (TaskGraph or array): the predicted graph (aligned to ``truth`` by task name when
            both are TaskGraphs); an edge is :math:`|A_{ij}| >` ``threshold``.
        truth (TaskGraph or array): the true graph (usually the planted DAG).
        threshold (float): minimum :math:`|A_{ij}|` (exclusive) of a predicted edge.

    Returns:
        int: the number of pairs whose marks differ.
    """
    p, g, _ = _pdag_pair(pred, truth, _check_threshold(threshold))
    from taskgraph.graph.equivalence import compare_marks

    cats = compare_marks(_as_cpdag(p), _as_cpdag(g))
    return sum(len(v) for k, v in cats.items() if k != "true_positive")


def skeleton_scores(pred: Any, truth: Any, threshold: float = 0.0) -> dict[str, float]:
    """Precision, recall and F1 of the skeleton (unordered adjacent pairs, direction ignored).

    The same values as the ``skeleton_*`` keys of :func:`structure` (its empty-graph
    conventions: never ``NaN``).

    Returns:
        dict: ``skeleton_precision``, ``skeleton_recall``, ``skeleton_f1``.
    """
    p, g, _ = _pdag_pair(pred, truth, _check_threshold(threshold))
    upper = np.triu(np.ones(p.shape, dtype=bool), k=1)
    sk_p, sk_g = (p | p.T)[upper], (g | g.T)[upper]
    prec, rec, f1 = _prf(
        int((sk_p & sk_g).sum()), int((sk_p & ~sk_g).sum()), int((~sk_p & sk_g).sum())
    )
    return {"skeleton_precision": prec, "skeleton_recall": rec, "skeleton_f1": f1}


def _compelled(p: np.ndarray, g_cpdag: np.ndarray) -> dict[str, Any]:
    compelled = g_cpdag & ~g_cpdag.T  # directed edges of the true CPDAG
    reversible = g_cpdag & g_cpdag.T
    claimed = p & ~p.T  # the prediction's directed edges
    tp = int((claimed & compelled).sum())
    fp = int((claimed & ~compelled & ~reversible).sum())  # absent pairs and reversed edges
    fn = int((compelled & ~claimed).sum())
    n_true = int(compelled.sum())
    if n_true == 0:
        nan = float("nan")
        return {"compelled_precision": nan, "compelled_recall": nan, "compelled_f1": nan,
                "n_compelled_true": 0}
    prec, rec, f1 = _prf(tp, fp, fn)
    return {"compelled_precision": prec, "compelled_recall": rec, "compelled_f1": f1,
            "n_compelled_true": n_true}


def compelled_scores(pred: Any, truth: Any, threshold: float = 0.0) -> dict[str, Any]:
    r"""Directed precision / recall / F1 on the edges the data can orient: the compelled edges.

    The *compelled* edges are the directed edges of the true graph read as a CPDAG (a DAG is
    replaced by its CPDAG, :func:`cpdag`). The prediction is taken as given (a DAG is not made
    a CPDAG: each of its edges is a claimed orientation); its *directed claims* are its
    one-way edges (not undirected-marked, not two-way).

    - **TP**: a directed claim ``i → j`` that is a compelled edge ``i → j``.
    - **FP**: a directed claim on a pair that is not adjacent in the truth, or against a
      compelled edge (reversed). Claims on *reversible* pairs (undirected in the true CPDAG)
      are not counted: no orientation of them is wrong or right from observational data.
    - **FN**: a compelled edge that is not claimed in its direction (missing, reversed, or
      predicted undirected).

    Precision and recall follow :func:`structure`'s conventions (precision 0 without any
    counted claim). When the truth has **no compelled edge** (every edge reversible, e.g. a
    tree or a chain) all three scores are ``NaN``: there is nothing to orient.

    Returns:
        dict: ``compelled_precision``, ``compelled_recall``, ``compelled_f1`` and
        ``n_compelled_true`` (the number of compelled edges).
    """
    p, g, _ = _pdag_pair(pred, truth, _check_threshold(threshold))
    return _compelled(p, _as_cpdag(g))


def compare_edges(pred: Any, truth: Any, threshold: float = 0.0) -> dict[str, list[tuple]]:
    """Every adjacent pair of ``pred`` or ``truth`` sorted into edge categories.

    Both graphs are compared **as given** (pass ``cpdag(truth)`` or ``truth.cpdag()`` to
    compare against the Markov equivalence class); undirected marks and two-way pairs are
    undirected edges. Categories (:data:`taskgraph.graph.equivalence.CATEGORIES`):
    ``true_positive`` (same mark), ``reversed`` (both directed, opposite), ``unoriented``
    (predicted undirected, true directed), ``overoriented`` (predicted directed, true
    undirected), ``false_positive`` (not a true edge), ``false_negative`` (a true edge not
    predicted). :func:`shd_cpdag` counts every category but ``true_positive``;
    :meth:`TaskGraph.plot` with ``truth=`` draws them.

    Returns:
        dict: category → list of ``(source, target)`` pairs (task names when a graph is a
        TaskGraph, else indices): the predicted direction, except ``unoriented`` and
        ``false_negative`` (the true direction); an undirected edge as ``(earlier, later)``.
    """
    from taskgraph.graph.equivalence import compare_marks

    p, g, names = _pdag_pair(pred, truth, _check_threshold(threshold))
    cats = compare_marks(p, g)
    if names is None:
        return {k: list(v) for k, v in cats.items()}
    return {k: [(names[i], names[j]) for i, j in v] for k, v in cats.items()}


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, numbers.Real):
        raise ValidationError(f"threshold: expected a real number, got {threshold!r}")
    value = float(threshold)
    if not math.isfinite(value) or value < 0:
        raise ValidationError(f"threshold: expected a finite value >= 0, got {threshold!r}")
    return value


def _ratio(num: int, den: int, empty: float) -> float:
    return empty if den == 0 else num / den


def _f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    nothing_true, nothing_pred = tp + fn == 0, tp + fp == 0
    precision = _ratio(tp, tp + fp, 1.0 if nothing_true else 0.0)
    recall = _ratio(tp, tp + fn, 1.0)
    if nothing_true and not nothing_pred:
        return 0.0, recall, 0.0
    return precision, recall, _f1(precision, recall)


def _is_dag(binary: np.ndarray) -> bool:
    """Whether a boolean ``[T, T]`` adjacency (``A[src, dst]``) is acyclic."""
    import networkx as nx

    return nx.is_directed_acyclic_graph(nx.from_numpy_array(binary.astype(int),
                                                            create_using=nx.DiGraph))


def structure(
    pred: Any,
    true: Any,
    threshold: float = 0.0,
    *,
    scores: Any = None,
) -> dict[str, Any]:
    r"""Compare a predicted task graph with the true one.

    Both graphs are :class:`~taskgraph.graph.TaskGraph` objects or ``[T, T]`` arrays with
    ``A[src, dst]`` (``A[i, j] != 0`` ⇒ i → j). When both are TaskGraphs, ``pred`` is aligned to
    ``true`` by task name. The diagonal is ignored. A predicted edge is
    :math:`|A_{ij}| >` ``threshold``; a true edge is :math:`A_{ij} \neq 0`.

    Counting conventions (gCastle ``MetricsDAG``):

    - **Directed** counts are over ordered off-diagonal pairs: ``tp`` = predicted and true,
      ``fp`` = predicted not true, ``fn`` = true not predicted. A pair predicted in *both*
      directions (an undirected CPDAG edge) whose true edge is i → j therefore counts one TP and
      one FP; a reversed edge counts one FP and one FN.
    - **Skeleton** counts are over unordered pairs, ignoring direction.
    - ``reversed``: pairs whose true edge is exactly one direction and whose prediction is
      exactly the other one.
    - ``shd`` = extra + missing + misoriented skeleton pairs, each pair counted once: extra and
      missing are skeleton FP and FN; a pair present in both graphs counts 1 if its direction
      sets differ (a reversal, or an undirected/bidirected prediction of a directed edge, as in
      gCastle for symmetric input and ``cdt``'s SHD). ``misoriented`` reports that last count
      (``reversed`` ≤ ``misoriented``).
    - **Empty graphs:** precision of an empty prediction is 0, recall against an empty truth is
      1; when both are empty precision = recall = F1 = 1; a non-empty prediction against an
      empty truth has precision 0 and F1 0. No value but the compelled scores is ``NaN``.
    - ``auroc`` / ``auprc`` rank all :math:`T(T-1)` off-diagonal ordered pairs by ``scores``
      (default: :math:`|\text{raw}|` if ``pred`` is a TaskGraph with raw scores, else
      :math:`|A|` of ``pred``) against the true directed edges; ``NaN`` when the truth has no
      edge (or every pair is an edge).

    Identifiability-aware keys (undirected marks of either TaskGraph make their pairs
    undirected; a two-way pair is an undirected edge):

    - ``cpdag_shd``: :func:`shd_cpdag` — both graphs read as CPDAGs (a DAG replaced by its
      CPDAG), one per pair whose mark differs;
    - ``compelled_precision`` / ``compelled_recall`` / ``compelled_f1``: :func:`compelled_scores`
      — directed claims of ``pred`` against the compelled edges of the true CPDAG, claims on
      reversible pairs not counted; ``NaN`` when the truth has no compelled edge;
      ``n_compelled_true`` the number of compelled edges.

    Args:
        pred (TaskGraph or array): the predicted graph.
        true (TaskGraph or array): the true graph.
        threshold (float): minimum :math:`|A_{ij}|` (exclusive) of a predicted edge.
        scores (array, optional): ``[T, T]`` edge scores for AUROC/AUPRC (higher = more likely
            an edge i → j), overriding the default.

    Returns:
        dict: ``shd``, ``directed_precision``, ``directed_recall``, ``directed_f1``,
        ``skeleton_precision``, ``skeleton_recall``, ``skeleton_f1``, ``n_edges_pred``,
        ``n_edges_true`` (directed entries), ``tp``, ``fp``, ``fn`` (directed), ``reversed``,
        ``misoriented``, ``extra``, ``missing`` (skeleton), ``auroc``, ``auprc``,
        ``pred_is_dag``, ``cpdag_shd``, ``compelled_precision``, ``compelled_recall``,
        ``compelled_f1``, ``n_compelled_true``.
    """
    from taskgraph.graph.equivalence import compare_marks, two_way

    a_pred, raw, names_pred = _graph_arrays(pred, "pred")
    a_true, _, names_true = _graph_arrays(true, "true")
    if a_pred.shape != a_true.shape:
        raise ValidationError(
            f"pred: shape {a_pred.shape} differs from the true graph's {a_true.shape}"
        )
    mark_pred = _undirected_of(pred)
    perm = _name_perm(names_pred, names_true)
    if perm is not None:
        a_pred = a_pred[np.ix_(perm, perm)]
        raw = None if raw is None else raw[np.ix_(perm, perm)]
        mark_pred = None if mark_pred is None else mark_pred[np.ix_(perm, perm)]
    threshold = _check_threshold(threshold)
    t = a_true.shape[0]
    off = ~np.eye(t, dtype=bool)
    p = (np.abs(np.nan_to_num(a_pred)) > threshold) & off
    g = (np.nan_to_num(a_true) != 0) & off

    tp = int((p & g).sum())
    fp = int((p & ~g).sum())
    fn = int((~p & g).sum())
    d_prec, d_rec, d_f1 = _prf(tp, fp, fn)

    upper = np.triu(np.ones((t, t), dtype=bool), k=1)
    sk_p = (p | p.T)[upper]
    sk_g = (g | g.T)[upper]
    s_tp = int((sk_p & sk_g).sum())
    extra = int((sk_p & ~sk_g).sum())
    missing = int((~sk_p & sk_g).sum())
    s_prec, s_rec, s_f1 = _prf(s_tp, extra, missing)

    fwd_p, bwd_p = p[upper], p.T[upper]
    fwd_g, bwd_g = g[upper], g.T[upper]
    both = sk_p & sk_g
    misoriented = int((both & ((fwd_p != fwd_g) | (bwd_p != bwd_g))).sum())
    reversed_ = int((both & (fwd_p != bwd_p) & (fwd_g != bwd_g) & (fwd_p != fwd_g)).sum())

    if scores is not None:
        w = _to_numpy(scores, "scores")
        if w.shape != (t, t):
            raise ValidationError(f"scores: expected shape {(t, t)}, got {w.shape}")
        if perm is not None:
            w = w[np.ix_(perm, perm)]
    else:
        w = np.abs(raw if raw is not None else a_pred)
    w = np.nan_to_num(w, nan=0.0, posinf=np.finfo(np.float64).max, neginf=0.0)
    labels = g[off].astype(np.float64)
    pdag_pred = two_way(p, mark_pred)
    cpdag_true = _as_cpdag(two_way(g, _undirected_of(true)))
    cats = compare_marks(_as_cpdag(pdag_pred), cpdag_true)
    return {
        "shd": extra + missing + misoriented,
        "directed_precision": d_prec,
        "directed_recall": d_rec,
        "directed_f1": d_f1,
        "skeleton_precision": s_prec,
        "skeleton_recall": s_rec,
        "skeleton_f1": s_f1,
        "n_edges_pred": int(p.sum()),
        "n_edges_true": int(g.sum()),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "reversed": reversed_,
        "misoriented": misoriented,
        "extra": extra,
        "missing": missing,
        "auroc": auroc(labels, w[off]),
        "auprc": auprc(labels, w[off]),
        "pred_is_dag": _is_dag(p),
        "cpdag_shd": sum(len(v) for k, v in cats.items() if k != "true_positive"),
        **_compelled(pdag_pred, cpdag_true),
    }


# ---------------------------------------------------------------------------- tables
def _cell(value: Any, floatfmt: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else format(float(value), floatfmt)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return _cell(value.item(), floatfmt)
    return str(value)


def format_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    floatfmt: str = ".4f",
) -> str:
    """Render rows of dicts as an aligned plain-text table.

    Numbers are right-aligned and formatted with ``floatfmt``; other values are left-aligned;
    a missing key prints as an empty cell.

    Args:
        rows (list of dict): one dict per table row.
        columns (list of str, optional): column keys in order; default: every key in order of
            first appearance.
        floatfmt (str): format spec for floats.

    Returns:
        str: header, a dashed rule, then one line per row (no trailing newline).

    Example:
        >>> print(format_table([{"model": "mtl", "acc": 0.91}, {"model": "stl", "acc": 0.9}]))
        model     acc
        -----  ------
        mtl    0.9100
        stl    0.9000
    """
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    columns = list(columns)
    cells = [[_cell(row.get(c), floatfmt) for c in columns] for row in rows]
    numeric = [
        all(
            isinstance(row.get(c), (int, float, np.integer, np.floating))
            and not isinstance(row.get(c), bool)
            for row in rows
            if row.get(c) is not None
        )
        for c in columns
    ]
    widths = [
        max([len(str(c))] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)
    ]

    def fmt(items: Sequence[str]) -> str:
        parts = [
            s.rjust(w) if num else s.ljust(w) for s, w, num in zip(items, widths, numeric)
        ]
        return "  ".join(parts).rstrip()

    lines = [fmt([str(c) for c in columns]), "  ".join("-" * w for w in widths)]
    lines += [fmt(line) for line in cells]
    return "\n".join(lines)
