"""Synthetic multi-task benchmarks with a planted ground truth.

- :func:`planted_dag`: binary tasks generated along a random task DAG (GCNet's setting, for
  structure recovery), with hidden label confounders whose effect changes out of distribution.
- :func:`confounded`: two tasks whose labels are coupled by a label-label confounder whose strength
  differs per environment (MT-CRL's setting, for invariance across environments).
- :func:`~taskgraph.datasets.anticausal.anticausal` (its own module, re-exported here): two
  multiclass tasks that *cause* the input, with an explicit joint label prior that shifts at test
  time (GMTL's target-shift setting).

Every generator is deterministic by ``seed``: the same arguments give bit-identical tensors in a
fresh process. Randomness comes from independent streams of one :class:`numpy.random.SeedSequence`
(structure, then one stream per split), so e.g. changing ``n_samples`` does not change the planted
graph or the test sets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from taskgraph.data import MultiTaskData
from taskgraph.datasets.anticausal import (
    agreement_prior,
    anticausal,
    anticausal_sample,
    shifted_prior,
)
from taskgraph.datasets.benchmark import (
    Benchmark,
    _check_float,
    _check_int,
    _check_pair,
    _check_seed,
    _haar_orthogonal,
    _normal_cdf,
    _sigmoid,
    _split_sizes,
    _streams,
)
from taskgraph.exceptions import ValidationError
from taskgraph.graph import TaskGraph
from taskgraph.tasks import Task, TaskSet

__all__ = [
    "Benchmark",
    "planted_dag",
    "confounded",
    "anticausal",
    "anticausal_sample",
    "agreement_prior",
    "shifted_prior",
]

# ---------------------------------------------------------------------------- planted DAG
def _random_dag(
    rng: np.random.Generator, n_tasks: int, n_edges: int, weight_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """A random DAG with exactly ``n_edges`` signed edges; returns ``(W [T, T], order [T])``."""
    order = rng.permutation(n_tasks)
    upper = np.triu_indices(n_tasks, k=1)  # position pairs (a, b), a < b in the order
    chosen = rng.choice(len(upper[0]), size=n_edges, replace=False)
    src, dst = order[upper[0][chosen]], order[upper[1][chosen]]
    magnitude = rng.uniform(weight_range[0], weight_range[1], size=n_edges)
    sign = rng.choice(np.array([-1.0, 1.0]), size=n_edges)
    w = np.zeros((n_tasks, n_tasks))
    w[src, dst] = sign * magnitude
    return w, order


def _confounded_pairs(
    rng: np.random.Generator, adjacency: np.ndarray, n_pairs: int | None
) -> list[tuple[int, int]]:
    """Disjoint random pairs of tasks with no edge between them (either direction)."""
    t = adjacency.shape[0]
    skeleton = (adjacency != 0) | (adjacency.T != 0)
    pairs: list[tuple[int, int]] = []
    used = np.zeros(t, dtype=bool)
    target = max(1, t // 4) if n_pairs is None else n_pairs
    iu = np.triu_indices(t, k=1)
    for k in rng.permutation(len(iu[0])):
        if len(pairs) >= target:
            break
        i, j = int(iu[0][k]), int(iu[1][k])
        if skeleton[i, j] or used[i] or used[j]:
            continue
        pairs.append((i, j) if rng.random() < 0.5 else (j, i))
        used[[i, j]] = True
    if n_pairs is not None and len(pairs) < n_pairs:
        raise ValidationError(
            f"n_confounded_pairs: asked for {n_pairs} disjoint pairs of non-adjacent tasks but "
            f"the planted DAG only allows {len(pairs)}"
        )
    return pairs


def _simulate_dag_labels(
    rng: np.random.Generator,
    n: int,
    weights: np.ndarray,
    order: np.ndarray,
    feature_weights: np.ndarray,
    loadings: np.ndarray,
    bias: np.ndarray,
    interventional_fraction: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``(x [n, F], y [n, T], do [n, T])`` from the logistic label SEM.

    All random arrays are drawn up front in a fixed order so that the stream, and therefore the
    data, depends only on the generator state and ``n``.
    """
    n_features, n_tasks = feature_weights.shape
    x = rng.standard_normal((n, n_features))
    u = rng.standard_normal((n, loadings.shape[0]))
    uniform = rng.random((n, n_tasks))
    coins = rng.random((n, n_tasks)) < 0.5
    n_do = int(round(interventional_fraction * n))
    do_rows = rng.permutation(n)[:n_do]
    do_tasks = rng.integers(0, n_tasks, size=n_do)

    do = np.zeros((n, n_tasks), dtype=bool)
    do[do_rows, do_tasks] = True
    base = x @ feature_weights + u @ loadings + bias[None, :]
    y = np.zeros((n, n_tasks))
    signed = np.zeros((n, n_tasks))  # 2y - 1 for tasks already generated, 0 otherwise
    for j in order:
        logit = base[:, j] + signed @ weights[:, j]
        yj = uniform[:, j] < _sigmoid(logit)
        yj = np.where(do[:, j], coins[:, j], yj)
        y[:, j] = yj
        signed[:, j] = 2.0 * yj - 1.0
    return x, y, do


