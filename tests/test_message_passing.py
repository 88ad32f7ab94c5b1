"""TaskMessagePassing: weighted message passing between task nodes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskgraph import Task, TaskSet
from taskgraph.nn.heads import TaskHeads
from taskgraph.nn.message_passing import TaskMessagePassing


def make_mp(d_in: int = 4, d_out: int = 3, seed: int = 0, dtype=torch.float64
            ) -> TaskMessagePassing:
    torch.manual_seed(seed)
    return TaskMessagePassing(d_in, d_out).to(dtype)


def loop_reference(mp: TaskMessagePassing, s: torch.Tensor, edge_index: torch.Tensor,
                   edge_weight: torch.Tensor | None) -> torch.Tensor:
    """out[..., j, :] = W_self s_j + b + sum over edges (i, j) of w_e W_msg s_i — one edge at
    a time, no PyG."""
    out = s @ mp.lin_self.weight.T + mp.lin_self.bias
    out = out.clone()
    for e in range(edge_index.shape[1]):
        i, j = int(edge_index[0, e]), int(edge_index[1, e])
        w = 1.0 if edge_weight is None else edge_weight[e]
        out[..., j, :] = out[..., j, :] + w * (s[..., i, :] @ mp.lin_msg.weight.T)
    return out


def random_graph(t: int, e: int, seed: int, dtype=torch.float64
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, t, (e,), generator=g)
    off = torch.randint(1, t, (e,), generator=g)
    dst = (src + off) % t                     # no self-loops
    w = torch.randn(e, generator=g, dtype=dtype)
    return torch.stack([src, dst]), w


# ---------------------------------------------------------------- independent heads


@pytest.mark.parametrize("shape", [(5, 4), (3, 5, 4)])
def test_no_edges_equals_self_transform(shape):
    mp = make_mp()
    s = torch.randn(*shape, dtype=torch.float64)
    empty = torch.zeros(2, 0, dtype=torch.long)
    torch.testing.assert_close(mp(s, empty), mp.lin_self(s))
    torch.testing.assert_close(mp(s, empty, torch.zeros(0, dtype=torch.float64)), mp.lin_self(s))
    assert torch.equal(mp.messages(s, empty), torch.zeros(*shape[:-1], 3, dtype=torch.float64))


@pytest.mark.parametrize("shape", [(5, 4), (3, 5, 4)])
def test_all_zero_weights_equal_self_transform(shape):
    mp = make_mp()
    s = torch.randn(*shape, dtype=torch.float64)
    ei, _ = random_graph(5, 12, 0)
    torch.testing.assert_close(mp(s, ei, torch.zeros(12, dtype=torch.float64)), mp.lin_self(s))


def _stack(mp: TaskMessagePassing, heads: TaskHeads, s0: torch.Tensor, ei: torch.Tensor,
           w: torch.Tensor) -> torch.Tensor:
    """GCNet's feature level: residual message passing, then per-task heads."""
    return heads(s0 + torch.relu(mp(s0, ei, w)))


def test_gcnet_stack_with_zero_adjacency_gives_independent_tasks():
    t, d = 4, 6
    tasks = TaskSet([Task("a", "binary"), Task("b", "multiclass", 3), Task("c", "regression"),
                     Task("d", "binary")])
    torch.manual_seed(0)
    mp = TaskMessagePassing(d, d).double()
    heads = TaskHeads(tasks, d).double()
    full = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(t), indexing="ij")).reshape(
        2, -1)
    ei = full[:, full[0] != full[1]]
    s0 = torch.randn(2, t, d, dtype=torch.float64)

    def jac(w: torch.Tensor) -> torch.Tensor:
        j = torch.autograd.functional.jacobian(lambda s: _stack(mp, heads, s, ei, w), s0)
        return j.abs().sum(dim=(0, 2, 3, 5))          # [T_out, T_in]

    dep = jac(torch.zeros(ei.shape[1], dtype=torch.float64))
    off = ~torch.eye(t, dtype=torch.bool)
    assert torch.all(dep[off] == 0), dep            # task k's output ignores every other task
    assert torch.all(dep.diagonal() > 0)
    # sanity: with non-zero weights the same stack does mix tasks
    dep = jac(torch.full((ei.shape[1],), 0.5, dtype=torch.float64))
    assert torch.all(dep[off] > 0)


