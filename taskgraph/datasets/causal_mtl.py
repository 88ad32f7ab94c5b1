r"""``causal_mtl``: one benchmark that needs a learned task graph, invariant routing and joint
inference at once (the composed learner's setting, ``docs/architecture.md``).

Three planted truths in one data set:

1. **A task DAG** — binary labels generated along a random DAG from the logistic label SEM of
   :func:`~taskgraph.datasets.planted_dag` (identifiable given ``x``).
2. **A label-label confounder whose strength differs by environment and flips out of
   distribution** — a hidden :math:`u_p` loads on two non-adjacent tasks :math:`(a, b)`; an
   *anticausal* feature block :math:`x^{s}_p = \text{spurious\_strength}\,(2y_b - 1) + \varepsilon`
   reveals :math:`y_b`. For task :math:`b` that block is an invariant signal (it is caused by
   :math:`y_b`); for task :math:`a` it is a shortcut that works only through :math:`u_p`.
3. **A shifted joint label prior** — in ``test_ood`` the confounder's sign flips, so the joint
   :math:`p(y)` changes (the pair's correlation reverses) while every mechanism
   :math:`p(y_k \mid \mathrm{pa}_k, x)` and :math:`p(x^s \mid y_b)` stays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from taskgraph.data import MultiTaskData
from taskgraph.datasets.synthetic import (
    Benchmark,
    _apply_missing,
    _check_dag_args,
    _check_float,
    _check_int,
    _check_seed,
    _confounded_pairs,
    _random_dag,
    _simulate_dag_labels,
    _split_sizes,
    _streams,
)
from taskgraph.exceptions import ValidationError
from taskgraph.graph import TaskGraph
from taskgraph.tasks import Task, TaskSet

__all__ = ["causal_mtl"]


def _joint_table(y: np.ndarray) -> np.ndarray | None:
    """Empirical joint of complete binary label rows as a ``[2] * T`` table (``None`` if
    ``T > 12``)."""
    t = y.shape[1]
    if t > 12:
        return None
    rows = y[~np.isnan(y).any(axis=1)].astype(np.int64)
    code = rows @ (1 << np.arange(t - 1, -1, -1))
    counts = np.bincount(code, minlength=1 << t).astype(np.float64)
    return (counts / max(1.0, counts.sum())).reshape([2] * t)


def causal_mtl(
    n_tasks: int = 6,
    n_edges: int = 6,
    n_per_env: int = 2500,
    seed: int = 0,
    *,
    n_features: int = 10,
    edge_weight: tuple[float, float] = (1.5, 3.0),
    feature_scale: float = 3.0,
    confounding: Sequence[float] = (4.0, 2.0),
    ood_confounding: float = -4.0,
    n_confounded_pairs: int = 1,
    spurious_strength: float = 2.0,
    n_spurious: int = 2,
    n_noise: int = 2,
    missing_rate: float = 0.0,
    val_fraction: float = 0.2,
    n_test: int = 2000,
) -> Benchmark:
    r"""Planted task DAG + environment-dependent label confounder + shifted joint label prior.

    Labels follow :func:`~taskgraph.datasets.planted_dag`'s logistic SEM,

    .. math::
        \operatorname{logit} P(y_j = 1) = w_j^\top x^{c} + \sum_{i \in \mathrm{pa}(j)}
        W_{ij}(2y_i - 1) + \sum_p c^{(e)}_{pj} u_p,

    with causal features :math:`x^c \sim \mathcal{N}(0, I_F)`. Each confounded pair
    :math:`(a_p, b_p)` (disjoint, no edge between them) shares :math:`u_p \sim \mathcal{N}(0,1)`
    with loadings :math:`c^{(e)}_{pa} = \gamma_e` and :math:`c^{(e)}_{pb} = \sigma_p \gamma_e`
    in training environment :math:`e` (:math:`\gamma_e` = ``confounding[e]``, :math:`\sigma_p`
    a random sign), and :math:`c_{pb} = \sigma_p\,\text{ood\_confounding}` (with
    :math:`c_{pa} = \gamma_0`) in ``test_ood``. The input is

    .. math::
        x = [\,x^c \;\|\; x^s_1 \,\|\, \cdots \,\|\, x^s_P \;\|\; \text{noise}\,], \qquad
        x^s_p = \text{spurious\_strength}\,(2 y_{b_p} - 1)\,\mathbf{1}_{n_s}
        + \mathcal{N}(0, I_{n_s}),

    so :math:`x^s_p` is caused by :math:`y_{b_p}`: a legitimate, invariant signal for
    :math:`b_p` (and, through the DAG, for its descendants), and for :math:`a_p` a shortcut
    whose sign follows the confounder. Training and validation rows come from every environment
    (``env = e``); ``test_iid`` mixes the environments in equal parts; ``test_ood`` flips the
    confounder. All mechanisms :math:`p(y_k \mid \mathrm{pa}_k, x^c)` (apart from the
    hidden :math:`u`) and :math:`p(x^s \mid y)` are shared by every split: only the joint label
    prior shifts.

    Args:
        n_tasks (int): tasks ``T`` (>= 3), named ``t0 .. t{T-1}``.
        n_edges (int): edges of the planted DAG.
        n_per_env (int): training rows per environment.
        seed (int): non-negative seed; same seed → bit-identical benchmark.
        n_features (int): causal features ``F``.
        edge_weight (tuple): ``(low, high)`` range of :math:`|W_{ij}|`.
        feature_scale (float): scale of :math:`w_j^\top x^c` (see ``planted_dag``).
        confounding (sequence of float): :math:`\gamma_e` per training environment (>= 2 values
            that differ, so that an invariance penalty can tell the shortcut).
        ood_confounding (float): the second member's loading in ``test_ood`` (the default
            ``-4.0`` flips the sign of the spurious correlation).
        n_confounded_pairs (int): confounded pairs ``P`` (>= 1).
        spurious_strength (float): class-mean offset of every spurious feature.
        n_spurious (int): spurious features per pair (>= 1).
        n_noise (int): pure-noise features at the end.
        missing_rate (float): probability that a train/val label is ``NaN``.
        val_fraction (float): validation rows per environment as a fraction of ``n_per_env``.
        n_test (int): rows of each test split.

    Returns:
        Benchmark: ``name="causal_mtl"``; ``true_graph`` holds the signed DAG weights. ``info``
        records the three truths: the DAG (``"order"``, ``"edge_weights"``,
        ``"feature_weights"``), the confounder (``"confounded_pairs"`` as ``(a, b)`` name pairs,
        ``"confounder_loadings"`` ``[E, P, T]`` per environment, ``"ood_confounder_loadings"``
        ``[P, T]``, ``"confounding"``, ``"ood_confounding"``, ``"shortcut_tasks"`` (the ``a``
        members), ``"spurious_features"`` (feature indices per pair)), the label prior
        (``"joint_train"``, ``"joint_iid"``, ``"joint_ood"``: empirical ``[2] * T`` tables of the
        splits, ``None`` for ``T > 12``; ``"pair_correlation_train"`` / ``"_ood"``: the
        Pearson correlation of each confounded pair), plus ``"blocks"`` (index lists: causal
        features, each pair's spurious block, noise), ``"n_envs"`` and ``"seed"``.

    Raises:
        ValidationError: on an invalid argument (the message names it).

    Example:
        >>> bench = causal_mtl(seed=0)
        >>> bench.train.n_envs, len(bench.info["blocks"])
        (2, 3)
    """
    n_tasks, n_edges, n_features, w_range, feature_scale = _check_dag_args(
        n_tasks, 3, n_edges, n_features, edge_weight, feature_scale)
    n_per_env = _check_int("n_per_env", n_per_env, 1)
    seed = _check_seed(seed)
    if isinstance(confounding, str) or not isinstance(confounding, Sequence) or len(
            confounding) < 2:
        raise ValidationError(
            f"confounding: expected a sequence of >= 2 loadings (one per training environment), "
            f"got {confounding!r}")
    gammas = [_check_float(f"confounding[{e}]", c) for e, c in enumerate(confounding)]
    if len(set(gammas)) < 2:
        raise ValidationError(
            f"confounding: the environments' loadings must differ (else no invariance penalty "
            f"can tell the shortcut), got {confounding!r}")
    ood_confounding = _check_float("ood_confounding", ood_confounding)
    n_pairs = _check_int("n_confounded_pairs", n_confounded_pairs, 1)
    spurious_strength = _check_float("spurious_strength", spurious_strength, 0.0)
    n_spurious = _check_int("n_spurious", n_spurious, 1)
    n_noise = _check_int("n_noise", n_noise, 0)
    missing_rate = _check_float("missing_rate", missing_rate, 0.0, 1.0, high_open=True)
    val_fraction = _check_float("val_fraction", val_fraction, 0.0, low_open=True)
    n_test = _check_int("n_test", n_test, 1)
    n_val, n_test = _split_sizes(n_per_env, val_fraction, n_test)

    n_envs = len(gammas)
    streams = _streams(seed, 4 + 2 * n_envs)
    g_struct, g_iid, g_ood, g_missing = streams[:4]
    g_train, g_val = streams[4:4 + n_envs], streams[4 + n_envs:]
    weights, order = _random_dag(g_struct, n_tasks, n_edges, w_range)
    feature_weights = g_struct.standard_normal((n_features, n_tasks)) * (
        feature_scale / math.sqrt(n_features))
    bias = np.zeros(n_tasks)
    pairs = _confounded_pairs(g_struct, weights, n_pairs)
    if len(pairs) < n_pairs:
        raise ValidationError(
            f"n_confounded_pairs: only {len(pairs)} disjoint non-adjacent task pairs exist in a "
            f"DAG with {n_tasks} tasks and {n_edges} edges, got n_confounded_pairs={n_pairs} "
            f"(use fewer edges or pairs)")
    signs = g_struct.choice(np.array([-1.0, 1.0]), size=len(pairs))
    loadings = np.zeros((n_envs, len(pairs), n_tasks))
    ood_loadings = np.zeros((len(pairs), n_tasks))
    for p, (a, b) in enumerate(pairs):
        loadings[:, p, a] = gammas
        loadings[:, p, b] = signs[p] * np.asarray(gammas)
        ood_loadings[p, a] = gammas[0]
        ood_loadings[p, b] = signs[p] * ood_confounding

    names = [f"t{j}" for j in range(n_tasks)]
    tasks = TaskSet([Task(name, "binary") for name in names])
    n_spur_total = len(pairs) * n_spurious
    spur_idx = [list(range(n_features + p * n_spurious, n_features + (p + 1) * n_spurious))
                for p in range(len(pairs))]
    noise_idx = list(range(n_features + n_spur_total, n_features + n_spur_total + n_noise))

    def rows(rng: np.random.Generator, n: int, load: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xc, y, _ = _simulate_dag_labels(rng, n, weights, order, feature_weights, load, bias)
        eps = rng.standard_normal((n, n_spur_total + n_noise))
        spur = [spurious_strength * (2.0 * y[:, [b]] - 1.0) + eps[:, p * n_spurious:
                                                                 (p + 1) * n_spurious]
                for p, (_, b) in enumerate(pairs)]
        x = np.concatenate([xc, *spur, eps[:, n_spur_total:]], axis=1)
        return x, y

    def make(gens: Sequence[np.random.Generator], n: int, miss: float) -> MultiTaskData:
        parts = [rows(g, n, loadings[e]) for e, g in enumerate(gens)]
        x = np.concatenate([p[0] for p in parts])
        y = _apply_missing(g_missing, np.concatenate([p[1] for p in parts]), miss)
        env = np.repeat(np.arange(n_envs), n)
        return MultiTaskData(x.astype(np.float32), y.astype(np.float32), tasks, env=env)

    train = make(g_train, n_per_env, missing_rate)
    val = make(g_val, n_val, missing_rate)
    # test_iid: the environments in equal parts (env ids dropped: a test split has no env)
    per = [n_test // n_envs + (1 if e < n_test % n_envs else 0) for e in range(n_envs)]
    iid_parts = [rows(g_iid, per[e], loadings[e]) for e in range(n_envs)]
    test_iid = MultiTaskData(np.concatenate([p[0] for p in iid_parts]).astype(np.float32),
                             np.concatenate([p[1] for p in iid_parts]).astype(np.float32), tasks)
    xo, yo = rows(g_ood, n_test, ood_loadings)
    test_ood = MultiTaskData(xo.astype(np.float32), yo.astype(np.float32), tasks)

    def pair_corr(y: np.ndarray) -> list[float]:
        out = []
        for a, b in pairs:
            ok = ~np.isnan(y[:, a]) & ~np.isnan(y[:, b])
            out.append(float(np.corrcoef(y[ok, a], y[ok, b])[0, 1]))
        return out

    true_graph = TaskGraph(weights.copy(), tasks, learned=False,
                           meta={"benchmark": "causal_mtl", "seed": seed})
    info: dict[str, Any] = {
        "order": order.tolist(),
        "edge_weights": weights,
        "feature_weights": feature_weights,
        "confounded_pairs": [(names[a], names[b]) for a, b in pairs],
        "shortcut_tasks": [names[a] for a, _ in pairs],
        "confounder_loadings": loadings,
        "ood_confounder_loadings": ood_loadings,
        "confounding": gammas,
        "ood_confounding": ood_confounding,
        "spurious_strength": spurious_strength,
        "spurious_features": spur_idx,
        "causal_features": list(range(n_features)),
        "noise_features": noise_idx,
        "blocks": [list(range(n_features)), *spur_idx] + ([noise_idx] if noise_idx else []),
        "joint_train": _joint_table(train.y.numpy()),
        "joint_iid": _joint_table(test_iid.y.numpy()),
        "joint_ood": _joint_table(test_ood.y.numpy()),
        "pair_correlation_train": pair_corr(train.y.numpy()),
        "pair_correlation_ood": pair_corr(test_ood.y.numpy()),
        "n_envs": n_envs,
        "missing_rate": missing_rate,
        "seed": seed,
    }
    n_total = n_features + n_spur_total + n_noise
    return Benchmark(train, val, test_iid, test_ood, tasks, true_graph, n_total, "causal_mtl",
                     info)
