"""GMTL's target-shift setting: two multiclass tasks that *cause* the input, with an explicit
joint label prior that shifts at test time (:func:`anticausal`), its sampler and the priors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from taskgraph.data import MultiTaskData
from taskgraph.datasets.benchmark import (
    Benchmark,
    _check_float,
    _check_int,
    _check_pair,
    _check_seed,
    _split_sizes,
    _streams,
)
from taskgraph.exceptions import ValidationError
from taskgraph.graph import TaskGraph
from taskgraph.tasks import Task, TaskSet

__all__ = ["anticausal", "anticausal_sample", "agreement_prior", "shifted_prior"]


def agreement_prior(n_classes: int, agreement: float) -> np.ndarray:
    """Joint prior over two ``n_classes``-way labels with mass ``agreement`` on ``y1 = y2``.

    The diagonal mass is spread uniformly over the ``C`` diagonal cells and the rest uniformly
    over the ``C(C-1)`` off-diagonal cells.

    Args:
        n_classes (int): classes per task ``C`` (>= 2).
        agreement (float): :math:`P(y_1 = y_2)` in ``[0, 1]``.

    Returns:
        np.ndarray: ``[C, C]`` table, rows ``y1``, columns ``y2``, summing to 1.
    """
    c = _check_int("n_classes", n_classes, 2)
    a = _check_float("agreement", agreement, 0.0, 1.0)
    prior = np.full((c, c), (1.0 - a) / (c * (c - 1)))
    np.fill_diagonal(prior, a / c)
    return prior


def _check_prior(prior: Any, name: str = "prior") -> np.ndarray:
    try:
        p = np.asarray(prior, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValidationError(f"{name}: expected a numeric [C1, C2] table") from None
    if p.ndim != 2 or min(p.shape) < 2:
        raise ValidationError(
            f"{name}: expected a [C1, C2] table with C1, C2 >= 2, got shape {p.shape}"
        )
    if not np.isfinite(p).all() or (p < 0).any() or abs(p.sum() - 1.0) > 1e-6:
        raise ValidationError(f"{name}: expected non-negative finite entries summing to 1")
    return p / p.sum()


def shifted_prior(
    prior: Any,
    kind: str = "anti",
    seed: int = 0,
    *,
    strength: float = 1.0,
    swap_fraction: float | None = None,
    noise_scale: float | None = None,
) -> np.ndarray:
    r"""A target-shifted version of a joint label prior.

    Kinds:
        - ``"anti"``: the reflected table :math:`p' \propto \max p + \min p - p`: the most
          likely label combinations become the least likely and vice versa (for an agreement
          prior, mass moves off the diagonal).
        - ``"uniform"``: the uniform table.
        - ``"shuffle"``: GMTL's random shift: on the flat log-prior, swap the values of
          :math:`\lfloor 2q|Y| \rfloor` random cells pairwise (:math:`q` = ``swap_fraction``,
          drawn from :math:`U(0, 0.5)` if ``None``), add :math:`\mathcal{N}(0, s^2)` to every
          cell (:math:`s` = ``noise_scale``, drawn from :math:`U(10^{-12}, 5)` if ``None``),
          then softmax.

    For ``"anti"`` and ``"uniform"``, ``strength`` :math:`t \in [0, 1]` interpolates:
    :math:`(1 - t)\,p + t\,p'` (``t = 1`` is the full shift). ``seed`` only matters for
    ``"shuffle"``.

    Args:
        prior (array): ``[C1, C2]`` table summing to 1.
        kind (str): ``"anti"``, ``"uniform"`` or ``"shuffle"``.
        seed (int): seed of the ``"shuffle"`` draw.
        strength (float): interpolation weight for ``"anti"`` / ``"uniform"``.
        swap_fraction (float, optional): :math:`q \in [0, 0.5]` for ``"shuffle"``.
        noise_scale (float, optional): :math:`s \ge 0` for ``"shuffle"``.

    Returns:
        np.ndarray: a table of the same shape, summing to 1.
    """
    p = _check_prior(prior)
    seed = _check_seed(seed)
    t = _check_float("strength", strength, 0.0, 1.0)
    if kind == "anti":
        target = p.max() + p.min() - p  # sums to > 0: an all-equal table reflects to itself
        target = target / target.sum()
    elif kind == "uniform":
        target = np.full_like(p, 1.0 / p.size)
    elif kind == "shuffle":
        rng = np.random.default_rng(seed)
        q = (
            rng.uniform(0.0, 0.5)
            if swap_fraction is None
            else _check_float("swap_fraction", swap_fraction, 0.0, 0.5)
        )
        s = (
            rng.uniform(1e-12, 5.0)
            if noise_scale is None
            else _check_float("noise_scale", noise_scale, 0.0)
        )
        logp = np.log(np.maximum(p, 1e-300)).ravel()
        n_swap = int(math.floor(2 * q * logp.size)) // 2 * 2
        cells = rng.permutation(logp.size)[:n_swap].reshape(-1, 2)
        logp[cells[:, 0]], logp[cells[:, 1]] = logp[cells[:, 1]].copy(), logp[cells[:, 0]].copy()
        logp = logp + rng.normal(0.0, s, size=logp.size)
        out = np.exp(logp - logp.max())
        return (out / out.sum()).reshape(p.shape)
    else:
        raise ValidationError(f"kind: expected 'anti', 'uniform' or 'shuffle', got {kind!r}")
    out = (1.0 - t) * p + t * target
    return out / out.sum()


def _polygon(n_vertices: int) -> np.ndarray:
    """Vertices of a regular polygon on the unit circle, ``[C, 2]`` (a triangle for C = 3)."""
    angle = 2.0 * np.pi * np.arange(n_vertices) / n_vertices + np.pi / 2.0
    return np.stack([np.cos(angle), np.sin(angle)], axis=1)


def _as_rng(seed: int | np.random.Generator | np.random.SeedSequence) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    return np.random.default_rng(_check_seed(seed))


def anticausal_sample(
    prior: Any,
    n: int,
    seed: int | np.random.Generator = 0,
    *,
    noise: tuple[float, float] = (1.0, 0.4),
    names: tuple[str, str] = ("y1", "y2"),
) -> MultiTaskData:
    r"""Draw ``n`` rows of the anticausal two-task model under a given joint label prior.

    :math:`(y_1, y_2) \sim` ``prior``; :math:`x = [\mu_1(y_1) + \text{noise}[0]\,\varepsilon_1,\;
    \mu_2(y_2) + \text{noise}[1]\,\varepsilon_2]` with :math:`\varepsilon_k \sim
    \mathcal{N}(0, I_2)` and :math:`\mu_k(c)` the vertices of a regular :math:`C_k`-gon on the
    unit circle (the unit triangle for three classes). The labels cause the input; the prior is
    the only coupling between the tasks.

    Args:
        prior (array): ``[C1, C2]`` joint table summing to 1.
        n (int): rows.
        seed (int or numpy Generator): seed, or a generator to draw from.
        noise (tuple): per-task noise standard deviation (task 1 hard, task 2 easy by default).
        names (tuple): the two task names.

    Returns:
        MultiTaskData: ``x [n, 4]``; binary tasks where a side has two classes, multiclass
        otherwise.
    """
    p = _check_prior(prior)
    n = _check_int("n", n, 1)
    noise = _check_pair("noise", noise, 0.0, ordered=False)
    if (
        isinstance(names, str)
        or not isinstance(names, Sequence)
        or len(names) != 2
        or not all(isinstance(s, str) for s in names)
    ):
        raise ValidationError(f"names: expected two task names, got {names!r}")
    rng = _as_rng(seed)
    c1, c2 = p.shape
    cell = rng.choice(p.size, size=n, p=p.ravel())
    y1, y2 = np.divmod(cell, c2)
    eps = rng.standard_normal((n, 4))
    x = np.concatenate(
        [_polygon(c1)[y1] + noise[0] * eps[:, :2], _polygon(c2)[y2] + noise[1] * eps[:, 2:]],
        axis=1,
    )
    tasks = TaskSet(
        [
            Task(name, "binary") if c == 2 else Task(name, "multiclass", c)
            for name, c in zip(names, (c1, c2))
        ]
    )
    y = np.stack([y1, y2], axis=1).astype(np.float32)
    return MultiTaskData(x.astype(np.float32), y, tasks)


def anticausal(
    n_samples: int = 4000,
    seed: int = 0,
    *,
    n_classes: int = 3,
    train_agreement: float = 0.9,
    ood_agreement: float = 0.1,
    noise: tuple[float, float] = (1.0, 0.4),
    val_fraction: float = 0.2,
    n_test: int = 2000,
) -> Benchmark:
    r"""Two multiclass tasks that cause the input, coupled only through a shifting label prior.

    GMTL's setting: the training joint prior puts mass ``train_agreement`` on :math:`y_1 = y_2`
    (:func:`agreement_prior`); :math:`x` is drawn from the labels as in
    :func:`anticausal_sample` (task 1 hard, noise 1.0; task 2 easy, noise 0.4). ``train``,
    ``val`` and ``test_iid`` follow the training prior; ``test_ood`` follows
    ``agreement_prior(n_classes, ood_agreement)`` (anti-correlated by default). A discriminative
    model learns to predict :math:`y_1` from the :math:`y_2` features and fails under the shift;
    GMTL decoding with the training prior corrects it. Use :func:`anticausal_sample` with
    :func:`shifted_prior` for further test sets under any prior.

    Args:
        n_samples (int): training rows.
        seed (int): non-negative seed.
        n_classes (int): classes per task (>= 2; 2 gives binary tasks).
        train_agreement (float): :math:`P(y_1 = y_2)` in training, in ``[0, 1]``.
        ood_agreement (float): :math:`P(y_1 = y_2)` in ``test_ood``, in ``[0, 1]``.
        noise (tuple): per-task noise standard deviations (>= 0).
        val_fraction (float): validation rows as a fraction of ``n_samples``.
        n_test (int): rows of each test split.

    Returns:
        Benchmark: tasks ``"y1"``, ``"y2"``; ``true_graph`` has no edge (the tasks share a
        prior, not a cause). ``info`` keys: ``"train_prior"``, ``"ood_prior"`` (``[C, C]``
        numpy tables), ``"means"`` (``[C, 2]`` class means of each task's 2-D block),
        ``"noise"``, ``"feature_blocks"`` (``[[0, 1], [2, 3]]``), ``"seed"``.

    Example:
        >>> bench = anticausal(seed=0)
        >>> bench.info["train_prior"].round(3)[0]
        array([0.3  , 0.017, 0.017])
    """
    n_samples = _check_int("n_samples", n_samples, 1)
    seed = _check_seed(seed)
    n_classes = _check_int("n_classes", n_classes, 2)
    train_agreement = _check_float("train_agreement", train_agreement, 0.0, 1.0)
    ood_agreement = _check_float("ood_agreement", ood_agreement, 0.0, 1.0)
    noise = _check_pair("noise", noise, 0.0, ordered=False)
    val_fraction = _check_float("val_fraction", val_fraction, 0.0, low_open=True)
    n_test = _check_int("n_test", n_test, 1)
    n_val, n_test = _split_sizes(n_samples, val_fraction, n_test)

    train_prior = agreement_prior(n_classes, train_agreement)
    ood_prior = agreement_prior(n_classes, ood_agreement)
    g_train, g_val, g_iid, g_ood = _streams(seed, 4)
    train = anticausal_sample(train_prior, n_samples, g_train, noise=noise)
    val = anticausal_sample(train_prior, n_val, g_val, noise=noise)
    test_iid = anticausal_sample(train_prior, n_test, g_iid, noise=noise)
    test_ood = anticausal_sample(ood_prior, n_test, g_ood, noise=noise)
    tasks = train.tasks
    true_graph = TaskGraph(
        np.zeros((2, 2)),
        tasks,
        learned=False,
        meta={
            "benchmark": "anticausal",
            "seed": seed,
            "confounder": "joint label prior couples y1 and y2 (no causal edge)",
        },
    )
    info = {
        "train_prior": train_prior,
        "ood_prior": ood_prior,
        "train_agreement": train_agreement,
        "ood_agreement": ood_agreement,
        "means": _polygon(n_classes),
        "noise": noise,
        "feature_blocks": [[0, 1], [2, 3]],
        "seed": seed,
    }
    return Benchmark(train, val, test_iid, test_ood, tasks, true_graph, 4, "anticausal", info)
