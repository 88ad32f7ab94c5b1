r"""The training machinery every learner with GCNet's task-graph parts shares: the
structure-prior generator's trivial view, the output-level :class:`CausalStructure` (SEM,
acyclicity schedule, ICE, causal EBM read-outs), the inference-mode choice, model selection and
the learned graph.

:class:`GraphLearner` is a :class:`~taskgraph.learners.base.BaseLearner` holding these parts by
composition (the network is a :class:`~taskgraph.nn.task_graph_net.TaskGraphNet`, the structure
its ``structure`` module); a concrete learner only builds its encoder (and, for the composed
learner, the router) and writes its objective:

- :class:`~taskgraph.learners.GCNet` (and its ablations SGNN, SGNN-EBM): a plain encoder;
- :class:`~taskgraph.learners.CausalGraph`: MT-CRL's modules and invariant routing in front,
  GMTL's joint decoding behind.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import fields
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from taskgraph.data import MultiTaskData
from taskgraph.exceptions import ValidationError
from taskgraph.graph import TaskGraph
from taskgraph.learners.base import BaseLearner, check_choices
from taskgraph.nn.routing import TaskModuleRouter
from taskgraph.nn.shared_readout import SharedReadout
from taskgraph.nn.task_graph_net import TaskGraphNet
from taskgraph.structure.causal import CausalStructure, StructureConfig
from taskgraph.structure.prior import structure_edge_sets, uninformative_loss
from taskgraph.tasks import Task, TaskSet

__all__ = ["GraphLearner"]


#: ``structure_search="auto"`` runs the hybrid search up to this many tasks (alarm has 37): PC's
#: cost grows quickly with the task count, and above it the SEM's graph is reported
AUTO_MAX_TASKS = 40


def _run_hybrid(train: MultiTaskData) -> dict[str, Any]:
    """:func:`~taskgraph.structure.score_search.hybrid_search` on ``train``, with the error
    naming ``structure_search``."""
    from taskgraph.structure.score_search import hybrid_search

    if not all(t.is_classification for t in train.tasks):
        raise ValidationError("structure_search: 'hybrid' scores discrete labels; every task "
                              "must be a classification task (use 'sem')")
    dag, und, info = hybrid_search(train)
    return {"dag": dag, "undirected": und, "info": info}


class GraphLearner(BaseLearner):
    r"""Base of the learners whose model is a :class:`TaskGraphNet` with a learned causal task
    graph (not registered itself).

    Args:
        candidates: ``"all"`` ordered pairs (default when ``T <= dense_limit``), ``"heuristic"``
            (label-correlation top-``k_candidates`` partners), ``"pc"`` (causal-learn's PC
            skeleton on the training labels, the candidate set of both levels), a
            :class:`TaskGraph` or an ``edge_index``. With ``T <= dense_limit`` the output-level
            structure is searched over all pairs even when the feature level uses a sparser
            graph (not with ``"pc"``), so it may add edges a heuristic or given graph missed.
        graph (TaskGraph, optional): a user-given (possibly wrong) task graph: the feature-level
            message passing starts on it and the SEM weights of its edges start at 0.5.
        node_dim (int): task node state width (default: 32).
        threshold (float): ``|A|`` above which an edge is in ``task_graph_`` (default: 0.3).
        lambda_sem, lambda_l1, lambda_ice, lambda_trivial, lambda_prior_l1 (float): loss weights.
        p_intervene (float): per-task intervention probability of ICE negatives (default 0.2).
        n_negatives (int): negatives per positive; ``ice_kind`` ``"binary"`` or ``"ranking"``.
        acyclicity (str): ``"expm"``, ``"poly"`` or ``"sparse"`` (default: ``"expm"``; sparse is
            used automatically above ``dense_limit`` tasks).
        rho, rho_max (float): augmented-Lagrangian schedule.
        inference_mode (str): how ``predict_proba`` gets ``p(y_k | x)``: ``"heads"`` (the
            causal-view heads), ``"sem"`` (marginals of the output SEM over the learned DAG, by
            Rao-Blackwellised ancestral sampling), ``"mean_field"`` or ``"gibbs"`` (marginals of
            the causal EBM), ``"share"`` (the ``share`` read-out below), or ``"auto"``
            (default: heads, SEM or the ``share`` read-out when fitted, whichever has the lower
            validation loss; chosen at the end of ``fit`` and kept in ``inference_``).
        share (bool or str): the ``share`` read-out
            (:class:`~taskgraph.nn.shared_readout.SharedReadout`): after training, per-task
            linear heads on ``[encoder(x), x]`` refitted on the labelled rows under a learned
            relatedness-graph prior, so a task with few labels borrows its related tasks'
            heads (``graph_share``'s read-out, docs/graph_share.md). ``"auto"``: fitted when
            the training labels are sparse (fewer than half of the (row, task) labels observed)
            and validation data is there to choose; ``True`` always; ``False`` never. The
            relatedness graph is ``task_graph_.meta["relatedness"]`` (a JSON list of
            ``[task, task, signed cosine]``, named apart from the causal edges) and
            ``relatedness_graph_``. (default: :obj:`"auto"`)
        bootstrap (int): when the reported graph is the hybrid search's, rerun the search on
            this many row resamples (with replacement) and export each edge's frequency as
            ``task_graph_.confidence`` (the edge attribute ``confidence`` in every export;
            :func:`~taskgraph.structure.bootstrap.bootstrap_confidence`). Each resample costs
            one search (0.5 s on asia, about 25 s on alarm). 0 switches it off.
            (default: :obj:`0`)
        prior (bool): the structure-prior generator weights the messages (off: uniform
            weights, as SGNN). (default: ``True``)
        structure (bool): learn the output-level causal graph (SEM, acyclicity, ICE negatives);
            off, ``task_graph_`` is the fixed feature-level graph. (default: ``True``)
        ebm (bool): the causal EBM trained by ICE. (default: ``True``)
        message_passing (bool): message passing between task nodes (off: every task reads its
            own node state; the prior generator is then unused). (default: ``True``)
        structure_every (int): the structure-level objective (trivial view, SEM, acyclicity,
            ICE) runs every this many batches; the SEM likelihood then covers the rows of all of
            them (default: 1; larger values cut the per-step cost but give the SEM fewer
            optimisation steps, see :meth:`_structure_step`).
        structure_search (str): how the output-level graph is found. ``"sem"``: the output
            SEM's weights under the acyclicity schedule, thresholded. ``"hybrid"`` (every task
            a classification task): causal-learn's PC skeletons, then greedy search for the DAG
            with the best interventional BIC score
            (:func:`~taskgraph.structure.score_search.hybrid_search`); edges the data cannot
            orient are marked undirected, and the SEM, ICE and EBM are fitted along the found
            DAG. ``"auto"``: with every task a classification task (and at most
            :data:`AUTO_MAX_TASKS` tasks), both graphs after the fit; the hybrid DAG when
            the features are effects of the labels (sensors: conditioning on the labels
            removes the features' dependence,
            :func:`~taskgraph.structure.score_search.feature_direction`), else the one with
            the lower BIC of the labels given ``x``
            (:func:`~taskgraph.structure.score_search.conditional_bic`) reported (then
            ``inference_mode="auto"`` does not pick the SEM's marginals if the hybrid graph
            won); otherwise ``"sem"``. (default: :obj:`"auto"`; docs/gcnet.md has the
            measurements)
    """

    learns_structure = True

    def __init__(
        self,
        tasks: TaskSet | builtins.list[Task | str],
        *,
        candidates: Any = "auto",
        graph: TaskGraph | None = None,
        k_candidates: int = 5,
        dense_limit: int = 64,
        node_dim: int = 32,
        threshold: float = 0.3,
        lambda_sem: float = 1.0,
        lambda_l1: float = 0.01,
        lambda_ice: float = 0.1,
        lambda_trivial: float = 0.5,
        lambda_prior_l1: float = 0.05,
        p_intervene: float = 0.2,
        n_negatives: int = 1,
        ice_kind: str = "binary",
        acyclicity: str = "expm",
        rho: float = 1.0,
        rho_max: float = 1e5,
        rho_mult: float = 10.0,
        al_warmup: int = 5,
        sem_lr: float = 3e-2,
        freeze_tol: float = 1e-2,
        order_threshold: float = 1e-3,
        refine_orientation: bool = True,
        inference_mode: str = "auto",
        sem_unary: str = "linear",
        prior: bool = True,
        structure: bool = True,
        ebm: bool = True,
        message_passing: bool = True,
        structure_every: int = 1,
        structure_search: str = "auto",
        share: bool | str = "auto",
        bootstrap: int = 0,
        lr: float = 3e-3,
        validation_fraction: float | None = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(tasks, lr=lr, validation_fraction=validation_fraction, **kwargs)
        self._store_params(locals())

    #: constructor arguments renamed since files were saved: old name -> new name
    _param_aliases: ClassVar[dict[str, str]] = {"sem": "structure"}

    @property
    def _prior_on(self) -> bool:
        """The prior generator weights messages only where there is message passing."""
        return bool(self.prior) and bool(self.message_passing)

    # ------------------------------------------------------------------ building
    def _check_params(self) -> None:
        if isinstance(self.bootstrap, bool) or not isinstance(self.bootstrap, int) or (
                self.bootstrap < 0):
            raise ValidationError(f"bootstrap: expected a number of resamples >= 0, got "
                                  f"{self.bootstrap!r}")
        if not (isinstance(self.share, (bool, np.bool_)) or self.share == "auto"):
            raise ValidationError(f"share: expected True, False or 'auto', got {self.share!r}")
        if self.inference_mode == "share" and self.share is False:
            raise ValidationError("inference_mode: 'share' needs share=True or 'auto'")
        check_choices(self, {"inference_mode": ("auto", "heads", "sem", "mean_field", "gibbs",
                                                "share"),
                             "structure_search": ("auto", "sem", "hybrid"),
                             "acyclicity": ("expm", "poly", "sparse"),
                             "sem_unary": ("linear", "encoder"),
                             "ice_kind": ("binary", "ranking")})
        if self.inference_mode == "sem" and not self.structure:
            raise ValidationError("inference_mode: 'sem' needs structure=True")
        if not isinstance(self.structure_every, int) or self.structure_every < 1:
            raise ValidationError(f"structure_every: expected a positive integer, got "
                                  f"{self.structure_every!r}")
        if not 0 < self.p_intervene <= 1:
            raise ValidationError(f"p_intervene: expected a probability in (0, 1], got "
                                  f"{self.p_intervene!r}")
        if self.ebm and not self.structure and type(self).name != "sgnn_ebm":
            raise ValidationError("ebm: the causal EBM's ICE negatives come from the output SEM; "
                                  "set structure=True (or use the 'sgnn_ebm' learner)")
        if self.graph is not None and not isinstance(self.graph, TaskGraph):
            raise ValidationError(f"graph: expected a TaskGraph, got {type(self.graph).__name__}")

    def _edge_sets(self, train: MultiTaskData | None, t: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(feature-level edges, output-level SEM edges, initial SEM weights or None)``
        (:func:`~taskgraph.structure.prior.structure_edge_sets`)."""
        feat, sem, init = structure_edge_sets(
            self.candidates, self.graph, self.tasks_set_.names, y=None if train is None
            else train.y, data=train, loading=train is None, k=int(self.k_candidates),
            dense_limit=int(self.dense_limit), structure=bool(self.structure))
        self._hybrid: dict[str, Any] | None = None
        if self.structure and self.structure_search == "hybrid":
            # the SEM is fitted along the hybrid search's DAG (its edges come from the file
            # when loading)
            sem = torch.zeros(2, 0, dtype=torch.long)
            if train is not None:
                self._hybrid = _run_hybrid(train)
                sem = torch.as_tensor(np.stack(np.nonzero(self._hybrid["dag"]))).long()
            init = torch.full((sem.shape[1],), 0.5)
        return feat, sem, init

    def _graph_net(self, encoder: nn.Module, feature_shape: tuple[int, ...],
                   train: MultiTaskData | None, node_dim: int,
                   router: TaskModuleRouter | None = None) -> TaskGraphNet:
        """The :class:`TaskGraphNet` on ``encoder`` (and ``router``) with this learner's edge sets
        and :class:`CausalStructure`."""
        self.__dict__.pop("inference_", None)
        self._share = SharedReadout()
        feat_edges, sem_edges, init = self._edge_sets(train, len(self.tasks_set_))
        sem_in = (int(np.prod(feature_shape)) if self.sem_unary == "linear"
                  else int(encoder.out_dim))
        return TaskGraphNet(encoder, self.tasks_set_, feat_edges, node_dim, self._prior_on,
                            self._structure_factory(train, sem_edges, feat_edges, init, sem_in),
                            router=router, message_passing=bool(self.message_passing))

    def _config(self) -> StructureConfig:
        return StructureConfig(**{f.name: getattr(self, f.name)
                                  for f in fields(StructureConfig)})

    def _structure_factory(self, train: MultiTaskData | None, sem_edges: torch.Tensor,
                           feat_edges: torch.Tensor, init: torch.Tensor | None, sem_in: int
                           ) -> Callable[[int, int], nn.Module] | None:
        """Builds the :class:`CausalStructure` inside the network (``None`` when neither the
        SEM nor the EBM is on)."""
        self._trivial_sum: torch.Tensor | None = None    # the epoch's trivial-view losses, summed
        self._trivial_n = 0
        self._plain_batches = 0         # batches of the epoch, when there is no structure part
        sem, ebm = bool(self.structure), bool(self.ebm)
        if not (sem or ebm):
            return None
        tasks, layout, config = self.tasks_set_, self.layout_, self._config()
        device = self.device_

        def build(node_dim: int, feat_dim: int) -> CausalStructure:
            return CausalStructure(tasks, layout, sem_edges, feat_edges, node_dim=node_dim,
                                   feat_dim=feat_dim, sem_in=sem_in, sem=sem, ebm=ebm,
                                   sem_init=init, config=config, device=device)

        return build

    @property
    def _edgeless(self) -> bool:
        """No candidate edge at either level (``causal_graph`` with every pair dropped by
        ``shifting_pairs="drop"``, or a candidate search that found none): the trivial view
        and the structure-level objective have nothing to act on and are skipped, and model
        selection reads the task loss alone."""
        net = self.model_
        st = net.structure
        n_sem = 0 if st is None or st.sem is None else int(st.sem.edge_index.shape[1])
        return int(net.edge_index.shape[1]) == 0 and n_sem == 0

    @property
    def _structure(self) -> CausalStructure:
        return self.model_.structure

    def _sem_input(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Input of the SEM's unary heads: the raw features (``sem_unary="linear"``) or the
        encoder output ``h``."""
        return x.reshape(x.shape[0], -1) if self.sem_unary == "linear" else h

    def _sem_unary(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The SEM's parent-free outputs ``u(x)``: linear in the raw features (default: the
        logistic SEM given ``x`` whose directions are identifiable), or on the encoder output."""
        return self._structure.sem_heads(self._sem_input(x, h))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.model_
        mode = getattr(self, "inference_",
                       "heads" if self.inference_mode == "auto" else self.inference_mode)
        if mode == "share" and not net.training and self._share.fitted:
            return self._share(SharedReadout.features(net.encoder, x))
        if net.training or mode == "heads" or mode == "share" or (
                mode != "sem" and not self.ebm):
            return net(x)
        h, _, _, s1 = net.states(x)
        out = net.heads(s1)
        u = self._sem_unary(x, h) if mode == "sem" else None
        return self._structure.head_outputs(mode, u, s1, out, int(self.seed))

    def _choose_inference(self, val: MultiTaskData | None) -> str:
        """``inference_mode="auto"``: the mode with the lowest validation task loss among the
        heads and, when present, the SEM marginals and the ``share`` read-out (``"heads"``
        without validation data)."""
        if self.inference_mode == "share" and not self._share.fitted:
            return "heads"
        if self.inference_mode != "auto":
            return self.inference_mode
        modes = ["heads"]
        if self.structure and self._structure.frozen and not (
                getattr(self, "_hybrid", None) is not None and self.structure_search == "auto"):
            modes.append("sem")  # not when the reported graph is the hybrid's: marginals off
        if self._share.fitted:
            modes.append("share")
        if val is None or len(modes) == 1:
            return "heads"
        losses = {}
        for mode in modes:
            self.inference_ = mode
            losses[mode] = self._val_loss(val)
        return min(losses, key=losses.get)

    def _structure_step(self, batch: Any, epoch: int, h: torch.Tensor, s0: torch.Tensor,
                        w: torch.Tensor, s1: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The trivial view (the prior's complement must carry no information) and the
        :class:`CausalStructure` objective, when it says they are due
        (:meth:`CausalStructure.collect`); 0 on the other batches."""
        net, st = self.model_, self.model_.structure
        if self._edgeless:        # nothing to score, weight or orient
            return out.new_zeros(())
        if st is None:            # prior generator only: the same every-k-th-batch schedule
            self._plain_batches += 1
            due, rows = self._plain_batches % int(self.structure_every) == 0, None
        else:
            due, rows = st.collect(batch, out, self._sem_input(batch.x, h))
        if not due:
            return out.new_zeros(())
        loss = out.new_zeros(())
        if self._prior_on:
            triv = net.heads(net.mp.messages(s0, net.edge_index, 1.0 - w))
            l_triv = uninformative_loss(self.layout_, triv)
            loss = loss + self.lambda_trivial * l_triv
            v = l_triv.detach().double()
            self._trivial_sum = v if self._trivial_sum is None else self._trivial_sum + v
            self._trivial_n += 1
        if st is not None:
            loss = loss + st.loss(batch, epoch, h, s1, out, rows)
        return loss

    def _param_groups(self, lr: float) -> builtins.list[dict[str, Any]]:
        """The output SEM (its weights and linear unary) learns at ``sem_lr``: a convex-ish
        logistic fit that must converge within the run for the structure to be identified."""
        net = self.model_
        if not self.structure:
            return super()._param_groups(lr)
        sem_params = self._structure.sem_parameters()
        ids = {id(p) for p in sem_params}
        rest = [p for p in net.parameters() if id(p) not in ids and p.requires_grad]
        return [{"params": rest}, {"params": sem_params, "lr": float(self.sem_lr)}]

    @torch.no_grad()
    def _selection_loss(self, val: MultiTaskData, sharded: bool = False) -> float:
        """Validation task loss plus the SEM's validation negative log-likelihood; epochs before
        the structure is frozen to a DAG are ineligible (``inf``): a cyclic SEM's conditional
        likelihood is not a likelihood, and restoring such an epoch would discard the learned
        structure."""
        task = super()._selection_loss(val, sharded=sharded)
        if not self.structure or self._edgeless:
            return task
        if not self._structure.frozen:
            return float("inf")
        self.model_.eval()
        x, y = val.x.to(self.device_), val.y.to(self.device_)
        h = self.model_.states(x)[0]
        do = None if val.do is None else val.do.to(self.device_)
        nll = self._structure.validation_nll(self._sem_unary(x, h), y, do)
        return task + self.lambda_sem * nll

    def _on_epoch_end(self, epoch: int, train: MultiTaskData,
                      optimizer: torch.optim.Optimizer | None = None) -> dict[str, float]:
        row = {}
        if self._trivial_n:
            row["trivial"] = float(self._trivial_sum) / self._trivial_n
        self._trivial_sum, self._trivial_n = None, 0
        self._plain_batches = 0
        st = self.model_.structure
        if st is None:
            return row
        return {**row, **st.on_epoch_end(epoch, train, self._cpu_layout(), optimizer)}

    def _after_fit(self, train: MultiTaskData, val: MultiTaskData | None) -> None:
        super()._after_fit(train, val)
        if self.structure_search == "auto" and self.structure:
            if len(self.tasks_set_) > AUTO_MAX_TASKS:
                self._part_inactive("hybrid", f"structure_search='auto' kept the SEM's graph: "
                                    f"the hybrid search runs up to {AUTO_MAX_TASKS} tasks, this "
                                    f"data has {len(self.tasks_set_)}", warn=False)
            elif not all(t.is_classification for t in self.tasks_set_):
                self._part_inactive("hybrid", "structure_search='auto' kept the SEM's graph: the "
                                    "hybrid search scores discrete labels and this data has "
                                    "regression tasks", warn=False)
            else:
                self._auto_structure(train)
        hybrid = getattr(self, "_hybrid", None)
        if hybrid is not None and int(self.bootstrap) > 0 and "confidence" not in hybrid:
            from taskgraph.structure.bootstrap import bootstrap_confidence, hybrid_adjacency

            excluded = self._excluded_pairs()
            search = None if excluded is None else (
                lambda d: hybrid_adjacency(d) & ~excluded)
            hybrid["confidence"] = bootstrap_confidence(train, search, n_boot=int(
                self.bootstrap), seed=int(self.seed))
            self.task_graph_ = self._learned_graph()
        self._fit_share(train, val)
        if self._share.fitted:
            self.task_graph_ = self._learned_graph()
        self.inference_ = self._choose_inference(val)

    #: ``share="auto"`` fits the read-out below this share of observed (row, task) labels
    SHARE_AUTO_MAX_LABELLED = 0.5

    def _excluded_pairs(self) -> np.ndarray | None:
        """``[T, T]`` bool mask of pairs no reported graph may join (``None``: none); the
        composed learner rules out pairs whose association shifts across environments."""
        return None

    def _fit_share(self, train: MultiTaskData, val: MultiTaskData | None) -> None:
        """The ``share`` read-out (:class:`~taskgraph.nn.shared_readout.SharedReadout`), fitted
        on the trained encoder's features when ``share`` says so; the reason it was not is
        recorded as ``history_[-1]["share_skipped"]``."""
        self._share = SharedReadout()
        if self.share is False:
            return
        labelled = float((~torch.isnan(train.y)).double().mean()) if train.y.numel() else 0.0
        if self.share == "auto":
            if labelled >= self.SHARE_AUTO_MAX_LABELLED:
                return          # dense labels: the read-out is not this data's part
            if val is None:
                self._part_inactive("share", "share='auto' fitted no shared read-out: no "
                                    "validation data to choose it on (pass val or "
                                    "validation_fraction)", warn=False)
                return
        net = self.model_
        net.eval()

        @torch.no_grad()
        def phi(data: MultiTaskData, batch_size: int = 4096) -> torch.Tensor:
            return torch.cat([SharedReadout.features(net.encoder, data.x[i:i + batch_size]
                                                     .to(self.device_))
                              for i in range(0, len(data), batch_size)])

        phi_train = phi(train)
        n_trunk = phi_train.shape[1] - int(np.prod(self.feature_shape_))   # encoder columns
        self._share.fit(phi_train, train.y.to(self.device_), self.layout_,
                        net.heads.col_mask, n_trunk,
                        None if val is None else phi(val),
                        None if val is None else val.y.to(self.device_))
        if self.history_:
            rec = self._share.record
            self.history_[-1].update(share_strength=float(rec["strength"]),
                                     share_val_loss=float(rec["val_loss"]),
                                     share_val_loss_without_graph=float(
                                         rec["val_loss_without_graph"]))

    @property
    def relatedness_graph_(self) -> TaskGraph | None:
        """The ``share`` read-out's signed relatedness graph (undirected: both directions,
        weight = the cosine of the two tasks' heads; ``learned=True``,
        ``meta["relation"] = "relatedness"``), or ``None`` when the read-out was not fitted.
        Not a causal graph: ``task_graph_`` holds the causal one."""
        part = getattr(self, "_share", None)
        if part is None or not part.fitted:
            return None
        strength = float(part.record.get("strength", 0.0))
        adj = part.adjacency.double().numpy() if strength > 0 else np.zeros(
            tuple(part.adjacency.shape))
        return TaskGraph(adj, self.tasks_set_.names, learned=True,
                         meta={"learner": self.name, "relation": "relatedness",
                               "undirected": True, "strength": strength})

    def _share_meta(self) -> dict[str, Any]:
        """``{"relatedness": JSON [[task, task, cosine], ...]}`` when the ``share`` read-out
        shares along a graph (each pair once), else ``{}``."""
        g = self.relatedness_graph_
        if g is None or not g.n_edges:
            return {}
        import json

        names, adj = self.tasks_set_.names, g.adjacency
        pairs = [[names[i], names[j], float(adj[i, j])]
                 for i, j in zip(*np.nonzero(np.triu(adj != 0, 1)))]
        return {"relatedness": json.dumps(pairs)}

    def _auto_structure(self, train: MultiTaskData) -> None:
        """``structure_search="auto"``: the hybrid search's DAG when the features sit downstream
        of the labels (:func:`~taskgraph.structure.score_search.feature_direction`), otherwise
        the SEM's graph or the hybrid DAG, whichever has the lower
        :func:`~taskgraph.structure.score_search.conditional_bic` on ``train`` (both judged as
        models of the labels given ``x``); recorded in the graph's meta and in ``history_``
        (``structure_search``, ``feature_direction``, ``bic_sem``, ``bic_hybrid``)."""
        from taskgraph.structure.score_search import conditional_bic, feature_direction

        self._hybrid = None
        sem_graph = self._learned_graph().adjacency != 0
        try:
            hybrid = _run_hybrid(train)
        except ValidationError as err:
            # e.g. too few rows with every label observed for PC (sparse labels): keep the SEM's
            self._part_inactive("hybrid", str(err), warn=False)
            if self.history_:
                self.history_[-1].update(structure_search="sem")
            return
        excluded = self._excluded_pairs()
        if excluded is not None:        # pairs the learner ruled out stay out of this graph too
            hybrid["dag"] = hybrid["dag"] & ~excluded
            hybrid["undirected"] = hybrid["undirected"] & ~excluded
        direction = feature_direction(train, seed=int(self.seed))
        record: dict[str, Any] = {"feature_direction": direction["verdict"]}
        if direction["verdict"] == "downstream":
            # the features are effects of the labels: the labels' own distribution carries the
            # task graph, and the comparison given x would condition on the labels' descendants
            chosen = "hybrid"
        else:
            bic_sem = conditional_bic(train, sem_graph)
            bic_hybrid = conditional_bic(train, hybrid["dag"])
            record.update(bic_sem=bic_sem, bic_hybrid=bic_hybrid)
            chosen = "hybrid" if bic_hybrid < bic_sem else "sem"
        hybrid["info"].update(record)
        if chosen == "hybrid":
            self._hybrid = hybrid
        self.task_graph_ = self._learned_graph()
        if self.history_:
            self.history_[-1].update(structure_search=chosen, **record)

    def _train_state(self) -> dict[str, Any]:
        st = self.model_.structure
        state = {} if st is None else st.train_state()
        if hasattr(self, "inference_"):
            state["inference"] = self.inference_
        share = getattr(self, "_share", None)
        if share is not None and share.fitted:
            state["share"] = share.state()
        hybrid = getattr(self, "_hybrid", None)
        if hybrid is not None:
            state["hybrid"] = {"dag": hybrid["dag"].tolist(),
                               "undirected": hybrid["undirected"].tolist(),
                               "info": hybrid["info"]}
            if "confidence" in hybrid:
                state["hybrid"]["confidence"] = np.asarray(hybrid["confidence"]).tolist()
        return state

    def _load_train_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if "inference" in state:
            self.inference_ = state["inference"]
        if state.get("share") is not None:
            self._share.load_state(state["share"])
        if "hybrid" in state:
            h = state["hybrid"]
            self._hybrid = {"dag": np.asarray(h["dag"], dtype=bool),
                            "undirected": np.asarray(h["undirected"], dtype=bool),
                            "info": h["info"]}
            if "confidence" in h:
                self._hybrid["confidence"] = np.asarray(h["confidence"], dtype=np.float64)
        st = self.model_.structure
        if st is not None and "al" in state:
            st.load_train_state(state)

    # ------------------------------------------------------------------ graph
    def _learned_graph(self) -> TaskGraph:
        names = self.tasks_set_.names
        t = len(names)
        net = self.model_
        if not self.structure:
            feat = torch.zeros(t, t, dtype=torch.bool)
            feat[net.edge_index[0].cpu(), net.edge_index[1].cpu()] = True
            return TaskGraph(feat.double().numpy(), names, learned=False,
                             candidates=feat.numpy(),
                             meta={"learner": self.name, "note": "feature-level graph (fixed)",
                                   **self._share_meta()})
        g = self._structure.graph(names, {"learner": self.name, **self._share_meta()})
        hybrid = getattr(self, "_hybrid", None)
        if hybrid is None:
            return g
        from taskgraph.structure.score_search import search_graph

        return search_graph(hybrid["dag"], hybrid["undirected"], names, raw=g.raw,
                            candidates=g.candidates, learned=True,
                            confidence=hybrid.get("confidence"),
                            meta={**g.meta, "structure_search": "hybrid",
                                  **{f"hybrid_{k}": v for k, v in hybrid["info"].items()}})

