r"""Hybrid structure search over discrete task labels: causal-learn's PC skeleton, then a greedy
search for the DAG on that skeleton with the best interventional BIC score, then the edges the
data cannot orient marked undirected.

**Score.** Every task ``j`` with parents :math:`\mathrm{pa}(j)` contributes the multinomial
log-likelihood of its conditional probability table on the rows where ``j`` is labelled, its
parents are labelled and ``j`` was not intervened on (a row with ``do[n, j]`` says nothing
about ``j``'s mechanism; its descendants still respond to the set value, so they keep the row),
minus the BIC penalty:

.. math::
    S_j = \sum_{c, k} N_{jck} \log \frac{N_{jck}}{N_{jc}}
    - \frac{\log N_j}{2}\, q_j (r_j - 1),

with :math:`N_{jck}` the count of parent configuration ``c`` and state ``k``, :math:`q_j` the
number of parent configurations and :math:`r_j` the states of ``j``. Without interventions the
score is equal on Markov-equivalent DAGs (the reason PC and GES return a CPDAG); rows with
``do`` break the tie, so they orient edges the observational data cannot.

**Search** (:func:`hill_climb`): from a start DAG, repeatedly apply the best of all edge
additions (within the candidate skeleton), deletions and reversals that keep the graph acyclic
and raise the score, until none does (greedy hill climbing; local scores are cached).
:func:`hybrid_search` takes the union of the skeletons of four PC runs (chi-square and G²,
alpha 0.01 and 0.05) as the candidates, starts from each run's DAG extension, and keeps the
best-scoring result (GES-BDeu's graph joins them on up to 12 tasks): starting from PC's graph
instead of the empty one halved the CPDAG SHD on insurance and alarm (docs/gcnet.md).
``penalty`` scales the BIC term (0.5 by default: with the full BIC, edges into 3-6-state
children of many-state parents were dropped on child and insurance).

**Unidentified edges** (:func:`identified_orientation`): the edges that are reversible in the
CPDAG of the found DAG (:func:`taskgraph.graph.equivalence.dag_to_cpdag`, causal-learn's) and
touch no intervened task are returned as undirected.
"""

from __future__ import annotations

from typing import Any

import networkx as nx
import numpy as np
import torch

from taskgraph.exceptions import ValidationError

__all__ = ["LocalScore", "PC_SETTINGS", "conditional_bic", "feature_direction", "hill_climb",
           "hybrid_search", "identified_orientation", "search_graph"]


class LocalScore:
    """Interventional BIC local scores of discrete labels, cached by ``(task, parents)``.

    Args:
        y (ndarray): ``[N, T]`` labels, integers ``0 .. r_j - 1`` as floats; ``NaN`` = missing.
        cards (sequence of int): the states ``r_j`` of every task.
        do (ndarray, optional): ``[N, T]`` bool, ``True`` where the task was set by an
            intervention.
        max_configs (int): a parent set with more configurations than this scores ``-inf``
            (keeps the tables small). (default: ``4096``)
    """

    def __init__(self, y: np.ndarray, cards: Any, do: np.ndarray | None = None,
                 max_configs: int = 4096, penalty: float = 1.0) -> None:
        self.penalty = float(penalty)
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 2:
            raise ValidationError(f"y: expected [N, T] labels, got shape {list(y.shape)}")
        self.cards = [int(c) for c in cards]
        if len(self.cards) != y.shape[1]:
            raise ValidationError(f"cards: expected {y.shape[1]} entries, got {len(self.cards)}")
        self.observed = ~np.isnan(y)
        self.codes = np.where(self.observed, y, 0).astype(np.int64)
        if (self.codes < 0).any() or (self.codes >= np.asarray(self.cards)[None]).any():
            raise ValidationError("y: labels must be integers 0 .. cards[j] - 1")
        self.usable = self.observed if do is None else self.observed & ~np.asarray(do, bool)
        self.max_configs = int(max_configs)
        self._cache: dict[tuple[int, frozenset[int]], float] = {}

    def __call__(self, j: int, parents: frozenset[int]) -> float:
        key = (j, parents)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._score(j, sorted(parents))
        return hit

    def _score(self, j: int, parents: list[int]) -> float:
        r = self.cards[j]
        q = int(np.prod([self.cards[p] for p in parents])) if parents else 1
        if q > self.max_configs:
            return -np.inf
        rows = self.usable[:, j].copy()
        for p in parents:
            rows &= self.observed[:, p]
        n = int(rows.sum())
        if n == 0:
            return 0.0
        config = np.zeros(n, dtype=np.int64)
        for p in parents:                      # mixed-radix parent configuration
            config = config * self.cards[p] + self.codes[rows, p]
        counts = np.bincount(config * r + self.codes[rows, j], minlength=q * r).reshape(q, r)
        totals = counts.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            ll = np.where(counts > 0, counts * np.log(counts / np.maximum(totals, 1)), 0.0)
        return float(ll.sum() - self.penalty * 0.5 * np.log(n) * q * (r - 1))

    def total(self, dag: np.ndarray) -> float:
        """Score of a whole DAG ``[T, T]`` (``dag[i, j]``: ``i → j``)."""
        return sum(self(j, frozenset(np.flatnonzero(dag[:, j]).tolist()))
                   for j in range(dag.shape[0]))