def _apply_missing(rng: np.random.Generator, y: np.ndarray, rate: float) -> np.ndarray:
    if rate <= 0.0:
        return y
    y = y.copy()
    y[rng.random(y.shape) < rate] = np.nan
    return y


def _check_dag_args(n_tasks: Any, min_tasks: int, n_edges: Any, n_features: Any,
                    edge_weight: Any, feature_scale: Any
                    ) -> tuple[int, int, int, tuple[float, float], float]:
    """The planted-DAG arguments shared by :func:`planted_dag` and ``causal_mtl``, checked."""
    n_tasks = _check_int("n_tasks", n_tasks, min_tasks)
    n_edges = _check_int("n_edges", n_edges, 0)
    max_edges = n_tasks * (n_tasks - 1) // 2
    if n_edges > max_edges:
        raise ValidationError(
            f"n_edges: a DAG over {n_tasks} tasks has at most {max_edges} edges, got {n_edges}"
        )
    n_features = _check_int("n_features", n_features, 1)
    w_range = _check_pair("edge_weight", edge_weight)
    if w_range[0] <= 0:
        raise ValidationError(f"edge_weight: the lower bound must be > 0, got {edge_weight!r}")
    feature_scale = _check_float("feature_scale", feature_scale, 0.0)
    return n_tasks, n_edges, n_features, w_range, feature_scale


