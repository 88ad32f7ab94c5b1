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
    assert repr(learner).startswith(type(learner).__name__ + "(")
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


def _nondefault(name, tasks, n_features):
    """Non-default constructor arguments of every kind the learner accepts: a module, a task
    graph, an edge_index tensor, a numpy array, bools, ints, floats, strings, None."""
    from encoders import MLPBackbone

    t = len(tasks)
    chain = TaskGraph(np.eye(t, k=1), tasks.names)                      # t0 -> t1 -> t2
    edges = np.array([[0, 1], [1, 2]])[:, : t - 1]
    kw = dict(encoder=MLPBackbone(n_features, hidden=12, n_layers=1), weight_decay=1e-4,
              lr=2e-3, patience=2)
    per = {
        "mmoe": dict(n_experts=3, expert_dim=8),
        "mtcrl": dict(n_modules=3, graph=chain, rebalance=True, decorrelation_units=None,
                      unbiased_invariance=True, renormalize=False, gate_init=0.3),
        "gcnet": dict(graph=chain, candidates=chain, ice_kind="ranking", n_negatives=2,
                      structure_every=2, refine_orientation=False, sem_unary="encoder",
                      threshold=0.2),
        "sgnn": dict(candidates=torch.as_tensor(edges), k_candidates=2, node_dim=8),
        "sgnn_ebm": dict(candidates=edges, graph=chain, inference_mode="mean_field"),
        "causal_graph": dict(graph=chain, gmtl="graph", alpha=0.5, n_modules=3,
                             rebalance=False, decorrelation_units=None, mp_graph="prior"),
    }
    return {**kw, **per.get(name, {})}


def _same_param(a, b):
    if isinstance(a, TaskGraph):
        return isinstance(b, TaskGraph) and a.allclose(b) and a.names == b.names
    if isinstance(a, torch.nn.Module):
        return type(a) is type(b) and a.config() == b.config()
    if isinstance(a, (np.ndarray, torch.Tensor)):
        return type(a) is type(b) and np.array_equal(np.asarray(a), np.asarray(b))
    return type(a) is type(b) and a == b


def test_every_parameter_kind_survives_save_and_load(name, mixed_data, tmp_path):
    data = _data_for(name, mixed_data)
    train, val = data.split([0.75, 0.25], seed=0)
    kw = {**_kwargs(name), **_nondefault(name, data.tasks, data.n_features)}
    learner = create(name, data.tasks, **kw).fit(train, val=val, epochs=2)
    path = learner.save(tmp_path / "m.pt")
    again = load_learner(path)
    saved, loaded = learner.get_params(), again.get_params()
    assert saved.keys() == loaded.keys()
    for key in saved:
        if key != "tasks":
            assert _same_param(saved[key], loaded[key]), key
    assert torch.equal(again.predict(val.x), learner.predict(val.x))
    assert np.array_equal(again.task_graph_.adjacency, learner.task_graph_.adjacency)


