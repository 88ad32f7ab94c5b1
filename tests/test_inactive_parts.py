"""A configured part that cannot act on the data says so once per fit, with the cause found in
the data and a remedy that fits it, and records the same text in ``history_[-1]``
(``"<part>_skipped"``); a part that acts says nothing (docs/errors.md, issue 18 item 3)."""

import warnings

import numpy as np
import pytest
import torch

import taskgraph as tg
from taskgraph import InactivePartWarning
from taskgraph.datasets import causal_mtl, sparse_tasks
from taskgraph.learners import create

FAST = dict(epochs=2, batch_size=64, hidden=8, seed=0, verbose=False, warmup_steps=0)
FAST_CG = dict(FAST, structure=False, ebm=False, node_dim=8)


@pytest.fixture(scope="module")
def sparse():
    return sparse_tasks(n_tasks=6, n_samples=400, seed=0, label_rate=0.1, n_test=100)


@pytest.fixture(scope="module")
def shifted():
    return causal_mtl(n_per_env=1000, seed=0, n_test=200)   # GMTL finds a shifting pair


def _fit(name, bench, **kw):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        learner = create(name, bench.tasks, **kw).fit(bench.train, val=bench.val)
    return learner, [r for r in rec if issubclass(r.category, InactivePartWarning)]


def _skipped(learner):
    return {k: v for k, v in learner.history_[-1].items() if k.endswith("_skipped")}


def _one(found, needle):
    hits = [str(r.message) for r in found if needle in str(r.message)]
    assert len(hits) == 1, [str(r.message) for r in found]
    return hits[0]


def test_causal_graph_on_sparse_labels_without_env_says_why_once(sparse):
    learner, found = _fit("causal_graph", sparse, **FAST_CG)
    assert len(found) == 2                              # invariance and GMTL, once each
    inv = _one(found, "invariance penalty is disabled")
    # the cause is the sparse labels: no row has all 6 labels observed
    assert "none of the" in inv and "all 6 labels observed" in inv and "missing" in inv
    assert "env=" in inv and "environments='given'" in inv and "invariance=0" in inv
    assert "balanced_sampling" not in inv and "min_env_rows" not in inv   # would not help
    gmtl = _one(found, "GMTL joint decoding is off")
    assert "no `env`" in gmtl and "env=..." in gmtl and "gmtl=None" in gmtl
    assert _skipped(learner) == {"invariance_skipped": inv, "gmtl_skipped": gmtl}
    assert learner.gmtl_ is None
    assert learner.evaluate(sparse.test_iid) == learner.evaluate(sparse.test_iid,
                                                                 inference="independent")
    # a second fit warns again (once per fit), the same records
    _, again = _fit("causal_graph", sparse, **FAST_CG)
    assert sorted(str(r.message) for r in again) == sorted([inv, gmtl])


def test_mtcrl_on_sparse_labels_says_why_once(sparse):
    learner, found = _fit("mtcrl", sparse, **FAST)
    (msg,) = [str(r.message) for r in found]
    assert "all 6 labels observed" in msg and "environments='given'" in msg
    assert _skipped(learner) == {"invariance_skipped": msg}


def test_switched_off_parts_say_nothing(sparse):
    learner, found = _fit("causal_graph", sparse, invariance=0.0, warmup_invariance=0.0,
                          gmtl=None, **FAST_CG)
    assert found == [] and _skipped(learner) == {}


def test_parts_that_act_say_nothing(shifted):
    # batches of 256: environments x label strata reach min_env_rows=16 (at 64 they do not,
    # and the learner says so: the next test)
    learner, found = _fit("causal_graph", shifted, **dict(FAST_CG, batch_size=256))
    assert found == [] and _skipped(learner) == {}
    assert learner.gmtl_ is not None and learner._inv.envs is not None
    learner, found = _fit("mtcrl", shifted, **dict(FAST, batch_size=256))
    assert found == [] and _skipped(learner) == {}


