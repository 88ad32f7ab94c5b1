"""Per-task temperature scaling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import taskgraph as tg
from taskgraph import MultiTaskData, NotFittedError, Task, TaskSet, ValidationError
from taskgraph.inference import GMTL, JointPrior, TemperatureScaler


def _calibrated_problem(n=4000, seed=0):
    """Logits z with labels drawn from softmax(z): temperature 1 is the truth."""
    g = torch.Generator().manual_seed(seed)
    z_bin = 2.0 * torch.randn(n, generator=g)
    z_multi = 2.0 * torch.randn(n, 3, generator=g)
    y_bin = (torch.rand(n, generator=g) < torch.sigmoid(z_bin)).double()
    y_multi = torch.multinomial(torch.softmax(z_multi, -1), 1, generator=g)[:, 0].double()
    lp = torch.full((n, 3, 3), -math.inf, dtype=torch.float64)
    lp[:, 0, 0], lp[:, 0, 1] = torch.nn.functional.logsigmoid(-z_bin).double(), (
        torch.nn.functional.logsigmoid(z_bin).double())
    lp[:, 1, :] = torch.log_softmax(z_multi, -1).double()
    y = torch.stack([y_bin, y_multi, torch.randn(n, generator=g).double()], dim=1)
    tasks = TaskSet([Task("b", "binary"), Task("m", "multiclass", 3), Task("r", "regression")])
    data = MultiTaskData(torch.zeros(n, 1), y, tasks)
    return lp, data


def test_recovers_a_known_temperature():
    lp, data = _calibrated_problem()
    over = lp * 3.0  # over-confident scores: the fitted temperature should be about 3
    scaler = TemperatureScaler().fit(over, data)
    t = scaler.temperature_
    assert abs(float(t[0]) - 3.0) < 0.3 and abs(float(t[1]) - 3.0) < 0.3
    assert float(t[2]) == 1.0  # regression task untouched
    assert bool((scaler.nll_after_[:2] < scaler.nll_before_[:2]).all())
    assert math.isnan(float(scaler.nll_before_[2]))


def test_transform_keeps_argmax_padding_and_regression_rows():
    lp, data = _calibrated_problem(500)
    scaler = TemperatureScaler().fit(lp * 0.3, data)
    out = scaler.transform(lp * 0.3)
    assert out.shape == lp.shape
    assert torch.equal(out[:, :2].argmax(-1), lp[:, :2].argmax(-1))
    assert bool(torch.isinf(out[:, 0, 2]).all()) and bool(torch.isinf(out[:, 2]).all())
    torch.testing.assert_close(out[:, :2].logsumexp(-1), torch.zeros(500, 2, dtype=out.dtype))
    as_list = scaler.transform([lp[:, 0, :2] * 0.3, lp[:, 1] * 0.3, None])
    torch.testing.assert_close(as_list[1], out[:, 1])
    assert as_list[2] is None


def test_binary_temperature_divides_the_logit():
    lp, data = _calibrated_problem(300)
    scaler = TemperatureScaler().fit(lp, data)
    t = float(scaler.temperature_[0])
    logit = lp[:, 0, 1] - lp[:, 0, 0]
    out = scaler.transform(lp)
    torch.testing.assert_close(out[:, 0, 1], torch.nn.functional.logsigmoid(logit / t))


def test_fit_from_a_learner_and_use_in_gmtl():
    bench = tg.datasets.anticausal(n_samples=600, seed=0, n_test=200)
    learner = tg.learners.create("hard_sharing", bench.tasks, epochs=3, verbose=False)
    learner.fit(bench.train)
    scaler = TemperatureScaler().fit(learner, bench.val)
    assert scaler.tasks_ == bench.tasks and bool((scaler.temperature_ > 0).all())
    prior = JointPrior.fit(bench.train)
    lp = learner.predict_log_proba(bench.test_ood.x)
    direct = GMTL(prior, 1.0).decode(scaler.transform(lp))
    assert torch.equal(GMTL(prior, 1.0, calibration=scaler).decode(lp), direct)
    via_learner = learner.predict(bench.test_ood.x,
                                  inference=GMTL(prior, 1.0, calibration=scaler))
    assert torch.equal(via_learner, direct.float())


def test_errors():
    lp, data = _calibrated_problem(100)
    with pytest.raises(NotFittedError):
        TemperatureScaler().transform(lp)
    with pytest.raises(ValidationError, match="bounds"):
        TemperatureScaler(bounds=(2.0, 1.0)).fit(lp, data)
    with pytest.raises(ValidationError, match="val"):
        TemperatureScaler().fit(lp, np.zeros((99, 3)))
    with pytest.raises(ValidationError, match="calibration"):
        GMTL(JointPrior.fit(data), 1.0, calibration="temperature")
    scaler = TemperatureScaler().fit(lp, data)
    other = TaskSet([Task("x", "binary"), Task("m", "multiclass", 3), Task("r", "regression")])
    with pytest.raises(ValidationError, match="calibration"):
        scaler.check_tasks(other)


def test_from_temperatures_transforms_like_the_fitted_scaler():
    lp, data = _calibrated_problem()
    fitted = TemperatureScaler().fit(lp * 3.0, data)
    rebuilt = TemperatureScaler.from_temperatures(fitted.temperature_.tolist(), data.tasks)
    torch.testing.assert_close(rebuilt.transform(lp * 3.0), fitted.transform(lp * 3.0))
    with pytest.raises(ValidationError, match="temperature"):
        TemperatureScaler.from_temperatures([1.0, 2.0], data.tasks)