def test_unsavable_parameter_is_refused_before_writing(mixed_data, tmp_path):
    learner = create("hard_sharing", mixed_data.tasks, **FAST).fit(mixed_data, epochs=1)
    learner.seed = object()      # set after fit: nothing validates it until save
    with pytest.raises(ValidationError, match="seed"):
        learner.save(tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_scikit_learn_clone_and_set_params(name, mixed_data):
    """scikit-learn's own ``clone`` and a ``set_params`` round trip, with non-default values of
    every kind: the constructor stores its arguments unchanged, ``get_params`` returns them."""
    from sklearn.base import clone

    data = _data_for(name, mixed_data)
    kw = {**_kwargs(name), **_nondefault(name, data.tasks, data.n_features)}
    learner = create(name, data.tasks, **kw)
    params = learner.get_params()
    assert learner.get_params(deep=True).keys() == params.keys()
    for key, value in kw.items():
        assert params[key] is value, key
    twin = clone(learner)
    assert type(twin) is type(learner) and twin is not learner
    for key, value in params.items():
        assert _same_param(value, twin.get_params()[key]), key
    # set_params: every parameter of a default learner set to the non-default values
    fresh = create(name, data.tasks)
    assert fresh.set_params(**params) is fresh
    for key, value in params.items():
        assert fresh.get_params()[key] is value, key
    with pytest.raises(ValidationError, match="no_such"):
        fresh.set_params(no_such=1)
    # a clone fits and predicts like the original
    train, val = data.split([0.75, 0.25], seed=0)
    a = learner.fit(train, epochs=1).predict(val.x)
    b = clone(learner).fit(train, epochs=1).predict(val.x)
    assert torch.equal(a, b)


def test_one_registry_type_for_learners_benchmarks_and_encoders():
    from encoders import ENCODERS, MLPBackbone, build_encoder
    from taskgraph.datasets.registry import BENCHMARKS
    from taskgraph.learners.base import LEARNERS
    from taskgraph.registry import Registry

    assert all(isinstance(r, Registry) for r in (LEARNERS, BENCHMARKS, ENCODERS))
    assert LEARNERS.list() == tg.learners.list()
    assert "planted_dag" in BENCHMARKS and "mlpbackbone" in ENCODERS
    enc = MLPBackbone(5, hidden=7, n_layers=1)
    assert type(build_encoder(enc.config())) is MLPBackbone
    with pytest.raises(ValidationError, match="unknown encoder"):
        ENCODERS.get("nope")
    reg: Registry[int] = Registry("thing")
    reg.register("A", 1)
    with pytest.raises(ValidationError, match="thing called 'a' is already"):
        reg.register("a", 2)
    assert reg.get("a") == 1 and reg.remove("A") == 1 and reg.list() == []


def test_files_with_renamed_switches_still_load(mixed_data, tmp_path):
    """GCNet's ``sem`` switch is now ``structure`` (one name per switch across learners): a
    file that records the old name loads with its value under the new one."""
    learner = create("gcnet", mixed_data.tasks, **FAST, structure=False, ebm=False)
    learner.fit(mixed_data)
    path = learner.save(tmp_path / "m.pt")
    state = torch.load(path, weights_only=True)
    state["params"]["sem"] = state["params"].pop("structure")
    torch.save(state, path)
    again = load_learner(path)
    assert again.structure is False and "sem" not in again.get_params()
    assert torch.equal(again.predict(mixed_data.x), learner.predict(mixed_data.x))


def test_files_saved_before_the_structure_component_load(mixed_data, tmp_path):
    """Files written before CausalStructure kept its parameters on the network directly
    (sem.*, sem_heads.*, ebm_heads.*, pair.*, log_norm.*): they load, same predictions."""
    learner = create("gcnet", mixed_data.tasks, **FAST).fit(mixed_data)
    path = learner.save(tmp_path / "m.pt")
    state = torch.load(path, weights_only=True)
    state["model"] = {k.replace("structure.", "", 1): v for k, v in state["model"].items()}
    torch.save(state, path)
    for mode in ("heads", "sem", "mean_field"):
        again = load_learner(path)
        again.inference_ = learner.inference_ = mode
        torch.testing.assert_close(again.predict_proba(mixed_data.x),
                                   learner.predict_proba(mixed_data.x))


def test_sgnn_ebm_keeps_its_heuristic_edges_through_save_and_load(mixed_data, tmp_path):
    data = _data_for("sgnn_ebm", mixed_data)
    learner = create("sgnn_ebm", data.tasks, **FAST, inference_mode="mean_field").fit(data)
    again = load_learner(learner.save(tmp_path / "m.pt"))
    assert again.model_.structure.feat_edges.shape == learner.model_.structure.feat_edges.shape
    torch.testing.assert_close(again.predict_proba(data.x), learner.predict_proba(data.x))


def test_a_torch_device_parameter_is_saved_as_its_name(mixed_data, tmp_path):
    learner = create("hard_sharing", mixed_data.tasks, **{**FAST, "device": torch.device("cpu")})
    learner.fit(mixed_data, epochs=1)
    assert load_learner(learner.save(tmp_path / "m.pt")).device == "cpu"


def test_small_environments_fall_back_to_an_unstratified_validation_split():
    g = np.random.default_rng(0)
    x = g.normal(size=(40, 3)).astype(np.float32)
    y = (x[:, :2] > 0).astype(float)
    data = tg.MultiTaskData(x, y, ["a", "b"], env=np.repeat(np.arange(10), 4))
    learner = create("gcnet", data.tasks, **FAST).fit(data)     # validation_fraction 0.1
    assert all("val_loss" in row for row in learner.history_)
