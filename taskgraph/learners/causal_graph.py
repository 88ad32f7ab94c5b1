r"""The composed learner: one model in which the learned causal task graph decides what is
shared, with MT-CRL's routing and GMTL's joint inference as node-level parts.

.. code-block:: text

    x ─ ModularEncoder ─ z[B, K, m] ─ routing g[T, K] ─ s0[B, T, d] ─ message passing over
        (MT-CRL)                       + invariance      task nodes      the learned graph
                                                                         (GCNet) ─ s1 ─ heads
                                                                                         │
    predict: per-task argmax, or GMTL joint decoding with a prior factorised over the
             learned graph's non-invariant couplings                                    ─┘

1. **Modules and routing** (MT-CRL): task ``t``'s node state is the projected gated read-out
   :math:`\mathbf{s}^{(0)}_t = \mathrm{ReLU}(\sum_k g_{tk}\mathbf{P}_k\mathbf{z}_k +
   \mathbf{c}_t)` (a linear map of :math:`[g_{t1}\mathbf{z}_1 \| \cdots \| g_{tK}\mathbf{z}_K]`
   to ``node_dim``, so the node width does not grow with the encoder) of the encoder's
   modules, with the L1 routing sparsity, the module decorrelation and the IRMv1 invariance
   penalty on the gates across environments (given ``env`` × label strata).
2. **Learned task graph** (GCNet): the structure-prior generator weights the candidate edges,
   one round of :class:`~taskgraph.nn.message_passing.TaskMessagePassing`
   :math:`\mathbf{s}^{(1)}_j = \mathbf{s}^{(0)}_j + \mathrm{ReLU}(\mathbf{W}_{\text{self}}
   \mathbf{s}^{(0)}_j + \sum_{i \to j} w_{ij} m_{ij} \mathbf{W}_{\text{msg}}\mathbf{s}^{(0)}_i)`
   where :math:`m_{ij} = 1` before the output-level structure is frozen and
   :math:`m_{ij} = \mathbb{1}[i \to j \in \hat G]` after it (messages then flow only along the
   learned causal edges); the output SEM with the acyclicity constraint and the causal EBM
   trained by ICE learn :math:`\hat G` exactly as in :class:`~taskgraph.learners.GCNet`.
3. **Joint inference** (GMTL): ``predict`` decodes all tasks jointly with a prior factorised over
   a graph (``gmtl``, a :class:`~taskgraph.inference.graph_decoding.GraphDecoding` part):
   ``"shifting"`` (default) couples the pairs whose label association differs across the
   training environments (the couplings expected to shift; the learned graph does not veto a
   pair, since a spurious learned edge would then switch the decoding off), ``"graph"`` the
   skeleton of :math:`\hat G`. Per-task temperatures are fitted on the validation data;
   ``predict_proba`` stays the per-task marginals.

Every part has a switch (``routing``, ``invariance=0``, ``message_passing``, ``structure``,
``ebm``, ``gmtl=None``), so the ablations are this class. ``docs/architecture.md`` shows how a
new node-level part plugs in.
"""

from __future__ import annotations

import builtins
import json
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from taskgraph.data import MultiTaskData
from taskgraph.environments import RoutingInvariance, check_nonnegative, mean_task_loss
from taskgraph.exceptions import ValidationError
from taskgraph.graph import TaskGraph
from taskgraph.inference.graph_decoding import DECODING_MODES, GraphDecoding
from taskgraph.learners.base import check_choices, register
from taskgraph.learners.graph_learner import GraphLearner
from taskgraph.nn.routing import TaskModuleRouter
from taskgraph.regularizers import CONDITIONAL_KINDS, decorrelation
from taskgraph.tasks import Task, TaskSet

__all__ = ["CausalGraph"]

def _pairs_json(names: builtins.list[str], pairs: Any) -> str:
    """Task-name pairs as a JSON string (graph metadata values are scalars)."""
    return json.dumps([[names[int(i)] for i in p] for p in pairs])


