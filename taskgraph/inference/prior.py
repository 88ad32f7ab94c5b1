r"""GMTL's joint target prior :math:`p(\mathbf{y})` over tasks: :class:`JointPrior` fits it from
training labels (a full table, independent marginals, or a pairwise model factorised over a
task graph, Chow-Liu or given), scores label configurations and gives its tables to the
decoders in :mod:`taskgraph.inference.gmtl`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Literal

import networkx as nx
import numpy as np
import torch

from taskgraph.data import MultiTaskData
from taskgraph.exceptions import UnknownTaskError, ValidationError
from taskgraph.graph import TaskGraph
from taskgraph.mrf.enumeration import prod
from taskgraph.mrf.map import (
    ConvergenceWarning,
    components,
    factor_table,
)
from taskgraph.tasks import Task, TaskSet

__all__ = ["JointPrior", "MAX_COMBINATIONS", "ConvergenceWarning"]

MAX_COMBINATIONS = 2**16
"""Default limit on :math:`\\prod_k C_k` for a dense prior table or an exact enumeration."""

PriorKind = Literal["full", "independent", "graph"]
_KINDS = ("full", "independent", "graph")
_METHODS = ("auto", "exact", "max_product")


def _check_nonneg_real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValidationError(f"{name}: expected a non-negative real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValidationError(f"{name}: expected a finite value >= 0, got {value!r}")
    return v


def _check_pos_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValidationError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def _too_many(n_comb: int, limit: int, what: str, hint: str | None = None) -> ValidationError:
    hint = hint or (
        "factorise the prior over a task graph with JointPrior.fit(data, kind='graph', "
        "graph=...) (max-product decoding, no enumeration)"
    )
    return ValidationError(
        f"max_combinations: {what} has {n_comb:,} label combinations (the product of the class "
        f"counts), over max_combinations={limit:,}; {hint}, or raise max_combinations"
    )


# ---------------------------------------------------------------------------- the prior
class JointPrior:
    r"""The training joint label distribution :math:`p_{\text{train}}(\mathbf{y})` used by GMTL.

    Build one with :meth:`fit` (from training labels) or :meth:`from_table` (a known table).
    Only classification tasks enter the prior; regression tasks are carried in :attr:`tasks`
    (so the prior lines up with a learner's tasks) but are never decoded.

    Kinds:
        - ``"full"``: the paper's table over every combination of the coupled tasks' labels,
          :math:`\hat p(\mathbf{y}) = (n_{\mathbf{y}} + \lambda) / (n + \lambda \prod_k C_k)`,
          from the rows where every coupled label is observed (rows with a missing label are
          dropped, as in the paper). Exponential in the number of tasks.
        - ``"independent"``: :math:`\prod_k \hat p(y_k)` with
          :math:`\hat p(y_k) = (n_{y_k} + \lambda)/(n_k + \lambda C_k)` over each task's observed
          rows. GMTL then reduces to a per-task label-shift correction (no coupling).
        - ``"graph"``: unary plus pairwise log-potentials over the skeleton of a task graph (see
          the module docstring); pairwise tables count the rows where both labels are observed
          (pairwise-complete), with pseudocount :math:`\lambda` in every cell. With no ``graph``
          the Chow–Liu tree (maximum spanning tree of pairwise mutual information) is used.

    Attributes:
        kind (str): ``"full"``, ``"independent"`` or ``"graph"``.
        tasks (TaskSet): every task of the data, in order (what a learner must match).
        coupled (list of str): names of the tasks the prior covers, in task order.
        n_classes (list of int): class counts of the coupled tasks.
        edges (list of tuple): pairs of coupled task names (``"graph"`` only).
        pseudocount (float or None): the :math:`\lambda` used by :meth:`fit`.
        n_rows (int or None): training rows counted by ``"full"`` (complete rows).
    """

    def __init__(
        self,
        tasks: TaskSet,
        kind: PriorKind,
        coupled: Sequence[int],
        *,
        log_table: torch.Tensor | None = None,
        unary: Sequence[torch.Tensor] | None = None,
        edges: Sequence[tuple[int, int]] = (),
        pairwise: Sequence[torch.Tensor] = (),
        pseudocount: float | None = None,
        n_rows: int | None = None,
        graph_source: str | None = None,
    ) -> None:
        self.tasks = TaskSet.coerce(tasks)
        if kind not in _KINDS:
            raise ValidationError(f"kind: expected one of {_KINDS}, got {kind!r}")
        self.kind = kind
        self._index = [int(i) for i in coupled]
        self.n_classes = [int(self.tasks[i].n_classes) for i in self._index]
        self._log_table = log_table
        self._unary = list(unary) if unary is not None else None
        self._edges = [(int(a), int(b)) for a, b in edges]
        self._pairwise = list(pairwise)
        self.pseudocount = pseudocount
        self.n_rows = n_rows
        self.graph_source = graph_source
        if kind == "full" and log_table is None:
            raise ValidationError("log_table: a 'full' prior needs its table")
        if kind != "full" and self._unary is None:
            raise ValidationError(f"unary: a {kind!r} prior needs unary potentials")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def fit(
        cls,
        data: MultiTaskData,
        kind: PriorKind | None = None,
        graph: TaskGraph | Any = None,
        pseudocount: float = 1.0,
        *,
        tasks: Sequence[str] | None = None,
        max_combinations: int = MAX_COMBINATIONS,
        weight: Any = None,
    ) -> JointPrior:
        r"""Estimate the prior from training labels.

        Args:
            data (MultiTaskData): training data; NaN labels are missing.
            kind (str, optional): ``"full"``, ``"independent"`` or ``"graph"``. ``None`` picks
                ``"graph"`` when ``graph`` is given and ``"full"`` otherwise.
            graph (TaskGraph or array, optional): for ``kind="graph"``, a graph whose skeleton
                (edges in either direction) gives the pairwise factors: a
                :class:`~taskgraph.graph.TaskGraph` over the data's task names (any order), or a
                ``[T, T]`` adjacency in the data's task order. Edges touching a task outside the
                prior (regression, or not in ``tasks``) are ignored. ``None`` fits the Chow–Liu
                tree. An empty graph gives the independent prior.
            pseudocount (float): Laplace pseudocount :math:`\lambda \ge 0` added to every cell.
                (default: ``1.0``)
            tasks (list of str, optional): names of the classification tasks to couple
                (default: every classification task). Other classification tasks are decoded by
                their own argmax. Naming a regression task is an error.
            max_combinations (int): refuse a ``"full"`` table with more cells than this.
            weight (array, optional): ``[N]`` row weights >= 0 (default 1): the label
                distribution the model was trained on when its rows were drawn unequally, e.g.
                ``N q_n`` under balanced sampling; counts are weighted sums (the pseudocount is
                added to them as it is).

        Raises:
            ValidationError: on bad arguments, a ``"full"`` table over ``max_combinations``, or
                ``pseudocount=0`` leaving a label combination with zero probability (GMTL would
                subtract :math:`\log 0`).
        """
        if not isinstance(data, MultiTaskData):
            raise ValidationError(f"data: expected MultiTaskData, got {type(data).__name__}")
        if kind is None:
            kind = "graph" if graph is not None else "full"
        if kind not in _KINDS:
            raise ValidationError(f"kind: expected one of {_KINDS}, got {kind!r}")
        if graph is not None and kind != "graph":
            raise ValidationError(f"graph: only used with kind='graph', got kind={kind!r}")
        lam = _check_nonneg_real("pseudocount", pseudocount)
        limit = _check_pos_int("max_combinations", max_combinations)
        index = _select_tasks(data.tasks, tasks)
        sizes = [int(data.tasks[i].n_classes) for i in index]
        y = data.y[:, index].double().cpu()  # priors are small tables: kept on the CPU
        obs = ~torch.isnan(y)
        yl = torch.where(obs, y, torch.zeros_like(y)).long()
        w = _row_weights(weight, y.shape[0])

        if kind == "full":
            n_comb = prod(sizes)
            if n_comb > limit:
                raise _too_many(n_comb, limit, "the full prior table")
            complete = obs.all(dim=1)
            flat = torch.zeros(int(complete.sum()), dtype=torch.long)
            for k, c in enumerate(sizes):
                flat = flat * c + yl[complete, k]
            counts = torch.bincount(flat, weights=w[complete], minlength=n_comb).double()
            n = float(w[complete].sum())
            if n == 0 and lam == 0:
                raise ValidationError(
                    "data: no row has every coupled label observed; kind='full' needs complete "
                    "rows (or pseudocount > 0, or kind='graph' with pairwise-complete counts)"
                )
            probs = (counts + lam) / (n + lam * n_comb)
            _check_positive(probs, "the full table")
            return cls(data.tasks, "full", index, log_table=probs.log().reshape(sizes),
                       pseudocount=lam, n_rows=int(complete.sum()))

        unary = []
        for k, c in enumerate(sizes):
            counts = torch.bincount(yl[obs[:, k], k], weights=w[obs[:, k]], minlength=c).double()
            n_k = float(w[obs[:, k]].sum())
            if n_k == 0 and lam == 0:
                raise ValidationError(
                    f"data: task {data.tasks[index[k]].name!r} has no observed label; use "
                    "pseudocount > 0"
                )
            probs = (counts + lam) / (n_k + lam * c)
            _check_positive(probs, f"the marginal of task {data.tasks[index[k]].name!r}")
            unary.append(probs.log())
        if kind == "independent":
            return cls(data.tasks, "independent", index, unary=unary, pseudocount=lam)

        if graph is None:
            edges = _chow_liu(yl, obs, sizes, lam, w)
            source = "chow_liu"
        else:
            edges = _graph_edges(graph, data.tasks, index)
            source = "given"
        pairwise = []
        for a, b in edges:
            both = obs[:, a] & obs[:, b]
            n_both, cells = float(w[both].sum()), sizes[a] * sizes[b]
            flat = yl[both, a] * sizes[b] + yl[both, b]
            counts = torch.bincount(flat, weights=w[both], minlength=cells).double()
            if n_both == 0:  # never observed together: no evidence of coupling (PMI = 0)
                probs = torch.full_like(counts, 1.0 / cells)
            else:
                probs = (counts + lam) / (n_both + lam * cells)
            probs = probs.reshape(sizes[a], sizes[b])
            name = f"the pair ({data.tasks[index[a]].name!r}, {data.tasks[index[b]].name!r})"
            _check_positive(probs, name)
            pmi = probs.log() - probs.sum(1).log()[:, None] - probs.sum(0).log()[None, :]
            pairwise.append(pmi)
        return cls(data.tasks, "graph", index, unary=unary, edges=edges, pairwise=pairwise,
                   pseudocount=lam, graph_source=source)

    @classmethod
    def from_table(
        cls,
        table: Any,
        tasks: TaskSet | Sequence[Task | str],
        *,
        log: bool = False,
        max_combinations: int = MAX_COMBINATIONS,
    ) -> JointPrior:
        """A ``"full"`` prior from a known table (e.g. a benchmark's true training prior).

        Args:
            table (array): ``[C_1, ..., C_m]`` probabilities (or log-probabilities with
                ``log=True``) over the classification tasks of ``tasks``, in task order;
                renormalised to sum to 1. Every cell must be positive.
            tasks (TaskSet or list): all tasks (regression tasks are skipped).
            log (bool): ``table`` holds log-probabilities.
        """
        tasks = TaskSet.coerce(tasks)
        index = _select_tasks(tasks, None)
        sizes = [int(tasks[i].n_classes) for i in index]
        limit = _check_pos_int("max_combinations", max_combinations)
        if prod(sizes) > limit:
            raise _too_many(prod(sizes), limit, "the table")
        try:
            t = torch.as_tensor(np.asarray(table, dtype=np.float64))
        except (TypeError, ValueError):
            raise ValidationError("table: expected a numeric array") from None
        if tuple(t.shape) != tuple(sizes):
            raise ValidationError(
                f"table: expected shape {tuple(sizes)} (class counts of the classification "
                f"tasks {[tasks[i].name for i in index]}), got {tuple(t.shape)}"
            )
        if log:
            if bool(torch.isnan(t).any()) or bool((t == math.inf).any()):
                raise ValidationError("table: log-probabilities must be finite or -inf")
            logt = t - torch.logsumexp(t.reshape(-1), 0)
        else:
            if not bool(torch.isfinite(t).all()) or bool((t < 0).any()) or float(t.sum()) <= 0:
                raise ValidationError("table: expected non-negative finite probabilities")
            logt = (t / t.sum()).log()
        _check_positive(logt.exp(), "the table")
        return cls(tasks, "full", index, log_table=logt)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The prior as tensors and plain values (loadable with ``weights_only=True``);
        :meth:`from_state` rebuilds it over the same tasks."""
        return {"kind": self.kind, "coupled": list(self._index), "log_table": self._log_table,
                "unary": self._unary, "edges": [list(e) for e in self._edges],
                "pairwise": list(self._pairwise), "pseudocount": self.pseudocount,
                "n_rows": self.n_rows, "graph_source": self.graph_source}

    @classmethod
    def from_state(cls, tasks: TaskSet, state: dict[str, Any]) -> JointPrior:
        """The prior saved by :meth:`state_dict`, over ``tasks``."""
        return cls(tasks, state["kind"], state["coupled"], log_table=state["log_table"],
                   unary=state["unary"], edges=[tuple(e) for e in state["edges"]],
                   pairwise=state["pairwise"], pseudocount=state["pseudocount"],
                   n_rows=state["n_rows"], graph_source=state["graph_source"])

    # ------------------------------------------------------------------ views
    @property
    def task_index(self) -> list[int]:
        """Positions of the coupled tasks in :attr:`tasks`."""
        return list(self._index)

    @property
    def coupled(self) -> list[str]:
        return [self.tasks[i].name for i in self._index]

    @property
    def edges(self) -> list[tuple[str, str]]:
        names = self.coupled
        return [(names[a], names[b]) for a, b in self._edges]

    @property
    def n_combinations(self) -> int:
        """:math:`\\prod_k C_k` over the coupled tasks."""
        return prod(self.n_classes)

    @property
    def is_forest(self) -> bool:
        """``True`` when the pairwise factors form a forest (max-product is then exact)."""
        comps = components(len(self._index), self._edges)
        return len(self._edges) == len(self._index) - len(comps)

    @property
    def graph(self) -> TaskGraph:
        """The pairwise factors as a :class:`TaskGraph` over :attr:`tasks` (edge ``a → b`` for
        ``a`` before ``b``; empty for ``"independent"``, complete over the coupled tasks for
        ``"full"``)."""
        n = len(self.tasks)
        adj = np.zeros((n, n))
        if self.kind == "graph":
            pairs = self._edges
        elif self.kind == "full":
            m = len(self._index)
            pairs = [(a, b) for a in range(m) for b in range(a + 1, m)]
        else:
            pairs = []
        for a, b in pairs:
            adj[self._index[a], self._index[b]] = 1.0
        return TaskGraph(adj, self.tasks, learned=False,
                         meta={"source": f"JointPrior({self.kind})"})

    @property
    def unary(self) -> list[torch.Tensor]:
        """Unary log-potentials :math:`\\theta_k` ``[C_k]`` (``"independent"``/``"graph"``)."""
        if self._unary is None:
            raise ValidationError("unary: a 'full' prior has no unary factors; use log_table()")
        return list(self._unary)

    @property
    def pairwise(self) -> list[torch.Tensor]:
        """Pairwise log-potentials :math:`\\theta_{jk}` ``[C_j, C_k]``, one per edge."""
        return list(self._pairwise)

    def __repr__(self) -> str:
        extra = ""
        if self.kind == "graph":
            extra = f", edges={len(self._edges)} ({self.graph_source})"
        return (
            f"JointPrior(kind={self.kind!r}, tasks={self.coupled}, n_classes={self.n_classes}"
            f"{extra}, pseudocount={self.pseudocount})"
        )

    def check_tasks(self, tasks: TaskSet) -> None:
        """Raise :class:`ValidationError` unless ``tasks`` equal the prior's (names, kinds,
        class counts, order)."""
        tasks = TaskSet.coerce(tasks)
        if tasks != self.tasks:
            raise ValidationError(
                f"inference: a prior whose tasks differ from the learner's: the prior was fitted "
                f"on {self.tasks!r}, the learner has {tasks!r}"
            )

    # ------------------------------------------------------------------ evaluation
    def log_potential(self, labels: Any) -> torch.Tensor:
        r"""Unnormalised :math:`\log p(\mathbf{y})` of label rows (exact log-probability for
        ``"full"`` and ``"independent"``; up to a constant for ``"graph"``).

        Shapes:
            - **labels:** ``[N, T]`` over :attr:`tasks` (integral values; other columns unused)
            - **returns:** ``[N]`` float64
        """
        y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor)
                            else labels)
        if y.dim() != 2 or y.shape[1] != len(self.tasks):
            raise ValidationError(
                f"labels: expected shape [N, {len(self.tasks)}], got {tuple(y.shape)}"
            )
        if y.is_floating_point() and bool(torch.isnan(y[:, self._index]).any()):
            raise ValidationError("labels: the coupled tasks' labels must not be missing (NaN)")
        yl = y[:, self._index].long().cpu()
        for k, c in enumerate(self.n_classes):
            if bool((yl[:, k] < 0).any()) or bool((yl[:, k] >= c).any()):
                raise ValidationError(
                    f"labels: task {self.coupled[k]!r} labels must lie in 0..{c - 1}"
                )
        if self.kind == "full":
            flat = torch.zeros(yl.shape[0], dtype=torch.long)
            for k, c in enumerate(self.n_classes):
                flat = flat * c + yl[:, k]
            return self._log_table.reshape(-1)[flat]
        out = torch.zeros(yl.shape[0], dtype=torch.float64)
        for k, u in enumerate(self._unary):
            out = out + u[yl[:, k]]
        for (a, b), p in zip(self._edges, self._pairwise):
            out = out + p[yl[:, a], yl[:, b]]
        return out

    def log_table(self, normalize: bool = True, max_combinations: int = MAX_COMBINATIONS
                  ) -> torch.Tensor:
        r"""The dense log-prior ``[C_1, ..., C_m]`` over the coupled tasks (float64).

        For ``"graph"`` the factor sum is enumerated and, with ``normalize=True``, normalised by
        its log-partition function (the normalised table of the pairwise model).

        Raises:
            ValidationError: when :math:`\prod_k C_k` exceeds ``max_combinations``.
        """
        if self.kind == "full":
            return self._log_table.clone()
        limit = _check_pos_int("max_combinations", max_combinations)
        if self.n_combinations > limit:
            raise _too_many(
                self.n_combinations, limit, "the dense prior table",
                "decoding never needs it, but a dense table (e.g. for the importance-sampling "
                "evaluator) does: restrict the prior to fewer tasks with JointPrior.fit(..., "
                "tasks=[...])",
            )
        table = factor_table(list(range(len(self._index))), self._unary, self._edges,
                              self._pairwise, self.n_classes)
        if normalize and self.kind == "graph":
            table = table - torch.logsumexp(table, 0)
        return table.reshape(self.n_classes)


