"""The :class:`Benchmark` value every data set returns, and the argument checks and random
streams the generators share."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from taskgraph.data import MultiTaskData
from taskgraph.exceptions import ValidationError
from taskgraph.graph import TaskGraph
from taskgraph.tasks import TaskSet

__all__ = ["Benchmark"]


# ---------------------------------------------------------------------------- benchmark object
@dataclass(repr=False, eq=False)
class Benchmark:
    """A synthetic multi-task problem with known truth.

    Attributes:
        train (MultiTaskData): training rows (may carry ``env``, ``do`` and missing labels).
        val (MultiTaskData): validation rows from the training distribution.
        test_iid (MultiTaskData): complete test rows from the training distribution.
        test_ood (MultiTaskData): complete test rows under the benchmark's distribution shift.
        tasks (TaskSet): the tasks, in label-column order.
        true_graph (TaskGraph): the planted task → task causal graph (``A[src, dst]``; empty
            when the tasks are only confounded).
        n_features (int): width of ``x``.
        name (str): generator name (``"planted_dag"``, ``"confounded"``, ``"anticausal"``).
        info (dict): ground-truth extras (confounder loadings, priors, feature blocks, ...);
            each generator documents its keys.
    """

    train: MultiTaskData
    val: MultiTaskData
    test_iid: MultiTaskData
    test_ood: MultiTaskData
    tasks: TaskSet
    true_graph: TaskGraph
    n_features: int
    name: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def splits(self) -> dict[str, MultiTaskData]:
        """The four splits by name, in the order train, val, test_iid, test_ood."""
        return {
            "train": self.train,
            "val": self.val,
            "test_iid": self.test_iid,
            "test_ood": self.test_ood,
        }

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
        n_edges = int(np.count_nonzero(self.true_graph.adjacency))
        return (
            f"Benchmark(name={self.name!r}, tasks={self.tasks.names}, "
            f"n_features={self.n_features}, {sizes}, true_edges={n_edges})"
        )


# ---------------------------------------------------------------------------- argument checks
def _check_int(name: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValidationError(f"{name}: expected an integer, got {value!r}")
    if value < minimum:
        raise ValidationError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def _check_float(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValidationError(f"{name}: expected a real number, got {value!r}")
    v = float(value)
    too_low = v <= low if low_open else v < low
    too_high = v >= high if high_open else v > high
    if not math.isfinite(v) or too_low or too_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValidationError(
            f"{name}: expected a finite value in {lo}{low}, {high}{hi}, got {value!r}"
        )
    return v


def _check_seed(seed: Any) -> int:
    return _check_int("seed", seed, 0)


def _check_pair(
    name: str, value: Any, low: float = 0.0, *, ordered: bool = True
) -> tuple[float, float]:
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValidationError(f"{name}: expected a pair of numbers, got {value!r}")
    a = _check_float(f"{name}[0]", value[0], low)
    b = _check_float(f"{name}[1]", value[1], low)
    if ordered and a > b:
        raise ValidationError(f"{name}: expected (low, high) with low <= high, got {value!r}")
    return a, b


def _split_sizes(n_train: int, val_fraction: float, n_test: int) -> tuple[int, int]:
    n_val = int(round(val_fraction * n_train))
    if n_val < 1:
        raise ValidationError(
            f"val_fraction: {val_fraction:g} of {n_train} training rows gives an empty "
            "validation split"
        )
    return n_val, n_test


def _streams(seed: int, n: int) -> list[np.random.Generator]:
    """``n`` independent generators derived from ``seed`` (fixed order → fixed streams)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _haar_orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    """A Haar-distributed random orthogonal ``[d, d]`` matrix (QR with sign correction)."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))[None, :]
