"""Benchmarks with known ground truth (synthetic) and loaders for real multi-task data sets.

Every generator returns a :class:`Benchmark` with ``train``, ``val``, ``test_iid`` and
``test_ood`` splits, the task set, the true task graph and ground-truth extras in ``info``.

Real data sets (read by path from optional packages or a user path; see docs/datasets.md):
:func:`multi_mnist`, :func:`multi_fashion`, :func:`multi_fashion_mnist`, :func:`movielens`,
:func:`movielens_sparse`, :func:`qm9`. Expert Bayesian networks (bnlearn's BIF files,
forward-sampled, every node a task): :func:`bayesian_network`, :func:`read_bif`. Named
benchmarks for ``taskgraph bench``: :func:`list_benchmarks`, :func:`available_benchmarks`,
:func:`load_benchmark`.
"""

from taskgraph.datasets._files import DataFileError
from taskgraph.datasets._idx import read_idx, write_idx
from taskgraph.datasets.bayesian_network import (
    BayesianNetwork,
    bayesian_network,
    bundled_networks,
    read_bif,
)
from taskgraph.datasets.causal_mtl import causal_mtl
from taskgraph.datasets.fashion import load_fashion_mnist, multi_fashion, multi_fashion_mnist
from taskgraph.datasets.movielens import load_movielens, movielens, movielens_sparse
from taskgraph.datasets.multi_mnist import load_mnist, multi_mnist
from taskgraph.datasets.qm9 import load_qm9, qm9
from taskgraph.datasets.registry import (
    BenchmarkSpec,
    available_benchmarks,
    get_benchmark,
    list_benchmarks,
    load_benchmark,
    register_benchmark,
)
from taskgraph.datasets.sparse_tasks import sparse_tasks, sparse_tasks_logits
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
    "causal_mtl",
    "sparse_tasks",
    "sparse_tasks_logits",
    "multi_mnist",
    "load_mnist",
    "multi_fashion",
    "multi_fashion_mnist",
    "load_fashion_mnist",
    "movielens",
    "movielens_sparse",
    "load_movielens",
    "qm9",
    "load_qm9",
    "bayesian_network",
    "read_bif",
    "bundled_networks",
    "BayesianNetwork",
    "read_idx",
    "write_idx",
    "DataFileError",
    "BenchmarkSpec",
    "register_benchmark",
    "get_benchmark",
    "list_benchmarks",
    "available_benchmarks",
    "load_benchmark",
]