def _check_positive(probs: torch.Tensor, what: str) -> None:
    if bool((probs <= 0).any()):
        raise ValidationError(
            f"pseudocount: {what} has label combinations with zero probability; GMTL would "
            "subtract log 0 = -inf (making those combinations win). Use pseudocount > 0."
        )


def _select_tasks(tasks: TaskSet, names: Sequence[str] | None) -> list[int]:
    if names is None:
        index = [i for i, t in enumerate(tasks) if t.is_classification]
        if not index:
            raise ValidationError(
                "data: no classification task; GMTL decodes classification tasks only "
                f"(tasks: {tasks!r})"
            )
        return index
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise ValidationError(f"tasks: expected a non-empty list of task names, got {names!r}")
    index = sorted(set(tasks.indices(names)))
    if len(index) != len(names):
        raise ValidationError(f"tasks: duplicate task names in {list(names)}")
    reg = [tasks[i].name for i in index if not tasks[i].is_classification]
    if reg:
        raise ValidationError(
            f"tasks: {reg} are regression tasks; a joint label prior covers classification "
            "tasks only"
        )
    return index


def _graph_edges(graph: Any, tasks: TaskSet, index: list[int]) -> list[tuple[int, int]]:
    """Skeleton edges of ``graph`` as sorted pairs of positions in ``index``."""
    if isinstance(graph, TaskGraph):
        unknown = sorted(set(graph.names) - set(tasks.names))
        missing = sorted(set(tasks.names) - set(graph.names))
        if unknown or missing:
            raise UnknownTaskError(
                f"graph: its tasks must be the data's tasks; unknown in the graph: {unknown}, "
                f"missing from the graph: {missing}"
            )
        order = [graph.index(name) for name in tasks.names]
        skel = graph.skeleton()[np.ix_(order, order)]
    else:
        try:
            adj = np.asarray(graph.detach().cpu() if isinstance(graph, torch.Tensor) else graph,
                             dtype=np.float64)
        except (TypeError, ValueError):
            raise ValidationError(
                f"graph: expected a TaskGraph or a [T, T] adjacency, got {type(graph).__name__}"
            ) from None
        if adj.shape != (len(tasks), len(tasks)):
            raise ValidationError(
                f"graph: expected a [{len(tasks)}, {len(tasks)}] adjacency in task order, got "
                f"shape {adj.shape}"
            )
        if not np.isfinite(adj).all():
            raise ValidationError("graph: adjacency entries must be finite")
        skel = (adj != 0) | (adj.T != 0)
    local = {g: i for i, g in enumerate(index)}
    edges = set()
    for i, j in zip(*np.nonzero(np.triu(skel, 1))):
        if int(i) in local and int(j) in local:
            edges.add((local[int(i)], local[int(j)]))
    return sorted(edges)


