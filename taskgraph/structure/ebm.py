r"""The neural part of the output-level causal energy-based model (EBM) of GCNet / SGNN-EBM:
:class:`PairwisePotential` computes the pairwise potentials of the candidate edges from task node
states. The model they parameterise, a pairwise Markov random field over the task labels with
its energy, conditionals and inference (mean field, Gibbs, exact), is
:class:`~taskgraph.mrf.marginals.CausalEBM` (re-exported here).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taskgraph.exceptions import ValidationError
from taskgraph.mrf.marginals import CausalEBM
from taskgraph.nn.aggregate import edge_aggregate

__all__ = ["CausalEBM", "PairwisePotential"]


class PairwisePotential(nn.Module):
    r"""Pairwise potentials on candidate edges from task node states, low-rank bilinear.

    .. math::
        \psi_e(a, b) = w_e \cdot \Big(\sum_{r=1}^{R} [\mathbf{P}\mathbf{s}_i]_{a,r}\,
        [\mathbf{Q}\mathbf{s}_j]_{b,r} + \beta_{ab}\Big), \qquad e = (i, j)

    :math:`\mathbf{P}` and :math:`\mathbf{Q}` differ, so :math:`\psi_{(i,j)}` and
    :math:`\psi_{(j,i)}` differ. The projections are computed once per node and only the rank-``R``
    products per edge, so the cost is :math:`O(B (T d C R + E C^2 R))`, not an MLP per
    (example, edge) pair. :math:`w_e` is the learned structure weight of the edge: gradients flow
    into it, and an edge of weight 0 has a zero potential (contributes nothing to the energy).

    Args:
        in_channels (int): node state width ``d``.
        n_states (int): number of label states ``C`` (the padded class count).
        hidden (int): the rank ``R`` (default: 8).

    Shapes:
        - **input:** node states ``s[B, T, d]`` (or ``[T, d]``), ``edge_index[2, E]`` (long),
          ``edge_weight[E]`` or ``[B, E]`` (optional, default all ones)
        - **output:** ``psi[B, E, C, C]`` (or ``[E, C, C]``)
    """

    def __init__(self, in_channels: int, n_states: int, hidden: int = 8) -> None:
        super().__init__()
        if n_states < 1:
            raise ValidationError(f"n_states: expected a positive int, got {n_states!r}")
        if hidden < 1:
            raise ValidationError(f"hidden: expected a positive rank, got {hidden!r}")
        self.in_channels, self.n_states, self.hidden = in_channels, n_states, hidden
        self.proj_src = nn.Linear(in_channels, n_states * hidden)
        self.proj_dst = nn.Linear(in_channels, n_states * hidden)
        self.bias = nn.Parameter(torch.zeros(n_states, n_states))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.proj_src.reset_parameters()
        self.proj_dst.reset_parameters()
        nn.init.zeros_(self.bias)

    def forward(self, s: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        src, dst = edge_index[0], edge_index[1]
        c, r = self.n_states, self.hidden
        p = self.proj_src(s).view(*s.shape[:-1], c, r)          # [..., T, C, R]
        q = self.proj_dst(s).view(*s.shape[:-1], c, r)
        out = torch.einsum("...ear,...ebr->...eab", p[..., src, :, :], q[..., dst, :, :])
        out = out / math.sqrt(r) + self.bias
        if edge_weight is not None:
            out = out * edge_weight[..., None, None]
        return out

    def energy(self, s: Tensor, edge_index: Tensor, edge_weight: Tensor, y: Tensor,
               active: Tensor) -> Tensor:
        r"""Pairwise energy of given label vectors, :math:`\sum_{e=(i,j)} \psi_e(y_i, y_j)` over
        the edges whose ends are both ``active``, without building ``psi[B, E, C, C]``:

        .. math::
            \sum_{e=(i,j)} w_e \Big(\mathbf{p}_i(y_i)^\top \mathbf{q}_j(y_j) / \sqrt{R}
            + \beta_{y_i y_j}\Big)
            = \sum_j \mathbf{q}_j(y_j)^\top \big(A^\top \mathbf{p}(\mathbf{y})\big)_j / \sqrt{R}
            + \ldots

        computed with one sparse ``[T, T]`` product, :math:`O(B (T d C R + E R))`. Equals the sum
        of :meth:`forward`'s table entries at ``y`` (tested).

        Shapes:
            - **s:** ``[B, T, d]``; **edge_weight:** ``[E]``; **y:** ``[B, T]`` long states, or
              ``[K, B, T]`` for ``K`` label vectors per row (scored in one pass: the
              projections of ``s`` are computed once); **active:** ``[B, T]`` bool (observed,
              non-constant tasks)
            - **output:** ``[B]`` (or ``[K, B]``)
        """
        b, t = y.shape[-2:]
        c, r = self.n_states, self.hidden
        yi = y.clamp(0, c - 1).reshape(-1, b, t)                 # [K, B, T]
        k = yi.shape[0]
        act = active.to(s.dtype)[..., None]                      # [B, T, 1]
        idx = yi[..., None, None].expand(k, b, t, 1, r)
        p = self.proj_src(s).view(b, t, c, r).expand(k, b, t, c, r).gather(3, idx)
        q = self.proj_dst(s).view(b, t, c, r).expand(k, b, t, c, r).gather(3, idx)
        p = p[..., 0, :] * act                                   # [K, B, T, R]
        q = q[..., 0, :] * act
        # incoming-edge sums per task; the bias enters through the one-hot of y (C small)
        onehot = F.one_hot(yi, c).to(s.dtype) * act              # [K, B, T, C]
        feats = torch.cat([p / math.sqrt(r), onehot @ self.bias], dim=-1)   # [K, B, T, R+C]
        msg = edge_aggregate(feats.reshape(k * b, t, r + c), edge_index, edge_weight)
        msg = msg.view(k, b, t, r + c)
        out = (msg[..., :r] * q).sum((-2, -1)) + (msg[..., r:] * onehot).sum((-2, -1))
        return out.reshape(y.shape[:-1])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.in_channels}, n_states={self.n_states}, "
                f"rank={self.hidden})")


