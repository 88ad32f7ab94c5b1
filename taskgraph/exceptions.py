"""Exceptions raised by taskgraph.

Every error the library raises on bad input is a :class:`TaskGraphError`. Each concrete class also
derives from the built-in exception a Python user would expect (``ValueError`` for bad values,
``OSError`` for unreadable files, ``ImportError`` for a missing optional package), so existing
``except ValueError`` code keeps working. Messages name the offending argument and what was
expected.
"""

from __future__ import annotations

__all__ = [
    "TaskGraphError",
    "ValidationError",
    "UnknownTaskError",
    "GraphFormatError",
    "GraphFileError",
    "CheckpointError",
    "NotFittedError",
    "MissingDependencyError",
    "CycleError",
    "InactivePartWarning",
]


class TaskGraphError(Exception):
    """Base class of every exception raised by taskgraph."""


class ValidationError(TaskGraphError, ValueError):
    """An argument has the wrong shape, type, range or content."""


class UnknownTaskError(ValidationError):
    """A task name that is not part of the task set (or a duplicate name)."""


class CycleError(ValidationError):
    """A graph has a cycle where a DAG is required."""


class GraphFormatError(ValidationError):
    """A graph file or object could be read but its content is not a valid task graph."""


class GraphFileError(TaskGraphError, OSError):
    """A graph or export file could not be read or written."""


class CheckpointError(TaskGraphError, ValueError):
    """A checkpoint is unreadable, truncated, or belongs to a different task set / learner."""


class NotFittedError(TaskGraphError, AttributeError):
    """A learner method that needs a fitted model was called before ``fit``."""


class MissingDependencyError(TaskGraphError, ImportError):
    """An optional package is needed; the message says which extra to install."""


class InactivePartWarning(UserWarning):
    """A part a learner is configured with (GMTL decoding, the invariance penalty, ...) cannot
    act on the data it was fitted on, so the learner trains and predicts without it.

    Warned once per ``fit``; the message names the cause found in the data and a remedy that
    fits it, and the same text is recorded in ``history_[-1]["<part>_skipped"]``
    (docs/errors.md). Silence it with the part's own switch (the message names it) or with
    ``warnings.filterwarnings("ignore", category=InactivePartWarning)``.
    """
