"""The mtcrl learner: behaviour on `confounded` (M4), routing recovery (M5), the routing in
`task_graph_`, message passing over a given graph, environments and resume."""

import warnings

import numpy as np
import pytest
import torch

import taskgraph as tg
from encoders import InputFeatures, ModularEncoder
from taskgraph import TaskGraph, ValidationError
from taskgraph.environments import mean_task_loss
from taskgraph.learners import MTCRL, create, load_learner
from taskgraph.regularizers import env_assignment, split_halves

# small version of the benchmark in docs/benchmarks.md (full batch, as the M4 prototype)
N_PER_ENV, EPOCHS = 1000, 300


def _fit(name, bench, seed=0, **kw):
    params = dict(hidden=32, batch_size=len(bench.train), epochs=EPOCHS, lr=3e-3, seed=seed,
                  verbose=False)
    params.update(kw)
    return create(name, bench.tasks, **params).fit(bench.train)


def _acc(learner, data):
    return learner.evaluate(data)["y1/accuracy"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: intra-op threads only add contention (30x slower on a loaded 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bench():
    return tg.datasets.confounded(n_per_env=N_PER_ENV, seed=0, n_test=1000)


@pytest.fixture(scope="module")
def fitted(bench):
    return _fit("mtcrl", bench)


@pytest.mark.slow
def test_invariance_beats_hard_sharing_out_of_distribution(bench, fitted):
    shared = _fit("hard_sharing", bench)
    gain = _acc(fitted, bench.test_ood) - _acc(shared, bench.test_ood)
    drop = _acc(shared, bench.test_iid) - _acc(fitted, bench.test_iid)
    assert gain >= 0.15, (gain, drop)
    assert drop <= 0.05, (gain, drop)
    assert fitted.evaluate(bench.test_ood)["y2/accuracy"] >= 0.95
    hist = fitted.history_
    assert hist[0]["lambda_inv"] == 1.0 and hist[-1]["lambda_inv"] == 5.0  # warm-up, then full


@pytest.mark.slow
def test_same_model_without_invariance_does_not_reach_the_gain(bench, fitted):
    ablation = _fit("mtcrl", bench, invariance=0.0, warmup_invariance=0.0)
    assert "invariance" not in ablation.history_[-1]
    assert _acc(fitted, bench.test_ood) - _acc(ablation, bench.test_ood) >= 0.15
    assert _acc(ablation, bench.test_ood) < 0.6


@pytest.mark.slow
def test_routing_recovery_with_one_module_per_input_block(bench):
    blocks = bench.info["blocks"]  # [causal z1 block, spurious z2 block]
    enc = ModularEncoder(InputFeatures(bench.n_features), mode="blocks", blocks=blocks,
                         module_dim=8, module_hidden=16)
    learner = _fit("mtcrl", bench, encoder=enc)
    y1 = bench.tasks.index("y1")
    gates = learner.routing_[y1]
    assert gates[1] < gates[0], gates  # spurious module below causal module
    assert _acc(learner, bench.test_ood) > 0.65


def test_task_graph_exports_the_routing(fitted, tmp_path):
    g = fitted.task_graph_
    assert g.learned and g.n_edges == 0 and g.modules == [f"module_{k}" for k in range(4)]
    np.testing.assert_allclose(g.routing, fitted.routing_)
    assert fitted.routing_.shape == (2, 4) and ((g.routing >= 0) & (g.routing <= 1)).all()
    ei, ew = g.routing_edge_index()
    ri, rw = fitted.model_.router.edge_index()
    assert torch.equal(ei, ri)
    torch.testing.assert_close(ew, rw.double().float())
    for suffix in ("graphml", "json"):
        back = TaskGraph.load(g.save(tmp_path / f"g.{suffix}"))
        np.testing.assert_array_equal(back.routing, g.routing)
        assert back.modules == g.modules
    nxg = g.to_networkx()
    kinds = {d["kind"] for _, _, d in nxg.edges(data=True)}
    assert kinds == {"routing"}
    assert {n for n, d in nxg.nodes(data=True) if d["kind"] == "module"} == set(g.modules)


def _graph_data(n=160, seed=0):
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, 5)).astype(np.float32)
    y = np.stack([(x[:, 0] > 0), (x[:, 0] + x[:, 1] > 0), (x[:, 2] > 0)], 1).astype(np.float32)
    tasks = tg.TaskSet(["a", "b", "c"])
    return tg.MultiTaskData(x, y, tasks, env=g.integers(0, 2, n)), tasks


