"""Structure learning: causal discovery baselines and the converters from other libraries'
graph encodings into :class:`~taskgraph.graph.TaskGraph` (``A[src, dst]``).

Each module of this package adds its public names below, one import block per module.
"""

from taskgraph.structure.acyclicity import AugmentedLagrangian, acyclicity, acyclicity_sparse
from taskgraph.structure.discovery import discover, from_causallearn, from_lingam
from taskgraph.structure.ebm import CausalEBM, PairwisePotential
from taskgraph.structure.ice import OutputSEM, ice_loss, random_interventions
from taskgraph.structure.prior import StructurePriorGenerator, candidate_edges, uninformative_loss

__all__ = [
    # acyclicity.py
    "acyclicity",
    "acyclicity_sparse",
    "AugmentedLagrangian",
    # discovery.py
    "discover",
    "from_causallearn",
    "from_lingam",
    # ebm.py
    "CausalEBM",
    "PairwisePotential",
    # ice.py
    "OutputSEM",
    "ice_loss",
    "random_interventions",
    # prior.py
    "StructurePriorGenerator",
    "candidate_edges",
    "uninformative_loss",
]
