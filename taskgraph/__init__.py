"""taskgraph: causal multi-task learning with tasks as nodes of a learned causal task graph.

Quick tour::

    import taskgraph as tg
    bench = tg.datasets.planted_dag(n_tasks=10, n_edges=15, n_samples=5000, seed=0)
    learner = tg.learners.create("hard_sharing", bench.tasks).fit(bench.train, val=bench.val)
    learner.evaluate(bench.test_ood)
"""

from taskgraph import datasets, inference, learners, metrics
from taskgraph.data import Batch, MultiTaskData
from taskgraph.exceptions import (
    CheckpointError,
    CycleError,
    GraphFileError,
    GraphFormatError,
    InactivePartWarning,
    MissingDependencyError,
    NotFittedError,
    TaskGraphError,
    UnknownTaskError,
    ValidationError,
)
from taskgraph.graph import TaskGraph
from taskgraph.tasks import Task, TaskSet
from taskgraph.train import Trainer

__version__ = "0.1.0"

__all__ = [
    "Task",
    "TaskSet",
    "MultiTaskData",
    "Batch",
    "TaskGraph",
    "Trainer",
    "datasets",
    "inference",
    "learners",
    "metrics",
    "TaskGraphError",
    "ValidationError",
    "UnknownTaskError",
    "CycleError",
    "GraphFormatError",
    "InactivePartWarning",
    "GraphFileError",
    "CheckpointError",
    "NotFittedError",
    "MissingDependencyError",
    "__version__",
]