def planted_dag(
    n_tasks: int = 10,
    n_edges: int = 15,
    n_samples: int = 5000,
    seed: int = 0,
    *,
    n_features: int = 10,
    edge_weight: tuple[float, float] = (1.5, 3.0),
    feature_scale: float = 3.0,
    bias_scale: float = 0.0,
    confounding: float = 1.0,
    ood_confounding: float = -1.0,
    n_confounded_pairs: int | None = None,
    missing_rate: float = 0.0,
    interventional_fraction: float = 0.0,
    val_fraction: float = 0.2,
    n_test: int = 2000,
) -> Benchmark:
    r"""Binary tasks generated along a planted random task DAG.

    A random topological order is drawn and ``n_edges`` of the :math:`T(T-1)/2` forward pairs
    are picked uniformly, each with weight :math:`W_{ij} = \pm|w|`,
    :math:`|w| \sim U(\text{edge\_weight})` and a random sign. Labels are drawn in topological
    order from the logistic model

    .. math::
        \operatorname{logit} P(y_j = 1) = w_j^\top x + \sum_{i \in \mathrm{pa}(j)} W_{ij}(2y_i - 1)
        + \sum_p c_{pj} u_p + b_j,

    with :math:`x \sim \mathcal{N}(0, I)`, :math:`w_j \sim \mathcal{N}(0, s^2 / F)`
    (:math:`s` = ``feature_scale``, so :math:`w_j^\top x` has standard deviation about
    :math:`s`) and :math:`b_j \sim \mathcal{N}(0, \text{bias\_scale}^2)` (0 by default, which
    makes every label marginal exactly balanced by symmetry).

    The default ``feature_scale=3`` is chosen so that the graph is recoverable from
    observational data *given x*: the task-specific feature effects make the conditional
    logistic model identifiable (the reversed conditional is not logistic-linear in x), while
    labels stay noisy (Bayes accuracy given x and parents ≈ 0.86). Label-only baselines (PC,
    GES, LiNGAM on ``y``) cannot use this and stay weaker. With ``feature_scale=1`` directions
    are mostly unidentifiable without interventions.

    **Hidden confounders.** ``n_confounded_pairs`` disjoint pairs :math:`(a, b)` of tasks with no
    edge between them each share a hidden :math:`u_p \sim \mathcal{N}(0, 1)`:
    :math:`c_{pa} = \text{confounding}` and :math:`c_{pb} = \sigma_p\cdot\text{confounding}`
    (random sign :math:`\sigma_p`), so the pair correlates although neither causes the other.
    In ``test_ood`` the second member's loading becomes :math:`\sigma_p\cdot\text{ood\_confounding}`
    (the default ``-1.0`` flips the sign of the spurious correlation, ``0.0`` removes it) while the
    causal edges, :math:`w_j`, :math:`b_j` and the first member's loading stay.

    **Interventions.** A fraction ``interventional_fraction`` of the *training* rows each get
    :math:`do(y_k = \text{fair coin})` for one uniformly chosen task :math:`k`: the row's parent,
    feature and confounder terms of :math:`y_k` are dropped, its descendants respond to the new
    value, and ``train.do[row, k]`` is ``True``.

    **Missing labels.** With ``missing_rate`` > 0 every training and validation label is
    independently replaced by ``NaN`` with that probability; the two test splits stay complete.

    Args:
        n_tasks (int): number of tasks ``T`` (>= 2). Tasks are named ``t0 .. t{T-1}``; the
            topological order is random, not the name order.
        n_edges (int): exact number of edges, at most :math:`T(T-1)/2`.
        n_samples (int): training rows.
        seed (int): non-negative seed; same seed → bit-identical benchmark.
        n_features (int): features ``F`` (>= 1).
        edge_weight (tuple): ``(low, high)`` range of :math:`|W_{ij}|`, ``0 < low <= high``.
        feature_scale (float): scale :math:`s` of the direct feature effect (>= 0).
        bias_scale (float): standard deviation of the per-task bias (>= 0).
        confounding (float): hidden-confounder loading in training, validation and ``test_iid``.
        ood_confounding (float): loading of each pair's second member in ``test_ood``.
        n_confounded_pairs (int, optional): number of confounded pairs; ``None`` →
            :math:`\max(1, \lfloor T/4 \rfloor)`, or fewer if the DAG does not leave enough
            disjoint non-adjacent pairs (an explicit value that cannot be met raises).
        missing_rate (float): probability in ``[0, 1)`` that a train/val label is missing.
        interventional_fraction (float): fraction in ``[0, 1]`` of training rows with one
            intervened task.
        val_fraction (float): validation rows as a fraction of ``n_samples`` (> 0).
        n_test (int): rows of each of ``test_iid`` and ``test_ood``.

    Returns:
        Benchmark: ``true_graph`` holds the signed weights :math:`W` (``learned=False``,
        ``meta={"benchmark": "planted_dag", "seed": seed}``). ``info`` keys: ``"order"``
        (topological order, task indices), ``"edge_weights"`` (:math:`W` ``[T, T]``),
        ``"feature_weights"`` (``[F, T]``), ``"bias"`` (``[T]``), ``"confounded_pairs"``
        (list of task-name pairs), ``"confounder_loadings"`` and ``"ood_confounder_loadings"``
        (``[P, T]``), ``"confounding"``, ``"ood_confounding"``, ``"missing_rate"``,
        ``"interventional_fraction"``, ``"seed"``.

    Raises:
        ValidationError: on an invalid argument (the message names it), e.g. ``n_edges`` above
            :math:`T(T-1)/2`.

    Example:
        >>> bench = planted_dag(n_tasks=10, n_edges=15, n_samples=5000, seed=0)
        >>> bench.train.y.shape, int((bench.true_graph.adjacency != 0).sum())
        (torch.Size([5000, 10]), 15)
    """
    n_tasks, n_edges, n_features, w_range, feature_scale = _check_dag_args(
        n_tasks, 2, n_edges, n_features, edge_weight, feature_scale)
    n_samples = _check_int("n_samples", n_samples, 1)
    seed = _check_seed(seed)
    bias_scale = _check_float("bias_scale", bias_scale, 0.0)
    confounding = _check_float("confounding", confounding)
    ood_confounding = _check_float("ood_confounding", ood_confounding)
    if n_confounded_pairs is not None:
        n_confounded_pairs = _check_int("n_confounded_pairs", n_confounded_pairs, 0)
    missing_rate = _check_float("missing_rate", missing_rate, 0.0, 1.0, high_open=True)
    interventional_fraction = _check_float(
        "interventional_fraction", interventional_fraction, 0.0, 1.0
    )
    val_fraction = _check_float("val_fraction", val_fraction, 0.0, low_open=True)
    n_test = _check_int("n_test", n_test, 1)
    n_val, n_test = _split_sizes(n_samples, val_fraction, n_test)

    g_struct, g_train, g_val, g_iid, g_ood, g_missing = _streams(seed, 6)
    weights, order = _random_dag(g_struct, n_tasks, n_edges, w_range)
    feature_weights = g_struct.standard_normal((n_features, n_tasks)) * (
        feature_scale / math.sqrt(n_features)
    )
    bias = g_struct.standard_normal(n_tasks) * bias_scale
    pairs = _confounded_pairs(g_struct, weights, n_confounded_pairs)
    loadings = np.zeros((len(pairs), n_tasks))
    ood_loadings = np.zeros((len(pairs), n_tasks))
    for p, (a, b) in enumerate(pairs):
        sign = g_struct.choice(np.array([-1.0, 1.0]))
        loadings[p, a] = ood_loadings[p, a] = confounding
        loadings[p, b] = sign * confounding
        ood_loadings[p, b] = sign * ood_confounding

    names = [f"t{j}" for j in range(n_tasks)]
    tasks = TaskSet([Task(name, "binary") for name in names])

    def make(rng: np.random.Generator, n: int, load: np.ndarray, frac: float, miss: float):
        x, y, do = _simulate_dag_labels(
            rng, n, weights, order, feature_weights, load, bias, frac
        )
        y = _apply_missing(g_missing, y, miss)
        return MultiTaskData(
            x.astype(np.float32), y.astype(np.float32), tasks, do=do if frac > 0 else None
        )

    train = make(g_train, n_samples, loadings, interventional_fraction, missing_rate)
    val = make(g_val, n_val, loadings, 0.0, missing_rate)
    test_iid = make(g_iid, n_test, loadings, 0.0, 0.0)
    test_ood = make(g_ood, n_test, ood_loadings, 0.0, 0.0)

    true_graph = TaskGraph(
        weights.copy(), tasks, learned=False, meta={"benchmark": "planted_dag", "seed": seed}
    )
    info = {
        "order": order.tolist(),
        "edge_weights": weights,
        "feature_weights": feature_weights,
        "bias": bias,
        "confounded_pairs": [(names[a], names[b]) for a, b in pairs],
        "confounder_loadings": loadings,
        "ood_confounder_loadings": ood_loadings,
        "confounding": confounding,
        "ood_confounding": ood_confounding,
        "missing_rate": missing_rate,
        "interventional_fraction": interventional_fraction,
        "seed": seed,
    }
    return Benchmark(
        train, val, test_iid, test_ood, tasks, true_graph, n_features, "planted_dag", info
    )


