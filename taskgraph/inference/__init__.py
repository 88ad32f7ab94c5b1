"""Joint inference over tasks: GMTL decoding with a joint label prior, per-task temperature
calibration, and target-shift evaluation.

    prior = JointPrior.fit(bench.train, kind="full")          # or kind="graph", graph=g
    scaler = TemperatureScaler().fit(learner, bench.val)
    labels = learner.predict(x, inference=GMTL(prior, alpha=1.0, calibration=scaler))
"""

from taskgraph.inference.calibration import TemperatureScaler
from taskgraph.inference.gmtl import GMTL, MAX_COMBINATIONS, ConvergenceWarning, JointPrior
from taskgraph.inference.shift import (
    ShiftResult,
    alpha_sweep,
    importance_sampling_evaluation,
    importance_weights,
    random_target_shift,
    shifted_test_accuracy,
    weighted_kendall_tau,
)

__all__ = [
    "JointPrior",
    "GMTL",
    "TemperatureScaler",
    "ConvergenceWarning",
    "MAX_COMBINATIONS",
    "ShiftResult",
    "alpha_sweep",
    "importance_sampling_evaluation",
    "importance_weights",
    "random_target_shift",
    "shifted_test_accuracy",
    "weighted_kendall_tau",
]