def test_message_passing_over_a_given_graph(tmp_path):
    data, tasks = _graph_data()
    graph = TaskGraph([[0, 0.7, 0], [0, 0, 0], [0.2, 0, 0]], tasks, meta={"source": "given"})
    kw = dict(hidden=8, epochs=2, batch_size=64, verbose=False, warmup_steps=1, graph=graph)
    learner = create("mtcrl", tasks, **kw).fit(data)
    net = learner.model_
    assert net.mp is not None and net.edge_index.shape == (2, 2)
    g = learner.task_graph_
    np.testing.assert_array_equal(g.adjacency, graph.adjacency)
    assert g.routing.shape == (3, 4) and g.learned
    # the penalty pass computes the same outputs as the forward pass
    net.eval()
    z = net.encoder(data.x[:16])
    gates = net.router.gates()
    torch.testing.assert_close(net.penalty_out(z, gates.expand(16, -1, -1), gates),
                               net.head_out(z, gates))
    # task a's messages reach task b: cutting the edge a -> b changes b only
    assert net.edge_index[:, 0].tolist() == [0, 1]
    out = net.head_out(z, gates)
    w = net.edge_weight.clone()
    net.edge_weight[0] = 0.0
    cut = net.head_out(z, gates)
    net.edge_weight.copy_(w)
    assert not torch.allclose(out[:, 1], cut[:, 1])
    assert torch.equal(out[:, [0, 2]], cut[:, [0, 2]])
    # saved with the graph, loaded with weights_only
    again = load_learner(learner.save(tmp_path / "m.pt"))
    assert isinstance(again.graph, TaskGraph) and again.graph == graph
    assert torch.equal(again.predict(data.x), learner.predict(data.x))
    with pytest.raises(ValidationError, match="graph"):
        create("mtcrl", tasks, graph=TaskGraph.empty(["a", "c", "b"]), epochs=1,
               verbose=False).fit(data)


def test_penalty_is_exact_per_task_under_message_passing():
    """With message passing, task t's dummy must reach only task t's risk."""
    data, tasks = _graph_data()
    graph = TaskGraph([[0, 1.0, 0], [0, 0, 0.5], [0, 0, 0]], tasks)
    learner = create("mtcrl", tasks, hidden=8, graph=graph, verbose=False, epochs=0)
    learner.fit(data)
    net, lay = learner.model_, learner.layout_
    z = net.encoder(data.x[:40]).detach()
    gates = net.router.gates().detach()
    w = torch.ones(3, 4, requires_grad=True)
    out = net.penalty_out(z, (gates * w).expand(40, -1, -1), gates)
    per = lay.per_example_loss(out, data.y[:40]).mean(0)
    for t in range(3):
        (gr,) = torch.autograd.grad(per[t], w, retain_graph=True)
        others = [i for i in range(3) if i != t]
        assert torch.count_nonzero(gr[others]) == 0 and torch.count_nonzero(gr[t]) > 0


def test_environment_modes_and_single_environment_warning():
    data, tasks = _graph_data()
    kw = dict(hidden=8, epochs=1, batch_size=80, verbose=False, warmup_steps=0)
    for mode, expect in [("auto", "both"), ("given", "given"), ("labels", "labels")]:
        learner = create("mtcrl", tasks, environments=mode, **kw).fit(data)
        assert learner.task_graph_.meta["environments"] == expect
        assert "invariance" in learner.history_[-1]
    no_env = tg.MultiTaskData(data.x, data.y, tasks)
    with pytest.warns(UserWarning, match="invariance penalty is disabled"):
        learner = create("mtcrl", tasks, environments="given", **kw).fit(no_env)
    assert "invariance" not in learner.history_[-1]
    one_task = data.select_tasks(["a"])
    one = tg.MultiTaskData(one_task.x, one_task.y, one_task.tasks, env=np.zeros(len(data)))
    with pytest.warns(UserWarning, match="invariance penalty is disabled"):
        create("mtcrl", one.tasks, **kw).fit(one)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # invariance off: no warning
        create("mtcrl", one.tasks, invariance=0.0, warmup_invariance=0.0, **kw).fit(one)


def test_environments_below_min_env_rows_do_not_count_and_an_idle_penalty_warns():
    data, tasks = _graph_data()
    kw = dict(hidden=8, epochs=2, batch_size=80, verbose=False, warmup_steps=0,
              environments="given")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        acting = create("mtcrl", tasks, min_env_rows=4, **kw).fit(data)
    assert all(0 < h["invariance_envs"] <= 1 and h["invariance"] > 0 for h in acting.history_)
    assert all(h["invariance_batches"] == 1 for h in acting.history_)   # every batch acted
    with pytest.warns(UserWarning, match="min_env_rows"):
        idle = create("mtcrl", tasks, min_env_rows=1000, **kw).fit(data)
    assert all(h["invariance_envs"] == 0 and h["invariance"] == 0 for h in idle.history_)
    assert all(h["invariance_batches"] == 0 for h in idle.history_)
    with pytest.raises(ValidationError, match="min_env_rows"):
        create("mtcrl", tasks, min_env_rows=-1, **kw).fit(data)


