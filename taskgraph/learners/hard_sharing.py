"""Hard parameter sharing: one shared encoder, one linear head per task."""

from __future__ import annotations

import torch
from torch import nn

from taskgraph.data import MultiTaskData
from taskgraph.learners.base import BaseLearner, register
from taskgraph.nn.heads import TaskHeads

__all__ = ["HardSharing"]


class _SharedBottom(nn.Module):
    def __init__(self, encoder: nn.Module, heads: TaskHeads) -> None:
        super().__init__()
        self.encoder, self.heads = encoder, heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        return self.heads(h.reshape(h.shape[0], -1))


@register("hard_sharing")
class HardSharing(BaseLearner):
    r"""Shared-bottom multi-task model (Caruana 1997): every task reads the same encoder output.

    .. math::
        \mathbf{o}_t = \mathbf{W}_t^\top f_\theta(\mathbf{x}) + \mathbf{b}_t

    Trained on :math:`\sum_t \bar{\ell}_t` (each task's mean loss over its observed labels).
    Its ``task_graph_`` is empty and flagged ``learned=False``: it has no task structure.
    """

    def _build(self, feature_shape: tuple[int, ...], train: MultiTaskData | None) -> nn.Module:
        enc = self._make_encoder(feature_shape)
        return _SharedBottom(enc, TaskHeads(self.tasks_set_, int(enc.out_dim)))
