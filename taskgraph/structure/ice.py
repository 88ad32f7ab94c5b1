r"""Intervention contrastive estimation (ICE): an output-level structural model over task labels,
random interventions on it, and the noise-contrastive loss that trains an energy model against
the intervened samples.

The **output SEM** is a structural model over task labels given ``x``, with one scalar weight
per candidate edge (``A[src, dst]``):

.. math::
    \boldsymbol{\ell}_j(\mathbf{x}, \mathbf{y}) = \mathbf{u}_j(\mathbf{x})
    + \Big(\sum_{i \to j} A_{ij}\, s_i(y_i)\Big)\, \mathbf{v}_j ,
    \qquad p(y_j \mid \mathbf{x}, \mathbf{y}_{\mathrm{pa}(j)})
    = \operatorname{softmax}(\boldsymbol{\ell}_j)_{y_j}

where :math:`s_i(y_i)` is the parent's state (:math:`2y_i - 1` for a binary task, a learned
centred scalar per class for a multiclass task, the value for a regression task) and
:math:`\mathbf{v}_j` maps the summed parent signal to the child's output columns (fixed to 1 for
binary and regression children). It is fitted by the masked log-likelihood of the observed labels;
a label set by an intervention (``do[n, j]``) contributes no term, because its parents did not
cause it. This likelihood is what identifies directions given ``x``: a child's label depends on
its parents' labels beyond what ``x`` explains, a parent's does not depend on its children's.

**Interventions** pick random targets every step (each task independently with probability
``p``; at least one per row), clamp them to uniform random classes, and propagate the rest in
topological order of the current graph by sampling from the SEM. The noise density of such a
sample is tractable:

.. math::
    \log q(\mathbf{y}) = \sum_{j \in K} -\log C_j
    + \sum_{j \notin K} \log p(y_j \mid \mathbf{x}, \mathbf{y}_{\mathrm{pa}(j)}).

**ICE** (:func:`ice_loss`) trains an energy :math:`\log \tilde p(\mathbf{y} \mid \mathbf{x})` to
tell data from these negatives: binary NCE

.. math::
    \mathcal{L} = -\log \sigma\big(G(\mathbf{y})\big) - \log \sigma\big(-G(\mathbf{y}')\big), \qquad
    G = \log \tilde p - \log q ,

or the ranking form with ``K`` negatives per positive (softmax over the candidate set).
"""

from __future__ import annotations

import math

import networkx as nx
import torch
import torch.nn.functional as F
from torch import nn

from taskgraph.exceptions import ValidationError
from taskgraph.nn.aggregate import edge_aggregate
from taskgraph.nn.heads import OutputLayout

__all__ = ["ice_loss", "OutputSEM", "random_interventions", "categorical", "conditional_nll",
           "orient_by_likelihood"]


def ice_loss(
    log_p_data: torch.Tensor,
    log_q_data: torch.Tensor,
    log_p_noise: torch.Tensor,
    log_q_noise: torch.Tensor,
    kind: str = "binary",
) -> torch.Tensor:
    r"""Noise-contrastive loss of an unnormalised model against tractable noise.

    Args:
        log_p_data (Tensor): ``[B]`` model log-density (unnormalised; include a learned
            log-normaliser if the model has one) of the data rows.
        log_q_data (Tensor): ``[B]`` noise log-density of the data rows.
        log_p_noise (Tensor): ``[B]`` (binary) or ``[B, K]`` (ranking) model log-density of the
            negatives.
        log_q_noise (Tensor): same shape as ``log_p_noise``, noise log-density of the negatives.
        kind (str): ``"binary"`` (NCE, one negative per positive, or the mean over ``K``) or
            ``"ranking"`` (softmax of the positive among itself and ``K`` negatives).

    Returns:
        Tensor: the mean loss (scalar).
    """
    g_data = log_p_data - log_q_data
    g_noise = log_p_noise - log_q_noise
    if kind == "binary":
        loss_noise = F.softplus(g_noise)
        if loss_noise.dim() == 2:
            loss_noise = loss_noise.mean(dim=1)
        return (F.softplus(-g_data) + loss_noise).mean()
    if kind == "ranking":
        if g_noise.dim() == 1:
            g_noise = g_noise[:, None]
        logits = torch.cat([g_data[:, None], g_noise], dim=1)
        return (torch.logsumexp(logits, dim=1) - g_data).mean()
    raise ValidationError(f"kind: expected 'binary' or 'ranking', got {kind!r}")


def categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row of (unnormalised, non-negative) ``probs[..., C]`` by inverse CDF: one
    uniform per row and a comparison with the cumulative sums (``torch.multinomial`` costs a
    Python-level loop per row on CPU). Returns long ``[...]``."""
    cdf = probs.cumsum(-1)
    u = torch.rand(cdf.shape[:-1] + (1,), generator=generator, device=probs.device,
                   dtype=probs.dtype) * cdf[..., -1:]
    return (cdf <= u).sum(-1).clamp_max(probs.shape[-1] - 1)


def random_interventions(
    n_rows: int,
    n_tasks: int,
    n_states: torch.Tensor,
    p: float,
    generator: torch.Generator | None = None,
    eligible: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random intervention targets and values, drawn anew at every call (every step).

    Each eligible task of each row is a target with probability ``p``; a row that drew none
    gets one uniformly chosen eligible task (so every row has at least one target). Values are
    uniform over the task's classes.

    Args:
        n_rows, n_tasks: ``B``, ``T``.
        n_states (Tensor): ``[T]`` classes per task (tasks with ``< 2`` are never targets).
        p (float): per-task target probability.
        generator: seeded generator.
        eligible (Tensor, optional): ``[T]`` bool, tasks that may be intervened on.

    Returns:
        (targets ``[B, T]`` bool, values ``[B, T]`` long)
    """
    device = n_states.device if device is None else device
    n_states = n_states.to(device)
    ok = n_states >= 2 if eligible is None else eligible.to(device) & (n_states >= 2)
    u = torch.rand(n_rows, n_tasks, generator=generator, device=device)
    targets = (u < p) & ok
    # rows that drew no target get one uniformly random eligible task (argmax of uniforms);
    # without any eligible task nothing is set (decided on the device, no host synchronisation)
    v = torch.rand(n_rows, n_tasks, generator=generator, device=device)
    pick = torch.where(ok, v, torch.full_like(v, -1.0)).argmax(dim=1)
    empty = ~targets.any(dim=1) & ok.any()
    targets[torch.arange(n_rows, device=device), pick] |= empty
    r = torch.rand(n_rows, n_tasks, generator=generator, device=device)
    values = (r * n_states.clamp_min(1)).floor().long()
    return targets, values


