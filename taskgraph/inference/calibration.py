r"""Per-task temperature scaling of log-probabilities (Guo et al., 2017).

GMTL subtracts :math:`\alpha \log p(\mathbf{y})` from the sum of per-task log-probabilities, so
the size of the correction relative to :math:`\log p(y_k \mid x)` depends on the scale of the
scores: an over-confident model (logits too large) swamps the prior term and needs a larger
:math:`\alpha`. Fitting one temperature per task on validation data before decoding makes
:math:`\alpha` comparable across models (see ``docs/gmtl.md``).

This module also holds the input parsing shared by the inference code: per-task log-probabilities
are accepted as the padded ``[N, T, C]`` tensor a learner produces (``-inf`` in the columns a task
does not have; regression tasks are all ``-inf`` rows) or as a list of ``[N, C_k]`` tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from taskgraph.data import MultiTaskData
from taskgraph.exceptions import NotFittedError, ValidationError
from taskgraph.tasks import TaskSet

__all__ = ["TemperatureScaler"]

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


# ---------------------------------------------------------------------------- input parsing
def _as_float_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value.detach()
    else:
        try:
            arr = np.asarray(value)
        except Exception as exc:  # noqa: BLE001 - ragged lists and other junk
            raise ValidationError(f"{name}: cannot convert to an array ({exc})") from None
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise ValidationError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.is_complex() or t.dtype == torch.bool:
        raise ValidationError(f"{name}: expected real-valued scores, got dtype {t.dtype}")
    if not t.is_floating_point():
        t = t.double()
    elif t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    return t


def _check_scores(t: torch.Tensor, name: str) -> None:
    if bool(torch.isnan(t).any()):
        raise ValidationError(f"{name}: log-probabilities must not hold NaN")
    if bool((t == math.inf).any()):
        raise ValidationError(f"{name}: log-probabilities must not hold +inf")


def task_log_probs(
    log_probs: Any,
    n_classes: Sequence[int | None] | None = None,
    name: str = "log_probs",
) -> tuple[list[torch.Tensor | None], bool]:
    """Split per-task log-probabilities into a list of ``[N, C_k]`` tensors.

    Args:
        log_probs: ``[N, T, C]`` (``-inf`` padding, regression rows all ``-inf``) or a list of
            ``T`` entries, each ``[N, C_k]`` or ``None`` (a task without classes).
        n_classes: class count per task (``None`` = regression). When ``None`` the counts are
            inferred: a task's classes are its columns up to the last one that is finite in some
            row; a task with no finite column is treated as regression.
        name: argument name used in error messages.

    Returns:
        ``(columns, was_list)``: one ``[N, C_k]`` tensor (or ``None``) per task, and whether the
        input was a list.
    """
    if isinstance(log_probs, (list, tuple)):
        if not log_probs:
            raise ValidationError(f"{name}: expected at least one task")
        cols: list[torch.Tensor | None] = []
        n_rows: int | None = None
        for k, item in enumerate(log_probs):
            if item is None:
                cols.append(None)
                continue
            t = _as_float_tensor(item, f"{name}[{k}]")
            if t.dim() != 2:
                raise ValidationError(
                    f"{name}[{k}]: expected shape [N, C_k], got {tuple(t.shape)}"
                )
            if n_rows is not None and t.shape[0] != n_rows:
                raise ValidationError(
                    f"{name}[{k}]: has {t.shape[0]} rows but earlier tasks have {n_rows}"
                )
            n_rows = t.shape[0]
            _check_scores(t, f"{name}[{k}]")
            cols.append(t)
        if n_classes is not None:
            if len(n_classes) != len(cols):
                raise ValidationError(
                    f"{name}: expected {len(n_classes)} tasks, got {len(cols)} entries"
                )
            for k, (c, t) in enumerate(zip(n_classes, cols)):
                if c is None:
                    cols[k] = None
                elif t is None:
                    raise ValidationError(f"{name}[{k}]: a classification task needs scores")
                elif t.shape[1] != c:
                    raise ValidationError(
                        f"{name}[{k}]: expected {c} class columns, got {t.shape[1]}"
                    )
        if n_rows is None:
            raise ValidationError(f"{name}: no task has scores (every entry is None)")
        return cols, True

    t = _as_float_tensor(log_probs, name)
    if t.dim() != 3:
        raise ValidationError(
            f"{name}: expected log-probabilities of shape [N, T, C] (or a list of [N, C_k]), "
            f"got {tuple(t.shape)}"
        )
    if n_classes is not None and t.shape[1] != len(n_classes):
        raise ValidationError(
            f"{name}: expected {len(n_classes)} tasks (dimension 1), got {t.shape[1]}"
        )
    if n_classes is None:
        finite = torch.isfinite(t).any(dim=0)  # [T, C]
        inferred: list[int | None] = []
        for k in range(t.shape[1]):
            idx = torch.nonzero(finite[k]).flatten()
            inferred.append(None if idx.numel() == 0 else int(idx[-1]) + 1)
        n_classes = inferred
    cols = []
    for k, c in enumerate(n_classes):
        if c is None:
            cols.append(None)
            continue
        if c > t.shape[2]:
            raise ValidationError(
                f"{name}: task {k} has {c} classes but the tensor has only {t.shape[2]} columns"
            )
        col = t[:, k, :c]
        _check_scores(col, f"{name}[:, {k}]")
        cols.append(col)
    return cols, False


def pack_log_probs(
    cols: Sequence[torch.Tensor | None], like: torch.Tensor | None = None
) -> torch.Tensor:
    """Inverse of :func:`task_log_probs` for tensors: pad back to ``[N, T, C]`` with ``-inf``."""
    present = [c for c in cols if c is not None]
    n = present[0].shape[0]
    width = max(c.shape[1] for c in present)
    if like is not None:
        width = max(width, like.shape[2])
    dtype, device = present[0].dtype, present[0].device
    out = torch.full((n, len(cols), width), -math.inf, dtype=dtype, device=device)
    for k, c in enumerate(cols):
        if c is not None:
            out[:, k, : c.shape[1]] = c
    return out


def _labels_tensor(val: Any, n_tasks: int, n_rows: int) -> tuple[torch.Tensor, TaskSet | None]:
    if isinstance(val, MultiTaskData):
        y, tasks = val.y, val.tasks
    else:
        y, tasks = _as_float_tensor(val, "val"), None
        if y.dim() == 1 and n_tasks == 1:
            y = y[:, None]
    if y.dim() != 2 or y.shape != (n_rows, n_tasks):
        raise ValidationError(
            f"val: expected labels of shape [{n_rows}, {n_tasks}] matching the log-probabilities, "
            f"got {tuple(y.shape)}"
        )
    return y, tasks


def _log_softmax_safe(z: torch.Tensor) -> torch.Tensor:
    """``log_softmax`` over the last dimension that leaves all ``-inf`` rows unchanged."""
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    return torch.where(torch.isfinite(lse), z - lse, z)


# ---------------------------------------------------------------------------- the scaler
class TemperatureScaler:
    r"""One temperature per task, fitted by minimising validation negative log-likelihood.

    For task :math:`k` with scores :math:`s_k(x) \in \mathbb{R}^{C_k}` (log-probabilities or
    logits; for a binary task this is equivalent to dividing the logit
    :math:`s_{k,1} - s_{k,0}` by :math:`T_k`):

    .. math::
        \log \tilde p(y_k = c \mid x) = \log\operatorname{softmax}\big(s_k(x) / T_k\big)_c,
        \qquad
        T_k = \arg\min_{T > 0} \; -\frac{1}{|V_k|} \sum_{i \in V_k}
        \log\operatorname{softmax}\big(s_k(x_i) / T\big)_{y_{ik}},

    where :math:`V_k` are the validation rows with an observed label for task :math:`k`. The NLL
    is convex in :math:`1/T`, hence unimodal in :math:`\log T`; it is minimised by a
    golden-section search on :math:`\log T \in [\log T_{\min}, \log T_{\max}]`, vectorised over
    tasks. Regression tasks and tasks without a validation label keep :math:`T_k = 1`. Scaling
    by a positive temperature never changes a task's argmax.

    Args:
        bounds (tuple): search interval :math:`(T_{\min}, T_{\max})`. A task whose labels are
            separable by its scores ends at :math:`T_{\min}`. (default: ``(1e-2, 1e2)``)
        tol (float): stop when the bracket on :math:`\log T` is narrower than this.
            (default: ``1e-6``)

    Attributes (after :meth:`fit`):
        temperature_ (Tensor): ``[T]`` float64 temperatures.
        nll_before_ (Tensor): ``[T]`` validation NLL at :math:`T_k = 1` (``NaN`` where unfitted).
        nll_after_ (Tensor): ``[T]`` validation NLL at the fitted temperature.
        tasks_ (TaskSet or None): the tasks, when known from the learner or the data.

    Example:
        >>> scaler = TemperatureScaler().fit(learner, bench.val)
        >>> calibrated = scaler.transform(learner.predict_log_proba(bench.test_ood.x))
        >>> GMTL(prior, alpha=1.0, calibration=scaler)
    """

    def __init__(self, bounds: tuple[float, float] = (1e-2, 1e2), tol: float = 1e-6) -> None:
        self.bounds = bounds
        self.tol = tol

    def __repr__(self) -> str:
        if not hasattr(self, "temperature_"):
            return "TemperatureScaler()"
        temps = ", ".join(f"{t:.3g}" for t in self.temperature_.tolist())
        return f"TemperatureScaler(temperature_=[{temps}])"

    # ------------------------------------------------------------------ fit
    def fit(self, source: Any, val: Any) -> TemperatureScaler:
        """Fit one temperature per task on validation data; returns ``self``.

        Args:
            source: a fitted learner (its ``predict_log_proba(val.x)`` is used), or
                log-probabilities ``[N, T, C]`` / a list of ``[N, C_k]`` on the validation rows.
            val: a :class:`~taskgraph.data.MultiTaskData` (required with a learner) or labels
                ``[N, T]`` (NaN = missing).
        """
        lo, hi = self._check_bounds()
        if not (isinstance(self.tol, (int, float)) and self.tol > 0):
            raise ValidationError(f"tol: expected a positive number, got {self.tol!r}")
        tasks: TaskSet | None = None
        if hasattr(source, "predict_log_proba"):
            if not isinstance(val, MultiTaskData):
                raise ValidationError(
                    "val: with a learner as source, val must be a MultiTaskData with the "
                    f"learner's tasks, got {type(val).__name__}"
                )
            tasks = getattr(source, "tasks_set_", None) or TaskSet.coerce(source.tasks)
            val.check_compatible(tasks, "val")
            source = source.predict_log_proba(val.x)
        n_classes = None
        if isinstance(val, MultiTaskData):
            tasks = val.tasks if tasks is None else tasks
            n_classes = [t.n_classes if t.is_classification else None for t in tasks]
        cols, _ = task_log_probs(source, n_classes, "source")
        n_rows = next(c.shape[0] for c in cols if c is not None)
        y, _ = _labels_tensor(val, len(cols), n_rows)

        temps = torch.ones(len(cols), dtype=torch.float64)
        before = torch.full((len(cols),), math.nan, dtype=torch.float64)
        after = before.clone()
        fitted = [k for k, c in enumerate(cols) if c is not None
                  and bool((~torch.isnan(y[:, k])).any())]
        for k in fitted:
            yk = y[:, k]
            obs = ~torch.isnan(yk)
            target = yk[obs].long()
            if bool((target < 0).any()) or bool((target >= cols[k].shape[1]).any()):
                raise ValidationError(
                    f"val: labels of task {k} must lie in 0..{cols[k].shape[1] - 1}"
                )
        if fitted:
            temps_fit, nll0, nll1 = self._search(cols, y, fitted, lo, hi)
            temps[fitted] = temps_fit
            before[fitted] = nll0
            after[fitted] = nll1
        self.temperature_ = temps
        self.nll_before_ = before
        self.nll_after_ = after
        self.tasks_ = tasks
        self.n_classes_ = [None if c is None else int(c.shape[1]) for c in cols]
        return self

    @classmethod
    def from_temperatures(cls, temperature: Any, tasks: TaskSet) -> TemperatureScaler:
        """A fitted scaler from saved per-task temperatures ``[T]`` (what :meth:`fit` stores in
        ``temperature_``), e.g. when a learner is loaded; validation NLLs are not kept."""
        tasks = TaskSet.coerce(tasks)
        temps = torch.as_tensor(temperature, dtype=torch.float64).reshape(-1)
        if len(temps) != len(tasks):
            raise ValidationError(f"temperature: expected {len(tasks)} temperatures (one per "
                                  f"task), got {len(temps)}")
        scaler = cls()
        scaler.temperature_ = temps
        nan = torch.full_like(temps, math.nan)
        scaler.nll_before_, scaler.nll_after_ = nan, nan.clone()
        scaler.tasks_ = tasks
        scaler.n_classes_ = [int(t.n_classes) if t.is_classification else None for t in tasks]
        return scaler

    def _check_bounds(self) -> tuple[float, float]:
        b = self.bounds
        if (
            not isinstance(b, (tuple, list))
            or len(b) != 2
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in b)
            or not 0 < b[0] < b[1]
        ):
            raise ValidationError(f"bounds: expected (low, high) with 0 < low < high, got {b!r}")
        return float(b[0]), float(b[1])

    def _search(
        self,
        cols: list[torch.Tensor | None],
        y: torch.Tensor,
        fitted: list[int],
        lo: float,
        hi: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        width = max(cols[k].shape[1] for k in fitted)
        n = y.shape[0]
        # [N, F, C] scores of the fitted tasks, -inf padded; labels and masks [N, F]
        scores = torch.full((n, len(fitted), width), -math.inf, dtype=torch.float64)
        for j, k in enumerate(fitted):
            scores[:, j, : cols[k].shape[1]] = cols[k].double()
        yk = y[:, fitted]
        obs = ~torch.isnan(yk)
        target = torch.where(obs, yk, torch.zeros_like(yk)).long()
        picked = scores.gather(-1, target[..., None])[..., 0]
        picked = torch.where(obs, picked, torch.zeros_like(picked))
        count = obs.sum(dim=0).double()

        def nll(log_t: torch.Tensor) -> torch.Tensor:
            inv = torch.exp(-log_t)  # [F]
            lse = torch.logsumexp(scores * inv[None, :, None], dim=-1)  # [N, F]
            per = lse - picked * inv[None, :]
            per = torch.where(obs, per, torch.zeros_like(per))
            return per.sum(dim=0) / count

        a = torch.full((len(fitted),), math.log(lo), dtype=torch.float64)
        b = torch.full((len(fitted),), math.log(hi), dtype=torch.float64)
        c = b - _GOLDEN * (b - a)
        d = a + _GOLDEN * (b - a)
        fc, fd = nll(c), nll(d)
        while float((b - a).max()) > self.tol:
            left = fc < fd  # minimum in [a, d]
            b = torch.where(left, d, b)
            a = torch.where(left, a, c)
            new_c = b - _GOLDEN * (b - a)
            new_d = a + _GOLDEN * (b - a)
            c_next = torch.where(left, new_c, d)
            d_next = torch.where(left, c, new_d)
            f_new = nll(torch.where(left, new_c, new_d))
            fc, fd = torch.where(left, f_new, fd), torch.where(left, fc, f_new)
            c, d = c_next, d_next
        best = (a + b) / 2
        # the interval end is the answer when the minimum lies on the boundary
        candidates = torch.stack([best, torch.full_like(best, math.log(lo)),
                                  torch.full_like(best, math.log(hi))])
        values = torch.stack([nll(v) for v in candidates])
        log_t = candidates.gather(0, values.argmin(dim=0)[None])[0]
        return torch.exp(log_t), nll(torch.zeros_like(best)), nll(log_t)

    # ------------------------------------------------------------------ apply
    def _check_fitted(self) -> None:
        if not hasattr(self, "temperature_"):
            raise NotFittedError("TemperatureScaler is not fitted yet: call fit() first")

    def check_tasks(self, tasks: TaskSet) -> None:
        """Raise :class:`ValidationError` unless the scaler was fitted for ``tasks``."""
        self._check_fitted()
        if self.tasks_ is not None and self.tasks_ != tasks:
            raise ValidationError(
                f"calibration: the scaler was fitted on tasks {self.tasks_!r}, which differ "
                f"from the learner's tasks {tasks!r}"
            )
        if len(self.temperature_) != len(tasks):
            raise ValidationError(
                f"calibration: the scaler has {len(self.temperature_)} temperatures but there "
                f"are {len(tasks)} tasks"
            )

    def transform_columns(
        self, cols: Sequence[torch.Tensor | None]
    ) -> list[torch.Tensor | None]:
        """Calibrate a list of per-task ``[N, C_k]`` scores (``None`` entries pass through)."""
        self._check_fitted()
        if len(cols) != len(self.temperature_):
            raise ValidationError(
                f"log_probs: expected {len(self.temperature_)} tasks (as fitted), got {len(cols)}"
            )
        out: list[torch.Tensor | None] = []
        for k, c in enumerate(cols):
            if c is None:
                out.append(None)
                continue
            temp = float(self.temperature_[k])
            out.append(_log_softmax_safe(c / temp))
        return out

    def transform(self, log_probs: Any) -> Any:
        r"""Calibrated log-probabilities :math:`\log\operatorname{softmax}(s_k / T_k)`.

        Shapes:
            - **log_probs:** ``[N, T, C]`` (``-inf`` padding) or a list of ``[N, C_k]``
            - **returns:** the same structure; padding and regression rows stay ``-inf``
        """
        self._check_fitted()
        cols, was_list = task_log_probs(log_probs, self.n_classes_, "log_probs")
        out = self.transform_columns(cols)
        if was_list:
            return out
        like = torch.as_tensor(log_probs) if not isinstance(log_probs, torch.Tensor) else (
            log_probs)
        packed = pack_log_probs(out, like)
        return packed

    __call__ = transform