@pytest.mark.parametrize("options", [
    dict(gate="hard_concrete", invariance_kind="grad_var"),
    dict(gate="gumbel", readout="sum", invariance_kind="vrex", module_mode="separate"),
    dict(gate="softmax", sparsity_kind="entropy", decorrelation_kind="hsic",
         penalty_through_encoder=False, prune_threshold=0.2),
])
def test_variants_train(mixed_data, options):
    learner = create("mtcrl", mixed_data.tasks, hidden=8, epochs=2, batch_size=64,
                     verbose=False, warmup_steps=1, **options).fit(mixed_data)
    assert np.isfinite(learner.history_[-1]["task_loss"])
    assert ((learner.routing_ >= 0) & (learner.routing_ <= 1)).all()


def test_resume_equals_uninterrupted(mixed_data, tmp_path):
    kw = dict(hidden=8, batch_size=64, seed=1, verbose=False, warmup_steps=5)
    full = create("mtcrl", mixed_data.tasks, **kw).fit(mixed_data, epochs=4,
                                                       checkpoint=tmp_path / "a.ckpt")
    create("mtcrl", mixed_data.tasks, **kw).fit(mixed_data, epochs=2,
                                                checkpoint=tmp_path / "b.ckpt")
    resumed = create("mtcrl", mixed_data.tasks, **kw).fit(
        mixed_data, epochs=4, checkpoint=tmp_path / "b.ckpt", resume=True)
    assert resumed._step == full._step == 16
    for k, v in full.model_.state_dict().items():
        assert torch.equal(v, resumed.model_.state_dict()[k]), k


def test_bad_parameters_name_the_argument(mixed_data):
    for kw, arg in [(dict(gate="tanh"), "gate"), (dict(environments="env"), "environments"),
                    (dict(invariance=-1.0), "invariance"), (dict(warmup_steps=1.5),
                                                            "warmup_steps"),
                    (dict(module_mode="blocks"), "module_mode"),
                    (dict(graph="a->b"), "graph"), (dict(n_modules=5), "n_modules")]:
        with pytest.raises(ValidationError, match=arg):
            create("mtcrl", mixed_data.tasks, epochs=1, hidden=8, verbose=False,
                   **kw).fit(mixed_data)
    assert MTCRL.name == "mtcrl" and "mtcrl" in tg.learners.list()


@pytest.mark.parametrize("options", [dict(), dict(readout="sum", invariance_kind="grad_var"),
                                     dict(invariance_intercept=False, environments="labels"),
                                     dict(unbiased_invariance=True)])
def test_closed_form_penalty_equals_dummy_penalty(mixed_data, options):
    """The default (no message passing) path computes the IRMv1 gradients in closed form; it
    must equal the generic dummy + double-backward path, in value and in parameter gradients."""
    learner = create("mtcrl", mixed_data.tasks, hidden=8, epochs=1, batch_size=64,
                     verbose=False, **options).fit(mixed_data)
    net = learner.model_
    batch = mixed_data[torch.arange(len(mixed_data))]
    env, weight = learner._inv.batch_envs(batch)
    member = env_assignment(env, int(learner._inv.envs["n_envs"]))
    assign = member * weight[..., None]
    if learner._inv.penalty.split:
        member, assign = split_halves(member, assign)
    inv, lay = learner._inv, learner.layout_
    valid = inv.penalty.valid(assign)
    intercept = bool(learner.invariance_intercept)
    results = []
    for closed in (True, False):
        net.zero_grad()
        z = net.encoder(batch.x)
        gates = net.router.gates()
        if closed:
            per, pen = inv.closed_form_pass(net, z, gates, batch.y, lay, assign, valid,
                                            intercept)
        else:
            per, pen = inv.dummy_pass(member, assign, valid, gates,
                                      lambda ex, z=z, gates=gates: net.penalty_out(z, ex, gates),
                                      net.heads.col_mask, batch.y, lay, intercept)
        task = mean_task_loss(per, batch.y)
        (task + 7.0 * pen).backward()
        results.append((task.detach(), pen.detach(),
                        {n: p.grad.clone() for n, p in net.named_parameters()}))
    (t1, p1, g1), (t2, p2, g2) = results
    assert float(p1) != 0 and (float(p1) > 0 or learner._inv.penalty.split)
    torch.testing.assert_close(t1, t2)
    torch.testing.assert_close(p1, p2, rtol=1e-4, atol=1e-8)
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-3, atol=1e-6, msg=name)


