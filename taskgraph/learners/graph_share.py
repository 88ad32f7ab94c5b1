"""Hard sharing whose task heads borrow from related tasks along a learned relatedness graph."""

from __future__ import annotations

import builtins
from typing import Any

import numpy as np
import torch
from torch import nn

from taskgraph.data import MultiTaskData
from taskgraph.exceptions import ValidationError
from taskgraph.graph import TaskGraph
from taskgraph.learners.base import BaseLearner, register
from taskgraph.nn.heads import TaskHeads
from taskgraph.nn.task_sharing import (
    check_grid,
    fit_heads,
    head_vectors,
    kind_groups,
    mean_task_loss,
    relatedness_graph,
)
from taskgraph.tasks import Task, TaskSet

__all__ = ["GraphShare"]


class _SkipSharedBottom(nn.Module):
    """Shared encoder; heads read ``[encoder(x), x]`` (``skip``) or ``encoder(x)``."""

    def __init__(self, encoder: nn.Module, heads: TaskHeads, skip: bool) -> None:
        super().__init__()
        self.encoder, self.heads, self.skip = encoder, heads, skip

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x).reshape(x.shape[0], -1)
        if self.skip:
            h = torch.cat([h, x.reshape(x.shape[0], -1).to(h.dtype)], dim=1)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.features(x))


