"""``movielens_sparse``: MovieLens-100k users as a sparse multi-task problem (one binary
"likes genre" task per genre). Built on a small file fixture in RecBole's format, and on the
real data when recbole is installed (skipped with the reason otherwise)."""

import numpy as np
import pytest

import taskgraph as tg
from taskgraph.datasets import _files
from taskgraph.datasets.movielens import GENRES, movielens_sparse
from taskgraph.exceptions import MissingDependencyError, ValidationError

N_USERS, N_ITEMS, PER_USER = 60, 30, 20
FIX_GENRES = ("Drama", "Comedy", "Action", "Western")


def _fixture(seed=0, late_shift=0):
    """Users, items and ratings; every user rates PER_USER movies at distinct times, so the
    earliest half is the history period. ``late_shift`` changes only the label-period
    ratings."""
    g = np.random.default_rng(seed)
    ages = g.integers(15, 45, N_USERS)
    ages[:15] = 50                                          # 15 users aged 45+
    genres = g.random((N_ITEMS, len(GENRES))) < 0.3
    rows = []
    for u in range(N_USERS):
        items = g.choice(N_ITEMS, PER_USER, replace=False)
        times = np.sort(g.choice(10**6, PER_USER, replace=False)) + 8 * 10**8
        for k, (i, t) in enumerate(zip(items, times)):
            r = int(g.integers(1, 6))
            if k >= PER_USER // 2 and late_shift:
                r = 6 - r
            rows.append((u + 1, int(i) + 1, r, int(t)))
    return ages, genres, rows


def _write(d, fx):
    ages, genres, rows = fx
    d.mkdir()
    (d / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    (d / "ml-100k.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        + "".join(f"{u + 1}\t{ages[u]}\t{'MF'[u % 2]}\t{['student', 'other'][u % 3 > 0]}"
                  "\t00000\n" for u in range(N_USERS)))
    (d / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        + "".join(f"{i + 1}\tMovie {i}\t1990\t"
                  + " ".join(gn for gn, on in zip(GENRES, genres[i]) if on) + "\n"
                  for i in range(N_ITEMS)))
    return d


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ml")
    return {"base": _write(root / "base", _fixture()),
            "late": _write(root / "late", _fixture(late_shift=1)), "fx": _fixture()}


def _build(files, which="base", **kw):
    kw = {"genres": FIX_GENRES, "label_rate": 0.3, **kw}
    return movielens_sparse(path=files[which], **kw)


def _nan(d):
    return np.isnan(d.y.numpy())


def test_shapes_and_user_splits(files):
    b = _build(files)
    users = b.info["users"]
    assert b.tasks.names == ["likes_drama", "likes_comedy", "likes_action", "likes_western"]
    assert all(t.kind == "binary" for t in b.tasks)
    assert b.n_features == b.train.x.shape[1] == len(b.info["feature_names"])
    # 1 age + gender + 2 occupations + 3 history statistics + 2 per genre
    assert b.n_features == 4 + 3 + 2 * len(FIX_GENRES)
    for name, d in b.splits.items():
        assert d.x.shape[0] == d.y.shape[0] == len(users[name]) and d.env is None
    every = np.concatenate(list(users.values()))
    assert len(every) == len(set(every.tolist())) == N_USERS          # disjoint, complete
    ages = _fixture()[0]
    assert set(users["test_ood"].tolist()) == set(np.flatnonzero(ages >= 45).tolist())
    assert (len(users["val"]), len(users["test_iid"])) == (round(0.15 * 45), round(0.25 * 45))
    demo = _build(files, features="demographics")
    assert demo.n_features == 4 and demo.info["feature_names"][:2] == ["age", "gender_m"]
    assert np.isfinite(b.train.x.numpy()).all()


