"""GMTL behaviour on the anticausal benchmark (G5, G6 of the reference).

Task y1 is hard (noise 1.0), y2 easy (noise 0.4); the training prior puts 0.9 of its mass on
y1 = y2, so a discriminative model reads y1 off the y2 features. Under an anti-correlated test
prior (0.1 on the diagonal) that shortcut fails and GMTL's joint decoding with the training
prior removes it.
"""

from __future__ import annotations

import numpy as np
import pytest

import taskgraph as tg
from taskgraph.inference import (
    GMTL,
    JointPrior,
    TemperatureScaler,
    alpha_sweep,
    shifted_test_accuracy,
)

ALPHAS = [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.fixture(scope="module")
def fitted():
    bench = tg.datasets.anticausal(n_samples=2000, seed=0, n_test=3000)
    learner = tg.learners.create("hard_sharing", bench.tasks, epochs=60, patience=10,
                                 batch_size=len(bench.train), lr=1e-2, seed=0, verbose=False)
    learner.fit(bench.train, val=bench.val)
    anti = tg.datasets.anticausal_sample(bench.info["ood_prior"], 6000, seed=123)
    prior = JointPrior.fit(bench.train, kind="full")
    return bench, learner, anti, prior


def test_anti_correlated_prior_gain_and_monotone_in_alpha(fitted):
    bench, learner, anti, prior = fitted
    res = shifted_test_accuracy(learner, anti, prior, ALPHAS)
    y1, y2 = np.array(res["accuracy"]["y1"]), np.array(res["accuracy"]["y2"])
    assert y1[-1] - y1[0] >= 0.15, y1  # observed ≈ +0.33 (0.33 → 0.66)
    assert bool((np.diff(y1) >= -0.01).all()), y1
    assert y2.min() >= 0.9, y2  # the easy task is not hurt
    # the same through the learner's predict(..., inference=...)
    pred = learner.predict(anti.x, inference=GMTL(prior, alpha=1.0))
    assert float((pred[:, 0] == anti.y[:, 0]).float().mean()) == pytest.approx(y1[-1])


def test_in_distribution_alpha_zero_is_best(fitted):
    bench, learner, _, prior = fitted
    y1 = shifted_test_accuracy(learner, bench.test_iid, prior, ALPHAS)["accuracy"]["y1"]
    assert y1[0] >= max(y1[1:]), y1  # observed 0.885 → 0.59 at α = 1


def test_temperature_scaling_restores_the_gain_on_over_confident_logits(fitted):
    bench, learner, anti, prior = fitted
    lp_test = 10.0 * learner.predict_log_proba(anti.x)
    lp_val = 10.0 * learner.predict_log_proba(bench.val.x)
    raw = shifted_test_accuracy(lp_test, anti, prior, [0.0, 1.0])["accuracy"]["y1"]
    scaler = TemperatureScaler().fit(lp_val, bench.val)
    assert bool((scaler.temperature_ > 5).all()), scaler.temperature_  # ≈ 10
    cal = shifted_test_accuracy(lp_test, anti, prior, [0.0, 1.0],
                                calibration=scaler)["accuracy"]["y1"]
    assert raw[1] - raw[0] < 0.1, raw  # observed +0.04: the prior is swamped
    assert cal[1] - cal[0] >= 0.15, cal  # observed +0.33


def test_graph_and_independent_priors_on_anticausal(fitted):
    bench, learner, anti, _ = fitted
    graph = JointPrior.fit(bench.train, kind="graph")  # Chow-Liu: the single edge y1 - y2
    y1 = shifted_test_accuracy(learner, anti, graph, [0.0, 1.0])["accuracy"]["y1"]
    assert y1[1] - y1[0] >= 0.15, y1
    # the product of marginals has no coupling: it cannot undo the shortcut
    ind = JointPrior.fit(bench.train, kind="independent")
    y1i = shifted_test_accuracy(learner, anti, ind, [0.0, 1.0])["accuracy"]["y1"]
    assert abs(y1i[1] - y1i[0]) < 0.05, y1i


def test_importance_sampling_favours_alpha_under_strong_shift(fitted):
    bench, learner, _, prior = fitted
    res = alpha_sweep(learner, bench.test_iid, prior, [0.0, 1.0], n_reps=300, seed=0)
    strong = res.tau < 0.0
    assert strong.sum() > 20
    assert res.accuracy[1, strong].mean() > res.accuracy[0, strong].mean()
    assert res.iid_accuracy[0] > res.iid_accuracy[1]
