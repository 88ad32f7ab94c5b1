"""Decorrelation (M1), invariance penalties on the routing (M3) and environments."""

import warnings

import pytest
import torch

from taskgraph import ValidationError
from taskgraph.regularizers import (
    LabelEnvironments,
    ModuleDecorrelation,
    RouterInvariancePenalty,
    balance_weights,
    class_balance_table,
    conditional_independence,
    decorrelation,
    env_assignment,
    env_risks,
    gradient_variance_penalty,
    irmv1_penalty,
    split_halves,
    vrex_penalty,
    warn_single_environment,
)


def _blocks(b, k, m, rho, seed=0):
    """k blocks of m features; every block shares a factor with weight rho."""
    g = torch.Generator().manual_seed(seed)
    common = torch.randn(b, 1, m, generator=g)
    own = torch.randn(b, k, m, generator=g)
    return rho * common + (1 - rho**2) ** 0.5 * own


# ----------------------------------------------------------------------------- decorrelation
def test_decorrelation_near_zero_for_independent_blocks():
    z = _blocks(4096, 4, 8, 0.0)
    assert float(decorrelation(z)) < 1e-2
    assert float(decorrelation(z)) == pytest.approx(1 / 4096, rel=0.3)  # sampling floor 1/B


def test_decorrelation_rises_with_injected_correlation():
    values = [float(decorrelation(_blocks(2048, 3, 4, rho))) for rho in (0, 0.2, 0.4, 0.6, 0.8)]
    assert values == sorted(values) and values[-1] > 20 * values[0]
    # rho = 0.8 on matched features only: corr 0.64 on m of the m² cross entries
    assert values[-1] == pytest.approx(0.64**2 / 4, rel=0.1)
    copies = torch.randn(256, 1, 1).expand(256, 3, 4)  # every feature the same signal
    assert float(decorrelation(copies)) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("kind", ["corr", "hsic"])
def test_decorrelation_invariant_to_feature_rescaling(kind):
    b = 512 if kind == "hsic" else 2048
    z = _blocks(b, 3, 4, 0.5)
    g = torch.Generator().manual_seed(3)
    scale = torch.rand(1, 3, 4, generator=g) * 100 + 0.01
    shift = torch.randn(1, 3, 4, generator=g) * 50
    torch.testing.assert_close(decorrelation(z * scale + shift, kind), decorrelation(z, kind),
                               rtol=1e-3, atol=1e-4)


def test_decorrelation_gradients_and_module_form():
    z = _blocks(256, 3, 4, 0.5).requires_grad_(True)
    loss = ModuleDecorrelation()(z)
    loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    # a step against the gradient lowers the penalty
    with torch.no_grad():
        assert decorrelation(z - 0.5 * z.grad / z.grad.norm()) < loss


def test_hsic_sees_nonlinear_dependence():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(512, 1, 2, generator=g)
    dependent = torch.cat([a, a**2], dim=1)  # uncorrelated but dependent blocks
    independent = torch.cat([a, torch.randn(512, 1, 2, generator=g) ** 2], dim=1)
    assert float(decorrelation(dependent, "corr")) < 0.02
    assert float(decorrelation(dependent, "hsic")) > 3 * float(decorrelation(independent, "hsic"))


def test_decorrelation_edge_cases_and_errors():
    assert float(decorrelation(torch.randn(1, 3, 2))) == 0.0  # one example
    assert float(decorrelation(torch.randn(8, 1, 2))) == 0.0  # one module
    z = torch.randn(64, 2, 3)
    z[:, 0, 0] = 1.0  # a dead unit does not give NaN
    assert torch.isfinite(decorrelation(z))
    with pytest.raises(ValidationError, match="z"):
        decorrelation(torch.randn(8, 6))
    with pytest.raises(ValidationError, match="kind"):
        decorrelation(torch.randn(8, 2, 3), kind="mi")


