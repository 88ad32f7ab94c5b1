"""The network of MT-CRL (:class:`RoutedTaskNet`): modules, routing, optional message passing,
heads."""

from __future__ import annotations

import torch
from torch import nn

from taskgraph.nn.heads import TaskHeads
from taskgraph.nn.routing import TaskModuleRouter

__all__ = ["RoutedTaskNet"]


class RoutedTaskNet(nn.Module):
    r"""MT-CRL's network: modular encoder → ``z[B, K, m]`` → task → module router →
    node states ``s[B, T, d]`` → optionally one round of message passing along a given task
    graph → per-task heads ``[B, T, C_max]``.

    Args:
        encoder (nn.Module): a modular encoder (``k`` modules of width ``module_dim``).
        router (TaskModuleRouter): the task → module gates and read-out.
        heads (TaskHeads): per-task heads on the node states.
        mp (nn.Module, optional): a :class:`~taskgraph.nn.message_passing.TaskMessagePassing`
            layer (``None``: no message passing).
        edge_index (LongTensor): ``[2, E]`` edges of the given graph.
        edge_weight (Tensor): ``[E]`` their weights.
    """

    def __init__(self, encoder: nn.Module, router: TaskModuleRouter, heads: TaskHeads,
                 mp: nn.Module | None, edge_index: torch.Tensor,
                 edge_weight: torch.Tensor) -> None:
        super().__init__()
        self.encoder, self.router, self.heads, self.mp = encoder, router, heads, mp
        self.register_buffer("edge_index", edge_index)
        self.register_buffer("edge_weight", edge_weight)
        self.register_buffer("no_edges", torch.zeros(2, 0, dtype=torch.long))

    @property
    def fused(self) -> bool:
        """Without message passing, concat read-out and linear heads fold into one contraction
        (no ``[B, T, K·m]`` state tensor is built)."""
        return self.mp is None and self.router.readout == "concat"

    def _fused_heads(self, z: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        r"""``heads(router(z, gates))`` for the concat read-out, computed as
        :math:`o_{btc} = \sum_{k} g_{btk} \sum_m z_{bkm} W_{t,km,c} + b_{tc}`."""
        h = self.heads
        t, _, c = h.weight.shape
        w = h.weight.view(t, z.shape[1], z.shape[2], c)
        if gates.dim() == 2:
            out = torch.einsum("bkm,tkmc->btc", z, w * gates[:, :, None, None])
        else:
            out = torch.einsum("btk,btkc->btc", gates, torch.einsum("bkm,tkmc->btkc", z, w))
        return (out + h.bias) * h.col_mask

    def contributions(self, z: torch.Tensor) -> torch.Tensor:
        r"""Ungated head contribution of every module to every task output, without message
        passing: :math:`P_{btkc} = \sum_m z_{bkm} W_{t,(k,m),c}` (concat) or
        :math:`\sum_m z_{bkm} W_{t,m,c}` (sum), so that
        ``heads(router(z, g)) = Σ_k g[..., k] P[..., k, :] + bias`` (times the column mask).
        ``[B, T, K, C_max]``."""
        h = self.heads
        t, _, c = h.weight.shape
        if self.router.readout == "concat":
            w = h.weight.view(t, z.shape[1], z.shape[2], c)
            return torch.einsum("bkm,tkmc->btkc", z, w)
        return torch.einsum("bkm,tmc->btkc", z, h.weight)

    def out_from_contributions(self, p: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """Head outputs ``[B, T, C_max]`` from :meth:`contributions` and gates ``[T, K]``."""
        return (torch.einsum("tk,btkc->btc", gates, p) + self.heads.bias) * self.heads.col_mask

    def head_out(self, z: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return self._fused_heads(z, gates)
        s = self.router(z, gates)
        if self.mp is not None:
            s = self.mp(s, self.edge_index, self.edge_weight)
        return self.heads(s)

    def penalty_out(self, z: torch.Tensor, gates: torch.Tensor,
                    plain: torch.Tensor) -> torch.Tensor:
        """Head outputs where task ``t`` reads its *own* state through ``gates`` (per example,
        carrying the dummy multipliers) and its neighbours' messages through the ``plain``
        gates, so the dummy of task ``t`` only reaches task ``t``'s risk: exact per-task
        IRMv1 gradients under message passing (``s' = W_self s + Σ w W_msg s_i``)."""
        if self.mp is None:
            return self.head_out(z, gates)
        own = self.mp(self.router(z, gates), self.no_edges)
        return self.heads(own + self.mp.messages(self.router(z, plain), self.edge_index,
                                                 self.edge_weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_out(self.encoder(x), self.router.gates())
