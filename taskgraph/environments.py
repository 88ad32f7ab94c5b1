r"""MT-CRL's invariance on task → module routing as one component: environments from the
training data, each batch's environment assignment, the penalty with its dummies, the weight
schedule, and the record of how often the penalty acted.

A learner holds a :class:`RoutingInvariance` (``mtcrl`` and ``causal_graph`` do) and, per
batch: ``weight(step)`` gives :math:`\lambda`; ``assignment(batch)`` the one-hot membership,
the weighted assignment and the ``valid`` mask of the (environment, task) pairs with
``min_env_rows`` effective rows; ``dummy_gates`` / ``dummy_shift`` put the IRMv1 dummies on the
gates and the head outputs; the penalty is :class:`~taskgraph.regularizers.RouterInvariancePenalty`
(``penalty``); ``renormalize`` divides the loss by :math:`\lambda` when some pair counted.
docs/mtcrl.md explains the choices.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from taskgraph.data import MultiTaskData
from taskgraph.exceptions import ValidationError
from taskgraph.regularizers import (
    LabelEnvironments,
    RouterInvariancePenalty,
    balance_weights,
    class_balance_table,
    env_assignment,
    split_halves,
    warn_single_environment,
)
from taskgraph.tasks import TaskSet

__all__ = ["RoutingInvariance", "check_nonnegative", "mean_task_loss"]

ENV_MODES = ("auto", "given", "labels", "both")


def check_nonnegative(owner: Any, names: tuple[str, ...]) -> None:
    """Each attribute of ``owner`` in ``names`` is a finite number >= 0 and ``warmup_steps`` an
    integer >= 0 (the message names the argument)."""
    for name in names:
        value = getattr(owner, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                np.isfinite(value) and value >= 0):
            raise ValidationError(f"{name}: expected a finite number >= 0, got {value!r}")
    steps = owner.warmup_steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValidationError(f"warmup_steps: expected an integer >= 0, got {steps!r}")


def mean_task_loss(per: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum over tasks of the mean loss over observed labels, from per-example losses."""
    count = (~torch.isnan(y)).sum(dim=0).clamp_min(1)
    return (per.sum(dim=0) / count).sum()


