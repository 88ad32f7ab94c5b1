"""Message passing over task nodes with differentiable edge weights (PyG MessagePassing)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch_geometric import EdgeIndex
from torch_geometric.nn import MessagePassing

from taskgraph.nn.aggregate import edge_aggregate

__all__ = ["TaskMessagePassing"]


class TaskMessagePassing(MessagePassing):
    r"""One round of weighted message passing between task nodes, batched over examples.

    .. math::
        \mathbf{h}_{b,j} = \mathbf{W}_{\text{self}} \mathbf{s}_{b,j}
        + \sum_{i \to j} w_{ij} \, \mathbf{W}_{\text{msg}} \tilde{\mathbf{s}}_{b,i} + \mathbf{b},
        \qquad
        \mathbf{s}'_{b,j} = \begin{cases} \mathbf{s}_{b,j} + \sigma(\mathbf{h}_{b,j}) &
        \text{residual} \\ \sigma(\mathbf{h}_{b,j}) & \text{otherwise} \end{cases}

    with :math:`\sigma` the activation ``act`` (identity by default) and
    :math:`\tilde{\mathbf{s}}` the states the neighbours send (``source``; the node states
    themselves by default). :meth:`message` computes one edge's term
    :math:`w_{ij} \mathbf{W}_{\text{msg}} \tilde{\mathbf{s}}_i` and PyG's ``add`` aggregation
    sums them at the target.

    Edges follow the library's ``A[src, dst]`` orientation: ``edge_index[:, e] = (i, j)`` sends
    the state of task ``i`` to task ``j`` (PyG's ``flow="source_to_target"``). Two paths give
    the same result (up to float rounding):

    - a plain ``edge_index`` tensor goes through :meth:`message` and the aggregation, the
      reference path;
    - with ``fused=True`` (the default) the edges travel as a PyG
      :class:`~torch_geometric.EdgeIndex` sorted by target, and PyG calls the fused
      :meth:`message_and_aggregate`, which sums the weighted messages of all examples at once with
      :func:`~taskgraph.nn.aggregate.edge_aggregate` (its weight gradient is computed on the
      edges only).

    Either way only the ``E`` candidate edges are touched, cost
    :math:`O(B \cdot (T + E) \cdot d)`. The edge weights are ordinary tensors: gradients reach
    them, and an edge of weight 0 passes no gradient to its source node. With no edges (or all
    weights 0) every task is updated from its own state only; the operator is equivariant to
    relabelling tasks.

    Args:
        in_channels (int): node state width ``d``.
        out_channels (int): output width ``d'`` (equal to ``d`` with ``residual``).
        aggr (str): PyG aggregation of incoming messages (default: :obj:`"add"`).
        bias (bool): learn :math:`\mathbf{b}` (default: :obj:`True`).
        residual (bool): add the input state to the (activated) update (default: ``False``).
        act (callable, optional): activation :math:`\sigma` (default: identity).
        fused (bool): use the fused path (default: ``True``).

    Shapes:
        - **input:** node states ``s[B, T, d]`` (or ``[T, d]``), ``edge_index[2, E]`` (long),
          ``edge_weight[E]`` (optional, default all ones), ``source`` like ``s`` (optional)
        - **output:** ``[B, T, d']`` (or ``[T, d']``)
    """

    SUPPORTS_FUSED_EDGE_INDEX = True

    def __init__(self, in_channels: int, out_channels: int, aggr: str = "add",
                 bias: bool = True, residual: bool = False,
                 act: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 fused: bool = True) -> None:
        super().__init__(aggr=aggr, flow="source_to_target", node_dim=-2)
        if residual and in_channels != out_channels:
            raise ValueError(f"residual: needs in_channels == out_channels, got {in_channels} "
                             f"and {out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.residual, self.act, self.fused = bool(residual), act, bool(fused)
        self.lin_self = nn.Linear(in_channels, out_channels, bias=bias)
        self.lin_msg = nn.Linear(in_channels, out_channels, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.lin_self.reset_parameters()
        bound = 1.0 / math.sqrt(self.in_channels)
        nn.init.uniform_(self.lin_msg.weight, -bound, bound)

    def forward(self, s: torch.Tensor, edge_index: torch.Tensor,
                edge_weight: torch.Tensor | None = None,
                source: torch.Tensor | None = None) -> torch.Tensor:
        h = self.lin_self(s) + self.messages(s if source is None else source, edge_index,
                                             edge_weight)
        if self.act is not None:
            h = self.act(h)
        return s + h if self.residual else h

    def messages(self, s: torch.Tensor, edge_index: torch.Tensor,
                 edge_weight: torch.Tensor | None = None,
                 fused: bool | None = None) -> torch.Tensor:
        r"""The aggregated neighbour term alone, :math:`\sum_{i \to j} w_{ij}
        \mathbf{W}_{\text{msg}} \mathbf{s}_i` (no self term, no activation): what a task
        receives from the others."""
        if edge_index.numel() == 0:
            return s.new_zeros(*s.shape[:-1], self.out_channels)
        n = s.shape[-2]
        if edge_weight is None:
            edge_weight = s.new_ones(edge_index.shape[1])
        x = self.lin_msg(s)
        if not (self.fused if fused is None else fused):
            return self.propagate(edge_index, x=x, edge_weight=edge_weight, size=(n, n))
        ei, perm = self._sorted(edge_index, n)
        w = edge_weight if perm is None else edge_weight[perm]
        return self.propagate(ei, x=x, edge_weight=w)

    def _sorted(self, edge_index: torch.Tensor, n: int
                ) -> tuple[EdgeIndex, torch.Tensor | None]:
        """``edge_index`` as an :class:`~torch_geometric.EdgeIndex` sorted by target and the
        permutation that sorts it. The edges of a model are a fixed buffer, so the sort of the
        last edge tensor seen is kept (keyed by the tensor itself and its version counter, so
        an edited or replaced edge set is sorted anew)."""
        cached = self.__dict__.get("_sorted_edges")
        if (cached is None or cached[0] is not edge_index
                or cached[1] != (edge_index._version, n)):
            ei, perm = EdgeIndex(edge_index, sparse_size=(n, n)).sort_by("col")
            cached = (edge_index, (edge_index._version, n), ei, perm)
            self.__dict__["_sorted_edges"] = cached   # plain attribute: not module state
        return cached[2], cached[3]

    def message(self, x_j: torch.Tensor, edge_weight: torch.Tensor) -> torch.Tensor:
        """One edge's message :math:`w_{ij} \\mathbf{W}_{\\text{msg}} \\mathbf{s}_i`
        (``x_j`` is the source's transformed state ``[..., E, d']``)."""
        return edge_weight.unsqueeze(-1) * x_j

    def message_and_aggregate(self, edge_index: EdgeIndex, x: torch.Tensor,
                              edge_weight: torch.Tensor) -> torch.Tensor:
        """:meth:`message` and the sum at each target in one pass (PyG calls it for an
        :class:`~torch_geometric.EdgeIndex` sorted by target)."""
        ei = edge_index.as_tensor()
        if x.dim() == 2:
            return edge_aggregate(x[None], ei, edge_weight)[0]
        return edge_aggregate(x, ei, edge_weight)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.in_channels}, {self.out_channels}, "
                f"aggr={self.aggr}, residual={self.residual})")