# ----------------------------------------------------------------------------- invariance
def test_env_risks_matches_loop():
    g = torch.Generator().manual_seed(0)
    loss = torch.rand(50, 3, generator=g)
    env = torch.randint(-1, 3, (50, 3), generator=g)
    w = torch.rand(50, 3, generator=g)
    risks, mass = env_risks(loss, env, 3, w)
    for e in range(3):
        for t in range(3):
            sel = env[:, t] == e
            assert mass[e, t] == pytest.approx(float(w[sel, t].sum()), rel=1e-5)
            ref = (w[sel, t] * loss[sel, t]).sum() / w[sel, t].sum()
            assert risks[e, t] == pytest.approx(float(ref), rel=1e-5)
    r1, _ = env_risks(loss, env[:, 0], 3)  # one env per example
    assert r1.shape == (3, 3)


def _toy(beta_per_env, n=4000, seed=0):
    """Two modules with one feature each; soft labels sigma(beta_e . x) in env e."""
    g = torch.Generator().manual_seed(seed)
    e = len(beta_per_env)
    x = torch.randn(e * n, 2, generator=g)
    env = torch.arange(e).repeat_interleave(n)
    beta = torch.tensor(beta_per_env, dtype=torch.float32)[env]
    y = torch.sigmoid((beta * x).sum(-1))
    return x, y, env


def _logistic_penalty(x, y, env, coef, gates, n_envs, kind="irmv1", intercept=False):
    """Per-example logistic loss of f = sum_k g_k w_ek c_k x_k (+ u_e): IRMv1 on the gates."""
    pen = RouterInvariancePenalty(kind, min_mass=0)
    w = pen.dummy(n_envs, 1, 2, like=gates)
    f = ((gates * w[env, 0]) * coef * x).sum(-1)
    dummies = [w]
    if intercept:
        u = pen.shift(n_envs, 1, 1, like=gates)
        f = f + u[env, 0, 0]
        dummies.append(u)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(f, y, reduction="none")
    return pen(loss[:, None], env, dummies, n_envs=n_envs), f.detach()


def test_irmv1_zero_when_environments_agree_positive_otherwise():
    gates = torch.tensor([0.5, 0.8])
    coef = torch.tensor([2.0, -1.0]) / gates  # g * c equals the true coefficients
    x, y, env = _toy([[2.0, -1.0], [2.0, -1.0]])
    p_same, _ = _logistic_penalty(x, y, env, coef, gates, 2, intercept=True)
    assert float(p_same.detach()) < 1e-10  # at the optimum of every environment
    x, y, env = _toy([[2.0, -1.0], [2.0, 1.0]])  # module 2 flips sign in env 1
    p_diff, _ = _logistic_penalty(x, y, env, coef, gates, 2)
    assert float(p_diff.detach()) > 1e-2


def test_irmv1_matches_analytic_gradient():
    gates = torch.tensor([0.3, 0.9], requires_grad=True)
    coef = torch.tensor([1.5, 0.7])
    x, y, env = _toy([[1.0, 0.0], [1.0, 2.0], [0.5, -1.0]], n=300)
    pen, f = _logistic_penalty(x, y, env, coef, gates, 3, intercept=True)
    resid = torch.sigmoid(f) - y  # d loss / d logit
    expect = torch.zeros(())
    for e in range(3):
        sel = env == e
        grad_w = (resid[sel, None] * gates * coef * x[sel]).mean(0)  # dR_e / dw_e
        grad_u = resid[sel].mean()  # dR_e / du_e
        expect = expect + grad_w.pow(2).sum() + grad_u.pow(2)
    torch.testing.assert_close(pen[0], expect, rtol=1e-4, atol=1e-7)
    # and it trains: the penalty has a gradient w.r.t. the gates
    pen.sum().backward()
    assert gates.grad is not None and gates.grad.abs().sum() > 0


