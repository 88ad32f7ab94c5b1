"""Many binary tasks with sparse labels whose relatedness is planted: clusters of tasks with
similar weight vectors, unrelated tasks and conflicting (sign-flipped) tasks.

The regime graph multi-task learning was built for (SGNN-EBM's and GCNet's ChEMBL assays): many
tasks, few labels per task, and a task can borrow from related tasks. The generator knows its
true :math:`p(y \\mid x)`, so every benchmark carries its Bayes ceiling.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from taskgraph.data import MultiTaskData
from taskgraph.datasets.benchmark import (
    Benchmark,
    _check_float,
    _check_int,
    _check_seed,
    _haar_orthogonal,
    _sigmoid,
    _split_sizes,
    _streams,
)
from taskgraph.exceptions import ValidationError
from taskgraph.graph import TaskGraph
from taskgraph.tasks import Task, TaskSet

__all__ = ["sparse_tasks", "sparse_tasks_logits"]


# ---------------------------------------------------------------------------- task parameters
def _cluster_sizes(n_clustered: int, n_clusters: int) -> list[int]:
    base, extra = divmod(n_clustered, n_clusters)
    return [base + (1 if c < extra else 0) for c in range(n_clusters)]


def _unit_rows(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def _task_directions(rng: np.random.Generator, cluster: np.ndarray, n_clusters: int,
                     n_features: int, rho: float) -> tuple[np.ndarray, np.ndarray]:
    r"""Unit task vectors ``[T, F]`` and the cluster centres ``[K, F]``. A task in cluster
    :math:`g(k)` gets :math:`\sqrt{\rho}\,c_{g(k)} + \sqrt{1-\rho}\,u_k`, an unrelated one
    (``cluster == -1``) :math:`u_k`.

    The centres :math:`c_g` are orthonormal when ``n_clusters <= n_features`` (random unit
    vectors otherwise); each private :math:`u_k` is a random unit vector orthogonal to every
    centre (when the centres leave room), so the vectors are unit length, the cosine within a
    cluster is :math:`\rho + (1-\rho)\,u_k^\top u_l \approx \rho` and across clusters
    :math:`(1-\rho)\,u_k^\top u_l \approx 0`.
    """
    n_tasks = len(cluster)
    if n_clusters <= n_features:
        centres = _haar_orthogonal(rng, n_features)[:, :n_clusters].T      # [K, F]
    else:
        centres = _unit_rows(rng.standard_normal((n_clusters, n_features)))
    private = rng.standard_normal((n_tasks, n_features))
    if 0 < n_clusters < n_features:
        private = private - (private @ centres.T) @ centres               # ⊥ every centre
    private = _unit_rows(private)
    clustered = cluster >= 0
    w = private.copy()
    w[clustered] = (math.sqrt(rho) * centres[cluster[clustered]]
                    + math.sqrt(1.0 - rho) * private[clustered])
    return _unit_rows(w), centres


def sparse_tasks_logits(x: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    r"""The true logits :math:`\operatorname{logit} p(y_k = 1 \mid x)` ``[N, T]`` of a
    :func:`sparse_tasks` benchmark, from its ``info``.

    Args:
        x (np.ndarray): features ``[N, F]``.
        info (dict): ``Benchmark.info`` of a :func:`sparse_tasks` benchmark.
    """
    x = np.asarray(x, dtype=np.float64)
    z = x @ info["rotation"].T
    psi = (z * z - 1.0) / math.sqrt(2.0)
    eta = float(info["nonlinearity"])
    return float(info["signal"]) * (
        math.sqrt(1.0 - eta) * (x @ info["weights"]) + math.sqrt(eta) * (
            psi @ info["nonlinear_weights"])) + info["bias"][None, :]


def _observed(rng: np.random.Generator, shape: tuple[int, int], rate: float) -> np.ndarray:
    """Bool mask: each entry observed with probability ``rate``, plus each column's entry with
    the smallest draw, so every task keeps at least one label. A larger ``rate`` on the same
    stream observes a superset."""
    u = rng.random(shape)
    mask = u < rate
    mask[np.argmin(u, axis=0), np.arange(shape[1])] = True
    return mask


def _bayes_accuracy(p: np.ndarray, names: list[str]) -> dict[str, float]:
    per_task = np.maximum(p, 1.0 - p).mean(axis=0)
    out = {name: float(v) for name, v in zip(names, per_task)}
    out["mean"] = float(per_task.mean())
    return out


def _realised_accuracy(p: np.ndarray, y: np.ndarray, names: list[str]) -> dict[str, float]:
    per_task = ((p > 0.5) == (y > 0.5)).mean(axis=0)
    out = {name: float(v) for name, v in zip(names, per_task)}
    out["mean"] = float(per_task.mean())
    return out


# ---------------------------------------------------------------------------- generator
def sparse_tasks(
    n_tasks: int = 20,
    n_samples: int = 4000,
    seed: int = 0,
    *,
    n_features: int = 20,
    n_clusters: int = 4,
    within_cosine: float = 0.9,
    n_unrelated: int = 0,
    n_conflicting: int = 0,
    nonlinearity: float = 0.0,
    signal: float = 3.0,
    bias_scale: float = 0.0,
    label_rate: float = 1.0,
    ood_shift: float = 1.0,
    val_fraction: float = 0.2,
    n_test: int = 2000,
) -> Benchmark:
    r"""Binary tasks in clusters of related tasks, with sparse labels and a known Bayes ceiling.

    Tasks ``t0 .. t{T-1}``: the first ``T - n_unrelated`` are split into ``n_clusters``
    contiguous clusters of near-equal size, the last ``n_unrelated`` belong to none. Each task
    has unit vectors :math:`w_k` (linear part) and :math:`v_k` (non-linear part), drawn
    independently with the same construction: :math:`\sqrt{\rho}\,c_{g(k)} +
    \sqrt{1-\rho}\,u_k` with orthonormal cluster centres :math:`c_g` and private directions
    :math:`u_k` orthogonal to the centres (:math:`\rho` = ``within_cosine``), or :math:`u_k`
    alone for an unrelated task. So tasks of one cluster have cosine about :math:`\rho`, tasks
    of different clusters (and unrelated tasks) about 0. ``n_conflicting`` cluster members
    (taken round-robin over clusters, from each cluster's end) have sign :math:`s_k = -1`:
    their parameters are the negation of a cluster member's (cosine about :math:`-\rho` with
    the rest of their cluster). Labels are drawn independently given :math:`x \sim
    \mathcal{N}(0, I_F)`:

    .. math::
        \operatorname{logit} p(y_k = 1 \mid x) = \sigma\,s_k\Big(\sqrt{1-\eta}\;w_k^\top x
        + \sqrt{\eta}\;v_k^\top \psi(x)\Big) + b_k,\qquad
        \psi(x) = \tfrac{1}{\sqrt 2}\big((Rx)^{\odot 2} - 1\big),

    with a random orthogonal :math:`R` (:math:`\psi` has zero mean, unit variance, and is
    uncorrelated with :math:`x`), :math:`\sigma` = ``signal`` (the logit's standard deviation
    before the bias), :math:`\eta` = ``nonlinearity`` (the share of that variance no linear
    model in :math:`x` can use) and :math:`b_k \sim \mathcal{N}(0, \text{bias\_scale}^2)`.
    With the defaults the Bayes accuracy is about 0.84.

    **Labels.** Every training and validation label is observed with probability
    ``label_rate`` (``NaN`` otherwise); each task keeps at least one label in each split. The
    label values and the observation draws come from separate streams, so benchmarks that
    differ only in ``label_rate`` share ``x`` and ``y``, and a higher rate observes a superset
    of a lower rate's labels (paired comparisons across label rates). ``test_iid`` and
    ``test_ood`` are complete; ``test_ood`` draws :math:`x \sim \mathcal{N}(\mu, I_F)` with
    :math:`\|\mu\|` = ``ood_shift`` in a random direction (covariate shift; :math:`p(y \mid x)`
    unchanged).

    **Truth.** The labels are conditionally independent given :math:`x`, so ``true_graph`` (the
    causal task graph) is empty. The relatedness is in ``info``: ``"relatedness"`` is a
    :class:`~taskgraph.graph.TaskGraph` with an edge in *both* directions between every two
    tasks of one cluster, weighted by the cosine of their signed parameter vectors (negative
    for a conflicting task), ``learned=False``.

    Args:
        n_tasks (int): number of tasks ``T`` (>= 1; vectorised, fast up to the thousands).
        n_samples (int): training rows.
        seed (int): non-negative seed; same arguments → bit-identical benchmark.
        n_features (int): features ``F`` (>= 1).
        n_clusters (int): clusters of related tasks (>= 1 when some task is clustered; at most
            the number of clustered tasks).
        within_cosine (float): :math:`\rho \in [0, 1]`, cosine between the parameter vectors of
            two tasks of one cluster (in expectation; the realised matrix is ``info["cosine"]``).
        n_unrelated (int): tasks in no cluster (``0 .. T``).
        n_conflicting (int): cluster members with negated parameters; each cluster keeps at
            least one member that is not negated.
        nonlinearity (float): :math:`\eta \in [0, 1]`, the non-linear share of the logit's
            variance.
        signal (float): :math:`\sigma \geq 0`, the logit's standard deviation.
        bias_scale (float): standard deviation of the per-task bias :math:`b_k` (>= 0).
        label_rate (float): probability in ``(0, 1]`` that a train/val label is observed.
        ood_shift (float): norm of the mean shift of ``test_ood``'s inputs (>= 0).
        val_fraction (float): validation rows as a fraction of ``n_samples`` (> 0).
        n_test (int): rows of each of ``test_iid`` and ``test_ood``.

    Returns:
        Benchmark: ``name="sparse_tasks"``, an empty ``true_graph``. ``info`` keys:
        ``"bayes_accuracy"`` (``{task: accuracy, ..., "mean": ...}``: the accuracy of the
        true :math:`p(y \mid x)`'s argmax on ``test_iid``, in expectation over the labels
        given the test inputs, :math:`\frac1N\sum_n \max(p_{nk}, 1 - p_{nk})`),
        ``"bayes_accuracy_realised"`` (the same predictor scored against the drawn
        ``test_iid`` labels), ``"bayes_accuracy_ood"`` (expected, on ``test_ood``),
        ``"clusters"`` (list of lists of task names), ``"cluster"`` (``[T]`` cluster index,
        -1 = unrelated), ``"sign"`` (``[T]`` ±1), ``"conflicting"`` and ``"unrelated"`` (task
        names), ``"cosine"`` (``[T, T]`` cosine of the signed parameter vectors), ``"relatedness"``
        (TaskGraph, above), ``"weights"`` (``[F, T]`` signed :math:`s_k w_k`), ``"centres"``
        (``[n_clusters, F]``, the linear part's cluster centres :math:`c_g`),
        ``"nonlinear_weights"`` (``[F, T]`` signed :math:`s_k v_k`), ``"rotation"``
        (:math:`R`), ``"bias"`` (``[T]``), ``"ood_mean"`` (:math:`\mu`), and the arguments
        ``"within_cosine"``, ``"nonlinearity"``, ``"signal"``, ``"label_rate"``, ``"seed"``.
        :func:`sparse_tasks_logits` recomputes the true logits from ``info``.

    Raises:
        ValidationError: on an invalid argument (the message names it).

    Example:
        >>> bench = sparse_tasks(n_tasks=20, n_samples=4000, label_rate=0.05, seed=0)
        >>> bench.train.y.shape, round(1 - bench.train.missing_rate, 2)
        (torch.Size([4000, 20]), 0.05)
    """
    n_tasks = _check_int("n_tasks", n_tasks, 1)
    n_samples = _check_int("n_samples", n_samples, 1)
    seed = _check_seed(seed)
    n_features = _check_int("n_features", n_features, 1)
    n_unrelated = _check_int("n_unrelated", n_unrelated, 0)
    if n_unrelated > n_tasks:
        raise ValidationError(
            f"n_unrelated: at most n_tasks ({n_tasks}) tasks can be unrelated, got {n_unrelated}")
    n_clustered = n_tasks - n_unrelated
    n_clusters = _check_int("n_clusters", n_clusters, 1 if n_clustered else 0)
    if n_clusters > n_clustered:
        raise ValidationError(
            f"n_clusters: {n_clustered} clustered tasks (n_tasks - n_unrelated) cannot fill "
            f"{n_clusters} clusters")
    rho = _check_float("within_cosine", within_cosine, 0.0, 1.0)
    n_conflicting = _check_int("n_conflicting", n_conflicting, 0)
    if n_conflicting > n_clustered - n_clusters:
        raise ValidationError(
            f"n_conflicting: each of the {n_clusters} clusters keeps one member that is not "
            f"negated, so at most {n_clustered - n_clusters} of the {n_clustered} clustered "
            f"tasks can conflict, got {n_conflicting}")
    eta = _check_float("nonlinearity", nonlinearity, 0.0, 1.0)
    signal = _check_float("signal", signal, 0.0)
    bias_scale = _check_float("bias_scale", bias_scale, 0.0)
    label_rate = _check_float("label_rate", label_rate, 0.0, 1.0, low_open=True)
    ood_shift = _check_float("ood_shift", ood_shift, 0.0)
    val_fraction = _check_float("val_fraction", val_fraction, 0.0, low_open=True)
    n_test = _check_int("n_test", n_test, 1)
    n_val, n_test = _split_sizes(n_samples, val_fraction, n_test)

    g_struct, g_train, g_val, g_iid, g_ood, g_observed = _streams(seed, 6)
    sizes = _cluster_sizes(n_clustered, n_clusters) if n_clustered else []
    cluster = np.full(n_tasks, -1, dtype=np.int64)
    cluster[:n_clustered] = np.repeat(np.arange(len(sizes)), sizes)
    sign = np.ones(n_tasks)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    taken = [0] * len(sizes)
    for i in range(n_conflicting):            # round-robin, from each cluster's end
        c = i % len(sizes)
        while taken[c] >= sizes[c] - 1:
            c = (c + 1) % len(sizes)
        taken[c] += 1
        sign[starts[c + 1] - taken[c]] = -1.0

    w, centres = _task_directions(g_struct, cluster, n_clusters, n_features, rho)  # [T, F]
    v, _ = _task_directions(g_struct, cluster, n_clusters, n_features, rho)
    rotation = _haar_orthogonal(g_struct, n_features)
    bias = g_struct.standard_normal(n_tasks) * bias_scale
    ood_mean = _haar_orthogonal(g_struct, n_features)[:, 0] * ood_shift

    names = [f"t{k}" for k in range(n_tasks)]
    tasks = TaskSet([Task(name, "binary") for name in names])
    params = np.concatenate([math.sqrt(1 - eta) * w, math.sqrt(eta) * v], axis=1) * sign[:, None]
    norms = np.linalg.norm(params, axis=1)
    cosine = (params @ params.T) / np.outer(norms, norms)
    info: dict[str, Any] = {
        "weights": (w * sign[:, None]).T.copy(),
        "centres": centres.copy(),
        "nonlinear_weights": (v * sign[:, None]).T.copy(),
        "rotation": rotation,
        "bias": bias,
        "signal": signal,
        "nonlinearity": eta,
    }

    def draw(rng: np.random.Generator, n: int, mean: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = rng.standard_normal((n, n_features))
        if mean is not None:
            x = x + mean[None, :]
        p = _sigmoid(sparse_tasks_logits(x, info))
        y = (rng.random((n, n_tasks)) < p).astype(np.float64)
        return x, y, p

    def data(x: np.ndarray, y: np.ndarray) -> MultiTaskData:
        return MultiTaskData(x.astype(np.float32), y.astype(np.float32), tasks)

    splits = []
    for rng, n in ((g_train, n_samples), (g_val, n_val)):
        x, y, _ = draw(rng, n)
        if label_rate < 1.0:
            y = np.where(_observed(g_observed, y.shape, label_rate), y, np.nan)
        splits.append(data(x, y))
    x_iid, y_iid, p_iid = draw(g_iid, n_test)
    x_ood, y_ood, p_ood = draw(g_ood, n_test, ood_mean)

    same = (cluster[:, None] == cluster[None, :]) & (cluster[:, None] >= 0)
    np.fill_diagonal(same, False)
    relatedness = TaskGraph(np.where(same, cosine, 0.0), tasks, learned=False,
                            meta={"benchmark": "sparse_tasks", "seed": seed,
                                  "relation": "relatedness (undirected: edges both ways)"})
    info.update({
        "bayes_accuracy": _bayes_accuracy(p_iid, names),
        "bayes_accuracy_realised": _realised_accuracy(p_iid, y_iid, names),
        "bayes_accuracy_ood": _bayes_accuracy(p_ood, names),
        "clusters": [names[starts[c]:starts[c + 1]] for c in range(len(sizes))],
        "cluster": cluster,
        "sign": sign,
        "conflicting": [names[k] for k in np.flatnonzero(sign < 0)],
        "unrelated": names[n_clustered:],
        "cosine": cosine,
        "relatedness": relatedness,
        "ood_mean": ood_mean,
        "within_cosine": rho,
        "label_rate": label_rate,
        "seed": seed,
    })
    true_graph = TaskGraph.empty(tasks, meta={"benchmark": "sparse_tasks", "seed": seed})
    return Benchmark(splits[0], splits[1], data(x_iid, y_iid), data(x_ood, y_ood), tasks,
                     true_graph, n_features, "sparse_tasks", info)
