"""Atomic file writing shared by every exporter (graphs, plots, checkpoints, reports).

A file written through :func:`atomic_write` or :func:`atomic_path` either appears complete at its
final path or not at all: the content goes to a temporary file in the *same directory* (so the
final :func:`os.replace` is an atomic rename on POSIX and Windows), is flushed and ``fsync``-ed, and
only then replaces the target. If anything raises inside the ``with`` block, the temporary file is
removed and a previous file at the target path is left untouched.

Example:
    >>> with atomic_write("runs/x/report.txt") as fh:        # text
    ...     fh.write("hello\\n")
    >>> with atomic_write("runs/x/blob.bin", "wb") as fh:    # binary
    ...     fh.write(b"\\x00\\x01")
    >>> with atomic_path("runs/x/model.pt") as tmp:          # for writers that want a path
    ...     torch.save(state, tmp)
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from taskgraph.exceptions import GraphFileError, ValidationError

__all__ = ["atomic_write", "atomic_path", "json_safe"]

_MODES = ("w", "wt", "wb")


def _temp_name(target: Path) -> Path:
    # Keep the target's suffix last so writers that dispatch on it (matplotlib) still work.
    token = secrets.token_hex(6)
    return target.with_name(f".{target.stem}.{token}.tmp{target.suffix}")


def _create_temp(target: Path, binary: bool) -> tuple[Path, int]:
    """Create a fresh temporary file next to ``target``; mode 0o666 minus the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = _temp_name(target)
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise GraphFileError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from exc
        return tmp, fd
    raise GraphFileError(
        f"cannot write {str(target)!r}: no free temporary file name"
    )  # pragma: no cover


def _prepare_target(path: str | os.PathLike[str], makedirs: bool) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise ValidationError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    target = Path(path)
    if target.name in ("", ".", ".."):
        raise ValidationError(f"path: {str(path)!r} does not name a file")
    if target.is_dir():
        raise GraphFileError(f"cannot write {str(target)!r}: it is a directory")
    if makedirs:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GraphFileError(
                f"cannot create directory {str(target.parent)!r}: {exc.strerror or exc}"
            ) from exc
    return target


def _commit(tmp: Path, target: Path) -> None:
    """Give ``tmp`` the permissions of an existing target, then atomically move it in place."""
    try:
        if target.exists():
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        os.replace(tmp, target)
    except OSError as exc:
        raise GraphFileError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from exc


def _unlink_quietly(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str],
    mode: str = "w",
    *,
    encoding: str | None = "utf-8",
    newline: str | None = None,
    makedirs: bool = True,
) -> Iterator[IO[Any]]:
    """Open a file for writing that only appears at ``path`` once the block succeeds.

    Args:
        path (str or PathLike): final path of the file.
        mode (str): ``"w"`` (text, default) or ``"wb"`` (binary).
        encoding (str, optional): text encoding (text mode only). (default: ``"utf-8"``)
        newline (str, optional): passed to :func:`open` in text mode (``""`` for :mod:`csv`).
        makedirs (bool): create missing parent directories. (default: ``True``)

    Yields:
        The open file object (text or binary); do not close it yourself.

    Raises:
        ValidationError: if ``mode`` is not a write mode or ``path`` does not name a file.
        GraphFileError: (an :class:`OSError`) if the directory or file cannot be created or the
            final rename fails. Exceptions raised inside the block propagate unchanged, after the
            temporary file has been removed.
    """
    if mode not in _MODES:
        raise ValidationError(f"mode: expected 'w' or 'wb', got {mode!r}")
    binary = "b" in mode
    target = _prepare_target(path, makedirs)
    tmp, fd = _create_temp(target, binary)
    try:
        if binary:
            fh: IO[Any] = os.fdopen(fd, "wb")
        else:
            fh = os.fdopen(fd, "w", encoding=encoding, newline=newline)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    try:
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _commit(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, makedirs: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write to; it replaces ``path`` when the block succeeds.

    For writers that insist on a file name (``torch.save`` accepts either, ``Figure.savefig``
    dispatches on the suffix). The temporary name keeps the suffix of ``path``; the writer may
    overwrite or recreate it, but it must exist when the block ends.

    Args:
        path (str or PathLike): final path of the file.
        makedirs (bool): create missing parent directories. (default: ``True``)

    Yields:
        pathlib.Path: an empty, already created temporary file in the target directory.

    Raises:
        GraphFileError: if the file cannot be created or moved into place.
    """
    target = _prepare_target(path, makedirs)
    tmp, fd = _create_temp(target, binary=True)
    os.close(fd)
    try:
        yield tmp
        if not tmp.exists():
            raise GraphFileError(f"cannot write {str(target)!r}: the writer produced no file")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _commit(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def json_safe(obj: Any) -> Any:
    """``obj`` with numpy/torch scalars turned into Python numbers, tuples into lists, dict keys
    into strings and non-finite floats into ``None`` (JSON has no NaN or inf)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return json_safe(obj.item())
    return obj



def read_torch_file(path: str | os.PathLike[str], fmt: str) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` of a taskgraph file whose ``"format"`` entry is
    ``fmt``; every failure (missing, truncated, foreign or unsafe file) becomes a
    :class:`~taskgraph.exceptions.CheckpointError` naming the path."""
    import torch

    from taskgraph.exceptions import CheckpointError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"path: no such file {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated / foreign / unsafe files
        raise CheckpointError(
            f"path: {str(path)!r} is not a readable taskgraph file (truncated, corrupt, or "
            f"not written by taskgraph): {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise CheckpointError(f"path: {str(path)!r} is not a {fmt} file")
    return state
