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

import numbers
import warnings
from typing import Any, Literal

import torch

from taskgraph.exceptions import ValidationError
from taskgraph.inference.calibration import TemperatureScaler, task_log_probs
from taskgraph.inference.prior import (
    _METHODS,
    MAX_COMBINATIONS,
    JointPrior,
    _check_nonneg_real,
    _check_pos_int,
    _too_many,
)
from taskgraph.mrf.enumeration import prod
from taskgraph.mrf.map import (
    ConvergenceWarning,
    components,
    eliminate,
    elimination_plan,
    enumerate_argmax,
    factor_table,
    icm,
    loopy_max_product,
    single_threaded,
    tree_max_product,
)
from taskgraph.tasks import TaskSet

__all__ = ["JointPrior", "GMTL", "ConvergenceWarning", "MAX_COMBINATIONS"]


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
            out = enumerate_argmax(u, -self.alpha * table, self.chunk_size)
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
            n_comb = prod(sizes)
            if n_comb > self.max_combinations:
                raise _too_many(n_comb, self.max_combinations, "the independent prior")
            table = factor_table(every, unary, edges, pair, sizes)
            labels[:, coupled] = enumerate_argmax(u, table, self.chunk_size)
            info["enumeration"] = list(names)
            self.info_ = info
            return labels

        with single_threaded():
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
        for comp in components(len(u), edges):
            comp_set = set(comp)
            comp_edges = [(i, e) for i, e in enumerate(edges) if e[0] in comp_set]
            if len(comp_edges) == len(comp) - 1:
                tree_nodes += comp
                continue
            plan = None
            if self.method != "max_product":
                plan = elimination_plan(comp, [e for _, e in comp_edges], sizes,
                                         self.max_combinations)
            if plan is not None:
                order, largest = plan
                result = eliminate({v: phi[v] for v in comp}, [e for _, e in comp_edges],
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
            result = tree_max_product({v: phi[v] for v in tree_nodes}, [e for _, e in sub_e],
                                       [pair[i] for i, _ in sub_e])
            for v, lab in result.items():
                labels[:, coupled[v]] = lab
            info["tree"] = [names[v] for v in sorted(tree_nodes)]
        if loopy_nodes:
            sel = set(loopy_nodes)
            sub_e = [(i, e) for i, e in enumerate(edges) if e[0] in sel]
            sub_edges, sub_pair = [e for _, e in sub_e], [pair[i] for i, _ in sub_e]
            sub_phi = {v: phi[v] for v in loopy_nodes}
            result, frac, iters = loopy_max_product(
                sub_phi, sub_edges, sub_pair, damping=self.damping, max_iter=self.max_iter,
                tol=self.tol, chunk_size=self.chunk_size)
            result = icm(sub_phi, sub_edges, sub_pair, result)
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
