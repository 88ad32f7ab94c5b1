"""Learners and their registry: ``register``, ``create(name, tasks, **kw)``, ``list()``.

Every learner follows the contract in :mod:`taskgraph.learners.base`.
"""

from taskgraph.learners.base import BaseLearner, create, get, list, load_learner, register
from taskgraph.learners.causal_graph import CausalGraph
from taskgraph.learners.gcnet import GCNet
from taskgraph.learners.graph_share import GraphShare
from taskgraph.learners.hard_sharing import HardSharing
from taskgraph.learners.mmoe import MMoE
from taskgraph.learners.mtcrl import MTCRL
from taskgraph.learners.sgnn import SGNN, SGNNEBM
from taskgraph.learners.single_task import SingleTask
from taskgraph.train import Trainer

# the one place the learners meet the training loop: base.py only knows the hook contract
BaseLearner.trainer_class = Trainer

__all__ = [
    "BaseLearner",
    "register",
    "create",
    "get",
    "list",
    "load_learner",
    "SingleTask",
    "HardSharing",
    "MMoE",
    "MTCRL",
    "GCNet",
    "SGNN",
    "SGNNEBM",
    "CausalGraph",
    "GraphShare",
]
