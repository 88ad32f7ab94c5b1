"""sparse_tasks: determinism, shapes, label rate, planted relatedness, the Bayes ceiling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import taskgraph as tg
from taskgraph.datasets import sparse_tasks, sparse_tasks_logits
from taskgraph.exceptions import ValidationError

SMALL = dict(n_tasks=12, n_samples=600, n_features=8, n_clusters=3, n_test=400)


def _splits(bench):
    return [bench.train, bench.val, bench.test_iid, bench.test_ood]


def test_same_arguments_same_benchmark():
    a = sparse_tasks(**SMALL, seed=3, label_rate=0.2, n_unrelated=2, n_conflicting=2,
                     nonlinearity=0.4, bias_scale=0.5)
    b = sparse_tasks(**SMALL, seed=3, label_rate=0.2, n_unrelated=2, n_conflicting=2,
                     nonlinearity=0.4, bias_scale=0.5)
    for sa, sb in zip(_splits(a), _splits(b)):
        assert torch.equal(sa.x, sb.x)
        assert torch.equal(torch.nan_to_num(sa.y, -1.0), torch.nan_to_num(sb.y, -1.0))
    assert a.info["bayes_accuracy"] == b.info["bayes_accuracy"]
    c = sparse_tasks(**SMALL, seed=4, label_rate=0.2)
    assert not torch.equal(a.train.x, c.train.x)


def test_shapes_names_and_kinds():
    bench = sparse_tasks(**SMALL, seed=0)
    assert bench.name == "sparse_tasks" and bench.n_features == 8
    assert bench.tasks.names == [f"t{k}" for k in range(12)]
    assert all(t.kind == "binary" for t in bench.tasks)
    assert [len(s) for s in _splits(bench)] == [600, 120, 400, 400]
    for split in _splits(bench):
        assert split.x.shape[1] == 8 and split.y.shape[1] == 12
        assert split.x.dtype == torch.float32
    # labels are independent given x: no causal edge between tasks
    assert bench.true_graph.n_edges == 0 and not bench.true_graph.learned
    wide = sparse_tasks(n_tasks=500, n_samples=200, n_clusters=25, n_test=50, seed=0,
                        label_rate=0.05)
    assert wide.train.y.shape == (200, 500)


def test_label_rate_masks_train_and_val_only_and_is_nested():
    full = sparse_tasks(**SMALL, seed=1)
    low = sparse_tasks(**SMALL, seed=1, label_rate=0.05)
    high = sparse_tasks(**SMALL, seed=1, label_rate=0.3)
    assert full.train.missing_rate == 0.0
    for bench, rate in ((low, 0.05), (high, 0.3)):
        n = bench.train.y.numel()
        observed = 1.0 - bench.train.missing_rate
        assert abs(observed - rate) < 4 * math.sqrt(rate * (1 - rate) / n) + 12 / n
        assert bool(bench.train.mask.any(dim=0).all()) and bool(bench.val.mask.any(dim=0).all())
        assert bench.test_iid.missing_rate == 0.0 and bench.test_ood.missing_rate == 0.0
        # the rate only hides labels: x and the observed values are those of the full data
        assert torch.equal(bench.train.x, full.train.x)
        m = bench.train.mask
        assert torch.equal(bench.train.y[m], full.train.y[m])
    assert bool((low.train.mask <= high.train.mask).all())      # nested across rates
    assert torch.equal(low.test_iid.y, full.test_iid.y)


def test_every_task_keeps_a_label_at_tiny_rates():
    bench = sparse_tasks(n_tasks=30, n_samples=50, n_clusters=3, n_test=20, seed=0,
                         label_rate=1e-4)
    assert bool((bench.train.mask.sum(dim=0) >= 1).all())
    bench.train.check_trainable()


def test_cosine_within_and_across_clusters():
    bench = sparse_tasks(n_tasks=40, n_samples=100, n_features=40, n_clusters=4, n_test=50,
                         seed=2, within_cosine=0.9, n_unrelated=4, n_conflicting=4,
                         nonlinearity=0.3)
    info = bench.info
    cos, cluster, sign = info["cosine"], info["cluster"], info["sign"]
    np.testing.assert_allclose(np.diag(cos), 1.0)
    # recomputed from the recorded parameters
    eta = info["nonlinearity"]
    params = np.concatenate([math.sqrt(1 - eta) * info["weights"],
                             math.sqrt(eta) * info["nonlinear_weights"]], axis=0).T
    np.testing.assert_allclose(params @ params.T, cos, atol=1e-12)
    off = ~np.eye(40, dtype=bool)
    same = (cluster[:, None] == cluster[None, :]) & (cluster[:, None] >= 0) & off
    agree = sign[:, None] * sign[None, :]
    within = (cos * agree)[same]
    assert abs(within.mean() - 0.9) < 0.02 and within.min() > 0.8
    assert abs(cos[off & ~same].mean()) < 0.02 and np.abs(cos[off & ~same]).max() < 0.2
    assert (cos[same & (agree < 0)] < -0.8).all()           # conflicting members
    assert sorted(info["conflicting"]) == sorted(f"t{k}" for k in np.flatnonzero(sign < 0))
    assert len(info["conflicting"]) == 4 and info["unrelated"] == ["t36", "t37", "t38", "t39"]
    assert (cluster[36:] == -1).all() and [len(c) for c in info["clusters"]] == [9] * 4
    for members in info["clusters"]:      # each cluster keeps an unflipped member
        assert any(sign[bench.tasks.index(m)] > 0 for m in members)
    # the relatedness graph: both directions within clusters, signed by the cosine
    g = info["relatedness"]
    assert isinstance(g, tg.TaskGraph) and not g.learned
    np.testing.assert_array_equal(g.adjacency, g.adjacency.T)
    np.testing.assert_array_equal(g.adjacency != 0, same)
    np.testing.assert_allclose(g.adjacency[same], cos[same])


def _independent_proba(x: np.ndarray, info: dict) -> np.ndarray:
    """p(y = 1 | x) written out from the documented formula (not the generator's code)."""
    z = x @ info["rotation"].T
    lin = x @ info["weights"]
    quad = ((z ** 2 - 1) / np.sqrt(2)) @ info["nonlinear_weights"]
    eta = info["nonlinearity"]
    logit = info["signal"] * (np.sqrt(1 - eta) * lin + np.sqrt(eta) * quad) + info["bias"]
    return 1.0 / (1.0 + np.exp(-logit))


@pytest.mark.parametrize("nonlinearity", [0.0, 0.5])
def test_ceiling_equals_monte_carlo_of_the_bayes_predictor(nonlinearity):
    bench = sparse_tasks(n_tasks=6, n_samples=100, n_features=5, n_clusters=2, n_test=3000,
                         seed=5, nonlinearity=nonlinearity, bias_scale=1.0, n_conflicting=1)
    x = bench.test_iid.x.double().numpy()
    p = _independent_proba(x, bench.info)
    np.testing.assert_allclose(1 / (1 + np.exp(-sparse_tasks_logits(x, bench.info))), p,
                               rtol=1e-5, atol=1e-6)        # x is stored as float32
    # brute force: redraw the test labels many times, score the argmax of the true p
    rng = np.random.default_rng(0)
    draws = 200
    hits = np.zeros(p.shape[1])
    for _ in range(draws):
        y = rng.random(p.shape) < p
        hits += ((p > 0.5) == y).mean(axis=0)
    mc = hits / draws
    ceiling = bench.info["bayes_accuracy"]
    se = 0.5 / math.sqrt(draws * p.shape[0])
    for k, name in enumerate(bench.tasks.names):
        assert abs(ceiling[name] - mc[k]) < 5 * se
    assert abs(ceiling["mean"] - mc.mean()) < 5 * se
    # the drawn test labels follow p: the realised score is one such draw
    realised = bench.info["bayes_accuracy_realised"]
    np.testing.assert_allclose(
        [realised[n] for n in bench.tasks.names],
        ((p > 0.5) == (bench.test_iid.y.numpy() > 0.5)).mean(axis=0))
    assert abs(realised["mean"] - ceiling["mean"]) < 5 * 0.5 / math.sqrt(p.size)


def test_ceiling_near_084_by_default_and_ood_on_shifted_inputs():
    bench = sparse_tasks(n_samples=200, seed=0)
    assert 0.82 < bench.info["bayes_accuracy"]["mean"] < 0.85
    shift = bench.test_ood.x.mean(dim=0).numpy()
    np.testing.assert_allclose(np.linalg.norm(bench.info["ood_mean"]), 1.0)
    assert np.linalg.norm(shift - bench.info["ood_mean"]) < 0.2
    assert set(bench.info["bayes_accuracy_ood"]) == set(bench.tasks.names) | {"mean"}


def test_nonlinearity_hides_the_signal_from_linear_models():
    from sklearn.linear_model import LogisticRegression

    def logistic_acc(eta):
        bench = sparse_tasks(n_tasks=2, n_samples=3000, n_features=5, n_clusters=1, seed=0,
                             nonlinearity=eta, n_test=2000)
        clf = LogisticRegression().fit(bench.train.x.numpy(), bench.train.y[:, 0].numpy())
        acc = clf.score(bench.test_iid.x.numpy(), bench.test_iid.y[:, 0].numpy())
        return acc, bench.info["bayes_accuracy"]["t0"]

    lin_acc, lin_ceiling = logistic_acc(0.0)
    nl_acc, nl_ceiling = logistic_acc(1.0)
    assert lin_ceiling - lin_acc < 0.03
    assert nl_acc < 0.6 < nl_ceiling - 0.1


def test_benchmark_registry_entries():
    assert {"sparse_tasks", "sparse_tasks_mixed"} <= set(tg.datasets.available_benchmarks())
    bench = tg.datasets.load_benchmark("sparse_tasks_mixed", seed=0, quick=True)
    assert len(bench.tasks) == 20 and len(bench.info["unrelated"]) == 5
    assert abs((1 - bench.train.missing_rate) - 0.05) < 0.02


@pytest.mark.parametrize("kwargs, name", [
    (dict(n_tasks=0), "n_tasks"),
    (dict(n_samples=0), "n_samples"),
    (dict(seed=-1), "seed"),
    (dict(n_features=0), "n_features"),
    (dict(n_clusters=0), "n_clusters"),
    (dict(n_tasks=3, n_clusters=4), "n_clusters"),
    (dict(within_cosine=1.5), "within_cosine"),
    (dict(n_unrelated=21), "n_unrelated"),
    (dict(n_conflicting=17), "n_conflicting"),
    (dict(nonlinearity=-0.1), "nonlinearity"),
    (dict(signal=-1.0), "signal"),
    (dict(bias_scale=float("nan")), "bias_scale"),
    (dict(label_rate=0.0), "label_rate"),
    (dict(label_rate=1.2), "label_rate"),
    (dict(ood_shift=-1.0), "ood_shift"),
    (dict(val_fraction=0.0), "val_fraction"),
    (dict(n_samples=2, val_fraction=0.1), "val_fraction"),
    (dict(n_test=0), "n_test"),
    (dict(n_tasks=2.5), "n_tasks"),
])
def test_invalid_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValidationError, match=name):
        sparse_tasks(**kwargs)


def test_all_tasks_unrelated_needs_no_cluster():
    bench = sparse_tasks(n_tasks=4, n_samples=50, n_test=20, n_unrelated=4, n_clusters=0)
    assert bench.info["clusters"] == [] and bench.info["relatedness"].n_edges == 0
