r"""GMTL joint inference (Makino, Geras and Cho, NeurIPS 2022) with a graph-factorised prior.

GMTL decodes all tasks jointly, removing the training joint label distribution's influence:

.. math::
    \hat{\mathbf{y}}(x) = \arg\max_{y_1, \dots, y_T} \; \sum_k \log p(y_k \mid x)
    \;-\; \alpha \log p_{\text{train}}(y_1, \dots, y_T).

:math:`\alpha = 0` is the per-task argmax; :math:`\alpha = 1` is the Bayes decision under a
uniform joint prior when the model's per-task posteriors are calibrated. The paper estimates
:math:`p_{\text{train}}` as one table over every label combination (:math:`\prod_k C_k` cells)
and decodes by enumerating it, which is exponential in the number of tasks. :class:`JointPrior`
offers that table (``kind="full"``), the product of marginals (``"independent"``) and a pairwise
factorisation over a task graph (``"graph"``):

.. math::
    \log p(\mathbf{y}) \approx \sum_k \theta_k(y_k) + \sum_{(j,k) \in E} \theta_{jk}(y_j, y_k)
    + \text{const}, \quad
    \theta_k = \log \hat p(y_k), \quad
    \theta_{jk} = \log \hat p(y_j, y_k) - \log \hat p_{jk}(y_j) - \log \hat p_{jk}(y_k),

with smoothed co-occurrence frequencies :math:`\hat p` (:math:`\hat p_{jk}(\cdot)` are the
marginals of the pairwise table, so :math:`\theta_{jk}` is the pointwise mutual information and
vanishes for independent pairs). On a tree this is the Chow–Liu form of the joint. :class:`GMTL`
then decodes by exact enumeration (chunked over examples), exact max-product on trees and
forests, exact max-product variable elimination on graphs with cycles whose elimination factors
fit ``max_combinations``, and damped loopy max-product with a convergence guard (approximate)
beyond that. See ``docs/gmtl.md`` for the decisions behind the defaults.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import networkx as nx
import numpy as np
import torch

from taskgraph.data import MultiTaskData
from taskgraph.exceptions import UnknownTaskError, ValidationError
from taskgraph.graph import TaskGraph
from taskgraph.inference.calibration import TemperatureScaler, task_log_probs
from taskgraph.tasks import Task, TaskSet

__all__ = ["JointPrior", "GMTL", "ConvergenceWarning", "MAX_COMBINATIONS"]

MAX_COMBINATIONS = 2**16
"""Default limit on :math:`\\prod_k C_k` for a dense prior table or an exact enumeration."""

_CHUNK_ELEMENTS = 2**20  # scores held at once by the exact decoders ([n, M] per chunk)
_CACHE_ELEMENTS = 2**15  # message-passing elements per op: under torch's parallel grain size


def _pad_score(dtype: torch.dtype) -> float:
    """Finite stand-in for -inf in the padded class slots of loopy max-product: below any score a
    decode can meet (a fixed -1e30 lost to real scores once alpha * log p passed it), with
    headroom so that sums with it cannot overflow."""
    return -torch.finfo(dtype).max / 16

PriorKind = Literal["full", "independent", "graph"]
_KINDS = ("full", "independent", "graph")
_METHODS = ("auto", "exact", "max_product")


class ConvergenceWarning(UserWarning):
    """Loopy max-product stopped at ``max_iter`` before its messages converged."""


# ---------------------------------------------------------------------------- small helpers
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


def _prod(sizes: Sequence[int]) -> int:
    out = 1
    for s in sizes:
        out *= int(s)
    return out


def _too_many(n_comb: int, limit: int, what: str, hint: str | None = None) -> ValidationError:
    hint = hint or (
        "factorise the prior over a task graph with JointPrior.fit(data, kind='graph', "
        "graph=...) (max-product decoding, no enumeration)"
    )
    return ValidationError(
        f"max_combinations: {what} has {n_comb:,} label combinations (the product of the class "
        f"counts), over max_combinations={limit:,}; {hint}, or raise max_combinations"
    )


def _combinations(sizes: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    """Every label combination in row-major order, ``[prod(sizes), len(sizes)]`` long."""
    grids = torch.meshgrid(*[torch.arange(s, device=device) for s in sizes], indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], dim=1)


def _outer_sum(factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``out[..., i_1, ..., i_m] = Σ_k f_k[..., i_k]`` for ``f_k`` of shape ``[..., C_k]``,
    flattened row-major to ``[..., ΠC_k]``."""
    out = factors[0]
    for f in factors[1:]:
        out = (out[..., :, None] + f[..., None, :]).reshape(*out.shape[:-1], -1)
    return out


