"""Pairwise Markov random fields over task labels: one home for enumerating joint states
(:mod:`~taskgraph.mrf.enumeration`), MAP decoding (:mod:`~taskgraph.mrf.map`, GMTL's joint
decoders) and marginals (:mod:`~taskgraph.mrf.marginals`, the causal EBM: mean field, Gibbs,
exact)."""

from taskgraph.mrf.enumeration import combinations, outer_sum
from taskgraph.mrf.map import ConvergenceWarning

__all__ = ["combinations", "outer_sum", "ConvergenceWarning"]
