"""The SGNN and SGNN-EBM ablations of GCNet (Liu et al., AISTATS 2022): message passing on the
fixed heuristic task graph, without (SGNN) or with (SGNN-EBM) the causal EBM."""

from __future__ import annotations

import builtins
from typing import Any

from taskgraph.learners.base import register
from taskgraph.learners.gcnet import GCNet
from taskgraph.tasks import Task, TaskSet

__all__ = ["SGNN", "SGNNEBM"]


@register("sgnn")
class SGNN(GCNet):
    """SGNN ablation: message passing with uniform weights on the heuristic (label-correlation)
    graph; no prior generator, no output SEM, no EBM. ``task_graph_`` is that fixed graph
    (``learned=False``)."""

    learns_structure = False

    def __init__(self, tasks: TaskSet | builtins.list[Task | str], *,
                 candidates: Any = "heuristic", prior: bool = False, structure: bool = False,
                 ebm: bool = False, **kwargs: Any) -> None:
        super().__init__(tasks, candidates=candidates, prior=prior, structure=structure, ebm=ebm,
                         **kwargs)


@register("sgnn_ebm")
class SGNNEBM(GCNet):
    """SGNN-EBM ablation: SGNN plus a causal EBM on the same fixed heuristic graph (uniform
    edge weights), trained by NCE against factorised noise from the heads' marginals; no learned
    structure."""

    learns_structure = False

    def __init__(self, tasks: TaskSet | builtins.list[Task | str], *,
                 candidates: Any = "heuristic", prior: bool = False, structure: bool = False,
                 ebm: bool = True, **kwargs: Any) -> None:
        super().__init__(tasks, candidates=candidates, prior=prior, structure=structure, ebm=ebm,
                         **kwargs)
