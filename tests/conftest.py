import os

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")
# one thread: tiny test models are dominated by per-op overhead, and 2 threads on a busy
# 2-core machine oversubscribe the cores and make them many times slower
torch.set_num_threads(1)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def mixed_tasks():
    from taskgraph import Task, TaskSet

    return TaskSet([Task("bin", "binary"), Task("multi", "multiclass", 3),
                    Task("reg", "regression")])


@pytest.fixture
def mixed_data(mixed_tasks):
    from taskgraph import MultiTaskData

    g = np.random.default_rng(1)
    n = 240
    x = g.normal(size=(n, 6)).astype(np.float32)
    y = np.stack([
        (x[:, 0] + 0.3 * g.normal(size=n) > 0).astype(float),
        np.digitize(x[:, 1], [-0.5, 0.5]).astype(float),
        x[:, 2] * 2 + 0.1 * g.normal(size=n),
    ], axis=1)
    y[g.random((n, 3)) < 0.1] = np.nan
    return MultiTaskData(x, y, mixed_tasks, env=g.integers(0, 2, n))
