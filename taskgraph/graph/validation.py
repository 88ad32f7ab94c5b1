r"""Argument checks shared by :class:`~taskgraph.graph.TaskGraph` and the networkx conversion.

Every check raises :class:`~taskgraph.exceptions.ValidationError` (or
:class:`~taskgraph.exceptions.UnknownTaskError` for duplicate names) with a message that names the
argument. Arrays come back as read-only float64 (or bool) copies, so a graph never shares memory
with its caller.

**Task names** are any non-empty strings without control characters (Unicode category ``Cc``:
newline, tab, ``\x00``, ...), lone surrogates or the non-characters ``U+FFFE``/``U+FFFF``: those
cannot be stored in XML 1.0 (GraphML, GEXF) and would be altered by line-based tools.
"""

from __future__ import annotations

import json
import math
import numbers
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from taskgraph.exceptions import UnknownTaskError, ValidationError
from taskgraph.tasks import TaskSet

MetaValue = str | int | float | bool
"""Types of the values of :attr:`TaskGraph.meta`."""

_META_RESERVED = frozenset({"learned"})
_META_PREFIX = "taskgraph"


def _bad_char(text: str) -> str | None:
    """First character of ``text`` that cannot live in a task name (or ``None``)."""
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cs") or ch in "\ufffe\uffff":
            return ch
    return None