def test_an_idle_penalty_does_not_renormalise_the_loss():
    """With no environment above ``min_env_rows`` the penalty is 0 and the loss must equal the
    penalty-free loss (not divided by λ = 5)."""
    data, tasks = _graph_data()
    kw = dict(hidden=8, epochs=0, verbose=False, warmup_steps=0, seed=3, environments="given")
    idle = create("mtcrl", tasks, min_env_rows=1000, **kw).fit(data)
    off = create("mtcrl", tasks, invariance=0.0, warmup_invariance=0.0, **kw).fit(data)
    off.model_.load_state_dict(idle.model_.state_dict())
    batch = data[torch.arange(64)]
    shift = idle._inv.penalty.shift
    idle._inv.penalty.shift = None           # the idle penalty's dummy pass is skipped
    loss_idle, logs = idle._loss(batch, epoch=0)
    idle._inv.penalty.shift = shift
    loss_off, _ = off._loss(batch, epoch=0)
    assert logs["invariance"] == 0 and logs["invariance_envs"] == 0 and logs["lambda_inv"] == 5
    torch.testing.assert_close(loss_idle, loss_off)
    acting = create("mtcrl", tasks, min_env_rows=0, **kw).fit(data)
    acting.model_.load_state_dict(idle.model_.state_dict())
    loss_act, logs_act = acting._loss(batch, epoch=0)
    assert logs_act["invariance_envs"] > 0
    torch.testing.assert_close(loss_act, (loss_off + 5 * logs_act["invariance"]) / 5)


def test_invariance_memory_acts_from_the_second_batch_and_resumes_exactly(tmp_path):
    """With a memory the penalty needs earlier batches: in the first epoch of two batches it
    acts in the second only; the memory is part of the checkpoint (resume is exact)."""
    data, tasks = _graph_data()
    kw = dict(hidden=8, batch_size=80, verbose=False, warmup_steps=0, seed=2,
              environments="given", min_env_rows=4, invariance_memory=3)
    learner = create("mtcrl", tasks, epochs=2, **kw).fit(data)
    assert [h["invariance_batches"] for h in learner.history_] == [0.5, 1.0]
    assert learner.history_[1]["invariance"] > 0
    full = create("mtcrl", tasks, **kw).fit(data, epochs=4, checkpoint=tmp_path / "a.ckpt")
    create("mtcrl", tasks, **kw).fit(data, epochs=2, checkpoint=tmp_path / "b.ckpt")
    resumed = create("mtcrl", tasks, **kw).fit(data, epochs=4, checkpoint=tmp_path / "b.ckpt",
                                               resume=True)
    for k, v in full.model_.state_dict().items():
        assert torch.equal(v, resumed.model_.state_dict()[k]), k
    torch.testing.assert_close(full._inv.memory.sums, resumed._inv.memory.sums)
    for bad in (dict(invariance_memory=0.5), dict(invariance_memory=3, invariance_kind="vrex"),
                dict(invariance_memory=3, unbiased_invariance=True)):
        with pytest.raises(ValidationError, match="invariance_memory"):
            create("mtcrl", tasks, **{**kw, **bad}).fit(data, epochs=1)


