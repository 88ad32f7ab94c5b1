"""Benchmarks with known ground truth (synthetic) and loaders for real multi-task data sets.

Every generator returns a :class:`Benchmark` with ``train``, ``val``, ``test_iid`` and
``test_ood`` splits, the task set, the true task graph and ground-truth extras in ``info``.
"""

from taskgraph.datasets.synthetic import (
    Benchmark,
    agreement_prior,
    anticausal,
    anticausal_sample,
    confounded,
    planted_dag,
    shifted_prior,
)

__all__ = [
    "Benchmark",
    "planted_dag",
    "confounded",
    "anticausal",
    "anticausal_sample",
    "agreement_prior",
    "shifted_prior",
]
