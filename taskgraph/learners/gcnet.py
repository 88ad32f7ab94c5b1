r"""GCNet: a learned causal task graph decides what is shared (Lin et al., TPAMI 2025), and its
ablations SGNN and SGNN-EBM (Liu et al., AISTATS 2022).

One model, four parts, trained jointly (each can be switched off):

1. **Feature level** — task node states :math:`\mathbf{s}^{(0)}_{b,t} = \mathrm{ReLU}(
   \mathbf{U}_t \mathbf{h}_b)` from the shared encoder, the structure-prior generator scores the
   candidate edges (:math:`w_{ij} \in [0,1]`), one round of :class:`TaskMessagePassing` with those
   weights, per-task heads. Losses: task loss of the causal view, uninformative trivial view,
   L1 on :math:`w` (:mod:`taskgraph.structure.prior`).
2. **Output SEM** over task labels with one weight :math:`A_{ij}` per candidate edge, fitted by the
   masked log-likelihood given ``x`` (rows marked in ``do`` drop the intervened task's term) plus
   :math:`\lambda_1 \lVert A \rVert_1` (:class:`taskgraph.structure.ice.OutputSEM`).
3. **Acyclicity** :math:`h(A)` under an augmented-Lagrangian schedule updated every epoch
   (dense ``expm``/``poly`` up to ``dense_limit`` tasks, the sparse Hutchinson estimate above).
4. **Causal EBM + ICE** — a pairwise MRF over the candidate edges whose pairwise potentials are
   scaled by :math:`|A_{ij}|`, trained by intervention contrastive estimation against samples of
   the SEM under random interventions (:mod:`taskgraph.structure.ice`).

**How A gets gradient:** from the SEM likelihood (its couplings are :math:`A`), from the
acyclicity and L1 terms, and from ICE, because every pairwise potential of the EBM is multiplied
by :math:`|A_{ij}|` (so the contrast between data and intervened samples moves :math:`A`).
The learned graph ``task_graph_`` is :math:`A` with ``|A| > threshold``, made a DAG by dropping
the weakest edge of any remaining cycle; ``raw`` keeps every signed weight.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from taskgraph.data import MultiTaskData
from taskgraph.learners.base import register
from taskgraph.learners.graph_learner import GraphLearner

__all__ = ["GCNet"]


def __getattr__(name: str) -> Any:
    # SGNN and SGNN-EBM live in taskgraph.learners.sgnn; importable from here as before
    if name in ("SGNN", "SGNNEBM"):
        from taskgraph.learners import sgnn

        return getattr(sgnn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@register("gcnet")
class GCNet(GraphLearner):
    r"""GCNet: learned causal task structure (prior generator → message passing → causal EBM
    refined by ICE under an acyclicity constraint). See the module docstring for the model and
    :class:`~taskgraph.learners.graph_learner.GraphLearner` for the arguments (candidate edges,
    loss weights, the acyclicity schedule, ``inference_mode`` and the part switches ``prior``,
    ``structure``, ``ebm``, ``message_passing``).

    The network is a :class:`~taskgraph.nn.task_graph_net.TaskGraphNet` on the plain encoder
    (task node states :math:`\mathrm{ReLU}(\mathbf{U}_t \mathbf{h})` of width ``node_dim``).
    """

    def _build(self, feature_shape: tuple[int, ...], train: MultiTaskData | None) -> nn.Module:
        self._check_params()
        return self._graph_net(self._make_encoder(feature_shape), feature_shape, train,
                               int(self.node_dim))

    def _loss(self, batch: Any, epoch: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Predictive objective on every batch, plus the structure-level objective (trivial
        view, SEM, acyclicity, ICE) on every ``structure_every``-th batch."""
        net, lay = self.model_, self.layout_
        h, s0, w, s1 = net.states(batch.x)
        out = net.heads(s1)
        task = lay.task_losses(out, batch.y).sum()
        loss = task + (self.lambda_prior_l1 * w.sum() / max(w.numel(), 1) if self._prior_on
                       else 0.0)
        if self._prior_on or self.structure or self.ebm:
            loss = loss + self._structure_step(batch, epoch, h, s0, w, s1, out)
        return loss, {"task_loss": task.detach()}
