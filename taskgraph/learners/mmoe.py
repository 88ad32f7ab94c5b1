"""Multi-gate mixture of experts (MMoE, Ma et al., KDD 2018)."""

from __future__ import annotations

import builtins
import numbers

import torch
from torch import nn

from taskgraph.data import MultiTaskData
from taskgraph.exceptions import ValidationError
from taskgraph.graph import TaskGraph
from taskgraph.learners.base import BaseLearner, register
from taskgraph.nn.heads import TaskHeads
from taskgraph.tasks import Task, TaskSet

__all__ = ["MMoE"]


class _MMoENet(nn.Module):
    def __init__(self, encoder: nn.Module, n_tasks: int, n_experts: int, expert_dim: int,
                 heads: TaskHeads) -> None:
        super().__init__()
        from encoders import ModularEncoder

        self.experts = ModularEncoder(encoder, k=n_experts, module_dim=expert_dim)
        self.gates = nn.Linear(int(encoder.out_dim), n_tasks * n_experts)
        self.n_tasks, self.n_experts = n_tasks, n_experts
        self.heads = heads

    def gate_weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.experts.backbone(x)
        z = self.experts.modules_from(h)  # [B, E, m]
        g = torch.softmax(self.gates(h).reshape(-1, self.n_tasks, self.n_experts), dim=-1)
        return g, z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, z = self.gate_weights(x)
        return self.heads(torch.einsum("bte,bem->btm", g, z))


@register("mmoe")
class MMoE(BaseLearner):
    r"""Multi-gate mixture of experts: ``E`` expert sub-networks on a shared trunk, one softmax
    gate per task over the experts.

    .. math::
        \mathbf{s}_t(\mathbf{x}) = \sum_{e=1}^{E} g_{t,e}(\mathbf{x})\, f_e(\mathbf{x}),
        \qquad \mathbf{g}_t = \operatorname{softmax}(\mathbf{V}_t \mathbf{h}(\mathbf{x}))

    The gates read the trunk output (so images work as well as vectors). ``task_graph_`` has no
    task→task edges (``learned=False``) but records the mean gate weights over the training
    data as a task→expert routing (modules ``expert_0 …``).

    Args:
        n_experts (int): number of experts ``E``. (default: 4)
        expert_dim (int, optional): expert width (default: ``hidden``).
    """

    def __init__(self, tasks: TaskSet | builtins.list[Task | str], *, n_experts: int = 4,
                 expert_dim: int | None = None, **kwargs) -> None:
        super().__init__(tasks, **kwargs)
        self.n_experts = n_experts
        self.expert_dim = expert_dim

    def _build(self, feature_shape: tuple[int, ...], train: MultiTaskData | None) -> nn.Module:
        for name in ("n_experts", "expert_dim"):
            v = getattr(self, name)
            if name == "expert_dim" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValidationError(f"{name}: expected a positive integer, got {v!r}")
        enc = self._make_encoder(feature_shape)
        dim = int(self.expert_dim or self.hidden)
        self._routing_x = None if train is None else train.x[:2048]
        return _MMoENet(enc, len(self.tasks_set_), int(self.n_experts), dim,
                        TaskHeads(self.tasks_set_, dim))

    @torch.no_grad()
    def _learned_graph(self) -> TaskGraph:
        routing = None
        if getattr(self, "_routing_x", None) is not None:
            self.model_.eval()
            g, _ = self.model_.gate_weights(self._routing_x.to(self.device_))
            routing = g.mean(dim=0).cpu().double().numpy()
        names = self.tasks_set_.names
        return TaskGraph.empty(names, learned=False, meta={"learner": self.name},
                               routing=routing,
                               modules=None if routing is None else
                               [f"expert_{e}" for e in range(int(self.n_experts))])