class RoutingInvariance:
    """Environments, schedule and penalty of MT-CRL's routing invariance.

    Args:
        tasks (TaskSet): the tasks.
        invariance, warmup_invariance (float): :math:`\\lambda` after and during the warm-up.
        warmup_steps (int): training steps of the warm-up.
        environments (str): ``"auto"``, ``"given"``, ``"labels"`` or ``"both"``.
        rebalance (bool, optional): class-balance weights within environments (default: on
            unless the environments are the given ones only).
        max_envs (int): most label strata per task.
        kind (str): the penalty (``"irmv1"``, ... of
            :class:`~taskgraph.regularizers.RouterInvariancePenalty`).
        unbiased (bool): IRMv1's unbiased two-halves estimate.
        min_env_rows (float): least effective rows of an (environment, task) pair in a batch.
    """

    def __init__(self, tasks: TaskSet, *, invariance: float, warmup_invariance: float,
                 warmup_steps: int, environments: str, rebalance: bool | None, max_envs: int,
                 kind: str = "irmv1", unbiased: bool = False, min_env_rows: float = 16.0
                 ) -> None:
        self.tasks = tasks
        self.invariance, self.warmup_invariance = float(invariance), float(warmup_invariance)
        self.warmup_steps = int(warmup_steps)
        self.environments, self.rebalance = environments, rebalance
        self.max_envs = int(max_envs)
        self.penalty = RouterInvariancePenalty(kind, split=bool(unbiased) and kind == "irmv1",
                                               min_rows=float(min_env_rows))
        self.envs: dict[str, Any] | None = None
        self.valid_share: torch.Tensor | None = None
        self.max_share: torch.Tensor | None = None
        self._idle_checked = False

    @classmethod
    def from_learner(cls, learner: Any, kind: str) -> RoutingInvariance:
        """Built from a learner's arguments of the same names (``invariance``,
        ``warmup_invariance``, ``warmup_steps``, ``environments``, ``rebalance``, ``max_envs``,
        ``unbiased_invariance``, ``min_env_rows``)."""
        return cls(learner.tasks_set_, invariance=float(learner.invariance),
                   warmup_invariance=float(learner.warmup_invariance),
                   warmup_steps=int(learner.warmup_steps), environments=learner.environments,
                   rebalance=learner.rebalance, max_envs=int(learner.max_envs), kind=kind,
                   unbiased=bool(learner.unbiased_invariance),
                   min_env_rows=float(learner.min_env_rows))

    # ------------------------------------------------------------------ environments
    @property
    def active(self) -> bool:
        """Whether environments were set up (the penalty can act)."""
        return self.envs is not None

    def setup(self, train: MultiTaskData) -> None:
        """Environment tables from the training data; none (penalty off, warned) when the data
        have fewer than two environments of the chosen kind."""
        self.envs = None
        if self.invariance == 0 and self.warmup_invariance == 0:
            return
        n_classes = [task.n_states for task in self.tasks]
        labels = LabelEnvironments(n_classes, max_envs=self.max_envs)
        has_given = train.n_envs >= 2
        has_labels = bool(labels.active.any())
        mode = self.environments
        if mode == "auto":
            mode = ("both" if has_given and has_labels else "given" if has_given else "labels")
        if mode in ("given", "both") and not has_given:
            warn_single_environment(
                "the training data has " + ("no `env`" if train.env is None else
                                            "a single environment") + f" (environments={mode!r})")
            return
        if mode in ("labels", "both") and not has_labels:
            warn_single_environment(
                "label environments need at least two classification tasks "
                f"(environments={mode!r})")
            return
        n_given = int(train.env.max()) + 1 if has_given else 1
        rebalance = (mode != "given") if self.rebalance is None else bool(self.rebalance)
        envs = {"mode": mode, "labels": labels, "n_given": n_given,
                "n_envs": n_given * (labels.n_envs if mode != "given" else 1)}
        codes = self.codes(envs, train.y, train.env)
        envs["table"] = class_balance_table(codes, train.y, n_classes, envs["n_envs"],
                                            rebalance=rebalance)
        envs["rows"] = balance_weights(envs["table"], codes, train.y)
        envs["source"] = train.uid       # the row tables hold for batches of this data only
        if int((envs["table"].sum(-1) > 0).sum(-1).max()) < 2:
            warn_single_environment(
                f"no task has data in two environments (environments={mode!r})")
            return
        self.envs = envs

    @staticmethod
    def codes(envs: dict[str, Any], y: torch.Tensor, env: torch.Tensor | None) -> torch.Tensor:
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

    def batch_envs(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(env [B, T], weight [B, T])`` of a batch: looked up by ``batch.index`` (rows of the
        training data given to :meth:`setup`, as the Trainer yields them) in tables computed
        once, so a step costs one gather; recomputed from the batch when it comes from any
        other data set (``batch.source``)."""
        envs = self.envs
        assert envs is not None
        idx = getattr(batch, "index", None)
        rows_env, rows_w = envs["rows"]
        if idx is not None and getattr(batch, "source", -1) == envs.get("source"):
            idx = idx.to(rows_env.device)
            dev = batch.y.device
            return rows_env[idx].to(dev), rows_w[idx].to(dev)
        codes = self.codes(envs, batch.y, batch.env)
        return balance_weights(envs["table"], codes, batch.y)

    # ------------------------------------------------------------------ per batch
    def weight(self, step: int) -> float:
        """:math:`\\lambda` at a training step (0 when no environments were set up)."""
        if self.envs is None:
            return 0.0
        return self.warmup_invariance if step < self.warmup_steps else self.invariance

    def assignment(self, batch: Any, dtype: torch.dtype
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(member, assign, valid)`` of a batch: one-hot environment membership and weighted
        assignment ``[B, T, E]`` (``[B, T, 2E]``, two halves per environment, with the unbiased
        estimate), and the penalty's ``valid`` mask ``[E, T]``. Records the share of the
        (environment, task) pairs with data that count (``valid_share``, a scalar tensor) and
        its running maximum (``max_share``), both on the device (no host synchronisation)."""
        env, weight = self.batch_envs(batch)
        # ids come from the tables built in setup: no per-step range check (a host sync)
        member = env_assignment(env, int(self.envs["n_envs"]), check=False).to(dtype)
        assign = member * weight[..., None]
        if self.penalty.split:
            member, assign = split_halves(member, assign)
        valid = self.penalty.valid(assign)
        with torch.no_grad():
            present = assign.sum(dim=0).T > 0
            share = (valid & present).sum() / present.sum().clamp_min(1)
            self.valid_share = share
            self.max_share = share if self.max_share is None else torch.maximum(
                self.max_share, share)
        return member, assign, valid

    def dummy_gates(self, member: torch.Tensor, gates: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gates [B, T, K], delta [E, T, K])``: the gates :math:`g \\odot (1 + A\\delta)` with
        zero dummies :math:`\\delta` (equal to ``gates`` in value; the derivative of a risk by
        :math:`\\delta_{etk}` is IRMv1's dummy gradient)."""
        t, k = gates.shape
        delta = self.penalty.shift(member.shape[-1], t, k, like=gates)
        return gates * (1.0 + torch.einsum("bte,etk->btk", member, delta)), delta

    def dummy_shift(self, member: torch.Tensor, out: torch.Tensor, col_mask: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(out', shift [E, T, C])``: head outputs plus zero per-environment intercept
        dummies on the columns each task has."""
        t = out.shape[1]
        shift = self.penalty.shift(member.shape[-1], t, out.shape[-1], like=out)
        return out + torch.einsum("bte,etc->btc", member, shift) * col_mask, shift

    def dummy_pass(self, member: torch.Tensor, assign: torch.Tensor, valid: torch.Tensor,
                   gates: torch.Tensor, forward: Callable[[torch.Tensor], torch.Tensor],
                   col_mask: torch.Tensor, y: torch.Tensor, layout: Any,
                   intercept: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``(per-example losses [B, T], penalty)`` from one pass of ``forward`` (gates
        ``[B, T, K]`` → head outputs ``[B, T, C]``) with the gate dummies
        (:meth:`dummy_gates`) and, with ``intercept``, the intercept dummies
        (:meth:`dummy_shift`); the penalty's gradients come from a second backward pass, so any
        read-out works (message passing included). At the neutral dummies the pass equals the
        plain forward pass, so its losses serve as the task loss."""
        ex_gates, delta = self.dummy_gates(member, gates)
        out = forward(ex_gates)
        dummies = [delta]
        if intercept:
            out, shift = self.dummy_shift(member, out, col_mask)
            dummies.append(shift)
        per = layout.per_example_loss(out, y)
        return per, self.penalty(per, assign, dummies, valid=valid).sum()

    def closed_form_pass(self, net: Any, z: torch.Tensor, gates: torch.Tensor, y: torch.Tensor,
                         layout: Any, assign: torch.Tensor, valid: torch.Tensor,
                         intercept: bool = True, through_encoder: bool = True
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(per-example losses [B, T], penalty)`` without message passing, with the dummy
        gradients in closed form (no second backward pass through the read-out of
        :class:`~taskgraph.nn.routed_net.RoutedTaskNet` ``net``):

        .. math::
            \frac{\partial R_t^e}{\partial w_{etk}} = g_{tk} \sum_b \tilde a_{bte}
            \sum_c \ell'_{btc} P_{btkc}, \qquad
            \frac{\partial R_t^e}{\partial u_{etc}} = \sum_b \tilde a_{bte}\, \ell'_{btc}

        with :math:`\ell' = \partial \ell / \partial o` (autograd through the loss only),
        :math:`P` the module contributions and :math:`\tilde a` the assignment normalised per
        (task, environment). Equal to :meth:`dummy_pass` (tested). ``through_encoder=False``
        computes the penalty on ``z.detach()``."""
        p = net.contributions(z)
        out = net.out_from_contributions(p, gates)
        per = layout.per_example_loss(out, y)
        if not through_encoder:
            p = net.contributions(z.detach())
            out = net.out_from_contributions(p, gates)
        per_p = per if through_encoder else layout.per_example_loss(out, y)
        (dl,) = torch.autograd.grad(per_p.sum(), out, create_graph=True)  # [B, T, C]
        norm = assign / assign.sum(dim=0).clamp_min(1e-12)
        grad_w = gates[None] * torch.einsum("bte,btk->etk", norm,
                                            (p * dl[:, :, None, :]).sum(-1))
        grads = [grad_w]
        if intercept:
            grads.append(torch.einsum("bte,btc->etc", norm, dl) * net.heads.col_mask)
        return per, self.penalty.from_gradients(torch.cat(grads, dim=-1), valid).sum()

    def renormalize(self, loss: torch.Tensor, lam: float) -> torch.Tensor:
        """``loss / λ`` when some (environment, task) pair counted in this batch (an idle
        penalty must not shrink the task gradients), decided on the device."""
        if lam <= 1.0 or self.valid_share is None:
            return loss
        return torch.where(self.valid_share > 0, loss / lam, loss)

    # ------------------------------------------------------------------ per epoch
    def warn_if_idle(self, epoch: int, min_env_rows: float, stacklevel: int = 3) -> None:
        """After the first epoch in which the penalty was on: warn once when no environment of
        any batch had ``min_env_rows`` effective rows (the penalty then did nothing)."""
        if self.max_share is None or self._idle_checked:
            return
        self._idle_checked = True
        if float(self.max_share) == 0.0:
            warnings.warn(
                f"min_env_rows: no environment had {min_env_rows:g} effective rows in any "
                f"batch of epoch {epoch}, so the invariance penalty did not act; raise "
                "batch_size, or lower max_envs or min_env_rows (docs/mtcrl.md)", UserWarning,
                stacklevel=stacklevel)