# ---------------------------------------------------------------- equivariance


@pytest.mark.parametrize("seed", range(3))
def test_permutation_equivariance(seed):
    t = 6
    mp = make_mp(seed=seed)
    s = torch.randn(4, t, 4, dtype=torch.float64)
    ei, w = random_graph(t, 14, seed)
    perm = torch.randperm(t, generator=torch.Generator().manual_seed(seed))
    inv = torch.argsort(perm)                    # new index of old node i
    out = mp(s, ei, w)
    out_p = mp(s[:, perm], inv[ei], w)           # new node k is old node perm[k]
    torch.testing.assert_close(out_p, out[:, perm])
    # shuffling the edge list changes nothing either
    order = torch.randperm(ei.shape[1], generator=torch.Generator().manual_seed(seed + 1))
    torch.testing.assert_close(mp(s, ei[:, order], w[order]), out)


# ---------------------------------------------------------------- gradients


def test_zero_weight_edge_passes_no_gradient_to_its_source():
    mp = make_mp()
    s = torch.randn(3, 4, 4, dtype=torch.float64, requires_grad=True)
    ei = torch.tensor([[0, 2], [1, 1]])              # 0 -> 1 (weight 0), 2 -> 1 (weight 0.7)
    w = torch.tensor([0.0, 0.7], dtype=torch.float64, requires_grad=True)
    out = mp(s, ei, w)
    (gs, gw) = torch.autograd.grad(out[:, 1].pow(2).sum(), (s, w))
    assert torch.all(gs[:, 0] == 0)                  # the silent sender
    assert gs[:, 2].abs().sum() > 0                  # the live sender
    assert gs[:, 1].abs().sum() > 0                  # the receiver's own state
    assert torch.all(gs[:, 3] == 0)                  # unrelated node
    # the zero-weight edge's *weight* still gets gradient: the structure learner can open it
    assert gw[0].abs() > 0


def test_edge_weight_gradient_equals_finite_differences():
    mp = make_mp(seed=1)
    s = torch.randn(2, 5, 4, dtype=torch.float64)
    ei, w = random_graph(5, 9, 1)
    target = torch.randn(2, 5, 3, dtype=torch.float64)

    def f(weights: torch.Tensor) -> torch.Tensor:
        return ((mp(s, ei, weights) - target) ** 2).sum()

    wg = w.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(wg), wg)
    eps = 1e-6
    with torch.no_grad():
        num = torch.stack([(f(w + eps * e) - f(w - eps * e)) / (2 * eps)
                           for e in torch.eye(9, dtype=torch.float64)])
    torch.testing.assert_close(grad, num, rtol=1e-6, atol=1e-8)
    assert torch.autograd.gradcheck(lambda x: mp(s, ei, x), (wg,))


def test_gradient_reaches_node_states_and_parameters():
    mp = make_mp(seed=2)
    s = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    ei, w = random_graph(5, 7, 2)
    assert torch.autograd.gradcheck(lambda x: mp(x, ei, w), (s,))
    mp(s, ei, w).sum().backward()
    assert mp.lin_msg.weight.grad is not None and mp.lin_msg.weight.grad.abs().sum() > 0
    assert mp.lin_self.weight.grad is not None


# ---------------------------------------------------------------- reference and shapes


@pytest.mark.parametrize("seed", range(3))
def test_equals_loop_reference(seed):
    mp = make_mp(seed=seed)
    s = torch.randn(3, 6, 4, dtype=torch.float64)
    ei, w = random_graph(6, 15, seed)
    torch.testing.assert_close(mp(s, ei, w), loop_reference(mp, s, ei, w))
    # default weights are all ones
    torch.testing.assert_close(mp(s, ei), loop_reference(mp, s, ei, None))


def test_parallel_edges_add_up():
    mp = make_mp()
    s = torch.randn(2, 3, 4, dtype=torch.float64)
    ei = torch.tensor([[0, 0, 1], [2, 2, 2]])
    w = torch.tensor([0.3, 0.4, -1.0], dtype=torch.float64)
    single = mp(s, torch.tensor([[0, 1], [2, 2]]), torch.tensor([0.7, -1.0], dtype=torch.float64))
    torch.testing.assert_close(mp(s, ei, w), single)
    torch.testing.assert_close(mp(s, ei, w), loop_reference(mp, s, ei, w))


