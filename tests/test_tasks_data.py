import math

import numpy as np
import pytest
import torch

from taskgraph import MultiTaskData, Task, TaskSet, UnknownTaskError, ValidationError
from taskgraph.nn.heads import OutputLayout, TaskHeads


def test_task_kinds():
    assert Task("a", "binary").n_classes == 2
    assert Task("m", "multiclass", 4).out_dim == 4
    assert Task("r", "regression").out_dim == 1
    ts = TaskSet(["a", Task("b", "multiclass", 3)])
    assert ts.names == ["a", "b"] and ts.index("b") == 1 and "a" in ts
    assert TaskSet.from_list(ts.to_list()) == ts


BAD_TASKS = [
    (lambda: Task("", "binary"), "name"),
    (lambda: Task("a", "ordinal"), "kind"),
    (lambda: Task("a", "multiclass"), "n_classes"),
    (lambda: Task("a", "regression", 3), "regression"),
    (lambda: TaskSet([]), "tasks"),
    (lambda: TaskSet(["a", "a"]), "duplicate"),
]


@pytest.mark.parametrize("make,word", BAD_TASKS)
def test_bad_tasks(make, word):
    with pytest.raises(ValidationError, match=word):
        make()


def test_unknown_task_named():
    ts = TaskSet(["a", "b"])
    with pytest.raises(UnknownTaskError, match="'zz'"):
        ts.index("zz")


X = np.zeros((4, 3))
Y = np.array([[0, 1], [1, 0], [np.nan, 1], [0, 0]], float)

BAD_DATA = [
    (dict(x=np.array([[np.nan, 0, 0]] * 4), y=Y), "x: .*NaN"),
    (dict(x=np.array([[np.inf, 0, 0]] * 4), y=Y), "x: .*inf"),
    (dict(x=np.zeros(4), y=Y), "x: expected shape"),
    (dict(x=np.zeros((0, 3)), y=np.zeros((0, 2))), "x: empty"),
    (dict(x=np.zeros((5, 3)), y=Y), "y: has 4 rows but x has 5"),
    (dict(x=X, y=np.zeros((4, 3))), "y: has 3 columns"),
    (dict(x=X, y=np.array([[0, 2]] * 4, float)), "labels must lie in 0..1"),
    (dict(x=X, y=np.array([[0.5, 1]] * 4)), "integral"),
    (dict(x=X, y=np.array([[-1, 1]] * 4, float)), "0..1"),
    (dict(x=X, y=np.array([[np.inf, 1]] * 4)), "inf"),
    (dict(x=X, y=Y, env=np.zeros(3)), "env: expected shape"),
    (dict(x=X, y=Y, env=np.array([0, 1, -1, 0])), "env: .*non-negative"),
    (dict(x=X, y=Y, env=np.array([0, 0.5, 1, 0])), "env: .*integers"),
    (dict(x=X, y=Y, do=np.zeros((4, 3), bool)), "do: expected shape"),
    (dict(x=X, y=Y, do=np.full((4, 2), 2)), "do: expected a bool"),
    (dict(x=[["a", "b", "c"]] * 4, y=Y), "x: expected a numeric"),
]


@pytest.mark.parametrize("kw,msg", BAD_DATA)
def test_bad_data(kw, msg):
    with pytest.raises(ValidationError, match=msg):
        MultiTaskData(tasks=["a", "b"], **kw)


def test_untrainable_and_incompatible():
    d = MultiTaskData(X, np.array([[0, np.nan]] * 4), ["a", "b"])
    with pytest.raises(ValidationError, match=r"\['b'\] have no observed labels"):
        d.check_trainable()
    with pytest.raises(ValidationError, match="differ"):
        d.check_compatible(TaskSet(["a", "c"]))


def test_split_loader_deterministic(mixed_data):
    a1, b1 = mixed_data.split([0.75, 0.25], seed=3)
    a2, b2 = mixed_data.split([0.75, 0.25], seed=3)
    assert len(a1) + len(b1) == len(mixed_data)
    assert torch.equal(a1.x, a2.x) and torch.equal(b1.x, b2.x)
    idx = torch.cat([b.index for b in a1.loader(32, shuffle=True, seed=5)])
    idx2 = torch.cat([b.index for b in a1.loader(32, shuffle=True, seed=5)])
    assert torch.equal(idx, idx2) and sorted(idx.tolist()) == list(range(len(a1)))
    batch = next(iter(a1.loader(16)))
    assert batch.x.shape == (16, 6) and batch.y.shape == (16, 3) and batch.env.shape == (16,)
    e1, _ = mixed_data.split([0.5, 0.5], seed=0, stratify_env=True)
    assert e1.n_envs == 2
    with pytest.raises(ValidationError, match="fractions"):
        mixed_data.split([0.5, 0.6])


def test_select_concat(mixed_data):
    s = mixed_data.select_tasks(["reg", "bin"])
    assert s.tasks.names == ["reg", "bin"]
    assert torch.equal(s.y[:, 0].nan_to_num(7), mixed_data.y[:, 2].nan_to_num(7))
    c = MultiTaskData.concat([mixed_data, mixed_data])
    assert len(c) == 2 * len(mixed_data)


def test_layout_losses_match_per_task_reference(mixed_tasks, mixed_data):
    torch.manual_seed(0)
    layout = OutputLayout(mixed_tasks)
    heads = TaskHeads(mixed_tasks, 6)
    with torch.no_grad():
        out = heads(mixed_data.x)
    assert out.shape == (len(mixed_data), 3, 3)
    got = layout.per_example_loss(out, mixed_data.y)
    for k, task in enumerate(mixed_tasks):
        ref = task.loss(out[:, k, : task.out_dim], mixed_data.y[:, k])
        torch.testing.assert_close(got[:, k], ref)
    lp = layout.log_proba(out)
    assert torch.allclose(lp[:, :2].exp().sum(-1), torch.ones(len(mixed_data), 2))
    assert torch.isinf(lp[:, 0, 2]).all()  # binary task has no third class
    pred = layout.predict(out)
    assert torch.equal(pred[:, 2], out[:, 2, 0])
    assert set(pred[:, 1].unique().tolist()) <= {0.0, 1.0, 2.0}
    tl = layout.task_losses(out, mixed_data.y)
    m = ~torch.isnan(mixed_data.y)
    assert math.isclose(float(tl[0]), float(got[m[:, 0], 0].mean()), rel_tol=1e-5)


def test_heads_shared_equals_per_task_input(mixed_tasks):
    heads = TaskHeads(mixed_tasks, 4)
    h = torch.randn(5, 4)
    torch.testing.assert_close(heads(h), heads(h[:, None, :].expand(5, 3, 4)))


def test_all_binary_fast_path_equals_the_general_path():
    tasks = TaskSet([Task("a", "binary"), Task("b", "binary"), Task("c", "binary")])
    layout = OutputLayout(tasks)
    assert layout.all_binary
    g = torch.Generator().manual_seed(0)
    out = torch.randn(7, 3, 1, generator=g)
    y = torch.randint(0, 2, (7, 3), generator=g).float()
    y[1, 2] = float("nan")
    fast = (layout.per_example_loss(out, y), layout.log_proba(out),
            layout.log_proba_subset(out[:, [2, 0]], torch.tensor([2, 0])))
    layout.all_binary = False
    slow = (layout.per_example_loss(out, y), layout.log_proba(out),
            layout.log_proba_subset(out[:, [2, 0]], torch.tensor([2, 0])))
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b)
    assert fast[0][1, 2] == 0
    assert not OutputLayout(TaskSet([Task("a", "binary"), Task("r", "regression")])).all_binary