def test_vectorised_penalty_equals_per_environment_loop():
    g = torch.Generator().manual_seed(0)
    b, t, k, e = 90, 2, 3, 3
    c = torch.randn(b, t, k, generator=g)
    y = torch.rand(b, t, generator=g)
    env = torch.randint(0, e, (b, t), generator=g)
    gates = torch.rand(t, k, generator=g)
    pen = RouterInvariancePenalty("irmv1", min_mass=0)
    w = pen.dummy(e, t, k, like=gates)
    ex = (gates[None] * w)[env, torch.arange(t)[None]]
    loss = torch.nn.functional.binary_cross_entropy_with_logits((ex * c).sum(-1), y,
                                                                reduction="none")
    fast = pen(loss, env, w)
    slow = torch.zeros(t)
    for ee in range(e):
        for tt in range(t):
            wt = torch.ones(k, requires_grad=True)
            sel = env[:, tt] == ee
            f = (gates[tt] * wt * c[sel, tt]).sum(-1)
            risk = torch.nn.functional.binary_cross_entropy_with_logits(f, y[sel, tt])
            (gr,) = torch.autograd.grad(risk, wt)
            slow[tt] += gr.pow(2).sum()
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-8)


def test_gradient_variance_and_vrex():
    risks_base = torch.tensor([[1.0], [1.0]])
    d = torch.ones(2, 1, 2, requires_grad=True)
    same = (risks_base * (d * torch.tensor([0.3, -0.2])).sum(-1))  # equal env gradients
    assert float(gradient_variance_penalty(same, d)) == pytest.approx(0.0, abs=1e-12)
    assert float(irmv1_penalty(same, d)) > 0  # IRMv1 still asks for stationarity
    diff = (d * torch.tensor([[[0.3, -0.2]], [[0.1, 0.4]]])).sum(-1)
    var = gradient_variance_penalty(diff, d)
    assert float(var) == pytest.approx(((0.3 - 0.1) ** 2 + (-0.2 - 0.4) ** 2) / 4, rel=1e-5)
    risks = torch.tensor([[0.2, 1.0], [0.6, 1.0], [1.0, 1.0]])
    torch.testing.assert_close(vrex_penalty(risks), torch.tensor([0.32 / 3 * 1.0, 0.0]))
    valid = torch.tensor([[True, True], [True, False], [False, False]])
    torch.testing.assert_close(vrex_penalty(risks, valid), torch.tensor([0.04, 0.0]))


def test_penalty_module_validation():
    with pytest.raises(ValidationError, match="kind"):
        RouterInvariancePenalty("dro")
    pen = RouterInvariancePenalty("irmv1")
    with pytest.raises(ValidationError, match="dummy"):
        pen(torch.rand(4, 1), torch.zeros(4, 1, dtype=torch.long), None)
    with pytest.raises(ValidationError, match="dummy"):
        irmv1_penalty(torch.rand(2, 1), torch.ones(2, 1, 3))
    assert RouterInvariancePenalty("vrex")(torch.rand(6, 1), torch.tensor([0, 1] * 3)[:, None],
                                           None).shape == (1,)


# ----------------------------------------------------------------------------- environments
def test_label_environments_codes_and_rebalancing():
    # tasks: binary a, 3-class b, regression c; NaN = missing
    y = torch.tensor([[0, 0, 0.1], [1, 0, 0.2], [1, 0, 0.3], [1, 2, 0.4], [0, 2, 0.5],
                      [1, 1, 0.6], [float("nan"), 1, 0.7], [0, float("nan"), 0.8]])
    le = LabelEnvironments([2, 3, 0])
    assert le.n_envs == 3 and le.active.tolist() == [True, True, False]
    codes = le.codes(y)
    assert codes[:, 0].tolist() == [0, 0, 0, 2, 2, 1, -1, -1]  # stratum of b (a missing / b
    assert codes[:, 1].tolist() == [0, 1, 1, 1, 0, 1, -1, -1]  # missing excluded)
    assert (codes[:, 2] == -1).all()  # regression is not a target
    le.fit(y)
    env, w = le(y)
    # inside each kept environment, task a's classes carry equal weight
    for e in (0, 2):
        sel = env[:, 0] == e
        mass = [float(w[sel & (y[:, 0] == c), 0].sum()) for c in (0, 1)]
        assert mass[0] == pytest.approx(mass[1])
    assert (env[:, 0] == 1).sum() == 0  # stratum b=1 holds one class of a: dropped
    assert torch.equal(env[w == 0], torch.full_like(env[w == 0], -1))