# ---------------------------------------------------------------------------- confounded (MT-CRL)
def _confounded_rows(
    rng: np.random.Generator,
    n: int,
    rho: float,
    causal_strength: float,
    spurious_strength: float,
    n_noise: int,
) -> tuple[np.ndarray, np.ndarray]:
    y1 = rng.random(n) < 0.5
    agree = rng.random(n) < rho
    y2 = np.where(agree, y1, ~y1)
    z1 = (2.0 * y1 - 1.0) * causal_strength + rng.standard_normal(n)
    z2 = (2.0 * y2 - 1.0) * spurious_strength + rng.standard_normal(n)
    noise = rng.standard_normal((n, 2 * n_noise))
    x = np.concatenate([z1[:, None], noise[:, :n_noise], z2[:, None], noise[:, n_noise:]], axis=1)
    y = np.stack([y1, y2], axis=1).astype(np.float64)
    return x, y


def confounded(
    n_per_env: int = 1500,
    seed: int = 0,
    *,
    rhos: Sequence[float] = (0.9, 0.75),
    ood_rho: float = 0.1,
    iid_rho: float | None = None,
    causal_strength: float = 0.84,
    spurious_strength: float = 3.0,
    n_noise: int = 4,
    mixing: bool | str = False,
    val_fraction: float = 0.2,
    n_test: int = 2000,
) -> Benchmark:
    r"""Two tasks coupled by a label-label confounder whose strength varies by environment.

    MT-CRL's setting: :math:`y_1 \sim \mathrm{Bern}(0.5)`; :math:`y_2 = y_1` with probability
    :math:`\rho_e` and :math:`1 - y_1` otherwise; :math:`z_1 = \pm\text{causal\_strength} +
    \mathcal{N}(0, 1)` follows :math:`y_1` (a weak signal: Bayes accuracy
    :math:`\Phi(\text{causal\_strength}) \approx 0.80` by default) and :math:`z_2 =
    \pm\text{spurious\_strength} + \mathcal{N}(0, 1)` follows :math:`y_2` (an easy signal). The
    input is :math:`x = [z_1, \text{n\_noise noise dims}, z_2, \text{n\_noise noise dims}]`.
    A model for ``y1`` that reads :math:`z_2` (the shortcut, accurate while :math:`\rho` is high)
    fails on ``test_ood`` where :math:`\rho` = ``ood_rho``.

    Training and validation rows come from each environment :math:`e` (``rhos[e]``) with
    ``env = e``; ``test_iid`` uses ``iid_rho`` (default: the mean of ``rhos``) and ``test_ood``
    uses ``ood_rho``; the test splits carry no ``env``.

    Mixing: ``False`` keeps the layout above; ``True`` or ``"global"`` multiplies :math:`x` by a
    random orthogonal matrix :math:`Q` over all dimensions (``x = latent @ Q.T``, so no input
    coordinate isolates either signal; a learner has to disentangle); ``"block"`` mixes within
    each of the two blocks only, so ``info["blocks"]`` still names feature blocks.

    Args:
        n_per_env (int): training rows per environment.
        seed (int): non-negative seed.
        rhos (sequence of float): agreement probability :math:`P(y_2 = y_1)` per training
            environment, each in ``[0, 1]``.
        ood_rho (float): agreement probability in ``test_ood``.
        iid_rho (float, optional): agreement probability in ``test_iid``
            (default ``mean(rhos)``).
        causal_strength (float): class-mean offset of :math:`z_1` (>= 0).
        spurious_strength (float): class-mean offset of :math:`z_2` (>= 0).
        n_noise (int): pure-noise dimensions after each signal dimension (>= 0).
        mixing (bool or str): ``False``, ``True``/``"global"`` or ``"block"``.
        val_fraction (float): validation rows per environment as a fraction of ``n_per_env``.
        n_test (int): rows of each test split.

    Returns:
        Benchmark: tasks ``"y1"`` (the task exposed to the confounder) and ``"y2"``, both binary;
        ``true_graph`` has no edge (the coupling is a confounder, not a causal task → task edge;
        its ``meta`` says so). ``info`` keys: ``"rhos"``, ``"iid_rho"``, ``"ood_rho"``,
        ``"causal_strength"``, ``"spurious_strength"``, ``"bayes_accuracy_causal"``,
        ``"causal_features"``, ``"spurious_features"``, ``"noise_features"`` (latent indices),
        ``"blocks"`` (two index lists: the :math:`z_1` block and the :math:`z_2` block, each with
        its noise dims; a "one module per block" model reads these), ``"confounded_task"``,
        ``"spurious_task"``, ``"mixing"``, ``"mixing_matrix"`` (``[D, D]`` or ``None``),
        ``"seed"``.

    Example:
        >>> bench = confounded(n_per_env=1500, seed=0)
        >>> bench.train.n_envs, bench.info["blocks"]
        (2, [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    """
    n_per_env = _check_int("n_per_env", n_per_env, 1)
    seed = _check_seed(seed)
    if isinstance(rhos, str) or not isinstance(rhos, Sequence) or len(rhos) == 0:
        raise ValidationError(f"rhos: expected a non-empty sequence of probabilities, got {rhos!r}")
    rho_list = [_check_float(f"rhos[{e}]", r, 0.0, 1.0) for e, r in enumerate(rhos)]
    ood_rho = _check_float("ood_rho", ood_rho, 0.0, 1.0)
    iid_rho = (
        float(np.mean(rho_list)) if iid_rho is None else _check_float("iid_rho", iid_rho, 0.0, 1.0)
    )
    causal_strength = _check_float("causal_strength", causal_strength, 0.0)
    spurious_strength = _check_float("spurious_strength", spurious_strength, 0.0)
    n_noise = _check_int("n_noise", n_noise, 0)
    if mixing is True:
        mixing = "global"
    if mixing not in (False, None, "global", "block"):
        raise ValidationError(
            f"mixing: expected False, True, 'global' or 'block', got {mixing!r}"
        )
    mode = mixing or None
    val_fraction = _check_float("val_fraction", val_fraction, 0.0, low_open=True)
    n_test = _check_int("n_test", n_test, 1)
    n_val, n_test = _split_sizes(n_per_env, val_fraction, n_test)

    n_envs = len(rho_list)
    streams = _streams(seed, 3 + 2 * n_envs)
    g_struct, g_iid, g_ood = streams[:3]
    g_train, g_val = streams[3 : 3 + n_envs], streams[3 + n_envs :]
    dim = 2 * (n_noise + 1)
    blocks = [list(range(0, n_noise + 1)), list(range(n_noise + 1, dim))]
    if mode == "global":
        q = _haar_orthogonal(g_struct, dim)
    elif mode == "block":
        q = np.zeros((dim, dim))
        for block in blocks:
            q[np.ix_(block, block)] = _haar_orthogonal(g_struct, len(block))
    else:
        q = None

    tasks = TaskSet([Task("y1", "binary"), Task("y2", "binary")])

    def rows(rng: np.random.Generator, n: int, rho: float) -> tuple[np.ndarray, np.ndarray]:
        x, y = _confounded_rows(rng, n, rho, causal_strength, spurious_strength, n_noise)
        return (x if q is None else x @ q.T), y

    def make(gens: list[np.random.Generator], n: int) -> MultiTaskData:
        parts = [rows(g, n, rho) for g, rho in zip(gens, rho_list)]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        env = np.repeat(np.arange(n_envs), n)
        return MultiTaskData(x.astype(np.float32), y.astype(np.float32), tasks, env=env)

    def make_test(rng: np.random.Generator, rho: float) -> MultiTaskData:
        x, y = rows(rng, n_test, rho)
        return MultiTaskData(x.astype(np.float32), y.astype(np.float32), tasks)

    train = make(g_train, n_per_env)
    val = make(g_val, n_val)
    test_iid = make_test(g_iid, iid_rho)
    test_ood = make_test(g_ood, ood_rho)
    true_graph = TaskGraph(
        np.zeros((2, 2)),
        tasks,
        learned=False,
        meta={
            "benchmark": "confounded",
            "seed": seed,
            "confounder": "hidden label-label confounder between y1 and y2 (no causal edge)",
        },
    )
    info = {
        "rhos": rho_list,
        "iid_rho": iid_rho,
        "ood_rho": ood_rho,
        "causal_strength": causal_strength,
        "spurious_strength": spurious_strength,
        "bayes_accuracy_causal": _normal_cdf(causal_strength),
        "causal_features": [0],
        "spurious_features": [n_noise + 1],
        "noise_features": [i for i in range(dim) if i not in (0, n_noise + 1)],
        "blocks": blocks,
        "confounded_task": "y1",
        "spurious_task": "y2",
        "mixing": mode,
        "mixing_matrix": q,
        "seed": seed,
    }
    return Benchmark(train, val, test_iid, test_ood, tasks, true_graph, dim, "confounded", info)