@register("graph_share")
class GraphShare(BaseLearner):
    r"""Hard sharing, then task heads refitted jointly under a relatedness-graph prior.

    1. A shared encoder and one linear head per task are trained as in ``hard_sharing``; with
       ``skip`` the heads read :math:`\phi(x) = [f_\theta(x), x]`, so a head can be linear in
       the input.
    2. With :math:`\phi` fixed, the heads are refitted exactly (L-BFGS) as penalised
       per-task GLMs: ridge :math:`r` on the input block and :math:`r_h` on the encoder block,
       chosen on ``val`` from ``ridges`` × ``trunk_ridges``.
    3. With ``graph``, a signed relatedness graph :math:`A` is learned from those heads
       (:func:`~taskgraph.nn.task_sharing.relatedness_graph`: cosine similarity, ``k``
       neighbours above ``min_cosine``), and the heads are refitted once more with the prior
       :math:`\frac{\lambda}{2}\sum |A_{st}|\,\lVert W_t - \operatorname{sign}(A_{st})
       W_s\rVert^2`: a task with few labels borrows its neighbours' heads, a conflicting task
       their negation (:mod:`taskgraph.nn.task_sharing`). :math:`\lambda` (pseudo-labels per
       edge) and ``min_cosine`` are chosen on ``val`` from ``strengths`` × ``min_cosine``,
       together with :math:`\lambda = 0`, so the graph is dropped where it does not lower the
       validation loss.

    Model selection needs validation data (``val``, or ``validation_fraction``); without it
    the middle value of each grid is used.

    ``task_graph_`` is the relatedness graph (undirected: every edge both ways, weight = the
    signed cosine of the two heads), ``learned=True``, ``meta["relation"] = "relatedness"``,
    ``meta["strength"]`` the chosen :math:`\lambda` (0: the graph was learned but not used).
    ``sharing_`` records the choices and every candidate's validation loss.

    Args:
        tasks (TaskSet or list): the tasks.
        graph (bool): learn the relatedness graph and share along it. (default: ``True``)
        refit (bool): refit the heads after training (steps 2-3); ``False`` is hard sharing
            (with ``skip``). (default: ``True``)
        skip (bool): heads also read the flattened input. (default: ``True``)
        k (int): neighbours each task keeps at most. (default: 10)
        min_cosine (sequence of float): candidate thresholds on :math:`|\cos|` for an edge.
        strengths (sequence of float): candidate :math:`\lambda` (> 0).
        ridges (sequence of float): candidate ridge on the input block of the heads.
        trunk_ridges (sequence of float): candidate ridge on the encoder block (a large value
            leaves the encoder features unused).
        max_iter (int): L-BFGS iterations per refit (each refit starts from the previous
            one's heads). (default: 200: at 60 the refits stop before converging and the
            result moves with float rounding, e.g. between devices, by 3e-4 in probability)
        **kwargs: :class:`~taskgraph.learners.BaseLearner` arguments.
    """

    def __init__(
        self,
        tasks: TaskSet | builtins.list[Task | str],
        *,
        graph: bool = True,
        refit: bool = True,
        skip: bool = True,
        k: int = 10,
        min_cosine: tuple[float, ...] = (0.3, 0.5, 0.7),
        strengths: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0),
        ridges: tuple[float, ...] = (0.3, 1.0, 3.0),
        trunk_ridges: tuple[float, ...] = (3.0, 30.0, 1000.0),
        max_iter: int = 200,
        **kwargs: Any,
    ) -> None:
        super().__init__(tasks, **kwargs)
        self.graph = graph
        self.refit = refit
        self.skip = skip
        self.k = k
        self.min_cosine = min_cosine
        self.strengths = strengths
        self.ridges = ridges
        self.trunk_ridges = trunk_ridges
        self.max_iter = max_iter

    # ------------------------------------------------------------------ building
    def _check_params(self) -> None:
        for name in ("graph", "refit", "skip"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValidationError(f"{name}: expected True or False, "
                                      f"got {getattr(self, name)!r}")
        for name in ("k", "max_iter"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValidationError(f"{name}: expected a positive integer, got {v!r}")
        taus = check_grid("min_cosine", self.min_cosine)
        if max(taus) > 1.0:
            raise ValidationError(f"min_cosine: expected values in [0, 1], got {self.min_cosine!r}")
        check_grid("strengths", self.strengths, low=1e-12)
        check_grid("ridges", self.ridges, low=1e-12)
        check_grid("trunk_ridges", self.trunk_ridges, low=1e-12)

    def _build(self, feature_shape: tuple[int, ...], train: MultiTaskData | None) -> nn.Module:
        self._check_params()
        enc = self._make_encoder(feature_shape)
        width = int(enc.out_dim) + (int(np.prod(feature_shape)) if self.skip else 0)
        self.n_trunk_features_ = int(enc.out_dim)
        return _SkipSharedBottom(enc, TaskHeads(self.tasks_set_, width), bool(self.skip))

    # ------------------------------------------------------------------ after training
    @torch.no_grad()
    def _features(self, data: MultiTaskData, batch_size: int = 4096) -> torch.Tensor:
        self.model_.eval()
        device = self.device_
        return torch.cat([self.model_.features(data.x[i:i + batch_size].to(device))
                          for i in range(0, len(data), batch_size)])

    def _ridge_vector(self, trunk: float, inputs: float, width: int) -> torch.Tensor:
        r = torch.full((width,), float(inputs), device=self.device_)
        r[: self.n_trunk_features_] = float(trunk)
        return r

    def _after_fit(self, train: MultiTaskData, val: MultiTaskData | None) -> None:
        self.sharing_: dict[str, Any] = {"refit": bool(self.refit), "candidates": []}
        adjacency = torch.zeros(len(self.tasks_set_), len(self.tasks_set_))
        if self.refit:
            adjacency = self._refit_heads(train, val)
        self.task_graph_ = self._relatedness_graph(adjacency)

    def _refit_heads(self, train: MultiTaskData, val: MultiTaskData | None) -> torch.Tensor:
        heads = self.model_.heads
        layout, mask = self.layout_, heads.col_mask
        phi, y = self._features(train), train.y.to(self.device_)
        phi_val = y_val = None
        if val is not None:
            phi_val, y_val = self._features(val), val.y.to(self.device_)
        width = phi.shape[1]
        candidates = self.sharing_["candidates"]

        def score(fit: tuple[torch.Tensor, torch.Tensor]) -> float:
            if phi_val is None:
                return float("nan")
            return mean_task_loss(phi_val, y_val, layout, *fit)

        def middle(grid: tuple[float, ...]) -> float:
            return tuple(grid)[len(grid) // 2]

        # ridge-only heads (the graph-free reference and the source of the graph)
        # without skip every feature is an encoder feature: only trunk_ridges applies
        input_grid = tuple(self.ridges) if self.skip else (middle(self.ridges),)
        pairs = [(tr, r) for tr in self.trunk_ridges for r in input_grid]
        if phi_val is None:
            pairs = [(middle(self.trunk_ridges), middle(self.ridges))]
        best: tuple[float, dict[str, Any], tuple[torch.Tensor, torch.Tensor]] | None = None
        fit = None
        for tr, r in pairs:
            ridge = self._ridge_vector(tr, r, width)
            fit = fit_heads(phi, y, layout, mask, ridge=ridge, init=fit,
                            max_iter=self.max_iter)
            choice = {"trunk_ridge": tr, "ridge": r, "strength": 0.0, "min_cosine": None}
            loss = score(fit)
            candidates.append({**choice, "val_loss": loss})
            if best is None or loss < best[0]:
                best = (loss, choice, fit)
        assert best is not None
        base_loss, base_choice, base_fit = best
        ridge = self._ridge_vector(base_choice["trunk_ridge"], base_choice["ridge"], width)
        vectors = head_vectors(base_fit[0], mask)
        groups = kind_groups(layout)
        taus = tuple(self.min_cosine) if phi_val is not None else (middle(self.min_cosine),)
        lams = tuple(self.strengths) if phi_val is not None else (middle(self.strengths),)
        chosen_graph = relatedness_graph(vectors, k=self.k, min_cosine=middle(self.min_cosine),
                                         groups=groups)
        if self.graph:
            for tau in taus:
                adjacency = relatedness_graph(vectors, k=self.k, min_cosine=tau, groups=groups)
                if not bool((adjacency != 0).any()):
                    continue
                fit = base_fit
                for lam in lams:
                    fit = fit_heads(phi, y, layout, mask, ridge=ridge, strength=lam,
                                    adjacency=adjacency, init=fit, max_iter=self.max_iter)
                    choice = {**base_choice, "strength": lam, "min_cosine": tau}
                    loss = score(fit)
                    candidates.append({**choice, "val_loss": loss})
                    # without validation data the graph is used at the middle settings
                    if phi_val is None or loss < best[0]:
                        best = (loss, choice, fit)
                        chosen_graph = adjacency
        loss, choice, (weight, bias) = best
        heads.weight.data.copy_(weight)
        heads.bias.data.copy_(bias)
        self.sharing_.update(choice)
        self.sharing_["val_loss"] = loss
        self.sharing_["val_loss_without_graph"] = base_loss
        return chosen_graph.detach().cpu()

    def _relatedness_graph(self, adjacency: torch.Tensor) -> TaskGraph:
        strength = float(self.sharing_.get("strength", 0.0))
        tau = self.sharing_.get("min_cosine")
        meta: dict[str, Any] = {"learner": self.name, "relation": "relatedness",
                                "undirected": True, "strength": strength}
        if tau is not None:
            meta["min_cosine"] = float(tau)
        if not (self.refit and self.graph):
            adjacency = torch.zeros_like(adjacency)
        return TaskGraph(adjacency.double().numpy(), self.tasks_set_.names,
                         learned=bool(self.refit and self.graph), meta=meta)

    def _train_state(self) -> dict[str, Any]:
        return {"sharing": getattr(self, "sharing_", None)}

    def _load_train_state(self, state: dict[str, Any]) -> None:
        if state.get("sharing") is not None:
            self.sharing_ = state["sharing"]