def test_label_environments_cap():
    le = LabelEnvironments([2] * 6, max_envs=4)
    y = torch.randint(0, 2, (64, 6)).float()
    codes = le.codes(y)
    assert le.n_envs == 4 and int(codes.max()) <= 3 and int(codes.min()) >= 0
    with pytest.raises(ValidationError, match="max_envs"):
        LabelEnvironments([2, 2], max_envs=1)
    with pytest.raises(ValidationError, match="fit"):
        LabelEnvironments([2, 2])(y[:, :2])


def test_class_balance_table_given_envs():
    y = torch.tensor([[0.0, 1.5], [1.0, 2.0], [1.0, 0.1], [1.0, 0.3]])
    env = torch.tensor([0, 0, 1, 1])[:, None].expand(-1, 2)
    table = class_balance_table(env, y, [2, 0], 2)
    assert table[0, 0].tolist() == [1.0, 1.0]  # balanced already
    assert table[0, 1].tolist() == [0.0, 0.0]  # one class only: dropped
    assert table[1, :, 0].tolist() == [1.0, 1.0]  # regression: weight 1
    e, w = balance_weights(table, env, y)
    assert e[:, 0].tolist() == [0, 0, -1, -1] and w[:, 1].tolist() == [1.0] * 4
    plain = class_balance_table(env, y, [2, 0], 2, rebalance=False)
    assert set(plain.unique().tolist()) <= {0.0, 1.0}


def test_single_environment_warning():
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        warn_single_environment("only one environment")
    assert rec and issubclass(rec[0].category, UserWarning)
    assert "invariance penalty is disabled" in str(rec[0].message)


def test_sampled_decorrelation_is_unbiased_and_cheap_for_wide_modules():
    z = _blocks(256, 3, 16, 0.6)
    exact = float(decorrelation(z))
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 200 tiny calls: threads only add contention
    try:
        draws = torch.stack([decorrelation(z, max_units=4) for _ in range(200)])
    finally:
        torch.set_num_threads(threads)
    assert float(draws.mean()) == pytest.approx(exact, rel=0.1)
    assert torch.equal(decorrelation(z, max_units=16), decorrelation(z))  # m <= max_units: exact
    with pytest.raises(ValidationError, match="max_units"):
        decorrelation(z, max_units=0)


def test_env_assignment_and_risks_from_assignment():
    env = torch.tensor([[0, 1], [1, -1], [2, 0]])
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.5, 1.0]])
    a = env_assignment(env, 3, w)
    assert a.shape == (3, 2, 3)
    assert a[1, 1].sum() == 0 and a[0, 1, 1] == 2.0 and a[2, 0, 2] == 0.5
    loss = torch.rand(3, 2)
    r1, m1 = env_risks(loss, env, 3, w)
    r2, m2 = env_risks(loss, a)
    torch.testing.assert_close(r1, r2)
    torch.testing.assert_close(m1, m2)
    with pytest.raises(ValidationError, match="env"):
        env_assignment(env, 2)


# ----------------------------------------------------------------------------- split IRMv1
def test_split_halves_alternates_inside_every_task_and_environment():
    env = torch.tensor([[0, 1], [0, 1], [1, 1], [0, -1], [1, 0], [0, 0]])
    member = env_assignment(env, 2)
    weight = torch.arange(12, dtype=torch.float32).view(6, 2) + 1
    m2, a2 = split_halves(member, member * weight[..., None])
    assert m2.shape == (6, 2, 4)
    # task 0, env 0 rows 0, 1, 3, 5 -> halves 0, 1, 0, 1; env 1 rows 2, 4 -> 0, 1
    assert m2[:, 0].argmax(-1).tolist() == [0, 2, 1, 0, 3, 2]
    # task 1: env 1 rows 0, 1, 2 -> 0, 1, 0; env 0 rows 4, 5 -> 0, 1; row 3 excluded
    assert m2[:, 1].argmax(-1).tolist() == [1, 3, 1, 0, 0, 2] and float(m2[3, 1].sum()) == 0
    torch.testing.assert_close(a2, m2 * weight[..., None])
    torch.testing.assert_close(m2[..., :2] + m2[..., 2:], member)
    with pytest.raises(ValidationError, match="member"):
        split_halves(torch.ones(3, 2))
    with pytest.raises(ValidationError, match="others"):
        split_halves(member, torch.ones(6, 2, 3))


