"""Tests of the causal EBM (pairwise MRF over task labels) and its pairwise potential module."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from taskgraph.exceptions import ValidationError
from taskgraph.structure.ebm import CausalEBM, PairwisePotential
from taskgraph.structure.ice import ice_loss


def random_edges(T: int, n_edges: int, g: torch.Generator) -> torch.Tensor:
    pairs = [(i, j) for i in range(T) for j in range(T) if i != j]
    pick = torch.randperm(len(pairs), generator=g)[:n_edges].tolist()
    return torch.tensor([pairs[k] for k in pick], dtype=torch.long).t().reshape(2, -1)


def random_model(n_states, n_edges, scale=1.0, B=3, seed=0, garbage=True):
    """A random EBM; padded columns of phi/psi hold garbage that must be ignored."""
    g = torch.Generator().manual_seed(seed)
    T, C = len(n_states), max(2, max(n_states))
    edge_index = random_edges(T, n_edges, g)
    ebm = CausalEBM(edge_index, T, n_states)
    phi = torch.randn(B, T, C, generator=g)
    psi = scale * (2 * torch.rand(B, edge_index.shape[1], C, C, generator=g) - 1)
    if garbage:
        for t, k in enumerate(n_states):
            if k < C:
                phi[:, t, max(k, 1):] = 50.0
                psi[:, edge_index[0] == t, max(k, 1):, :] = float("nan")
                psi[:, edge_index[1] == t, :, max(k, 1):] = 1e4
    return ebm, phi, psi


def brute_log_unnorm(y, phi, psi, edge_index):
    """Pure-Python energy of one full configuration (no padding), the reference."""
    out = sum(float(phi[t, y[t]]) for t in range(len(y)))
    for e, (i, j) in enumerate(edge_index.t().tolist()):
        out += float(psi[e, y[i], y[j]])
    return out


MODELS = {
    "binary": dict(n_states=[2] * 8, n_edges=12, scale=1.0),
    "three_class": dict(n_states=[3] * 5, n_edges=7, scale=1.0),
    "mixed_padding": dict(n_states=[2, 3, 0, 2, 3, 1], n_edges=9, scale=1.0),
}


# ------------------------------------------------------------------ exact enumeration
def test_exact_partition_matches_brute_force_and_log_unnorm():
    ebm, phi, psi = random_model([2, 2, 2, 2], n_edges=5, garbage=False)
    for b in range(phi.shape[0]):
        brute = torch.tensor([brute_log_unnorm(y, phi[b], psi[b], ebm.edge_index)
                              for y in itertools.product(range(2), repeat=4)])
        assert torch.allclose(torch.logsumexp(brute, 0), ebm.exact_log_partition(phi, psi)[b],
                              atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_log_unnorm_over_all_configurations_gives_log_partition(name):
    ebm, phi, psi = random_model(**MODELS[name])
    Y = ebm.configurations().double()
    logz = ebm.exact_log_partition(phi, psi)
    for b in range(phi.shape[0]):
        scores = ebm.log_unnorm(Y, phi[b], psi[b])
        assert torch.isfinite(scores).all()
        assert torch.allclose(torch.logsumexp(scores, 0), logz[b], atol=1e-4)
    marg = ebm.exact_marginals(phi, psi)
    assert torch.allclose(marg.sum(-1), torch.ones(marg.shape[:2]), atol=1e-5)
    C = phi.shape[-1]
    for t, k in enumerate(MODELS[name]["n_states"]):
        assert (marg[:, t, max(k, 1):] == 0).all()  # padding has zero marginal
        if k <= 1:
            assert torch.allclose(marg[:, t], torch.eye(C)[0].expand(phi.shape[0], C))


def test_max_states_is_enforced():
    ebm = CausalEBM(torch.empty(2, 0, dtype=torch.long), 17, [2] * 17)
    with pytest.raises(ValidationError, match="max_states"):
        ebm.exact_marginals(torch.zeros(1, 17, 2), None)
    assert ebm.exact_marginals(torch.zeros(1, 17, 2), None, max_states=2 ** 17).shape == (1, 17, 2)


# ------------------------------------------------------------------ energy and conditionals
def test_masked_log_unnorm_equals_sub_model_on_observed_tasks():
    ebm, phi, psi = random_model([2, 3, 2, 3, 2, 2], n_edges=10, B=6, seed=3)
    g = torch.Generator().manual_seed(1)
    T = ebm.n_tasks
    y = torch.stack([torch.randint(0, k, (6,), generator=g) for k in ebm.n_states.tolist()], 1)
    y = y.double()
    missing = torch.rand(6, T, generator=g) < 0.4
    y_nan = y.masked_fill(missing, float("nan"))
    got = ebm.log_unnorm(y_nan, phi, psi)
    assert torch.allclose(got, ebm.log_unnorm(y, phi, psi, mask=~missing))
    src, dst = ebm.edge_index
    for b in range(6):
        obs = (~missing[b]).nonzero().squeeze(1)
        new_id = torch.full((T,), -1)
        new_id[obs] = torch.arange(len(obs))
        keep = ~missing[b, src] & ~missing[b, dst]
        sub = CausalEBM(new_id[ebm.edge_index[:, keep]], max(len(obs), 1),
                        ebm.n_states[obs].tolist() or [1])
        if len(obs) == 0:
            assert got[b] == 0
            continue
        want = sub.log_unnorm(y[b:b + 1, obs], phi[b:b + 1, obs], psi[b:b + 1, keep])
        assert torch.allclose(got[b], want[0])


def test_conditionals_match_joint_table():
    ebm, phi, psi = random_model(**MODELS["mixed_padding"])
    Y = ebm.configurations()
    g = torch.Generator().manual_seed(2)
    y_int = Y[torch.randint(0, Y.shape[0], (phi.shape[0],), generator=g)]
    cond = ebm.conditionals(y_int, phi, psi)
    for b in range(phi.shape[0]):
        scores = ebm.log_unnorm(Y.double(), phi[b], psi[b])
        for j in range(ebm.n_tasks):
            others = torch.cat([torch.arange(j), torch.arange(j + 1, ebm.n_tasks)])
            match = (Y[:, others] == y_int[b, others]).all(1)
            logp = torch.full((phi.shape[-1],), -math.inf)
            logp[Y[match, j]] = scores[match]
            assert torch.allclose(cond[b, j], torch.log_softmax(logp, 0), atol=1e-5)


def test_pseudo_log_likelihood_observed_and_mean_field_fill():
    ebm, phi, psi = random_model([2, 3, 2, 2], n_edges=6, seed=4, garbage=False)
    y_int = torch.tensor([[0, 2, 1, 1], [1, 0, 0, 1], [1, 1, 1, 0]])
    cond = ebm.conditionals(y_int, phi, psi).gather(-1, y_int[..., None]).squeeze(-1)
    assert torch.allclose(ebm.pseudo_log_likelihood(y_int.double(), phi, psi), cond.sum(1))
    # chain 0 -> 1 -> 2 with task 2 missing: its fill is its exact posterior given y_1
    chain = CausalEBM(torch.tensor([[0, 1], [1, 2]]), 3, [2, 2, 2])
    ph, ps = phi[:, :3, :2], psi[:, :2, :2, :2]
    y = torch.tensor([[1.0, 0.0, float("nan")]]).expand(3, 3)
    q2 = torch.softmax(ph[:, 2] + ps[:, 1, 0], -1)
    f1 = ph[:, 1] + ps[:, 0, 1] + (ps[:, 1] * q2[:, None, :]).sum(-1)
    f0 = ph[:, 0] + ps[:, 0, :, 0]
    want = torch.log_softmax(f0, -1)[:, 1] + torch.log_softmax(f1, -1)[:, 0]
    assert torch.allclose(chain.pseudo_log_likelihood(y, ph, ps), want, atol=1e-5)


def test_constant_tasks_are_ignored():
    """Regression / inactive tasks (n_states <= 1 or an all -inf phi row) have one state."""
    ebm = CausalEBM(torch.tensor([[0, 1, 2], [1, 2, 0]]), 3, [2, 2, 1])
    phi = torch.randn(2, 3, 2)
    phi[0, 1] = -math.inf  # classification head switched off in row 0
    psi = torch.randn(2, 3, 2, 2)
    marg = ebm.exact_marginals(phi, psi)
    assert torch.allclose(marg[0, 1], torch.tensor([1.0, 0.0]), atol=1e-6)
    assert torch.allclose(marg[:, 2], torch.tensor([[1.0, 0.0]] * 2), atol=1e-6)
    y1 = torch.tensor([[1.0, 1.0, 3.7], [0.0, 1.0, -2.0]])
    y2 = torch.tensor([[1.0, float("nan"), float("nan")], [0.0, 1.0, 0.5]])
    assert torch.equal(ebm.log_unnorm(y1, phi, psi), ebm.log_unnorm(y2, phi, psi))
    only0 = torch.softmax(phi[0, 0], -1)  # task 0 is alone in row 0
    assert torch.allclose(marg[0, 0], only0, atol=1e-6)


def test_output_layout_log_proba_is_accepted(mixed_tasks):
    from taskgraph.nn.heads import OutputLayout

    layout = OutputLayout(mixed_tasks)
    phi = layout.log_proba(torch.randn(4, 3, layout.out_dim))
    ebm = CausalEBM(torch.tensor([[0, 1], [1, 2]]), 3, layout.n_cls)
    marg = ebm.exact_marginals(phi, None)
    want = phi.exp()
    want[:, 2, 0] = 1.0
    assert torch.allclose(marg, want, atol=1e-6)
    assert torch.allclose(ebm.mean_field(phi, None), want, atol=1e-6)


# ------------------------------------------------------------------ inference
@pytest.mark.parametrize("schedule", ["sequential", "chromatic"])
@pytest.mark.parametrize("name", list(MODELS))
def test_gibbs_matches_exact(name, schedule):
    ebm, phi, psi = random_model(**MODELS[name])
    exact = ebm.exact_marginals(phi, psi)
    g = torch.Generator().manual_seed(0)
    gibbs = ebm.gibbs(phi, psi, n_sweeps=300, burn_in=20, n_chains=64, generator=g,
                      schedule=schedule)
    assert (gibbs - exact).abs().max() < 0.02
    assert torch.allclose(gibbs.sum(-1), torch.ones(gibbs.shape[:2]), atol=1e-5)


def test_gibbs_is_deterministic_given_generator_and_respects_init():
    ebm, phi, psi = random_model(**MODELS["mixed_padding"])
    runs = [ebm.gibbs(phi, psi, n_sweeps=30, burn_in=5, n_chains=4, return_samples=True,
                      generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    samples = runs[0][1]
    assert samples.shape == (3, 4, 6) and samples.dtype == torch.long
    assert (samples < ebm.n_states).all()
    assert (samples[:, :, [2, 5]] == 0).all()  # constant tasks stay in state 0
    init = torch.zeros(3, 6, dtype=torch.long)
    marg = ebm.gibbs(phi, psi, n_sweeps=2, burn_in=0, init=init,
                     generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(marg).all()
    per_chain = torch.randint(0, 2, (3, 4, 6), generator=torch.Generator().manual_seed(0))
    _, last = ebm.gibbs(phi, psi, n_sweeps=1, burn_in=0, n_chains=4, init=per_chain,
                        return_samples=True, generator=torch.Generator().manual_seed(0))
    assert last.shape == (3, 4, 6)
    with pytest.raises(ValidationError, match="init"):
        ebm.gibbs(phi, psi, init=torch.full((3, 6), 5))


def test_mean_field_exact_without_edges_and_close_when_weak():
    ebm, phi, _ = random_model([2, 3, 2, 1, 3], n_edges=0)
    assert torch.allclose(ebm.mean_field(phi, None), ebm.exact_marginals(phi, None), atol=1e-6)
    for name in MODELS:
        ebm, phi, psi = random_model(**{**MODELS[name], "scale": 0.1}, seed=5)
        mf = ebm.predict_proba(phi, psi, method="mean_field", n_iter=50)
        assert (mf - ebm.predict_proba(phi, psi, method="exact")).abs().max() < 0.02
    a = ebm.mean_field(phi, psi)
    assert torch.equal(a, ebm.mean_field(phi, psi))


def test_extreme_logits_stay_finite():
    ebm, phi, psi = random_model(**MODELS["mixed_padding"], seed=6)
    phi = (phi.sign() * 1e4).requires_grad_()
    psi = (torch.randn(psi.shape, generator=torch.Generator().manual_seed(0)).sign() * 1e4)
    psi.requires_grad_()
    exact = ebm.exact_marginals(phi, psi)
    assert torch.isfinite(exact).all() and torch.isfinite(ebm.exact_log_partition(phi, psi)).all()
    assert torch.isfinite(ebm.mean_field(phi, psi)).all()
    g = torch.Generator().manual_seed(0)
    assert torch.isfinite(ebm.gibbs(phi, psi, n_sweeps=5, burn_in=1, generator=g)).all()
    y = ebm.configurations()[:3].double()
    y[0, 1] = float("nan")
    total = ebm.log_unnorm(y, phi, psi) + ebm.pseudo_log_likelihood(y, phi, psi)
    assert torch.isfinite(total).all()
    total.sum().backward()
    assert torch.isfinite(phi.grad).all() and torch.isfinite(psi.grad).all()
    cond = ebm.conditionals(y.nan_to_num(0).long(), phi, psi)
    assert not torch.isnan(cond).any() and torch.allclose(cond.exp().sum(-1), torch.ones(3, 6))


# ------------------------------------------------------------------ pairwise potential
def test_gradient_reaches_edge_weight_and_zero_edge_contributes_nothing():
    torch.manual_seed(0)
    T, C, B = 4, 3, 5
    edge_index = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
    pot = PairwisePotential(8, C, hidden=16)
    s = torch.randn(B, T, 8)
    w = torch.tensor([0.7, 0.0, 1.3, -0.4], requires_grad=True)
    psi = pot(s, edge_index, w)
    assert psi.shape == (B, 4, C, C)
    ebm = CausalEBM(edge_index, T, [3, 2, 3, 3])
    phi = torch.randn(B, T, C)
    y = torch.tensor([[0, 1, 2, 0]] * B, dtype=torch.float)
    ebm.log_unnorm(y, phi, psi).sum().backward()
    assert w.grad is not None and (w.grad[[0, 2, 3]] != 0).all()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pot.parameters())
    keep = torch.tensor([True, False, True, True])
    without = CausalEBM(edge_index[:, keep], T, [3, 2, 3, 3])
    with torch.no_grad():
        assert (psi[:, 1] == 0).all()
        assert torch.allclose(ebm.log_unnorm(y, phi, psi), without.log_unnorm(y, phi, psi[:, keep]))
        assert torch.allclose(ebm.exact_marginals(phi, psi),
                              without.exact_marginals(phi, psi[:, keep]), atol=1e-6)
    assert pot(s[0], edge_index).shape == (4, C, C)


# ------------------------------------------------------------------ ICE
def test_ice_recovers_ising_couplings():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    T = 5
    pairs = torch.tensor([(i, j) for i in range(T) for j in range(i + 1, T)]).t()
    E = pairs.shape[1]
    J = torch.zeros(E)
    for (i, j), v in {(0, 1): 0.9, (1, 2): -0.9, (2, 3): 0.7, (0, 4): -0.7}.items():
        J[((pairs[0] == i) & (pairs[1] == j)).nonzero()[0, 0]] = v
    ising = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    h = torch.tensor([0.3, -0.2, 0.1, 0.0, -0.3])
    ebm = CausalEBM(pairs, T, [2] * T)
    phi_true, psi_true = torch.stack([-h, h], 1), J[:, None, None] * ising
    Y = ebm.configurations()
    p = torch.softmax(ebm.log_unnorm(Y.float(), phi_true, psi_true), 0)
    n = 4000
    y = Y[torch.multinomial(p, n, replacement=True, generator=g)].float()

    # noise: product of the data marginals (tractable log q), K negatives per data row
    k = 4
    m = y.mean(0).clamp(1e-3, 1 - 1e-3)
    y_noise = (torch.rand(n * k, T, generator=g) < m).float()

    def log_q(v):
        return (v * m.log() + (1 - v) * (1 - m).log()).sum(-1)

    lq_data, lq_noise = log_q(y), log_q(y_noise).view(n, k)
    # only 2^T distinct label vectors: score them once per step and index the rows
    radix = 2 ** torch.arange(T - 1, -1, -1)
    row_data, row_noise = (y.long() * radix).sum(1), (y_noise.long() * radix).sum(1)
    assert torch.equal(Y[row_data].float(), y)
    phi = torch.zeros(T, 2, requires_grad=True)
    psi = torch.zeros(E, 2, 2, requires_grad=True)
    opt = torch.optim.Adam([phi, psi], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        scores = ebm.log_unnorm(Y.float(), phi, psi)
        loss = ice_loss(scores[row_data], lq_data, scores[row_noise].view(n, k), lq_noise)
        loss.backward()
        opt.step()
    with torch.no_grad():
        inter = psi[:, 1, 1] + psi[:, 0, 0] - psi[:, 0, 1] - psi[:, 1, 0]
    truth = 4 * J
    nz = truth != 0
    assert torch.equal(inter[nz].sign(), truth[nz].sign())
    assert inter[~nz].abs().max() < 0.35 * inter[nz].abs().min()
    assert torch.corrcoef(torch.stack([inter, truth]))[0, 1] > 0.95


# ------------------------------------------------------------------ validation
def test_bad_input_names_the_argument():
    ei = torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(ValidationError, match="edge_index"):
        CausalEBM(torch.tensor([[0, 1], [0, 2]]), 3, [2, 2, 2])
    with pytest.raises(ValidationError, match="edge_index"):
        CausalEBM(torch.tensor([[0, 1], [1, 3]]), 3, [2, 2, 2])
    with pytest.raises(ValidationError, match="n_states"):
        CausalEBM(ei, 3, [2, 2])
    ebm = CausalEBM(ei, 3, [2, 3, 2])
    phi, psi = torch.zeros(2, 3, 3), torch.zeros(2, 2, 3, 3)
    with pytest.raises(ValidationError, match="phi"):
        ebm.mean_field(torch.zeros(2, 3, 2), None)
    with pytest.raises(ValidationError, match="psi"):
        ebm.mean_field(phi, torch.zeros(2, 3, 3, 3))
    with pytest.raises(ValidationError, match="batch"):
        ebm.mean_field(phi, torch.zeros(4, 2, 3, 3))
    with pytest.raises(ValidationError, match="y"):
        ebm.log_unnorm(torch.tensor([[2.0, 0.0, 0.0]]), phi[:1], psi[:1])
    with pytest.raises(ValidationError, match="y"):
        ebm.log_unnorm(torch.tensor([[0.5, 0.0, 0.0]]), phi[:1], psi[:1])
    with pytest.raises(ValidationError, match="method"):
        ebm.predict_proba(phi, psi, method="bp")
    with pytest.raises(ValidationError, match="schedule"):
        ebm.gibbs(phi, psi, schedule="random")
    with pytest.raises(ValidationError, match="burn_in"):
        ebm.gibbs(phi, psi, n_sweeps=5, burn_in=5)


@pytest.mark.parametrize("dense", [True, False])
def test_pairwise_energy_equals_table_sum_and_stacks_label_vectors(dense, monkeypatch):
    """``energy`` equals the sum of ``forward``'s table entries at ``y`` over edges with both
    ends active (value and gradients), and ``K`` stacked label vectors give the ``K`` separate
    energies."""
    import taskgraph.nn.aggregate as agg

    if not dense:
        monkeypatch.setattr(agg, "DENSE_PAIRS", 0)
    g = torch.Generator().manual_seed(3)
    b, t, d, c, k = 4, 5, 6, 3, 3
    torch.manual_seed(0)
    pot = PairwisePotential(d, c, hidden=4)
    with torch.no_grad():
        pot.bias.normal_()
    edges = random_edges(t, 9, g)
    s = torch.randn(b, t, d, generator=g, requires_grad=True)
    w = torch.rand(edges.shape[1], generator=g, requires_grad=True)
    y = torch.randint(0, c, (k, b, t), generator=g)
    active = torch.rand(b, t, generator=g) > 0.3
    table = pot(s, edges, w)                                           # [B, E, C, C]
    src, dst = edges
    ref = torch.zeros(k, b)
    for q, n, e in itertools.product(range(k), range(b), range(edges.shape[1])):
        i, j = int(src[e]), int(dst[e])
        if active[n, i] and active[n, j]:
            ref[q, n] = ref[q, n] + table[n, e, y[q, n, i], y[q, n, j]]
    got = pot.energy(s, edges, w, y, active)
    assert got.shape == (k, b)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    for q in range(k):
        torch.testing.assert_close(pot.energy(s, edges, w, y[q], active), got[q])
    gs, gw = torch.autograd.grad(got.sum(), (s, w))
    rs, rw = torch.autograd.grad(ref.sum(), (s, w))
    torch.testing.assert_close(gs, rs, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gw, rw, rtol=1e-4, atol=1e-5)
