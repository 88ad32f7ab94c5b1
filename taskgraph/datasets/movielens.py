r"""MovieLens-100k as a multi-task benchmark with user-group or time environments.

Data: the 100,000 ratings (943 users, 1,682 movies, 1997-09 to 1998-04) of GroupLens'
MovieLens-100k, read by path from the copy inside the ``recbole`` wheel
(``recbole/dataset_example/ml-100k/``, RecBole's tab-separated atomic files; ``pip install
--no-deps recbole==1.2.1``: RecBole's own pinned dependencies are not needed) or from a user
``path`` holding either RecBole's ``ml-100k.{inter,user,item}`` or GroupLens' original
``u.data``, ``u.user``, ``u.item``. The data are under GroupLens' terms (research use; cite
Harper & Konstan 2015; no redistribution): taskgraph never ships them.

**Rows** are (user, movie) ratings. **Tasks** per row:

- ``rating``: the rating 1–5 (regression);
- ``liked``: rating ≥ 4 (binary);
- ``rating_<genre>`` for each of ``genres``: the rating if the movie has that genre, else
  missing (``NaN``) — per-genre preference tasks with genuinely missing labels.

**Features** (``n_features`` ≈ 47): the user's age (standardised), gender, occupation
(one-hot), the movie's release year (standardised) and genres (multi-hot), and four history
statistics: the user's and the movie's smoothed mean rating and log rating count. The history
statistics come only from **history rows** — each user's earliest ``history_fraction`` of
ratings — which are never training or test rows, so no label leaks into a feature and users
seen only at test time still have a history.

**Environments and shift** (``shift``):

- ``"age"`` (default): environments are age bands (<25, 25–34, 35–44, 45+); ``train``,
  ``val`` and ``test_iid`` are a random split of the rows of users under 45, ``test_ood`` holds
  every (non-history) row of the users aged 45 and over (unseen users).
- ``"time"``: environments are four equal-count periods of the training time span;
  ``test_ood`` is the latest ``ood_fraction`` of the non-history rows by timestamp.

:func:`movielens_sparse` builds a different problem from the same files: one row per user and
one sparsely labelled binary task per genre ("does this user like the genre's movies"), the
sparse-label regime of graph multi-task learning (its docstring has the construction).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from taskgraph.data import MultiTaskData
from taskgraph.datasets._files import DataFileError, check_split_fractions, require_file
from taskgraph.datasets.benchmark import Benchmark, _check_float, _check_int, _check_seed
from taskgraph.exceptions import ValidationError
from taskgraph.graph import TaskGraph
from taskgraph.tasks import Task, TaskSet

__all__ = ["movielens", "movielens_sparse", "load_movielens", "GENRES", "MOVIELENS_INSTALL"]

MOVIELENS_INSTALL = "`pip install --no-deps recbole==1.2.1`"
_RECBOLE_PARTS = ("dataset_example", "ml-100k")
#: MovieLens-100k's 19 genres, in GroupLens' column order
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western")
AGE_BANDS = (25, 35, 45)  # band edges: <25, 25–34, 35–44, 45+


# ---------------------------------------------------------------------------- reading
def _lines(path: Path, encoding: str = "utf-8") -> list[str]:
    try:
        return path.read_text(encoding=encoding, errors="replace").splitlines()
    except OSError as exc:
        raise DataFileError(f"path: cannot read {str(path)!r}: {exc}") from None


def _read_recbole(root: Path) -> dict[str, Any]:
    inter = [ln.split("\t") for ln in _lines(root / "ml-100k.inter")[1:] if ln.strip()]
    users = [ln.split("\t") for ln in _lines(root / "ml-100k.user")[1:] if ln.strip()]
    items = [ln.split("\t") for ln in _lines(root / "ml-100k.item")[1:] if ln.strip()]
    genre_index = {g: k for k, g in enumerate(GENRES)}
    item_genres = []
    for row in items:
        flags = np.zeros(len(GENRES), dtype=bool)
        for g in (row[3].split() if len(row) > 3 else []):
            if g in genre_index:
                flags[genre_index[g]] = True
        item_genres.append(flags)
    return {
        "ratings": [(r[0], r[1], r[2], r[3]) for r in inter],
        "users": {r[0]: (r[1], r[2], r[3]) for r in users},
        "items": {r[0]: (r[2] if len(r) > 2 else "", g) for r, g in zip(items, item_genres)},
    }


def _read_grouplens(root: Path) -> dict[str, Any]:
    ratings = [tuple(ln.split("\t")[:4]) for ln in _lines(root / "u.data") if ln.strip()]
    users = {}
    for ln in _lines(root / "u.user"):
        if ln.strip():
            p = ln.split("|")
            users[p[0]] = (p[1], p[2], p[3])
    items = {}
    for ln in _lines(root / "u.item", encoding="latin-1"):
        if ln.strip():
            p = ln.split("|")
            year = p[2][-4:] if len(p) > 2 and len(p[2]) >= 4 else ""
            items[p[0]] = (year, np.array([f == "1" for f in p[5:5 + len(GENRES)]], dtype=bool))
    return {"ratings": ratings, "users": users, "items": items}


def load_movielens(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The raw MovieLens-100k arrays.

    Args:
        path (str or Path, optional): a folder with RecBole's ``ml-100k.{inter,user,item}`` or
            GroupLens' ``u.data``, ``u.user``, ``u.item``; ``None`` = the copy in the recbole
            wheel (located without importing recbole).

    Returns:
        dict: ``user``, ``item`` (int64 ``[R]``, 0-based indices), ``rating`` (float ``[R]``),
        ``timestamp`` (int64 ``[R]``); per user ``age`` (int), ``gender`` (``"M"``/``"F"``),
        ``occupation`` (str); per item ``year`` (float, ``NaN`` unknown), ``genres`` (bool
        ``[I, 19]``, columns :data:`GENRES`).

    Raises:
        MissingDependencyError: if ``path`` is ``None`` and recbole is not installed.
        DataFileError: if the files are missing or malformed (an ``OSError``).
    """
    if path is None:
        root = require_file("recbole", _RECBOLE_PARTS, "MovieLens-100k", MOVIELENS_INSTALL)
    else:
        root = Path(path)
    if (root / "ml-100k.inter").is_file():
        raw = _read_recbole(root)
    elif (root / "u.data").is_file():
        raw = _read_grouplens(root)
    else:
        raise DataFileError(
            f"path: {str(root)!r} holds neither RecBole's ml-100k.inter/.user/.item nor "
            "GroupLens' u.data/u.user/u.item"
        )
    try:
        user_ids = sorted(raw["users"], key=int)
        item_ids = sorted(raw["items"], key=int)
        u_index = {u: i for i, u in enumerate(user_ids)}
        i_index = {m: i for i, m in enumerate(item_ids)}
        r = raw["ratings"]
        user = np.array([u_index[t[0]] for t in r], dtype=np.int64)
        item = np.array([i_index[t[1]] for t in r], dtype=np.int64)
        rating = np.array([float(t[2]) for t in r])
        timestamp = np.array([int(float(t[3])) for t in r], dtype=np.int64)
        age = np.array([int(raw["users"][u][0]) for u in user_ids], dtype=np.int64)
    except (KeyError, ValueError, IndexError) as exc:
        raise DataFileError(f"path: malformed MovieLens files in {str(root)!r}: {exc!r}") from None
    if len(rating) == 0:
        raise DataFileError(f"path: no ratings in {str(root)!r}")
    years = [raw["items"][m][0] for m in item_ids]
    return {
        "user": user, "item": item, "rating": rating, "timestamp": timestamp,
        "age": age,
        "gender": np.array([raw["users"][u][1] for u in user_ids]),
        "occupation": np.array([raw["users"][u][2] for u in user_ids]),
        "year": np.array([float(y) if y.strip().isdigit() else np.nan for y in years]),
        "genres": np.stack([raw["items"][m][1] for m in item_ids]),
    }