def test_balanced_sampling_draws_rows_by_their_rebalancing_weights():
    from taskgraph.environments import RoutingInvariance
    from taskgraph.regularizers import balance_weights

    w = torch.tensor([[1.0, 1.0], [0.5, 0.5], [2.0, 0.0], [0.0, 0.0]])
    mean = torch.tensor([1.0, 0.5, 2.0, 1.0])     # over the tasks whose environment it is in
    torch.testing.assert_close(RoutingInvariance.draw_probabilities(w, 1.0), mean / 4.5)
    torch.testing.assert_close(RoutingInvariance.draw_probabilities(w, 0.5),
                               0.5 / 4 + 0.5 * mean / 4.5)
    data, tasks = _graph_data()
    kw = dict(hidden=8, epochs=2, batch_size=80, verbose=False, warmup_steps=0,
              environments="labels")
    plain = create("mtcrl", tasks, **kw).fit(data)
    assert plain._train_sampler(data, 0) is None
    seeds = []
    learner = create("mtcrl", tasks, balanced_sampling=1.0, **kw)
    hook = MTCRL._train_sampler
    learner._train_sampler = lambda train, seed: seeds.append(seed) or hook(learner, train, seed)
    learner.fit(data)
    assert len(seeds) == 2 and seeds[0] != seeds[1]              # one sampler per epoch
    inv = learner._inv
    env, a = balance_weights(inv.envs["table"], inv.codes(inv.envs, data.y, data.env), data.y)
    q = RoutingInvariance.draw_probabilities(a, 1.0)
    torch.testing.assert_close(inv.envs["draw"], q)
    torch.testing.assert_close(inv.envs["rows"][1], a / (len(data) * q)[:, None])
    sampler = learner._train_sampler(data, 7)
    assert sampler.num_samples == len(data) and sampler.replacement
    torch.testing.assert_close(sampler.weights, q.double())
    assert list(sampler) == list(learner._train_sampler(data, 7))  # seeded
    off = create("mtcrl", tasks, balanced_sampling=1.0, invariance=0.0, warmup_invariance=0.0,
                 **kw).fit(data)       # sampling without the penalty: the same draws
    torch.testing.assert_close(off._train_sampler(data, 7).weights, q.double())
    assert "invariance" not in off.history_[-1]
    assert off.task_graph_.meta["invariance"] == "off"
    with pytest.raises(ValidationError, match="balanced_sampling"):
        create("mtcrl", tasks, balanced_sampling=1.5, **kw).fit(data)


@pytest.mark.slow
def test_conditional_independence_penalty_beats_hard_sharing_out_of_distribution(bench):
    """invariance_kind='cind' (the environments independent of y1's outputs given y1) keeps
    y1 on its causal feature on `confounded`, as the default IRMv1 does."""
    cind = _fit("mtcrl", bench, invariance_kind="cind", invariance=500.0)
    off = _fit("mtcrl", bench, invariance=0.0, warmup_invariance=0.0)
    assert _acc(cind, bench.test_ood) - _acc(off, bench.test_ood) >= 0.15
    assert _acc(off, bench.test_iid) - _acc(cind, bench.test_iid) <= 0.06
    assert all(h["invariance_batches"] == 1 for h in cind.history_)


@pytest.mark.parametrize("kind", ["cind", "cind_state"])
def test_conditional_independence_kinds_act_in_every_batch_in_both_learners(kind):
    """The conditional kinds need no min_env_rows: with a batch of 40 over given x label
    environments (8 rows each) the penalty acts in every batch, for mtcrl (with and without
    message passing) and causal_graph, through the one RoutingInvariance."""
    data, tasks = _graph_data()
    graph = TaskGraph([[0, 0.7, 0], [0, 0, 0], [0.2, 0, 0]], tasks)
    kw = dict(hidden=8, epochs=2, batch_size=40, verbose=False, warmup_steps=0,
              invariance_kind=kind)
    for name, extra in [("mtcrl", {}), ("mtcrl", {"graph": graph}),
                        ("causal_graph", {"structure": False, "ebm": False, "gmtl": None})]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            learner = create(name, tasks, **kw, **extra).fit(data)
        assert learner._inv.conditional == kind
        assert all(h["invariance_batches"] == 1 and h["invariance"] > 0
                   for h in learner.history_), name
    with pytest.raises(ValidationError, match="invariance_memory"):
        create("mtcrl", tasks, invariance_memory=3, **kw).fit(data)
    with pytest.raises(ValidationError, match="invariance_kind"):
        create("causal_graph", tasks, **{**kw, "invariance_kind": "vrex"}).fit(data)


def test_conditional_penalty_of_the_learner_is_the_regulariser_on_its_outputs():
    """mtcrl's penalty in a batch = conditional_independence of the class probabilities
    (unstandardised) and the batch's environment membership (rows with weight 0 excluded),
    summed over tasks."""
    from taskgraph.regularizers import conditional_independence
    data, tasks = _graph_data()
    learner = create("mtcrl", tasks, hidden=8, epochs=1, batch_size=160, verbose=False,
                     warmup_steps=0, invariance_kind="cind", invariance=1.0)
    learner.fit(data)
    learner.model_.train()
    batch = next(iter(data.loader(160, shuffle=False)))
    _, logs = learner._loss(batch, 0)
    net = learner.model_
    out = net.head_out(net.encoder(batch.x), net.router.gates())
    env, weight = learner._inv.batch_envs(batch)
    member = env_assignment(torch.where(weight > 0, env, -1), int(learner._inv.envs["n_envs"]))
    lay = learner.layout_
    want = conditional_independence(lay.log_proba(out).exp(), batch.y, member, 2,
                                    lay.class_mask, standardize=False).sum()
    torch.testing.assert_close(logs["invariance"], want.detach())
