"""Target-shift evaluation (G7 of the reference) and the `taskgraph shift` command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import taskgraph as tg
from taskgraph import MultiTaskData, ValidationError
from taskgraph.inference import (
    GMTL,
    JointPrior,
    ShiftResult,
    alpha_sweep,
    importance_sampling_evaluation,
    importance_weights,
    random_target_shift,
    shifted_test_accuracy,
    weighted_kendall_tau,
)


@pytest.fixture(scope="module")
def problem():
    bench = tg.datasets.anticausal(n_samples=800, seed=0, n_test=600)
    prior = JointPrior.fit(bench.train, kind="full")
    g = torch.Generator().manual_seed(0)
    lp = torch.randn(len(bench.test_iid), 2, 3, generator=g).log_softmax(-1)
    return bench, prior, lp


def test_weights_are_normalised_and_equal_priors_give_plain_accuracy(problem):
    bench, prior, lp = problem
    log_iid = prior.log_table()
    log_ood, _, _ = random_target_shift(prior, n_reps=7, seed=1)
    w = importance_weights(bench.test_iid.y, log_iid, log_ood)
    assert w.shape == (7, len(bench.test_iid))
    torch.testing.assert_close(w.sum(dim=1), torch.ones(7, dtype=torch.float64))
    assert bool((w >= 0).all())
    same = importance_weights(bench.test_iid.y, log_iid, log_iid[None])
    torch.testing.assert_close(same, torch.full_like(same, 1 / len(bench.test_iid)))
    assert weighted_kendall_tau(log_iid, log_iid) == pytest.approx(1.0)
    # no swap, (almost) no noise: the shifted prior is the training prior
    res = importance_sampling_evaluation(
        bench.test_iid, {0.0: GMTL(prior, 0.0).decode(lp), 1.0: GMTL(prior, 1.0).decode(lp)},
        prior, n_reps=5, seed=0, max_swap=0.0, max_noise=1e-9)
    np.testing.assert_allclose(res.tau, 1.0)
    np.testing.assert_allclose(res.accuracy, np.repeat(res.iid_accuracy[:, None], 5, 1))
    np.testing.assert_allclose(res.ess, len(bench.test_iid), rtol=1e-6)


def test_missing_labels_are_marginalised_by_hand():
    p_iid = np.array([[0.4, 0.1], [0.2, 0.3]])
    p_ood = np.array([[0.1, 0.2], [0.3, 0.4]])
    y = np.array([[0, 1], [1, np.nan], [np.nan, 0], [np.nan, np.nan]])
    w = importance_weights(y, np.log(p_iid), np.log(p_ood)[None])[0].numpy()
    ratio = np.array([
        0.2 / 0.1,
        (0.3 + 0.4) / (0.2 + 0.3),  # task 2 missing: sum its classes out of both priors
        (0.1 + 0.3) / (0.4 + 0.2),  # task 1 missing
        1.0,
    ])
    np.testing.assert_allclose(w, ratio / ratio.sum())
    rows = np.array([True, True, False, True])
    w2 = importance_weights(y, np.log(p_iid), np.log(p_ood)[None], rows)[0].numpy()
    expected = np.where(rows, ratio, 0.0)
    np.testing.assert_allclose(w2, expected / expected.sum())


def test_random_shift_protocol_and_seeding(problem):
    _, prior, _ = problem
    a, swap, scale = random_target_shift(prior, n_reps=50, seed=3)
    b, _, _ = random_target_shift(prior, n_reps=50, seed=3)
    c, _, _ = random_target_shift(prior, n_reps=50, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    np.testing.assert_allclose(np.exp(a).sum(axis=1), 1.0)
    assert swap.min() >= 0 and swap.max() <= 0.5 and scale.min() >= 1e-12 and scale.max() <= 5
    # swapping only (no noise) permutes the cells
    d, _, _ = random_target_shift(prior, n_reps=10, seed=0, max_noise=0.0, min_noise=0.0)
    flat = prior.log_table().reshape(-1).numpy()
    for row in d:
        np.testing.assert_allclose(np.sort(row), np.sort(flat))
    with pytest.raises(ValidationError, match="max_swap"):
        random_target_shift(prior, max_swap=0.7)
    with pytest.raises(ValidationError, match="n_reps"):
        random_target_shift(prior, n_reps=0)


def test_alpha_sweep_plot_and_summary(problem, tmp_path):
    bench, prior, lp = problem
    res = alpha_sweep(lp, bench.test_iid, prior, alphas=(0.0, 0.5, 1.0), n_reps=60, seed=0)
    assert isinstance(res, ShiftResult) and res.accuracy.shape == (3, 60)
    again = alpha_sweep(lp, bench.test_iid, prior, alphas=(0.0, 0.5, 1.0), n_reps=60, seed=0)
    np.testing.assert_array_equal(res.accuracy, again.accuracy)
    assert res.tau.max() <= 1.0 + 1e-12 and res.tau.min() >= -1.0
    summary = res.summary(n_bins=4)
    json.dumps(summary)
    assert summary["alphas"] == [0.0, 0.5, 1.0] and sum(summary["binned"]["count"]) == 60
    fig = res.plot(tmp_path / "sweep.png", n_bins=4)
    assert (tmp_path / "sweep.png").stat().st_size > 1000
    fig.clf()


def test_shifted_test_accuracy(problem):
    bench, prior, lp = problem
    anti = tg.datasets.anticausal_sample(bench.info["ood_prior"], 300, seed=1)
    res = shifted_test_accuracy(torch.randn(300, 2, 3).log_softmax(-1), anti, prior,
                                alphas=[0.0, 1.0], test_prior=bench.info["ood_prior"])
    assert set(res["accuracy"]) == {"y1", "y2"} and len(res["accuracy"]["y1"]) == 2
    assert -1.0 <= res["tau"] < 0.5
    with pytest.raises(ValidationError, match="alphas"):
        shifted_test_accuracy(lp, bench.test_iid, prior, alphas=[-1.0])


def test_evaluation_errors(problem):
    bench, prior, lp = problem
    with pytest.raises(ValidationError, match="predictions"):
        importance_sampling_evaluation(bench.test_iid, {}, prior)
    with pytest.raises(ValidationError, match="predictions"):
        importance_sampling_evaluation(bench.test_iid, {1.0: torch.zeros(3, 2)}, prior)
    with pytest.raises(ValidationError, match="JointPrior"):
        importance_sampling_evaluation(bench.test_iid, {1.0: torch.zeros(600, 2)}, "table")
    missing = MultiTaskData(np.zeros((2, 1)), [[np.nan, 0], [np.nan, 1]], bench.tasks)
    with pytest.raises(ValidationError, match="no observed label"):
        importance_sampling_evaluation(missing, {1.0: torch.zeros(2, 2)}, prior, n_reps=2)


def test_cli_shift(tmp_path):
    from taskgraph.cli import main

    out = tmp_path / "shift"
    code = main(["shift", "--quick", "--epochs", "3", "--n-reps", "40", "--alphas", "0,1",
                 "--out", str(out)])
    assert code == 0
    payload = json.loads((out / "shift.json").read_text())
    assert payload["alphas"] == [0.0, 1.0]
    assert {"importance_sampling", "explicit_shift", "calibration"} <= set(payload)
    assert (out / "shift.png").stat().st_size > 1000
    assert not math.isnan(payload["importance_sampling"]["iid_accuracy"][0])
