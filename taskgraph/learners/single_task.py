"""Single-task learning: an independent encoder and head per task (the Δm reference)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from taskgraph.data import MultiTaskData
from taskgraph.learners.base import BaseLearner, register
from taskgraph.nn.heads import TaskHeads

__all__ = ["SingleTask"]


class _Independent(nn.Module):
    def __init__(self, encoders: nn.ModuleList, heads: TaskHeads) -> None:
        super().__init__()
        self.encoders, self.heads = encoders, heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.stack([enc(x).reshape(x.shape[0], -1) for enc in self.encoders], dim=1)
        return self.heads(h)  # [B, T, d] -> [B, T, C_max]


@register("single_task")
class SingleTask(BaseLearner):
    r"""One network per task, sharing nothing; trained jointly only for convenience (the
    summed loss has block-diagonal gradients, so each task trains as if alone).

    .. math::
        \mathbf{o}_t = \mathbf{W}_t^\top f_{\theta_t}(\mathbf{x}) + \mathbf{b}_t

    The reference for :func:`taskgraph.metrics.delta_m`. ``task_graph_`` is empty,
    ``learned=False``.
    """

    def _build(self, feature_shape: tuple[int, ...], train: MultiTaskData | None) -> nn.Module:
        first = self._make_encoder(feature_shape)
        encs = [first] + [copy.deepcopy(first) for _ in range(len(self.tasks_set_) - 1)]
        for enc in encs[1:]:  # independent initialisations
            for m in enc.modules():
                if hasattr(m, "reset_parameters") and m is not enc:
                    m.reset_parameters()
        return _Independent(nn.ModuleList(encs), TaskHeads(self.tasks_set_, int(first.out_dim)))