# ---------------------------------------------------------------------------- the benchmark
def _task_name(genre: str) -> str:
    return "rating_" + re.sub(r"[^a-z0-9]+", "_", genre.lower()).strip("_")


def _history_mask(user: np.ndarray, timestamp: np.ndarray, fraction: float) -> np.ndarray:
    """``True`` for each user's earliest ``fraction`` of ratings (at least one)."""
    order = np.lexsort((np.arange(len(user)), timestamp, user))
    counts = np.bincount(user)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank_in_user = np.arange(len(user)) - first[user[order]]
    keep = np.maximum(1, np.floor(fraction * counts)).astype(np.int64)
    mask = np.zeros(len(user), dtype=bool)
    mask[order] = rank_in_user < keep[user[order]]
    return mask


def _smoothed_stats(index: np.ndarray, rating: np.ndarray, size: int, prior: float,
                    strength: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    total = np.bincount(index, weights=rating, minlength=size)
    count = np.bincount(index, minlength=size).astype(float)
    return (total + strength * prior) / (count + strength), np.log1p(count)


def movielens(
    seed: int = 0,
    *,
    shift: str = "age",
    genres: Sequence[str] = ("Drama", "Comedy", "Action", "Thriller", "Romance"),
    history_fraction: float = 0.2,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    ood_fraction: float = 0.2,
    max_ratings: int | None = None,
    path: str | Path | None = None,
) -> Benchmark:
    """MovieLens-100k: rating, liked and per-genre rating tasks with an environment shift.

    See the module docstring for tasks, features and the shift.

    Args:
        seed (int): non-negative seed of the row split and subsampling.
        shift (str): ``"age"`` (unseen users aged 45+ out of distribution) or ``"time"``
            (the latest ratings out of distribution).
        genres (sequence of str): genres with a ``rating_<genre>`` task (names from
            :data:`GENRES`; may be empty).
        history_fraction (float): each user's earliest share of ratings kept for the history
            features only, in ``(0, 1)``.
        val_fraction (float): share of the in-distribution rows for ``val``.
        test_fraction (float): share of the in-distribution rows for ``test_iid``.
        ood_fraction (float): with ``shift="time"``, the latest share of rows in ``test_ood``.
        max_ratings (int, optional): keep at most this many non-history rows (a random,
            seeded subset) — for quick runs.
        path (str or Path, optional): see :func:`load_movielens`.

    Returns:
        Benchmark: ``x`` float32 ``[N, F]``; ``train`` and ``val`` carry ``env``; the
        ``true_graph`` is empty (``info["has_true_graph"]`` is ``False``); ``info`` keys
        ``"feature_names"``, ``"env_names"``, ``"shift"``, ``"genres"``, ``"n_history_rows"``,
        ``"rows"`` (indices into the ratings per split), ``"seed"``.

    Raises:
        ValidationError: on a bad argument (the message names it).
        MissingDependencyError: if ``path`` is ``None`` and recbole is not installed.
    """
    seed = _check_seed(seed)
    if shift not in ("age", "time"):
        raise ValidationError(f"shift: expected 'age' or 'time', got {shift!r}")
    if isinstance(genres, str):
        raise ValidationError(f"genres: expected a sequence of genre names, got {genres!r}")
    bad = [g for g in genres if g not in GENRES]
    if bad:
        raise ValidationError(f"genres: unknown {bad}; choose from {list(GENRES)}")
    history_fraction = _check_float("history_fraction", history_fraction, 0.0, 1.0,
                                    low_open=True, high_open=True)
    val_fraction, test_fraction = check_split_fractions(val_fraction, test_fraction)
    ood_fraction = _check_float("ood_fraction", ood_fraction, 0.0, 1.0, low_open=True,
                                high_open=True)
    if max_ratings is not None:
        max_ratings = _check_int("max_ratings", max_ratings, 10)

    d = load_movielens(path)
    user, item, rating, ts = d["user"], d["item"], d["rating"], d["timestamp"]
    n_users, n_items = len(d["age"]), len(d["genres"])
    rng = np.random.default_rng(np.random.SeedSequence([seed, 4]))

    # history rows → user/item statistics (never examples)
    hist = _history_mask(user, ts, history_fraction)
    prior = float(rating[hist].mean())
    u_mean, u_count = _smoothed_stats(user[hist], rating[hist], n_users, prior)
    i_mean, i_count = _smoothed_stats(item[hist], rating[hist], n_items, prior)

    rows = np.flatnonzero(~hist)
    if max_ratings is not None and len(rows) > max_ratings:
        rows = np.sort(rng.choice(rows, size=max_ratings, replace=False))

    band = np.searchsorted(np.asarray(AGE_BANDS), d["age"], side="right")  # per user, 0..3
    if shift == "age":
        env_all = band[user]
        ood_mask = env_all[rows] == len(AGE_BANDS)
        env_names = ["age<25", "age25-34", "age35-44", "age45+"]
    else:
        cut = np.quantile(ts[rows], 1.0 - ood_fraction)
        ood_mask = ts[rows] > cut
        edges = np.quantile(ts[rows][~ood_mask], [0.25, 0.5, 0.75])
        env_all = np.searchsorted(edges, ts, side="right")
        env_all = np.where(np.isin(np.arange(len(ts)), rows[ood_mask]), len(edges) + 1, env_all)
        env_names = ["period0", "period1", "period2", "period3", "ood"]
    in_rows, ood_rows = rows[~ood_mask], rows[ood_mask]
    if len(in_rows) < 10 or len(ood_rows) < 1:
        raise ValidationError(
            f"max_ratings: too few rows ({len(in_rows)} in distribution, {len(ood_rows)} out) "
            "to split"
        )
    perm = rng.permutation(in_rows)
    n_val = max(1, int(round(val_fraction * len(perm))))
    n_test = max(1, int(round(test_fraction * len(perm))))
    split_rows = {
        "val": np.sort(perm[:n_val]),
        "test_iid": np.sort(perm[n_val:n_val + n_test]),
        "train": np.sort(perm[n_val + n_test:]),
        "test_ood": ood_rows,
    }

    # features, standardised with training-row statistics
    occupations = sorted(set(d["occupation"].tolist()))
    occ = (d["occupation"][:, None] == np.array(occupations)[None, :]).astype(np.float32)
    year = np.where(np.isnan(d["year"]), np.nanmean(d["year"]), d["year"])
    numeric = np.stack([d["age"][user].astype(float), year[item], u_mean[user], i_mean[item],
                        u_count[user], i_count[item]], axis=1)
    tr = split_rows["train"]
    mu, sd = numeric[tr].mean(axis=0), numeric[tr].std(axis=0) + 1e-8
    numeric = (numeric - mu) / sd
    x = np.concatenate([
        numeric[:, :2], (d["gender"][user] == "M")[:, None].astype(float), occ[user],
        d["genres"][item].astype(float), numeric[:, 2:],
    ], axis=1).astype(np.float32)
    feature_names = (["age", "year", "gender_m"] + [f"occ_{o}" for o in occupations]
                     + [f"genre_{g}" for g in GENRES]
                     + ["user_mean", "item_mean", "user_log_count", "item_log_count"])

    # labels
    genre_col = {g: k for k, g in enumerate(GENRES)}
    cols = [rating, (rating >= 4).astype(float)]
    for g in genres:
        has = d["genres"][item, genre_col[g]]
        cols.append(np.where(has, rating, np.nan))
    y = np.stack(cols, axis=1).astype(np.float32)
    tasks = TaskSet([Task("rating", "regression"), Task("liked", "binary")]
                    + [Task(_task_name(g), "regression") for g in genres])

    def make(name: str) -> MultiTaskData:
        r = split_rows[name]
        env = env_all[r] if name in ("train", "val") else None
        return MultiTaskData(x[r], y[r], tasks, env=env)

    splits = {name: make(name) for name in ("train", "val", "test_iid", "test_ood")}
    graph = TaskGraph.empty(tasks.names, learned=False,
                            meta={"benchmark": "movielens", "truth": "none"})
    info = {
        "shift": shift, "genres": list(genres), "feature_names": feature_names,
        "env_names": env_names, "n_history_rows": int(hist.sum()), "rows": split_rows,
        "has_true_graph": False, "seed": seed,
        "source": "recbole ml-100k" if path is None else str(path),
    }
    return Benchmark(splits["train"], splits["val"], splits["test_iid"], splits["test_ood"],
                     tasks, graph, x.shape[1], "movielens", info)


# ---------------------------------------------------------------------------- sparse genre tasks
def _genre_task(genre: str) -> str:
    return "likes_" + re.sub(r"[^a-z0-9]+", "_", genre.lower()).strip("_")


def movielens_sparse(
    seed: int = 0,
    *,
    label_rate: float = 0.1,
    genres: Sequence[str] | None = None,
    features: str = "history",
    history_fraction: float = 0.5,
    like_threshold: float = 4.0,
    min_ratings: int = 1,
    val_fraction: float = 0.15,
    test_fraction: float = 0.25,
    path: str | Path | None = None,
) -> Benchmark:
    r"""MovieLens-100k as a sparse multi-task problem: one row per user, one binary task per
    genre, most labels missing.

    **Periods.** Each user's ratings are ordered by time; the earliest ``history_fraction``
    (at least one) form the *history period*, the rest the *label period*. Features come only
    from the history period and labels only from the label period, so no label leaks into a
    feature.

    **Tasks.** For each genre ``g`` of ``genres`` (default: the 18 named genres, without
    ``"unknown"``) the task ``likes_<g>``: among the user's label-period ratings of movies with
    genre ``g``, are at least half ``>= like_threshold``? The label is *observed* only when the
    user rated at least ``min_ratings`` such movies in the label period (natural missingness: a
    user who rated no western has no ``likes_western`` label), and the ``train`` and ``val``
    labels are then kept with probability ``label_rate`` (``NaN`` otherwise; a uniform draw per
    (user, genre) from its own stream, so a higher rate keeps a superset, and each task keeps at
    least one label in each split where it has any). ``test_iid`` and ``test_ood`` keep every
    naturally observed label.

    **Features** (``features="history"``, 62 columns with the 18 genres): age (standardised),
    gender, occupation (one-hot, 21), and from the history period: the log rating count, the
    mean rating and the share of ratings ``>= like_threshold`` (smoothed towards the training
    users' means with 5 pseudo-ratings), and per genre the share of the history ratings in that
    genre and the smoothed share liked (towards the user's own liked share, 2 pseudo-ratings).
    ``features="demographics"`` keeps only age, gender and occupation (cold-start users).
    Numeric columns are standardised with the training users' statistics.

    **Splits, by user** (a user is in exactly one split): users aged 45 and over form
    ``test_ood`` (as in :func:`movielens`); the others are permuted by ``seed`` into ``val``
    (``val_fraction``), ``test_iid`` (``test_fraction``) and ``train`` (the rest). No split
    carries ``env``.

    Args:
        seed (int): non-negative seed of the user split and the label mask.
        label_rate (float): share in ``(0, 1]`` of the observed train/val labels kept.
        genres (sequence of str, optional): genres with a task (names from :data:`GENRES`).
        features (str): ``"history"`` or ``"demographics"``.
        history_fraction (float): each user's earliest share of ratings used for features, in
            ``(0, 1)``.
        like_threshold (float): the rating from which a movie counts as liked.
        min_ratings (int): label-period ratings of a genre needed to observe its label (>= 1).
        val_fraction, test_fraction (float): shares of the users under 45.
        path (str or Path, optional): see :func:`load_movielens`.

    Returns:
        Benchmark: ``x`` float32 ``[users, F]``; ``true_graph`` empty (no known causal graph);
        ``info`` keys ``"feature_names"``, ``"genres"``, ``"users"`` (user indices per
        split), ``"label_rate"``, ``"natural_label_rate"`` (per task, share of users with an
        observed label before masking, over the users under 45), ``"observed_rate"`` (share of
        train labels observed), ``"positive_rate"`` (per task, over the naturally observed
        labels of the users under 45), ``"like_threshold"``, ``"min_ratings"``,
        ``"history_fraction"``, ``"features"``, ``"has_true_graph"`` (``False``), ``"seed"``,
        ``"source"``.

    Raises:
        ValidationError: on a bad argument (the message names it).
        MissingDependencyError: if ``path`` is ``None`` and recbole is not installed.
    """
    seed = _check_seed(seed)
    label_rate = _check_float("label_rate", label_rate, 0.0, 1.0, low_open=True)
    if genres is None:
        genres = tuple(g for g in GENRES if g != "unknown")
    if isinstance(genres, str) or len(genres) == 0:
        raise ValidationError(f"genres: expected a non-empty sequence of genre names, got "
                              f"{genres!r}")
    bad = [g for g in genres if g not in GENRES]
    if bad:
        raise ValidationError(f"genres: unknown {bad}; choose from {list(GENRES)}")
    if len(set(genres)) != len(genres):
        raise ValidationError(f"genres: duplicate names in {list(genres)}")
    if features not in ("history", "demographics"):
        raise ValidationError(f"features: expected 'history' or 'demographics', got "
                              f"{features!r}")
    history_fraction = _check_float("history_fraction", history_fraction, 0.0, 1.0,
                                    low_open=True, high_open=True)
    like_threshold = _check_float("like_threshold", like_threshold, 1.0, 5.0)
    min_ratings = _check_int("min_ratings", min_ratings, 1)
    val_fraction, test_fraction = check_split_fractions(val_fraction, test_fraction)

    d = load_movielens(path)
    user, item, rating, ts = d["user"], d["item"], d["rating"], d["timestamp"]
    n_users = len(d["age"])
    gcols = [GENRES.index(g) for g in genres]
    item_genre = d["genres"][:, gcols].astype(float)                  # [I, G]
    liked = (rating >= like_threshold).astype(float)
    hist = _history_mask(user, ts, history_fraction)

    def per_user(mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Per user and genre sums over the rows in ``mask`` ([U, G])."""
        w = np.ones(mask.sum()) if weights is None else weights[mask]
        out = np.zeros((n_users, len(gcols)))
        np.add.at(out, user[mask], item_genre[item[mask]] * w[:, None])
        return out

    # labels from the label period
    lab = ~hist
    n_g, liked_g = per_user(lab), per_user(lab, liked)
    natural = n_g >= min_ratings
    y_full = np.where(natural, (liked_g >= 0.5 * n_g).astype(float), np.nan)

    # splits by user
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    ood_users = np.flatnonzero(d["age"] >= AGE_BANDS[-1])
    in_users = np.flatnonzero(d["age"] < AGE_BANDS[-1])
    if len(in_users) < 3 or len(ood_users) < 1:
        raise ValidationError(f"path: too few users to split ({len(in_users)} under 45, "
                              f"{len(ood_users)} aged 45+)")
    perm = rng.permutation(in_users)
    n_val = max(1, int(round(val_fraction * len(perm))))
    n_test = max(1, int(round(test_fraction * len(perm))))
    if n_val + n_test >= len(perm):
        raise ValidationError(f"val_fraction, test_fraction: leave no training users of "
                              f"{len(perm)}")
    users = {"train": np.sort(perm[n_val + n_test:]), "val": np.sort(perm[:n_val]),
             "test_iid": np.sort(perm[n_val:n_val + n_test]), "test_ood": ood_users}

    # features from the history period
    tr = users["train"]
    age = d["age"].astype(float)[:, None]
    occupations = sorted(set(d["occupation"].tolist()))
    occ = (d["occupation"][:, None] == np.array(occupations)[None, :]).astype(float)
    gender = (d["gender"] == "M").astype(float)[:, None]
    numeric, names = [age], ["age"]
    if features == "history":
        h_count = np.bincount(user[hist], minlength=n_users).astype(float)
        h_sum = np.bincount(user[hist], weights=rating[hist], minlength=n_users)
        h_liked = np.bincount(user[hist], weights=liked[hist], minlength=n_users)
        prior_mean = float(h_sum[tr].sum() / max(h_count[tr].sum(), 1.0))
        prior_like = float(h_liked[tr].sum() / max(h_count[tr].sum(), 1.0))
        like_share = (h_liked + 5.0 * prior_like) / (h_count + 5.0)
        hn_g, hl_g = per_user(hist), per_user(hist, liked)
        numeric += [np.log1p(h_count)[:, None], ((h_sum + 5.0 * prior_mean)
                                                 / (h_count + 5.0))[:, None],
                    like_share[:, None], hn_g / np.maximum(h_count, 1.0)[:, None],
                    (hl_g + 2.0 * like_share[:, None]) / (hn_g + 2.0)]
        gnames = [_genre_task(g)[len("likes_"):] for g in genres]
        names += (["log_count", "mean_rating", "liked_share"]
                  + [f"share_{g}" for g in gnames] + [f"liked_{g}" for g in gnames])
    num = np.concatenate(numeric, axis=1)
    mu, sd = num[tr].mean(axis=0), num[tr].std(axis=0) + 1e-8
    num = (num - mu) / sd
    x = np.concatenate([num[:, :1], gender, occ, num[:, 1:]], axis=1).astype(np.float32)
    feature_names = ([names[0], "gender_m"] + [f"occ_{o}" for o in occupations] + names[1:])

    # the label mask of train and val: nested in label_rate, every task keeps a label
    draw = np.random.default_rng(np.random.SeedSequence([seed, 12])).random(y_full.shape)
    y = y_full.copy()
    for split in ("train", "val"):
        u = users[split]
        obs = natural[u]
        keep = obs & (draw[u] < label_rate)
        for k in np.flatnonzero(obs.any(axis=0) & ~keep.any(axis=0)):
            rows = np.flatnonzero(obs[:, k])
            keep[rows[np.argmin(draw[u][rows, k])], k] = True
        y[u] = np.where(keep, y_full[u], np.nan)

    tasks = TaskSet([Task(_genre_task(g), "binary") for g in genres])
    splits = {name: MultiTaskData(x[u], y[u].astype(np.float32), tasks)
              for name, u in users.items()}
    graph = TaskGraph.empty(tasks.names, learned=False,
                            meta={"benchmark": "movielens_sparse", "truth": "none"})
    with np.errstate(invalid="ignore"):
        positive = np.nanmean(y_full[in_users], axis=0)
    info = {
        "genres": list(genres), "feature_names": feature_names, "users": users,
        "label_rate": label_rate,
        "natural_label_rate": natural[in_users].mean(axis=0),
        "observed_rate": float(np.mean(~np.isnan(y[users["train"]]))),
        "positive_rate": positive, "like_threshold": like_threshold,
        "min_ratings": min_ratings, "history_fraction": history_fraction,
        "features": features, "has_true_graph": False, "seed": seed,
        "source": "recbole ml-100k" if path is None else str(path),
    }
    return Benchmark(splits["train"], splits["val"], splits["test_iid"], splits["test_ood"],
                     tasks, graph, x.shape[1], "movielens_sparse", info)
