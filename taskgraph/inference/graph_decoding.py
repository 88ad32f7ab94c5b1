r"""GMTL's joint decoding as a part a learner holds: the pairs of tasks whose joint label prior
is coupled, the prior factorised over those pairs, per-task temperatures, and the decoder.

.. math::
    \hat{\mathbf{y}} = \arg\max_{\mathbf{y}} \sum_k \log\tilde p(y_k \mid x)
    - \alpha \log p_{\text{train}}(\mathbf{y}), \qquad
    p_{\text{train}}(\mathbf{y}) \text{ factorised over the coupled pairs}

The pairs come from one of two rules (``mode``): ``"shifting"``, the pairs whose label
association differs across the training environments
(:func:`~taskgraph.structure.invariance.heterogeneous_pairs`), or ``"graph"``, the skeleton of a
learned task graph restricted to classification tasks. :class:`GraphDecoding` is a plain object
whose :meth:`state` is a JSON-able dict a learner saves with its training state.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from taskgraph.data import MultiTaskData
from taskgraph.graph import TaskGraph
from taskgraph.tasks import TaskSet

__all__ = ["GraphDecoding", "DECODING_MODES"]

DECODING_MODES = ("shifting", "graph")


class GraphDecoding:
    """The fitted joint decoder of a learner (``None`` parts until :meth:`fit`).

    Args:
        tasks (TaskSet): the learner's tasks.
        mode (str): ``"shifting"`` or ``"graph"`` (see the module docstring).
        alpha (float): GMTL's prior weight :math:`\\alpha \\ge 0`.
        shift_z (float): threshold of the environment-heterogeneity test (``"shifting"``).
    """

    def __init__(self, tasks: TaskSet, mode: str, alpha: float, shift_z: float) -> None:
        self.tasks = tasks
        self.mode = mode
        self.alpha = float(alpha)
        self.shift_z = float(shift_z)
        self._state: dict[str, Any] | None = None
        self.decoder: Any = None
        #: why :meth:`fit` found nothing to decode jointly (the cause in the data and a remedy
        #: fitting it), or ``None``; the learner warns and records it
        self.inactive: str | None = None

    def pairs_for(self, train: MultiTaskData, graph: TaskGraph | None) -> list[tuple[int, int]]:
        """The coupled pairs ``(i, j)``, ``i < j`` for ``"graph"``."""
        from taskgraph.structure.invariance import heterogeneous_pairs

        if self.mode == "graph":
            # the joint label prior covers classification tasks: edges to regression tasks
            # stay in the graph but are not decoded jointly
            skel = graph.skeleton()
            cls = [t.is_classification for t in self.tasks]
            return [(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(skel, 1)))
                    if cls[i] and cls[j]]
        return heterogeneous_pairs(train.y, train.env, self.tasks, z=self.shift_z)

    def fit(self, learner: Any, train: MultiTaskData, val: MultiTaskData | None,
            graph: TaskGraph | None = None, weight: Any = None) -> GraphDecoding:
        """Fit the pairwise prior on ``train`` and, with ``val``, per-task temperatures of
        ``learner``; no decoder when ``alpha == 0`` or no pair is coupled. ``weight``: per-row
        weights of the prior's counts (the distribution the model was trained on when its
        rows were drawn unequally, :meth:`JointPrior.fit`)."""
        from taskgraph.inference import JointPrior, TemperatureScaler

        self._state, self.decoder, self.inactive = None, None, None
        if self.alpha == 0:
            return self
        pairs = self.pairs_for(train, graph)
        if not pairs:
            self.inactive = self._why_no_pairs(train, self._graph_pairs(graph))
            return self
        t = len(self.tasks)
        adj = np.zeros((t, t))
        for i, j in pairs:
            adj[i, j] = 1.0
        names = self.tasks.names
        coupled = sorted({names[i] for p in pairs for i in p})
        prior = JointPrior.fit(train, kind="graph", graph=adj, tasks=coupled, weight=weight)
        prior.graph_source = "causal_graph"
        cal = None
        if val is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cal = TemperatureScaler().fit(learner, val)
        self.load_state({"pairs": [list(p) for p in pairs], "prior": prior.state_dict(),
                         "temperature": None if cal is None else cal.temperature_})
        return self

    def _graph_pairs(self, graph: TaskGraph | None) -> int:
        """Pairs of classification tasks joined in ``graph`` (what ``"graph"`` would couple)."""
        if graph is None:
            return 0
        cls = [t.is_classification for t in self.tasks]
        skel = np.triu(graph.skeleton(), 1)
        return sum(1 for i, j in zip(*np.nonzero(skel)) if cls[i] and cls[j])

    def _why_no_pairs(self, train: MultiTaskData, n_graph_pairs: int) -> str:
        """The cause of an empty pair set on ``train`` and a remedy that fits it."""
        from taskgraph.structure.invariance import HETEROGENEITY_MIN_ROWS

        head = "GMTL joint decoding is off: predict() and evaluate() decode every task on its own"
        off = "gmtl=None to decode per task and silence this warning"
        n_cls = sum(1 for t in self.tasks if t.is_classification)
        if n_cls < 2:
            return (f"{head}, since the joint label prior couples classification tasks and "
                    f"there {'is' if n_cls == 1 else 'are'} {n_cls}. Remedy: {off}")
        graph_alt = (f"gmtl='graph' (couple the {n_graph_pairs} pairs joined in the learned "
                     "task graph); or " if n_graph_pairs and self.mode != "graph" else "")
        if self.mode == "graph":
            return (f"{head}, since the learned task graph has no edge between two "
                    "classification tasks (gmtl='graph'). Remedy: gmtl='shifting' with the "
                    "training environments in MultiTaskData(..., env=...), or a lower "
                    f"`threshold` for the graph's edges; or {off}")
        if train.env is None:
            cause = ("the 'shifting' prior couples the task pairs whose label association "
                     "differs across training environments, and the training data has no `env`")
            remedy = (f"pass the environments the rows come from, MultiTaskData(..., env=...); "
                      f"or {graph_alt}{off}")
            return f"{head}, since {cause}. Remedy: {remedy}"
        sizes = np.bincount(train.env.cpu().numpy().astype(np.int64))
        big = int((sizes >= HETEROGENEITY_MIN_ROWS).sum())
        if big < 2:
            cause = (f"the 'shifting' prior compares the label association across training "
                     f"environments with at least {HETEROGENEITY_MIN_ROWS} rows, and "
                     f"{big} of the {len(sizes)} environments in `env` have that many")
            remedy = f"pass an `env` with at least two such environments; or {graph_alt}{off}"
            return f"{head}, since {cause}. Remedy: {remedy}"
        cause = (f"no pair of classification tasks has a label association that differs across "
                 f"the {big} training environments by more than shift_z={self.shift_z:g} "
                 "standard errors (pairs are compared on rows where both labels are observed)")
        remedy = f"a lower shift_z to couple weaker differences; or {graph_alt}{off}"
        return f"{head}, since {cause}. Remedy: {remedy}"

    @property
    def pairs(self) -> list[list[int]] | None:
        """The coupled pairs of the fitted decoder, or ``None``."""
        return None if self._state is None else self._state["pairs"]

    def state(self) -> dict[str, Any] | None:
        """A JSON-able dict (pairs, prior, temperatures), or ``None`` when nothing is fitted."""
        return self._state

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Rebuild the decoder from :meth:`state`."""
        from taskgraph.inference import GMTL, JointPrior, TemperatureScaler

        self._state, self.decoder = state, None
        if state is None:
            return
        prior = JointPrior.from_state(self.tasks, state["prior"])
        cal = (None if state["temperature"] is None else
               TemperatureScaler.from_temperatures(state["temperature"], self.tasks))
        self.decoder = GMTL(prior, alpha=self.alpha, calibration=cal)
