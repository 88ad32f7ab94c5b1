r"""MT-CRL's invariance on task → module routing as one component: environments from the
training data, each batch's environment assignment, the penalty with its dummies, the weight
schedule, and the record of how often the penalty acted.

A learner holds a :class:`RoutingInvariance` (``mtcrl`` and ``causal_graph`` do) and, per
batch: ``weight(step)`` gives :math:`\lambda`; ``assignment(batch)`` the one-hot membership,
the weighted assignment and the ``valid`` mask of the (environment, task) pairs with
``min_env_rows`` effective rows; ``dummy_gates`` / ``dummy_shift`` put the IRMv1 dummies on the
gates and the head outputs; the penalty is :class:`~taskgraph.regularizers.RouterInvariancePenalty`
(``penalty``); ``renormalize`` divides the loss by :math:`\lambda` when some pair counted;
``logs`` gives the batch's activity record. Options: a :class:`GradientMemory` (IRMv1 over
several batches) and balanced sampling of the training rows (``sampler``, asked for by the
Trainer through the learner's ``_train_sampler``). docs/mtcrl.md explains the choices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler, WeightedRandomSampler

from taskgraph.data import MultiTaskData
from taskgraph.exceptions import ValidationError
from taskgraph.regularizers import (
    CONDITIONAL_KINDS,
    LabelEnvironments,
    RouterInvariancePenalty,
    balance_weights,
    class_balance_table,
    conditional_independence,
    dummy_gradients,
    env_assignment,
    env_risks,
    split_halves,
)
from taskgraph.tasks import TaskSet

__all__ = ["RoutingInvariance", "GradientMemory", "check_nonnegative", "mean_task_loss"]

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


def _silence(inv: RoutingInvariance) -> str:
    """The switches that turn the penalty (and balanced sampling) off."""
    parts = ["invariance=0"]
    if inv.warmup_invariance > 0:
        parts.append("warmup_invariance=0")
    if inv.sampling > 0:
        parts.append("balanced_sampling=0")
    return "set " + " and ".join(parts)


def _off(cause: str, remedy: str) -> str:
    return f"the invariance penalty is disabled: {cause}. Remedy: {remedy}"


def _mode_works(inv: RoutingInvariance, train: MultiTaskData, mode: str,
                labels: LabelEnvironments) -> bool:
    """Whether ``environments=mode`` gives some task data in two environments on ``train``."""
    has_given = train.n_envs >= 2
    if (mode in ("given", "both") and not has_given) or (
            mode in ("labels", "both") and not bool(labels.active.any())):
        return False
    n_given = int(train.env.max()) + 1 if has_given else 1
    envs = {"mode": mode, "labels": labels, "n_given": n_given,
            "n_envs": n_given * (labels.n_envs if mode != "given" else 1)}
    codes = inv.codes(envs, train.y, train.env)
    table = class_balance_table(codes, train.y, [task.n_states for task in inv.tasks],
                                envs["n_envs"], rebalance=mode != "given")
    return int((table.sum(-1) > 0).sum(-1).max()) >= 2


def _remedy_given(inv: RoutingInvariance, train: MultiTaskData,
                  labels: LabelEnvironments) -> str:
    """Remedy when the given environments are missing: label strata if they would act."""
    out = "pass the environments the rows come from, MultiTaskData(..., env=...)"
    if _mode_works(inv, train, "labels", labels):
        out += ("; or environments='labels' (strata of the other tasks' labels, which act "
                "on this data)")
    return out + f"; or {_silence(inv)} to train without it"


def _remedy_labels(train: MultiTaskData) -> str:
    return ("pass the environments the rows come from, MultiTaskData(..., env=...), with "
            "environments='given'" if train.n_envs < 2 else
            "environments='given' (the data's `env`)")


def _no_two_environments(inv: RoutingInvariance, train: MultiTaskData, mode: str,
                         labels: LabelEnvironments) -> tuple[str, str]:
    """``(cause, remedy)`` when environments were built but no task has data (both classes,
    for a classification task) in two of them."""
    silence = f"{_silence(inv)} to train without it"
    given_ok = mode != "given" and _mode_works(inv, train, "given", labels)
    if mode == "given":
        cause = (f"no task has labels in two of the {int(train.env.max()) + 1} given "
                 "environments (a classification task needs both classes in each) "
                 "(environments='given')")
        remedy = ("environments='labels' (strata of the other tasks' labels, which act on this "
                  "data); or " if _mode_works(inv, train, "labels", labels) else "") + silence
        return cause, remedy
    cls = [k for k, task in enumerate(inv.tasks) if task.is_classification]
    obs = ~torch.isnan(train.y[:, cls])
    complete = int(obs.all(dim=1).sum())
    missing = float((~obs).float().mean())
    n = len(train)
    head = (f"label environments stratify each classification task's rows by the joint labels "
            f"of the other {len(cls) - 1} classification tasks, so only rows with all "
            f"{len(cls)} labels observed count")
    if complete == 0:
        cause = (f"{head}, and none of the {n} training rows has them all ({missing:.0%} of "
                 f"these labels are missing) (environments={mode!r})")
    else:
        cause = (f"{head}, and only {complete} of the {n} training rows have them all "
                 f"({missing:.0%} of these labels are missing): too few for any task to show "
                 f"both classes in two strata (environments={mode!r})")
    if given_ok:
        remedy = "environments='given' (the data's `env` alone acts on this data)"
    else:
        remedy = ("pass the environments the rows come from, MultiTaskData(..., env=...), with "
                  "environments='given'")
    if complete > 0 and inv.max_envs > 2:
        remedy += f"; or lower max_envs (now {inv.max_envs}) to merge label strata"
    return cause, f"{remedy}; or {silence}"


class GradientMemory:
    r"""IRMv1 over several batches: decayed running sums of every (environment, task) pair's
    dummy gradients, and a penalty whose gradient pairs the memory with the current batch.

    A batch gives each pair a gradient estimate :math:`\hat G_e = \sum_b a_b \nabla_b /
    \sum_b a_b` from its rows (weights :math:`a`). The memory keeps
    :math:`S_e \leftarrow \gamma S_e + \sum_b a_b \nabla_b` and :math:`M_e \leftarrow \gamma M_e
    + \sum_b a_b` (detached), :math:`\gamma = 1 - 1/\text{window}`, so :math:`\bar G_e = S_e /
    M_e` averages about ``window`` batches. The penalty's gradient is

    .. math::
        2\, \bar G_e^{\text{before}} \cdot \nabla_\theta
        \frac{\sum_{b \in \text{batch}} a_b \nabla_b}{\bar m_e},

    with :math:`\bar m_e` the pair's mean mass per batch: the memory (earlier batches, so
    independent of this batch's sampling noise) times this batch's unbiased estimate of
    :math:`\nabla_\theta G_e`, an estimate of :math:`\nabla_\theta \lVert G_e \rVert^2` without
    the variance term :math:`\operatorname{tr}\Sigma / n` that squaring one small batch's
    gradient adds (docs/mtcrl.md). Its value is :math:`\lVert \bar G_e \rVert^2` after the
    update. A pair counts when the memory holds at least ``min_rows`` effective rows (Kish's
    :math:`(\sum w)^2 / \sum w^2` of the decayed weights) and ``min_mass`` summed weight.

    Args:
        window (float): memory length in batches (> 1).
        min_mass (float): least summed weight of a counted pair. (default: :obj:`2.0`)
        min_rows (float): least effective rows of a counted pair. (default: :obj:`0.0`)
    """

    def __init__(self, window: float, min_mass: float = 2.0, min_rows: float = 0.0) -> None:
        if isinstance(window, bool) or not isinstance(window, (int, float)) or not (
                np.isfinite(window) and window > 1):
            raise ValidationError(f"window: expected a finite number > 1, got {window!r}")
        self.window, self.gamma = float(window), 1.0 - 1.0 / float(window)
        self.min_mass, self.min_rows = float(min_mass), float(min_rows)
        self.reset()

    def reset(self) -> None:
        """Forget every batch."""
        self.sums: torch.Tensor | None = None     # [E, T, D]
        self.mass: torch.Tensor | None = None     # [E, T]
        self.sq: torch.Tensor | None = None       # [E, T], sum of squared decayed weights
        self.count = 0.0                          # decayed number of batches

    def valid(self, like: torch.Tensor) -> torch.Tensor:
        """Pairs ``[E, T]`` (shaped like ``like``) whose memory counts."""
        if self.mass is None or self.mass.shape != like.shape:
            return torch.zeros(like.shape, dtype=torch.bool, device=like.device)
        ess = self.mass.pow(2) / self.sq.clamp_min(1e-30)
        return (self.mass >= self.min_mass) & (ess >= self.min_rows)

    def penalty(self, grads: torch.Tensor, assign: torch.Tensor, valid: torch.Tensor,
                update: bool = True) -> torch.Tensor:
        """Per-task penalty ``[T]`` from this batch's gradients ``grads [E, T, D]`` of the
        weighted mean risks and its assignment ``[B, T, E]`` (weights included); ``valid``
        ``[E, T]`` (from :meth:`valid` before this batch, and present in it); ``update`` adds
        the batch to the memory (training steps)."""
        mass = assign.sum(dim=0).T
        if self.mass is None or self.mass.shape != mass.shape:
            self.sums = grads.new_zeros(grads.shape)
            self.mass, self.sq = mass.new_zeros(mass.shape), mass.new_zeros(mass.shape)
            self.count = 0.0
        assert self.sums is not None and self.sq is not None
        mean = self.sums / self.mass.clamp_min(1e-12)[..., None]
        per_batch = self.mass / max(self.count, 1e-12)
        current = grads * (mass / per_batch.clamp_min(1e-12))[..., None]
        surrogate = 2.0 * (mean * current).sum(dim=-1)                       # [E, T]
        if update:
            with torch.no_grad():
                g = self.gamma
                self.sums = g * self.sums + grads.detach() * mass[..., None]
                self.mass = g * self.mass + mass
                self.sq = g * g * self.sq + assign.detach().pow(2).sum(dim=0).T
                self.count = g * self.count + 1.0
        with torch.no_grad():
            value = (self.sums / self.mass.clamp_min(1e-12)[..., None]).pow(2).sum(dim=-1)
        out = value + surrogate - surrogate.detach()
        return torch.where(valid, out, torch.zeros_like(out)).sum(dim=0)

    def state_dict(self) -> dict[str, Any]:
        """The memory (for checkpoints)."""
        return {"sums": self.sums, "mass": self.mass, "sq": self.sq, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.sums, self.mass, self.sq = state["sums"], state["mass"], state["sq"]
        self.count = float(state["count"])


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
            :class:`~taskgraph.regularizers.RouterInvariancePenalty`), or a conditional
            independence penalty (:func:`~taskgraph.regularizers.conditional_independence`
            of the environments given each task's own label: ``"cind"`` on the task's class
            probabilities (:meth:`output_penalty`), ``"cind_state"`` on its gated modules
            (:meth:`module_penalty`), ``"cind_loss"`` on its per-example loss).
        unbiased (bool): IRMv1's unbiased two-halves estimate (the U-statistic for the
            conditional independence kinds).
        min_env_rows (float): least effective rows of an (environment, task) pair in a batch
            (in the memory, with ``memory``).
        memory (float): IRMv1 over about this many batches (:class:`GradientMemory`); 1 = each
            batch on its own.
        sampling (float): share :math:`\\alpha \\in [0, 1]` of balanced sampling
            (:meth:`sampler`); 0 = rows drawn uniformly.
    """

    def __init__(self, tasks: TaskSet, *, invariance: float, warmup_invariance: float,
                 warmup_steps: int, environments: str, rebalance: bool | None, max_envs: int,
                 kind: str = "irmv1", unbiased: bool = False, min_env_rows: float = 16.0,
                 memory: float = 1.0, sampling: float = 0.0) -> None:
        self.tasks = tasks
        self.invariance, self.warmup_invariance = float(invariance), float(warmup_invariance)
        self.warmup_steps = int(warmup_steps)
        self.environments, self.rebalance = environments, rebalance
        self.max_envs = int(max_envs)
        #: ``"cind"`` / ``"cind_state"`` (:meth:`conditional_penalty`), or ``None`` (IRMv1 & co.)
        self.conditional: str | None = kind if kind in CONDITIONAL_KINDS else None
        self.unbiased = bool(unbiased)
        self.penalty = RouterInvariancePenalty(
            "irmv1" if self.conditional else kind,
            split=bool(unbiased) and kind == "irmv1", min_rows=float(min_env_rows))
        if isinstance(memory, bool) or not isinstance(memory, (int, float)) or not (
                np.isfinite(memory) and memory >= 1):
            raise ValidationError(f"invariance_memory: expected a number >= 1, got {memory!r}")
        self.memory: GradientMemory | None = None
        if memory > 1:
            if kind != "irmv1" or self.penalty.split:
                raise ValidationError(
                    "invariance_memory: only the plain 'irmv1' penalty keeps a memory (got "
                    f"invariance_kind={kind!r}, unbiased_invariance={bool(unbiased)})")
            self.memory = GradientMemory(memory, self.penalty.min_mass, float(min_env_rows))
        if isinstance(sampling, bool) or not isinstance(sampling, (int, float)) or not (
                0 <= sampling <= 1):
            raise ValidationError(
                f"balanced_sampling: expected a number in [0, 1], got {sampling!r}")
        self.sampling = float(sampling)
        self.envs: dict[str, Any] | None = None
        self.valid_share: torch.Tensor | None = None
        self.max_share: torch.Tensor | None = None
        self.acted: torch.Tensor | None = None
        self._idle_checked = False
        #: why the penalty cannot act on the data given to :meth:`setup` (the cause and a
        #: remedy fitting that data), or ``None``; the learner warns and records it
        self.inactive: str | None = None

    @classmethod
    def from_learner(cls, learner: Any, kind: str) -> RoutingInvariance:
        """Built from a learner's arguments of the same names (``invariance``,
        ``warmup_invariance``, ``warmup_steps``, ``environments``, ``rebalance``, ``max_envs``,
        ``unbiased_invariance``, ``min_env_rows``, ``invariance_memory``,
        ``balanced_sampling``)."""
        return cls(learner.tasks_set_, invariance=float(learner.invariance),
                   warmup_invariance=float(learner.warmup_invariance),
                   warmup_steps=int(learner.warmup_steps), environments=learner.environments,
                   rebalance=learner.rebalance, max_envs=int(learner.max_envs), kind=kind,
                   unbiased=bool(learner.unbiased_invariance),
                   min_env_rows=float(learner.min_env_rows),
                   memory=float(getattr(learner, "invariance_memory", 1.0)),
                   sampling=float(getattr(learner, "balanced_sampling", 0.0)))

    # ------------------------------------------------------------------ environments
    @property
    def active(self) -> bool:
        """Whether the penalty can act (environments set up and a weight above 0)."""
        return self.envs is not None and (self.invariance > 0 or self.warmup_invariance > 0)

    def setup(self, train: MultiTaskData) -> None:
        """Environment tables from the training data; none (penalty off, warned) when the data
        have fewer than two environments of the chosen kind."""
        self.envs = None
        self.inactive = None
        if self.memory is not None:
            self.memory.reset()
        if self.invariance == 0 and self.warmup_invariance == 0 and self.sampling == 0:
            return     # (balanced sampling needs the tables even without the penalty)
        n_classes = [task.n_states for task in self.tasks]
        labels = LabelEnvironments(n_classes, max_envs=self.max_envs)
        has_given = train.n_envs >= 2
        has_labels = bool(labels.active.any())
        mode = self.environments
        if mode == "auto":
            mode = ("both" if has_given and has_labels else "given" if has_given else "labels")
        if mode in ("given", "both") and not has_given:
            self.inactive = _off(
                ("the training data has no `env`" if train.env is None else
                 "the training data's `env` holds a single environment")
                + f" (environments={mode!r})", _remedy_given(self, train, labels))
            return
        if mode in ("labels", "both") and not has_labels:
            n_cls = sum(1 for task in self.tasks if task.is_classification)
            self.inactive = _off(
                "label environments stratify a classification task's rows by the other "
                f"classification tasks' labels, and there {'is' if n_cls == 1 else 'are'} "
                f"{n_cls} classification task{'' if n_cls == 1 else 's'} "
                f"(environments={mode!r})", _remedy_labels(train))
            return
        n_given = int(train.env.max()) + 1 if has_given else 1
        rebalance = (mode != "given") if self.rebalance is None else bool(self.rebalance)
        envs = {"mode": mode, "labels": labels, "n_given": n_given,
                "n_envs": n_given * (labels.n_envs if mode != "given" else 1)}
        codes = self.codes(envs, train.y, train.env)
        envs["table"] = class_balance_table(codes, train.y, n_classes, envs["n_envs"],
                                            rebalance=rebalance)
        envs["rows"] = balance_weights(envs["table"], codes, train.y)
        envs["draw"] = None
        if self.sampling > 0:
            # rows drawn with probability q: the penalty's weights become a / (N q), so its
            # environments keep their re-balanced expectation
            env_rows, w = envs["rows"]
            n = w.shape[0]
            q = self.draw_probabilities(w, self.sampling)
            envs["draw"] = q
            envs["rows"] = (env_rows, w / (n * q)[:, None])
        envs["source"] = train.uid       # the row tables hold for batches of this data only
        if int((envs["table"].sum(-1) > 0).sum(-1).max()) < 2:
            self.inactive = _off(*_no_two_environments(self, train, mode, labels))
            return
        self.envs = envs

    @staticmethod
    def draw_probabilities(weight: torch.Tensor, alpha: float) -> torch.Tensor:
        r"""Per-row draw probabilities ``[N]`` of balanced sampling: :math:`q = (1 - \alpha)/N
        + \alpha\, \bar a / \sum \bar a`, with :math:`\bar a` a row's mean re-balancing
        weight over the tasks whose environment it is in (1 where it is in none). Drawing by
        :math:`\bar a` makes every environment's classes (nearly) balanced in the batch itself,
        so the penalty's weights stay near 1 and its environments keep their rows."""
        w = weight.double()
        inside = (w > 0).sum(dim=1)
        mean = torch.where(inside > 0, w.sum(dim=1) / inside.clamp_min(1),
                           torch.ones_like(w[:, 0]))
        n = w.shape[0]
        return ((1.0 - alpha) / n + alpha * mean / mean.sum()).float()

    def sampler(self, n_rows: int, seed: int) -> Sampler | None:
        """Balanced sampling for the Trainer (``None`` when off or without environments):
        ``n_rows`` draws with replacement by :meth:`draw_probabilities`, seeded."""
        q = self._draw(n_rows)
        if q is None:
            return None
        gen = torch.Generator()
        gen.manual_seed(int(seed))
        return WeightedRandomSampler(q.double(), n_rows, replacement=True, generator=gen)

    def draw_weights(self, n_rows: int) -> torch.Tensor | None:
        """Per-row weights ``N q_n`` of balanced sampling (``None`` when off): how often each
        training row is drawn relative to uniform draws, so that label statistics computed
        with them (e.g. GMTL's prior) describe the distribution the model was trained on."""
        q = self._draw(n_rows)
        return None if q is None else q.double() * n_rows

    def _draw(self, n_rows: int) -> torch.Tensor | None:
        """The balanced-sampling draw probabilities ``q[N]`` (``None`` when off), checked
        against the ``n_rows`` of the data being trained on."""
        if self.envs is None or self.envs.get("draw") is None:
            return None
        q = self.envs["draw"]
        if q.shape[0] != n_rows:
            raise ValidationError(
                f"train: {n_rows} rows, but the environments were set up on {q.shape[0]}")
        return q

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
        estimate), and the penalty's ``valid`` mask ``[E, T]`` (with a memory: pairs present in
        the batch whose memory counts). Records the share of the
        (environment, task) pairs with data that count (``valid_share``, a scalar tensor) and
        its running maximum (``max_share``), both on the device (no host synchronisation)."""
        env, weight = self.batch_envs(batch)
        # ids come from the tables built in setup: no per-step range check (a host sync)
        member = env_assignment(env, int(self.envs["n_envs"]), check=False).to(dtype)
        assign = member * weight[..., None]
        if self.penalty.split:
            member, assign = split_halves(member, assign)
        present = assign.sum(dim=0).T > 0
        if self.conditional:
            # every counted row enters one estimate per task: it acts wherever a task's rows
            # fall in two environments (min_env_rows does not apply)
            valid = present & (present.sum(dim=0) >= 2)[None, :]
        elif self.memory is None:
            valid = self.penalty.valid(assign)
        else:
            valid = self.memory.valid(present) & present
        with torch.no_grad():
            share = (valid & present).sum() / present.sum().clamp_min(1)
            self.valid_share = share
            self.acted = valid.any().to(dtype)
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
                   intercept: bool = True, update: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(per-example losses [B, T], penalty)`` from one pass of ``forward`` (gates
        ``[B, T, K]`` → head outputs ``[B, T, C]``) with the gate dummies
        (:meth:`dummy_gates`) and, with ``intercept``, the intercept dummies
        (:meth:`dummy_shift`); the penalty's gradients come from a second backward pass, so any
        read-out works (message passing included). At the neutral dummies the pass equals the
        plain forward pass, so its losses serve as the task loss. ``update``: add the batch to
        the memory (training steps)."""
        ex_gates, delta = self.dummy_gates(member, gates)
        out = forward(ex_gates)
        dummies = [delta]
        if intercept:
            out, shift = self.dummy_shift(member, out, col_mask)
            dummies.append(shift)
        per = layout.per_example_loss(out, y)
        if self.memory is None:
            return per, self.penalty(per, assign, dummies, valid=valid).sum()
        grads = dummy_gradients(env_risks(per, assign)[0], dummies)
        return per, self.memory.penalty(grads, assign, valid, update).sum()

    def closed_form_pass(self, net: Any, z: torch.Tensor, gates: torch.Tensor, y: torch.Tensor,
                         layout: Any, assign: torch.Tensor, valid: torch.Tensor,
                         intercept: bool = True, through_encoder: bool = True,
                         update: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
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
        computes the penalty on ``z.detach()``; ``update`` as in :meth:`dummy_pass`."""
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
        grad = torch.cat(grads, dim=-1)
        if self.memory is None:
            return per, self.penalty.from_gradients(grad, valid).sum()
        return per, self.memory.penalty(grad, assign, valid, update).sum()

    def conditional_penalty(self, f: torch.Tensor, y: torch.Tensor, assign: torch.Tensor,
                            mask: torch.Tensor | None = None, standardize: bool = True
                            ) -> torch.Tensor:
        """The conditional independence penalty (the ``"cind*"`` kinds), summed over tasks:
        :func:`~taskgraph.regularizers.conditional_independence` of the features
        ``f [B, T, D]`` (probabilities, gated modules or losses) and the environments of the batch's
        assignment ``[B, T, E]`` (rows with weight 0 do not count; the re-balancing weights
        are not used: conditioning on the task's own label replaces them), given the labels
        ``y``; only classification tasks count."""
        cls = torch.tensor([task.is_classification for task in self.tasks],
                           device=assign.device)
        member = (assign > 0) & cls[None, :, None]
        n_classes = max([2] + [int(task.n_states) for task in self.tasks
                               if task.is_classification])
        return conditional_independence(f, y, member, n_classes, mask,
                                        unbiased=self.unbiased, standardize=standardize).sum()

    def output_penalty(self, out: torch.Tensor, y: torch.Tensor, assign: torch.Tensor,
                       layout: Any) -> torch.Tensor:
        """:meth:`conditional_penalty` of the class probabilities (``layout.log_proba`` of the
        head outputs ``out [B, T, C]``, unstandardised: probabilities are bounded, so their
        scale cannot be traded against the penalty): kind ``"cind"``."""
        prob = layout.log_proba(out).exp()
        return self.conditional_penalty(prob, y, assign, layout.class_mask, standardize=False)

    def module_penalty(self, z: torch.Tensor, gates: torch.Tensor, y: torch.Tensor,
                       assign: torch.Tensor) -> torch.Tensor:
        r""":meth:`conditional_penalty` of the gated modules (kind ``"cind_state"``): task
        ``t`` reads feature ``d`` of module ``k`` as :math:`g_{tk} z_{bkd} / s_{kd}`, with
        :math:`s_{kd}` the feature's batch standard deviation, so the penalty is
        :math:`\sum_k g_{tk}^2` times module ``k``'s (standardised) dependence on task
        ``t``'s environments given its label: the gates pay for reading modules that carry
        other tasks' labels, and the encoder's scale does not matter. ``z [B, K, m]``,
        ``gates [T, K]``."""
        zs = z / (z.var(dim=0, unbiased=False, keepdim=True) + 1e-6).sqrt()
        f = (gates[None, :, :, None] * zs[:, None]).flatten(2)              # [B, T, K m]
        return self.conditional_penalty(f, y, assign, standardize=False)

    def needs_pass(self, valid: torch.Tensor) -> bool:
        """Whether a batch needs the penalty's pass: some pair counts, or a memory is kept
        (it takes every batch's gradients, also before any pair counts)."""
        return self.memory is not None or bool(valid.any())

    def logs(self, penalty: torch.Tensor) -> dict[str, Any]:
        """A batch's training logs (the Trainer averages them per epoch): the penalty
        (``invariance``), the share of (environment, task) pairs with data that counted
        (``invariance_envs``) and whether any counted, so that the epoch's mean is the share of
        batches in which the penalty acted (``invariance_batches``)."""
        return {"invariance": penalty.detach(), "invariance_envs": self.valid_share,
                "invariance_batches": self.acted}

    def renormalize(self, loss: torch.Tensor, lam: float) -> torch.Tensor:
        """``loss / λ`` when some (environment, task) pair counted in this batch (an idle
        penalty must not shrink the task gradients), decided on the device."""
        if lam <= 1.0 or self.valid_share is None:
            return loss
        return torch.where(self.valid_share > 0, loss / lam, loss)

    def train_state(self) -> dict[str, Any]:
        """What a checkpoint must keep to resume exactly (the memory, when kept)."""
        return {} if self.memory is None else {"invariance_memory": self.memory.state_dict()}

    def load_train_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`train_state`."""
        if self.memory is not None and "invariance_memory" in state:
            self.memory.load_state_dict(state["invariance_memory"])

    # ------------------------------------------------------------------ per epoch
    def idle_message(self, epoch: int, min_env_rows: float, batch_size: int) -> str | None:
        """After the first epoch in which the penalty was on: the cause and a remedy when no
        (environment, task) pair of any batch had ``min_env_rows`` effective rows (the penalty
        then did nothing), once per :meth:`setup`; otherwise ``None``. The remedy comes from
        the training data's environment tables: the batch size at which the largest pair would
        reach ``min_env_rows``, or, when even the whole data cannot, a lower
        ``min_env_rows``."""
        if self.max_share is None or self._idle_checked or self.envs is None:
            return None
        self._idle_checked = True
        if float(self.max_share) != 0.0:
            return None
        env_rows, w = self.envs["rows"]
        n, t = w.shape
        inside = (env_rows >= 0) & (w > 0)
        key = (env_rows.clamp_min(0) * t + torch.arange(t, device=w.device)[None, :])[inside]
        size = int(self.envs["n_envs"]) * t
        w = w[inside].double()
        s1 = torch.zeros(size, dtype=torch.float64).index_add_(0, key.cpu(), w.cpu())
        s2 = torch.zeros(size, dtype=torch.float64).index_add_(0, key.cpu(), w.cpu() ** 2)
        best = float((s1.pow(2) / s2.clamp_min(1e-30)).max()) if len(w) else 0.0
        per_batch = best * min(batch_size, n) / max(n, 1)
        cause = (f"the invariance penalty did not act: no (environment, task) pair had "
                 f"min_env_rows={min_env_rows:g} effective rows in any batch of epoch {epoch} "
                 f"(environments={self.envs['mode']!r}; the largest pair holds {best:.1f} "
                 f"effective rows in all {n} training rows, about {per_batch:.1f} per batch of "
                 f"{batch_size})")
        need = int(np.ceil(min_env_rows * n / best)) if best > 0 else n + 1
        if need <= n:
            remedy = (f"raise batch_size to at least {need}, or lower min_env_rows to about "
                      f"{max(per_batch, 1.0):.0f}")
            if self.envs["mode"] != "given":
                remedy += f", or lower max_envs (now {self.max_envs}) to merge label strata"
        else:
            remedy = (f"even the whole training data has too few: lower min_env_rows below "
                      f"{best:.1f}")
        return f"{cause}. Remedy: {remedy}; or {_silence(self)} to train without it."

