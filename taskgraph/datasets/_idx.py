"""Reading (and writing) IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then ``ndim``
big-endian ``uint32`` dimension sizes, then the values in C order (big-endian for multi-byte
types). Files may be gzip-compressed (``.gz``), detected by their content, not their name.

Shared by :mod:`taskgraph.datasets.multi_mnist` (MNIST at a user path) and
:mod:`taskgraph.datasets.fashion` (Debian's ``dataset-fashion-mnist`` files).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from taskgraph.datasets._files import DataFileError
from taskgraph.exceptions import ValidationError

__all__ = ["read_idx", "write_idx", "find_idx_pair", "load_idx_split", "IDXFileError"]

#: IDX type codes → numpy big-endian dtypes
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {v.newbyteorder("="): k for k, v in _DTYPES.items()}


class IDXFileError(DataFileError):
    """An IDX file is missing, truncated or not in IDX format (an ``OSError``)."""


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise IDXFileError(f"path: cannot read IDX file {str(path)!r}: {exc}") from None
    if raw[:2] == b"\x1f\x8b":  # gzip magic
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise IDXFileError(f"path: {str(path)!r} is a corrupt gzip file: {exc}") from None
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (plain or gzip-compressed) into a numpy array.

    Args:
        path (str or Path): the file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
        numpy.ndarray: the array with the file's shape, in native byte order (``uint8`` for
        MNIST images ``[N, 28, 28]`` and labels ``[N]``).

    Raises:
        IDXFileError: if the file cannot be read, is not IDX, or is truncated.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise IDXFileError(f"path: {str(path)!r} is not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in _DTYPES:
        raise IDXFileError(f"path: {str(path)!r} has unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFileError(f"path: {str(path)!r} is truncated (incomplete header)")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _DTYPES[code]
    count = int(np.prod(shape)) if shape else 1
    if len(raw) - header < count * dtype.itemsize:
        raise IDXFileError(
            f"path: {str(path)!r} is truncated: header says shape {shape}, "
            f"file holds {(len(raw) - header) // dtype.itemsize} values"
        )
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``).

    Used by the tests to make tiny fixtures; the inverse of :func:`read_idx`.
    """
    path = Path(path)
    arr = np.asarray(array)
    native = arr.dtype.newbyteorder("=")
    if native not in _CODES:
        raise ValidationError(f"array: dtype {arr.dtype} has no IDX type code")
    code = _CODES[native]
    body = (
        bytes([0, 0, code, arr.ndim])
        + np.asarray(arr.shape, dtype=">u4").tobytes()
        + np.ascontiguousarray(arr, dtype=_DTYPES[code]).tobytes()
    )
    if compress is None:
        compress = path.suffix == ".gz"
    path.write_bytes(gzip.compress(body, mtime=0) if compress else body)
    return path


def find_idx_pair(root: str | Path, split: str) -> tuple[Path, Path]:
    """Locate ``{split}-images-idx3-ubyte[.gz]`` and ``{split}-labels-idx1-ubyte[.gz]``.

    Args:
        root (str or Path): a folder holding the standard file names.
        split (str): ``"train"`` or ``"t10k"``.

    Raises:
        IDXFileError: if either file is absent (the message lists what was looked for).
    """
    root = Path(root)
    found = []
    for kind, nd in (("images", 3), ("labels", 1)):
        stem = f"{split}-{kind}-idx{nd}-ubyte"
        hits = [root / (stem + ext) for ext in (".gz", "") if (root / (stem + ext)).is_file()]
        if not hits:
            raise IDXFileError(
                f"path: no {stem}[.gz] in {str(root)!r}; expected the standard MNIST/"
                "Fashion-MNIST file names"
            )
        found.append(hits[0])
    return found[0], found[1]


def load_idx_split(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, H, W]`` (uint8) and labels ``[N]`` (int64) of one split in ``root``."""
    img_path, lab_path = find_idx_pair(root, split)
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise IDXFileError(
            f"path: {str(root)!r}: {split} images {images.shape} and labels {labels.shape} "
            "do not match ([N, H, W] and [N])"
        )
    return images.astype(np.uint8, copy=False), labels.astype(np.int64)