def test_env_given_but_a_single_one_suggests_label_strata_when_they_act(shifted):
    d = shifted.train
    no_env = tg.MultiTaskData(d.x, d.y, d.tasks)
    with pytest.warns(InactivePartWarning) as rec:
        learner = create("mtcrl", d.tasks, environments="given", **FAST).fit(no_env)
    (msg,) = [str(r.message) for r in rec if issubclass(r.category, InactivePartWarning)]
    assert "has no `env`" in msg and "environments='labels'" in msg      # complete labels
    assert learner.history_[-1]["invariance_skipped"] == msg
    # with sparse labels the label strata would not act either: not suggested
    y = d.y.clone()
    y[torch.rand(y.shape, generator=torch.Generator().manual_seed(0)) < 0.6] = float("nan")
    sparse_no_env = tg.MultiTaskData(d.x, y, d.tasks)
    with pytest.warns(InactivePartWarning) as rec:
        create("mtcrl", d.tasks, environments="given", **FAST).fit(sparse_no_env)
    (msg,) = [str(r.message) for r in rec if issubclass(r.category, InactivePartWarning)]
    assert "has no `env`" in msg and "environments='labels'" not in msg


def test_gmtl_with_env_but_no_shifting_pair_names_shift_z(shifted):
    d = shifted.train
    # one environment's labels copied into the other: no association differs
    env = d.env.clone()
    env[torch.arange(len(env)) % 2 == 0] = 0
    env[torch.arange(len(env)) % 2 == 1] = 1
    same = tg.MultiTaskData(d.x, d.y, d.tasks, env=env)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        learner = create("causal_graph", d.tasks, invariance=0.0, warmup_invariance=0.0,
                         **FAST_CG).fit(same)
    msgs = [str(r.message) for r in rec if issubclass(r.category, InactivePartWarning)]
    (msg,) = msgs
    assert "shift_z=4" in msg and "2 training environments" in msg and "gmtl=None" in msg
    assert learner.history_[-1]["gmtl_skipped"] == msg


def test_an_idle_penalty_names_the_batch_size_or_min_env_rows_that_would_act(shifted):
    kw = dict(FAST, environments="given")
    # 2,000 rows in 2 environments: a pair holds up to ~1,000 rows, ~32 per batch of 64
    learner, found = _fit("mtcrl", shifted, min_env_rows=100, **kw)
    (msg,) = [str(r.message) for r in found]
    assert "did not act" in msg and "raise batch_size to at least" in msg
    need = int(msg.split("raise batch_size to at least ")[1].split(",")[0])
    assert 64 < need <= len(shifted.train)
    assert learner.history_[-1]["invariance_skipped"] == msg
    assert sum(1 for h in learner.history_ for k in h if k.endswith("_skipped")) == 1
    # at that batch size the penalty acts and nothing is said
    acting, found = _fit("mtcrl", shifted, min_env_rows=100,
                         **dict(kw, batch_size=min(2 * need, len(shifted.train))))
    assert found == [] and acting.history_[-1]["invariance_batches"] > 0
    _, found = _fit("mtcrl", shifted, min_env_rows=10**6, **kw)
    (msg,) = [str(r.message) for r in found]
    assert "whole training data" in msg and "lower min_env_rows below" in msg


def test_the_warning_points_at_the_callers_line(sparse):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        create("mtcrl", sparse.tasks, **FAST).fit(sparse.train)
    (w,) = [r for r in rec if issubclass(r.category, InactivePartWarning)]
    assert w.filename == __file__


def test_records_survive_save_and_load(sparse, tmp_path):
    learner, _ = _fit("mtcrl", sparse, **FAST)
    path = learner.save(tmp_path / "m.pt")
    loaded = tg.learners.load_learner(path)
    assert _skipped(loaded) == _skipped(learner) != {}
    assert np.isfinite(loaded.history_[-1]["task_loss"])