def _direct_labels(files, threshold=4.0, min_ratings=1):
    """Labels computed the slow way from the fixture: [users, genres], NaN = unobserved."""
    ages, genres, rows = files["fx"]
    cols = [GENRES.index(g) for g in FIX_GENRES]
    y = np.full((N_USERS, len(cols)), np.nan)
    for u in range(N_USERS):
        mine = sorted((t, i, r) for uu, i, r, t in rows if uu == u + 1)[PER_USER // 2:]
        for k, c in enumerate(cols):
            rs = [r for _, i, r in mine if genres[i - 1, c]]
            if len(rs) >= min_ratings:
                y[u, k] = float(np.mean([r >= threshold for r in rs]) >= 0.5)
    return y


def test_labels_come_from_the_label_period_and_test_keeps_every_one(files):
    b = _build(files)
    y = _direct_labels(files)
    for name in ("test_iid", "test_ood"):                   # every naturally observed label
        np.testing.assert_array_equal(b.splits[name].y.numpy(), y[b.info["users"][name]])
    for name in ("train", "val"):                           # a subset of them, same values
        got, want = b.splits[name].y.numpy(), y[b.info["users"][name]]
        obs = ~np.isnan(got)
        assert not (obs & np.isnan(want)).any()
        np.testing.assert_array_equal(got[obs], want[obs])
    b2 = _build(files, min_ratings=3, like_threshold=3.0)
    np.testing.assert_array_equal(b2.test_iid.y.numpy(), _direct_labels(files, 3.0, 3)[
        b2.info["users"]["test_iid"]])


def test_label_rate_sets_the_missing_rate_and_nests(files):
    natural = ~np.isnan(_direct_labels(files))
    kept = {}
    for rate in (0.1, 0.3, 1.0):
        b = _build(files, label_rate=rate)
        tr = b.info["users"]["train"]
        obs = ~_nan(b.train)
        kept[rate] = obs
        assert b.info["observed_rate"] == pytest.approx(obs.mean())
        assert (obs.sum(axis=0) >= 1).all()                 # every task keeps a label
        if rate == 1.0:
            np.testing.assert_array_equal(obs, natural[tr])
        else:   # about rate of the natural labels (plus at most one forced label a task)
            share = obs.sum() / natural[tr].sum()
            assert abs(share - rate) < 0.12 + len(FIX_GENRES) / natural[tr].sum()
    assert not (kept[0.1] & ~kept[0.3]).any() and not (kept[0.3] & ~kept[1.0]).any()


def test_no_leakage_features_use_only_the_history_period(files):
    base, late = _build(files), _build(files, which="late")
    for name in base.splits:                # label-period ratings changed: same features
        np.testing.assert_array_equal(base.splits[name].x.numpy(), late.splits[name].x.numpy())
    assert not np.array_equal(np.nan_to_num(base.test_iid.y.numpy(), nan=-1),
                              np.nan_to_num(late.test_iid.y.numpy(), nan=-1))
    # standardisation uses the training users only: their numeric columns have mean 0
    x = base.train.x.numpy()
    np.testing.assert_allclose(x[:, 0].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(x[:, 4:].mean(axis=0), 0.0, atol=1e-5)


def test_deterministic_by_seed(files):
    a, b, c = _build(files, seed=3), _build(files, seed=3), _build(files, seed=4)
    for name in a.splits:
        np.testing.assert_array_equal(a.splits[name].x.numpy(), b.splits[name].x.numpy())
        np.testing.assert_array_equal(np.nan_to_num(a.splits[name].y.numpy(), nan=-1),
                                      np.nan_to_num(b.splits[name].y.numpy(), nan=-1))
    assert not np.array_equal(a.info["users"]["train"], c.info["users"]["train"])
    np.testing.assert_array_equal(a.info["users"]["test_ood"], c.info["users"]["test_ood"])


def test_arguments_are_checked(files):
    for kw, name in [({"label_rate": 0.0}, "label_rate"), ({"genres": ("Cartoon",)}, "genres"),
                     ({"genres": ()}, "genres"), ({"genres": "Drama"}, "genres"),
                     ({"features": "all"}, "features"), ({"min_ratings": 0}, "min_ratings"),
                     ({"history_fraction": 1.0}, "history_fraction"),
                     ({"like_threshold": 6}, "like_threshold"),
                     ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction")]:
        with pytest.raises(ValidationError, match=name):
            _build(files, **kw)


def test_missing_recbole_names_the_install(monkeypatch):
    real = _files.package_dir
    monkeypatch.setattr(_files, "package_dir", lambda p: None if p == "recbole" else real(p))
    with pytest.raises(MissingDependencyError, match="--no-deps recbole"):
        movielens_sparse()


@pytest.mark.data
@pytest.mark.skipif(_files.package_file("recbole", "dataset_example", "ml-100k") is None,
                    reason="recbole not installed (pip install --no-deps recbole==1.2.1; "
                           "make install does it)")
def test_real_movielens_sparse():
    b = tg.datasets.load_benchmark("movielens_sparse", seed=0)
    assert len(b.tasks) == 18 and b.n_features == 62
    assert sum(len(d) for d in b.splits.values()) == 943 and len(b.test_ood) == 205
    assert 0.85 < _nan(b.train).mean() < 0.97            # most entries missing
    assert _nan(b.test_iid).mean() < 0.4