def test_unbatched_equals_batch_of_one_and_batches_are_independent():
    mp = make_mp()
    s = torch.randn(4, 5, 4, dtype=torch.float64)
    ei, w = random_graph(5, 8, 3)
    out = mp(s, ei, w)
    assert out.shape == (4, 5, 3)
    for b in range(4):
        single = mp(s[b], ei, w)
        assert single.shape == (5, 3)
        torch.testing.assert_close(single, out[b])


def test_float32_and_repr():
    mp = TaskMessagePassing(4, 2)
    s = torch.randn(3, 5, 4)
    ei, w = random_graph(5, 6, 0, dtype=torch.float32)
    out = mp(s, ei, w)
    assert out.dtype == torch.float32 and out.shape == (3, 5, 2)
    torch.testing.assert_close(out, loop_reference(mp, s, ei, w), rtol=1e-5, atol=1e-5)
    assert "TaskMessagePassing(4, 2" in repr(mp)


@st.composite
def _graphs(draw):
    t = draw(st.integers(1, 7))
    b = draw(st.integers(0, 3))                       # 0 = unbatched [T, d]
    n_edges = draw(st.integers(0, 3 * t)) if t > 1 else 0
    pairs = [(i, j) for i in range(t) for j in range(t) if i != j]
    edges = draw(st.lists(st.sampled_from(pairs), min_size=n_edges, max_size=n_edges)) \
        if pairs else []
    weights = draw(st.lists(st.floats(-3, 3, allow_nan=False), min_size=len(edges),
                            max_size=len(edges)))
    seed = draw(st.integers(0, 2 ** 16))
    return t, b, edges, weights, seed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_graphs())
def test_property_matches_reference_on_random_graphs(case):
    t, b, edges, weights, seed = case
    mp = make_mp(d_in=3, d_out=2, seed=seed)
    g = torch.Generator().manual_seed(seed)
    shape = (t, 3) if b == 0 else (b, t, 3)
    s = torch.randn(*shape, generator=g, dtype=torch.float64)
    ei = torch.tensor(edges, dtype=torch.long).reshape(-1, 2).T.contiguous()
    w = torch.tensor(weights, dtype=torch.float64)
    out = mp(s, ei, w)
    assert out.shape == (*shape[:-1], 2)
    torch.testing.assert_close(out, loop_reference(mp, s, ei, w))
    # relabelling the tasks permutes the output the same way
    perm = torch.randperm(t, generator=g)
    inv = torch.argsort(perm)
    torch.testing.assert_close(mp(s[..., perm, :], inv[ei], w), out[..., perm, :])


# ---------------------------------------------------------------- PyG paths


def test_message_runs_on_the_reference_path_and_equals_the_rule():
    """A plain edge_index goes through message() and PyG's aggregation; an EdgeIndex through
    the fused message_and_aggregate; both equal the documented rule edge by edge."""
    mp = make_mp(4, 3)
    s = torch.randn(2, 6, 4, dtype=torch.float64)
    edge_index, w = random_graph(6, 14, seed=3)
    calls = {"message": 0, "fused": 0}
    msg, fused = mp.message, mp.message_and_aggregate

    def count(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapped

    mp.message = count("message", msg)
    mp.message_and_aggregate = count("fused", fused)
    ref = loop_reference(mp, s, edge_index, w)
    plain = mp.lin_self(s) + mp.messages(s, edge_index, w, fused=False)
    assert calls == {"message": 1, "fused": 0}
    torch.testing.assert_close(plain, ref)
    torch.testing.assert_close(mp(s, edge_index, w), ref)
    assert calls == {"message": 1, "fused": 1}


def test_residual_update_with_activation_and_separate_source():
    torch.manual_seed(0)
    mp = TaskMessagePassing(4, 4, residual=True, act=torch.relu).double()
    s = torch.randn(3, 5, 4, dtype=torch.float64)
    src = torch.randn(3, 5, 4, dtype=torch.float64)
    edge_index, w = random_graph(5, 9, seed=1)
    want = s + torch.relu(mp.lin_self(s) + loop_reference(mp, src, edge_index, w)
                          - mp.lin_self(src))
    torch.testing.assert_close(mp(s, edge_index, w, source=src), want)
    with pytest.raises(ValueError, match="residual"):
        TaskMessagePassing(4, 3, residual=True)
