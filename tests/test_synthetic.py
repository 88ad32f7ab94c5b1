"""Synthetic benchmarks: determinism, shapes, planted truth, shifts, interventions, validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from taskgraph.datasets import (
    Benchmark,
    agreement_prior,
    anticausal,
    anticausal_sample,
    confounded,
    planted_dag,
    shifted_prior,
)
from taskgraph.exceptions import ValidationError
from taskgraph.graph import TaskGraph

ROOT = Path(__file__).resolve().parents[1]

# Small, fixed configurations, digested in this process and in a fresh interpreter.
_DIGEST_SOURCE = """
import hashlib
from taskgraph.datasets import anticausal, confounded, planted_dag

def digests(seed):
    out = []
    for bench in (
        planted_dag(6, 7, 300, seed, n_test=100, missing_rate=0.1, interventional_fraction=0.2),
        confounded(200, seed, n_test=100, mixing=True),
        anticausal(300, seed, n_test=100),
    ):
        h = hashlib.sha256()
        for split in (bench.train, bench.val, bench.test_iid, bench.test_ood):
            for t in (split.x, split.y, split.env, split.do):
                if t is not None:
                    h.update(t.numpy().tobytes())
        h.update(bench.true_graph.adjacency.tobytes())
        out.append(h.hexdigest())
    return out