def test_split_irmv1_is_the_product_of_the_halves_gradients():
    # linear risks R_e^h = <c_eh, w>: the dummy gradient of half h is c_eh, the penalty
    # Σ_e <c_e0, c_e1> (and one invalid half drops its environment)
    c = torch.tensor([[[1.0, 2.0]], [[3.0, -1.0]], [[0.5, 0.5]], [[-2.0, 4.0]]])  # [2E=4, T=1, 2]
    w = torch.ones(4, 1, 2, requires_grad=True)
    risks = (c * w).sum(-1)
    pen = irmv1_penalty(risks, w, split=True)
    expect = (1.0 * 0.5 + 2.0 * 0.5) + (3.0 * -2.0 + -1.0 * 4.0)
    torch.testing.assert_close(pen, torch.tensor([expect]))
    valid = torch.tensor([[True], [True], [True], [False]])
    torch.testing.assert_close(irmv1_penalty(risks, w, valid, split=True), torch.tensor([1.5]))
    with pytest.raises(ValidationError, match="split"):
        irmv1_penalty(risks[:3], w[:3], split=True)
    with pytest.raises(ValidationError, match="split"):
        RouterInvariancePenalty("vrex", split=True)


def test_split_penalty_is_unbiased_where_the_square_is_not():
    # per-example gradients g_n = μ + noise: E[square of the batch mean] = |μ|² + σ²/n,
    # E[product of two halves' means] = |μ|²
    g = torch.Generator().manual_seed(0)
    mu, n, reps = torch.tensor([0.3, -0.1]), 8, 4000
    pen_sq, pen_split = RouterInvariancePenalty(min_mass=0), RouterInvariancePenalty(
        min_mass=0, split=True)
    sq, sp = [], []
    for _ in range(reps):
        grads = mu + torch.randn(n, 2, generator=g)                  # [B, D]
        member = torch.ones(n, 1, 1)
        m2, = split_halves(member)
        mean_all = grads.mean(0)
        halves = torch.stack([(m2[:, 0, h:h + 1] * grads).sum(0) / m2[:, 0, h].sum()
                              for h in (0, 1)])
        sq.append(pen_sq.from_gradients(mean_all[None, None]))
        sp.append(pen_split.from_gradients(halves[:, None]))
    true = float(mu.pow(2).sum())
    assert abs(float(torch.stack(sp).mean()) - true) < 0.03
    assert float(torch.stack(sq).mean()) - true > 0.2                # biased by σ²·D/n = 0.25


def test_min_rows_counts_effective_rows_of_the_weights():
    # env 0: 4 rows of weight 1 (n_eff 4); env 1: weights 5, 0.1, 0.1, 0.1 (mass 5.3, n_eff ≈ 1.1)
    env = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])[:, None]
    weight = torch.tensor([1.0, 1, 1, 1, 5, 0.1, 0.1, 0.1])[:, None]
    assign = env_assignment(env, 2, weight)
    assert RouterInvariancePenalty(min_rows=0).valid(assign)[:, 0].tolist() == [True, True]
    assert RouterInvariancePenalty(min_rows=3).valid(assign)[:, 0].tolist() == [True, False]
    assert RouterInvariancePenalty(min_rows=5).valid(assign)[:, 0].tolist() == [False, False]
    # the penalty drops the environment that does not count
    loss = torch.rand(8, 1)
    w = torch.ones(2, 1, 1, requires_grad=True)
    scaled = loss * w[env[:, 0], 0]
    both = RouterInvariancePenalty(min_mass=0)(scaled, assign, w)
    w2 = torch.ones(2, 1, 1, requires_grad=True)
    one = RouterInvariancePenalty(min_mass=0, min_rows=3)(loss * w2[env[:, 0], 0], assign, w2)
    risks, _ = env_risks(loss, assign)
    torch.testing.assert_close(one, risks[0].pow(2))
    torch.testing.assert_close(both, risks.pow(2).sum(0))
    with pytest.raises(ValidationError, match="min_rows"):
        RouterInvariancePenalty(min_rows=-1)


