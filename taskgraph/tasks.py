"""Tasks and task sets.

A :class:`Task` is one prediction target: a name, a kind (``binary``, ``multiclass`` or
``regression``) and, for multiclass tasks, a class count. A :class:`TaskSet` is an ordered,
immutable collection of tasks with unique names; its order is the column order of ``y[N, T]``
and the node order of every :class:`~taskgraph.graph.TaskGraph` built over it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from taskgraph.exceptions import UnknownTaskError, ValidationError

__all__ = ["Task", "TaskSet", "TaskKind"]

TaskKind = Literal["binary", "multiclass", "regression"]
_KINDS = ("binary", "multiclass", "regression")


@dataclass(frozen=True)
class Task:
    """One prediction target.

    Args:
        name (str): unique, non-empty task name (kept verbatim through every export).
        kind (str): ``"binary"``, ``"multiclass"`` or ``"regression"``.
        n_classes (int, optional): number of classes. Must be ≥ 3 for ``multiclass`` (2 for
            ``binary``, set automatically); must be ``None`` for ``regression``.

    Labels of a classification task are the integral values ``0 .. n_classes - 1`` stored as
    floats; ``NaN`` marks a missing label for every kind.
    """

    name: str
    kind: TaskKind
    n_classes: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValidationError(f"Task name must be a non-empty string, got {self.name!r}")
        if self.kind not in _KINDS:
            raise ValidationError(
                f"Task {self.name!r}: kind must be one of {_KINDS}, got {self.kind!r}"
            )
        if self.kind == "binary":
            if self.n_classes not in (None, 2):
                raise ValidationError(
                    f"Task {self.name!r}: a binary task has n_classes=2, got {self.n_classes!r}"
                )
            object.__setattr__(self, "n_classes", 2)
        elif self.kind == "multiclass":
            if not isinstance(self.n_classes, int) or isinstance(self.n_classes, bool) or (
                self.n_classes < 2
            ):
                raise ValidationError(
                    f"Task {self.name!r}: a multiclass task needs an integer n_classes >= 2, "
                    f"got {self.n_classes!r}"
                )
        elif self.n_classes is not None:
            raise ValidationError(
                f"Task {self.name!r}: a regression task takes n_classes=None, "
                f"got {self.n_classes!r}"
            )

    @property
    def is_classification(self) -> bool:
        """``True`` for binary and multiclass tasks."""
        return self.kind != "regression"

    @property
    def out_dim(self) -> int:
        """Width of the head output: 1 logit (binary), C logits (multiclass), 1 value
        (regression)."""
        return self.n_classes if self.kind == "multiclass" else 1  # type: ignore[return-value]

    @property
    def n_states(self) -> int:
        """Number of label values (C for classification, 0 for regression)."""
        return self.n_classes if self.is_classification else 0  # type: ignore[return-value]

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-example loss of head output ``out`` against labels ``y``; NaN labels give 0.

        Shapes:
            - **out:** ``[N, out_dim]`` (or ``[N]`` for a one-wide output)
            - **y:** ``[N]`` float with NaN for missing
            - **returns:** ``[N]`` (0 where the label is missing)
        """
        mask = ~torch.isnan(y)
        y0 = torch.where(mask, y, torch.zeros_like(y))
        if out.dim() == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if self.kind == "binary":
            per = F.binary_cross_entropy_with_logits(out, y0, reduction="none")
        elif self.kind == "multiclass":
            per = F.cross_entropy(out, y0.long(), reduction="none")
        else:
            per = (out - y0) ** 2
        return torch.where(mask, per, torch.zeros_like(per))

    def log_proba(self, out: torch.Tensor) -> torch.Tensor:
        """Log class probabilities ``[N, C]`` from head output (classification only)."""
        if self.kind == "binary":
            logit = out[:, 0] if out.dim() == 2 else out
            return torch.stack([F.logsigmoid(-logit), F.logsigmoid(logit)], dim=-1)
        if self.kind == "multiclass":
            return torch.log_softmax(out, dim=-1)
        raise ValidationError(
            f"Task {self.name!r} is a regression task: it has no class probabilities")

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "n_classes": self.n_classes}

    @classmethod
    def from_dict(cls, d: dict) -> Task:
        return cls(d["name"], d["kind"], d.get("n_classes"))


class TaskSet(Sequence[Task]):
    """An ordered collection of tasks with unique names.

    Args:
        tasks (iterable of Task or str): tasks in column order. A bare string is a binary task
            of that name.

    Example:
        >>> ts = TaskSet([Task("a", "binary"), Task("b", "multiclass", 3)])
        >>> ts.index("b"), ts.names
        (1, ['a', 'b'])
    """

    def __init__(self, tasks: Iterable[Task | str]) -> None:
        if isinstance(tasks, (str, bytes)) or not isinstance(tasks, Iterable):
            raise ValidationError(
                f"tasks: expected a TaskSet or a list of Task objects / task names, got "
                f"{type(tasks).__name__}" + (f" {tasks!r}" if isinstance(tasks, str) else "")
            )
        items: list[Task] = []
        for t in tasks:
            if isinstance(t, str):
                t = Task(t, "binary")
            if not isinstance(t, Task):
                raise ValidationError(
                    f"tasks: expected Task objects or names, got {type(t).__name__}")
            items.append(t)
        if not items:
            raise ValidationError("tasks: a TaskSet needs at least one task")
        names = [t.name for t in items]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise UnknownTaskError(f"tasks: duplicate task names {dupes}")
        self._tasks = tuple(items)
        self._index = {t.name: i for i, t in enumerate(items)}

    @classmethod
    def coerce(cls, tasks: TaskSet | Iterable[Task | str]) -> TaskSet:
        """Return ``tasks`` as a TaskSet (no copy when it already is one)."""
        return tasks if isinstance(tasks, TaskSet) else cls(tasks)

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            return self._tasks[self.index(key)]
        return self._tasks[key]

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, str):
            return item in self._index
        return item in self._tasks

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskSet) and self._tasks == other._tasks

    def __hash__(self) -> int:
        return hash(self._tasks)

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{t.name}:{t.kind}" + (f"({t.n_classes})" if t.kind == "multiclass" else "")
            for t in self._tasks
        )
        return f"TaskSet([{inner}])"

    @property
    def names(self) -> list[str]:
        return [t.name for t in self._tasks]

    def index(self, name: str) -> int:  # type: ignore[override]
        """Column index of task ``name``; raises :class:`UnknownTaskError` naming the task."""
        try:
            return self._index[name]
        except (KeyError, TypeError):
            raise UnknownTaskError(
                f"unknown task {name!r}; known tasks: {self.names}"
            ) from None

    def indices(self, names: Iterable[str]) -> list[int]:
        return [self.index(n) for n in names]

    @property
    def out_dims(self) -> list[int]:
        return [t.out_dim for t in self._tasks]

    @property
    def all_classification(self) -> bool:
        return all(t.is_classification for t in self._tasks)

    def to_list(self) -> list[dict]:
        return [t.to_dict() for t in self._tasks]

    @classmethod
    def from_list(cls, items: list[dict]) -> TaskSet:
        return cls([Task.from_dict(d) for d in items])
