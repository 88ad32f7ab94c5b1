"""Acyclicity measures (dense expm/poly, sparse Hutchinson) and the augmented Lagrangian."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from taskgraph import ValidationError
from taskgraph.structure.acyclicity import AugmentedLagrangian, acyclicity, acyclicity_sparse

KINDS = ("expm", "poly")



def random_dag(t: int, seed: int, p: float = 0.5, scale: float = 2.0,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Weighted DAG ``[t, t]``: strictly upper-triangular in a random node order."""
    g = torch.Generator().manual_seed(seed)
    upper = torch.triu(torch.ones(t, t), diagonal=1).bool()
    keep = upper & (torch.rand(t, t, generator=g) < p)
    w = (torch.rand(t, t, generator=g, dtype=dtype) * 2 - 1) * scale
    a = torch.where(keep, w, torch.zeros_like(w))
    perm = torch.randperm(t, generator=g)
    return a[perm][:, perm]


def to_sparse(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    idx = a.nonzero().T.contiguous()
    return idx, a[idx[0], idx[1]]


def hutchinson_sd(m: torch.Tensor, n_probes: int) -> float:
    r"""Standard deviation of the Rademacher trace estimate of ``m`` with ``n_probes`` probes:
    :math:`\operatorname{Var}(z^\top M z) = \frac12 \sum_{i \ne j} (M_{ij} + M_{ji})^2`."""
    s = m + m.T
    s = s - torch.diag(torch.diag(s))
    return math.sqrt(0.5 * float((s * s).sum()) / n_probes)


# ---------------------------------------------------------------- dense


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(8))
def test_zero_on_random_dags(kind, seed):
    t = int(torch.randint(2, 13, (1,), generator=torch.Generator().manual_seed(100 + seed)))
    a = random_dag(t, seed)
    assert abs(float(acyclicity(a, kind))) <= 1e-6
    assert abs(float(acyclicity(a.float(), kind))) <= 1e-5
    # the all-zero graph and the empty graph on one node are DAGs too
    assert float(acyclicity(torch.zeros(t, t), kind)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cycle", [[0, 1], [0, 1, 2], [3, 1, 4, 2]])
def test_positive_with_a_cycle(kind, cycle):
    t = 6
    a = torch.zeros(t, t, dtype=torch.float64)
    for u, v in zip(cycle, cycle[1:] + cycle[:1]):
        a[u, v] = 0.8
    a[5, 0] = 1.0  # an extra acyclic edge feeding the cycle
    h = float(acyclicity(a, kind))
    assert h > 1e-3
    # the same graph with one cycle edge removed is a DAG again
    a[cycle[-1], cycle[0]] = 0.0
    assert abs(float(acyclicity(a, kind))) <= 1e-9


@pytest.mark.parametrize("kind", KINDS)
def test_expm_and_poly_share_the_zero_pattern(kind):
    # the two measures differ in value but agree on which graphs are acyclic, whatever the signs
    for seed in range(5):
        dag = random_dag(7, seed)
        cyc = dag.clone()
        i, j = dag.abs().nonzero()[0].tolist()
        cyc[j, i] = -0.5
        assert float(acyclicity(dag, "expm")) <= 1e-9 and float(acyclicity(dag, "poly")) <= 1e-9
        assert float(acyclicity(cyc, "expm")) > 1e-3 and float(acyclicity(cyc, "poly")) > 1e-3


def test_closed_forms():
    a = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.5
    sq = a * a
    expect = torch.trace(torch.linalg.matrix_exp(sq)) - 5
    assert float(acyclicity(a, "expm")) == pytest.approx(float(expect), rel=1e-12)
    poly = torch.trace(torch.linalg.matrix_power(torch.eye(5, dtype=a.dtype) + sq / 5, 5)) - 5
    assert float(acyclicity(a, "poly")) == pytest.approx(float(poly), rel=1e-12)
    # h is even in A: the sign of an edge does not matter
    assert float(acyclicity(-a, "expm")) == pytest.approx(float(expect), rel=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(3))
def test_gradient_equals_finite_differences(kind, seed):
    t = 5
    a = torch.randn(t, t, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    a = (a * 0.6).fill_diagonal_(0.0).requires_grad_(True)
    (grad,) = torch.autograd.grad(acyclicity(a, kind), a)
    eps = 1e-6
    num = torch.zeros_like(grad)
    with torch.no_grad():
        for i in range(t):
            for j in range(t):
                plus, minus = a.clone(), a.clone()
                plus[i, j] += eps
                minus[i, j] -= eps
                num[i, j] = (acyclicity(plus, kind) - acyclicity(minus, kind)) / (2 * eps)
    torch.testing.assert_close(grad, num, rtol=1e-6, atol=1e-8)
    assert torch.autograd.gradcheck(lambda x: acyclicity(x, kind), (a.detach().requires_grad_(),))


def test_expm_gradient_is_notears_closed_form():
    for seed in range(3):
        a = torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        a = (0.7 * a).requires_grad_(True)
        (grad,) = torch.autograd.grad(acyclicity(a, "expm"), a)
        closed = 2 * torch.linalg.matrix_exp(a.detach() * a.detach()).T * a.detach()
        torch.testing.assert_close(grad, closed, rtol=1e-10, atol=1e-12)


def test_gradient_vanishes_on_a_dag_only_at_zero_weights():
    # on a DAG, the gradient is zero exactly on the edges that exist (no cycle through them)...
    a = random_dag(6, 3).requires_grad_(True)
    (grad,) = torch.autograd.grad(acyclicity(a, "expm"), a)
    present = a.detach() != 0
    assert torch.all(grad[present].abs() <= 1e-12)
    # ...and at A = 0 the gradient is zero everywhere (why OutputSEM never starts at 0)
    z = torch.zeros(4, 4, dtype=torch.float64, requires_grad=True)
    (gz,) = torch.autograd.grad(acyclicity(z, "expm"), z)
    assert torch.equal(gz, torch.zeros_like(gz))


def test_dense_bad_arguments():
    with pytest.raises(ValidationError, match="square"):
        acyclicity(torch.zeros(3, 4))
    with pytest.raises(ValidationError, match="square"):
        acyclicity(torch.zeros(3))
    with pytest.raises(ValidationError, match="kind"):
        acyclicity(torch.zeros(3, 3), kind="logdet")
    with pytest.raises(ValueError):  # ValidationError is also a ValueError
        acyclicity(torch.zeros(2, 2), kind="x")


# ---------------------------------------------------------------- sparse


def test_sparse_is_zero_on_a_dag_within_probe_noise():
    # on a DAG every diagonal term of W^k vanishes: only the probes' off-diagonal noise remains,
    # whose standard deviation is known exactly; allow 5 sd
    n_probes = 4096
    for seed in range(3):
        a = random_dag(10, seed, scale=1.0)
        idx, w = to_sparse(a)
        est = float(acyclicity_sparse(idx, w, 10, n_probes=n_probes, n_terms=15,
                                      generator=torch.Generator().manual_seed(seed)))
        sq = a * a
        sd = hutchinson_sd(torch.linalg.matrix_exp(sq) - torch.eye(10, dtype=a.dtype), n_probes)
        assert abs(est) <= 5 * sd + 1e-12, (est, sd)
        assert sd < 0.05  # the tolerance is meaningful (weights <= 1, 4096 probes)


def test_sparse_without_edges_is_zero_and_differentiable():
    idx = torch.zeros(2, 0, dtype=torch.long)
    w = torch.zeros(0, requires_grad=True)
    h = acyclicity_sparse(idx, w, 4)
    assert float(h.detach()) == 0.0
    h.backward()  # differentiable even without edges
    assert w.grad is not None and w.grad.shape == (0,)


@pytest.mark.parametrize("seed", range(3))
def test_sparse_close_to_dense_with_cycles(seed):
    # 6 nodes, a 2-cycle and a 3-cycle plus chords; 4096 probes, 17 terms (the truncation error
    # is below 1e-10 for these weights); tolerance 5 probe standard deviations
    g = torch.Generator().manual_seed(seed)
    t, n_probes = 6, 4096
    a = torch.zeros(t, t, dtype=torch.float64)
    for u, v in [(0, 1), (1, 0), (2, 3), (3, 4), (4, 2), (1, 2), (5, 0), (3, 5)]:
        a[u, v] = 0.4 + 0.6 * float(torch.rand(1, generator=g))
    idx, w = to_sparse(a)
    dense = float(acyclicity(a, "expm"))
    est = float(acyclicity_sparse(idx, w, t, n_probes=n_probes, n_terms=17,
                                  generator=torch.Generator().manual_seed(10 + seed)))
    sd = hutchinson_sd(torch.linalg.matrix_exp(a * a) - torch.eye(t, dtype=a.dtype), n_probes)
    assert dense > 0.2
    assert abs(est - dense) <= 5 * sd, (est, dense, sd)
    assert abs(est - dense) <= 0.1 * dense


def test_sparse_truncation_loses_only_long_cycles():
    # a 4-cycle contributes first at the 4th series term
    t = 4
    idx = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
    w = torch.ones(4, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    short = acyclicity_sparse(idx, w, t, n_probes=2048, n_terms=3, generator=gen)
    long = acyclicity_sparse(idx, w, t, n_probes=2048, n_terms=12,
                             generator=torch.Generator().manual_seed(0))
    dense = float(acyclicity(torch.zeros(t, t, dtype=torch.float64).index_put(
        (idx[0], idx[1]), w), "expm"))
    a = torch.zeros(t, t, dtype=torch.float64).index_put((idx[0], idx[1]), w)
    partial = sum(torch.linalg.matrix_power(a, k) / math.factorial(k) for k in range(1, 4))
    full = torch.linalg.matrix_exp(a) - torch.eye(t, dtype=a.dtype)
    # no cycle of length <= 3: the truncated estimate is only probe noise around 0
    assert abs(float(short)) <= 5 * hutchinson_sd(partial, 2048)
    assert dense > 0.1
    assert abs(float(long) - dense) <= 5 * hutchinson_sd(full, 2048)


def test_sparse_grows_with_edges():
    t, n_probes = 8, 4096
    base = [(0, 1), (1, 0)]
    extra = [[], [(2, 3), (3, 4), (4, 2)], [(1, 2), (2, 0), (5, 6), (6, 5)],
             [(0, 3), (4, 0), (6, 7), (7, 6), (5, 7)]]
    edges, values, dense_values = list(base), [], []
    for add in extra:
        edges += add
        idx = torch.tensor(edges).T
        w = torch.full((len(edges),), 0.8, dtype=torch.float64)
        values.append(float(acyclicity_sparse(idx, w, t, n_probes=n_probes, n_terms=15,
                                              generator=torch.Generator().manual_seed(0))))
        dense_values.append(float(acyclicity(
            torch.zeros(t, t, dtype=torch.float64).index_put((idx[0], idx[1]), w), "expm")))
    assert all(b > a for a, b in zip(dense_values, dense_values[1:]))
    assert all(b > a for a, b in zip(values, values[1:])), values


def test_sparse_gradient_reaches_edge_weights():
    # with fixed probes the estimate is a deterministic function of the weights: its autograd
    # gradient equals central finite differences
    idx = torch.tensor([[0, 1, 1, 2, 3], [1, 0, 2, 3, 1]])
    w = torch.tensor([0.7, 0.5, -0.9, 0.6, 1.1], dtype=torch.float64, requires_grad=True)

    def f(weights: torch.Tensor) -> torch.Tensor:
        return acyclicity_sparse(idx, weights, 4, n_probes=64, n_terms=10,
                                 generator=torch.Generator().manual_seed(3))

    (grad,) = torch.autograd.grad(f(w), w)
    eps = 1e-6
    num = torch.stack([(f(w.detach() + eps * e) - f(w.detach() - eps * e)) / (2 * eps)
                       for e in torch.eye(5, dtype=torch.float64)])
    torch.testing.assert_close(grad, num, rtol=1e-6, atol=1e-9)
    assert grad.abs().sum() > 0


def test_sparse_many_terms_do_not_overflow():
    idx = torch.tensor([[0, 1], [1, 0]])
    w = torch.tensor([0.5, 0.5], dtype=torch.float64)
    exact = math.exp(0.25) + math.exp(-0.25) - 2
    est = acyclicity_sparse(idx, w, 2, n_probes=4096, n_terms=25,
                            generator=torch.Generator().manual_seed(0))
    assert float(est) == pytest.approx(exact, abs=0.02)


def test_sparse_reproducible_with_generator():
    idx = torch.tensor([[0, 1, 2], [1, 2, 0]])
    w = torch.tensor([1.0, 0.5, 0.7])
    a = acyclicity_sparse(idx, w, 3, generator=torch.Generator().manual_seed(5))
    b = acyclicity_sparse(idx, w, 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


# ---------------------------------------------------------------- augmented Lagrangian


def test_penalty_formula():
    al = AugmentedLagrangian(rho=3.0, alpha=0.5)
    h = torch.tensor(0.2, requires_grad=True)
    p = al.penalty(h)
    assert float(p.detach()) == pytest.approx(0.5 * 0.2 + 0.5 * 3.0 * 0.04)
    (g,) = torch.autograd.grad(p, h)
    assert float(g) == pytest.approx(0.5 + 3.0 * 0.2)   # alpha + rho h
    assert float(al.penalty(torch.tensor(0.0))) == 0.0


def test_update_rule():
    al = AugmentedLagrangian(rho=1.0, alpha=0.0, rho_mult=10.0, rho_max=1e3, progress=0.25,
                             h_tol=1e-8)
    # first step: no previous h, so no growth; alpha += rho * h
    al.update(1.0)
    assert (al.rho, al.alpha, al.h_prev) == (1.0, 1.0, 1.0)
    # h fell below progress * h_prev (0.2 <= 0.25): rho stays
    al.update(0.2)
    assert al.rho == 1.0 and al.alpha == pytest.approx(1.2)
    # h did not fall enough (0.1 > 0.25 * 0.2 = 0.05): rho grows by rho_mult, and the
    # multiplier step uses the new rho (NOTEARS' order)
    al.update(0.1)
    assert al.rho == 10.0 and al.alpha == pytest.approx(1.2 + 10.0 * 0.1)
    # again: 100, then capped at rho_max = 1e3
    al.update(0.1)
    assert al.rho == 100.0
    al.update(0.1)
    assert al.rho == 1e3
    al.update(0.1)
    assert al.rho == 1e3
    # h at or below h_tol counts as satisfied: rho never grows, alpha barely moves
    alpha = al.alpha
    al.update(1e-9)
    al.update(1e-9)
    assert al.rho == 1e3 and al.alpha == pytest.approx(alpha + 2e-6)
    assert "rho=1000" in repr(al)


def test_update_with_exact_zero_keeps_everything():
    al = AugmentedLagrangian(rho=2.0, alpha=0.3)
    for _ in range(3):
        al.update(0.0)
    assert (al.rho, al.alpha) == (2.0, 0.3)


def test_state_dict_round_trip():
    a = AugmentedLagrangian(rho=1.0, rho_mult=5.0)
    for h in (1.0, 0.9, 0.5, 0.45):
        a.update(h)
    state = a.state_dict()
    assert set(state) >= {"rho", "alpha", "h_prev"}
    b = AugmentedLagrangian(rho=1.0, rho_mult=5.0)
    b.load_state_dict(state)
    assert (b.rho, b.alpha, b.h_prev) == (a.rho, a.alpha, a.h_prev)
    for h in (0.4, 0.39, 0.01):
        a.update(h)
        b.update(h)
        assert (b.rho, b.alpha, b.h_prev) == (a.rho, a.alpha, a.h_prev)
    # a fresh schedule's state (h_prev = inf) survives torch's safe loader
    import io

    buf = io.BytesIO()
    torch.save(AugmentedLagrangian().state_dict(), buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=True)
    assert back["h_prev"] == math.inf


@pytest.mark.parametrize("kwargs", [
    {"rho": 0.0}, {"rho": -1.0}, {"rho_mult": 0.5}, {"rho": 10.0, "rho_max": 1.0},
    {"progress": 0.0}, {"progress": 1.0}, {"progress": 1.5},
])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValidationError, match="AugmentedLagrangian"):
        AugmentedLagrangian(**kwargs)


def test_random_dag_helper_is_acyclic():
    # guard of the helper itself: a permuted strictly-triangular matrix has a nilpotent pattern
    for seed in range(4):
        a = random_dag(9, seed)
        m = (a != 0).double().numpy()
        assert np.allclose(np.linalg.matrix_power(m, 9), 0)
