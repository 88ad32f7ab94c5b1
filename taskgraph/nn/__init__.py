"""Neural building blocks over task nodes."""

from taskgraph.nn.heads import OutputLayout, TaskHeads

__all__ = ["OutputLayout", "TaskHeads"]
