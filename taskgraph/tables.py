"""Tables in: a pandas DataFrame, CSV or parquet file to :class:`~taskgraph.data.MultiTaskData`,
with the fitted transform kept so that new tables are encoded the same way.

:class:`TableSchema` is fitted on the training table:

- **task columns** get a kind from their values (two distinct values: binary; a few integers or
  strings: multiclass, with the class names kept; floats or many integers: regression, which
  is standardised with its training mean and standard deviation, so tasks of any scale share
  the loss evenly and metrics such as MSE are in standard deviations), overridable per task
  with ``kinds``; empty cells are missing labels (``NaN``);
- **feature columns** (default: every other column) are numeric (standardised with the
  training mean and standard deviation) or categorical (strings, booleans, categories: one-hot
  over the training categories; a category not seen in training encodes as all zeros, with a
  warning);
- ``env`` names a column of environment labels (any values; coded in sorted order), ``do`` a
  list of boolean columns, one per task, marking intervened labels.

Every malformed input raises one :class:`~taskgraph.exceptions.ValidationError` naming the
column: unknown or duplicate columns, a label column with a single value, features that are
missing, infinite, or text that cannot be encoded (more than ``max_categories`` distinct
values). pandas is imported only when a table is read.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taskgraph.exceptions import ValidationError
from taskgraph.tasks import Task, TaskSet

__all__ = ["TableSchema", "read_table", "MAX_CATEGORIES", "MAX_CLASSES"]

#: most distinct values a text feature may have to be one-hot encoded
MAX_CATEGORIES = 50
#: most distinct integer labels a task column may have to be read as multiclass
MAX_CLASSES = 20


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas comes with the dev and tables extras
        raise ImportError("tables need pandas: pip install 'taskgraph[tables]'") from None
    return pd


def read_table(path: str | Path) -> Any:
    """A CSV (``.csv``, ``.csv.gz``, ``.tsv``) or parquet (``.parquet``, needs pyarrow) file as a
    DataFrame. Errors name the path."""
    pd = _pandas()
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"data: no such file {str(path)!r}")
    name = path.name.lower()
    sep = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
    try:
        if name.endswith(".parquet"):
            return pd.read_parquet(path)
        frame = pd.read_csv(path, sep=sep)
    except ImportError as exc:
        raise ValidationError(f"data: reading {str(path)!r} needs {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure is a bad file
        raise ValidationError(f"data: {str(path)!r} is not a readable table: "
                              f"{type(exc).__name__}: {str(exc)[:200]}") from None
    if not name.endswith(".parquet"):   # pandas renames a repeated header: read it as written
        import csv
        import gzip

        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", newline="", encoding="utf-8", errors="replace") as fh:
            header = next(csv.reader(fh, delimiter=sep), [])
        repeated = sorted({h for h in header if header.count(h) > 1})
        if repeated:
            raise ValidationError(f"data: column {repeated[0]!r} appears more than once in "
                                  f"{str(path)!r}")
    return frame


@dataclass
class FeatureColumn:
    """One feature column: ``numeric`` (``mean``, ``std``) or ``categorical``
    (``categories``)."""

    name: str
    kind: str
    mean: float = 0.0
    std: float = 1.0
    categories: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        return 1 if self.kind == "numeric" else len(self.categories)


@dataclass
class TaskColumn:
    """One task column: its kind and, for classification, the class names in label order; a
    regression column is standardised with its training ``mean`` and ``std`` (predictions are
    mapped back by :meth:`TableSchema.decode`)."""

    name: str
    kind: str
    classes: list[str] | None = None
    mean: float = 0.0
    std: float = 1.0


def _class_name(value: Any) -> str:
    """The name of a label value, the same at fit and encode time whatever the column's dtype:
    booleans ``"False"``/``"True"``, integral numbers without a decimal point (``1`` and
    ``1.0`` are ``"1"``), other numbers by ``repr``, anything else by ``str``."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        f = float(value)
        return str(int(f)) if f.is_integer() else repr(f)
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def _sort_key(name: str) -> tuple[int, float, str]:
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def _infer_kind(name: str, series: Any, kind: str | None) -> TaskColumn:
    obs = series.dropna().tolist()
    if not obs:
        raise ValidationError(f"tasks: label column {name!r} has no values")
    distinct = sorted({_class_name(v) for v in obs}, key=_sort_key)
    if len(distinct) < 2:
        raise ValidationError(f"tasks: label column {name!r} has a single value "
                              f"({distinct[0]!r}); a task needs at least two")
    numeric = all(_is_number(v) for v in obs)
    if kind is None:
        if len(distinct) == 2:
            kind = "binary"
        elif not numeric:
            kind = "multiclass"
        elif all(float(v).is_integer() for v in obs) and len(distinct) <= MAX_CLASSES:
            kind = "multiclass"
        else:
            kind = "regression"
    if kind not in ("binary", "multiclass", "regression"):
        raise ValidationError(f"kinds: {name!r}: expected 'binary', 'multiclass' or "
                              f"'regression', got {kind!r}")
    if kind == "regression":
        if not numeric:
            raise ValidationError(f"kinds: label column {name!r} holds text; it cannot be a "
                                  f"regression task")
        values = np.asarray(obs, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValidationError(f"tasks: label column {name!r} has infinite values")
        std = float(values.std())
        return TaskColumn(name, kind, mean=float(values.mean()),
                          std=std if std > 0 and math.isfinite(std) else 1.0)
    if kind == "binary" and len(distinct) != 2:
        raise ValidationError(f"kinds: label column {name!r} has {len(distinct)} values; a "
                              f"binary task needs exactly two")
    return TaskColumn(name, kind, distinct)


class TableSchema:
    """The fitted encoding of a table: task columns, feature columns, ``env`` and ``do``.

    Build with :meth:`fit`; :meth:`transform` encodes a table (the training one or a new one
    with the same columns); :meth:`to_dict` / :meth:`from_dict` give plain values a saved
    learner stores.
    """

    def __init__(self, tasks: list[TaskColumn], features: list[FeatureColumn],
                 env: str | None = None, env_levels: list[str] | None = None,
                 do: list[str] | None = None) -> None:
        self.tasks, self.features = tasks, features
        self.env, self.env_levels, self.do = env, env_levels, do

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, frame: Any, tasks: Sequence[str], features: Sequence[str] | None = None,
            env: str | None = None, do: Sequence[str] | None = None,
            kinds: Mapping[str, str] | None = None) -> TableSchema:
        """Infer the task kinds and the feature encoding from ``frame``."""
        pd = _pandas()
        if not isinstance(frame, pd.DataFrame):
            raise ValidationError(f"frame: expected a pandas DataFrame, got "
                                  f"{type(frame).__name__}")
        columns = [str(c) for c in frame.columns]
        dup = sorted({c for c in columns if columns.count(c) > 1})
        if dup:
            raise ValidationError(f"data: column {dup[0]!r} appears more than once")
        tasks = [str(t) for t in tasks]
        if not tasks:
            raise ValidationError("tasks: name at least one label column")
        used: dict[str, str] = {}

        def claim(col: str, role: str) -> None:
            if col not in columns:
                raise ValidationError(f"{role}: unknown column {col!r}; the table has "
                                      f"{columns[:30]}")
            if col in used:
                raise ValidationError(f"{role}: column {col!r} is already used as "
                                      f"{used[col]}")
            used[col] = role

        for t in tasks:
            claim(t, "tasks")
        if env is not None:
            claim(env, "env")
        if do is not None:
            if len(do) != len(tasks):
                raise ValidationError(f"do: expected one column per task ({len(tasks)}), got "
                                      f"{len(do)}")
            for d in do:
                claim(d, "do")
        kinds = dict(kinds or {})
        for k in kinds:
            if k not in tasks:
                raise ValidationError(f"kinds: {k!r} is not one of the tasks {tasks}")
        if features is None:
            features = [c for c in columns if c not in used]
        for f in features:
            claim(str(f), "features")
        if not features:
            raise ValidationError("features: the table has no feature column left")
        task_cols = [_infer_kind(t, frame[t], kinds.get(t)) for t in tasks]
        feat_cols = [cls._fit_feature(str(f), frame[str(f)]) for f in features]
        env_levels = None
        if env is not None:
            if frame[env].isna().any():
                raise ValidationError(f"env: column {env!r} has empty cells")
            env_levels = sorted({_class_name(v) for v in frame[env].tolist()}, key=_sort_key)
        return cls(task_cols, feat_cols, env, env_levels, None if do is None else list(do))

    @staticmethod
    def _fit_feature(name: str, series: Any) -> FeatureColumn:
        pd = _pandas()
        if series.isna().any():
            rows = np.flatnonzero(series.isna().to_numpy())[:5].tolist()
            raise ValidationError(f"features: column {name!r} has empty cells (rows {rows}); "
                                  f"fill or drop them")
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            values = series.to_numpy(dtype=np.float64)
            if not np.isfinite(values).all():
                rows = np.flatnonzero(~np.isfinite(values))[:5].tolist()
                raise ValidationError(f"features: column {name!r} has infinite values "
                                      f"(rows {rows})")
            std = float(values.std())
            return FeatureColumn(name, "numeric", float(values.mean()),
                                 std if std > 0 and math.isfinite(std) else 1.0)
        categories = sorted({_class_name(v) for v in series.tolist()}, key=_sort_key)
        if len(categories) > MAX_CATEGORIES:
            raise ValidationError(
                f"features: column {name!r} is text with {len(categories)} distinct values "
                f"(more than {MAX_CATEGORIES}); it cannot be one-hot encoded: drop it or "
                f"encode it yourself")
        return FeatureColumn(name, "categorical", categories=categories)

    # ------------------------------------------------------------------ encoding
    @property
    def task_set(self) -> TaskSet:
        return TaskSet([Task(t.name, t.kind, None if t.classes is None else len(t.classes))
                        for t in self.tasks])

    @property
    def feature_names(self) -> list[str]:
        """Names of the encoded feature columns (``col`` or ``col=category``)."""
        out: list[str] = []
        for f in self.features:
            out += [f.name] if f.kind == "numeric" else [f"{f.name}={c}" for c in f.categories]
        return out

    def transform(self, frame: Any, labels: bool = True) -> dict[str, Any]:
        """``{"x", "y", "env", "do"}`` arrays of ``frame`` (``y`` is ``None`` when ``labels``
        is false or the table has none of the task columns)."""
        pd = _pandas()
        if not isinstance(frame, pd.DataFrame):
            raise ValidationError(f"frame: expected a pandas DataFrame, got "
                                  f"{type(frame).__name__}")
        cols = []
        for f in self.features:
            if f.name not in frame.columns:
                raise ValidationError(f"features: column {f.name!r} is missing from the table")
            series = frame[f.name]
            if series.isna().any():
                rows = np.flatnonzero(series.isna().to_numpy())[:5].tolist()
                raise ValidationError(f"features: column {f.name!r} has empty cells "
                                      f"(rows {rows})")
            if f.kind == "numeric":
                try:
                    values = series.to_numpy(dtype=np.float64)
                except (TypeError, ValueError):
                    raise ValidationError(f"features: column {f.name!r} was numeric in "
                                          f"training and holds text here") from None
                if not np.isfinite(values).all():
                    raise ValidationError(f"features: column {f.name!r} has infinite values")
                cols.append(((values - f.mean) / f.std)[:, None])
            else:
                text = np.asarray([_class_name(v) for v in series.tolist()])
                unseen = sorted(set(text.tolist()) - set(f.categories))
                if unseen:
                    warnings.warn(f"features: column {f.name!r} has categories not seen in "
                                  f"training ({unseen[:5]}); they encode as all zeros",
                                  stacklevel=2)
                cats = np.asarray(f.categories)
                cols.append((text[:, None] == cats[None, :]).astype(np.float64))
        x = np.concatenate(cols, axis=1).astype(np.float32)
        y = None
        if labels and any(t.name in frame.columns for t in self.tasks):
            y = np.stack([self._encode_labels(t, frame[t.name]) if t.name in frame.columns
                          else np.full(len(frame), np.nan) for t in self.tasks], axis=1)
        env = None
        if self.env is not None and self.env in frame.columns:
            levels = {v: i for i, v in enumerate(self.env_levels or [])}
            text = [_class_name(v) for v in frame[self.env].tolist()]
            unknown = sorted(set(text) - set(levels))
            if unknown:
                raise ValidationError(f"env: column {self.env!r} has values not seen in "
                                      f"training: {unknown[:5]}")
            env = np.asarray([levels[v] for v in text], dtype=np.int64)
        do = None
        if self.do is not None and all(d in frame.columns for d in self.do):
            do = np.stack([frame[d].fillna(False).astype(bool).to_numpy() for d in self.do],
                          axis=1)
        return {"x": x, "y": y, "env": env, "do": do}

    @staticmethod
    def _encode_labels(task: TaskColumn, series: Any) -> np.ndarray:
        missing = series.isna().to_numpy()
        if task.kind == "regression":
            try:
                values = series.to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError):
                raise ValidationError(f"tasks: regression column {task.name!r} holds text"
                                      ) from None
            return (values - task.mean) / task.std
        names = [None if miss else _class_name(v) for v, miss in zip(series.tolist(), missing)]
        index = {c: i for i, c in enumerate(task.classes or [])}
        out = np.full(len(series), np.nan)
        bad = []
        for i, (name, miss) in enumerate(zip(names, missing)):
            if miss:
                continue
            if name not in index:
                bad.append(name)
                continue
            out[i] = index[name]
        if bad:
            raise ValidationError(f"tasks: column {task.name!r} has classes not seen in "
                                  f"training: {sorted(set(bad))[:5]} (known: {task.classes})")
        return out

    def decode(self, y: Any) -> dict[str, list[Any]]:
        """Predicted labels ``[N, T]`` as one list per task column: class names for
        classification, numbers in the column's own units for regression."""
        arr = np.asarray(y, dtype=np.float64)
        out: dict[str, list[Any]] = {}
        for k, t in enumerate(self.tasks):
            col = arr[:, k]
            if t.classes is None:
                out[t.name] = (col * t.std + t.mean).tolist()
            else:
                out[t.name] = [t.classes[int(v)] for v in col]
        return out

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """Plain values (saved with a learner, loadable with ``weights_only``)."""
        return {"tasks": [asdict(t) for t in self.tasks],
                "features": [asdict(f) for f in self.features],
                "env": self.env, "env_levels": self.env_levels, "do": self.do}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TableSchema:
        return cls([TaskColumn(**t) for t in data["tasks"]],
                   [FeatureColumn(**f) for f in data["features"]],
                   data.get("env"), data.get("env_levels"), data.get("do"))

    def __repr__(self) -> str:
        return (f"TableSchema(tasks={[(t.name, t.kind) for t in self.tasks]}, "
                f"features={len(self.features)} columns -> {len(self.feature_names)})")