def _components(n: int, edges: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Connected components of the undirected graph on ``0..n-1``, each sorted, ordered by
    their smallest node."""
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(edges)
    return sorted(sorted(c) for c in nx.connected_components(g))


@contextmanager
def _single_threaded() -> Iterator[None]:
    """Run torch ops in this block on one intra-op thread, restoring the setting afterwards.

    Message passing is a long sequence of small tensor ops; a thread pool synchronises on each
    of them, which costs more than it saves on small machines and stalls badly when cores are
    oversubscribed (scikit-learn limits thread pools in its hot loops for the same reason)."""
    before = torch.get_num_threads()
    if before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before > 1:
            torch.set_num_threads(before)


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

        if kind == "full":
            n_comb = _prod(sizes)
            if n_comb > limit:
                raise _too_many(n_comb, limit, "the full prior table")
            complete = obs.all(dim=1)
            flat = torch.zeros(int(complete.sum()), dtype=torch.long)
            for k, c in enumerate(sizes):
                flat = flat * c + yl[complete, k]
            counts = torch.bincount(flat, minlength=n_comb).double()
            n = int(complete.sum())
            if n == 0 and lam == 0:
                raise ValidationError(
                    "data: no row has every coupled label observed; kind='full' needs complete "
                    "rows (or pseudocount > 0, or kind='graph' with pairwise-complete counts)"
                )
            probs = (counts + lam) / (n + lam * n_comb)
            _check_positive(probs, "the full table")
            return cls(data.tasks, "full", index, log_table=probs.log().reshape(sizes),
                       pseudocount=lam, n_rows=n)

        unary = []
        for k, c in enumerate(sizes):
            counts = torch.bincount(yl[obs[:, k], k], minlength=c).double()
            n_k = int(obs[:, k].sum())
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
            edges = _chow_liu(yl, obs, sizes, lam)
            source = "chow_liu"
        else:
            edges = _graph_edges(graph, data.tasks, index)
            source = "given"
        pairwise = []
        for a, b in edges:
            both = obs[:, a] & obs[:, b]
            n_both, cells = int(both.sum()), sizes[a] * sizes[b]
            flat = yl[both, a] * sizes[b] + yl[both, b]
            counts = torch.bincount(flat, minlength=cells).double()
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
        if _prod(sizes) > limit:
            raise _too_many(_prod(sizes), limit, "the table")
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
        return _prod(self.n_classes)

    @property
    def is_forest(self) -> bool:
        """``True`` when the pairwise factors form a forest (max-product is then exact)."""
        comps = _components(len(self._index), self._edges)
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
        table = _factor_table(list(range(len(self._index))), self._unary, self._edges,
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


def _chow_liu(yl: torch.Tensor, obs: torch.Tensor, sizes: list[int], lam: float
              ) -> list[tuple[int, int]]:
    """Maximum spanning tree of pairwise mutual information (smoothed pairwise-complete
    counts); Kruskal on the ``m(m-1)/2`` pairs, all counted by one matrix product."""
    m, width = len(sizes), max(sizes)
    if m < 2:
        return []
    onehot = torch.zeros(yl.shape[0], m, width, dtype=torch.float64)
    onehot.scatter_(2, yl[..., None], 1.0)
    onehot = onehot * obs[..., None]
    flat = onehot.reshape(yl.shape[0], m * width)
    counts = (flat.T @ flat).reshape(m, width, m, width).permute(0, 2, 1, 3)  # [m, m, C, C]
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


def _factor_table(
    nodes: list[int],
    unary: Sequence[torch.Tensor],
    edges: Sequence[tuple[int, int]],
    pairwise: Sequence[torch.Tensor],
    sizes: Sequence[int],
) -> torch.Tensor:
    """Flat ``[Π C]`` sum of the unary and pairwise factors over ``nodes`` (row-major)."""
    pos = {v: i for i, v in enumerate(nodes)}
    shape = [sizes[v] for v in nodes]
    table = torch.zeros(shape, dtype=unary[nodes[0]].dtype)
    for v in nodes:
        view = [1] * len(nodes)
        view[pos[v]] = sizes[v]
        table = table + unary[v].reshape(view)
    for (a, b), p in zip(edges, pairwise):
        if a not in pos or b not in pos:
            continue
        view = [1] * len(nodes)
        view[pos[a]], view[pos[b]] = sizes[a], sizes[b]
        pab = p if pos[a] < pos[b] else p.T
        table = table + pab.reshape(view)
    return table.reshape(-1)


# ---------------------------------------------------------------------------- decoders
def _enumerate_argmax(
    unaries: Sequence[torch.Tensor], neg_log_prior: torch.Tensor, chunk_size: int | None
) -> torch.Tensor:
    r"""Exact joint argmax by enumeration, chunked over examples.

    ``score[n, c] = Σ_k u_k[n, c_k] + neg_log_prior[c]`` over the ``M = ΠC_k`` combinations
    ``c`` (row-major), built as an outer sum per chunk of ``n`` examples (``[n, M]`` at once).

    Returns ``[N, m]`` long labels.
    """
    sizes = [u.shape[1] for u in unaries]
    n_comb = neg_log_prior.numel()
    combos = _combinations(sizes, neg_log_prior.device)
    n = unaries[0].shape[0]
    step = chunk_size or max(1, _CHUNK_ELEMENTS // n_comb)
    out = []
    for start in range(0, n, step):
        scores = _outer_sum([u[start:start + step] for u in unaries]) + neg_log_prior
        out.append(combos[scores.argmax(dim=1)])
    return torch.cat(out) if out else torch.zeros(0, len(sizes), dtype=torch.long)


def _oriented(edges: Sequence[tuple[int, int]], pairwise: Sequence[torch.Tensor]):
    """Neighbour lists ``{v: [(u, psi[C_v, C_u])]}`` of an undirected pairwise model."""
    nbrs: dict[int, list[tuple[int, torch.Tensor]]] = {}
    for (a, b), p in zip(edges, pairwise):
        nbrs.setdefault(a, []).append((b, p))
        nbrs.setdefault(b, []).append((a, p.T))
    return nbrs


def _tree_max_product(
    phi: dict[int, torch.Tensor],
    edges: Sequence[tuple[int, int]],
    psi: Sequence[torch.Tensor],
) -> dict[int, torch.Tensor]:
    r"""Exact MAP on a forest by max-product (Viterbi) message passing, vectorised over
    examples: one upward pass in reverse BFS order storing argmax back-pointers, then one
    downward pass. ``phi[v]`` is ``[N, C_v]``; returns ``{v: labels [N]}``."""
    nbrs = _oriented(edges, psi)
    nodes = sorted(phi)
    seen: set[int] = set()
    order: list[int] = []
    parent: dict[int, tuple[int, torch.Tensor]] = {}
    for root in nodes:
        if root in seen:
            continue
        seen.add(root)
        queue = [root]
        while queue:
            v = queue.pop(0)
            order.append(v)
            for u, p_vu in nbrs.get(v, []):
                if u not in seen:
                    seen.add(u)
                    parent[u] = (v, p_vu.T)  # psi oriented [C_u, C_parent]
                    queue.append(u)
    belief = {v: phi[v].clone() for v in nodes}
    back: dict[int, torch.Tensor] = {}
    for v in reversed(order):
        if v not in parent:
            continue
        p, psi_vp = parent[v]
        scores = belief[v][:, :, None] + psi_vp[None]  # [N, C_v, C_p]
        msg, arg = scores.max(dim=1)
        back[v] = arg
        belief[p] = belief[p] + msg
    labels: dict[int, torch.Tensor] = {}
    for v in order:
        if v in parent:
            labels[v] = back[v].gather(1, labels[parent[v][0]][:, None])[:, 0]
        else:
            labels[v] = belief[v].argmax(dim=1)
    return labels


def _elimination_plan(
    nodes: Sequence[int],
    edges: Sequence[tuple[int, int]],
    sizes: Sequence[int],
    limit: int,
) -> tuple[list[int], int] | None:
    r"""Greedy min-fill elimination order of a pairwise model (ties: smallest factor).

    Returns ``(order, largest factor)`` where the largest factor is the biggest
    :math:`\prod C` over a variable and its neighbours at elimination, or ``None`` as soon as
    a step would need a factor over ``limit`` cells under every choice."""
    nbrs: dict[int, set[int]] = {v: set() for v in nodes}
    for a, b in edges:
        if a in nbrs and b in nbrs:
            nbrs[a].add(b)
            nbrs[b].add(a)
    order: list[int] = []
    largest = 1
    remaining = set(nodes)
    while remaining:
        best: tuple[int, int, int] | None = None
        for v in sorted(remaining):
            nv = nbrs[v]
            cells = sizes[v] * _prod([sizes[u] for u in nv])
            if cells > limit:
                continue
            fill = sum(1 for u in nv for w in nv if u < w and w not in nbrs[u])
            key = (fill, cells, v)
            if best is None or key < best:
                best = key
        if best is None:
            return None
        _, cells, v = best
        largest = max(largest, cells)
        nv = nbrs.pop(v)
        for u in nv:
            nbrs[u].discard(v)
            nbrs[u] |= nv - {u}
        remaining.discard(v)
        order.append(v)
    return order, largest


def _eliminate(
    phi: dict[int, torch.Tensor],
    edges: Sequence[tuple[int, int]],
    psi: Sequence[torch.Tensor],
    order: Sequence[int],
    largest: int,
    chunk_size: int | None,
) -> dict[int, torch.Tensor]:
    r"""Exact MAP by max-product variable elimination along ``order`` (a junction-tree pass),
    vectorised over examples and chunked so that about :math:`2^{20}` scores are held at once.

    Eliminating :math:`v` replaces the factors that contain it by
    :math:`\max_{y_v} \sum_f f` over the union of their scopes minus :math:`v` and keeps the
    argmax as a back-pointer table; labels are read back in reverse order.
    ``phi[v]`` is ``[N, C_v]``; returns ``{v: labels [N]}``."""
    sizes = {v: t.shape[1] for v, t in phi.items()}
    n = next(iter(phi.values())).shape[0]
    step = chunk_size or max(1, _CHUNK_ELEMENTS // largest)
    out = {v: [] for v in phi}
    for start in range(0, n, step):
        factors: list[tuple[tuple[int, ...], torch.Tensor]] = [
            ((v,), t[start:start + step]) for v, t in phi.items()]
        for (a, b), p in zip(edges, psi):
            scope, table = ((a, b), p) if a < b else ((b, a), p.T)
            factors.append((scope, table[None]))
        back: dict[int, tuple[tuple[int, ...], torch.Tensor]] = {}
        for v in order:
            mine = [f for f in factors if v in f[0]]
            factors = [f for f in factors if v not in f[0]]
            union = tuple(sorted({u for scope, _ in mine for u in scope}))
            total = None
            for scope, table in mine:
                view = [table.shape[0]] + [sizes[u] if u in scope else 1 for u in union]
                term = table.reshape(view)
                total = term if total is None else total + term
            best, arg = total.max(dim=1 + union.index(v))
            rest = tuple(u for u in union if u != v)
            back[v] = (rest, arg)
            if rest:
                factors.append((rest, best))
        labels: dict[int, torch.Tensor] = {}
        for v in reversed(order):
            rest, arg = back[v]
            flat = torch.zeros(arg.shape[0], dtype=torch.long, device=arg.device)
            for u in rest:
                flat = flat * sizes[u] + labels[u]
            labels[v] = arg.reshape(arg.shape[0], -1).gather(1, flat[:, None])[:, 0]
        for v in phi:
            out[v].append(labels[v])
    return {v: torch.cat(parts) for v, parts in out.items()}


def _loopy_max_product(
    phi: dict[int, torch.Tensor],
    edges: Sequence[tuple[int, int]],
    psi: Sequence[torch.Tensor],
    *,
    damping: float,
    max_iter: int,
    tol: float,
    chunk_size: int | None,
) -> tuple[dict[int, torch.Tensor], float, int]:
    r"""Damped loopy max-product in the log domain, vectorised over examples and edges.

    For every directed edge :math:`i \to j`:

    .. math::
        m_{i\to j}(y_j) \leftarrow \delta\, m_{i\to j}(y_j) + (1-\delta)\Big[\max_{y_i}
        \phi_i(y_i) + \psi_{ij}(y_i, y_j) + \sum_{k \in N(i)\setminus j} m_{k\to i}(y_i)\Big],

    messages normalised to max 0, all edges updated in parallel. An example stops (its messages
    are frozen) once none of its messages moved by more than ``tol`` in a sweep; the rest stop
    after ``max_iter`` sweeps. Labels are the argmax of the final beliefs.

    Returns ``(labels, fraction of examples converged, sweeps run)``.
    """
    nodes = sorted(phi)
    pos = {v: i for i, v in enumerate(nodes)}
    m = len(nodes)
    width = max(phi[v].shape[1] for v in nodes)
    ref = phi[nodes[0]]
    n, dtype, device = ref.shape[0], ref.dtype, ref.device
    # layout [node or edge, class, example]: examples innermost, so gathers over edges copy
    # contiguous rows and every update is a long vectorised loop
    neg = _pad_score(dtype)
    phi_all = torch.full((m, width, n), neg, dtype=dtype, device=device)
    valid = torch.zeros(m, width, dtype=torch.bool, device=device)
    for v in nodes:
        phi_all[pos[v], : phi[v].shape[1]] = phi[v].T
        valid[pos[v], : phi[v].shape[1]] = True
    e = len(edges)
    src = torch.tensor([pos[a] for a, _ in edges] + [pos[b] for _, b in edges], device=device)
    dst = torch.tensor([pos[b] for _, b in edges] + [pos[a] for a, _ in edges], device=device)
    rev = torch.cat([torch.arange(e, 2 * e), torch.arange(e)]).to(device)
    psi_dir = torch.zeros(2 * e, width, width, dtype=dtype, device=device)
    for i, p in enumerate(psi):
        ca, cb = p.shape
        psi_dir[i, :ca, :cb] = p
        psi_dir[e + i, :cb, :ca] = p.T
    psi_src = [psi_dir[:, c, :, None].contiguous() for c in range(width)]  # [2E, C_dst, 1]
    pad = ~valid[dst][:, :, None]  # [2E, C, 1] padded destination classes
    has_pad = bool(pad.any())

    msgs = torch.zeros(2 * e, width, n, dtype=dtype, device=device)
    step = chunk_size or max(16, _CACHE_ELEMENTS // max(1, 2 * e * width))
    # the examples still iterating, compacted: ids, potentials and messages
    ids = torch.arange(n, device=device)
    ph_act, msg_act = phi_all, msgs.clone()
    sweeps, moved = 0, torch.ones(n, dtype=torch.bool, device=device)
    for it in range(1, max_iter + 1):
        sweeps = it
        parts = []
        for start in range(0, ids.numel(), step):
            old = msg_act[:, :, start:start + step]
            belief = ph_act[:, :, start:start + step].clone()
            # sum of incoming messages; index_put_ rather than index_add_, whose CPU kernel
            # stalls badly when the machine's cores are oversubscribed
            belief.index_put_((dst,), old, accumulate=True)
            cavity = belief.index_select(0, src).sub_(old.index_select(0, rev))
            new = cavity[:, 0, None, :] + psi_src[0]  # max over the source label
            for c in range(1, width):
                new = torch.maximum(new, cavity[:, c, None, :] + psi_src[c])
            if has_pad:
                new.masked_fill_(pad, neg)
            new.sub_(new.amax(dim=1, keepdim=True))
            if has_pad:
                new.masked_fill_(pad, 0.0)
            if damping:
                new.lerp_(old, damping)
            parts.append((new - old).abs_().amax(dim=(0, 1)) > tol)
            old.copy_(new)
        moved = torch.cat(parts)
        n_moving = int(moved.sum())
        if n_moving == 0:
            break
        if n_moving <= 0.75 * ids.numel():  # retire the converged examples
            done = torch.nonzero(~moved).flatten()
            msgs.index_copy_(2, ids.index_select(0, done), msg_act.index_select(2, done))
            keep = torch.nonzero(moved).flatten()
            ids = ids.index_select(0, keep)
            ph_act = ph_act.index_select(2, keep)
            msg_act = msg_act.index_select(2, keep)
            moved = torch.ones(ids.numel(), dtype=torch.bool, device=device)
    msgs.index_copy_(2, ids, msg_act)
    n_failed = int(moved.sum()) if sweeps == max_iter else 0
    phi_all.index_put_((dst,), msgs, accumulate=True)
    # a padded slot is never a label, whatever the scores (all -inf rows decode to class 0)
    labels = phi_all.masked_fill(~valid[:, :, None], -math.inf).argmax(dim=1)  # [m, N]
    return {v: labels[pos[v]] for v in nodes}, 1.0 - n_failed / max(1, n), sweeps


def _icm(
    phi: dict[int, torch.Tensor],
    edges: Sequence[tuple[int, int]],
    psi: Sequence[torch.Tensor],
    labels: dict[int, torch.Tensor],
    max_sweeps: int = 20,
) -> dict[int, torch.Tensor]:
    """Iterated conditional modes from ``labels``: each task in turn takes its best label given
    its neighbours', vectorised over examples, until no label changes. Never lowers the
    objective, and ends at a local optimum with respect to single-task changes."""
    nbrs = _oriented(edges, psi)
    labels = {v: t.clone() for v, t in labels.items()}
    for _ in range(max_sweeps):
        changed = False
        for v in sorted(phi):
            score = phi[v].clone()
            for u, p_vu in nbrs.get(v, []):
                score = score + p_vu.T.index_select(0, labels[u])  # [N, C_v]
            current = score.gather(1, labels[v][:, None])[:, 0]
            best_val, best = score.max(dim=1)
            better = best_val > current
            if bool(better.any()):
                labels[v] = torch.where(better, best, labels[v])
                changed = True
        if not changed:
            break
    return labels


# ---------------------------------------------------------------------------- the decoder
class GMTL:
    r"""GMTL joint decoding of per-task log-probabilities under a :class:`JointPrior`.

    .. math::
        \hat{\mathbf{y}}(x) = \arg\max_{\mathbf{y}} \; \sum_k \log \tilde p(y_k \mid x)
        - \alpha \log p_{\text{train}}(\mathbf{y}),

    where :math:`\log \tilde p(y_k \mid x)` are the (optionally temperature-calibrated) per-task
    log-probabilities. Classification tasks outside the prior and all tasks at
    :math:`\alpha = 0` are decoded by their own argmax (exactly the independent prediction);
    regression tasks get label 0 (a learner keeps its regression values).

    Decoding per prior kind (``method="auto"``):

    - ``"independent"``: per-task argmax of :math:`\log \tilde p(y_k|x) - \alpha\log p(y_k)`
      (exact; the joint argmax factorises).
    - ``"full"``: exact enumeration of the :math:`M = \prod_k C_k` combinations, chunked over
      examples (``[n, M]`` scores at a time); refused above ``max_combinations``.
    - ``"graph"``: per connected component of the task graph: exact max-product on trees
      (forests); on a component with cycles, exact max-product variable elimination (greedy
      min-fill order) when no intermediate factor exceeds ``max_combinations`` cells, otherwise
      damped loopy max-product followed by iterated conditional modes (**approximate**; a
      :class:`ConvergenceWarning` is issued when some examples' messages have not converged
      within ``max_iter`` sweeps).

    ``method="exact"`` never approximates: it raises where ``"auto"`` would fall back to loopy
    max-product, and decodes an ``"independent"`` prior by enumerating its joint table (a
    reference for the closed form). ``method="max_product"`` uses message passing on every
    ``"graph"`` component (loopy where there are cycles). After :meth:`decode`, :attr:`info_`
    says which decoder ran on which tasks and whether the result is exact.

    Args:
        prior (JointPrior): the training joint label prior.
        alpha (float): prior weight :math:`\alpha \ge 0`. (default: ``1.0``)
        calibration (TemperatureScaler, optional): fitted per-task temperatures applied to the
            log-probabilities before decoding.
        method (str): ``"auto"``, ``"exact"`` or ``"max_product"``. (default: ``"auto"``)
        max_combinations (int): the most label combinations an exact decoder may tabulate per
            example: :math:`\prod C_k` of an enumerated table, or the largest intermediate
            factor of variable elimination. (default: ``2**16``)
        chunk_size (int, optional): examples per chunk (default: sized to hold about
            :math:`2^{22}` scores).
        max_iter (int): loopy max-product sweeps. (default: ``100``)
        damping (float): message damping :math:`\delta \in [0, 1)`. (default: ``0.5``)
        tol (float): an example's messages have converged when none moved by more than this in
            a sweep (log domain). (default: ``1e-3``)

    Shapes:
        - **log_probs:** ``[N, T, C]`` (``-inf`` padding, as ``learner.predict_log_proba``)
          or a list of ``T`` tensors ``[N, C_k]`` (``None`` for regression tasks)
        - **returns:** ``[N, T]`` long labels

    Example:
        >>> prior = JointPrior.fit(bench.train, kind="full")
        >>> labels = learner.predict(bench.test_ood.x, inference=GMTL(prior, alpha=1.0))
    """

    def __init__(
        self,
        prior: JointPrior,
        alpha: float = 1.0,
        *,
        calibration: TemperatureScaler | None = None,
        method: Literal["auto", "exact", "max_product"] = "auto",
        max_combinations: int = MAX_COMBINATIONS,
        chunk_size: int | None = None,
        max_iter: int = 100,
        damping: float = 0.5,
        tol: float = 1e-3,
    ) -> None:
        if not isinstance(prior, JointPrior):
            raise ValidationError(f"prior: expected a JointPrior, got {type(prior).__name__}")
        self.prior = prior
        self.alpha = _check_nonneg_real("alpha", alpha)
        if calibration is not None and not isinstance(calibration, TemperatureScaler):
            raise ValidationError(
                f"calibration: expected a fitted TemperatureScaler, got "
                f"{type(calibration).__name__}"
            )
        if calibration is not None:
            calibration._check_fitted()
        self.calibration = calibration
        if method not in _METHODS:
            raise ValidationError(f"method: expected one of {_METHODS}, got {method!r}")
        if method == "max_product" and prior.kind == "full":
            raise ValidationError(
                "method: 'max_product' needs a factorised prior (kind='graph'); a 'full' table "
                "is decoded by enumeration (method='exact' or 'auto')"
            )
        self.method = method
        self.max_combinations = _check_pos_int("max_combinations", max_combinations)
        self.chunk_size = None if chunk_size is None else _check_pos_int("chunk_size", chunk_size)
        self.max_iter = _check_pos_int("max_iter", max_iter)
        if isinstance(damping, bool) or not isinstance(damping, numbers.Real) or not (
            0 <= damping < 1
        ):
            raise ValidationError(f"damping: expected a value in [0, 1), got {damping!r}")
        self.damping = float(damping)
        self.tol = _check_nonneg_real("tol", tol)
        self.info_: dict[str, Any] = {}

    def __repr__(self) -> str:
        cal = ", calibrated" if self.calibration is not None else ""
        return f"GMTL(alpha={self.alpha:g}, prior={self.prior.kind!r}, method={self.method!r}{cal})"

    def check_tasks(self, tasks: TaskSet) -> None:
        """Called by ``learner.predict``: the prior (and calibration) must match ``tasks``."""
        self.prior.check_tasks(tasks)
        if self.calibration is not None:
            self.calibration.check_tasks(TaskSet.coerce(tasks))

    # ------------------------------------------------------------------ internals
    def _columns(self, log_probs: Any, calibrate: bool = True) -> list[torch.Tensor | None]:
        sizes = [t.n_classes if t.is_classification else None for t in self.prior.tasks]
        cols, _ = task_log_probs(log_probs, sizes, "log_probs")
        if calibrate and self.calibration is not None:
            cols = self.calibration.transform_columns(cols)
        present = [c for c in cols if c is not None]
        dtype = torch.float64 if any(c.dtype == torch.float64 for c in present) else torch.float32
        return [None if c is None else c.to(dtype) for c in cols]

    def _factors(self, dtype: torch.dtype, device: torch.device
                 ) -> tuple[list[torch.Tensor], list[tuple[int, int]], list[torch.Tensor]]:
        """Prior factors of the coupled tasks scaled by :math:`-\\alpha`."""
        p = self.prior
        unary = [(-self.alpha * u).to(dtype=dtype, device=device) for u in p._unary]
        pair = [(-self.alpha * q).to(dtype=dtype, device=device) for q in p._pairwise]
        return unary, list(p._edges), pair

    # ------------------------------------------------------------------ public
    def decode(self, log_probs: Any) -> torch.Tensor:
        """Joint labels ``[N, T]`` (long); see the class docstring for the rule and methods."""
        # alpha = 0 is the per-task argmax exactly: a temperature cannot change it
        cols = self._columns(log_probs, calibrate=self.alpha != 0)
        ref = next(c for c in cols if c is not None)
        n, dtype, device = ref.shape[0], ref.dtype, ref.device
        labels = torch.zeros(n, len(cols), dtype=torch.long, device=device)
        coupled = self.prior._index
        for k, c in enumerate(cols):
            if c is not None and (self.alpha == 0 or k not in coupled):
                labels[:, k] = c.argmax(dim=1)
        info: dict[str, Any] = {"exact": True, "closed_form": [], "enumeration": [],
                                "tree": [], "elimination": [], "loopy": [], "max_factor": 0,
                                "converged": None, "converged_fraction": None, "iterations": 0}
        if self.alpha == 0:
            info["closed_form"] = list(self.prior.coupled)
            self.info_ = info
            return labels
        u = [cols[i] for i in coupled]
        names = self.prior.coupled
        kind = self.prior.kind
        if kind == "full":
            table = self.prior._log_table.to(dtype=dtype, device=device).reshape(-1)
            if table.numel() > self.max_combinations:
                raise _too_many(table.numel(), self.max_combinations, "the full prior")
            out = _enumerate_argmax(u, -self.alpha * table, self.chunk_size)
            labels[:, coupled] = out
            info["enumeration"] = list(names)
            self.info_ = info
            return labels

        unary, edges, pair = self._factors(dtype, device)
        phi = {v: u[v] + unary[v] for v in range(len(u))}
        if kind == "independent" and self.method != "exact":
            for v in range(len(u)):
                labels[:, coupled[v]] = phi[v].argmax(dim=1)
            info["closed_form"] = list(names)
            self.info_ = info
            return labels

        sizes = self.prior.n_classes
        if kind == "independent" and self.method == "exact":
            # one joint table over every task: a brute-force reference for the closed form
            every = list(range(len(u)))
            n_comb = _prod(sizes)
            if n_comb > self.max_combinations:
                raise _too_many(n_comb, self.max_combinations, "the independent prior")
            table = _factor_table(every, unary, edges, pair, sizes)
            labels[:, coupled] = _enumerate_argmax(u, table, self.chunk_size)
            info["enumeration"] = list(names)
            self.info_ = info
            return labels

        with _single_threaded():
            self._decode_graph(u, phi, edges, pair, labels, info)
        self.info_ = info
        return labels

    def _decode_graph(
        self,
        u: list[torch.Tensor],
        phi: dict[int, torch.Tensor],
        edges: list[tuple[int, int]],
        pair: list[torch.Tensor],
        labels: torch.Tensor,
        info: dict[str, Any],
    ) -> None:
        """Decode the coupled tasks of a factorised prior into ``labels`` (in place)."""
        coupled, names, sizes = self.prior._index, self.prior.coupled, self.prior.n_classes
        tree_nodes: list[int] = []
        loopy_nodes: list[int] = []
        for comp in _components(len(u), edges):
            comp_set = set(comp)
            comp_edges = [(i, e) for i, e in enumerate(edges) if e[0] in comp_set]
            if len(comp_edges) == len(comp) - 1:
                tree_nodes += comp
                continue
            plan = None
            if self.method != "max_product":
                plan = _elimination_plan(comp, [e for _, e in comp_edges], sizes,
                                         self.max_combinations)
            if plan is not None:
                order, largest = plan
                result = _eliminate({v: phi[v] for v in comp}, [e for _, e in comp_edges],
                                    [pair[i] for i, _ in comp_edges], order, largest,
                                    self.chunk_size)
                for v, lab in result.items():
                    labels[:, coupled[v]] = lab
                info["elimination"] += [names[v] for v in comp]
                info["max_factor"] = max(info["max_factor"], largest)
            elif self.method == "exact":
                raise ValidationError(
                    f"max_combinations: exact decoding of the task-graph component "
                    f"{[names[v] for v in comp]} needs a variable-elimination factor over more "
                    f"than max_combinations={self.max_combinations:,} label combinations (the "
                    "graph is too densely connected); use method='max_product' (loopy, "
                    "approximate), a sparser graph, or raise max_combinations"
                )
            else:
                loopy_nodes += comp
        if tree_nodes:
            sel = set(tree_nodes)
            sub_e = [(i, e) for i, e in enumerate(edges) if e[0] in sel]
            result = _tree_max_product({v: phi[v] for v in tree_nodes}, [e for _, e in sub_e],
                                       [pair[i] for i, _ in sub_e])
            for v, lab in result.items():
                labels[:, coupled[v]] = lab
            info["tree"] = [names[v] for v in sorted(tree_nodes)]
        if loopy_nodes:
            sel = set(loopy_nodes)
            sub_e = [(i, e) for i, e in enumerate(edges) if e[0] in sel]
            sub_edges, sub_pair = [e for _, e in sub_e], [pair[i] for i, _ in sub_e]
            sub_phi = {v: phi[v] for v in loopy_nodes}
            result, frac, iters = _loopy_max_product(
                sub_phi, sub_edges, sub_pair, damping=self.damping, max_iter=self.max_iter,
                tol=self.tol, chunk_size=self.chunk_size)
            result = _icm(sub_phi, sub_edges, sub_pair, result)
            for v, lab in result.items():
                labels[:, coupled[v]] = lab
            info.update(loopy=[names[v] for v in sorted(loopy_nodes)], exact=False,
                        converged=frac == 1.0, converged_fraction=frac, iterations=iters)
            if frac < 1.0:
                warnings.warn(
                    f"GMTL: loopy max-product did not converge for {1 - frac:.1%} of the "
                    f"examples in max_iter={self.max_iter} sweeps (damping={self.damping}); "
                    "their labels are the final beliefs' argmax refined by ICM. Raise max_iter "
                    "or damping, or use a tree (kind='graph' with graph=None fits the Chow-Liu "
                    "tree).",
                    ConvergenceWarning,
                    stacklevel=3,
                )

    def score(self, log_probs: Any, labels: Any) -> torch.Tensor:
        r"""The decoding objective of given labels,
        :math:`\sum_k \log\tilde p(y_k|x) - \alpha \log p(\mathbf{y})` (the prior up to a
        constant for ``"graph"``), summed over classification tasks.

        Shapes:
            - **log_probs:** as in :meth:`decode`
            - **labels:** ``[N, T]``
            - **returns:** ``[N]``
        """
        cols = self._columns(log_probs)
        y = torch.as_tensor(labels)
        ref = next(c for c in cols if c is not None)
        if y.dim() != 2 or y.shape != (ref.shape[0], len(cols)):
            raise ValidationError(
                f"labels: expected shape [{ref.shape[0]}, {len(cols)}], got {tuple(y.shape)}"
            )
        yl = y.long().to(ref.device)
        total = torch.zeros(ref.shape[0], dtype=torch.float64, device=ref.device)
        for k, c in enumerate(cols):
            if c is not None:
                total = total + c.gather(1, yl[:, k:k + 1])[:, 0].double()
        if self.alpha:
            total = total - self.alpha * self.prior.log_potential(yl.cpu()).to(ref.device)
        return total
