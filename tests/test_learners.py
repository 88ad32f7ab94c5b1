"""One conformance test that runs every registered learner through the whole contract."""

import numpy as np
import pytest
import torch

import taskgraph as tg
from taskgraph import CheckpointError, NotFittedError, TaskGraph, ValidationError
from taskgraph.learners import create, load_learner

FAST = dict(epochs=3, batch_size=64, hidden=16, seed=0, verbose=False)


def _kwargs(name):
    cls = tg.learners.get(name)
    return {**FAST, **getattr(cls, "conformance_kwargs", {})}


@pytest.fixture(params=tg.learners.list())
def name(request):
    return request.param


def _data_for(name, mixed_data):
    cls = tg.learners.get(name)
    if getattr(cls, "classification_only", False):
        keep = [t.name for t in mixed_data.tasks if t.is_classification]
        return mixed_data.select_tasks(keep)
    return mixed_data


def test_registry_lists_baselines():
    names = tg.learners.list()
    assert {"single_task", "hard_sharing", "mmoe"} <= set(names)
    with pytest.raises(ValidationError, match="unknown learner"):
        create("no_such_learner", ["a"])


def test_conformance(name, mixed_data, tmp_path):
    data = _data_for(name, mixed_data)
    train, val, test = data.split([0.6, 0.2, 0.2], seed=0)
    tasks = data.tasks
    learner = create(name, tasks, **_kwargs(name))

    # constructor stores arguments only
    params = learner.get_params()
    assert params["seed"] == 0 and params["tasks"] is tasks
    assert not [a for a in vars(learner) if a.endswith("_") and not a.startswith("_")]
    assert learner.clone().get_params().keys() == params.keys()
    assert name in repr(type(learner)).lower() or repr(learner)
    with pytest.raises(NotFittedError):
        learner.predict(test.x)

    # fit returns self, learned state present
    assert learner.fit(train, val=val) is learner
    assert isinstance(learner.history_, list) and 1 <= len(learner.history_) <= 3
    g = learner.task_graph_
    assert isinstance(g, TaskGraph) and g.names == tasks.names
    assert isinstance(g.learned, bool)
    assert np.isfinite(g.adjacency).all()

    # predictions
    pred = learner.predict(test.x)
    assert pred.shape == (len(test), len(tasks))
    proba = learner.predict_proba(test.x)
    assert proba.shape[:2] == (len(test), len(tasks))
    for k, task in enumerate(tasks):
        if task.is_classification:
            torch.testing.assert_close(proba[:, k].sum(-1), torch.ones(len(test)))
            assert set(pred[:, k].unique().tolist()) <= set(range(task.n_classes))
            assert torch.equal(pred[:, k], proba[:, k].argmax(-1).float())
    assert torch.equal(learner.predict(test.x, inference="independent"), pred)
    metrics = learner.evaluate(test)
    assert "mean" in metrics and np.isfinite(metrics["mean"])
    for task in tasks:
        assert any(k.startswith(task.name + "/") for k in metrics)

    # bad inputs
    with pytest.raises(ValidationError, match="x"):
        learner.predict(np.zeros((3, test.n_features + 1)))
    with pytest.raises(ValidationError, match="inference"):
        learner.predict(test.x, inference=42)
    renamed = tg.TaskSet([tg.Task("z" + t.name, t.kind, t.n_classes) for t in tasks])
    other = tg.MultiTaskData(test.x, test.y, renamed)
    with pytest.raises(ValidationError, match="differ"):
        learner.evaluate(other)

    # save / load round trip
    path = learner.save(tmp_path / "model.pt")
    again = load_learner(path)
    assert type(again) is type(learner)
    assert torch.equal(again.predict(test.x), pred)
    torch.testing.assert_close(again.predict_proba(test.x), proba)
    assert np.array_equal(again.task_graph_.adjacency, g.adjacency)
    assert type(learner).load(path, tasks=tasks).get_params()["seed"] == 0
    with pytest.raises(CheckpointError, match="tasks"):
        load_learner(path, tasks=renamed)

    # same seed, same result
    twin = create(name, tasks, **_kwargs(name)).fit(train, val=val)
    assert torch.equal(twin.predict(test.x), pred)


def test_load_rejects_garbage(tmp_path):
    p = tmp_path / "bad.pt"
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_learner(p)
    with pytest.raises(CheckpointError, match="no such file"):
        load_learner(tmp_path / "missing.pt")


def test_truncated_checkpoint_refused(mixed_data, tmp_path):
    learner = create("hard_sharing", mixed_data.tasks, **FAST).fit(mixed_data)
    path = learner.save(tmp_path / "m.pt")
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError):
        load_learner(path)