def hill_climb(score: LocalScore, candidates: np.ndarray, start: np.ndarray | None = None,
               max_iter: int = 10_000) -> np.ndarray:
    """Greedy hill climbing over DAGs whose skeleton lies in ``candidates`` (``[T, T]`` bool,
    symmetric), from ``start`` (a DAG inside the candidates; default: the empty graph);
    returns the ``[T, T]`` bool adjacency."""
    t = candidates.shape[0]
    cand = np.asarray(candidates, bool) | np.asarray(candidates, bool).T
    dag = np.zeros((t, t), dtype=bool) if start is None else np.asarray(start, bool).copy()
    if (dag & ~cand).any() or not nx.is_directed_acyclic_graph(nx.DiGraph(dag)):
        raise ValidationError("start: expected a DAG whose edges lie in the candidates")
    g = nx.DiGraph(dag)
    g.add_nodes_from(range(t))
    parents = [frozenset(np.flatnonzero(dag[:, j]).tolist()) for j in range(t)]
    for _ in range(max_iter):
        best, move = 1e-9, None
        for i, j in zip(*np.nonzero(np.triu(cand, 1))):
            i, j = int(i), int(j)
            for a, b in ((i, j), (j, i)):
                if dag[a, b]:
                    # delete a → b
                    gain = score(b, parents[b] - {a}) - score(b, parents[b])
                    if gain > best:
                        best, move = gain, ("del", a, b)
                    # reverse a → b into b → a (acyclic unless another path a ⇝ b exists)
                    gain += score(a, parents[a] | {b}) - score(a, parents[a])
                    if gain > best and not _other_path(g, a, b):
                        best, move = gain, ("rev", a, b)
                elif not dag[b, a]:
                    gain = score(b, parents[b] | {a}) - score(b, parents[b])
                    if gain > best and not nx.has_path(g, b, a):
                        best, move = gain, ("add", a, b)
        if move is None:
            break
        kind, a, b = move
        if kind in ("del", "rev"):
            dag[a, b] = False
            g.remove_edge(a, b)
            parents[b] = parents[b] - {a}
        if kind == "rev":
            dag[b, a] = True
            g.add_edge(b, a)
            parents[a] = parents[a] | {b}
        if kind == "add":
            dag[a, b] = True
            g.add_edge(a, b)
            parents[b] = parents[b] | {a}
    return dag


def _other_path(g: nx.DiGraph, a: int, b: int) -> bool:
    """Whether ``a ⇝ b`` by a path other than the edge ``a → b``."""
    g.remove_edge(a, b)
    try:
        return nx.has_path(g, a, b)
    finally:
        g.add_edge(a, b)


def identified_orientation(dag: np.ndarray, targets: np.ndarray | None = None) -> np.ndarray:
    """The undirected mask ``[T, T]`` (symmetric bool) of the edges of ``dag`` whose direction
    the data do not fix: reversible in the CPDAG of ``dag`` and incident to no intervened
    task (``targets [T]`` bool). A single-task intervention on ``v`` identifies the direction
    of every edge at ``v`` (Hauser & Bühlmann's interventional Markov equivalence); edges
    orientable only by propagating those directions (Meek's rules) are left undirected, so the
    mask can mark an edge the interventions do identify, never the reverse."""
    from taskgraph.graph.equivalence import dag_to_cpdag

    dag = np.asarray(dag, bool)
    cp = dag_to_cpdag(dag)
    reversible = cp & cp.T
    if targets is not None:
        hit = np.asarray(targets, bool)
        reversible &= ~(hit[:, None] | hit[None, :])
    return reversible


