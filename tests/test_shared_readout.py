"""The ``share`` read-out of the graph learners (issue #18): heads on ``[encoder(x), x]``
refitted under the relatedness-graph prior, fitted after training when labels are sparse."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import taskgraph as tg
from taskgraph.exceptions import ValidationError
from taskgraph.learners import create, load_learner
from taskgraph.nn.shared_readout import SharedReadout

FAST = {"hidden": 16, "node_dim": 8, "epochs": 2, "verbose": False}


@pytest.fixture(scope="module")
def sparse():
    return tg.datasets.sparse_tasks(n_tasks=6, n_samples=600, n_features=8, n_clusters=2,
                                    label_rate=0.1, n_test=200, seed=0)


@pytest.fixture(scope="module")
def fitted(sparse):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create("gcnet", sparse.tasks, **FAST).fit(sparse.train, sparse.val)


def test_share_auto_fits_on_sparse_labels_and_competes_on_validation(fitted, sparse):
    part = fitted._share
    assert part.fitted and fitted.relatedness_graph_ is not None
    last = fitted.history_[-1]
    assert last["share_val_loss"] <= last["share_val_loss_without_graph"] + 1e-12
    # inference_mode="auto" picked the lowest validation loss among the modes it tried
    chosen = fitted.inference_
    losses = {}
    for mode in ("heads", "share"):
        fitted.inference_ = mode
        losses[mode] = fitted._val_loss(sparse.val)
    fitted.inference_ = chosen
    assert losses[chosen] <= min(losses.values()) + 1e-9 or chosen == "sem"


def test_share_mode_is_the_linear_readout_on_encoder_and_input(fitted, sparse):
    """Exact reference: ``phi(x) @ W + b`` from the stored heads, through predict_proba."""
    chosen = fitted.inference_
    fitted.inference_ = "share"
    try:
        x = sparse.test_iid.x[:50]
        with torch.no_grad():
            h = fitted.model_.encoder(x)
            phi = torch.cat([h.reshape(50, -1), x.reshape(50, -1)], dim=1)
            out = torch.einsum("nd,tdc->ntc", phi.double(), fitted._share.weight.double())
            out = out + fitted._share.bias.double()
        got = fitted._forward(x).double()
        assert torch.allclose(got, out, atol=1e-5)
    finally:
        fitted.inference_ = chosen


def test_relatedness_graph_is_named_apart_from_the_causal_graph(fitted):
    rel = fitted.relatedness_graph_
    assert rel.meta["relation"] == "relatedness"
    adj = rel.adjacency
    # undirected: both directions (cosines in float32: equal to rounding)
    assert np.array_equal(adj != 0, adj.T != 0) and np.allclose(adj, adj.T, atol=1e-6)
    meta = fitted.task_graph_.meta
    if rel.n_edges:
        pairs = json.loads(meta["relatedness"])
        assert len(pairs) == rel.n_edges // 2
        names = fitted.tasks_set_.names
        for a, b, w in pairs:
            assert adj[names.index(a), names.index(b)] == pytest.approx(w)
    else:
        assert "relatedness" not in meta


def test_share_survives_save_and_load(fitted, sparse, tmp_path):
    loaded = load_learner(fitted.save(tmp_path / "s.pt"))
    assert loaded.inference_ == fitted.inference_
    assert torch.allclose(loaded.predict_proba(sparse.test_iid.x),
                          fitted.predict_proba(sparse.test_iid.x))
    assert torch.equal(loaded._share.weight, fitted._share.weight)
    assert loaded.relatedness_graph_ == fitted.relatedness_graph_


def test_share_auto_is_off_on_dense_labels():
    bench = tg.datasets.sparse_tasks(n_tasks=4, n_samples=300, n_features=6, n_clusters=2,
                                     label_rate=1.0, n_test=100, seed=1)
    learner = create("causal_graph", bench.tasks, **FAST).fit(bench.train, bench.val)
    assert not learner._share.fitted and learner.relatedness_graph_ is None
    assert "share_skipped" not in learner.history_[-1]      # the normal choice: no record
    assert learner.inference_ != "share"
    assert "share" not in learner.task_graph_.meta["parts"].split(",")


def test_share_true_on_causal_graph_and_in_its_parts(sparse):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learner = create("causal_graph", sparse.tasks, share=True, inference_mode="share",
                         **FAST).fit(sparse.train, sparse.val)
    assert learner.inference_ == "share"
    assert "share" in learner.task_graph_.meta["parts"].split(",")
    assert learner.evaluate(sparse.test_iid)["mean"] > 0.5


@pytest.mark.parametrize("kwargs,match", [({"share": "yes"}, "share"),
                                          ({"share": False, "inference_mode": "share"},
                                           "inference_mode")])
def test_share_arguments_are_checked(sparse, kwargs, match):
    with pytest.raises(ValidationError, match=match):
        create("gcnet", sparse.tasks, **FAST, **kwargs).fit(sparse.train, sparse.val)


def test_shared_readout_state_round_trip():
    part = SharedReadout(max_iter=20)
    assert part.state() is None
    rng = np.random.default_rng(0)
    phi = torch.as_tensor(rng.standard_normal((80, 5)), dtype=torch.float32)
    y = torch.as_tensor((rng.random((80, 3)) < 0.5).astype(np.float32))
    tasks = tg.TaskSet([tg.Task(n, "binary") for n in "abc"])
    from taskgraph.nn.heads import OutputLayout, TaskHeads

    layout = OutputLayout(tasks)
    part.fit(phi, y, layout, TaskHeads(tasks, 5).col_mask, n_trunk=2)
    other = SharedReadout()
    other.load_state(part.state())
    assert torch.equal(other(phi), part(phi))


def test_share_auto_without_validation_data_says_why(sparse):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learner = create("gcnet", sparse.tasks, validation_fraction=None,
                         **FAST).fit(sparse.train)
    assert not learner._share.fitted
    assert "validation" in learner.history_[-1]["share_skipped"]
