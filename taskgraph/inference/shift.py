r"""Target-shift evaluation of GMTL decoding.

Two protocols:

1. **Importance sampling** (GMTL's own protocol, no new data): from the training prior
   :math:`p_{\text{iid}}` over the label combinations of the prior's tasks, draw
   ``n_reps`` shifted priors :math:`p_{\text{ood}}`: on the flat log-table swap the values of
   :math:`\lfloor 2q|\mathcal{Y}| \rfloor` random cells pairwise, :math:`q \sim U(0, 0.5)`; add
   :math:`\mathcal{N}(0, s^2)` to every cell, :math:`s \sim U(10^{-12}, 5)`; softmax. An IID test
   set is reweighted by

   .. math::
       w_i = \frac{p_{\text{ood}}(\mathbf{y}_i) / p_{\text{iid}}(\mathbf{y}_i)}
       {\sum_j p_{\text{ood}}(\mathbf{y}_j) / p_{\text{iid}}(\mathbf{y}_j)},

   where a missing label is marginalised out of both priors, and the weighted accuracy of one
   task is reported against the weighted Kendall :math:`\tau` between the IID and OOD log-priors
   (``scipy.stats.weightedtau``; 1 = no shift). See :func:`importance_sampling_evaluation`
   and :func:`alpha_sweep`.
2. **An explicit shifted test set** (e.g. :func:`taskgraph.datasets.anticausal_sample` under
   :func:`taskgraph.datasets.shifted_prior`): plain accuracy per :math:`\alpha`, see
   :func:`shifted_test_accuracy`.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from taskgraph.data import MultiTaskData
from taskgraph.exceptions import ValidationError
from taskgraph.inference.calibration import TemperatureScaler
from taskgraph.inference.gmtl import GMTL, JointPrior

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "ShiftResult",
    "random_target_shift",
    "weighted_kendall_tau",
    "importance_weights",
    "importance_sampling_evaluation",
    "alpha_sweep",
    "shifted_test_accuracy",
]

DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
_REP_ELEMENTS = 2**22  # cells (reps x combinations, reps x rows) held at once


# ---------------------------------------------------------------------------- checks
def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValidationError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_real(name: str, value: Any, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValidationError(f"{name}: expected a real number, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and low <= v <= high):
        raise ValidationError(f"{name}: expected a finite value in [{low}, {high}], got {value!r}")
    return v


def _check_alphas(alphas: Any) -> list[float]:
    if isinstance(alphas, (str, bytes)) or not isinstance(alphas, Sequence) or not alphas:
        raise ValidationError(f"alphas: expected a non-empty list of numbers, got {alphas!r}")
    return [_check_real(f"alphas[{i}]", a, 0.0) for i, a in enumerate(alphas)]


def _log_prior_table(prior: Any, name: str = "prior") -> torch.Tensor:
    """Normalised float64 log-table ``[C_1, ..., C_m]`` of a JointPrior."""
    if not isinstance(prior, JointPrior):
        raise ValidationError(
            f"{name}: expected a JointPrior (use JointPrior.from_table for a known table), got "
            f"{type(prior).__name__}"
        )
    table = prior.log_table(normalize=True)
    return table - torch.logsumexp(table.reshape(-1), 0)


# ---------------------------------------------------------------------------- shift draws
def random_target_shift(
    log_prior: Any,
    n_reps: int = 1000,
    seed: int = 0,
    *,
    max_swap: float = 0.5,
    max_noise: float = 5.0,
    min_noise: float = 1e-12,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""GMTL's random target shifts of a log-prior.

    For each repetition :math:`r`: :math:`q_r \sim U(0, \text{max\_swap})`; the values of
    :math:`\lfloor 2 q_r|\mathcal{Y}| \rfloor` random cells (rounded down to an even count) are
    swapped pairwise on the flat log-table;
    :math:`s_r \sim U(\text{min\_noise}, \text{max\_noise})`; every cell gets
    :math:`\mathcal{N}(0, s_r^2)` noise; softmax over cells. Each ingredient comes from its own
    stream of ``numpy.random.SeedSequence(seed)``, so results do not depend on chunking.

    Args:
        log_prior: a :class:`JointPrior` or a log-probability table (any shape, flattened).
        n_reps (int): repetitions :math:`R`.
        seed (int): seed.

    Returns:
        ``(log_p_ood [R, M], swap_fraction [R], noise_scale [R])`` (numpy float64; ``M`` cells,
        row-major).
    """
    if isinstance(log_prior, JointPrior):
        flat = _log_prior_table(log_prior, "log_prior").reshape(-1).numpy()
    else:
        try:
            flat = np.asarray(
                log_prior.detach().cpu() if isinstance(log_prior, torch.Tensor) else log_prior,
                dtype=np.float64,
            ).reshape(-1)
        except (TypeError, ValueError):
            raise ValidationError("log_prior: expected a JointPrior or a numeric table") from None
        if flat.size < 2 or np.isnan(flat).any() or (flat == np.inf).any():
            raise ValidationError("log_prior: expected >= 2 cells of finite log-probabilities")
    n_reps = _check_int("n_reps", n_reps, 1)
    seed = _check_int("seed", seed, 0)
    max_swap = _check_real("max_swap", max_swap, 0.0, 0.5)
    max_noise = _check_real("max_noise", max_noise, 0.0)
    min_noise = _check_real("min_noise", min_noise, 0.0, max_noise)
    g_swap, g_perm, g_scale, g_noise = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    m = flat.size
    swap = g_swap.uniform(0.0, max_swap, size=n_reps)
    scale = g_scale.uniform(min_noise, max_noise, size=n_reps)
    n_pairs = np.floor(2 * swap * m).astype(int) // 2
    out = np.empty((n_reps, m))
    step = max(1, _REP_ELEMENTS // m)
    half = m // 2
    for start in range(0, n_reps, step):
        stop = min(n_reps, start + step)
        r = stop - start
        perm = np.argsort(g_perm.random((r, m)), axis=1)
        a, b = perm[:, 0 : 2 * half : 2], perm[:, 1 : 2 * half : 2]
        active = np.arange(half)[None, :] < n_pairs[start:stop, None]
        vals = np.broadcast_to(flat, (r, m)).copy()
        va, vb = np.take_along_axis(vals, a, 1), np.take_along_axis(vals, b, 1)
        np.put_along_axis(vals, a, np.where(active, vb, va), 1)
        np.put_along_axis(vals, b, np.where(active, va, vb), 1)
        vals = vals + g_noise.standard_normal((r, m)) * scale[start:stop, None]
        vals = vals - vals.max(axis=1, keepdims=True)
        out[start:stop] = vals - np.log(np.exp(vals).sum(axis=1, keepdims=True))
    return out, swap, scale


def weighted_kendall_tau(a: Any, b: Any) -> float:
    """Weighted Kendall :math:`\\tau` between two tables (``scipy.stats.weightedtau`` with its
    default hyperbolic weigher; 1 for identical rankings)."""
    from scipy.stats import weightedtau

    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValidationError(f"b: expected {x.size} cells like a, got {y.size}")
    res = weightedtau(x, y)
    return float(getattr(res, "statistic", res[0]))


# ---------------------------------------------------------------------------- weights
def _prior_labels(y: Any, prior: JointPrior) -> torch.Tensor:
    if isinstance(y, MultiTaskData):
        y.check_compatible(prior.tasks, "data")
        yt = y.y
    else:
        yt = torch.as_tensor(np.asarray(y, dtype=np.float64) if not isinstance(y, torch.Tensor)
                             else y).double()
    if yt.dim() != 2 or yt.shape[1] != len(prior.tasks):
        raise ValidationError(
            f"y_true: expected labels of shape [N, {len(prior.tasks)}] over the prior's tasks, "
            f"got {tuple(yt.shape)}"
        )
    return yt.double()


def importance_weights(
    y: Any, log_p_iid: Any, log_p_ood: Any, rows: Any = None
) -> torch.Tensor:
    r"""Normalised importance weights :math:`w_{ri} \propto p^{(r)}_{\text{ood}}(\mathbf{y}_i) /
    p_{\text{iid}}(\mathbf{y}_i)`, missing labels marginalised out of both priors.

    Args:
        y: labels ``[N, m]`` of the prior's tasks (NaN = missing).
        log_p_iid: log-table ``[C_1, ..., C_m]``.
        log_p_ood: log-tables ``[R, C_1, ..., C_m]`` or flat ``[R, ΠC_k]``.
        rows: optional bool ``[N]``: the rows that count (weights are 0 elsewhere).

    Returns:
        ``[R, N]`` float64, each row summing to 1 over ``rows``.
    """
    iid = torch.as_tensor(np.asarray(log_p_iid, dtype=np.float64))
    sizes = list(iid.shape)
    ood = torch.as_tensor(np.asarray(log_p_ood, dtype=np.float64))
    ood = ood.reshape(ood.shape[0], *sizes)
    yt = torch.as_tensor(np.asarray(y, dtype=np.float64))
    if yt.dim() != 2 or yt.shape[1] != len(sizes):
        raise ValidationError(f"y: expected shape [N, {len(sizes)}], got {tuple(yt.shape)}")
    n = yt.shape[0]
    keep = torch.ones(n, dtype=torch.bool) if rows is None else torch.as_tensor(rows).bool()
    obs = ~torch.isnan(yt)
    yl = torch.where(obs, yt, torch.zeros_like(yt)).long()
    log_ratio = torch.full((ood.shape[0], n), -math.inf, dtype=torch.float64)
    patterns = torch.unique(obs[keep], dim=0) if bool(keep.any()) else obs[:0]
    for pattern in patterns:
        sel = keep & (obs == pattern).all(dim=1)
        missing = [k for k in range(len(sizes)) if not bool(pattern[k])]
        observed = [k for k in range(len(sizes)) if bool(pattern[k])]
        li = torch.logsumexp(iid, dim=missing) if missing else iid
        lo = torch.logsumexp(ood, dim=[k + 1 for k in missing]) if missing else ood
        flat = torch.zeros(int(sel.sum()), dtype=torch.long)
        for k in observed:
            flat = flat * sizes[k] + yl[sel, k]
        li_rows = li.reshape(-1)[flat] if observed else li.reshape(1).expand(flat.shape[0])
        lo_rows = (lo.reshape(lo.shape[0], -1)[:, flat] if observed
                   else lo.reshape(-1, 1).expand(-1, flat.shape[0]))
        log_ratio[:, sel] = lo_rows - li_rows[None, :]
    if not bool(keep.any()):
        raise ValidationError("rows: no row to weight")
    return torch.softmax(log_ratio, dim=1)


# ---------------------------------------------------------------------------- result
@dataclass
class ShiftResult:
    r"""Accuracy of one task under random target shifts, per :math:`\alpha`.

    Attributes:
        task (str): the evaluated task.
        alphas (list of float): the :math:`\alpha` values, one curve each.
        tau (ndarray): ``[R]`` weighted Kendall :math:`\tau` between IID and shifted log-priors.
        accuracy (ndarray): ``[A, R]`` importance-weighted accuracy.
        iid_accuracy (ndarray): ``[A]`` plain accuracy on the unweighted test rows.
        swap_fraction (ndarray): ``[R]`` the drawn :math:`q`.
        noise_scale (ndarray): ``[R]`` the drawn :math:`s`.
        ess (ndarray): ``[R]`` effective sample size :math:`1/\sum_i w_i^2`.
        seed (int): the seed.
    """

    task: str
    alphas: list[float]
    tau: np.ndarray
    accuracy: np.ndarray
    iid_accuracy: np.ndarray
    swap_fraction: np.ndarray
    noise_scale: np.ndarray
    ess: np.ndarray
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def binned(self, n_bins: int = 8) -> dict[str, Any]:
        r"""Mean accuracy per :math:`\tau` bin: equal-width bins from :math:`\min\tau` to 1.

        Returns:
            dict: ``"tau"`` (bin centres ``[B]``), ``"accuracy"`` (``[A, B]``, NaN for empty
            bins), ``"count"`` (``[B]``), ``"edges"`` (``[B + 1]``).
        """
        n_bins = _check_int("n_bins", n_bins, 1)
        lo = float(np.min(self.tau)) if self.tau.size else 0.0
        hi = max(1.0, float(np.max(self.tau))) if self.tau.size else 1.0
        if hi - lo < 1e-12:
            lo = hi - 1e-6
        edges = np.linspace(lo, hi, n_bins + 1)
        which = np.clip(np.digitize(self.tau, edges[1:-1]), 0, n_bins - 1)
        count = np.bincount(which, minlength=n_bins)
        acc = np.full((len(self.alphas), n_bins), np.nan)
        for b in range(n_bins):
            if count[b]:
                acc[:, b] = self.accuracy[:, which == b].mean(axis=1)
        return {"tau": (edges[:-1] + edges[1:]) / 2, "accuracy": acc, "count": count,
                "edges": edges}

    def summary(self, n_bins: int = 8) -> dict[str, Any]:
        """JSON-ready summary: settings, IID accuracy, mean accuracy and binned curves."""
        b = self.binned(n_bins)
        return {
            "task": self.task,
            "alphas": list(self.alphas),
            "n_reps": int(self.tau.size),
            "seed": self.seed,
            "iid_accuracy": self.iid_accuracy.tolist(),
            "mean_weighted_accuracy": self.accuracy.mean(axis=1).tolist(),
            "median_ess": float(np.median(self.ess)) if self.ess.size else None,
            "binned": {
                "tau": b["tau"].tolist(),
                "count": b["count"].tolist(),
                "accuracy": {f"{a:g}": [None if math.isnan(v) else float(v) for v in row]
                             for a, row in zip(self.alphas, b["accuracy"])},
            },
            **self.meta,
        }

    def plot(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        n_bins: int = 8,
        ax: Axes | None = None,
        title: str | None = None,
    ) -> Figure:
        r"""Accuracy against :math:`\tau` (binned means), one curve per :math:`\alpha`; the
        faint dots are the single repetitions. Writes a PNG when ``path`` is given."""
        import matplotlib

        if ax is None and path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        own = ax is None
        if own:
            fig, ax = plt.subplots(figsize=(6.0, 4.2))
        else:
            fig = ax.figure
        b = self.binned(n_bins)
        cmap = plt.get_cmap("viridis")
        for i, a in enumerate(self.alphas):
            color = cmap(i / max(1, len(self.alphas) - 1))
            ax.scatter(self.tau, self.accuracy[i], s=3, alpha=0.08, color=color)
            ok = ~np.isnan(b["accuracy"][i])
            ax.plot(b["tau"][ok], b["accuracy"][i][ok], marker="o", color=color,
                    label=f"α = {a:g}")
        ax.set_xlabel("weighted Kendall τ(train prior, shifted prior)  (1 = no shift)")
        ax.set_ylabel(f"weighted accuracy of {self.task!r}")
        ax.set_title(title or f"importance-sampled target shift ({self.tau.size} draws)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if path is not None:
            from taskgraph._io import atomic_write

            fig.tight_layout()
            with atomic_write(Path(path), "wb") as fh:
                fig.savefig(fh, format="png", dpi=120)
            if own:
                plt.close(fig)
        return fig


# ---------------------------------------------------------------------------- protocols
def _task_column(prior: JointPrior, task: str | None) -> int:
    if task is None:
        return prior.task_index[0]
    return prior.tasks.index(task)


def importance_sampling_evaluation(
    y_true: Any,
    predictions: Mapping[float, Any],
    prior: JointPrior,
    task: str | None = None,
    *,
    n_reps: int = 1000,
    seed: int = 0,
    max_swap: float = 0.5,
    max_noise: float = 5.0,
) -> ShiftResult:
    r"""GMTL's importance-sampling target-shift protocol on an IID test set.

    Args:
        y_true: a :class:`MultiTaskData` or labels ``[N, T]`` over ``prior.tasks``.
        predictions: ``{alpha: labels [N, T]}`` (e.g. from :class:`GMTL` at each
            :math:`\alpha`).
        prior (JointPrior): the **training** prior :math:`p_{\text{iid}}` (its normalised dense
            table; a ``"graph"`` prior must be small enough to tabulate).
        task (str, optional): the task whose accuracy is reported (default: the prior's first
            task). Rows where it is missing are excluded; weights are normalised over the rest.
        n_reps (int): shifted priors drawn. (default: ``1000``)
        seed (int): seed of the draws (:func:`random_target_shift`).

    Returns:
        ShiftResult
    """
    if not isinstance(prior, JointPrior):
        raise ValidationError(
            f"prior: expected a JointPrior (use JointPrior.from_table for a known table), got "
            f"{type(prior).__name__}"
        )
    y = _prior_labels(y_true, prior)
    col = _task_column(prior, task)
    if not prior.tasks[col].is_classification:
        raise ValidationError(f"task: {prior.tasks[col].name!r} is not a classification task")
    if not isinstance(predictions, Mapping) or not predictions:
        raise ValidationError("predictions: expected a non-empty {alpha: labels [N, T]} dict")
    alphas = _check_alphas(list(predictions))
    correct = []
    for a, pred in predictions.items():
        p = torch.as_tensor(np.asarray(pred, dtype=np.float64) if not isinstance(
            pred, torch.Tensor) else pred).double()
        if p.shape != y.shape:
            raise ValidationError(
                f"predictions[{a}]: expected shape {tuple(y.shape)} like y_true, got "
                f"{tuple(p.shape)}"
            )
        correct.append((p[:, col] == y[:, col]).double())
    correct_t = torch.stack(correct)  # [A, N]
    rows = ~torch.isnan(y[:, col])
    if not bool(rows.any()):
        raise ValidationError(f"y_true: task {prior.tasks[col].name!r} has no observed label")
    iid_acc = correct_t[:, rows].mean(dim=1).numpy()

    log_iid = _log_prior_table(prior)
    log_ood, swap, scale = random_target_shift(log_iid, n_reps, seed, max_swap=max_swap,
                                               max_noise=max_noise)
    flat_iid = log_iid.reshape(-1).numpy()
    tau = np.array([weighted_kendall_tau(flat_iid, row) for row in log_ood])
    y_prior = y[:, prior.task_index]
    acc = np.empty((len(alphas), n_reps))
    ess = np.empty(n_reps)
    step = max(1, _REP_ELEMENTS // max(y.shape[0], log_ood.shape[1]))
    for start in range(0, n_reps, step):
        w = importance_weights(y_prior, log_iid, log_ood[start:start + step], rows)
        acc[:, start:start + step] = (correct_t @ w.T).numpy()
        ess[start:start + step] = (1.0 / (w**2).sum(dim=1)).numpy()
    return ShiftResult(
        task=prior.tasks[col].name, alphas=alphas, tau=tau, accuracy=acc, iid_accuracy=iid_acc,
        swap_fraction=swap, noise_scale=scale, ess=ess, seed=seed,
    )


def _log_probs(source: Any, data: Any) -> Any:
    if hasattr(source, "predict_log_proba"):
        x = data.x if isinstance(data, MultiTaskData) else data
        return source.predict_log_proba(x)
    return source


def _decode_all(source: Any, data: Any, prior: JointPrior, alphas: list[float],
                calibration: TemperatureScaler | None, gmtl_kwargs: dict[str, Any]
                ) -> dict[float, torch.Tensor]:
    if hasattr(source, "predict_log_proba"):
        tasks = getattr(source, "tasks_set_", None)
        if tasks is not None:
            prior.check_tasks(tasks)
    lp = _log_probs(source, data)
    out = {}
    for a in alphas:
        dec = GMTL(prior, a, calibration=calibration, **gmtl_kwargs)
        out[a] = dec.decode(lp).double()
    return out


def alpha_sweep(
    source: Any,
    data: MultiTaskData,
    prior: JointPrior,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    *,
    task: str | None = None,
    calibration: TemperatureScaler | None = None,
    iid_prior: JointPrior | None = None,
    n_reps: int = 1000,
    seed: int = 0,
    **gmtl_kwargs: Any,
) -> ShiftResult:
    r"""Decode an IID test set with GMTL at every :math:`\alpha` and evaluate it under random
    target shifts (:func:`importance_sampling_evaluation`).

    Args:
        source: a fitted learner, or log-probabilities ``[N, T, C]`` on ``data``'s rows.
        data (MultiTaskData): IID test data (same distribution as the prior's training data).
        prior (JointPrior): the prior used for decoding.
        alphas (list of float): the :math:`\alpha` values. (default: 0, .25, .5, .75, 1)
        task (str, optional): the reported task (default: the prior's first task).
        calibration (TemperatureScaler, optional): passed to :class:`GMTL`.
        iid_prior (JointPrior, optional): :math:`p_{\text{iid}}` of the importance weights
            (default: ``prior``; pass a ``"full"`` prior when decoding with a ``"graph"`` one).
        n_reps, seed: see :func:`importance_sampling_evaluation`.
        **gmtl_kwargs: further :class:`GMTL` arguments.

    Example:
        >>> res = alpha_sweep(learner, bench.test_iid, prior, n_reps=1000, seed=0)
        >>> res.plot("shift.png")
    """
    if not isinstance(data, MultiTaskData):
        raise ValidationError(f"data: expected MultiTaskData, got {type(data).__name__}")
    alphas = _check_alphas(alphas)
    preds = _decode_all(source, data, prior, alphas, calibration, gmtl_kwargs)
    return importance_sampling_evaluation(
        data, preds, iid_prior if iid_prior is not None else prior, task,
        n_reps=n_reps, seed=seed,
    )


def shifted_test_accuracy(
    source: Any,
    data: MultiTaskData,
    prior: JointPrior,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    *,
    calibration: TemperatureScaler | None = None,
    test_prior: Any = None,
    **gmtl_kwargs: Any,
) -> dict[str, Any]:
    r"""Plain per-task accuracy of GMTL decoding on an explicit (shifted) test set.

    Args:
        source: a fitted learner, or log-probabilities ``[N, T, C]`` on ``data``'s rows.
        data (MultiTaskData): the test set, drawn under some shifted prior.
        prior (JointPrior): the training prior used for decoding.
        alphas (list of float): the :math:`\alpha` values.
        calibration (TemperatureScaler, optional): passed to :class:`GMTL`.
        test_prior (JointPrior or array, optional): the prior ``data`` was drawn from; when
            given, ``"tau"`` is its weighted Kendall :math:`\tau` to ``prior``.

    Returns:
        dict: ``"alphas"``, ``"accuracy"`` (``{task: [accuracy per alpha]}`` over the prior's
        tasks, missing labels skipped), ``"tau"`` (float or ``None``).
    """
    if not isinstance(data, MultiTaskData):
        raise ValidationError(f"data: expected MultiTaskData, got {type(data).__name__}")
    data.check_compatible(prior.tasks, "data")
    alphas = _check_alphas(alphas)
    preds = _decode_all(source, data, prior, alphas, calibration, gmtl_kwargs)
    acc: dict[str, list[float]] = {}
    for k in prior.task_index:
        name = prior.tasks[k].name
        obs = ~torch.isnan(data.y[:, k])
        acc[name] = [
            float((preds[a][obs, k] == data.y[obs, k].double()).double().mean())
            if bool(obs.any()) else math.nan
            for a in alphas
        ]
    tau = None
    if test_prior is not None:
        other = (_log_prior_table(test_prior, "test_prior") if isinstance(test_prior, JointPrior)
                 else torch.as_tensor(np.log(np.asarray(test_prior, dtype=np.float64))))
        tau = weighted_kendall_tau(_log_prior_table(prior), other)
    return {"alphas": alphas, "accuracy": acc, "tau": tau}
