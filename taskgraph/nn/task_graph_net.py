"""The network GCNet and the composed learner share (:class:`TaskGraphNet`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from taskgraph.nn.heads import TaskHeads
from taskgraph.nn.message_passing import TaskMessagePassing
from taskgraph.structure.causal import CausalStructure
from taskgraph.structure.prior import StructurePriorGenerator
from taskgraph.tasks import TaskSet

__all__ = ["TaskGraphNet"]


class TaskGraphNet(nn.Module):
    r"""Shared encoder → task node states → message passing over task nodes → per-task heads,
    with GCNet's structure-prior generator on the feature-level edges and, optionally, the
    output-level :class:`~taskgraph.structure.causal.CausalStructure`.

    Node states are :math:`\mathbf{s}^{(0)}_{b,t} = \mathrm{ReLU}(\mathbf{U}_t
    \mathbf{h}_b + \mathbf{c}_t)` from the encoder output, or the gated read-out of a
    :class:`~taskgraph.nn.routing.TaskModuleRouter` over a modular encoder; one residual round
    of :class:`~taskgraph.nn.message_passing.TaskMessagePassing` with the prior's edge weights
    gives :math:`\mathbf{s}^{(1)}`; :class:`~taskgraph.nn.heads.TaskHeads` read it.

    Args:
        encoder (nn.Module): the feature encoder (``out_dim``).
        tasks (TaskSet): the tasks.
        edge_index (LongTensor): ``[2, E]`` feature-level edges.
        node_dim (int): node state width (the router's when one is given).
        prior (bool): weight messages by the structure-prior generator (else 1).
        structure (callable, optional): builds the output-level structure module from
            ``(node_dim, feature_dim)``; called after the other parts, so parameters are
            initialised in one fixed order.
        router (nn.Module, optional): MT-CRL's task → module router.
        message_passing (bool): the message-passing round (off: heads read
            :math:`\mathbf{s}^{(0)}`).

    Shapes:
        - **input:** ``x[B, ...]``
        - **output:** head outputs ``[B, T, C_max]``
    """

    def __init__(self, encoder: nn.Module, tasks: TaskSet, edge_index: torch.Tensor,
                 node_dim: int, prior: bool,
                 structure: Callable[[int, int], nn.Module] | None = None,
                 router: nn.Module | None = None, message_passing: bool = True) -> None:
        super().__init__()
        t, d = len(tasks), int(encoder.out_dim)
        self.encoder = encoder
        self.register_buffer("edge_index", edge_index)
        # feature-level edges switched off (0) or on (1): the composed learner restricts
        # message passing to the learned graph once its structure is frozen
        self.register_buffer("edge_mask", torch.ones(edge_index.shape[1]))
        self.router = router
        if router is None:   # task node states: one linear map of the shared features per task
            self.node_weight = nn.Parameter(torch.randn(t, d, node_dim) / d ** 0.5)
            self.node_bias = nn.Parameter(torch.zeros(t, node_dim))
        else:                # task node states: the gated read-out of the encoder's modules
            node_dim = int(router.out_dim)
        # s1 = s0 + ReLU(W_self s0 + sum_i w_ij W_msg s_i): the layer's residual update
        self.mp = (TaskMessagePassing(node_dim, node_dim, residual=True, act=torch.relu)
                   if message_passing else None)
        self.heads = TaskHeads(tasks, node_dim)
        self.prior = StructurePriorGenerator(t, feat_dim=node_dim) if prior else None
        self.register_buffer("node_mean", torch.zeros(t, node_dim))
        # the output-level causal structure (built here, after the feature-level parts, so
        # parameters are initialised in one fixed order)
        self.structure = None if structure is None else structure(node_dim, d)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        CausalStructure.upgrade_keys(state_dict, prefix)
        # the feature-level edge set may depend on the training data (heuristic candidates):
        # take its size from the file
        for name in ("edge_index", "edge_mask"):
            key = prefix + name
            if key in state_dict:
                here = getattr(self, name).device
                setattr(self, name, state_dict[key].to(here, copy=True))
        if self.structure is not None:   # the EBM's edges without SEM are these edges
            self.structure.feat_edges = self.edge_index.clone()
        super()._load_from_state_dict(state_dict, prefix, *args)

    def edge_weights(self) -> torch.Tensor:
        """Feature-level message weights: the prior's causal weights, or 1 (SGNN), times
        ``edge_mask``."""
        if self.prior is None:
            return self.edge_mask
        return self.prior(self.edge_index, self.node_mean) * self.edge_mask

    def states(self, x: torch.Tensor, gates: torch.Tensor | None = None,
               plain: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor,
                                                           torch.Tensor, torch.Tensor]:
        """``(h, s0, w, s1)``: encoder features ``[B, D]``, task node states ``[B, T, d]``,
        edge weights ``[E]`` and states after message passing ``[B, T, d]``. With a router,
        ``gates`` (``[T, K]`` or ``[B, T, K]``) replace its gates for the node's own state and
        ``plain`` gates build the states its neighbours send (so per-task dummy multipliers on
        ``gates`` reach only that task's output, as MT-CRL's invariance penalty needs)."""
        z = self.encoder(x)
        h = z.reshape(z.shape[0], -1)
        if self.router is None:
            s0 = torch.relu(torch.einsum("bd,tdm->btm", h, self.node_weight) + self.node_bias)
            src = s0
        else:
            s0 = self._read(z, gates)
            src = s0 if plain is None else self._read(z, plain)
        if self.training and self.prior is not None:
            with torch.no_grad():  # running mean of node states: the prior's task features
                self.node_mean.mul_(0.9).add_(0.1 * src.mean(0))
        w = self.edge_weights()
        if self.mp is None:
            return h, s0, w, s0
        s1 = self.mp(s0, self.edge_index, w, source=src)
        return h, s0, w, s1

    def _read(self, z: torch.Tensor, gates: torch.Tensor | None) -> torch.Tensor:
        s = self.router(z, gates)
        return torch.relu(s) if self.router.readout == "project" else s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.states(x)[3])
