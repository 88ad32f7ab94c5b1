"""Metrics: hand-computed structure cases, rank scores against brute force, task metrics, Δm."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from taskgraph.exceptions import ValidationError
from taskgraph.graph import TaskGraph
from taskgraph.metrics import auprc, auroc, delta_m, format_table, structure, task_metrics
from taskgraph.tasks import Task, TaskSet


def _adj(t: int, edges: list[tuple[int, int]], w: float = 1.0) -> np.ndarray:
    a = np.zeros((t, t))
    for i, j in edges:
        a[i, j] = w
    return a


# ---------------------------------------------------------------------------- structure
def test_identical_graphs():
    a = _adj(4, [(0, 1), (1, 2), (0, 3)])
    s = structure(a, a)
    assert s["shd"] == 0 and s["reversed"] == 0
    for k in ("directed", "skeleton"):
        assert s[f"{k}_precision"] == s[f"{k}_recall"] == s[f"{k}_f1"] == 1.0
    assert (s["tp"], s["fp"], s["fn"]) == (3, 0, 0)
    assert s["n_edges_pred"] == s["n_edges_true"] == 3
    assert s["auroc"] == 1.0 and s["auprc"] == 1.0 and s["pred_is_dag"]


def test_one_reversed_edge():
    s = structure(_adj(2, [(1, 0)]), _adj(2, [(0, 1)]))
    assert s["shd"] == 1 and s["reversed"] == 1 and s["misoriented"] == 1
    assert (s["tp"], s["fp"], s["fn"]) == (0, 1, 1)
    assert s["directed_f1"] == 0.0 and s["directed_precision"] == 0.0
    assert s["skeleton_precision"] == s["skeleton_recall"] == s["skeleton_f1"] == 1.0
    assert s["extra"] == s["missing"] == 0


def test_reversed_edge_in_larger_graph():
    true = _adj(3, [(0, 1), (1, 2)])
    s = structure(_adj(3, [(1, 0), (1, 2)]), true)
    assert s["shd"] == 1 and (s["tp"], s["fp"], s["fn"]) == (1, 1, 1)
    assert s["directed_f1"] == pytest.approx(0.5) and s["skeleton_f1"] == 1.0


def test_one_missing_and_one_extra_edge():
    true = _adj(4, [(0, 1), (1, 2)])
    missing = structure(_adj(4, [(0, 1)]), true)
    assert missing["shd"] == 1 and missing["missing"] == 1 and missing["fn"] == 1
    assert missing["directed_precision"] == 1.0 and missing["directed_recall"] == 0.5
    assert missing["directed_f1"] == pytest.approx(2 / 3)
    extra = structure(_adj(4, [(0, 1), (1, 2), (3, 0)]), true)
    assert extra["shd"] == 1 and extra["extra"] == 1 and extra["fp"] == 1
    assert extra["directed_precision"] == pytest.approx(2 / 3)
    assert extra["directed_recall"] == 1.0
    assert extra["skeleton_precision"] == pytest.approx(2 / 3)
    both = structure(_adj(4, [(0, 1), (3, 0)]), true)
    assert both["shd"] == 2


def test_undirected_prediction_counts_one_tp_one_fp():
    s = structure(_adj(3, [(0, 1), (1, 0)]), _adj(3, [(0, 1)]))
    assert (s["tp"], s["fp"], s["fn"]) == (1, 1, 0)
    assert s["skeleton_f1"] == 1.0 and s["reversed"] == 0 and s["misoriented"] == 1
    assert s["shd"] == 1 and not s["pred_is_dag"]
    assert s["directed_precision"] == 0.5 and s["directed_recall"] == 1.0


def test_empty_graphs():
    true = _adj(3, [(0, 1), (1, 2)])
    s = structure(np.zeros((3, 3)), true)
    assert s["shd"] == 2 and s["n_edges_pred"] == 0
    assert s["directed_precision"] == s["directed_recall"] == s["directed_f1"] == 0.0
    assert s["skeleton_f1"] == 0.0
    assert s["auroc"] == 0.5  # all scores tie
    both = structure(np.zeros((3, 3)), np.zeros((3, 3)))
    assert both["shd"] == 0 and both["directed_f1"] == 1.0 and both["skeleton_f1"] == 1.0
    assert math.isnan(both["auroc"]) and math.isnan(both["auprc"])
    spurious = structure(true, np.zeros((3, 3)))
    assert spurious["directed_precision"] == 0.0 and spurious["directed_recall"] == 1.0
    assert spurious["directed_f1"] == 0.0 and spurious["shd"] == 2
    for k, v in s.items():  # only the compelled scores may be NaN (a chain has no compelled edge)
        assert not (isinstance(v, float) and math.isnan(v)) or k.startswith("compelled_")
    assert math.isnan(s["compelled_f1"]) and s["n_compelled_true"] == 0


def test_threshold_and_weights():
    true = _adj(3, [(0, 1), (1, 2)])
    pred = np.array([[0.0, -0.9, 0.1], [0.0, 0.0, 0.5], [0.05, 0.0, 0.0]])
    s = structure(pred, true, threshold=0.2)
    assert s["shd"] == 0 and s["directed_f1"] == 1.0
    loose = structure(pred, true)
    assert loose["fp"] == 2 and loose["shd"] == 1  # 0->2 and 2->0 share one skeleton pair
    assert loose["auroc"] == 1.0  # |weights| rank true edges first
    with pytest.raises(ValidationError, match="threshold"):
        structure(pred, true, threshold=-1)
    with pytest.raises(ValidationError, match="pred"):
        structure(np.zeros((2, 2)), true)
    with pytest.raises(ValidationError, match="scores"):
        structure(pred, true, scores=np.zeros((2, 2)))


def test_diagonal_ignored():
    a = _adj(3, [(0, 1)])
    p = a.copy()
    p[2, 2] = 5.0
    assert structure(p, a)["shd"] == 0


def test_taskgraph_inputs_raw_scores_and_name_alignment():
    names = ["a", "b", "c"]
    true = TaskGraph(_adj(3, [(0, 1), (1, 2)]), names)
    raw = np.array([[0.0, 0.9, 0.2], [0.1, 0.0, 0.8], [0.3, 0.05, 0.0]])
    pred = TaskGraph(np.where(raw > 0.5, raw, 0.0), names, raw=raw)
    s = structure(pred, true)
    assert s["shd"] == 0 and s["auroc"] == 1.0 and s["auprc"] == 1.0
    # raw scores that misrank an edge lower the AUROC but not the thresholded metrics
    raw_bad = raw.copy()
    raw_bad[2, 0] = 0.85
    s_bad = structure(TaskGraph(np.where(raw > 0.5, raw, 0.0), names, raw=raw_bad), true)
    assert s_bad["shd"] == 0 and s_bad["auroc"] == pytest.approx(1 - 1 / (2 * 4))
    # same graph with a different node order compares equal after alignment
    perm = [2, 0, 1]
    permuted = TaskGraph(true.adjacency[np.ix_(perm, perm)], [names[i] for i in perm])
    assert structure(permuted, true)["shd"] == 0
    with pytest.raises(ValidationError, match="names"):
        structure(TaskGraph(np.zeros((3, 3)), ["a", "b", "z"]), true)
    # torch input works too
    assert structure(torch.tensor(true.adjacency), true)["shd"] == 0


def test_shd_matches_bruteforce_definition(rng):
    for _ in range(50):
        t = 6
        true = np.triu((rng.random((t, t)) < 0.3).astype(float), 1)
        perm = rng.permutation(t)
        true = true[np.ix_(perm, perm)]
        pred = (rng.random((t, t)) < 0.2).astype(float)
        np.fill_diagonal(pred, 0)
        s = structure(pred, true)
        shd = 0
        for i in range(t):
            for j in range(i + 1, t):
                ptype = (pred[i, j] != 0, pred[j, i] != 0)
                ttype = (true[i, j] != 0, true[j, i] != 0)
                shd += ptype != ttype
        assert s["shd"] == shd
        assert s["tp"] + s["fn"] == s["n_edges_true"] and s["tp"] + s["fp"] == s["n_edges_pred"]


# ---------------------------------------------------------------------------- AUROC / AUPRC
def _auroc_bruteforce(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def _auprc_bruteforce(y: np.ndarray, s: np.ndarray) -> float:
    ap, prev_recall = 0.0, 0.0
    for thr in sorted(set(s.tolist()), reverse=True):
        sel = s >= thr
        tp = (y[sel] == 1).sum()
        recall = tp / (y == 1).sum()
        ap += (recall - prev_recall) * tp / sel.sum()
        prev_recall = recall
    return float(ap)


def test_auroc_auprc_against_bruteforce_with_ties(rng):
    for _ in range(30):
        n = int(rng.integers(2, 80))
        y = (rng.random(n) < 0.4).astype(float)
        s = rng.integers(0, 6, size=n).astype(float)  # many ties
        if y.min() == y.max():
            assert math.isnan(auroc(y, s))
            continue
        assert auroc(y, s) == pytest.approx(_auroc_bruteforce(y, s), abs=1e-12)
        assert auprc(y, s) == pytest.approx(_auprc_bruteforce(y, s), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(-3, 3)), min_size=2, max_size=40))
def test_auroc_property(pairs):
    y = np.array([float(a) for a, _ in pairs])
    s = np.array([float(b) for _, b in pairs])
    if y.min() == y.max():
        assert math.isnan(auroc(y, s))
    else:
        assert auroc(y, s) == pytest.approx(_auroc_bruteforce(y, s), abs=1e-12)
        assert auroc(y, -s) == pytest.approx(1 - auroc(y, s), abs=1e-12)


def test_auroc_masks_nan_and_validates():
    y = np.array([0, 1, np.nan, 1, 0])
    s = np.array([0.1, 0.9, 0.0, 0.2, 0.3])
    assert auroc(y, s) == pytest.approx(auroc(y[[0, 1, 3, 4]], s[[0, 1, 3, 4]]))
    assert auroc(y, s) == pytest.approx(0.75)
    assert auprc([0, 1, 1], [0.1, 0.8, 0.9]) == 1.0
    assert math.isnan(auprc([0, 0], [0.1, 0.2]))
    with pytest.raises(ValidationError, match="y_true"):
        auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValidationError, match="score"):
        auroc([0, 1], [0.1])


# ---------------------------------------------------------------------------- task metrics
@pytest.fixture
def tasks():
    return TaskSet([Task("b", "binary"), Task("m", "multiclass", 3), Task("r", "regression")])


def test_task_metrics_nan_labels_equal_observed_subset(tasks, rng):
    n = 200
    y = np.stack([rng.integers(0, 2, n), rng.integers(0, 3, n), rng.normal(size=n)], 1)
    pred = np.stack([rng.integers(0, 2, n), rng.integers(0, 3, n), rng.normal(size=n)], 1)
    proba = rng.random((n, 3))
    y_nan = y.copy()
    missing = rng.random((n, 3)) < 0.3
    y_nan[missing] = np.nan
    out = task_metrics(tasks, torch.tensor(y_nan), torch.tensor(pred), proba)
    assert set(out) == {"b/accuracy", "b/auroc", "m/accuracy", "r/mse", "mean", "mean_auroc"}
    for k, name in enumerate("bmr"):
        obs = ~missing[:, k]
        sub = task_metrics([tasks[k]], y[obs, k], pred[obs, k],
                           proba[obs, k][:, None] if name == "b" else None)
        for key, value in sub.items():
            if key.startswith(name + "/"):
                assert out[key] == pytest.approx(value)
    obs0 = ~missing[:, 0]
    assert out["b/accuracy"] == pytest.approx((pred[obs0, 0] == y[obs0, 0]).mean())
    assert out["r/mse"] == pytest.approx(((pred[:, 2] - y[:, 2])[~missing[:, 2]] ** 2).mean())
    assert out["b/auroc"] == pytest.approx(auroc(y_nan[:, 0], proba[:, 0]))
    assert out["mean"] == pytest.approx((out["b/accuracy"] + out["m/accuracy"] - out["r/mse"]) / 3)
    assert out["mean_auroc"] == out["b/auroc"]


def test_task_metrics_edge_cases(tasks):
    y = np.array([[1, 0, 0.5], [1, 2, np.nan], [np.nan, 1, np.nan]])
    pred = np.array([[1, 0, 1.5], [0, 2, 0.0], [1, 0, 0.0]])
    out = task_metrics(tasks, y, pred, [np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]]),
                                        None, None])
    assert out["b/accuracy"] == 0.5 and math.isnan(out["b/auroc"])  # one class observed
    assert out["m/accuracy"] == pytest.approx(2 / 3) and out["r/mse"] == 1.0
    assert out["mean"] == pytest.approx((0.5 + 2 / 3 - 1.0) / 3)
    assert math.isnan(out["mean_auroc"])
    no_labels = task_metrics(["a"], np.full(3, np.nan), np.zeros(3))
    assert math.isnan(no_labels["a/accuracy"]) and math.isnan(no_labels["mean"])
    by_name = task_metrics(tasks, y, pred, {"b": np.array([0.8, 0.4, 0.5])})
    assert "b/auroc" in by_name and "m/auroc" not in by_name
    assert "b/auroc" not in task_metrics(tasks, y, pred)
    with pytest.raises(ValidationError, match="pred"):
        task_metrics(tasks, y, pred[:, :2])
    with pytest.raises(ValidationError, match="y_true"):
        task_metrics(tasks, y[:, :2], pred[:, :2])
    with pytest.raises(ValidationError, match="proba"):
        task_metrics(tasks, y, pred, np.zeros((3, 2)))


# ---------------------------------------------------------------------------- delta_m
def test_delta_m_hand_case():
    tasks = TaskSet([Task("a", "binary"), Task("r", "regression")])
    mtl = {"a/accuracy": 0.9, "r/mse": 0.8, "mean": 0.05}
    stl = {"a/accuracy": 0.8, "r/mse": 1.0}
    # a: +(0.9 - 0.8) / 0.8 = +0.125 ; r (lower is better): -(0.8 - 1.0) / 1.0 = +0.2
    assert delta_m(mtl, stl, tasks) == pytest.approx(100 * (0.125 + 0.2) / 2)
    worse = {"a/accuracy": 0.7, "r/mse": 1.5}
    assert delta_m(worse, stl, tasks) == pytest.approx(100 * (-0.125 - 0.5) / 2)
    assert delta_m(stl, stl, tasks) == 0.0
    both = delta_m({"a/accuracy": 0.9, "a/auroc": 0.6, "r/mse": 0.8},
                   {"a/accuracy": 0.8, "a/auroc": 0.8, "r/mse": 1.0}, tasks,
                   metrics={"a": ["accuracy", "auroc"]})
    assert both == pytest.approx(100 * (0.125 - 0.25 + 0.2) / 3)
    with pytest.raises(ValidationError, match="r/mse"):
        delta_m({"a/accuracy": 0.9}, stl, tasks)
    with pytest.raises(ValidationError, match="single_task"):
        delta_m(mtl, {"a/accuracy": 0.0, "r/mse": 1.0}, tasks)


# ---------------------------------------------------------------------------- table
def test_format_table():
    rows = [{"method": "gcnet", "f1": 0.91234, "shd": 2},
            {"method": "pc", "f1": float("nan"), "note": "cpdag"}]
    text = format_table(rows, ["method", "f1", "shd", "note"], floatfmt=".3f")
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[0].split() == ["method", "f1", "shd", "note"]
    assert "0.912" in lines[2] and "nan" in lines[3] and "cpdag" in lines[3]
    assert lines[2].index("0.912") + 5 == lines[3].index("nan") + 3  # right-aligned numbers
    assert format_table(rows).splitlines()[0].split() == ["method", "f1", "shd", "note"]
