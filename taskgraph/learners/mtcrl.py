r"""MT-CRL (Hu et al., NeurIPS 2022): disentangled modules, sparse task → module routing and an
invariance penalty on the routing across environments, as node-level parts of one model."""

from __future__ import annotations

import builtins
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from taskgraph.data import MultiTaskData
from taskgraph.environments import (
    ENV_MODES,
    RoutingInvariance,
    check_nonnegative,
    mean_task_loss,
)
from taskgraph.exceptions import ValidationError
from taskgraph.graph import TaskGraph
from taskgraph.learners.base import BaseLearner, check_choices, register
from taskgraph.nn.heads import TaskHeads
from taskgraph.nn.routed_net import RoutedTaskNet
from taskgraph.nn.routing import GATE_KINDS, READOUTS, SPARSITY_KINDS, TaskModuleRouter
from taskgraph.regularizers import (
    CONDITIONAL_KINDS,
    DECORRELATION_KINDS,
    INVARIANCE_KINDS,
    decorrelation,
)
from taskgraph.tasks import Task, TaskSet

__all__ = ["MTCRL"]



@register("mtcrl")
class MTCRL(BaseLearner):
    r"""Multi-task causal representation learning (MT-CRL) on task nodes.

    The encoder is split into ``K`` modules :math:`\mathbf{z}_k` (a
    :class:`encoders.ModularEncoder`); task ``t`` reads them through its routing gates
    :math:`\mathbf{g}_t \in [0, 1]^K` (:class:`~taskgraph.nn.routing.TaskModuleRouter`), giving
    a task node state :math:`\mathbf{s}_t`; with a ``graph`` the node states pass through one
    :class:`~taskgraph.nn.message_passing.TaskMessagePassing` layer along its edges; per-task
    heads read the result. Training minimises

    .. math::
        \mathcal{L} = \frac{1}{\max(1, \lambda)}\Bigl[\sum_t \bar\ell_t
        + \lambda_{\text{dec}}\, \mathcal{L}_{\text{dec}}(\mathbf{z})
        + \lambda_{\text{sp}} \sum_{t,k} g_{tk}
        + \lambda \sum_t P_t\Bigr],

    .. math::
        P_t = \sum_e \Bigl( \bigl\lVert \nabla_{\mathbf{w}}
        R_t^e \bigr\rVert^2 + \bigl\lVert \nabla_{\mathbf{u}} R_t^e \bigr\rVert^2 \Bigr)
        \Big|_{\mathbf{w} = \mathbf{1}, \mathbf{u} = \mathbf{0}}, \qquad
        R_t^e = \text{risk of } \mathbf{o}_t = h_t(\mathbf{g}_t \odot \mathbf{w};
        \mathbf{z}) + \mathbf{u} \text{ in environment } e

    (IRMv1 on the gates: a dummy multiplier :math:`\mathbf{w}` of task ``t``'s gate vector,
    plus a dummy shift :math:`\mathbf{u}` of its intercept, ``invariance_intercept``; each
    squared norm can instead be estimated without bias as the product of two halves'
    gradients, ``unbiased_invariance``). The weight :math:`\lambda` is ``warmup_invariance``
    for the first ``warmup_steps`` optimiser steps and ``invariance`` afterwards; the bracket
    is divided by :math:`\lambda` when :math:`\lambda > 1` (``renormalize``, IRM's
    practice) and some environment of the batch counts (``min_env_rows``). Environments: the
    data's ``env`` ids, strata of the other tasks' labels with task ``t``'s classes
    re-balanced inside each stratum, or both crossed (``environments``). A single environment
    disables the penalty with a ``UserWarning``.

    ``task_graph_`` holds the learned routing (module → task edges, ``learned=True``) and the
    given graph's task → task edges (none without a ``graph``); ``routing_`` is the ``[T, K]``
    gate matrix. ``docs/mtcrl.md`` records the variants chosen where the paper was not
    available, with measurements.

    Args:
        n_modules (int): modules ``K`` when the encoder is built here or wrapped from a plain
            backbone (a :class:`encoders.ModularEncoder` passed as ``encoder`` keeps its own).
            (default: :obj:`4`)
        module_dim (int, optional): module width for ``module_mode="separate"`` (default:
            ``hidden // n_modules``; ``"split"`` uses ``backbone.out_dim // n_modules``).
        module_mode (str): layout of the modules on a plain backbone: ``"split"`` (blocks of the
            trunk's last layer, no extra cost) or ``"separate"`` (one sub-network per module).
            (default: :obj:`"split"`)
        gate (str): ``"sigmoid"``, ``"hard_concrete"``, ``"gumbel"`` or ``"softmax"``.
            (default: :obj:`"sigmoid"`)
        readout (str): ``"concat"`` or ``"sum"``. (default: :obj:`"concat"`)
        gate_init (float): initial gate value. (default: :obj:`0.5`)
        prune_threshold (float, optional): gates below it are 0 at inference and in the
            exported routing.
        sparsity (float): :math:`\lambda_{\text{sp}}`. (default: :obj:`1e-2`)
        sparsity_kind (str): ``"l1"``, ``"entropy"``, ``"l1+entropy"`` or ``"none"``.
            (default: :obj:`"l1"`)
        decorrelation (float): :math:`\lambda_{\text{dec}}`; off by default: it never helped
            in our measurements and costs accuracy where the true factors are correlated in
            training, as on Multi-MNIST (docs/mtcrl.md). (default: :obj:`0.0`)
        decorrelation_kind (str): ``"corr"`` or ``"hsic"``. (default: :obj:`"corr"`)
        decorrelation_units (int, optional): features per module drawn at random each step for
            the decorrelation (an unbiased estimate that keeps its cost small for wide modules;
            ``None`` uses all). (default: :obj:`16`)
        invariance (float): :math:`\lambda` after the warm-up; 0 (with
            ``warmup_invariance=0``) disables the penalty. (default: :obj:`5.0`)
        invariance_kind (str): ``"irmv1"``, ``"grad_var"`` or ``"vrex"`` on the gates, or a
            conditional independence penalty of each task's features and its environments
            given its own label (:func:`~taskgraph.regularizers.conditional_independence`):
            ``"cind"`` on the task's class probabilities, ``"cind_state"`` on its gated,
            standardised modules, ``"cind_loss"`` on its per-example loss (``min_env_rows``
            and ``invariance_intercept`` do not apply to these; on Multi-MNIST they do not
            pay, docs/mtcrl.md). (default: :obj:`"irmv1"`)
        warmup_steps (int): optimiser steps (not epochs) before the full penalty.
            (default: :obj:`100`)
        warmup_invariance (float): :math:`\lambda` during the warm-up. (default: :obj:`1.0`)
        renormalize (bool): divide the loss by :math:`\lambda` when :math:`\lambda > 1` (in
            batches where some environment counts). (default: :obj:`True`)
        invariance_intercept (bool): add the intercept-shift dummy :math:`\mathbf{u}` to the
            IRMv1 / gradient-variance penalty. (default: :obj:`True`)
        unbiased_invariance (bool): estimate IRMv1's squared gradient by the product of the
            gradients of two halves of every environment's examples in the batch
            (:func:`~taskgraph.regularizers.split_halves`), which is unbiased; the default
            squares the whole batch's gradient, which adds its sampling variance. The unbiased
            estimate is noisier and measured worse (docs/mtcrl.md). (default: :obj:`False`)
        min_env_rows (float): an environment enters a batch's penalty only with at least this
            many effective rows in the batch (Kish's :math:`(\sum a)^2 / \sum a^2` of the
            re-balancing weights): below that the squared gradient is mostly sampling noise
            (see :class:`~taskgraph.regularizers.RouterInvariancePenalty`). The ``invariance_envs``
            log is the share of (environment, task) pairs that counted, ``invariance_batches``
            the share of batches in which any did. (default: :obj:`16`)
        invariance_memory (float): IRMv1 over about this many batches
            (:class:`~taskgraph.environments.GradientMemory`: decayed running means of every
            pair's dummy gradients, ``min_env_rows`` then counts the memory's rows); 1 = each
            batch on its own. Measured worse on Multi-MNIST (docs/mtcrl.md). (default: :obj:`1`)
        balanced_sampling (float): :math:`\alpha \in [0, 1]`: training rows are drawn (with
            replacement, as many per epoch as there are rows) with probability
            :math:`(1 - \alpha)/N + \alpha\, \bar a_n / \sum \bar a`, :math:`\bar a_n` the
            row's mean re-balancing weight
            (:meth:`~taskgraph.environments.RoutingInvariance.draw_probabilities`), so the
            batches hold more of the rows that label strata are short of; the penalty's weights
            are divided by the draw ratio. This changes the distribution the task loss sees
            too (docs/mtcrl.md). (default: :obj:`0`)
        environments (str): ``"given"`` (the data's ``env``), ``"labels"`` (strata of the
            other tasks' labels), ``"both"`` (given × label strata) or ``"auto"`` (``"both"``
            when the data has two or more environments and there are label strata, else
            whichever exists). (default: :obj:`"auto"`)
        rebalance (bool, optional): re-balance each task's classes inside every environment
            (default: for label environments, not for given ones).
        max_envs (int): cap on label strata per task. (default: :obj:`16`)
        penalty_through_encoder (bool): let the penalty's gradient reach the encoder (it then
            reshapes the modules); ``False`` differentiates it through the read-out and heads
            only. (default: :obj:`True`)
        graph (TaskGraph, optional): a task graph over the same tasks; its edges carry one
            round of message passing between task node states before the heads.
        **kwargs: :class:`~taskgraph.learners.base.BaseLearner` arguments.
    """

    conformance_kwargs: ClassVar[dict[str, Any]] = {"warmup_steps": 2}

    def __init__(
        self,
        tasks: TaskSet | builtins.list[Task | str],
        *,
        n_modules: int = 4,
        module_dim: int | None = None,
        module_mode: str = "split",
        gate: str = "sigmoid",
        readout: str = "concat",
        gate_init: float = 0.5,
        prune_threshold: float | None = None,
        sparsity: float = 1e-2,
        sparsity_kind: str = "l1",
        decorrelation: float = 0.0,
        decorrelation_kind: str = "corr",
        decorrelation_units: int | None = 16,
        invariance: float = 5.0,
        invariance_kind: str = "irmv1",
        warmup_steps: int = 100,
        warmup_invariance: float = 1.0,
        renormalize: bool = True,
        invariance_intercept: bool = True,
        unbiased_invariance: bool = False,
        min_env_rows: float = 16.0,
        invariance_memory: float = 1.0,
        balanced_sampling: float = 0.0,
        environments: str = "auto",
        rebalance: bool | None = None,
        max_envs: int = 16,
        penalty_through_encoder: bool = True,
        graph: TaskGraph | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(tasks, **kwargs)
        self._store_params(locals())

    # ------------------------------------------------------------------ checks
    def _check_params(self) -> None:
        check_choices(self, {"module_mode": ("split", "separate"), "gate": GATE_KINDS,
                             "readout": READOUTS, "sparsity_kind": SPARSITY_KINDS,
                             "decorrelation_kind": DECORRELATION_KINDS,
                             "invariance_kind": INVARIANCE_KINDS + CONDITIONAL_KINDS,
                             "environments": ENV_MODES})
        check_nonnegative(self, ("sparsity", "decorrelation", "invariance",
                                       "warmup_invariance", "min_env_rows"))
        if self.graph is not None:
            if not isinstance(self.graph, TaskGraph):
                raise ValidationError(
                    f"graph: expected a TaskGraph or None, got {type(self.graph).__name__}")
            if self.graph.names != self.tasks_set_.names:
                raise ValidationError(
                    f"graph: its tasks {self.graph.names} differ from the learner's tasks "
                    f"{self.tasks_set_.names} (same names, same order)")

    # ------------------------------------------------------------------ building
    def _build(self, feature_shape: tuple[int, ...], train: MultiTaskData | None) -> nn.Module:
        from taskgraph.nn.message_passing import TaskMessagePassing

        self._check_params()
        encoder = self._make_modular(feature_shape, int(self.n_modules), self.module_mode,
                                     self.module_dim)
        if not hasattr(encoder, "k") or not hasattr(encoder, "module_dim"):
            raise ValidationError("encoder: expected an encoders.ModularEncoder or a backbone")
        k, m = int(encoder.k), int(encoder.module_dim)
        t = len(self.tasks_set_)
        router = TaskModuleRouter(t, k, m, gate=self.gate, readout=self.readout,
                                  init=float(self.gate_init),
                                  prune_threshold=self.prune_threshold)
        mp = None
        edge_index = torch.zeros(2, 0, dtype=torch.long)
        edge_weight = torch.zeros(0)
        if self.graph is not None:
            mp = TaskMessagePassing(router.out_dim, router.out_dim)
            edge_index, edge_weight = self.graph.to_edge_index()
        heads = TaskHeads(self.tasks_set_, router.out_dim)
        self._step = 0
        self._inv = RoutingInvariance.from_learner(self, self.invariance_kind)
        if train is not None:
            self._inv.setup(train)
            if self._inv.inactive:
                self._part_inactive("invariance", self._inv.inactive)
        return RoutedTaskNet(encoder, router, heads, mp, edge_index, edge_weight)

    def _loss(self, batch: Any, epoch: int) -> tuple[torch.Tensor, dict[str, Any]]:
        net: RoutedTaskNet = self.model_
        step = self._step
        if net.training:
            self._step += 1
        z = net.encoder(batch.x)
        gates = net.router.gates()
        lam = self._inv.weight(step)
        if lam > 0:
            task, pen = self._task_and_invariance(net, batch, z, gates)
        else:
            per = self.layout_.per_example_loss(net.head_out(z, gates), batch.y)
            task, pen = mean_task_loss(per, batch.y), None
        loss = task
        logs: dict[str, Any] = {"task_loss": task.detach()}
        if float(self.decorrelation) > 0:
            dec = decorrelation(z, self.decorrelation_kind, max_units=self.decorrelation_units)
            loss = loss + float(self.decorrelation) * dec
            logs["decorrelation"] = dec.detach()
        if float(self.sparsity) > 0 and self.sparsity_kind != "none":
            sp = net.router.sparsity(self.sparsity_kind)
            loss = loss + float(self.sparsity) * sp
            logs["sparsity"] = sp.detach()
        if pen is not None:
            loss = loss + lam * pen
            logs.update(self._inv.logs(pen))
            logs["lambda_inv"] = lam
            if self.renormalize:
                loss = self._inv.renormalize(loss, lam)
        return loss, logs

    def _task_and_invariance(self, net: RoutedTaskNet, batch: Any, z: torch.Tensor,
                             gates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Task loss and invariance penalty; with the dummies at their neutral values the
        penalty pass *is* the forward pass, so the task loss reuses it (unless the penalty is
        kept off the encoder)."""
        y, lay, inv = batch.y, self.layout_, self._inv
        member, assign, valid = inv.assignment(batch, gates.dtype)
        if not inv.needs_pass(valid):
            # idle penalty (no environment with min_env_rows in this batch): its value and
            # gradient are exactly 0, so skip the dummy pass
            per = lay.per_example_loss(net.head_out(z, gates), y)
            return mean_task_loss(per, y), per.new_zeros(())
        through = bool(self.penalty_through_encoder)
        if inv.conditional:
            out = net.head_out(z, gates)
            per = lay.per_example_loss(out, y)
            zp = z if through else z.detach()
            if inv.conditional == "cind_loss":
                per_p = per if through else lay.per_example_loss(net.head_out(zp, gates), y)
                return mean_task_loss(per, y), inv.conditional_penalty(per_p[..., None], y,
                                                                       assign)
            if inv.conditional == "cind_state":
                return mean_task_loss(per, y), inv.module_penalty(zp, gates, y, assign)
            f = out if through else net.head_out(zp, gates)
            return mean_task_loss(per, y), inv.output_penalty(f, y, assign, lay)
        if not inv.penalty.needs_dummy:
            per = lay.per_example_loss(net.head_out(z, gates), y)
            per_p = per if through else lay.per_example_loss(net.head_out(z.detach(), gates), y)
            return mean_task_loss(per, y), inv.penalty(per_p, assign, None, valid=valid).sum()
        if net.mp is None:
            per, pen = inv.closed_form_pass(net, z, gates, y, lay, assign, valid,
                                            bool(self.invariance_intercept), through,
                                            update=net.training)
            return mean_task_loss(per, y), pen
        zp = z if through else z.detach()
        per_p, pen = inv.dummy_pass(member, assign, valid, gates,
                                    lambda ex: net.penalty_out(zp, ex, gates),
                                    net.heads.col_mask, y, lay, bool(self.invariance_intercept),
                                    update=net.training)
        per = per_p if through else lay.per_example_loss(net.head_out(z, gates), y)
        return mean_task_loss(per, y), pen

    # ------------------------------------------------------------------ hooks
    @torch.no_grad()
    def _on_epoch_end(self, epoch: int, train: MultiTaskData,
                      optimizer: torch.optim.Optimizer | None = None) -> dict[str, float]:
        idle = self._inv.idle_message(epoch, float(self.min_env_rows), int(self.batch_size))
        if idle:
            self._part_inactive("invariance", idle)
        g = self.model_.router.routing()
        t, k = g.shape
        if t * k > 64:
            return {"gate_mean": float(g.mean())}
        names = self.tasks_set_.names
        return {f"gate/{names[i]}/module_{j}": float(g[i, j]) for i in range(t) for j in range(k)}

    def _train_sampler(self, train: MultiTaskData, seed: int) -> Any:
        """Balanced sampling of the training rows (``balanced_sampling``), or ``None``."""
        return self._inv.sampler(len(train), seed)

    def _train_state(self) -> dict[str, Any]:
        return {"step": int(getattr(self, "_step", 0)), **self._inv.train_state()}

    def _load_train_state(self, state: dict[str, Any]) -> None:
        self._step = int(state.get("step", 0))
        self._inv.load_train_state(state)

    @property
    def routing_(self) -> np.ndarray:
        """The learned ``[T, K]`` routing gates (evaluation mode, pruning applied)."""
        self._check_fitted()
        return self.model_.router.routing().cpu().double().numpy()

    @torch.no_grad()
    def _learned_graph(self) -> TaskGraph:
        routing = self.routing_
        t = len(self.tasks_set_)
        adjacency = np.zeros((t, t)) if self.graph is None else self.graph.adjacency
        meta = {
            "learner": self.name,
            "gate": self.gate,
            "invariance": self.invariance_kind if self._inv.active else "off",
            "environments": self._inv.envs["mode"] if self._inv.active else "none",
            "given_graph": self.graph is not None,
        }
        return TaskGraph(adjacency, self.tasks_set_.names, routing=routing,
                         modules=[f"module_{j}" for j in range(routing.shape[1])],
                         learned=True, meta=meta)