class OutputSEM(nn.Module):
    r"""Structural model over task labels with one weight per candidate edge (see the module
    docstring for the equations).

    Args:
        layout (OutputLayout): task kinds and class counts.
        edge_index (LongTensor): ``[2, E]`` candidate edges ``(src, dst)``.
        init (Tensor, optional): ``[E]`` initial weights (e.g. from the structure prior). Entries
            of exactly 0 are replaced by ``init_scale``-sized random values: the adjacency is never
            initialised at exactly 0 (where every gradient of :math:`h(A)` vanishes).
        init_scale (float): scale of the random initial weights (default: 0.1).
        seed (int): seed of the initial weights.

    Shapes:
        - **unary** ``u[B, T, C_max]``: the SEM's own head outputs given ``x`` (no parents)
        - **labels** ``y[B, T]``: float class indices / values (no NaN: fill missing first)
        - **output** logits ``[B, T, C_max]``
    """

    def __init__(self, layout: OutputLayout, edge_index: torch.Tensor,
                 init: torch.Tensor | None = None, init_scale: float = 0.1,
                 seed: int = 0) -> None:
        super().__init__()
        self.layout = layout
        t = len(layout.tasks)
        self.n_tasks = t
        self.register_buffer("edge_index", edge_index.long().contiguous())
        gen = torch.Generator().manual_seed(seed)
        e = edge_index.shape[1]
        rnd = init_scale * (0.5 + 0.5 * torch.rand(e, generator=gen)) * (
            torch.randint(0, 2, (e,), generator=gen) * 2 - 1)
        w0 = rnd if init is None else torch.where(init == 0, rnd, init.float())
        self.weight = nn.Parameter(w0)
        # 1 = edge free to learn; 0 = pruned (see :meth:`freeze_support`)
        self.register_buffer("support", torch.ones(e))
        self._frozen = False   # (support < 1).any(), kept on the host: read on every step
        c = layout.n_classes
        # parent state per class: binary -1/+1 fixed, multiclass learned (centred on use)
        base = torch.zeros(t, c)
        base[:, 0], base[:, 1] = -1.0, 1.0
        self.register_buffer("state_base", base)
        self.state_delta = nn.Parameter(torch.zeros(t, c))
        # child read-out of the summed parent signal: 1 in column 0 for binary/regression
        cout = layout.out_dim
        vfix = torch.zeros(t, cout)
        vfix[:, 0] = 1.0
        self.register_buffer("child_fixed", vfix)
        self.child_delta = nn.Parameter(torch.zeros(t, cout))
        if layout.has_multi:
            with torch.no_grad():
                self.state_delta.copy_(torch.linspace(-1, 1, c).expand(t, c) - base)
                self.child_delta.normal_(0, 0.5, generator=gen)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args) -> None:
        # the candidate edge set (and so the weight vector's length) comes from the file
        # (only when its size differs: replacing the Parameter otherwise would orphan it from an
        # optimizer built before loading, as when a training run resumes)
        incoming = state_dict.get(prefix + "weight")
        if incoming is not None and incoming.shape != self.weight.shape:
            here = self.weight.device
            self.edge_index = state_dict[prefix + "edge_index"].to(here, copy=True)
            self.weight = nn.Parameter(torch.empty(incoming.shape, dtype=self.weight.dtype,
                                                   device=here))
            self.support = torch.ones(incoming.shape, dtype=self.support.dtype, device=here)
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._frozen = bool((self.support < 1).any())

    # ------------------------------------------------------------------ pieces
    @property
    def frozen(self) -> bool:
        """Whether the support was frozen to a DAG (:meth:`freeze_support`; kept on the host,
        so reading it costs no device synchronisation)."""
        return self._frozen

    def effective_weight(self) -> torch.Tensor:
        """``[E]`` edge weights with pruned edges at exactly 0."""
        return self.weight * self.support

    @torch.no_grad()
    def freeze_support(self, generations: list[torch.Tensor]) -> int:
        """Fix the causal order and refit under it: extend the partial order given by
        ``generations`` (topological generations of a DAG, e.g. from :meth:`dag_order`) to a total
        order (generation, then task index) and keep free exactly the candidate edges pointing
        forward in it; every other weight is fixed at 0 (no gradient). The support is then a DAG,
        so the acyclicity penalty is exactly 0 and the remaining weights are refitted without the
        shrinkage the augmented Lagrangian imposed while breaking cycles; forward edges it had
        shrunk away can come back. Returns the number of free edges."""
        pos = torch.empty(self.n_tasks, dtype=torch.long)
        order = torch.cat(generations) if generations else torch.arange(self.n_tasks)
        pos[order] = torch.arange(self.n_tasks)
        src, dst = self.edge_index.cpu()
        forward = (pos[src] < pos[dst]).to(self.support.device)
        self.support.copy_(forward.float())
        self.weight.mul_(self.support)
        self._frozen = bool((~forward).any())
        return int(forward.sum())

    def child_vectors(self) -> torch.Tensor:
        """``[T, C_out]``: fixed 1 for binary/regression children, learned for multiclass."""
        if not self.layout.has_multi:   # nothing learned: no autograd nodes for a constant
            return self.child_fixed
        multi = self.layout.is_multi[:, None]
        return torch.where(multi, self.child_delta, self.child_fixed)

    def class_states(self) -> torch.Tensor:
        """``[T, C]`` centred parent state of every class (binary: -1, +1)."""
        if not self.layout.has_multi:   # binary -1/+1 and regression rows: a constant
            return self.state_base * self.layout.class_mask
        st = self.state_base + torch.where(self.layout.is_multi[:, None], self.state_delta,
                                           torch.zeros_like(self.state_delta))
        mask = self.layout.class_mask.float()
        mean = (st * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp_min(1)
        centred = torch.where(self.layout.is_multi[:, None], st - mean, st)
        return centred * mask

    def parent_states(self, y: torch.Tensor, proba: torch.Tensor | None = None) -> torch.Tensor:
        """Parent state ``s[B, T]`` of labels ``y``; where ``y`` is NaN, the expected state under
        ``proba[B, T, C]`` (or 0 when not given)."""
        st = self.class_states()                                    # [T, C]
        y0 = torch.nan_to_num(y).long().clamp(0, st.shape[1] - 1)
        s_cls = st.expand(y.shape[0], -1, -1).gather(-1, y0[..., None])[..., 0]
        s = torch.where(self.layout.is_reg, torch.nan_to_num(y), s_cls)
        # no branch on whether anything is missing: that test would wait for the device
        fill = (proba * st).sum(-1) if proba is not None else torch.zeros_like(s)
        return torch.where(torch.isnan(y), fill, s)

    def parent_signal(self, s: torch.Tensor, edge_mask: torch.Tensor | None = None
                      ) -> torch.Tensor:
        r"""``m[B, T]`` with :math:`m_j = \sum_{i \to j} A_{ij} s_i` (one sparse product over the
        candidate edges)."""
        w = self.effective_weight() if edge_mask is None else self.effective_weight() * edge_mask
        return edge_aggregate(s[..., None], self.edge_index, w)[..., 0]

    def logits(self, u: torch.Tensor, y: torch.Tensor, proba: torch.Tensor | None = None,
               edge_mask: torch.Tensor | None = None) -> torch.Tensor:
        m = self.parent_signal(self.parent_states(y, proba), edge_mask)
        return u + m[..., None] * self.child_vectors()

    def neg_log_likelihood(self, u: torch.Tensor, y: torch.Tensor,
                           proba: torch.Tensor | None = None,
                           do: torch.Tensor | None = None) -> torch.Tensor:
        """Masked negative log-likelihood: the sum over tasks of the mean loss over the rows
        where the task is observed and not intervened on. Scalar."""
        target = y if do is None else torch.where(do, torch.full_like(y, math.nan), y)
        return self.layout.task_losses(self.logits(u, y, proba), target).sum()

    # ------------------------------------------------------------------ interventions
    def dag_order(self, threshold: float) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Topological generations of the current graph (edges with ``|A| > threshold``; the
        weakest edge of every cycle is dropped) and the ``[E]`` mask of the edges kept."""
        w = self.effective_weight().detach().abs().cpu()
        src, dst = self.edge_index.cpu()
        keep = w > threshold
        g = nx.DiGraph()
        g.add_nodes_from(range(self.n_tasks))
        order = torch.argsort(w, descending=True)
        kept = torch.zeros_like(keep)
        for e in order[keep[order]].tolist():     # strongest first; skip edges closing a cycle
            a, b = int(src[e]), int(dst[e])
            if nx.has_path(g, b, a):
                continue
            g.add_edge(a, b)
            kept[e] = True
        gens = [torch.tensor(sorted(gen), dtype=torch.long)
                for gen in nx.topological_generations(g)]
        return gens, kept.to(self.weight.device)

    @torch.no_grad()
    def sample(self, u: torch.Tensor, targets: torch.Tensor, values: torch.Tensor,
               generations: list[torch.Tensor], edge_mask: torch.Tensor,
               y_fixed: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Intervened samples: targets clamped to ``values``, every other classification task
        sampled from the SEM in topological order (one batched draw per generation).
        Regression tasks keep ``y_fixed``. Returns ``y'[B, T]`` (float)."""
        lay = self.layout
        y = torch.zeros(u.shape[0], self.n_tasks, device=u.device)
        if y_fixed is not None:
            y = torch.where(lay.is_reg, torch.nan_to_num(y_fixed), y)
        y = torch.where(targets, values.float(), y)
        st = self.class_states()
        for gen in generations:
            gen = gen.to(u.device)
            s = torch.where(lay.is_reg, y, st.expand(y.shape[0], -1, -1).gather(
                -1, y.long().clamp(0, st.shape[1] - 1)[..., None])[..., 0])
            m = self.parent_signal(s, edge_mask)
            logit = u[:, gen] + m[:, gen, None] * self.child_vectors()[gen]
            lp = lay.log_proba_subset(logit, gen)                   # [B, g, C]
            cls = ~lay.is_reg[gen]
            p = torch.where(cls[:, None], torch.nan_to_num(lp.exp()), torch.ones_like(lp))
            draw = categorical(p, generator).float()
            cur = y[:, gen]
            new = torch.where(cls & ~targets[:, gen], draw, cur)
            y[:, gen] = new
        return y

    @torch.no_grad()
    def marginals(self, u: torch.Tensor, generations: list[torch.Tensor], n_samples: int = 64,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-task marginals ``p(y_j | x)`` ``[B, T, C]`` of the SEM (its graph must be a DAG,
        given by ``generations``), by Rao-Blackwellised ancestral sampling: parents are sampled in
        topological order and each task's conditional distribution is averaged over
        ``n_samples`` parent draws. Regression tasks get their conditional mean in column 0."""
        lay = self.layout
        b, t = u.shape[0], self.n_tasks
        s_ = n_samples
        uu = u.repeat_interleave(s_, dim=0)                           # [B*S, T, C_out]
        y = torch.zeros(b * s_, t, device=u.device)
        prob = torch.zeros(b * s_, t, lay.n_classes, device=u.device)
        st = self.class_states()
        for gen in generations:
            gen = gen.to(u.device)
            s = torch.where(lay.is_reg, y, st.expand(y.shape[0], -1, -1).gather(
                -1, y.long().clamp(0, st.shape[1] - 1)[..., None])[..., 0])
            m = self.parent_signal(s)
            logit = uu[:, gen] + m[:, gen, None] * self.child_vectors()[gen]
            lp = lay.log_proba_subset(logit, gen)
            p = torch.nan_to_num(lp.exp())
            reg = lay.is_reg[gen]
            p[..., 0] = torch.where(reg, logit[..., 0], p[..., 0])
            prob[:, gen] = p
            draw = categorical(torch.where(reg[:, None], torch.ones_like(p), p.clamp_min(0)),
                               generator).float()
            y[:, gen] = torch.where(reg, logit[..., 0], draw)
        return prob.reshape(b, s_, t, -1).mean(1)

    def noise_log_density(self, u: torch.Tensor, y: torch.Tensor, targets: torch.Tensor,
                          edge_mask: torch.Tensor, mask: torch.Tensor | None = None
                          ) -> torch.Tensor:
        r""":math:`\log q(y)` of complete labels ``y`` under the intervened SEM ``[B]``:
        :math:`-\log C_j` for targets, the SEM conditional otherwise; classification tasks
        only, restricted to ``mask`` (observed entries) when given."""
        lay = self.layout
        logits = self.logits(u, y, edge_mask=edge_mask)
        lp = lay.log_proba(logits)
        idx = torch.nan_to_num(y).long().clamp(0, lp.shape[-1] - 1)
        cond = lp.gather(-1, idx[..., None])[..., 0]
        uni = -torch.log(lay.n_cls.clamp_min(1).float()).expand_as(cond)
        term = torch.where(targets, uni, cond)
        keep = ~lay.is_reg.expand_as(term)
        if mask is not None:
            keep = keep & mask
        return torch.where(keep, term, torch.zeros_like(term)).sum(-1)


def _node_design(layout: OutputLayout, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Design matrix ``[N, F + 1 + T*C]``: features, intercept, and the centred one-hot label of
    every classification task (regression tasks: the value; missing labels: 0)."""
    n = x.shape[0]
    c = layout.n_classes
    y0 = torch.nan_to_num(y)
    onehot = torch.nn.functional.one_hot(y0.long().clamp(0, c - 1), c).to(x.dtype)
    onehot = onehot - layout.class_mask.to(x.dtype) / layout.n_cls.clamp_min(1)[:, None]
    onehot = onehot * layout.class_mask
    reg = torch.zeros_like(onehot)
    reg[..., 0] = y0
    lab = torch.where(layout.is_reg[:, None], reg, onehot)
    lab = torch.where(torch.isnan(y)[..., None], torch.zeros_like(lab), lab)
    return torch.cat([x.reshape(n, -1), x.new_ones(n, 1), lab.reshape(n, -1)], dim=1)


def conditional_nll(
    layout: OutputLayout,
    x: torch.Tensor,
    y: torch.Tensor,
    nodes: torch.Tensor,
    parents: torch.Tensor,
    do: torch.Tensor | None = None,
    l2: float = 1e-3,
    max_iter: int = 200,
    per_row: bool = False,
) -> torch.Tensor:
    r"""Exact fits of many node conditionals at once: for each pair ``k`` (node ``j_k``, parent
    set ``P_k``) the maximum-likelihood model

    .. math::
        p(y_{j} \mid \mathbf{x}, \mathbf{y}_{P}) = \operatorname{softmax}\big(\mathbf{W}^\top
        [\mathbf{x}, 1] + \sum_{i \in P} \mathbf{V}_i^\top \mathrm{onehot}(y_i)\big)

    (logistic for binary, softmax for multiclass, unit-variance Gaussian for regression
    targets), fitted jointly with L-BFGS (the fits are independent, so one solve of their sum
    gives every optimum). Rows where the node's label is missing or set by an intervention are
    left out. Returns the mean negative log-likelihood of each fit ``[K]`` (plus the small
    ``l2`` term), comparable across parent sets of the same node; with ``per_row`` the
    negative log-likelihood of every row under every fit ``[N, K]`` (0 where left out).

    Args:
        nodes (LongTensor): ``[K]`` target task of each fit.
        parents (BoolTensor): ``[K, T]`` parent set of each fit.
    """
    t = len(layout.tasks)
    c = layout.n_classes
    feats = _node_design(layout, x, y)                                # [N, D]
    n_x = feats.shape[1] - t * c
    k = nodes.shape[0]
    mask = torch.ones(k, feats.shape[1], dtype=x.dtype)
    mask[:, n_x:] = parents.to(x.dtype).repeat_interleave(c, dim=1)
    cout = layout.out_dim
    weight = torch.zeros(k, feats.shape[1], cout, dtype=x.dtype, requires_grad=True)
    target = y[:, nodes]                                               # [N, K]
    if do is not None:
        target = torch.where(do[:, nodes], torch.full_like(target, math.nan), target)
    obs = ~torch.isnan(target)
    count = obs.sum(0).clamp_min(1)
    from taskgraph.tasks import Task, TaskSet

    sub = OutputLayout(TaskSet([Task(f"fit{q}", layout.tasks[int(j)].kind,
                                     layout.tasks[int(j)].n_classes)
                                for q, j in enumerate(nodes.tolist())]))

    def objective() -> torch.Tensor:
        logits = torch.einsum("nd,kdc->nkc", feats, weight * mask[..., None])
        per = sub.per_example_loss(logits, target)                     # [N, K]
        return (per.sum(0) / count).sum() + l2 * (weight * weight).sum()

    opt = torch.optim.LBFGS([weight], max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        logits = torch.einsum("nd,kdc->nkc", feats, weight * mask[..., None])
        per = sub.per_example_loss(logits, target)
        return per if per_row else per.sum(0) / count


def orient_by_likelihood(
    layout: OutputLayout,
    x: torch.Tensor,
    y: torch.Tensor,
    edges: list[tuple[int, int]],
    do: torch.Tensor | None = None,
    max_moves: int | None = None,
    tol: float = 1e-4,
) -> list[tuple[int, int]]:
    """Greedy edge reversals that raise the exact likelihood of a DAG over task labels given
    ``x`` (a score-based refinement of the orientations found by the continuous optimisation).

    Each round fits, in one batched solve (:func:`conditional_nll`), every node's conditional
    under its current parents and under each parent set a single reversal would give it; the
    reversals are then taken in order of their decrease of the summed negative log-likelihood
    and applied when they improve by more than ``tol`` (per-row mean NLL), keep the graph
    acyclic and touch no node an earlier reversal of the round changed (a reversal of
    ``i -> j`` changes only the parent sets of ``i`` and ``j``, so the decrease of one on two
    untouched nodes is still exact after the others: every applied move is a true improvement,
    and a round does the work of many single-move rounds). Reversals keep the number of edges,
    so likelihoods are compared fairly. Stops when a round applies nothing.

    Args:
        edges: the DAG's edges ``(src, dst)``.
        max_moves: at most this many reversals in all (default: the number of edges).

    Returns:
        the refined list of edges (same skeleton).
    """
    t = len(layout.tasks)
    cur = [tuple(e) for e in edges]
    moves_left = len(cur) if max_moves is None else max_moves
    # fitted NLL of every (node, parent set) seen so far: a reversal changes the parents of two
    # nodes, so after the first round only the fits that involve them are new
    cache: dict[tuple[int, tuple[int, ...]], float] = {}
    while cur and moves_left > 0:
        par = torch.zeros(t, t, dtype=torch.bool)
        for i, j in cur:
            par[j, i] = True
        wanted: list[tuple[int, torch.Tensor]] = [(j, par[j]) for j in range(t)]
        for i, j in cur:            # reversal of i -> j: j loses i, i gains j
            a = par[j].clone()
            a[i] = False
            b = par[i].clone()
            b[j] = True
            wanted += [(j, a), (i, b)]
        keys = [(node, tuple(torch.nonzero(ps).flatten().tolist())) for node, ps in wanted]
        new = {k: ps for k, (_, ps) in zip(keys, wanted) if k not in cache}
        if new:
            fits = list(new)
            nll_new = conditional_nll(layout, x, y, torch.tensor([k[0] for k in fits]),
                                      torch.stack([new[k] for k in fits]), do=do)
            cache.update(zip(fits, nll_new.tolist()))
        nll = torch.tensor([cache[k] for k in keys], dtype=torch.float64)
        base = nll[:t]
        alt = nll[t:].reshape(-1, 2)
        gain = []
        for e, (i, j) in enumerate(cur):
            delta = float(alt[e, 0] + alt[e, 1] - base[j] - base[i])
            gain.append((delta, e))
        gain.sort()
        g = nx.DiGraph()
        g.add_nodes_from(range(t))
        g.add_edges_from(cur)
        touched: set[int] = set()
        applied = 0
        for delta, e in gain:
            if delta > -tol or applied >= moves_left:
                break
            i, j = cur[e]
            if i in touched or j in touched:
                continue
            g.remove_edge(i, j)
            if nx.has_path(g, i, j):     # reversing would close a cycle
                g.add_edge(i, j)
                continue
            g.add_edge(j, i)
            cur[e] = (j, i)
            touched.update((i, j))
            applied += 1
        moves_left -= applied
        if not applied or moves_left <= 0:
            break
    return cur
