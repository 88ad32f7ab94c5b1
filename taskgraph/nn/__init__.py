"""Neural building blocks over task nodes."""

from taskgraph.nn.heads import OutputLayout, TaskHeads
from taskgraph.nn.message_passing import TaskMessagePassing
from taskgraph.nn.routing import TaskModuleRouter

__all__ = ["OutputLayout", "TaskHeads", "TaskMessagePassing", "TaskModuleRouter"]
