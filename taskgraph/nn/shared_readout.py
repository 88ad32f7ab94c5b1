r"""The ``share`` read-out of the graph learners: per-task linear heads on the trained encoder's
features and the raw input, refitted after training under a relatedness-graph prior over the
heads, so that a task with few labels borrows its related tasks' heads.

.. math::
    \hat{y}_t(x) = \phi(x)^\top W_t + b_t, \qquad
    \phi(x) = [\,f_\theta(x) \,\|\, \operatorname{vec}(x)\,],

with :math:`(W, b)` the heads :func:`~taskgraph.nn.task_sharing.select_shared_heads` picks on
the validation data (ridge-only, or with the signed relatedness graph learned from the
ridge-only heads: the objective in :mod:`taskgraph.nn.task_sharing`). This is the read-out of
:class:`~taskgraph.learners.GraphShare` as a part: :class:`~taskgraph.learners.graph_learner
.GraphLearner` fits it after training and ``inference_mode="auto"`` uses it when it has the
lowest validation loss (docs/graph_share.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from taskgraph.nn.heads import OutputLayout
from taskgraph.nn.task_sharing import select_shared_heads

__all__ = ["SharedReadout"]


class SharedReadout:
    r"""Per-task linear heads on :math:`\phi(x) = [f_\theta(x) \| \operatorname{vec}(x)]`
    shared along a learned relatedness graph (not an ``nn.Module``: nothing in it is trained by
    the optimiser; its state travels in the learner's checkpoint as plain tensors).

    Args:
        grid (dict): keyword arguments of
            :func:`~taskgraph.nn.task_sharing.select_shared_heads` (``graph``, ``signed``,
            ``k``, ``min_cosine``, ``strengths``, ``ridges``, ``trunk_ridges``,
            ``max_iter``).

    Attributes:
        weight (Tensor or None): ``[T, d, C_max]`` once fitted; ``bias`` ``[T, C_max]``.
        adjacency (Tensor or None): ``[T, T]`` signed relatedness graph (zeros when the
            graph prior was not chosen).
        record (dict): the choice and every candidate's validation loss.
    """

    def __init__(self, **grid: Any) -> None:
        self.grid = grid
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        self.adjacency: torch.Tensor | None = None
        self.n_trunk = 0
        self.record: dict[str, Any] = {}

    @property
    def fitted(self) -> bool:
        return self.weight is not None

    @staticmethod
    def features(encoder: Callable[[torch.Tensor], torch.Tensor],
                 x: torch.Tensor) -> torch.Tensor:
        r""":math:`\phi(x)` ``[B, D + F]``: the encoder's output (flattened) and the input."""
        h = encoder(x)
        h = h.reshape(h.shape[0], -1)
        return torch.cat([h, x.reshape(x.shape[0], -1).to(h.dtype)], dim=1)

    def fit(self, phi: torch.Tensor, y: torch.Tensor, layout: OutputLayout,
            col_mask: torch.Tensor, n_trunk: int, phi_val: torch.Tensor | None = None,
            y_val: torch.Tensor | None = None) -> SharedReadout:
        """Refit the heads on ``phi`` ``[N, D + F]`` (the first ``n_trunk`` columns the
        encoder's) and labels ``y`` ``[N, T]``, chosen on ``(phi_val, y_val)``."""
        self.n_trunk = int(n_trunk)
        self.weight, self.bias, self.adjacency, self.record = select_shared_heads(
            phi, y, layout, col_mask, n_trunk=self.n_trunk, phi_val=phi_val, y_val=y_val,
            skip=True, **self.grid)
        return self

    def __call__(self, phi: torch.Tensor) -> torch.Tensor:
        """Head outputs ``[B, T, C_max]`` for ``phi`` ``[B, D + F]``."""
        assert self.weight is not None and self.bias is not None
        w = self.weight.to(phi)
        return torch.einsum("nd,tdc->ntc", phi, w) + self.bias.to(phi)

    def state(self) -> dict[str, Any] | None:
        """Tensors and numbers for the learner's checkpoint (``None`` when not fitted)."""
        if not self.fitted:
            return None
        record = {k: v for k, v in self.record.items() if k != "candidates"}
        return {"weight": self.weight.detach().cpu(), "bias": self.bias.detach().cpu(),
                "adjacency": self.adjacency.detach().cpu(), "n_trunk": self.n_trunk,
                "record": record}

    def load_state(self, state: dict[str, Any]) -> None:
        self.weight, self.bias = state["weight"], state["bias"]
        self.adjacency, self.n_trunk = state["adjacency"], int(state["n_trunk"])
        self.record = dict(state["record"])
