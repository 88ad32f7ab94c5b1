"""TaskModuleRouter: gates, gated read-out, sparsity, pruning and PyG export (M2)."""

import numpy as np
import pytest
import torch

from taskgraph import TaskGraph, ValidationError
from taskgraph.nn import TaskModuleRouter
from taskgraph.nn.routing import GATE_KINDS

T, K, M = 3, 4, 5


@pytest.mark.parametrize("gate", GATE_KINDS)
def test_gates_in_unit_interval(gate):
    torch.manual_seed(0)
    r = TaskModuleRouter(T, K, M, gate=gate)
    with torch.no_grad():
        r.logits.normal_(0, 3)
    for training in (True, False):
        r.train(training)
        g = r.gates()
        assert g.shape == (T, K)
        assert bool(((g >= 0) & (g <= 1)).all())
    if gate == "softmax":
        torch.testing.assert_close(r.gates().sum(-1), torch.ones(T))
    if gate == "gumbel":
        assert set(r.eval().gates().unique().tolist()) <= {0.0, 1.0}
    if gate == "hard_concrete":  # exact zeros and ones are reachable
        with torch.no_grad():
            r.logits.copy_(torch.tensor([-20.0, 20.0, 0.0, 0.0]).expand(T, K))
        g = r.eval().gates()
        assert torch.all(g[:, 0] == 0) and torch.all(g[:, 1] == 1)


@pytest.mark.parametrize("readout", ["concat", "sum"])
def test_readout_shapes_and_per_example_gates(readout):
    r = TaskModuleRouter(T, K, M, readout=readout)
    z = torch.randn(6, K, M)
    s = r(z)
    assert s.shape == (6, T, K * M if readout == "concat" else M) and r.out_dim == s.shape[-1]
    per_example = r.gates().expand(6, T, K)
    torch.testing.assert_close(r(z, per_example), s)
    if readout == "concat":
        g = r.gates()
        torch.testing.assert_close(s.reshape(6, T, K, M), g[None, :, :, None] * z[:, None])
    with pytest.raises(ValidationError, match="z"):
        r(torch.randn(6, K + 1, M))
    with pytest.raises(ValidationError, match="gates"):
        r(z, torch.rand(T + 1, K))


def test_project_readout_is_a_linear_map_of_the_concat_readout():
    torch.manual_seed(0)
    r = TaskModuleRouter(T, K, M, readout="project", proj_dim=5)
    cat = TaskModuleRouter(T, K, M, readout="concat")
    g = torch.rand(T, K)
    r.set_gates(g)
    cat.set_gates(g)
    with torch.no_grad():
        r.proj_bias.normal_()
    z = torch.randn(6, K, M)
    s = r(z)
    assert s.shape == (6, T, 5) and r.out_dim == 5
    ref = cat(z) @ r.proj.reshape(K * M, 5) + r.proj_bias       # P [g_1 z_1 || ... ] + c_t
    torch.testing.assert_close(s, ref)
    torch.testing.assert_close(r(z, g.expand(6, T, K)), s)     # per-example gates alike
    with pytest.raises(ValidationError, match="proj_dim"):
        TaskModuleRouter(T, K, M, readout="project", proj_dim=0)


@pytest.mark.parametrize("readout", ["concat", "sum", "project"])
def test_zero_gate_cuts_module_gradient(readout):
    torch.manual_seed(0)
    r = TaskModuleRouter(T, K, M, readout=readout)
    g = torch.rand(T, K) * 0.8 + 0.1
    g[1, 2] = 0.0
    r.set_gates(g)
    z = torch.randn(8, K, M, requires_grad=True)
    head = torch.randn(r.out_dim)
    out = r(z) @ head  # [B, T]
    (dz,) = torch.autograd.grad(out[:, 1].sum(), z, retain_graph=True)
    assert torch.count_nonzero(dz[:, 2]) == 0  # the cut module gets nothing from task 1
    assert torch.count_nonzero(dz[:, 0]) > 0
    (dz0,) = torch.autograd.grad(out[:, 0].sum(), z, retain_graph=True)
    assert torch.count_nonzero(dz0[:, 2]) > 0  # other tasks still read it
    (dl,) = torch.autograd.grad(out.sum(), r.logits)
    assert dl[1, 2] == 0 and dl[1, 0] != 0
    # changing the cut module does not change task 1's state
    z2 = z.detach().clone()
    z2[:, 2] += 10.0
    torch.testing.assert_close(r(z2)[:, 1], r(z.detach())[:, 1])


