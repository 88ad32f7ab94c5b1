"""Structure learning: causal discovery baselines and the converters from other libraries'
graph encodings into :class:`~taskgraph.graph.TaskGraph` (``A[src, dst]``).

Each module of this package adds its public names below, one import block per module.
"""

from taskgraph.structure.discovery import discover, from_causallearn, from_lingam

__all__ = [
    # discovery.py
    "discover",
    "from_causallearn",
    "from_lingam",
]
