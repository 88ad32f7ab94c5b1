"""Multi-task data: features, a label matrix with NaN for missing labels, environments and
intervention masks, validated once at this boundary.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from taskgraph.exceptions import ValidationError
from taskgraph.tasks import Task, TaskSet

__all__ = ["MultiTaskData", "Batch", "as_features"]


class Batch(NamedTuple):
    """One mini-batch. ``env`` and ``do`` are ``None`` when the data set has none; ``index``
    holds the rows' positions in the data set it came from, and ``source`` that data set's
    :attr:`MultiTaskData.uid` (``-1``: unknown), so per-row tables built from one data set are
    never looked up with another's positions."""

    x: torch.Tensor
    y: torch.Tensor
    env: torch.Tensor | None
    do: torch.Tensor | None
    index: torch.Tensor
    source: int = -1


_UIDS = itertools.count()


def _to_tensor(value: Any, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value.detach()
    else:
        try:
            arr = np.asarray(value)
        except Exception as exc:  # noqa: BLE001 - any conversion failure is a bad argument
            raise ValidationError(f"{name}: cannot convert to an array ({exc})") from None
        if arr.dtype == object:
            raise ValidationError(f"{name}: expected a numeric array, got ragged or object data")
        if arr.dtype.kind not in "biuf":
            raise ValidationError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if dtype is not None:
        t = t.to(dtype)
    return t


def as_features(x: Any, name: str = "x", n_features: int | tuple | None = None) -> torch.Tensor:
    """Validate a feature array and return it as a float32 tensor.

    Raises:
        ValidationError: if ``x`` is not numeric, has fewer than 2 dimensions, holds NaN or
            inf, or its trailing shape differs from ``n_features``.
    """
    t = _to_tensor(x, name)
    if t.is_complex() or t.dtype == torch.bool:
        raise ValidationError(f"{name}: expected real-valued features, got dtype {t.dtype}")
    t = t.float()
    if t.dim() < 2:
        raise ValidationError(
            f"{name}: expected shape [N, ...features] with at least 2 dimensions, "
            f"got shape {tuple(t.shape)}"
        )
    if t.shape[0] == 0:
        raise ValidationError(f"{name}: empty data (N = 0 rows)")
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        rows = torch.nonzero(bad.reshape(t.shape[0], -1).any(dim=1)).flatten()[:5].tolist()
        kind = "NaN" if bool(torch.isnan(t).any()) else "inf"
        raise ValidationError(
            f"{name}: features must be finite; found {kind} in rows {rows}"
            f"{' ...' if int(bad.reshape(t.shape[0], -1).any(dim=1).sum()) > 5 else ''}"
        )
    if n_features is not None:
        want = (n_features,) if isinstance(n_features, int) else tuple(n_features)
        if tuple(t.shape[1:]) != want:
            raise ValidationError(
                f"{name}: expected feature shape {want}, got {tuple(t.shape[1:])}"
            )
    return t


def _check_labels(y: torch.Tensor, tasks: TaskSet, name: str = "y") -> None:
    if bool(torch.isinf(y).any()):
        raise ValidationError(f"{name}: labels must be finite or NaN (missing); found inf")
    for k, task in enumerate(tasks):
        col = y[:, k]
        obs = col[~torch.isnan(col)]
        if not task.is_classification or obs.numel() == 0:
            continue
        if bool((obs != torch.round(obs)).any()):
            bad = obs[obs != torch.round(obs)][:3].tolist()
            raise ValidationError(
                f"{name}: task {task.name!r} is {task.kind}; labels must be integral "
                f"0..{task.n_classes - 1} (or NaN), found {bad}"
            )
        lo, hi = float(obs.min()), float(obs.max())
        if lo < 0 or hi > task.n_classes - 1:
            raise ValidationError(
                f"{name}: task {task.name!r} labels must lie in 0..{task.n_classes - 1} "
                f"(or NaN), found range [{lo:g}, {hi:g}]"
            )


class MultiTaskData(Dataset):
    """Features, labels of every task, and optional environments and intervention masks.

    Args:
        x (array or Tensor): features ``[N, ...]`` (``[N, F]`` tabular, ``[N, 1, 28, 28]``
            images); finite values only.
        y (array or Tensor): labels ``[N, T]``, float, ``NaN`` = missing. Classification labels
            are integral values ``0 .. C-1``. A 1-D ``y`` is accepted for a single task.
        tasks (TaskSet or list of Task/str): the ``T`` tasks in column order.
        env (array, optional): integer environment id per row ``[N]`` (for invariance
            penalties).
        do (array, optional): bool mask ``[N, T]``; ``do[n, k]`` marks that task ``k`` was set
            by an intervention in row ``n`` (its parent terms are dropped).

    Every argument is validated here, once; errors name the argument.

    Example:
        >>> data = MultiTaskData(np.random.randn(100, 5), np.random.randint(0, 2, (100, 2)),
        ...                      ["a", "b"])
        >>> train, val = data.split([0.8, 0.2], seed=0)
        >>> for batch in train.loader(batch_size=32, shuffle=True, seed=0): ...
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        tasks: TaskSet | Iterable[Task | str],
        env: Any = None,
        do: Any = None,
    ) -> None:
        self.tasks = TaskSet.coerce(tasks)
        self.x = as_features(x, "x")
        n = self.x.shape[0]
        yt = _to_tensor(y, "y")
        if yt.dtype == torch.bool:
            yt = yt.to(torch.float32)
        yt = yt.to(torch.float32)
        if yt.dim() == 1:
            yt = yt[:, None]
        if yt.dim() != 2:
            raise ValidationError(f"y: expected shape [N, T], got {tuple(yt.shape)}")
        if yt.shape[0] != n:
            raise ValidationError(
                f"y: has {yt.shape[0]} rows but x has {n}; x and y must have the same N"
            )
        if yt.shape[1] != len(self.tasks):
            raise ValidationError(
                f"y: has {yt.shape[1]} columns but {len(self.tasks)} tasks were given "
                f"({self.tasks.names})"
            )
        _check_labels(yt, self.tasks)
        self.y = yt.contiguous()
        self.env = None
        if env is not None:
            et = _to_tensor(env, "env")
            if et.is_floating_point():
                if bool((et != torch.round(et)).any()) or not bool(torch.isfinite(et).all()):
                    raise ValidationError("env: environment ids must be integers")
            et = et.long().flatten() if et.dim() == 2 and et.shape[1] == 1 else et.long()
            if et.shape != (n,):
                raise ValidationError(f"env: expected shape [{n}], got {tuple(et.shape)}")
            if bool((et < 0).any()):
                raise ValidationError("env: environment ids must be non-negative integers")
            self.env = et
        self.do = None
        if do is not None:
            dt = _to_tensor(do, "do")
            if dt.dtype != torch.bool:
                if not bool(((dt == 0) | (dt == 1)).all()):
                    raise ValidationError("do: expected a bool mask (0/1 values)")
                dt = dt.bool()
            if dt.shape != (n, len(self.tasks)):
                raise ValidationError(
                    f"do: expected shape [{n}, {len(self.tasks)}], got {tuple(dt.shape)}"
                )
            self.do = dt

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: Any) -> Batch:
        idx = torch.as_tensor(index, dtype=torch.long)
        if idx.dim() == 0:
            idx = idx[None]
        return Batch(
            self.x[idx],
            self.y[idx],
            None if self.env is None else self.env[idx],
            None if self.do is None else self.do[idx],
            idx,
            self.uid,
        )

    @property
    def uid(self) -> int:
        """An identifier of this data set object, unique in the process (copies, subsets and
        device moves are new data sets with new identifiers)."""
        uid = self.__dict__.get("_uid")
        if uid is None:
            uid = self.__dict__["_uid"] = next(_UIDS)
        return uid

    def __repr__(self) -> str:
        extra = ""
        if self.env is not None:
            extra += f", n_envs={self.n_envs}"
        if self.do is not None:
            extra += f", interventional_rows={int(self.do.any(dim=1).sum())}"
        return (
            f"MultiTaskData(N={len(self)}, x={tuple(self.x.shape[1:])}, "
            f"tasks={self.tasks.names}, missing={self.missing_rate:.3f}{extra})"
        )

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def n_features(self) -> int:
        """Number of input features (product of the trailing shape)."""
        return int(np.prod(self.feature_shape))

    @property
    def mask(self) -> torch.Tensor:
        """Bool ``[N, T]``: ``True`` where a label is observed."""
        return ~torch.isnan(self.y)

    @property
    def missing_rate(self) -> float:
        return float(torch.isnan(self.y).float().mean())

    @property
    def n_envs(self) -> int:
        return 0 if self.env is None else int(self.env.unique().numel())

    # ------------------------------------------------------------------ checks
    def check_trainable(self, name: str = "train") -> None:
        """Raise if some task has no observed label (it could not be trained)."""
        counts = self.mask.sum(dim=0)
        empty = [self.tasks[k].name for k in range(self.n_tasks) if int(counts[k]) == 0]
        if empty:
            raise ValidationError(f"{name}: tasks {empty} have no observed labels (all NaN)")

    def check_compatible(self, tasks: TaskSet, name: str = "data") -> None:
        """Raise unless this data set's tasks equal ``tasks`` (same names, kinds, order)."""
        if self.tasks != tasks:
            raise ValidationError(
                f"{name}: its tasks {self.tasks!r} differ from the learner's tasks {tasks!r}"
            )

    # ------------------------------------------------------------------ views
    def subset(self, index: Sequence[int] | torch.Tensor | np.ndarray) -> MultiTaskData:
        """Rows ``index`` as a new data set (no re-validation)."""
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        out = object.__new__(MultiTaskData)
        out.tasks = self.tasks
        out.x = self.x[idx]
        out.y = self.y[idx]
        out.env = None if self.env is None else self.env[idx]
        out.do = None if self.do is None else self.do[idx]
        if "schema" in self.__dict__:
            out.schema = self.schema
        return out

    def select_tasks(self, names: Sequence[str]) -> MultiTaskData:
        """Only the given tasks' columns, in the given order."""
        cols = self.tasks.indices(names)
        out = object.__new__(MultiTaskData)
        out.tasks = TaskSet([self.tasks[c] for c in cols])
        out.x, out.env = self.x, self.env
        out.y = self.y[:, cols].contiguous()
        out.do = None if self.do is None else self.do[:, cols].contiguous()
        return out

    def split(
        self, fractions: Sequence[float], seed: int = 0, stratify_env: bool = False
    ) -> list[MultiTaskData]:
        """Random disjoint split by ``fractions`` (must sum to 1), deterministic by ``seed``.

        With ``stratify_env=True`` each environment is split separately with the same
        fractions, so every part keeps the environment mix.
        """
        fr = np.asarray(fractions, dtype=float)
        if fr.ndim != 1 or len(fr) < 2 or bool((fr <= 0).any()) or abs(fr.sum() - 1) > 1e-6:
            raise ValidationError(
                f"fractions: expected >= 2 positive fractions summing to 1, got {list(fractions)}"
            )
        gen = torch.Generator().manual_seed(int(seed))
        groups = [torch.arange(len(self))]
        if stratify_env and self.env is not None:
            groups = [torch.nonzero(self.env == e).flatten() for e in self.env.unique()]
        parts: list[list[torch.Tensor]] = [[] for _ in fr]
        for g in groups:
            perm = g[torch.randperm(len(g), generator=gen)]
            bounds = np.round(np.cumsum(fr) * len(g)).astype(int)
            start = 0
            for i, stop in enumerate(bounds):
                parts[i].append(perm[start:stop])
                start = stop
        out = []
        for i, p in enumerate(parts):
            idx = torch.cat(p)
            if idx.numel() == 0:
                raise ValidationError(
                    f"fractions: part {i} ({fr[i]:g}) of {len(self)} rows would be empty"
                )
            out.append(self.subset(idx.sort().values))
        return out

    def loader(
        self,
        batch_size: int = 128,
        shuffle: bool = False,
        seed: int | None = None,
        drop_last: bool = False,
        sampler: Any = None,
    ) -> DataLoader:
        """A :class:`~torch.utils.data.DataLoader` yielding :class:`Batch` objects.

        Rows are fetched a whole batch at a time (one index tensor per batch, no per-example
        collation). ``seed`` makes shuffling reproducible; ``sampler`` overrides the row order
        (e.g. a ``DistributedSampler``).
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValidationError(f"batch_size: expected a positive integer, got {batch_size!r}")
        if sampler is None:
            if shuffle:
                gen = torch.Generator()
                gen.manual_seed(int(seed) if seed is not None else int(torch.seed() % 2**31))
                sampler = RandomSampler(self, generator=gen)
            else:
                sampler = SequentialSampler(self)
        batches = BatchSampler(sampler, batch_size=batch_size, drop_last=drop_last)
        return DataLoader(self, sampler=batches, batch_size=None, collate_fn=lambda b: b)

    @classmethod
    def from_frame(cls, frame: Any, tasks: Sequence[str] | None = None,
                   features: Sequence[str] | None = None, env: str | None = None,
                   do: Sequence[str] | None = None, kinds: dict[str, str] | None = None,
                   schema: Any = None) -> MultiTaskData:
        """A pandas DataFrame as data: ``tasks`` name the label columns (kinds inferred,
        ``kinds`` overrides), ``features`` the feature columns (default: all others; text
        columns are one-hot encoded, numeric ones standardised), ``env`` an environment
        column, ``do`` one boolean column per task. The fitted
        :class:`~taskgraph.tables.TableSchema` is kept in ``data.schema`` (and by a learner
        fitted on it, so its ``predict`` accepts frames); pass ``schema=`` to encode a new
        table the same way (its label columns may then be absent). Errors name the column."""
        from taskgraph.tables import TableSchema

        if schema is None:
            if tasks is None:
                raise ValidationError("tasks: name the label columns (or pass schema=)")
            schema = TableSchema.fit(frame, tasks, features, env, do, kinds)
        elif isinstance(schema, dict):
            schema = TableSchema.from_dict(schema)
        enc = schema.transform(frame)
        y = enc["y"]
        if y is None:
            y = np.full((enc["x"].shape[0], len(schema.tasks)), np.nan)
        data = cls(enc["x"], y, schema.task_set, env=enc["env"], do=enc["do"])
        data.schema = schema
        return data

    @classmethod
    def from_csv(cls, path: Any, tasks: Sequence[str] | None = None, **kwargs: Any
                 ) -> MultiTaskData:
        """A CSV/TSV (or parquet, with pyarrow) file as data; see :meth:`from_frame`."""
        from taskgraph.tables import read_table

        return cls.from_frame(read_table(path), tasks, **kwargs)

    def to(self, device: torch.device | str) -> MultiTaskData:
        out = self.subset(torch.arange(len(self)))
        out.x = out.x.to(device)
        out.y = out.y.to(device)
        out.env = None if out.env is None else out.env.to(device)
        out.do = None if out.do is None else out.do.to(device)
        return out

    @classmethod
    def concat(cls, parts: Sequence[MultiTaskData]) -> MultiTaskData:
        """Rows of several data sets over the same tasks, in order."""
        if not parts:
            raise ValidationError("parts: nothing to concatenate")
        first = parts[0]
        for i, p in enumerate(parts[1:], 1):
            p.check_compatible(first.tasks, name=f"parts[{i}]")
        out = object.__new__(MultiTaskData)
        out.tasks = first.tasks
        out.x = torch.cat([p.x for p in parts])
        out.y = torch.cat([p.y for p in parts])
        has_env = [p.env is not None for p in parts]
        if any(has_env) and not all(has_env):
            raise ValidationError("parts: either all parts or none must have env")
        out.env = torch.cat([p.env for p in parts]) if all(has_env) else None
        if any(p.do is not None for p in parts):
            out.do = torch.cat(
                [p.do if p.do is not None else torch.zeros_like(p.y, dtype=torch.bool)
                 for p in parts]
            )
        else:
            out.do = None
        return out