def _has_surrogate(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cs" for ch in text)


def _check_name(name: Any, arg: str, what: str) -> str:
    if not isinstance(name, str):
        raise ValidationError(
            f"{arg}: {what} names must be str, got {type(name).__name__} {name!r}"
        )
    if not name:
        raise ValidationError(f"{arg}: {what} names must be non-empty strings")
    bad = _bad_char(name)
    if bad is not None:
        raise ValidationError(
            f"{arg}: {what} name {name!r} contains the character U+{ord(bad):04X}; names may not "
            "hold control characters, surrogates or U+FFFE/U+FFFF (they cannot be stored in "
            "GraphML/GEXF/CSV/DOT files)"
        )
    return str(name)


def _validate_names(tasks: Any, arg: str = "tasks", what: str = "task") -> list[str]:
    if isinstance(tasks, TaskSet):
        names = list(tasks.names)
    elif isinstance(tasks, (str, bytes)) or not isinstance(tasks, Iterable):
        raise ValidationError(
            f"{arg}: expected a TaskSet or a sequence of {what} names, got {type(tasks).__name__}"
        )
    else:
        names = list(tasks)
    names = [_check_name(n, arg, what) for n in names]
    if not names and what == "task":
        raise ValidationError(f"{arg}: a task graph needs at least one task")
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    dupes = sorted(n for n, c in counts.items() if c > 1)
    if dupes:
        raise UnknownTaskError(f"{arg}: duplicate {what} names {dupes}")
    return names


def _as_array(value: Any, arg: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.is_complex():
            raise ValidationError(f"{arg}: expected a real-valued array, got dtype {t.dtype}")
        if t.dtype == torch.bool or not t.is_floating_point():
            return t.numpy()  # bool and integer tensors keep their dtype
        return t.to(torch.float64).numpy()
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and other junk
        raise ValidationError(f"{arg}: cannot convert to an array ({exc})") from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise ValidationError(f"{arg}: expected a numeric array, got dtype {arr.dtype}")
    return arr


def _float_matrix(value: Any, arg: str, n_rows: int, n_cols: int | None) -> np.ndarray:
    """Validate a 2-D finite float array; return a read-only float64 copy (-0.0 made 0.0)."""
    arr = _as_array(value, arg)
    if arr.ndim != 2 or arr.shape[0] != n_rows or (n_cols is not None and arr.shape[1] != n_cols):
        want = f"[{n_rows}, {n_cols if n_cols is not None else 'K'}]"
        raise ValidationError(f"{arg}: expected shape {want}, got {list(arr.shape)}")
    out = arr.astype(np.float64) + 0.0
    finite = np.isfinite(out)
    if not finite.all():
        i, j = np.argwhere(~finite)[0]
        raise ValidationError(f"{arg}: entries must be finite, found {out[i, j]} at [{i}, {j}]")
    out.setflags(write=False)
    return out


def _bool_matrix(value: Any, arg: str, n: int) -> np.ndarray:
    arr = _as_array(value, arg)
    if arr.shape != (n, n):
        raise ValidationError(f"{arg}: expected shape [{n}, {n}], got {list(arr.shape)}")
    if arr.dtype != np.bool_:
        if not np.isin(arr, (0, 1)).all():
            raise ValidationError(f"{arg}: expected a boolean mask (or 0/1 values)")
    out = arr.astype(bool)
    out.setflags(write=False)
    return out


def _meta_value(key: str, value: Any) -> MetaValue:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (str, np.str_)):
        if _has_surrogate(value):
            raise ValidationError(f"meta: value of {key!r} holds a lone surrogate")
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        if not math.isfinite(v):
            raise ValidationError(f"meta: value of {key!r} must be finite, got {v}")
        return v
    raise ValidationError(
        f"meta: value of {key!r} must be str, int, float or bool, got {type(value).__name__}"
    )


def _validate_meta(meta: Any) -> dict[str, MetaValue]:
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise ValidationError(f"meta: expected a dict, got {type(meta).__name__}")
    out: dict[str, MetaValue] = {}
    for key, value in meta.items():
        if not isinstance(key, str) or not key or _bad_char(key) is not None:
            raise ValidationError(
                f"meta: keys must be non-empty strings without control characters, got {key!r}"
            )
        if key in _META_RESERVED or key.startswith(_META_PREFIX):
            raise ValidationError(
                f"meta: key {key!r} is reserved ('learned' and keys starting with 'taskgraph')"
            )
        out[key] = _meta_value(key, value)
    return out


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def _json_dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def _opt_equal(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.array_equal(a, b))


def _undirected_mask(value: Any, adjacency: np.ndarray, names: list[str]) -> np.ndarray | None:
    """Validate the ``undirected`` mark of a graph; ``None`` when no pair is marked.

    The mask must be symmetric and may mark a pair only where the adjacency holds both
    directions (an undirected edge ``i — j`` is stored as ``A[i, j] != 0`` and ``A[j, i] != 0``).
    """
    if value is None:
        return None
    mask = _bool_matrix(value, "undirected", len(names))
    if not mask.any():
        return None
    asym = np.argwhere(mask != mask.T)
    if asym.size:
        i, j = asym[0]
        raise ValidationError(
            f"undirected: the mask must be symmetric; [{i}, {j}] is set but [{j}, {i}] is not "
            f"(tasks {names[i]!r}, {names[j]!r})"
        )
    unsupported = np.argwhere(mask & ((adjacency == 0) | (adjacency.T == 0)))
    if unsupported.size:
        i, j = unsupported[0]
        raise ValidationError(
            f"undirected: tasks {names[i]!r} and {names[j]!r} are marked undirected but the "
            "adjacency does not hold both directions; an undirected edge i — j needs "
            "adjacency[i, j] != 0 and adjacency[j, i] != 0"
        )
    return mask


def _edge_index_matrix(edge_index: Any, edge_weight: Any, names: list[str]) -> np.ndarray:
    """``[T, T]`` weights from a PyG ``edge_index`` ``[2, E]`` and optional ``edge_weight``
    ``[E]`` (``None``: all 1); refuses bad shapes, out-of-range indices, duplicate edges and
    non-finite weights, naming the argument."""
    n = len(names)
    ei = _as_array(edge_index, "edge_index")
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise ValidationError(f"edge_index: expected shape [2, E], got {list(ei.shape)}")
    if ei.dtype.kind not in "iu":
        raise ValidationError(f"edge_index: expected an integer array, got dtype {ei.dtype}")
    ei = ei.astype(np.int64)
    n_edges = ei.shape[1]
    if n_edges and (ei.min() < 0 or ei.max() >= n):
        raise ValidationError(
            f"edge_index: node indices must lie in [0, {n}) for {n} tasks, "
            f"got range [{ei.min()}, {ei.max()}]"
        )
    if edge_weight is None:
        w = np.ones(n_edges)
    else:
        w = _as_array(edge_weight, "edge_weight").astype(np.float64)
        if w.shape != (n_edges,):
            raise ValidationError(
                f"edge_weight: expected shape [{n_edges}] (one per edge_index column), "
                f"got {list(w.shape)}"
            )
        if not np.isfinite(w).all():
            raise ValidationError("edge_weight: weights must be finite")
    flat = ei[0] * n + ei[1]
    uniq, counts = np.unique(flat, return_counts=True)
    if (counts > 1).any():
        dup = int(uniq[counts > 1][0])
        raise ValidationError(
            f"edge_index: duplicate edge {names[dup // n]!r} -> {names[dup % n]!r}"
        )
    adj = np.zeros((n, n))
    adj[ei[0], ei[1]] = w
    return adj


def _routing_matrix(routing: Any, modules: Sequence[str] | None, names: list[str]
                    ) -> tuple[np.ndarray | None, list[str]]:
    """``(routing [T, K] or None, module names)``: gates in [0, 1], one name per column, no
    module named like a task; the message names the argument."""
    n = len(names)
    if routing is None:
        if modules is not None:
            raise ValidationError("modules: given without routing")
        routing_arr, module_names = None, []
    else:
        routing_arr = _float_matrix(routing, "routing", n, None)
        k = routing_arr.shape[1]
        if k == 0:
            raise ValidationError("routing: expected at least one module column, got [T, 0]")
        if ((routing_arr < 0) | (routing_arr > 1)).any():
            i, j = np.argwhere((routing_arr < 0) | (routing_arr > 1))[0]
            raise ValidationError(
                f"routing: gates must lie in [0, 1], found {routing_arr[i, j]} at [{i}, {j}]"
            )
        if modules is None:
            module_names = [f"module_{m}" for m in range(k)]
        else:
            module_names = _validate_names(modules, "modules", "module")
            if len(module_names) != k:
                raise ValidationError(
                    f"modules: expected {k} names (routing has {k} columns), "
                    f"got {len(module_names)}"
                )
        clash = sorted(set(module_names) & set(names))
        if clash:
            raise ValidationError(
                f"modules: module names {clash} are also task names; pass distinct modules="
            )
    return routing_arr, module_names