def search_graph(dag: np.ndarray, undirected: np.ndarray, tasks: Any, **kwargs: Any) -> Any:
    """The :class:`~taskgraph.graph.TaskGraph` of a search result: the DAG's edges, the
    unorientable ones in both directions with the undirected mark; ``kwargs`` go to the
    constructor (``raw``, ``meta``, ...)."""
    from taskgraph.graph import TaskGraph

    dag, und = np.asarray(dag, bool), np.asarray(undirected, bool)
    return TaskGraph((dag | und).astype(np.float64), tasks, undirected=und, **kwargs)


#: the PC runs whose skeletons form the candidate set and whose DAG extensions start the search
PC_SETTINGS = (("chisq", 0.01), ("chisq", 0.05), ("gsq", 0.01), ("gsq", 0.05))


def hybrid_search(data: Any, *, penalty: float = 0.5, pc_settings: Any = PC_SETTINGS,
                  ges_max_tasks: int = 12) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(dag [T, T] bool, undirected [T, T] bool, info)`` for all-classification ``data``
    (:class:`~taskgraph.data.MultiTaskData`).

    causal-learn's PC runs once per ``(test, alpha)`` of ``pc_settings``, and GES with the BDeu
    score when there are at most ``ges_max_tasks`` tasks (a few seconds on sachs' 11; it did
    not finish in a minute on child's 20); the union of their skeletons is the candidate set;
    :func:`hill_climb` under the interventional score (:class:`LocalScore` with ``penalty``,
    ``data.do`` aware) starts from each run's DAG extension (:meth:`TaskGraph.to_dag`) and the
    best-scoring result is kept; then :func:`identified_orientation` with the intervened tasks
    as targets. ``info`` holds the score, the candidate count and the run whose start won."""
    from taskgraph.structure.discovery import discover

    if not all(t.is_classification for t in data.tasks):
        raise ValidationError("data: the hybrid search scores discrete labels; every task must "
                              "be a classification task")
    y = data.y.detach().cpu().numpy()
    do = None if data.do is None else data.do.detach().cpu().numpy()
    score = LocalScore(y, [t.n_states for t in data.tasks], do, penalty=penalty)
    runs = {f"{test}_{alpha}": discover(data, "pc", alpha=alpha, indep_test=test)
            for test, alpha in pc_settings}
    if y.shape[1] <= ges_max_tasks:
        runs["ges_bdeu"] = discover(data, "ges", score_func="local_score_BDeu")
    cand = np.zeros((y.shape[1], y.shape[1]), dtype=bool)
    for g in runs.values():
        cand |= g.skeleton()
    best: tuple[float, np.ndarray, str] | None = None
    for key, g in runs.items():
        dag = hill_climb(score, cand, start=g.to_dag().adjacency != 0)
        total = score.total(dag)
        if best is None or total > best[0]:
            best = (total, dag, key)
    assert best is not None
    targets = None if do is None else do.any(axis=0)
    info = {"score": float(best[0]), "n_candidates": int(cand.sum()) // 2, "start": best[2]}
    return best[1], identified_orientation(best[1], targets), info


def conditional_bic(data: Any, adjacency: np.ndarray) -> float:
    r"""Per-row BIC of a DAG over ``data``'s classification labels *given the features*:

    .. math::
        \sum_j \overline{\mathrm{NLL}}_j + \frac{\log N}{2N} \sum_j \sum_{i \in \mathrm{pa}(j)}
        (r_i - 1)(r_j - 1),

    with :math:`\overline{\mathrm{NLL}}_j` the mean negative log-likelihood of the exact fit of
    :math:`p(y_j \mid \mathbf{x}, \mathbf{y}_{\mathrm{pa}(j)})` (softmax of a linear map of
    ``x`` and the parents' one-hot labels, rows with ``do`` on ``j`` left out;
    :func:`~taskgraph.structure.ice.conditional_nll`). Lower is better. The feature terms are
    the same for every graph, so only the parents' count is penalised. The criterion
    ``structure_search="auto"`` compares the SEM's graph and the hybrid search's DAG with."""
    from taskgraph.nn.heads import OutputLayout
    from taskgraph.structure.ice import conditional_nll

    adj = np.asarray(adjacency) != 0
    t = adj.shape[0]
    layout = OutputLayout(data.tasks)
    x = data.x.detach().cpu().reshape(len(data), -1).double()
    y = data.y.detach().cpu().double()
    do = None if data.do is None else data.do.detach().cpu()
    nll = conditional_nll(layout, x, y, torch.arange(t), torch.as_tensor(adj.T.copy()), do)
    r = np.array([task.n_states for task in data.tasks])
    n_params = float(((r[:, None] - 1) * (r[None, :] - 1) * adj).sum())
    n = max(len(data), 2)
    return float(float(nll.sum()) + n_params * np.log(n) / (2 * n))


#: pairs of feature columns tested by :func:`feature_direction` (columns beyond this many are a
#: random subset) and the rows it reads
DIRECTION_MAX_COLUMNS = 256
DIRECTION_MAX_ROWS = 20000
#: :math:`\chi^2_1` quantile at 0.001: a pair's squared correlation times ``N`` above this is a
#: dependence
DIRECTION_CHI2 = 10.83


def feature_direction(data: Any, *, max_columns: int = DIRECTION_MAX_COLUMNS,
                      seed: int = 0) -> dict[str, Any]:
    r"""Whether ``data``'s features sit upstream of its labels (causes, which confound the
    labels) or downstream of them (sensors, effects), read from how conditioning on the
    labels changes the dependence between pairs of feature columns.

    For each pair :math:`(a, b)` of columns, :math:`r_0` is their correlation and :math:`r_1`
    the correlation of their residuals after a least-squares regression on all labels (one-hot,
    rows with every label observed). With :math:`N` rows, a pair is

    - **collider** (``"upstream_pairs"``) when :math:`N r_1^2 > 10.83` and
      :math:`r_1^2 > 4 r_0^2`: the labels *create* the dependence, as they do between two
      causes of a common label;
    - **explained** (``"downstream_pairs"``) when :math:`N r_0^2 > 10.83` and
      :math:`r_0^2 > 4 r_1^2`: the labels *remove* it, as between two effects of the labels.

    With :math:`k = \max(1, \lfloor \text{pairs} / 1000 \rfloor)` (the false positives
    expected at the 0.001 level), ``"verdict"`` is ``"upstream"`` when more than :math:`k`
    pairs are colliders, else ``"downstream"`` when more than :math:`k` pairs are explained,
    else ``"none"`` (pure noise, or too few columns to tell; a mix of causes and sensors is
    ``"upstream"``). With downstream features the labels' own
    distribution carries the task graph and a search on the labels alone is the right one;
    with upstream ones the labels are confounded by ``x`` and graphs must be compared given
    ``x`` (:func:`conditional_bic`). ``structure_search="auto"`` reads it (docs/gcnet.md)."""
    n_rows = len(data)
    x = data.x.detach().cpu().reshape(n_rows, -1).double().numpy()
    y = data.y.detach().cpu().double().numpy()
    keep = ~np.isnan(y).any(axis=1)
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(keep)
    if len(rows) > DIRECTION_MAX_ROWS:
        rows = np.sort(rng.choice(rows, DIRECTION_MAX_ROWS, replace=False))
    x, y = x[rows], y[rows]
    if x.shape[1] > max_columns:
        x = x[:, np.sort(rng.choice(x.shape[1], max_columns, replace=False))]
    x = x[:, x.std(axis=0) > 1e-12] if len(x) else x
    n, d = x.shape
    out: dict[str, Any] = {"pairs": d * (d - 1) // 2, "upstream_pairs": 0,
                           "downstream_pairs": 0, "rows": n, "verdict": "none"}
    if d < 2 or n < 10:
        return out
    cols = [np.ones((n, 1))]
    for j, task in enumerate(data.tasks):
        if task.is_classification:
            cols.append(np.eye(task.n_states)[y[:, j].astype(int)][:, 1:])
        else:
            cols.append(y[:, j:j + 1])
    design = np.hstack(cols)
    beta = np.linalg.lstsq(design, x, rcond=None)[0]

    def sq_corr(z: np.ndarray) -> np.ndarray:
        z = z - z.mean(axis=0)
        sd = np.sqrt((z * z).mean(axis=0))
        z = z / np.where(sd > 1e-12, sd, 1.0)
        return ((z.T @ z) / n)[np.triu_indices(d, 1)] ** 2

    r0, r1 = sq_corr(x), sq_corr(x - design @ beta)
    up = int(((n * r1 > DIRECTION_CHI2) & (r1 > 4 * r0)).sum())
    down = int(((n * r0 > DIRECTION_CHI2) & (r0 > 4 * r1)).sum())
    k = max(1, out["pairs"] // 1000)
    verdict = "upstream" if up > k else "downstream" if down > k else "none"
    out.update(upstream_pairs=up, downstream_pairs=down, verdict=verdict)
    return out
