"""edge_aggregate: the sparse and dense paths against a dense reference, values and gradients."""

from __future__ import annotations

import pytest
import torch

from taskgraph.nn.aggregate import DENSE_PAIRS, edge_aggregate, use_dense


def _case(t: int, e: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pairs = torch.tensor([(i, j) for i in range(t) for j in range(t) if i != j])
    pick = torch.randperm(len(pairs), generator=g)[:e]
    edge_index = pairs[pick].T.contiguous()
    x = torch.randn(5, t, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(e, generator=g, dtype=torch.float64, requires_grad=True)
    return x, edge_index, w


def _reference(x: torch.Tensor, edge_index: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    t = x.shape[1]
    out = []
    for j in range(t):                       # o_j = Σ_{e: dst_e = j} w_e x_src(e), by loops
        acc = torch.zeros_like(x[:, 0])
        for k in range(edge_index.shape[1]):
            if int(edge_index[1, k]) == j:
                acc = acc + w[k] * x[:, int(edge_index[0, k])]
        out.append(acc)
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("t,e", [(4, 12), (7, 9), (6, 0)])
def test_both_paths_match_reference_values_and_gradients(dense: bool, t: int, e: int) -> None:
    x, edge_index, w = _case(t, e)
    out = edge_aggregate(x, edge_index, w, dense=dense)
    ref = _reference(x, edge_index, w)
    assert torch.allclose(out, ref, atol=1e-12)
    if e == 0:
        return
    probe = torch.randn_like(ref)
    gx, gw = torch.autograd.grad((out * probe).sum(), (x, w))
    rx, rw = torch.autograd.grad((ref * probe).sum(), (x, w))
    assert torch.allclose(gx, rx, atol=1e-12) and torch.allclose(gw, rw, atol=1e-12)


def test_duplicate_edges_add_up_on_both_paths() -> None:
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    edge_index = torch.tensor([[0, 0], [1, 1]])
    w = torch.tensor([0.5, 0.25], dtype=torch.float64)
    for dense in (False, True):
        out = edge_aggregate(x, edge_index, w, dense=dense)
        assert torch.allclose(out[:, 1], 0.75 * x[:, 0])
        assert torch.allclose(out[:, [0, 2]], torch.zeros(2, 2, 4, dtype=torch.float64))


def test_dense_path_is_chosen_for_small_or_dense_graphs_only() -> None:
    assert use_dense(10, 90) and use_dense(32, 0)
    big = int(DENSE_PAIRS ** 0.5) + 100
    assert use_dense(big, big * big // 4)
    assert not use_dense(1000, 7000)