def test_l1_and_entropy_sparsity_gradients():
    r = TaskModuleRouter(T, K, M, init=0.6)
    before = r.gates().detach()
    r.sparsity("l1").backward()
    with torch.no_grad():
        r.logits -= 1.0 * r.logits.grad
    assert bool((r.gates() < before).all())
    r2 = TaskModuleRouter(T, K, M)
    with torch.no_grad():
        r2.logits.copy_(torch.tensor([-0.5, 0.5, -1.0, 1.0]).expand(T, K))
    b2 = r2.gates().detach()
    r2.sparsity("entropy").backward()
    with torch.no_grad():
        r2.logits -= 0.5 * r2.logits.grad
    assert bool(((r2.gates() - 0.5).abs() > (b2 - 0.5).abs()).all())  # pushed to 0 or 1
    assert r2.sparsity("none") == 0
    with pytest.raises(ValidationError, match="kind"):
        r2.sparsity("l2")


def test_hard_concrete_l1_is_expected_l0():
    r = TaskModuleRouter(T, K, M, gate="hard_concrete")
    torch.manual_seed(0)
    draws = torch.stack([r.train().gates() for _ in range(4000)])
    torch.testing.assert_close((draws > 0).float().mean(0), r.expected_gates().detach(),
                               atol=0.03, rtol=0)


def test_pruning_at_inference_and_for_good():
    r = TaskModuleRouter(T, K, M, prune_threshold=0.3)
    g = torch.tensor([[0.2, 0.5, 0.9, 0.31]] * T)
    r.set_gates(g)
    r.train()
    torch.testing.assert_close(r.gates(), g)  # training keeps small gates
    r.eval()
    assert torch.equal(r.gates()[:, 0], torch.zeros(T))
    torch.testing.assert_close(r.gates()[:, 1:], g[:, 1:])
    torch.testing.assert_close(r.routing(), r.eval().gates())
    mask = r.prune(0.6)
    assert mask[0].tolist() == [0.0, 0.0, 1.0, 0.0]
    r.train()
    assert r.gates()[:, [0, 1, 3]].abs().sum() == 0


@pytest.mark.parametrize("gate", ["sigmoid", "hard_concrete"])
def test_pyg_bipartite_round_trip(gate):
    torch.manual_seed(1)
    r = TaskModuleRouter(T, K, M, gate=gate)
    g = torch.rand(T, K).clamp(0.05, 0.95)
    g[0, 1] = 0.0
    r.set_gates(g)
    ei, ew = r.edge_index()
    assert ei.shape[0] == 2 and ew.shape == (ei.shape[1],)
    assert ei.shape[1] == T * K - 1
    back = TaskModuleRouter.from_edge_index(ei, ew, T, K, M, gate=gate)
    torch.testing.assert_close(back.routing(), r.routing(), atol=1e-5, rtol=0)
    # the same edges as the TaskGraph export of the routing
    graph = TaskGraph(np.zeros((T, T)), ["a", "b", "c"], routing=r.routing().double().numpy())
    gi, gw = graph.routing_edge_index()
    assert torch.equal(gi, ei)
    torch.testing.assert_close(gw, ew)
    with pytest.raises(ValidationError, match="edge_index"):
        TaskModuleRouter.from_edge_index(torch.tensor([[K], [0]]), torch.ones(1), T, K, M)
    with pytest.raises(ValidationError, match="edge_weight"):
        TaskModuleRouter.from_edge_index(ei, ew[:-1], T, K, M)


def test_constructor_validation():
    for kwargs, arg in [(dict(gate="relu"), "gate"), (dict(readout="max"), "readout"),
                        (dict(init=1.0), "init"), (dict(temperature=0), "temperature"),
                        (dict(prune_threshold=2.0), "prune_threshold")]:
        with pytest.raises(ValidationError, match=arg):
            TaskModuleRouter(T, K, M, **kwargs)
    with pytest.raises(ValidationError, match="n_tasks"):
        TaskModuleRouter(0, K, M)
    with pytest.raises(ValidationError, match="gates"):
        TaskModuleRouter(T, K, M).set_gates(torch.full((T, K), 1.5))