def test_gradient_memory_pairs_the_memory_with_the_batch():
    """Seeing the same batch twice, the memory's penalty equals the plain square in value and
    gradient; the memory counts decayed effective rows; evaluation batches leave it alone."""
    from taskgraph.environments import GradientMemory

    torch.manual_seed(0)
    theta = torch.randn(4, requires_grad=True)
    x = torch.randn(6, 2, 3, 4)
    assign = torch.ones(6, 2, 3)

    def grads():
        return torch.einsum("bte,bted->etd", assign / assign.sum(0), torch.tanh(x * theta))

    valid = torch.ones(3, 2, dtype=torch.bool)
    mem = GradientMemory(window=2.0)
    assert not mem.valid(valid).any()                      # empty memory: nothing counts
    first = mem.penalty(grads(), assign, valid)
    (g_first,) = torch.autograd.grad(first.sum(), theta, allow_unused=True)
    assert g_first is None or torch.count_nonzero(g_first) == 0   # no memory yet: no gradient
    mem.penalty(grads(), assign, valid, update=False)             # an evaluation batch
    assert mem.count == 1.0 and torch.equal(mem.mass, torch.full((3, 2), 6.0))
    pen = mem.penalty(grads(), assign, valid).sum()
    plain = grads().pow(2).sum()
    (g_mem,) = torch.autograd.grad(pen, theta)
    (g_plain,) = torch.autograd.grad(plain, theta)
    torch.testing.assert_close(pen.detach(), plain.detach())
    torch.testing.assert_close(g_mem, g_plain)
    # two batches of 6 equal weights, gamma = 0.5: mass 9, squares 0.25 * 6 + 6 = 7.5
    assert torch.equal(mem.mass, torch.full((3, 2), 9.0))
    mem.min_rows = 81 / 7.5
    assert mem.valid(valid).all()
    mem.min_rows = 81 / 7.5 + 1e-3
    assert not mem.valid(valid).any()
    for bad in (1.0, 0.5, float("nan"), True):
        with pytest.raises(ValidationError, match="window"):
            GradientMemory(bad)


# ----------------------------------------------------------------- conditional independence
def _ci_reference(f, y, member, mask, unbiased, standardize=True):
    """conditional_independence by loops over tasks, classes, rows and row pairs (float64)."""
    b, t, d = f.shape
    out = []
    for k in range(t):
        rows = [i for i in range(b) if not torch.isnan(y[i, k]) and member[i, k].sum() > 0]
        n = len(rows)
        cols = [j for j in range(d) if mask[k, j] > 0]
        if n < 2:
            out.append(0.0)
            continue
        r, o = {}, {}
        for i in rows:
            same = [j for j in rows if y[j, k] == y[i, k]]
            r[i] = torch.stack([f[i, k, c] - sum(f[j, k, c] for j in same) / len(same)
                                for c in cols])
            o[i] = member[i, k] - sum(member[j, k] for j in same) / len(same)
        # pooled within-class spread: mean square of the residuals
        sd = torch.stack([r[i] for i in rows]).pow(2).mean(dim=0).add(1e-6).sqrt()
        if standardize:
            r = {i: v / sd for i, v in r.items()}
        if unbiased:
            total = sum(float(r[i] @ r[j]) * float(o[i] @ o[j])
                        for i in rows for j in rows if i != j) / (n * (n - 1))
        else:
            c = sum(torch.outer(r[i], o[i]) for i in rows) / n
            total = float(c.pow(2).sum())
        out.append(total / len(cols))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("unbiased,standardize", [(False, True), (True, True), (False, False)])
