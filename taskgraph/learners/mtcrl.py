r"""MT-CRL (Hu et al., NeurIPS 2022): disentangled modules, sparse task → module routing and an
invariance penalty on the routing across environments, as node-level parts of one model."""

from __future__ import annotations

import builtins
import warnings
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from taskgraph.data import MultiTaskData
from taskgraph.exceptions import ValidationError
from taskgraph.graph import TaskGraph
from taskgraph.learners.base import BaseLearner, register
from taskgraph.nn.heads import TaskHeads
from taskgraph.nn.routing import GATE_KINDS, READOUTS, SPARSITY_KINDS, TaskModuleRouter
from taskgraph.regularizers import (
    DECORRELATION_KINDS,
    INVARIANCE_KINDS,
    LabelEnvironments,
    RouterInvariancePenalty,
    balance_weights,
    class_balance_table,
    decorrelation,
    env_assignment,
    split_halves,
    warn_single_environment,
)
from taskgraph.tasks import Task, TaskSet

__all__ = ["MTCRL", "InvariantEnvironments"]

_ENV_MODES = ("auto", "given", "labels", "both")


class _MTCRLNet(nn.Module):
    """encoder → z[B, K, m] → router → s[B, T, d] → (message passing) → heads."""

    def __init__(self, encoder: nn.Module, router: TaskModuleRouter, heads: TaskHeads,
                 mp: nn.Module | None, edge_index: torch.Tensor,
                 edge_weight: torch.Tensor) -> None:
        super().__init__()
        self.encoder, self.router, self.heads, self.mp = encoder, router, heads, mp
        self.register_buffer("edge_index", edge_index)
        self.register_buffer("edge_weight", edge_weight)
        self.register_buffer("no_edges", torch.zeros(2, 0, dtype=torch.long))

    @property
    def fused(self) -> bool:
        """Without message passing, concat read-out and linear heads fold into one contraction
        (no ``[B, T, K·m]`` state tensor is built)."""
        return self.mp is None and self.router.readout == "concat"

    def _fused_heads(self, z: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        r"""``heads(router(z, gates))`` for the concat read-out, computed as
        :math:`o_{btc} = \sum_{k} g_{btk} \sum_m z_{bkm} W_{t,km,c} + b_{tc}`."""
        h = self.heads
        t, _, c = h.weight.shape
        w = h.weight.view(t, z.shape[1], z.shape[2], c)
        if gates.dim() == 2:
            out = torch.einsum("bkm,tkmc->btc", z, w * gates[:, :, None, None])
        else:
            out = torch.einsum("btk,btkc->btc", gates, torch.einsum("bkm,tkmc->btkc", z, w))
        return (out + h.bias) * h.col_mask

    def contributions(self, z: torch.Tensor) -> torch.Tensor:
        r"""Ungated head contribution of every module to every task output, without message
        passing: :math:`P_{btkc} = \sum_m z_{bkm} W_{t,(k,m),c}` (concat) or
        :math:`\sum_m z_{bkm} W_{t,m,c}` (sum), so that
        ``heads(router(z, g)) = Σ_k g[..., k] P[..., k, :] + bias`` (times the column mask).
        ``[B, T, K, C_max]``."""
        h = self.heads
        t, _, c = h.weight.shape
        if self.router.readout == "concat":
            w = h.weight.view(t, z.shape[1], z.shape[2], c)
            return torch.einsum("bkm,tkmc->btkc", z, w)
        return torch.einsum("bkm,tmc->btkc", z, h.weight)

    def out_from_contributions(self, p: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """Head outputs ``[B, T, C_max]`` from :meth:`contributions` and gates ``[T, K]``."""
        return (torch.einsum("tk,btkc->btc", gates, p) + self.heads.bias) * self.heads.col_mask

    def head_out(self, z: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return self._fused_heads(z, gates)
        s = self.router(z, gates)
        if self.mp is not None:
            s = self.mp(s, self.edge_index, self.edge_weight)
        return self.heads(s)

    def penalty_out(self, z: torch.Tensor, gates: torch.Tensor,
                    plain: torch.Tensor) -> torch.Tensor:
        """Head outputs where task ``t`` reads its *own* state through ``gates`` (per example,
        carrying the dummy multipliers) and its neighbours' messages through the ``plain``
        gates, so the dummy of task ``t`` only reaches task ``t``'s risk: exact per-task
        IRMv1 gradients under message passing (``s' = W_self s + Σ w W_msg s_i``)."""
        if self.mp is None:
            return self.head_out(z, gates)
        own = self.mp(self.router(z, gates), self.no_edges)
        return self.heads(own + self.mp.messages(self.router(z, plain), self.edge_index,
                                                 self.edge_weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_out(self.encoder(x), self.router.gates())


class InvariantEnvironments:
    """Environment tables and the invariance weight schedule shared by the learners that put
    MT-CRL's invariance penalty on task → module routing (``mtcrl``, ``causal_graph``).

    Reads the learner attributes ``invariance``, ``warmup_invariance``, ``warmup_steps``,
    ``environments``, ``rebalance``, ``max_envs`` and ``tasks_set_``; :meth:`_setup_envs` is
    called once in ``_build`` and its result stored in ``self._envs``.
    """

    def _check_invariance_params(self, names: tuple[str, ...]) -> None:
        """Each attribute in ``names`` is a finite number >= 0; ``warmup_steps`` an integer
        >= 0 (the message names the argument)."""
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    np.isfinite(value) and value >= 0):
                raise ValidationError(f"{name}: expected a finite number >= 0, got {value!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or (
                self.warmup_steps < 0):
            raise ValidationError(
                f"warmup_steps: expected an integer >= 0, got {self.warmup_steps!r}")

    def _setup_envs(self, train: MultiTaskData) -> dict[str, Any] | None:
        """Environment tables from the training data, or ``None`` (penalty off, warned)."""
        if float(self.invariance) == 0 and float(self.warmup_invariance) == 0:
            return None
        n_classes = [task.n_states for task in self.tasks_set_]
        labels = LabelEnvironments(n_classes, max_envs=int(self.max_envs))
        has_given = train.n_envs >= 2
        has_labels = bool(labels.active.any())
        mode = self.environments
        if mode == "auto":
            mode = ("both" if has_given and has_labels else "given" if has_given else "labels")
        if mode in ("given", "both") and not has_given:
            warn_single_environment(
                "the training data has " + ("no `env`" if train.env is None else
                                            "a single environment") + f" (environments={mode!r})")
            return None
        if mode in ("labels", "both") and not has_labels:
            warn_single_environment(
                "label environments need at least two classification tasks "
                f"(environments={mode!r})")
            return None
        n_given = int(train.env.max()) + 1 if has_given else 1
        rebalance = (mode != "given") if self.rebalance is None else bool(self.rebalance)
        envs = {"mode": mode, "labels": labels, "n_given": n_given,
                "n_envs": n_given * (labels.n_envs if mode != "given" else 1)}
        codes = self._env_codes(envs, train.y, train.env)
        envs["table"] = class_balance_table(codes, train.y, n_classes, envs["n_envs"],
                                            rebalance=rebalance)
        envs["rows"] = balance_weights(envs["table"], codes, train.y)
        envs["source"] = train.uid       # the row tables hold for batches of this data only
        if int((envs["table"].sum(-1) > 0).sum(-1).max()) < 2:
            warn_single_environment(
                f"no task has data in two environments (environments={mode!r})")
            return None
        return envs

    @staticmethod
    def _env_codes(envs: dict[str, Any], y: torch.Tensor,
                   env: torch.Tensor | None) -> torch.Tensor:
        """Environment of every (example, task) ``[N, T]``; ``-1`` = excluded."""
        t = y.shape[1]
        if envs["mode"] == "given":
            assert env is not None
            return env[:, None].expand(-1, t)
        labels: LabelEnvironments = envs["labels"]
        code = labels.codes(y)
        if envs["mode"] == "labels":
            return code
        assert env is not None
        # given × label strata; tasks without label strata (regression) keep the given env only
        active = labels.active.to(y.device)[None, :]
        given = env[:, None].expand(-1, t) * labels.n_envs
        return torch.where(active, torch.where(code >= 0, given + code, -1), given)

    # ------------------------------------------------------------------ objective
    def _batch_envs(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(env [B, T], weight [B, T])`` of a batch: looked up by ``batch.index`` (rows of the
        training data passed to ``fit``, as the Trainer yields them) in tables computed once in
        ``fit``, so a step costs one gather; recomputed from the batch when it comes from any
        other data set (``batch.source``)."""
        envs = self._envs
        assert envs is not None
        idx = getattr(batch, "index", None)
        rows_env, rows_w = envs["rows"]
        if idx is not None and getattr(batch, "source", -1) == envs.get("source"):
            idx = idx.to(rows_env.device)
            dev = batch.y.device
            return rows_env[idx].to(dev), rows_w[idx].to(dev)
        codes = self._env_codes(envs, batch.y, batch.env)
        return balance_weights(envs["table"], codes, batch.y)

    def _batch_assignment(self, batch: Any, dtype: torch.dtype
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(member, assign, valid)`` of a batch: one-hot environment membership and weighted
        assignment ``[B, T, E]`` (``[B, T, 2E]``, two halves per environment, under
        ``unbiased_invariance``), and the penalty's ``valid`` mask (:meth:`_counted`)."""
        env, weight = self._batch_envs(batch)
        # ids come from the tables built in fit: no per-step range check (a host sync)
        member = env_assignment(env, int(self._envs["n_envs"]), check=False).to(dtype)
        assign = member * weight[..., None]
        if self._penalty.split:
            member, assign = split_halves(member, assign)
        return member, assign, self._counted(assign)

    def _counted(self, assign: torch.Tensor) -> torch.Tensor:
        """The penalty's ``valid`` mask ``[E, T]`` of a batch's assignment; records the share
        of the (environment, task) pairs with data that count (``self._valid_share``, a scalar
        tensor logged as ``invariance_envs``) and its running maximum (``self._max_share``),
        both kept on the device (no host synchronisation per step)."""
        valid = self._penalty.valid(assign)
        with torch.no_grad():
            present = assign.sum(dim=0).T > 0
            share = (valid & present).sum() / present.sum().clamp_min(1)
            self._valid_share = share
            prev = getattr(self, "_max_share", None)
            self._max_share = share if prev is None else torch.maximum(prev, share)
        return valid

    @staticmethod
    def _task_loss(per: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum over tasks of the mean loss over observed labels, from per-example losses."""
        count = (~torch.isnan(y)).sum(dim=0).clamp_min(1)
        return (per.sum(dim=0) / count).sum()

    def _lambda(self, step: int) -> float:
        return float(self.warmup_invariance if step < int(self.warmup_steps) else self.invariance)



@register("mtcrl")
class MTCRL(InvariantEnvironments, BaseLearner):
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
        invariance_kind (str): ``"irmv1"``, ``"grad_var"`` or ``"vrex"``.
            (default: :obj:`"irmv1"`)
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
            log is the share of (environment, task) pairs that counted. (default: :obj:`16`)
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
        environments: str = "auto",
        rebalance: bool | None = None,
        max_envs: int = 16,
        penalty_through_encoder: bool = True,
        graph: TaskGraph | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(tasks, **kwargs)
        self.n_modules = n_modules
        self.module_dim = module_dim
        self.module_mode = module_mode
        self.gate = gate
        self.readout = readout
        self.gate_init = gate_init
        self.prune_threshold = prune_threshold
        self.sparsity = sparsity
        self.sparsity_kind = sparsity_kind
        self.decorrelation = decorrelation
        self.decorrelation_kind = decorrelation_kind
        self.decorrelation_units = decorrelation_units
        self.invariance = invariance
        self.invariance_kind = invariance_kind
        self.warmup_steps = warmup_steps
        self.warmup_invariance = warmup_invariance
        self.renormalize = renormalize
        self.invariance_intercept = invariance_intercept
        self.unbiased_invariance = unbiased_invariance
        self.min_env_rows = min_env_rows
        self.environments = environments
        self.rebalance = rebalance
        self.max_envs = max_envs
        self.penalty_through_encoder = penalty_through_encoder
        self.graph = graph

    # ------------------------------------------------------------------ checks
    def _check_params(self) -> None:
        choices = {
            "module_mode": (self.module_mode, ("split", "separate")),
            "gate": (self.gate, GATE_KINDS),
            "readout": (self.readout, READOUTS),
            "sparsity_kind": (self.sparsity_kind, SPARSITY_KINDS),
            "decorrelation_kind": (self.decorrelation_kind, DECORRELATION_KINDS),
            "invariance_kind": (self.invariance_kind, INVARIANCE_KINDS),
            "environments": (self.environments, _ENV_MODES),
        }
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValidationError(f"{name}: expected one of {allowed}, got {value!r}")
        self._check_invariance_params(("sparsity", "decorrelation", "invariance",
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
    def _make_modular(self, feature_shape: tuple[int, ...]) -> nn.Module:
        from encoders import ModularEncoder

        if isinstance(self.encoder, ModularEncoder):
            return self._make_encoder(feature_shape)
        backbone = self._make_encoder(feature_shape)
        k = int(self.n_modules)
        d = int(backbone.out_dim)
        if self.module_mode == "split":
            if self.module_dim is not None and int(self.module_dim) * k != d:
                raise ValidationError(
                    f"module_dim: module_mode='split' needs n_modules * module_dim == the "
                    f"backbone width {d}, got {k} * {self.module_dim}")
            if d % k:
                raise ValidationError(
                    f"n_modules: module_mode='split' needs the backbone width {d} to be a "
                    f"multiple of n_modules={k}")
            return ModularEncoder(backbone, k=k, module_dim=d // k, mode="split")
        m = int(self.module_dim) if self.module_dim is not None else max(1, int(self.hidden) // k)
        return ModularEncoder(backbone, k=k, module_dim=m, mode="separate")

    def _build(self, feature_shape: tuple[int, ...], train: MultiTaskData | None) -> nn.Module:
        from taskgraph.nn.message_passing import TaskMessagePassing

        self._check_params()
        encoder = self._make_modular(feature_shape)
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
        self._max_share: torch.Tensor | None = None
        self._idle_checked = False
        self._envs: dict[str, Any] | None = None
        if train is not None:
            self._envs = self._setup_envs(train)
        self._penalty = RouterInvariancePenalty(
            self.invariance_kind, split=bool(self.unbiased_invariance)
            and self.invariance_kind == "irmv1", min_rows=float(self.min_env_rows))
        return _MTCRLNet(encoder, router, heads, mp, edge_index, edge_weight)

    def _loss(self, batch: Any, epoch: int) -> tuple[torch.Tensor, dict[str, Any]]:
        net: _MTCRLNet = self.model_
        step = self._step
        if net.training:
            self._step += 1
        z = net.encoder(batch.x)
        gates = net.router.gates()
        lam = self._lambda(step) if self._envs is not None else 0.0
        if lam > 0:
            task, pen = self._task_and_invariance(net, batch, z, gates)
        else:
            per = self.layout_.per_example_loss(net.head_out(z, gates), batch.y)
            task, pen = self._task_loss(per, batch.y), None
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
            logs["invariance"] = pen.detach()
            logs["invariance_envs"] = self._valid_share
            logs["lambda_inv"] = lam
            # renormalise only when some environment counted: an idle penalty (no environment
            # with min_env_rows) must not shrink the task gradients by 1/λ
            if lam > 1.0 and self.renormalize:
                loss = torch.where(self._valid_share > 0, loss / lam, loss)
        return loss, logs

    def _task_and_invariance(self, net: _MTCRLNet, batch: Any, z: torch.Tensor,
                             gates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Task loss and invariance penalty from one read-out pass: with the dummies at their
        neutral values (multipliers 1, shifts 0) the penalty pass *is* the forward pass, so the
        task loss reuses it (unless the penalty is kept off the encoder)."""
        y = batch.y
        member, assign, valid = self._batch_assignment(batch, gates.dtype)
        if not bool(valid.any()):
            # idle penalty (no environment with min_env_rows in this batch): its value and
            # gradient are exactly 0, so skip the dummy pass
            per = self.layout_.per_example_loss(net.head_out(z, gates), y)
            return self._task_loss(per, y), per.new_zeros(())
        if not self._penalty.needs_dummy:
            per = self.layout_.per_example_loss(net.head_out(z, gates), y)
            per_p = per if self.penalty_through_encoder else self.layout_.per_example_loss(
                net.head_out(z.detach(), gates), y)
            return self._task_loss(per, y), self._penalty(per_p, assign, None,
                                                          valid=valid).sum()
        if net.mp is None:
            return self._closed_form_invariance(net, z, gates, y, assign, valid)
        return self._dummy_invariance(net, z, gates, y, member, assign, valid)

    def _dummy_invariance(self, net: _MTCRLNet, z: torch.Tensor, gates: torch.Tensor,
                          y: torch.Tensor, member: torch.Tensor, assign: torch.Tensor,
                          valid: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """Task loss and IRMv1 / gradient-variance penalty through dummies and a second
        backward pass (any read-out, message passing included)."""
        n_envs = member.shape[-1]
        # dummies as zero offsets: gates g ⊙ (1 + A δ), intercepts + A u (A: one-hot of env);
        # equal to the plain forward in value, and ∂R_t^e/∂δ_et = ∂R_t^e/∂w_et at w = 1
        t, k = gates.shape
        delta = self._penalty.shift(n_envs, t, k, like=gates)
        ex_gates = gates * (1.0 + torch.einsum("bte,etk->btk", member, delta))
        zp = z if self.penalty_through_encoder else z.detach()
        out = net.penalty_out(zp, ex_gates, gates)
        dummies = [delta]
        if self.invariance_intercept:
            shift = self._penalty.shift(n_envs, t, out.shape[-1], like=out)
            out = out + torch.einsum("bte,etc->btc", member, shift) * net.heads.col_mask
            dummies.append(shift)
        per_p = self.layout_.per_example_loss(out, y)
        pen = self._penalty(per_p, assign, dummies, valid=valid).sum()
        if self.penalty_through_encoder:
            return self._task_loss(per_p, y), pen
        per = self.layout_.per_example_loss(net.head_out(z, gates), y)
        return self._task_loss(per, y), pen

    def _closed_form_invariance(self, net: _MTCRLNet, z: torch.Tensor, gates: torch.Tensor,
                                y: torch.Tensor, assign: torch.Tensor,
                                valid: torch.Tensor | None = None
                                ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Task loss and IRMv1 / gradient-variance penalty without message passing, with the
        dummy gradients in closed form (no second backward pass through the read-out):

        .. math::
            \frac{\partial R_t^e}{\partial w_{etk}} = g_{tk} \sum_b \tilde a_{bte}
            \sum_c \ell'_{btc} P_{btkc}, \qquad
            \frac{\partial R_t^e}{\partial u_{etc}} = \sum_b \tilde a_{bte}\, \ell'_{btc}

        with :math:`\ell' = \partial \ell / \partial o` (autograd through the loss only),
        :math:`P` the module contributions and :math:`\tilde a` the assignment normalised per
        (task, environment). Equal to the dummy formulation (tested)."""
        p = net.contributions(z)
        out = net.out_from_contributions(p, gates)
        per = self.layout_.per_example_loss(out, y)
        task = self._task_loss(per, y)
        if not self.penalty_through_encoder:
            p = net.contributions(z.detach())
            out = net.out_from_contributions(p, gates)
            per = self.layout_.per_example_loss(out, y)
        (dl,) = torch.autograd.grad(per.sum(), out, create_graph=True)  # [B, T, C]
        mass = assign.sum(dim=0)  # [T, E]
        norm = assign / mass.clamp_min(1e-12)
        grad_w = gates[None] * torch.einsum("bte,btk->etk", norm,
                                            (p * dl[:, :, None, :]).sum(-1))
        grads = [grad_w]
        if self.invariance_intercept:
            grads.append(torch.einsum("bte,btc->etc", norm, dl) * net.heads.col_mask)
        if valid is None:
            valid = self._penalty.valid(assign)
        pen = self._penalty.from_gradients(torch.cat(grads, dim=-1), valid)
        return task, pen.sum()

    # ------------------------------------------------------------------ hooks
    def _warn_if_penalty_idle(self, epoch: int) -> None:
        """After the first epoch in which the penalty was on: warn once when no environment of
        any batch had ``min_env_rows`` effective rows (the penalty then did nothing)."""
        if getattr(self, "_max_share", None) is None or getattr(self, "_idle_checked", False):
            return
        self._idle_checked = True
        if float(self._max_share) == 0.0:
            warnings.warn(
                f"min_env_rows: no environment had {self.min_env_rows:g} effective rows in any "
                f"batch of epoch {epoch}, so the invariance penalty did not act; raise "
                "batch_size, or lower max_envs or min_env_rows (docs/mtcrl.md)", UserWarning,
                stacklevel=2)

    @torch.no_grad()
    def _on_epoch_end(self, epoch: int, train: MultiTaskData,
                      optimizer: torch.optim.Optimizer | None = None) -> dict[str, float]:
        self._warn_if_penalty_idle(epoch)
        g = self.model_.router.routing()
        t, k = g.shape
        if t * k > 64:
            return {"gate_mean": float(g.mean())}
        names = self.tasks_set_.names
        return {f"gate/{names[i]}/module_{j}": float(g[i, j]) for i in range(t) for j in range(k)}

    def _train_state(self) -> dict[str, Any]:
        return {"step": int(getattr(self, "_step", 0))}

    def _load_train_state(self, state: dict[str, Any]) -> None:
        self._step = int(state.get("step", 0))

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
            "invariance": self.invariance_kind if self._envs is not None else "off",
            "environments": self._envs["mode"] if self._envs is not None else "none",
            "given_graph": self.graph is not None,
        }
        return TaskGraph(adjacency, self.tasks_set_.names, routing=routing,
                         modules=[f"module_{j}" for j in range(routing.shape[1])],
                         learned=True, meta=meta)