def _row_weights(weight: Any, n: int) -> torch.Tensor:
    """Row weights ``[n]`` as float64 on the CPU (ones when ``None``); finite and >= 0."""
    if weight is None:
        return torch.ones(n, dtype=torch.float64)
    w = torch.as_tensor(np.asarray(weight.detach().cpu() if isinstance(weight, torch.Tensor)
                                   else weight, dtype=np.float64))
    if w.shape != (n,) or not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValidationError(f"weight: expected {n} finite weights >= 0, got shape "
                              f"{tuple(w.shape)}")
    return w


def _chow_liu(yl: torch.Tensor, obs: torch.Tensor, sizes: list[int], lam: float,
              w: torch.Tensor | None = None) -> list[tuple[int, int]]:
    """Maximum spanning tree of pairwise mutual information (smoothed pairwise-complete
    counts); Kruskal on the ``m(m-1)/2`` pairs, all counted by one matrix product."""
    m, width = len(sizes), max(sizes)
    if m < 2:
        return []
    onehot = torch.zeros(yl.shape[0], m, width, dtype=torch.float64)
    onehot.scatter_(2, yl[..., None], 1.0)
    onehot = onehot * obs[..., None]
    flat = onehot.reshape(yl.shape[0], m * width)
    weighted = flat if w is None else flat * w[:, None]
    counts = (weighted.T @ flat).reshape(m, width, m, width).permute(0, 2, 1, 3)  # [m, m, C, C]
    size = torch.tensor(sizes)
    cls = torch.arange(width)
    valid_a = cls[None, :] < size[:, None]  # [m, C]
    cell = valid_a[:, None, :, None] & valid_a[None, :, None, :]  # [m, m, C, C]
    n_pair = counts.sum(dim=(2, 3))
    denom = n_pair + lam * (size[:, None] * size[None, :]).double()
    probs = torch.where(cell, counts + lam, torch.zeros_like(counts))
    probs = probs / denom.clamp_min(1e-300)[..., None, None]
    pa = probs.sum(3, keepdim=True)
    pb = probs.sum(2, keepdim=True)
    ratio = probs / (pa * pb).clamp_min(1e-300)
    terms = torch.where(probs > 0, probs * ratio.clamp_min(1e-300).log(), torch.zeros_like(probs))
    mi = terms.sum(dim=(2, 3))
    iu = torch.triu_indices(m, m, 1)
    weights = mi[iu[0], iu[1]].tolist()
    g = nx.Graph()
    g.add_nodes_from(range(m))
    # pairs in index order: Kruskal's stable sort breaks ties between equal weights by it
    g.add_weighted_edges_from(zip(iu[0].tolist(), iu[1].tolist(), weights))
    tree = nx.maximum_spanning_tree(g, algorithm="kruskal")
    return sorted((min(a, b), max(a, b)) for a, b in tree.edges())