@register("causal_graph")
class CausalGraph(GraphLearner):
    r"""Causal multi-task learner: modules + invariant routing (MT-CRL) → task nodes → message
    passing over the learned causal task graph (GCNet) → heads → GMTL joint inference.

    Args:
        n_modules (int): encoder modules ``K`` (a :class:`encoders.ModularEncoder` passed as
            ``encoder`` keeps its own). (default: :obj:`4`)
        module_mode (str): ``"split"`` (blocks of the backbone's last layer) or ``"separate"``
            when a plain backbone is wrapped. (default: :obj:`"split"`)
        routing (bool): learn the task → module gates; ``False`` reads every module with gate
            1 (no routing, so no invariance penalty). (default: :obj:`True`)
        gate_init (float): initial gate. (default: :obj:`0.5`)
        sparsity (float): L1 weight on the gates. (default: :obj:`1e-2`)
        decorrelation (float): module decorrelation weight (off by default, as in
            :class:`~taskgraph.learners.MTCRL`; docs/mtcrl.md). (default: :obj:`0.0`)
        invariance (float): IRMv1 weight on the gates after ``warmup_steps``; 0 switches the
            penalty off. (default: :obj:`5.0`)
        invariance_kind (str): ``"irmv1"`` (on the gates, with the intercept dummy), or the
            conditional independence penalty ``"cind"`` (class probabilities),
            ``"cind_state"`` (gated, standardised modules) or ``"cind_loss"`` (per-example
            loss), as in :class:`~taskgraph.learners.MTCRL`. (default: :obj:`"irmv1"`)
        warmup_steps (int), warmup_invariance (float), unbiased_invariance (bool),
            invariance_memory (float), balanced_sampling (float), environments (str),
            rebalance (bool, optional), max_envs (int): as in
            :class:`~taskgraph.learners.MTCRL`.
        min_env_rows (float): as in :class:`~taskgraph.learners.MTCRL`: environments with
            fewer effective rows in a batch do not enter the penalty. (default: :obj:`16`)
        message_passing (bool): message passing between task nodes (off: the heads read
            :math:`\mathbf{s}^{(0)}`; the prior generator is then off too). (default: True)
        mp_graph (str): ``"learned"`` (messages only along :math:`\hat G` once frozen) or
            ``"prior"`` (the prior generator's weights on every candidate edge, as GCNet).
            (default: :obj:`"learned"`)
        structure (bool): learn the output-level causal graph (SEM, acyclicity, ICE); off, the
            message passing uses the prior generator's weights only and ``task_graph_`` has no
            task → task edges. (default: :obj:`True`)
        ebm (bool): the causal EBM trained by ICE. (default: :obj:`True`)
        gmtl (str, optional): ``"shifting"``, ``"graph"`` or ``None`` (per-task argmax).
            (default: :obj:`"shifting"`)
        alpha (float): GMTL's prior weight :math:`\alpha \ge 0`. (default: :obj:`1.0`)
        shift_z (float): threshold of the environment-heterogeneity test. (default: 4.0)
        shifting_pairs (str): ``"drop"``: pairs of tasks whose label association differs
            across the given training environments
            (:func:`~taskgraph.structure.invariance.heterogeneous_pairs` at ``shift_z``, the
            pairs GMTL's ``"shifting"`` prior couples) are removed from the candidate edges of
            the message passing, the output SEM and the EBM, and from the reported graph: an
            association that changes with the environment is not one to pass messages along
            or to explain by a causal edge; but a true edge into a confounded task shifts too
            (``causal_mtl`` seed 2 flags its confounded pair and one true edge), so it is not
            the default (docs/mtcrl.md, "causal_graph on Multi-MNIST"). ``"keep"``: every
            candidate stays. Without two environments nothing is dropped.
            (default: :obj:`"keep"`)
        **kwargs: :class:`~taskgraph.learners.graph_learner.GraphLearner` arguments
            (``threshold``, ``lambda_*``, ``acyclicity``, ``structure_every``, ...) and the
            :class:`~taskgraph.learners.base.BaseLearner` ones.

    Attributes:
        task_graph_ (TaskGraph): the learned task → task DAG (``adjacency``, ``raw``) and the
            module → task routing (``routing``, ``modules``); ``meta["gmtl_pairs"]`` lists the
            pairs the GMTL prior couples (a JSON string of name pairs) and ``meta["parts"]`` the
            parts switched on.
        gmtl_ (GMTL or None): the fitted joint decoder ``predict`` uses (a
            :class:`~taskgraph.inference.graph_decoding.GraphDecoding` part holds it).
    """

    conformance_kwargs: ClassVar[dict[str, Any]] = {"warmup_steps": 2}

    def __init__(
        self,
        tasks: TaskSet | builtins.list[Task | str],
        *,
        n_modules: int = 4,
        module_mode: str = "split",
        routing: bool = True,
        gate_init: float = 0.5,
        sparsity: float = 1e-2,
        decorrelation: float = 0.0,
        decorrelation_units: int | None = 16,
        invariance: float = 5.0,
        invariance_kind: str = "irmv1",
        warmup_steps: int = 100,
        warmup_invariance: float = 1.0,
        unbiased_invariance: bool = False,
        min_env_rows: float = 16.0,
        invariance_memory: float = 1.0,
        balanced_sampling: float = 0.0,
        environments: str = "auto",
        rebalance: bool | None = None,
        max_envs: int = 16,
        message_passing: bool = True,
        mp_graph: str = "learned",
        structure: bool = True,
        ebm: bool = True,
        gmtl: str | None = "shifting",
        alpha: float = 1.0,
        shift_z: float = 4.0,
        shifting_pairs: str = "keep",
        **kwargs: Any,
    ) -> None:
        super().__init__(tasks, ebm=ebm, structure=structure, message_passing=message_passing,
                         **kwargs)
        self._store_params(locals())

    # ------------------------------------------------------------------ building
    def _check_params(self) -> None:
        if self.ebm and not self.structure:
            raise ValidationError("ebm: the causal EBM is trained against the learned "
                                  "structure's interventions; with structure=False pass "
                                  "ebm=False")
        super()._check_params()
        check_choices(self, {"module_mode": ("split", "separate"),
                             "mp_graph": ("learned", "prior"), "gmtl": (*DECODING_MODES, None),
                             "shifting_pairs": ("drop", "keep"),
                             "invariance_kind": ("irmv1", *CONDITIONAL_KINDS)})
        if self.gmtl == "graph" and not self.structure:
            raise ValidationError("gmtl: 'graph' factorises the prior over the learned graph; "
                                  "it needs structure=True")
        check_nonnegative(self, ("sparsity", "decorrelation", "invariance",
                                       "warmup_invariance", "alpha", "shift_z",
                                       "min_env_rows"))

    def _build(self, feature_shape: tuple[int, ...], train: MultiTaskData | None) -> nn.Module:
        self._check_params()
        enc = self._make_modular(feature_shape, int(self.n_modules), self.module_mode)
        router = TaskModuleRouter(len(self.tasks_set_), int(enc.k), int(enc.module_dim),
                                  init=float(self.gate_init), readout="project",
                                  proj_dim=int(self.node_dim))
        if not self.routing:
            router.logits.requires_grad_(False)
            with torch.no_grad():
                router.logits.fill_(40.0)       # sigmoid(40) == 1 in float32
        net = self._graph_net(enc, feature_shape, train, int(router.out_dim), router=router)
        self._step = 0
        self._inv = RoutingInvariance.from_learner(self, self.invariance_kind)
        if train is not None and self.routing:
            self._inv.setup(train)
            if self._inv.inactive:
                self._part_inactive("invariance", self._inv.inactive)
        self._decoding = GraphDecoding(self.tasks_set_, self.gmtl or "shifting",
                                       float(self.alpha), float(self.shift_z))
        return net

    def _edge_sets(self, train: MultiTaskData | None, t: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The graph learner's edge sets without the pairs whose label association shifts
        across the training environments (``shifting_pairs="drop"``); when loading, the edge
        sets come from the file's state dict."""
        feat, sem, init = super()._edge_sets(train, t)
        self._dropped = np.zeros((t, t), dtype=bool)
        if self.shifting_pairs != "drop" or not self.structure and not self.message_passing:
            return feat, sem, init
        if train is None:
            empty = torch.zeros(2, 0, dtype=torch.long)
            return empty, empty.clone(), None
        if train.env is None:
            return feat, sem, init
        from taskgraph.structure.invariance import heterogeneous_pairs

        for i, j in heterogeneous_pairs(train.y, train.env, self.tasks_set_,
                                        z=float(self.shift_z)):
            self._dropped[i, j] = self._dropped[j, i] = True
        if not self._dropped.any():
            return feat, sem, init
        drop = torch.as_tensor(self._dropped)
        if self._hybrid is not None:        # structure_search="hybrid": its DAG as well
            self._hybrid["dag"] = self._hybrid["dag"] & ~self._dropped
            self._hybrid["undirected"] = self._hybrid["undirected"] & ~self._dropped
        keep_f = ~drop[feat[0], feat[1]]
        keep_s = ~drop[sem[0], sem[1]]
        if not bool(keep_f.any()) and not bool(keep_s.any()):
            names = self.tasks_set_.names
            pairs = ", ".join(f"{names[i]}-{names[j]}" for i, j in np.argwhere(
                np.triu(self._dropped, 1)))
            self._part_inactive("structure", f"shifting_pairs='drop' removed every candidate "
                                f"edge (the label association of {pairs} shifts across the "
                                f"environments): the structure, the EBM and the message "
                                f"passing have nothing to act on", warn=False)
        return feat[:, keep_f], sem[:, keep_s], None if init is None else init[keep_s]

    def _excluded_pairs(self) -> np.ndarray | None:
        dropped = getattr(self, "_dropped", None)
        return dropped if dropped is not None and dropped.any() else None

    # ------------------------------------------------------------------ objective
    def _loss(self, batch: Any, epoch: int) -> tuple[torch.Tensor, dict[str, Any]]:
        net, lay = self.model_, self.layout_
        step = self._step
        if net.training:
            self._step += 1
        gates = net.router.gates()
        lam = self._inv.weight(step)
        logs: dict[str, Any] = {}
        valid = None
        if lam > 0:
            member, assign, valid = self._inv.assignment(batch, gates.dtype)
        # one host synchronisation per step: needs_pass reads the device once
        active = valid is not None and self._inv.needs_pass(valid)
        if active and self._inv.conditional:
            h, s0, w, s1 = net.states(batch.x)
            out = net.heads(s1)
            per = lay.per_example_loss(out, batch.y)
            kind = self._inv.conditional
            z = h.view(h.shape[0], net.router.n_modules, net.router.module_dim)
            pen = (self._inv.module_penalty(z, gates, batch.y, assign) if kind == "cind_state"
                   else self._inv.conditional_penalty(per[..., None], batch.y, assign)
                   if kind == "cind_loss" else
                   self._inv.output_penalty(out, batch.y, assign, lay))
        elif active:
            parts: builtins.list[torch.Tensor] = []

            def forward(ex_gates: torch.Tensor) -> torch.Tensor:
                parts.extend(net.states(batch.x, ex_gates, gates))
                parts.append(net.heads(parts[3]))
                return parts[4]

            per, pen = self._inv.dummy_pass(member, assign, valid, gates, forward,
                                            net.heads.col_mask, batch.y, lay,
                                            update=net.training)
            h, s0, w, s1, out = parts
        else:
            # no penalty, or an idle one (no environment with min_env_rows in this batch: its
            # value and gradient are exactly 0, so the dummy pass is skipped)
            h, s0, w, s1 = net.states(batch.x)
            out = net.heads(s1)
            per = lay.per_example_loss(out, batch.y)
            pen = None if valid is None else per.new_zeros(())
        task = mean_task_loss(per, batch.y)
        loss = task + (self.lambda_prior_l1 * w.sum() / max(w.numel(), 1) if self._prior_on
                       else 0.0)
        logs["task_loss"] = task.detach()
        if self.routing and float(self.sparsity) > 0:
            loss = loss + float(self.sparsity) * net.router.sparsity("l1")
        if float(self.decorrelation) > 0:
            z = h.view(h.shape[0], net.router.n_modules, net.router.module_dim)
            dec = decorrelation(z, "corr", max_units=self.decorrelation_units)
            loss = loss + float(self.decorrelation) * dec
        if self._prior_on or self.structure:
            loss = loss + self._structure_step(batch, epoch, h, s0, w, s1, out)
        if pen is not None:
            loss = loss + lam * pen
            logs.update(self._inv.logs(pen))
            loss = self._inv.renormalize(loss, lam)
        return loss, logs

    def _on_epoch_end(self, epoch: int, train: MultiTaskData,
                      optimizer: torch.optim.Optimizer | None = None) -> dict[str, float]:
        row = super()._on_epoch_end(epoch, train, optimizer)
        idle = self._inv.idle_message(epoch, float(self.min_env_rows), int(self.batch_size))
        if idle:
            self._part_inactive("invariance", idle)
        if self.structure and self.mp_graph == "learned" and self.message_passing and (
                self._structure.frozen):
            self._restrict_messages()
        g = self.model_.router.routing()
        row["gate_mean"] = float(g.mean())
        return row

    @torch.no_grad()
    def _restrict_messages(self) -> None:
        """From the epoch the structure is frozen on, messages flow along the learned DAG (as it
        stands at the end of each epoch: ICE keeps refining the weights after the freeze)."""
        net = self.model_
        learned = torch.as_tensor(self._learned_graph().adjacency != 0)
        src, dst = net.edge_index.cpu()
        net.edge_mask.copy_(learned[src, dst].to(net.edge_mask))

    # ------------------------------------------------------------------ GMTL
    def _after_fit(self, train: MultiTaskData, val: MultiTaskData | None) -> None:
        super()._after_fit(train, val)
        if self.gmtl is not None:
            # the prior of the labels as the model saw them (balanced sampling draws rows
            # unequally: docs/mtcrl.md)
            self._decoding.fit(self, train, val, self._learned_graph(),
                               weight=self._inv.draw_weights(len(train)))
            self.task_graph_ = self._learned_graph()
            if self._decoding.inactive:
                self._part_inactive("gmtl", self._decoding.inactive)

    @property
    def gmtl_(self) -> Any:
        """The fitted GMTL decoder ``predict`` uses, or ``None``."""
        part = getattr(self, "_decoding", None)
        return None if part is None else part.decoder

    def _decoder(self, inference: Any) -> Any:
        """``inference``, or the fitted GMTL decoder (``gmtl_``) when it is ``None``."""
        return self.gmtl_ if inference is None else inference

    def predict(self, x: Any, inference: Any = None) -> torch.Tensor:
        """Labels ``[N, T]``: GMTL joint decoding with the fitted prior (``gmtl_``) by default;
        ``inference="independent"`` gives the per-task argmax, any other decoder is used as
        given."""
        return super().predict(x, inference=self._decoder(inference))

    def evaluate(self, data: MultiTaskData, inference: Any = None) -> dict[str, float]:
        """As :meth:`BaseLearner.evaluate`, decoding with ``gmtl_`` by default."""
        return super().evaluate(data, inference=self._decoder(inference))

    def _train_sampler(self, train: MultiTaskData, seed: int) -> Any:
        """Balanced sampling of the training rows (``balanced_sampling``), or ``None``."""
        return self._inv.sampler(len(train), seed)

    # ------------------------------------------------------------------ state
    def _train_state(self) -> dict[str, Any]:
        state = super()._train_state()
        state["step"] = int(getattr(self, "_step", 0))
        dropped = self._excluded_pairs()
        if dropped is not None:
            state["dropped_pairs"] = np.argwhere(dropped).tolist()
        state.update(self._inv.train_state())
        if self._decoding.state() is not None:
            state["gmtl"] = self._decoding.state()
        return state

    def _load_train_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self._step = int(state.get("step", 0))
        for i, j in state.get("dropped_pairs", []):
            self._dropped[i, j] = True
        self._inv.load_train_state(state)
        super()._load_train_state(state)
        self._decoding.load_state(state.get("gmtl"))

    # ------------------------------------------------------------------ graph
    @torch.no_grad()
    def _learned_graph(self) -> TaskGraph:
        names = self.tasks_set_.names
        routing = self.model_.router.routing().cpu().double().numpy()
        modules = [f"module_{j}" for j in range(routing.shape[1])]
        meta: dict[str, Any] = {"learner": self.name, "parts": ",".join(self._parts()),
                                **self._share_meta()}
        part = getattr(self, "_decoding", None)
        if part is not None and part.pairs is not None:
            meta["gmtl_pairs"] = _pairs_json(names, part.pairs)
        dropped = self._excluded_pairs()
        if dropped is not None:
            meta["dropped_pairs"] = _pairs_json(names, np.argwhere(np.triu(dropped, 1)))
        if self.structure:
            g = super()._learned_graph()
            return TaskGraph(g.adjacency, names, raw=g.raw, candidates=g.candidates,
                             routing=routing, modules=modules, learned=True,
                             undirected=g.undirected, confidence=g.confidence,
                             meta={**g.meta, **meta})
        return TaskGraph(np.zeros((len(names), len(names))), names, routing=routing,
                         modules=modules, learned=True, meta=meta)

    def _parts(self) -> builtins.list[str]:
        parts = ["modules"]
        if self.routing:
            parts.append("routing")
            if float(self.invariance) > 0 or float(self.warmup_invariance) > 0:
                parts.append("invariance")
        if self.message_passing:
            parts.append("message_passing")
        if self.structure:
            parts.append("structure")
        if self.ebm:
            parts.append("ebm")
        if self.gmtl is not None and float(self.alpha) > 0:
            parts.append(f"gmtl:{self.gmtl}")
        share = getattr(self, "_share", None)
        if share is not None and share.fitted:
            parts.append("share")
        return parts
