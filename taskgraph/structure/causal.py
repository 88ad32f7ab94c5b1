r"""The output-level causal task structure of GCNet as one component: an output SEM over task
labels with L1 and an acyclicity constraint under an augmented-Lagrangian schedule (frozen to a
DAG once acyclic), and a causal EBM trained by intervention contrastive estimation (ICE)
against intervened samples of the SEM.

:class:`CausalStructure` owns its parameters (``sem_heads``, ``sem``; ``ebm_heads``, ``pair``,
``log_norm``) and its training state (the schedule, the negatives' generator, the current causal
order). A learner composes it: it calls :meth:`~CausalStructure.collect` on every batch and,
when that says the structure terms are due (every ``structure_every``-th batch),
:meth:`~CausalStructure.loss`; :meth:`~CausalStructure.on_epoch_end` advances the schedule and
receives the optimizer (the freeze resets the SEM's Adam moments); :meth:`~CausalStructure.graph`
is the learned DAG; :meth:`~CausalStructure.marginals` gives ``p(y_k | x)`` under the SEM or
the EBM. See :mod:`taskgraph.structure.ice` for the SEM and ICE equations and docs/gcnet.md for
the schedule.

The EBM alone (``sem=False``, as SGNN-EBM) works on the feature-level edges with uniform
weights and factorised noise from the task heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import nn

from taskgraph.devices import generator_state, make_generator, set_generator_state
from taskgraph.graph import TaskGraph
from taskgraph.nn.heads import OutputLayout, TaskHeads
from taskgraph.structure.acyclicity import AugmentedLagrangian, acyclicity, acyclicity_sparse
from taskgraph.structure.ice import (
    OutputSEM,
    categorical,
    ice_loss,
    orient_by_likelihood,
    random_interventions,
)
from taskgraph.tasks import TaskSet

__all__ = ["StructureConfig", "CausalStructure"]

#: the orientation refinement at freeze time covers every surviving edge when there are at most
#: ``REFINE_ALL_UP_TO`` of them, else the strongest ``max(REFINE_EDGES_PER_TASK * T,
#: REFINE_ALL_UP_TO)`` (its first round is one exact fit per node and two per edge)
REFINE_EDGES_PER_TASK = 2
REFINE_ALL_UP_TO = 64

_OLD_KEYS = ("sem_heads.", "sem.", "ebm_heads.", "pair.", "log_norm.")


@dataclass
class StructureConfig:
    """The structure objective's settings (the learner's constructor arguments of the same
    names; see :class:`~taskgraph.learners.GCNet`)."""

    threshold: float = 0.3
    lambda_sem: float = 1.0
    lambda_l1: float = 0.01
    lambda_ice: float = 0.1
    p_intervene: float = 0.2
    n_negatives: int = 1
    ice_kind: str = "binary"
    acyclicity: str = "expm"
    rho: float = 1.0
    rho_max: float = 1e5
    rho_mult: float = 10.0
    al_warmup: int = 5
    freeze_tol: float = 1e-2
    order_threshold: float = 1e-3
    refine_orientation: bool = True
    dense_limit: int = 64
    structure_every: int = 1
    seed: int = 0


class CausalStructure(nn.Module):
    """Output SEM + acyclicity schedule + ICE-trained causal EBM over task labels.

    Args:
        tasks (TaskSet): the tasks.
        layout (OutputLayout): their output layout (shared with the learner).
        sem_edges (LongTensor): ``[2, E]`` candidate edges of the SEM.
        feat_edges (LongTensor): ``[2, E']`` feature-level edges (the EBM's edges without SEM).
        node_dim (int): width of the task node states the EBM reads.
        feat_dim (int): width of the encoder features (the EBM's log-normaliser reads them).
        sem_in (int): width of the SEM's unary input.
        sem (bool): learn the output SEM (and with it the graph).
        ebm (bool): learn the causal EBM by ICE.
        sem_init (Tensor, optional): ``[E]`` initial SEM weights.
        config (StructureConfig): the objective's settings.
        device: where the negatives' generator draws.
    """

    def __init__(self, tasks: TaskSet, layout: OutputLayout, sem_edges: torch.Tensor,
                 feat_edges: torch.Tensor, *, node_dim: int, feat_dim: int, sem_in: int,
                 sem: bool, ebm: bool, sem_init: torch.Tensor | None, config: StructureConfig,
                 device: Any = "cpu") -> None:
        super().__init__()
        self.tasks, self.config = tasks, config
        # the learner's layout, shared and moved by the learner: not part of this state dict
        object.__setattr__(self, "layout", layout)
        self.use_sem, self.use_ebm = bool(sem), bool(ebm)
        self.sem_in = int(sem_in)
        self.sem_heads = TaskHeads(tasks, self.sem_in) if sem else None
        self.sem = OutputSEM(layout, sem_edges, init=sem_init, seed=config.seed) if sem else None
        if ebm:
            from taskgraph.structure.ebm import PairwisePotential

            self.ebm_heads = TaskHeads(tasks, node_dim)
            self.pair = PairwisePotential(node_dim, layout.n_classes)
            self.log_norm = nn.Linear(feat_dim, 1)
        else:
            self.ebm_heads = None
        # the EBM's edges without a SEM: the feature level's, with uniform weights
        self.register_buffer("feat_edges", feat_edges.clone(), persistent=False)
        t = len(tasks)
        self.n_states = torch.tensor([tk.n_classes if tk.is_classification else 1
                                      for tk in tasks])
        self._n_states_on: torch.Tensor | None = None    # n_states on the data's device
        self.al = AugmentedLagrangian(rho=config.rho, rho_max=config.rho_max,
                                      rho_mult=config.rho_mult)
        self.gen = make_generator(device, int(config.seed) + 17)
        self.generations = [torch.arange(t)]
        n_sem = self.sem.edge_index.shape[1] if self.sem is not None else 0
        self.edge_mask = torch.zeros(n_sem, device=device)
        self._buffer: list[Any] = []
        self._logs: dict[str, Any] = {}
        self.mrf = None
        self._make_mrf(device)

    # ------------------------------------------------------------------ state
    def _make_mrf(self, device: Any) -> None:
        """The causal EBM's pairwise MRF over the current edge set (a plain attribute, not a
        submodule: it holds index tensors only and is rebuilt from the loaded edges)."""
        if not self.use_ebm:
            return
        from taskgraph.structure.ebm import CausalEBM

        edges = self.sem.edge_index if self.use_sem else self.feat_edges
        mrf = CausalEBM(edges.cpu(), len(self.tasks), self.n_states).to(device)
        object.__setattr__(self, "mrf", mrf)

    def _apply(self, fn: Any, recurse: bool = True) -> CausalStructure:
        super()._apply(fn, recurse)
        if self.mrf is not None:
            self.mrf._apply(fn)
        return self

    @property
    def frozen(self) -> bool:
        """Whether the SEM's support has been frozen to a DAG."""
        return self.sem is not None and self.sem.frozen

    def train_state(self) -> dict[str, Any]:
        """What a resumed run and a loaded learner need besides the parameters."""
        return {"al": self.al.state_dict(), "gen": generator_state(self.gen)}

    def load_train_state(self, state: dict[str, Any]) -> None:
        self.al.load_state_dict(state["al"])
        set_generator_state(self.gen, state["gen"])
        self._make_mrf(self.feat_edges.device)       # edge sets come from the loaded state
        if self.use_sem:
            self.refresh_order()

    # ------------------------------------------------------------------ pieces
    def dense_a(self) -> torch.Tensor:
        """``A[T, T]`` of the SEM's effective weights."""
        sem = self.sem
        t = len(self.tasks)
        a = sem.weight.new_zeros(t, t)
        return a.index_put((sem.edge_index[0], sem.edge_index[1]), sem.effective_weight())

    def h(self) -> torch.Tensor:
        """The acyclicity measure :math:`h(A)` (dense up to ``dense_limit`` tasks, the sparse
        estimate above or with ``acyclicity="sparse"``)."""
        sem, cfg = self.sem, self.config
        t = len(self.tasks)
        if cfg.acyclicity == "sparse" or t > cfg.dense_limit:
            gen = torch.Generator(device=sem.weight.device).manual_seed(0)
            return acyclicity_sparse(sem.edge_index, sem.effective_weight(), t, generator=gen)
        return acyclicity(self.dense_a(), kind=cfg.acyclicity)

    def log(self, name: str, value: torch.Tensor) -> None:
        """Add a value to the epoch's structure logs (summed on the device, read at
        :meth:`on_epoch_end`)."""
        v = value.detach().double()
        self._logs[name] = self._logs[name] + v if name in self._logs else v

    # ------------------------------------------------------------------ objective
    def collect(self, batch: Any, out: torch.Tensor, sem_input: torch.Tensor
                ) -> tuple[bool, tuple[Any, ...] | None]:
        """Record one batch; returns ``(due, sem_rows)``: whether the structure terms run on
        this batch (every ``structure_every``-th) and the rows the SEM is then fitted on
        (``(unary input, y, fill, do)`` of the last ``structure_every`` batches, the current
        batch last; ``None`` without SEM).

        The structure terms are hundreds of small operations whose cost hardly depends on the
        batch size, so running them every ``k``-th batch divides their per-step cost by about
        ``k``; the SEM likelihood, which needs no forward pass of the network, still sees every
        row. Up to ``k - 1`` batches at the end of an epoch do not reach it (epochs stay
        independent, so resuming needs no buffer). Missing labels are filled with the heads'
        marginals (computed for every batch: testing whether any label is missing would wait
        for the device)."""
        rows = None
        if self.use_sem:
            fill = self.layout.log_proba(out).exp().detach()
            rows = (sem_input, batch.y, fill, batch.do)
        self._buffer.append(rows)
        if len(self._buffer) < int(self.config.structure_every):
            return False, None
        parts, self._buffer = self._buffer, []
        if not self.use_sem or len(parts) == 1:
            return True, rows
        # earlier batches' encoder features enter detached (their graphs are gone)
        parts = [(i.detach(), *rest) for i, *rest in parts[:-1]] + [parts[-1]]

        def cat(col: int, blank: Any) -> torch.Tensor | None:
            items = [r[col] for r in parts]
            if all(it is None for it in items):
                return None
            return torch.cat([it if it is not None else blank(r[1]) for it, r in
                              zip(items, parts)])

        n_cls = self.layout.n_classes
        return True, (cat(0, None), cat(1, None),
                      cat(2, lambda y: y.new_zeros(*y.shape, n_cls)),
                      cat(3, lambda y: torch.zeros_like(y, dtype=torch.bool)))

    def loss(self, batch: Any, epoch: int, h: torch.Tensor, s1: torch.Tensor,
             out: torch.Tensor, sem_rows: tuple[Any, ...] | None) -> torch.Tensor:
        """SEM likelihood + L1 + acyclicity penalty, and ICE (scalar). ``sem_rows`` comes from
        :meth:`collect`; the current batch must be its last rows."""
        cfg = self.config
        loss = out.new_zeros(())
        u_batch = None
        if self.use_sem:
            inp, y_all, fill, do = sem_rows
            u = self.sem_heads(inp)
            u_batch = u[u.shape[0] - batch.y.shape[0]:].detach()
            nll = self.sem.neg_log_likelihood(u, y_all, fill, do)
            loss = loss + cfg.lambda_sem * nll + cfg.lambda_l1 * self.sem.effective_weight(
            ).abs().sum()
            # the acyclicity constraint acts after a warm-up (let both directions develop, as
            # NOTEARS' first unconstrained solve) and until the support is frozen to a DAG
            if epoch >= cfg.al_warmup and not self.sem.frozen:
                hval = self.h()
                loss = loss + self.al.penalty(hval)
                self.log("h", hval)
            self.log("sem_nll", nll)
        if self.use_ebm:
            l_ice = self.ice(batch, h, s1, out, u=u_batch)
            loss = loss + cfg.lambda_ice * l_ice
            self.log("ice", l_ice)
        self._logs["_n"] = self._logs.get("_n", 0.0) + 1
        return loss

    def ice(self, batch: Any, h: torch.Tensor, s1: torch.Tensor, out: torch.Tensor,
            u: torch.Tensor | None = None) -> torch.Tensor:
        """ICE loss of the batch; ``u`` = the SEM's unary outputs of the batch (computed from
        ``sem_input`` of the batch's features when not given)."""
        lay, cfg = self.layout, self.config
        y = batch.y
        b, t = y.shape
        obs = ~torch.isnan(y)
        active = obs & ~lay.is_reg
        phi = lay.log_proba(self.ebm_heads(s1))                      # EBM unary [B, T, C]
        if self.use_sem:
            edges, w = self.sem.edge_index, self.sem.effective_weight().abs()
            if not self.sem.frozen:
                # the pairwise energy is undirected: while the acyclicity constraint decides
                # orientations, its gradient would push both directions of a pair alike, so A
                # enters detached until the order is frozen; ICE then refines the magnitudes
                w = w.detach()
        else:
            edges, w = self.feat_edges, s1.new_ones(self.feat_edges.shape[1])
        log_c = self.log_norm(h).squeeze(-1)
        k = max(1, int(cfg.n_negatives))

        if self._n_states_on is None or self._n_states_on.device != y.device:
            self._n_states_on = self.n_states.to(y.device)
        n_states = self._n_states_on
        with torch.no_grad():
            # all K negatives of every row in one draw: K*B rows, row q*B + n is negative q of n
            if self.use_sem:
                u = u.repeat(k, 1, 1)
                edge_mask = self.edge_mask.to(y.device)
                targets, values = random_interventions(
                    k * b, t, n_states, cfg.p_intervene, generator=self.gen,
                    eligible=~lay.is_reg, device=y.device)
                y_k, obs_k = y.repeat(k, 1), obs.repeat(k, 1)
                if batch.do is not None:   # real interventional rows keep their targets
                    do_k = batch.do.repeat(k, 1)
                    targets = torch.where(do_k.any(dim=1, keepdim=True), do_k, targets)
                y_neg = self.sem.sample(u, targets, values, self.generations, edge_mask,
                                        y_fixed=y_k, generator=self.gen)
                # log q of the negatives and of the data under the same interventions, one pass
                lq = self.sem.noise_log_density(u.repeat(2, 1, 1), torch.cat([y_neg, y_k]),
                                                targets.repeat(2, 1), edge_mask,
                                                mask=obs_k.repeat(2, 1)).view(2, k, b)
                lq_negs, lq_data = lq[0], lq[1]
            else:  # SGNN-EBM: factorised noise from the heads' marginals
                lp = lay.log_proba(out)
                probs = torch.where(lay.is_reg[:, None], torch.zeros_like(lp), lp.exp())
                probs[..., 0] = torch.where(lay.is_reg, 1.0, probs[..., 0])
                draw = categorical(probs.expand(k, *probs.shape), self.gen).float()
                y_neg = torch.where(lay.is_reg, torch.nan_to_num(y), draw).reshape(k * b, t)
                idx = torch.nan_to_num(torch.cat([y_neg, y])).long().clamp(0, lp.shape[-1] - 1)
                val = lp.expand(k + 1, *lp.shape).gather(-1, idx.view(k + 1, b, t, 1))[..., 0]
                lq = torch.where(active, val, torch.zeros_like(val)).sum(-1)   # [K+1, B]
                lq_negs, lq_data = lq[:k], lq[k:].expand(k, b)
        # the EBM scores the data and all negatives in one pass: [K+1, B]
        labels = torch.cat([y[None], y_neg.view(k, b, t)])
        idx = torch.nan_to_num(labels).long().clamp(0, phi.shape[-1] - 1)
        unary = phi.expand(k + 1, *phi.shape).gather(-1, idx[..., None])[..., 0]
        unary = torch.where(active, unary, torch.zeros_like(unary)).sum(-1)
        log_p = unary + self.pair.energy(s1, edges, w, idx, active) + log_c
        return ice_loss(log_p[0], lq_data.mean(0), log_p[1:].T, lq_negs.T, kind=cfg.ice_kind)

    def sem_parameters(self) -> list[nn.Parameter]:
        """The SEM's weights and unary heads (the learner trains them at ``sem_lr``)."""
        if not self.use_sem:
            return []
        return [*self.sem.parameters(), *self.sem_heads.parameters()]

    @torch.no_grad()
    def validation_nll(self, u: torch.Tensor, y: torch.Tensor,
                       do: torch.Tensor | None) -> float:
        """The SEM's negative log-likelihood of validation labels given its unary ``u``."""
        return float(self.sem.neg_log_likelihood(u, y, None, do))

    # ------------------------------------------------------------------ schedule
    def on_epoch_end(self, epoch: int, train: Any, layout_cpu: OutputLayout,
                     optimizer: torch.optim.Optimizer | None = None) -> dict[str, float]:
        """Advance the augmented-Lagrangian schedule, freeze the support to a DAG once
        :math:`h(A)` < ``freeze_tol`` (the optimizer's moments of the SEM are then reset), and
        refresh the causal order the negatives are sampled in. ``train`` (a
        :class:`~taskgraph.data.MultiTaskData`) is read only at the freeze, by the likelihood
        refinement of the frozen order. Returns the epoch's structure logs."""
        cfg = self.config
        self._buffer = []
        n = self._logs.pop("_n", 0.0)
        row = {k: float(v) / n for k, v in self._logs.items()} if n else {}
        self._logs = {}
        if not self.use_sem:
            return row
        sem = self.sem
        with torch.no_grad():
            hval = float(self.h())
        if epoch >= cfg.al_warmup and not sem.frozen:
            self.al.update(hval)
            if hval < cfg.freeze_tol:
                do = None if train.do is None else train.do.cpu()
                sem.freeze_support(self.frozen_order(train.x.cpu(), train.y.cpu(), do,
                                                     layout_cpu))
                # forget Adam's moments of the constrained phase (huge penalty gradients would
                # otherwise freeze the refit for ~1/(1-beta2) steps)
                if optimizer is not None:
                    for p in self.sem_parameters():
                        optimizer.state.pop(p, None)
        self.refresh_order()
        return {**row, "h_end": hval, "rho": self.al.rho, "alpha": self.al.alpha,
                "frozen": float(sem.frozen),
                "n_edges": float((sem.effective_weight().abs() > cfg.threshold).sum())}

    def frozen_order(self, x: torch.Tensor, y: torch.Tensor, do: torch.Tensor | None,
                     layout_cpu: OutputLayout) -> list[torch.Tensor]:
        """Topological generations the output SEM is frozen to.

        The skeleton is every edge that survived the constrained phase (``|A| >
        order_threshold``, strongest first, cycle-closing edges dropped), not only those above
        the reporting threshold: the constraint shrinks both directions of a pair, the larger
        survivor carries its decision. With ``refine_orientation`` the orientations of the
        strongest :data:`REFINE_EDGES_PER_TASK` ``* T`` survivors are then refined by exact
        likelihood (:func:`~taskgraph.structure.ice.orient_by_likelihood`; all of them when
        there are at most :data:`REFINE_ALL_UP_TO`: on ``planted_dag``, 10 tasks, a few dozen
        survive and refining them is cheap, while refining only the strongest 20 cost seed 1 of the
        ablation 0.26 directed F1): shrinkage decides
        which direction survives a cycle by magnitude, while the direction that is identifiable
        given ``x`` is the one whose conditional model fits better. The weaker survivors are
        added after them, strongest first, in their own direction unless that closes a cycle
        (on alarm, 37 tasks, 644 of the 1,332 candidate edges survive the constrained phase,
        almost all of them far below ``threshold``, and refining them all took most of an hour).
        """
        cfg = self.config
        gens, kept = self.sem.dag_order(cfg.order_threshold)
        t = len(self.tasks)
        if not cfg.refine_orientation or t > cfg.dense_limit:
            return gens
        src, dst = self.sem.edge_index.cpu()
        w = self.sem.effective_weight().detach().abs().cpu()
        kept = kept.cpu()
        idx = torch.nonzero(kept).flatten()
        idx = idx[torch.argsort(w[idx], descending=True)]
        cap = max(REFINE_EDGES_PER_TASK * t, REFINE_ALL_UP_TO)
        refined = [(int(src[e]), int(dst[e])) for e in idx[:cap]]
        rest = [(int(src[e]), int(dst[e])) for e in idx[cap:]]
        edges = orient_by_likelihood(layout_cpu, x.reshape(len(x), -1).double(), y.double(),
                                     refined, do=do)
        g = nx.DiGraph()
        g.add_nodes_from(range(t))
        g.add_edges_from(edges)
        for a, b in rest:       # strongest first, in their direction, unless closing a cycle
            if not nx.has_path(g, b, a):
                g.add_edge(a, b)
        return [torch.tensor(sorted(gen), dtype=torch.long)
                for gen in nx.topological_generations(g)]

    def refresh_order(self) -> None:
        """The causal order negatives are sampled in: once frozen, every non-zero weight points
        forward in the frozen order, so all are ordered (sampling must respect small edges
        too); before, the graph of the edges above ``threshold``."""
        sem = self.sem
        gens, mask = sem.dag_order(0.0 if sem.frozen else self.config.threshold)
        device = sem.weight.device      # kept where the sampling runs: no copy per step
        self.generations = [g.to(device) for g in gens]
        self.edge_mask = mask.float()

    # ------------------------------------------------------------------ read-outs
    @torch.no_grad()
    def marginals(self, mode: str, u: torch.Tensor | None, s1: torch.Tensor,
                  seed: int) -> torch.Tensor:
        """Per-task marginals ``[B, T, C]``: ``"sem"`` (the SEM over the learned DAG, by
        Rao-Blackwellised ancestral sampling from the unary ``u``), ``"mean_field"`` or
        ``"gibbs"`` (the causal EBM on the node states ``s1``)."""
        if mode == "sem":
            gen = torch.Generator(device=s1.device).manual_seed(int(seed))
            return self.sem.marginals(u, self.generations, generator=gen)
        phi = self.layout.log_proba(self.ebm_heads(s1))
        if self.use_sem:
            edges, w = self.sem.edge_index, self.sem.weight.abs()
        else:
            edges, w = self.feat_edges, s1.new_ones(self.feat_edges.shape[1])
        psi = self.pair(s1, edges, w)
        if mode == "mean_field":
            return self.mrf.mean_field(phi, psi)
        gen = torch.Generator(device=s1.device).manual_seed(int(seed))
        return self.mrf.gibbs(phi, psi, n_sweeps=50, burn_in=10, generator=gen)

    @torch.no_grad()
    def head_outputs(self, mode: str, u: torch.Tensor | None, s1: torch.Tensor,
                     out: torch.Tensor, seed: int) -> torch.Tensor:
        """:meth:`marginals` in the heads' output format ``[B, T, C_max]`` (binary: the logit;
        multiclass: log-probabilities; regression: the SEM's conditional mean in ``"sem"`` mode,
        the heads' value otherwise), so a learner's predictions read them as its heads'."""
        lay = self.layout
        marg = self.marginals(mode, u, s1, seed)
        lp = marg.clamp_min(1e-12).log()
        binary = (lp[..., 1] - lp[..., 0])[..., None].expand_as(lp)
        cls_out = torch.where(lay.is_binary[:, None], binary, lp)[..., : out.shape[-1]]
        reg_out = marg[..., : out.shape[-1]] if mode == "sem" else out
        return torch.where(lay.is_reg[:, None], reg_out, cls_out)

    @torch.no_grad()
    def graph(self, names: list[str], meta: dict[str, Any]) -> TaskGraph:
        """The learned task graph: :math:`A` with ``|A| > threshold``, made a DAG by dropping
        the weakest edge of any remaining cycle; ``raw`` keeps every signed weight and
        ``candidates`` the SEM's search space."""
        t = len(names)
        a = self.dense_a().detach().cpu().double()
        cand = torch.zeros(t, t, dtype=torch.bool)
        cand[self.sem.edge_index[0].cpu(), self.sem.edge_index[1].cpu()] = True
        hval = float(self.h())
        threshold = float(self.config.threshold)
        kept = torch.where(a.abs() > threshold, a, torch.zeros_like(a)).numpy()
        g = TaskGraph(kept, names, raw=a.numpy(), candidates=cand.numpy(), learned=True,
                      meta={**meta, "threshold": threshold,
                            # a cycle too heavy for the dtype has h = +inf (graph meta holds
                            # finite values only)
                            "h": hval if np.isfinite(hval) else "inf"})
        return g.to_dag()

    # ------------------------------------------------------------------ loading
    @staticmethod
    def upgrade_keys(state_dict: dict[str, Any], prefix: str) -> None:
        """Rename the parameters of files saved before this component existed (``sem.*``,
        ``sem_heads.*``, ... directly on the network) to ``structure.*``, in place."""
        for key in list(state_dict):
            rest = key[len(prefix):] if key.startswith(prefix) else None
            if rest is not None and rest.startswith(_OLD_KEYS):
                state_dict[prefix + "structure." + rest] = state_dict.pop(key)
