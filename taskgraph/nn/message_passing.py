"""Message passing over task nodes with differentiable edge weights (PyG MessagePassing)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch_geometric.nn import MessagePassing

from taskgraph.nn.aggregate import edge_aggregate

__all__ = ["TaskMessagePassing"]


class TaskMessagePassing(MessagePassing):
    r"""One round of weighted message passing between task nodes, batched over examples.

    .. math::
        \mathbf{s}'_{b,j} = \mathbf{W}_{\text{self}} \mathbf{s}_{b,j}
        + \sum_{i \to j} w_{ij} \, \mathbf{W}_{\text{msg}} \mathbf{s}_{b,i} + \mathbf{b}

    Edges follow the library's ``A[src, dst]`` orientation: ``edge_index[:, e] = (i, j)`` sends
    the state of task ``i`` to task ``j`` (PyG's ``flow="source_to_target"``). Only the ``E``
    candidate edges are touched, so the cost is :math:`O(B \cdot (T + E) \cdot d)`, never
    :math:`O(T^2)`: PyG's fused :meth:`message_and_aggregate` path multiplies a sparse adjacency
    with the node states of all examples at once (about 5x faster than gathering ``[B, E, d]``
    messages and scattering them back, measured at ``B = 128, T = 10, E = 90``), and
    :func:`~taskgraph.nn.aggregate.edge_aggregate` computes the weights' gradient on the edges
    only (``torch.sparse.mm``'s own backward would form a dense ``[T, T]`` matrix). The edge
    weights are ordinary tensors: gradients reach them (and through them the structure learner
    that produced them), and an edge of weight 0 passes no gradient
    to its source node. With no edges (or all weights 0) every task is updated from its own
    state only, i.e. independent heads; the operator is equivariant to relabelling tasks.

    Args:
        in_channels (int): node state width ``d``.
        out_channels (int): output width ``d'``.
        aggr (str): PyG aggregation of incoming messages (default: :obj:`"add"`).
        bias (bool): learn :math:`\mathbf{b}` (default: :obj:`True`).

    Shapes:
        - **input:** node states ``s[B, T, d]`` (or ``[T, d]``), ``edge_index[2, E]`` (long),
          ``edge_weight[E]`` (optional, default all ones)
        - **output:** ``[B, T, d']`` (or ``[T, d']``)
    """

    def __init__(self, in_channels: int, out_channels: int, aggr: str = "add",
                 bias: bool = True) -> None:
        super().__init__(aggr=aggr, flow="source_to_target", node_dim=-2)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.lin_self = nn.Linear(in_channels, out_channels, bias=bias)
        self.lin_msg = nn.Linear(in_channels, out_channels, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.lin_self.reset_parameters()
        bound = 1.0 / math.sqrt(self.in_channels)
        nn.init.uniform_(self.lin_msg.weight, -bound, bound)

    def forward(self, s: torch.Tensor, edge_index: torch.Tensor,
                edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        return self.lin_self(s) + self.messages(s, edge_index, edge_weight)

    def messages(self, s: torch.Tensor, edge_index: torch.Tensor,
                 edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        r"""Only the aggregated neighbour term :math:`\sum_{i \to j} w_{ij} \mathbf{W}_{\text{msg}}
        \mathbf{s}_i` (no self term): what a task receives from the others."""
        if edge_index.numel() == 0:
            return s.new_zeros(*s.shape[:-1], self.out_channels)
        n = s.shape[-2]
        if edge_weight is None:
            edge_weight = s.new_ones(edge_index.shape[1])
        # PyG dispatches a sparse adjacency to the fused message_and_aggregate; the weights
        # travel beside it so that their gradient is computed on the edges only
        adj_t = torch.sparse_coo_tensor(edge_index.flip(0), edge_weight.detach().to(s.dtype),
                                        (n, n), check_invariants=False)
        self._edges = (edge_index, edge_weight)
        try:
            return self.propagate(adj_t, x=self.lin_msg(s))
        finally:
            self._edges = None

    def message(self, x_j: torch.Tensor, edge_weight: torch.Tensor) -> torch.Tensor:
        return edge_weight.unsqueeze(-1) * x_j

    def message_and_aggregate(self, adj_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        edge_index, edge_weight = self._edges
        if x.dim() == 2:
            return edge_aggregate(x[None], edge_index, edge_weight)[0]
        return edge_aggregate(x, edge_index, edge_weight)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels}, aggr={self.aggr})"
