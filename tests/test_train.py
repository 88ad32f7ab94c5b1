import numpy as np
import pytest
import torch

from taskgraph import MultiTaskData, ValidationError
from taskgraph.exceptions import CheckpointError
from taskgraph.learners import create


def _weights(learner):
    return {k: v.clone() for k, v in learner.model_.state_dict().items()}


@pytest.mark.parametrize("name", ["hard_sharing", "mmoe"])
def test_resume_equals_uninterrupted(name, mixed_data, tmp_path):
    train, val = mixed_data.split([0.75, 0.25], seed=0)
    kw = dict(hidden=16, batch_size=32, seed=3, verbose=False)
    full = create(name, train.tasks, **kw).fit(train, val=val, epochs=5,
                                                 checkpoint=tmp_path / "a.ckpt")
    create(name, train.tasks, **kw).fit(train, val=val, epochs=2, checkpoint=tmp_path / "b.ckpt")
    resumed = create(name, train.tasks, **kw).fit(
        train, val=val, epochs=5, checkpoint=tmp_path / "b.ckpt", resume=True)
    wa, wb = _weights(full), _weights(resumed)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert [h["val_loss"] for h in full.history_] == [h["val_loss"] for h in resumed.history_]


def test_resume_refuses_other_tasks(mixed_data, tmp_path):
    create("hard_sharing", mixed_data.tasks, hidden=8, verbose=False).fit(
        mixed_data, epochs=1, checkpoint=tmp_path / "c.ckpt")
    other = mixed_data.select_tasks(["bin", "multi"])
    with pytest.raises(CheckpointError, match="different task set"):
        create("hard_sharing", other.tasks, hidden=8, verbose=False).fit(
            other, epochs=2, checkpoint=tmp_path / "c.ckpt", resume=True)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        create("hard_sharing", other.tasks, verbose=False).fit(
            other, epochs=1, resume=tmp_path / "nothing.ckpt")


def test_validation_selection_and_early_stopping():
    g = np.random.default_rng(0)
    x = g.normal(size=(200, 4)).astype(np.float32)
    y = (x[:, :1] > 0).astype(float)
    train = MultiTaskData(x[:100], y[:100], ["a"])
    # validation labels are pure noise: the validation loss soon rises, so training stops early
    val = MultiTaskData(x[100:], g.integers(0, 2, (100, 1)).astype(float), ["a"])
    learner = create("hard_sharing", ["a"], hidden=64, lr=3e-2, patience=3, seed=0,
                     verbose=False).fit(train, val=val, epochs=200)
    hist = learner.history_
    assert len(hist) < 200
    best = int(np.argmin([h["val_loss"] for h in hist]))
    assert learner.best_epoch_ == best
    assert len(hist) == best + 1 + 3


def test_bad_fit_arguments(mixed_data):
    learner = create("hard_sharing", mixed_data.tasks, verbose=False)
    with pytest.raises(ValidationError, match="train"):
        learner.fit(mixed_data.x)
    with pytest.raises(ValidationError, match="epochs"):
        learner.fit(mixed_data, epochs=-1)
    with pytest.raises(ValidationError, match="patience"):
        create("hard_sharing", mixed_data.tasks, patience=0, verbose=False).fit(mixed_data)


def test_make_adam_fused_on_cpu_and_same_update_as_foreach():
    from taskgraph.train import make_adam

    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5, 3))
    b = torch.nn.Parameter(a.detach().clone())
    opt_f = make_adam([{"params": [a]}], lr=1e-2, weight_decay=1e-3)
    opt_r = torch.optim.Adam([b], lr=1e-2, weight_decay=1e-3, foreach=True)
    assert opt_f.defaults["fused"] is True
    for _ in range(5):
        g = torch.randn(5, 3)
        a.grad, b.grad = g.clone(), g.clone()
        opt_f.step()
        opt_r.step()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_make_adam_falls_back_to_foreach_off_cpu_and_cuda():
    from taskgraph.train import make_adam

    p = torch.nn.Parameter(torch.empty(3, device="meta"))
    opt = make_adam([p], lr=1e-3)
    assert opt.defaults["foreach"] is True and not opt.defaults["fused"]


def test_make_adam_falls_back_when_fused_is_unsupported(monkeypatch):
    """torch < 2.4 refuses fused Adam on CPU: the foreach path is used, groups untouched."""
    from taskgraph.train import make_adam

    real = torch.optim.Adam

    def adam(params, **kw):
        if kw.get("fused"):
            for g in params:
                g.setdefault("fused", True)     # as Adam writes options before refusing
            raise RuntimeError("fused=True requires CUDA")
        return real(params, **kw)

    monkeypatch.setattr(torch.optim, "Adam", adam)
    group = {"params": [torch.nn.Parameter(torch.zeros(2))]}
    opt = make_adam([group], lr=1e-3)
    assert opt.defaults["foreach"] is True and not opt.param_groups[0]["fused"]


def test_validation_fraction_holds_out_rows_when_no_val_is_given(mixed_data):
    """fit(train) without val: the structure learners select on an internal split (as
    scikit-learn's validation_fraction), equal to passing that split as val; None keeps the
    last epoch on all rows; bad values are refused."""
    kw = dict(epochs=3, batch_size=64, hidden=16, seed=0, verbose=False)
    internal = create("gcnet", mixed_data.tasks, **kw)
    assert internal.validation_fraction == 0.1
    internal.fit(mixed_data)
    assert all("val_loss" in row for row in internal.history_)
    fit_part, val_part = mixed_data.split([0.9, 0.1], seed=0, stratify_env=True)
    explicit = create("gcnet", mixed_data.tasks, **kw).fit(fit_part, val=val_part)
    assert torch.equal(internal.predict(mixed_data.x), explicit.predict(mixed_data.x))
    plain = create("gcnet", mixed_data.tasks, validation_fraction=None, **kw).fit(mixed_data)
    assert plain.best_epoch_ == -1 and "val_loss" not in plain.history_[-1]
    assert create("hard_sharing", mixed_data.tasks).validation_fraction is None
    for bad in (0.0, 1.0, -0.1, True, "0.1"):
        with pytest.raises(ValidationError, match="validation_fraction"):
            create("hard_sharing", mixed_data.tasks, validation_fraction=bad, **kw).fit(
                mixed_data)


def test_environment_tables_are_used_only_for_batches_of_the_training_data(mixed_data):
    """mtcrl looks environments up by row position in tables built from the training data; a
    batch of another data set (same positions, other rows) is recomputed, not looked up."""
    learner = create("mtcrl", mixed_data.tasks, epochs=0, verbose=False, warmup_steps=0)
    part = mixed_data.subset(torch.arange(0, 120))
    learner.fit(part)
    other = mixed_data.subset(torch.arange(120, 240))
    same_rows = part[torch.arange(0, 32)]
    other_rows = other[torch.arange(0, 32)]
    assert same_rows.source == part.uid != other_rows.source
    env_a, w_a = learner._inv.batch_envs(other_rows)
    env_b, w_b = learner._inv.batch_envs(other_rows._replace(source=-1))   # no table lookup
    assert torch.equal(env_a, env_b) and torch.equal(w_a, w_b)
    env_c, _ = learner._inv.batch_envs(same_rows._replace(source=-1))
    assert torch.equal(learner._inv.batch_envs(same_rows)[0], env_c)