def test_conditional_independence_matches_loop_reference(unbiased, standardize):
    g = torch.Generator().manual_seed(0)
    b, t, d, e, c = 23, 3, 4, 3, 3
    f = torch.randn(b, t, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (b, t), generator=g).double()
    y[2, 0] = y[5, 1] = float("nan")
    env = torch.randint(0, e, (b, t), generator=g)
    env[7, 2] = env[11, 0] = -1                                   # rows outside every env
    member = env_assignment(env, e).double()
    mask = torch.ones(t, d, dtype=torch.float64)
    mask[1, 3] = 0.0                                              # task 1 has 3 columns
    f[:, 1, 3] = 0.0
    got = conditional_independence(f, y, member, c, mask, unbiased=unbiased,
                                   standardize=standardize)
    torch.testing.assert_close(got, _ci_reference(f, y, member, mask, unbiased, standardize))


def test_conditional_independence_zero_iff_features_ignore_the_environment_given_the_label():
    g = torch.Generator().manual_seed(1)
    b, c, e = 400, 3, 4
    y = torch.randint(0, c, (b, 1), generator=g).double()
    env = torch.randint(0, e, (b, 1), generator=g)
    member = env_assignment(env, e).double()
    own = torch.nn.functional.one_hot(y[:, 0].long(), c).double()
    # features that are a function of the own label only: exactly 0
    assert float(conditional_independence(own[:, None], y, member, c)) == pytest.approx(
        0.0, abs=1e-12)
    # adding a feature of the environment (the other task's label) makes it positive,
    # and standardisation makes it invariant to rescaling the features
    noise = 0.3 * torch.randn(b, 1, c, generator=g, dtype=torch.float64)
    leak = own[:, None] + noise + 0.5 * member[:, :, :c]
    clean = own[:, None] + noise
    p_leak = float(conditional_independence(leak, y, member, c))
    assert p_leak > 20 * float(conditional_independence(clean, y, member, c))
    assert float(conditional_independence(7.0 * leak, y, member, c)) == pytest.approx(
        p_leak, rel=1e-5)   # (up to eps in the variance)
    # the U-statistic removes the noise term: near 0 for independent features, on average
    runs = [float(conditional_independence(
        own[:, None] + torch.randn(b, 1, c, generator=g, dtype=torch.float64), y, member, c,
        unbiased=True)) for _ in range(20)]
    biased = [float(conditional_independence(
        own[:, None] + torch.randn(b, 1, c, generator=g, dtype=torch.float64), y, member, c))
        for _ in range(20)]
    assert abs(sum(runs) / 20) < 0.2 * sum(biased) / 20


def test_conditional_independence_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(2)
    b, t, d, e, c = 12, 2, 3, 2, 2
    f = torch.randn(b, t, d, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, c, (b, t), generator=g).double()
    member = env_assignment(torch.randint(0, e, (b, t), generator=g), e).double()
    for standardize in (True, False):
        assert torch.autograd.gradcheck(
            lambda x, s=standardize: conditional_independence(x, y, member, c, standardize=s),
            (f,))
    with pytest.raises(ValidationError, match="must agree"):
        conditional_independence(f[:, :1], y, member, c)


def test_label_environments_with_hundreds_of_tasks():
    """200 binary tasks: 2^199 strata per task, capped at max_envs (the count once overflowed
    an int64 and causal_graph could not be built for T = 200)."""
    le = LabelEnvironments([2] * 200, max_envs=16)
    assert le.n_envs == 16 and bool(le.active.all())
    y = torch.randint(0, 2, (64, 200)).float()
    codes = le.codes(y)
    assert codes.shape == (64, 200) and int(codes.min()) >= 0 and int(codes.max()) < 16