"""


def _digests(seed: int) -> list[str]:
    namespace: dict = {}
    exec(_DIGEST_SOURCE, namespace)
    return namespace["digests"](seed)


def _splits(bench: Benchmark):
    return [bench.train, bench.val, bench.test_iid, bench.test_ood]


# ---------------------------------------------------------------------------- determinism
def test_same_seed_bit_identical_in_fresh_process():
    here = _digests(3)
    out = subprocess.run(
        [sys.executable, "-c", _DIGEST_SOURCE + "\nprint(*digests(3))"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    assert out.stdout.split() == here


def test_same_seed_identical_and_different_seed_differs():
    for make in (
        lambda s: planted_dag(5, 4, 200, s, n_test=50),
        lambda s: confounded(100, s, n_test=50),
        lambda s: anticausal(200, s, n_test=50),
    ):
        a, b, c = make(0), make(0), make(1)
        for sa, sb, sc in zip(_splits(a), _splits(b), _splits(c)):
            assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y)
            assert not torch.equal(sa.x, sc.x)
    g0 = planted_dag(10, 15, 100, 0).true_graph.adjacency
    g1 = planted_dag(10, 15, 100, 1).true_graph.adjacency
    assert not np.array_equal(g0, g1)


def test_planted_graph_and_tests_do_not_depend_on_training_size():
    a, b = planted_dag(8, 10, 300, 4, n_test=50), planted_dag(8, 10, 900, 4, n_test=50)
    assert np.array_equal(a.true_graph.adjacency, b.true_graph.adjacency)
    assert torch.equal(a.test_ood.x, b.test_ood.x) and torch.equal(a.test_ood.y, b.test_ood.y)


# ---------------------------------------------------------------------------- planted_dag
def test_planted_dag_defaults_shapes_and_graph():
    bench = planted_dag()
    assert isinstance(bench, Benchmark) and bench.name == "planted_dag"
    assert [len(s) for s in _splits(bench)] == [5000, 1000, 2000, 2000]
    assert bench.train.x.shape == (5000, 10) and bench.train.y.shape == (5000, 10)
    assert bench.n_features == 10 and bench.tasks.names == [f"t{j}" for j in range(10)]
    assert all(t.kind == "binary" for t in bench.tasks)
    g = bench.true_graph
    assert isinstance(g, TaskGraph) and g.names == bench.tasks.names and not g.learned
    assert g.meta["benchmark"] == "planted_dag" and g.meta["seed"] == 0
    assert g.is_dag() and np.count_nonzero(g.adjacency) == 15
    w = np.abs(g.adjacency[g.adjacency != 0])
    assert (w >= 1.5).all() and (w <= 3.0).all()
    # weights follow the topological order recorded in info
    pos = np.empty(10, dtype=int)
    pos[bench.info["order"]] = np.arange(10)
    src, dst = np.nonzero(g.adjacency)
    assert (pos[src] < pos[dst]).all()
    assert set(np.unique(bench.train.y.numpy())) <= {0.0, 1.0}
    assert bench.train.do is None and bench.train.env is None
    r = repr(bench)
    assert "planted_dag" in r and "train=5000" in r and "true_edges=15" in r


@pytest.mark.parametrize("n_tasks,n_edges", [(2, 0), (2, 1), (5, 10), (12, 30), (7, 3)])
def test_planted_dag_exact_edge_count(n_tasks, n_edges):
    for seed in range(3):
        g = planted_dag(n_tasks, n_edges, 50, seed, n_test=10).true_graph
        assert g.is_dag() and np.count_nonzero(g.adjacency) == n_edges


def test_parent_child_pair_is_dependent():
    bench = planted_dag(4, 1, 4000, 2, n_test=10, confounding=0.0)
    (i,), (j,) = np.nonzero(bench.true_graph.adjacency)
    y = bench.train.y.numpy()
    r = np.corrcoef(y[:, i], y[:, j])[0, 1]
    assert np.sign(r) == np.sign(bench.true_graph.adjacency[i, j]) and abs(r) > 0.2
    # on the default benchmark edges correlate more strongly than non-adjacent pairs
    bench = planted_dag()
    a = bench.true_graph.adjacency != 0
    c = np.abs(np.corrcoef(bench.train.y.numpy().T))
    skeleton = a | a.T | np.eye(10, dtype=bool)
    assert c[a].mean() > 2 * c[~skeleton].mean()
    assert np.median(c[a]) > 0.2


def test_labels_not_deterministic_given_features_and_parents():
    bench = planted_dag(seed=1)
    info = bench.info
    x, y = bench.train.x.double().numpy(), bench.train.y.double().numpy()
    logit = x @ info["feature_weights"] + (2 * y - 1) @ info["edge_weights"]
    p = 1 / (1 + np.exp(-logit))
    bayes = np.maximum(p, 1 - p).mean()
    assert 0.7 < bayes < 0.95
    assert np.abs(y.mean(axis=0) - 0.5).max() < 0.05


def test_ood_changes_confounder_only():
    bench = planted_dag(6, 0, 200, 0, n_test=6000, confounding=2.0, ood_confounding=-2.0,
                        n_confounded_pairs=2, feature_scale=1.0)
    info = bench.info
    assert len(info["confounded_pairs"]) == 2
    train_load, ood_load = info["confounder_loadings"], info["ood_confounder_loadings"]
    assert train_load.shape == (2, 6)
    # first member keeps its loading, second flips
    for p, (a, b) in enumerate(info["confounded_pairs"]):
        ia, ib = bench.tasks.index(a), bench.tasks.index(b)
        assert ood_load[p, ia] == train_load[p, ia] == 2.0
        assert ood_load[p, ib] == -train_load[p, ib]
        r_iid = np.corrcoef(bench.test_iid.y[:, ia], bench.test_iid.y[:, ib])[0, 1]
        r_ood = np.corrcoef(bench.test_ood.y[:, ia], bench.test_ood.y[:, ib])[0, 1]
        assert np.sign(r_iid) == np.sign(train_load[p, ib]) and abs(r_iid) > 0.2
        assert np.sign(r_ood) == -np.sign(r_iid) and abs(r_ood) > 0.2
    assert np.count_nonzero(bench.true_graph.adjacency) == 0


def test_confounded_pairs_are_non_adjacent():
    bench = planted_dag(12, 20, 50, 5, n_test=10, n_confounded_pairs=3)
    a = bench.true_graph.adjacency != 0
    used = []
    for p, q in bench.info["confounded_pairs"]:
        i, j = bench.tasks.index(p), bench.tasks.index(q)
        assert not a[i, j] and not a[j, i]
        used += [i, j]
    assert len(set(used)) == len(used) == 6


def test_missing_rate_applies_to_train_and_val_only():
    bench = planted_dag(8, 8, 4000, 0, missing_rate=0.3)
    assert abs(bench.train.missing_rate - 0.3) < 0.01
    assert abs(bench.val.missing_rate - 0.3) < 0.02
    assert bench.test_iid.missing_rate == 0.0 and bench.test_ood.missing_rate == 0.0
    assert planted_dag(8, 8, 400, 0).train.missing_rate == 0.0


def test_interventional_rows_are_fair_coins_and_descendants_respond():
    bench = planted_dag(6, 8, 20000, 3, n_test=10, interventional_fraction=0.5)
    do = bench.train.do.numpy()
    y = bench.train.y.numpy()
    assert do.sum() == 10000 and (do.sum(axis=1) <= 1).all()
    assert bench.val.do is None and bench.test_iid.do is None
    a = bench.true_graph.adjacency
    checked = 0
    for i, j in zip(*np.nonzero(a)):
        child_do, parent_do = do[:, j], do[:, i]
        if child_do.sum() < 500 or parent_do.sum() < 500:
            continue
        # the intervened child is a fair coin, independent of its parent
        assert abs(y[child_do, j].mean() - 0.5) < 0.05
        assert abs(np.corrcoef(y[child_do, i], y[child_do, j])[0, 1]) < 0.08
        # observationally (no intervention in the row) it depends on the parent ...
        obs = ~do.any(axis=1)
        r_obs = np.corrcoef(y[obs, i], y[obs, j])[0, 1]
        # ... and still responds when the parent itself is intervened on
        r_par = np.corrcoef(y[parent_do, i], y[parent_do, j])[0, 1]
        assert np.sign(r_par) == np.sign(a[i, j]) and abs(r_par) > 0.1
        assert abs(r_obs) > 0.1
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"n_tasks": 4, "n_edges": 7}, "n_edges"),
        ({"n_tasks": 1}, "n_tasks"),
        ({"n_tasks": 3.0}, "n_tasks"),
        ({"n_edges": -1}, "n_edges"),
        ({"n_samples": 0}, "n_samples"),
        ({"seed": -1}, "seed"),
        ({"seed": "a"}, "seed"),
        ({"n_features": 0}, "n_features"),
        ({"edge_weight": (3.0, 1.0)}, "edge_weight"),
        ({"edge_weight": (0.0, 1.0)}, "edge_weight"),
        ({"edge_weight": 2.0}, "edge_weight"),
        ({"feature_scale": -1.0}, "feature_scale"),
        ({"confounding": float("nan")}, "confounding"),
        ({"ood_confounding": "x"}, "ood_confounding"),
        ({"missing_rate": 1.0}, "missing_rate"),
        ({"missing_rate": -0.1}, "missing_rate"),
        ({"interventional_fraction": 1.5}, "interventional_fraction"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"n_samples": 3, "val_fraction": 0.1}, "val_fraction"),
        ({"n_test": 0}, "n_test"),
        ({"n_tasks": 3, "n_edges": 3, "n_confounded_pairs": 1}, "n_confounded_pairs"),
    ],
)
def test_planted_dag_validation(kwargs, name):
    with pytest.raises(ValidationError, match=name):
        planted_dag(**kwargs)


# ---------------------------------------------------------------------------- confounded
def test_confounded_environments_match_rho():
    bench = confounded(1500, 0, rhos=(0.9, 0.75, 0.5))
    tr = bench.train
    assert len(tr) == 4500 and tr.n_envs == 3 and tr.x.shape == (4500, 10)
    assert [len(bench.val), len(bench.test_iid), len(bench.test_ood)] == [900, 2000, 2000]
    assert bench.tasks.names == ["y1", "y2"]
    y = tr.y.numpy()
    env = tr.env.numpy()
    for e, rho in enumerate((0.9, 0.75, 0.5)):
        agree = (y[env == e, 0] == y[env == e, 1]).mean()
        assert abs(agree - rho) < 0.05  # ~4.5 sd at n = 1500
        r = np.corrcoef(y[env == e].T)[0, 1]
        assert abs(r - (2 * rho - 1)) < 0.1
    for split, rho in ((bench.test_iid, (0.9 + 0.75 + 0.5) / 3), (bench.test_ood, 0.1)):
        yy = split.y.numpy()
        assert abs((yy[:, 0] == yy[:, 1]).mean() - rho) < 0.05
        assert split.env is None
    assert bench.info["iid_rho"] == pytest.approx((0.9 + 0.75 + 0.5) / 3)
    assert np.count_nonzero(bench.true_graph.adjacency) == 0
    assert "confounder" in bench.true_graph.meta


def test_confounded_features_follow_their_task():
    bench = confounded(3000, 1, n_noise=3)
    info = bench.info
    assert info["blocks"] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert info["causal_features"] == [0] and info["spurious_features"] == [4]
    assert info["noise_features"] == [1, 2, 3, 5, 6, 7]
    assert info["bayes_accuracy_causal"] == pytest.approx(0.80, abs=0.01)
    x, y = bench.test_ood.x.numpy(), bench.test_ood.y.numpy()
    assert x[y[:, 0] == 1, 0].mean() - x[y[:, 0] == 0, 0].mean() == pytest.approx(1.68, abs=0.15)
    assert x[y[:, 1] == 1, 4].mean() - x[y[:, 1] == 0, 4].mean() == pytest.approx(6.0, abs=0.15)
    noise = x[:, info["noise_features"]]
    assert np.abs(noise.mean(axis=0)).max() < 0.1


def test_confounded_mixing():
    plain = confounded(500, 2)
    glob = confounded(500, 2, mixing=True)
    q = glob.info["mixing_matrix"]
    assert glob.info["mixing"] == "global" and plain.info["mixing_matrix"] is None
    assert np.allclose(q @ q.T, np.eye(10), atol=1e-10)
    assert np.allclose(glob.train.x.double().numpy() @ q, plain.train.x.double().numpy(),
                       atol=1e-4)
    assert (np.abs(q[:5, 5:]) > 1e-6).any()  # mixes across blocks
    block = confounded(500, 2, mixing="block")
    qb = block.info["mixing_matrix"]
    assert np.allclose(qb[:5, 5:], 0) and np.allclose(qb[5:, :5], 0)
    assert np.allclose(qb @ qb.T, np.eye(10), atol=1e-10)
    assert torch.equal(block.train.y, plain.train.y)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"n_per_env": 0}, "n_per_env"),
        ({"rhos": ()}, "rhos"),
        ({"rhos": 0.9}, "rhos"),
        ({"rhos": (0.9, 1.2)}, r"rhos\[1\]"),
        ({"ood_rho": -0.1}, "ood_rho"),
        ({"iid_rho": 2.0}, "iid_rho"),
        ({"causal_strength": -1.0}, "causal_strength"),
        ({"spurious_strength": float("inf")}, "spurious_strength"),
        ({"n_noise": -1}, "n_noise"),
        ({"mixing": "rotate"}, "mixing"),
        ({"val_fraction": -0.2}, "val_fraction"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_confounded_validation(kwargs, name):
    with pytest.raises(ValidationError, match=name):
        confounded(**kwargs)


# ---------------------------------------------------------------------------- anticausal
def test_agreement_prior():
    p = agreement_prior(3, 0.9)
    assert p.shape == (3, 3) and p.sum() == pytest.approx(1.0)
    assert np.trace(p) == pytest.approx(0.9)
    assert p[0, 1] == pytest.approx(0.1 / 6)
    with pytest.raises(ValidationError, match="agreement"):
        agreement_prior(3, 1.1)
    with pytest.raises(ValidationError, match="n_classes"):
        agreement_prior(1, 0.5)


def test_anticausal_priors_and_empirical_joint():
    bench = anticausal(20000, 0, n_test=20000)
    tp, op = bench.info["train_prior"], bench.info["ood_prior"]
    assert tp.sum() == pytest.approx(1.0) and op.sum() == pytest.approx(1.0)
    assert np.trace(tp) == pytest.approx(0.9) and np.trace(op) == pytest.approx(0.1)
    assert [t.kind for t in bench.tasks] == ["multiclass", "multiclass"]
    assert bench.train.x.shape == (20000, 4) and bench.n_features == 4
    assert [len(bench.val), len(bench.test_iid)] == [4000, 20000]
    for split, prior in ((bench.train, tp), (bench.test_iid, tp), (bench.test_ood, op)):
        y = split.y.numpy().astype(int)
        joint = np.zeros((3, 3))
        np.add.at(joint, (y[:, 0], y[:, 1]), 1.0)
        assert np.abs(joint / len(y) - prior).max() < 0.015
    # class means: task 1 noisy (sd 1.0), task 2 clean (sd 0.4), vertices of a unit triangle
    x, y = bench.train.x.numpy(), bench.train.y.numpy().astype(int)
    means = bench.info["means"]
    assert np.allclose(np.linalg.norm(means, axis=1), 1.0)
    for c in range(3):
        assert np.allclose(x[y[:, 0] == c, :2].mean(axis=0), means[c], atol=0.05)
        assert np.allclose(x[y[:, 1] == c, 2:].std(axis=0), 0.4, atol=0.03)
        assert np.allclose(x[y[:, 0] == c, :2].std(axis=0), 1.0, atol=0.05)
    assert np.count_nonzero(bench.true_graph.adjacency) == 0


def test_shifted_prior_kinds():
    p = agreement_prior(3, 0.9)
    anti = shifted_prior(p, "anti")
    assert anti.sum() == pytest.approx(1.0) and np.trace(anti) < 0.1
    assert np.argmax(anti[0]) != 0
    uni = shifted_prior(p, "uniform")
    assert np.allclose(uni, 1 / 9)
    assert np.allclose(shifted_prior(p, "uniform", strength=0.0), p)
    half = shifted_prior(p, "anti", strength=0.5)
    assert np.allclose(half, 0.5 * p + 0.5 * anti)
    s1, s2, s3 = (shifted_prior(p, "shuffle", seed=s) for s in (1, 1, 2))
    assert np.array_equal(s1, s2) and not np.array_equal(s1, s3)
    assert s1.sum() == pytest.approx(1.0) and (s1 >= 0).all()
    fixed = shifted_prior(p, "shuffle", seed=0, swap_fraction=0.0, noise_scale=0.0)
    assert np.allclose(fixed, p)
    with pytest.raises(ValidationError, match="kind"):
        shifted_prior(p, "reverse")
    with pytest.raises(ValidationError, match="prior"):
        shifted_prior([[0.5, 0.6], [0.0, 0.0]])
    with pytest.raises(ValidationError, match="swap_fraction"):
        shifted_prior(p, "shuffle", swap_fraction=0.7)


def test_anticausal_sample_any_prior():
    prior = np.array([[0.1, 0.2, 0.1], [0.3, 0.1, 0.2]])
    data = anticausal_sample(prior, 30000, seed=5)
    assert [t.kind for t in data.tasks] == ["binary", "multiclass"]
    assert data.tasks[1].n_classes == 3
    y = data.y.numpy().astype(int)
    joint = np.zeros((2, 3))
    np.add.at(joint, (y[:, 0], y[:, 1]), 1.0)
    assert np.abs(joint / len(y) - prior).max() < 0.01
    again = anticausal_sample(prior, 30000, seed=5)
    assert torch.equal(data.x, again.x)
    with pytest.raises(ValidationError, match="n"):
        anticausal_sample(prior, 0)
    with pytest.raises(ValidationError, match="noise"):
        anticausal_sample(prior, 10, noise=(1.0, -1.0))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"n_samples": 0}, "n_samples"),
        ({"n_classes": 1}, "n_classes"),
        ({"train_agreement": 1.5}, "train_agreement"),
        ({"ood_agreement": -0.5}, "ood_agreement"),
        ({"noise": (1.0,)}, "noise"),
        ({"noise": (-1.0, 0.4)}, "noise"),
        ({"n_test": -3}, "n_test"),
    ],
)
def test_anticausal_validation(kwargs, name):
    with pytest.raises(ValidationError, match=name):
        anticausal(**kwargs)
