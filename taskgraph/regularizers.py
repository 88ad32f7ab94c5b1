r"""Regularisers of MT-CRL: module decorrelation and invariance of the task → module routing.

- :func:`decorrelation` / :class:`ModuleDecorrelation`: how much the ``K`` module blocks of
  ``z[B, K, m]`` depend on each other, from batch statistics (standardised cross-block
  correlation, or a normalised HSIC).
- :func:`env_risks`: per-environment, per-task risks ``R[E, T]`` from per-example losses, with
  per-(example, task) environments and importance weights, in one scatter (no loop over
  environments or tasks).
- :func:`irmv1_penalty`, :func:`gradient_variance_penalty`, :func:`vrex_penalty` and the module
  :class:`RouterInvariancePenalty` that picks one of them.
- :class:`LabelEnvironments`: environments of task ``t`` built from the *other* tasks' labels,
  with within-environment re-balancing of task ``t``'s classes.

The invariance penalties act on a *dummy multiplier* of each task's gate vector (IRMv1, Arjovsky
et al. 2019, with the routing row as the "classifier"): ``w[E, T, K]`` = 1, one copy per
environment, so a single backward pass of :math:`\sum_{e,t} R_t^e` yields every
:math:`\partial R_t^e / \partial \mathbf{w}_{e,t}` at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from taskgraph.exceptions import ValidationError

__all__ = [
    "decorrelation",
    "ModuleDecorrelation",
    "env_risks",
    "env_assignment",
    "split_halves",
    "irmv1_penalty",
    "dummy_gradients",
    "gradient_variance_penalty",
    "vrex_penalty",
    "conditional_independence",
    "RouterInvariancePenalty",
    "LabelEnvironments",
    "class_balance_table",
    "balance_weights",
    "warn_single_environment",
    "DECORRELATION_KINDS",
    "INVARIANCE_KINDS",
    "CONDITIONAL_KINDS",
]

DECORRELATION_KINDS = ("corr", "hsic")
INVARIANCE_KINDS = ("irmv1", "grad_var", "vrex")
#: invariance kinds computed by :func:`conditional_independence` (on each task's head outputs,
#: its routed node state, or its per-example loss)
CONDITIONAL_KINDS = ("cind", "cind_state", "cind_loss")


# ============================================================================ decorrelation
def _check_modules(z: torch.Tensor) -> None:
    if not isinstance(z, torch.Tensor) or z.dim() != 3:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValidationError(f"z: expected module outputs of shape [B, K, m], got {shape}")


def _standardise(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-feature batch standardisation of ``z[B, ...]`` (biased variance, like BatchNorm)."""
    mu = z.mean(dim=0, keepdim=True)
    zc = z - mu
    var = zc.pow(2).mean(dim=0, keepdim=True)
    return zc * torch.rsqrt(var + eps)


def _corr_decorrelation(z: torch.Tensor, eps: float) -> torch.Tensor:
    # correlation from batch moments: one D × D product over the batch, then only D × D work
    # (few ops on [B, D] tensors, which is what dominates small models). Centring on a detached
    # mean keeps E[zzᵀ] − μμᵀ free of cancellation while its value and gradient stay exact.
    b, k, m = z.shape
    x = z.reshape(b, k * m)
    xc = x - x.detach().mean(dim=0, keepdim=True)
    mu = xc.mean(dim=0)
    cov = xc.T @ xc / b - mu[:, None] * mu[None, :]
    inv = torch.rsqrt(cov.diagonal().clamp_min(0.0) + eps)
    corr2 = (cov * inv[:, None] * inv[None, :]).pow(2)
    # Σ_{i≠j} ||C_ij||² = ||C||² − Σ_i ||C_ii||²
    within = corr2.reshape(k, m, k, m).diagonal(dim1=0, dim2=2).sum()
    return ((corr2.sum() - within) / (k * (k - 1) * m * m)).clamp_min(0.0)


def _hsic_decorrelation(z: torch.Tensor, eps: float) -> torch.Tensor:
    b, k, m = z.shape
    zs = _standardise(z, eps).transpose(0, 1)  # [K, B, m]
    d2 = torch.cdist(zs, zs).pow(2)  # [K, B, B]
    # median heuristic per module, detached (a bandwidth, not a parameter to game)
    off = ~torch.eye(b, dtype=torch.bool, device=z.device)
    sigma2 = d2.detach()[:, off].median(dim=-1).values.clamp_min(eps)
    gram = torch.exp(-d2 / (2.0 * sigma2[:, None, None]))
    gram = gram - gram.mean(dim=1, keepdim=True)  # double centring: H K H
    gram = gram - gram.mean(dim=2, keepdim=True)
    hsic = torch.einsum("kab,lab->kl", gram, gram) / (b - 1) ** 2  # [K, K]
    diag = hsic.diagonal().clamp_min(eps)
    cka = hsic / torch.sqrt(diag[:, None] * diag[None, :])
    cross = ~torch.eye(k, dtype=torch.bool, device=z.device)
    return cka[cross].mean()


def _sample_units(z: torch.Tensor, max_units: int | None) -> torch.Tensor:
    """A uniformly random subset of ``max_units`` features of every module (global torch RNG)."""
    b, k, m = z.shape
    if max_units is None or m <= max_units:
        return z
    idx = torch.rand(k, m, device=z.device).argsort(dim=1)[:, :max_units]
    return z.gather(2, idx[None].expand(b, -1, -1))


def decorrelation(z: torch.Tensor, kind: str = "corr", eps: float = 1e-5,
                  max_units: int | None = None) -> torch.Tensor:
    r"""Dependence between the ``K`` module blocks of ``z[B, K, m]``, from batch statistics.

    ``kind="corr"`` (default): the mean squared cross-block correlation of the batch-standardised
    features,

    .. math::
        \mathcal{L}_{\mathrm{dec}} = \frac{1}{K(K-1)m^2} \sum_{i \neq j}
        \bigl\lVert \hat{\mathbf{C}}_{ij} \bigr\rVert_F^2, \qquad
        \hat{\mathbf{C}} = \tfrac{1}{B} \hat{\mathbf{Z}}^\top \hat{\mathbf{Z}},\;
        \hat{\mathbf{Z}} = \text{standardise}(\mathbf{Z}) \in \mathbb{R}^{B \times Km},

    where :math:`\hat{\mathbf{C}}_{ij}` is the ``m × m`` block between modules ``i`` and ``j``.
    It lies in ``[0, 1]``, does not depend on ``m``, is invariant to rescaling any feature, and is
    about ``1/B`` for independent blocks (sampling noise of a correlation).

    ``kind="hsic"``: the mean over module pairs of the normalised HSIC (CKA) with Gaussian kernels
    on standardised blocks (median-heuristic bandwidth),
    :math:`\mathrm{HSIC}_{ij} / \sqrt{\mathrm{HSIC}_{ii}\mathrm{HSIC}_{jj}}`: it also sees
    non-linear dependence, at ``O(K B²)`` cost, so use it with moderate batches.

    With ``max_units`` and ``m > max_units``, every call uses a fresh uniformly random subset of
    ``max_units`` features per module: an unbiased estimate of the ``"corr"`` value (each
    cross-block entry is equally likely to be drawn) at ``O(B (K s)²)`` instead of
    ``O(B (K m)²)`` cost, for wide modules.

    Args:
        z (Tensor): module outputs ``[B, K, m]``.
        kind (str): ``"corr"`` or ``"hsic"``. (default: :obj:`"corr"`)
        eps (float): variance floor of the standardisation (constant features give 0).
        max_units (int, optional): features per module to use (default: all).

    Returns:
        Tensor: scalar; ``0`` when ``B < 2`` or ``K < 2``.
    """
    _check_modules(z)
    if kind not in DECORRELATION_KINDS:
        raise ValidationError(f"kind: expected one of {DECORRELATION_KINDS}, got {kind!r}")
    b, k, _ = z.shape
    if b < 2 or k < 2:
        return z.sum() * 0.0
    if max_units is not None:
        if isinstance(max_units, bool) or not isinstance(max_units, int) or max_units < 1:
            raise ValidationError(f"max_units: expected a positive integer, got {max_units!r}")
        z = _sample_units(z, max_units)
    if kind == "corr":
        return _corr_decorrelation(z, eps)
    return _hsic_decorrelation(z, eps)


class ModuleDecorrelation(nn.Module):
    r"""Module form of :func:`decorrelation` (a penalty to add to the training loss).

    Args:
        kind (str): ``"corr"`` (batch-standardised cross-block correlation) or ``"hsic"``
            (normalised HSIC). (default: :obj:`"corr"`)
        eps (float): variance floor. (default: :obj:`1e-5`)
        max_units (int, optional): random features per module per call (default: all).

    Shapes:
        - **input:** ``z[B, K, m]``
        - **output:** scalar
    """

    def __init__(self, kind: str = "corr", eps: float = 1e-5,
                 max_units: int | None = None) -> None:
        super().__init__()
        if kind not in DECORRELATION_KINDS:
            raise ValidationError(f"kind: expected one of {DECORRELATION_KINDS}, got {kind!r}")
        self.kind, self.eps, self.max_units = kind, float(eps), max_units

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return decorrelation(z, self.kind, self.eps, self.max_units)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


# ============================================================================ invariance
def env_assignment(
    env: torch.Tensor, n_envs: int, weight: torch.Tensor | None = None,
    n_tasks: int | None = None, check: bool = True,
) -> torch.Tensor:
    """Soft assignment ``A[B, T, E]`` of every (example, task) to its environment:
    ``A[b, t, e] = weight[b, t] · 1[env[b, t] = e]`` (0 where ``env`` is ``-1``).

    Args:
        env (LongTensor): ``[B, T]``, or ``[B]`` (the same for every task; then ``n_tasks`` or
            ``weight`` gives ``T``).
        n_envs (int): number of environments ``E``.
        weight (Tensor, optional): importance weights ``[B, T]`` (default 1).
        check (bool): check that every id is below ``n_envs`` (a host synchronisation on a
            GPU; callers whose ids come from validated tables pass ``False``).
    """
    if env.dim() == 1:
        t = n_tasks if n_tasks is not None else (1 if weight is None else weight.shape[1])
        env = env[:, None].expand(-1, t)
    if env.dim() != 2:
        raise ValidationError(f"env: expected [B] or [B, T], got {tuple(env.shape)}")
    if check and bool((env >= n_envs).any()):
        raise ValidationError(f"env: ids must be < n_envs = {n_envs}, found {int(env.max())}")
    dtype = weight.dtype if weight is not None else torch.get_default_dtype()
    onehot = torch.nn.functional.one_hot(env.clamp_min(0), n_envs).to(dtype)
    keep = (env >= 0).to(dtype)
    if weight is not None:
        if weight.shape != env.shape:
            raise ValidationError(
                f"weight: expected shape {tuple(env.shape)}, got {tuple(weight.shape)}")
        keep = keep * weight
    return onehot * keep[..., None]


def split_halves(member: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    r"""Split every environment's examples of a batch into two halves, as ``2E`` environments.

    The ``i``-th example (in batch order) of environment ``e`` for task ``t`` goes to
    environment ``e`` when ``i`` is even and ``e + E`` when it is odd, so the halves of every
    (task, environment) differ in size by at most one. Used by the unbiased IRMv1 estimate
    (:func:`irmv1_penalty` with ``split=True``): the product of the two halves' gradients has
    the expectation :math:`\lVert \mathbb{E}\, \nabla R \rVert^2`, while the square of one
    mini-batch gradient adds its sampling variance, which is large when an environment has
    few examples per batch.

    Args:
        member (Tensor): ``[B, T, E]`` one-hot (or 0/1) membership, e.g. :func:`env_assignment`
            without weights.
        *others (Tensor): further ``[B, T, E]`` tensors (e.g. the weighted assignment) split
            along with ``member``, by ``member``'s halves.

    Returns:
        ``member`` and every tensor of ``others`` as ``[B, T, 2E]``.
    """
    if member.dim() != 3:
        raise ValidationError(f"member: expected [B, T, E], got {tuple(member.shape)}")
    inside = member > 0
    rank = inside.to(torch.long).cumsum(dim=0)                       # 1-based rank per (t, e)
    odd = (inside & (rank % 2 == 0)).any(dim=-1, keepdim=True)       # [B, T, 1]
    out = []
    for a in (member, *others):
        if a.shape != member.shape:
            raise ValidationError(
                f"others: expected shape {tuple(member.shape)}, got {tuple(a.shape)}")
        zero = torch.zeros_like(a)
        out.append(torch.cat([torch.where(odd, zero, a), torch.where(odd, a, zero)], dim=-1))
    return tuple(out)


def env_risks(
    loss: torch.Tensor,
    env: torch.Tensor,
    n_envs: int | None = None,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Weighted mean loss of every (environment, task) pair.

    .. math::
        R_t^e = \frac{\sum_{n:\, e_{nt} = e} a_{nt}\, \ell_{nt}}{\sum_{n:\, e_{nt} = e} a_{nt}}

    One contraction with the assignment matrix (no loop over environments or tasks).

    Args:
        loss (Tensor): per-example losses ``[B, T]`` (finite; 0 where a label is missing).
        env (Tensor): environment of every (example, task) ``[B, T]`` (or ``[B]``, the same for
            every task), ``-1`` excluding the pair; or an assignment ``[B, T, E]`` from
            :func:`env_assignment` (then ``n_envs`` and ``weight`` are not used).
        n_envs (int): number of environments ``E`` (ids ``0 .. E-1``).
        weight (Tensor, optional): importance weights ``a[B, T]`` (default 1); 0 excludes.

    Returns:
        ``(risks [E, T], mass [E, T])``: ``mass`` is the summed weight (0 = no data, and then
        the risk is 0).
    """
    if loss.dim() != 2:
        raise ValidationError(f"loss: expected [B, T], got {tuple(loss.shape)}")
    if env.dim() == 3:
        assign = env.to(loss.dtype)
    else:
        if n_envs is None:
            raise ValidationError("n_envs: needed when env holds environment ids")
        assign = env_assignment(env, n_envs, weight, n_tasks=loss.shape[1]).to(loss.dtype)
    if assign.shape[:2] != loss.shape:
        raise ValidationError(
            f"env: expected [B, T, E] with [B, T] = {list(loss.shape)}, got {tuple(assign.shape)}")
    num = torch.einsum("bte,bt->et", assign, loss)
    mass = assign.sum(dim=0).T
    return num / mass.clamp_min(1e-12), mass


Dummies = torch.Tensor | Sequence[torch.Tensor]


def _as_list(dummies: Dummies) -> list[torch.Tensor]:
    out = [dummies] if isinstance(dummies, torch.Tensor) else list(dummies)
    if not out:
        raise ValidationError("dummy: expected at least one dummy tensor")
    for d in out:
        if not isinstance(d, torch.Tensor) or not d.requires_grad:
            raise ValidationError("dummy: must be tensors with requires_grad=True "
                                  "(see RouterInvariancePenalty.dummy)")
    return out


def dummy_gradients(risks: torch.Tensor, dummies: Dummies) -> torch.Tensor:
    """Gradients of ``sum(R)`` w.r.t. every dummy, flattened and concatenated ``[E, T, D]``
    (with ``create_graph=True``, so a penalty built from them trains)."""
    ds = _as_list(dummies)
    grads = torch.autograd.grad(risks.sum(), ds, create_graph=True, allow_unused=True)
    e, t = risks.shape
    flat = [torch.zeros(e, t, 0, dtype=risks.dtype, device=risks.device)]
    for d, g in zip(ds, grads):
        flat.append((torch.zeros_like(d) if g is None else g).reshape(e, t, -1))
    return torch.cat(flat, dim=-1)


def irmv1_penalty(
    risks: torch.Tensor, dummy: Dummies, valid: torch.Tensor | None = None, split: bool = False
) -> torch.Tensor:
    r"""IRMv1 on the routing: squared gradient of every environment's risk w.r.t. a dummy
    multiplier of the task's gate vector (and any further dummies), at the dummy's value.

    .. math::
        P_t = \sum_{e} \bigl\lVert \nabla_{\mathbf{w}_{e,t}} R_t^e(\mathbf{g}_t \odot
        \mathbf{w}_{e,t}) \bigr\rVert_2^2 \Big|_{\mathbf{w} = \mathbf{1}}

    ``dummy`` holds one copy ``w[e, t]`` per environment and task, and the examples of
    environment ``e`` must have used ``g_t ⊙ w[e, t]``: then the gradient of
    :math:`\sum_{e,t} R_t^e` w.r.t. ``w[e, t]`` is exactly
    :math:`\partial R_t^e / \partial \mathbf{w}_{e,t}` and one backward pass serves every
    environment and task. The graph is kept (``create_graph=True``) so the penalty trains.
    Several dummies (e.g. gate multipliers ``[E, T, K]`` and an intercept shift
    ``[E, T, C]``) may be passed as a sequence; their squared gradients add up.

    With ``split=True`` the ``2E`` environments are two halves of ``E`` (:func:`split_halves`)
    and the square is replaced by the product of the halves' gradients,
    :math:`\langle \nabla R_t^{e,1}, \nabla R_t^{e,2} \rangle` — the unbiased estimate of
    :math:`\lVert \mathbb{E}\,\nabla R_t^e \rVert^2` that Arjovsky et al. (2019, §3.2)
    recommend; the plain square is biased upwards by the gradient's sampling variance. A pair
    counts only when both halves are valid.

    Args:
        risks (Tensor): ``R[E, T]`` from :func:`env_risks` (``[2E, T]`` with ``split``).
        dummy (Tensor or sequence of Tensor): ``[E, T, ...]`` with ``requires_grad=True``.
        valid (BoolTensor, optional): ``[E, T]`` pairs to count (default: all).
        split (bool): the halves' product instead of the square. (default: :obj:`False`)

    Returns:
        Tensor: per-task penalty ``[T]``.
    """
    return _irmv1_from_grads(dummy_gradients(risks, dummy), valid, split)


def _irmv1_from_grads(grads: torch.Tensor, valid: torch.Tensor | None,
                      split: bool) -> torch.Tensor:
    if split:
        e = grads.shape[0] // 2
        if grads.shape[0] != 2 * e:
            raise ValidationError(
                f"dummy: split=True needs 2E environments (two halves), got {grads.shape[0]}")
        sq = (grads[:e] * grads[e:]).sum(dim=-1)
        if valid is not None:
            valid = valid[:e] & valid[e:]
    else:
        sq = grads.pow(2).sum(dim=-1)
    if valid is not None:
        sq = torch.where(valid, sq, torch.zeros_like(sq))
    return sq.sum(dim=0)


def _masked_var(v: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Variance over dim 0 of ``v[E, T, ...]`` using only ``valid[E, T]`` entries; 0 if < 2."""
    while valid.dim() < v.dim():
        valid = valid[..., None]
    w = valid.to(v.dtype)
    n = w.sum(dim=0)
    mean = (v * w).sum(dim=0) / n.clamp_min(1)
    var = ((v - mean).pow(2) * w).sum(dim=0) / n.clamp_min(1)
    return torch.where(n >= 2, var, torch.zeros_like(var))


def gradient_variance_penalty(
    risks: torch.Tensor, dummy: Dummies, valid: torch.Tensor | None = None
) -> torch.Tensor:
    r"""Variance across environments of the gradient of each task's risk w.r.t. its gates.

    .. math::
        P_t = \sum_{k} \operatorname{Var}_e\!\left[
        \frac{\partial R_t^e}{\partial w_{e,t,k}} \right]_{\mathbf{w} = \mathbf{1}}

    Zero when every environment asks for the same change of the routing (also when that change
    is not zero, unlike IRMv1); see :func:`irmv1_penalty` for ``dummy``.

    Returns:
        Tensor: per-task penalty ``[T]``.
    """
    grad = dummy_gradients(risks, dummy)
    if valid is None:
        valid = torch.ones(risks.shape, dtype=torch.bool, device=risks.device)
    return _masked_var(grad, valid).sum(dim=-1)


def vrex_penalty(risks: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    r"""V-REx (Krueger et al. 2021): variance of each task's risk across environments,
    :math:`P_t = \operatorname{Var}_e R_t^e`. A baseline; it needs no dummy.

    Returns:
        Tensor: per-task penalty ``[T]``.
    """
    if valid is None:
        valid = torch.ones(risks.shape, dtype=torch.bool, device=risks.device)
    return _masked_var(risks, valid)


def conditional_independence(
    f: torch.Tensor,
    y: torch.Tensor,
    member: torch.Tensor,
    n_classes: int,
    mask: torch.Tensor | None = None,
    unbiased: bool = False,
    standardize: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    r"""How much each task's features depend on its environment *given its own label*: the
    squared conditional cross-covariance between the standardised features and the
    environment indicators, within the task's classes (a linear-kernel conditional HSIC).

    For task ``t``, rows :math:`b` with an observed class :math:`y_{bt}` and an environment
    (``member[b, t]`` not all zero) count (:math:`n_t` of them). With per-class batch means
    :math:`\bar f_{tc}`, :math:`\bar m_{tc}` and the features' pooled within-class standard
    deviation :math:`\sigma_{td}` over the counted rows,

    .. math::
        r_{btd} = \frac{f_{btd} - \bar f_{t y_{bt} d}}{\sigma_{td}}, \quad
        o_{bte} = m_{bte} - \bar m_{t y_{bt} e}, \quad
        \hat C_{tde} = \frac1{n_t} \sum_b r_{btd}\, o_{bte}, \quad
        P_t = \frac1{D_t} \sum_{d,e} \hat C_{tde}^2,

    :math:`D_t` the task's feature columns (``mask``). Dividing by the within-class (not the
    total) spread makes :math:`\hat C` a correlation-like quantity that the model cannot lower
    by collapsing its features inside each class. :math:`P_t = 0` exactly when, inside
    every class of the batch, each environment's mean feature equals the class mean: the
    first-moment form of :math:`f_t \perp e \mid y_t`, which holds for a predictor that reads
    only the task's own causal features when the environments are strata of the other tasks'
    labels (the other task's label affects the input only through its own features), and that a
    predictor reading the other task's features violates. Unlike IRMv1 per environment, every
    counted row enters one estimate, so rare label combinations need no minimum count. The
    zero set does not change when rows are drawn with probabilities that depend on the labels
    and environments only (balanced sampling). ``unbiased`` replaces the square by the
    U-statistic :math:`(\lVert \sum_b r_b o_b^\top \rVert^2 - \sum_b \lVert r_b \rVert^2
    \lVert o_b \rVert^2) / (n_t (n_t - 1))`, which drops the sampling-noise term
    :math:`\sum_b \lVert r_b\rVert^2 \lVert o_b\rVert^2 / n_t^2` of the square (it can be
    negative).

    Args:
        f (Tensor): features ``[B, T, D]`` (head outputs or node states).
        y (Tensor): class labels ``[B, T]`` (NaN = missing; a task without classes, e.g.
            regression, must be excluded by the caller through ``member``).
        member (Tensor): environment membership ``[B, T, E]`` (1 in the row's environment, all
            zero = the row does not count for the task).
        n_classes (int): classes ``C`` (labels in ``[0, C)``).
        mask (Tensor, optional): ``[T, D]`` columns each task has (default: all).
        unbiased (bool): the U-statistic instead of the square. (default: :obj:`False`)
        standardize (bool): divide by :math:`\sigma_{td}`; ``False`` keeps the features'
            own scale (:math:`\sigma = 1`: for bounded features such as class
            probabilities). (default: :obj:`True`)
        eps (float): added to the variances. (default: :obj:`1e-6`)

    Returns:
        Tensor: per-task penalty ``[T]`` (0 for a task with fewer than two counted rows).
    """
    if f.dim() != 3 or y.shape != f.shape[:2] or member.shape[:2] != f.shape[:2]:
        raise ValidationError(
            f"f [B, T, D], y [B, T] and member [B, T, E] must agree, got {tuple(f.shape)}, "
            f"{tuple(y.shape)}, {tuple(member.shape)}")
    dtype = f.dtype
    obs = ~torch.isnan(y)
    member = member.to(dtype)
    use = (obs & (member.sum(-1) > 0)).to(dtype)                           # [B, T]
    lab = torch.where(obs, y, torch.zeros_like(y)).long().clamp(0, int(n_classes) - 1)
    onehot = torch.nn.functional.one_hot(lab, int(n_classes)).to(dtype) * use[..., None]
    n_c = onehot.sum(dim=0)                                                # [T, C]
    n = use.sum(dim=0)                                                     # [T]
    # per-class batch means of the features and of the environment indicators
    f_mean = torch.einsum("btc,btd->tcd", onehot, f) / n_c.clamp_min(1)[..., None]
    m_mean = torch.einsum("btc,bte->tce", onehot, member) / n_c.clamp_min(1)[..., None]
    r = (f - torch.einsum("btc,tcd->btd", onehot, f_mean)) * use[..., None]
    o = (member - torch.einsum("btc,tce->bte", onehot, m_mean)) * use[..., None]
    # pooled within-class standard deviation of every feature over the counted rows (the
    # penalty cannot be lowered by shrinking the features' spread inside the classes)
    var = r.pow(2).sum(dim=0) / n.clamp_min(1)[:, None]
    if mask is None:
        mask = torch.ones(f.shape[1:], dtype=dtype, device=f.device)
    mask = mask.to(dtype)
    r = r * mask / (var + eps).sqrt() if standardize else r * mask
    s = torch.einsum("btd,bte->tde", r, o)                                 # [T, D, E]
    sq = s.pow(2).sum(dim=(1, 2))
    if unbiased:
        sq = sq - (r.pow(2).sum(-1) * o.pow(2).sum(-1)).sum(dim=0)
        norm = n * (n - 1)
    else:
        norm = n * n
    out = sq / norm.clamp_min(1) / mask.sum(dim=1).clamp_min(1)
    return torch.where(n >= 2, out, torch.zeros_like(out))


class RouterInvariancePenalty(nn.Module):
    r"""Invariance penalty on the task → module routing across environments.

    Three kinds, all vectorised over environments and tasks:

    - ``"irmv1"`` (default): :func:`irmv1_penalty`, the squared gradient of every environment's
      risk w.r.t. a dummy multiplier of the task's gate vector;
    - ``"grad_var"``: :func:`gradient_variance_penalty`, the variance of that gradient across
      environments;
    - ``"vrex"``: :func:`vrex_penalty`, the variance of the risks (no dummy; a baseline).

    Usage: build the dummies with :meth:`dummy` (gate multipliers, ones) and optionally
    :meth:`shift` (an intercept shift, zeros); for every example of environment ``e``, gate task
    ``t`` with ``g[t] * w[e, t]`` and add ``u[e, t]`` to its head output; compute per-example
    losses, then call the module::

        w = penalty.dummy(n_envs, n_tasks, n_modules, like=gates)
        ... out = heads(router(z, gates_per_example(w))) + u[env, task] ...
        p = penalty(loss[B, T], env[B, T], [w, u], weight=a[B, T])     # [T]

    Equivalently (what :class:`~taskgraph.learners.MTCRL` does, with one-hot contractions
    instead of gathers, which are cheaper to differentiate twice), use zero offsets
    ``δ = shift(E, T, K)`` and gates ``g ⊙ (1 + A δ)`` with ``A = env_assignment(env, E)``:
    the gradient w.r.t. ``δ`` equals the gradient w.r.t. ``w`` at ``w = 1``.

    An (environment, task) pair of a batch counts only with at least ``min_mass`` weight and
    ``min_rows`` *effective* rows, Kish's :math:`n_{\text{eff}} = (\sum_n a_n)^2 / \sum_n
    a_n^2` of its importance weights (the row count when all weights are equal). The square of
    a mini-batch gradient over :math:`n` rows overestimates the squared expected gradient by
    about :math:`\operatorname{tr}\Sigma / n_{\text{eff}}`, the per-row gradient variance:
    for environments with a handful of (re-weighted) rows per batch that noise term dominates
    the penalty, and penalising it keeps the heads from fitting (docs/mtcrl.md).

    With ``split=True`` (``"irmv1"`` only) the caller passes every environment as two halves
    (:func:`split_halves`, ``2E`` environments and dummies) and the penalty is the unbiased
    product of the halves' gradients (:func:`irmv1_penalty`); a half counts with half the
    thresholds.

    Args:
        kind (str): ``"irmv1"``, ``"grad_var"`` or ``"vrex"``. (default: :obj:`"irmv1"`)
        min_mass (float): smallest summed weight of a counted pair. (default: :obj:`2.0`)
        min_rows (float): smallest effective number of rows of a counted pair.
            (default: :obj:`0.0`)
        split (bool): the unbiased two-halves IRMv1 estimate. (default: :obj:`False`)
    """

    def __init__(self, kind: str = "irmv1", min_mass: float = 2.0, split: bool = False,
                 min_rows: float = 0.0) -> None:
        super().__init__()
        if kind not in INVARIANCE_KINDS:
            raise ValidationError(f"kind: expected one of {INVARIANCE_KINDS}, got {kind!r}")
        if split and kind != "irmv1":
            raise ValidationError(f"split: only the 'irmv1' penalty has a split estimate, "
                                  f"got kind={kind!r}")
        if isinstance(min_rows, bool) or not isinstance(min_rows, (int, float)) or not (
                min_rows >= 0 and np.isfinite(min_rows)):
            raise ValidationError(f"min_rows: expected a finite number >= 0, got {min_rows!r}")
        self.kind, self.min_mass, self.split = kind, float(min_mass), bool(split)
        self.min_rows = float(min_rows)

    @property
    def needs_dummy(self) -> bool:
        """Whether the penalty differentiates w.r.t. dummies."""
        return self.kind != "vrex"

    @staticmethod
    def dummy(n_envs: int, n_tasks: int, n_modules: int, like: torch.Tensor) -> torch.Tensor:
        """Gate multipliers: ones ``[E, T, K]``, ``requires_grad=True``, like ``like``."""
        return torch.ones(n_envs, n_tasks, n_modules, dtype=like.dtype, device=like.device,
                          requires_grad=True)

    @staticmethod
    def shift(n_envs: int, n_tasks: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """Intercept shifts: zeros ``[E, T, C]``, ``requires_grad=True``, like ``like``."""
        return torch.zeros(n_envs, n_tasks, width, dtype=like.dtype, device=like.device,
                           requires_grad=True)

    def forward(
        self,
        loss: torch.Tensor,
        env: torch.Tensor,
        dummy: Dummies | None,
        weight: torch.Tensor | None = None,
        n_envs: int | None = None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-task penalty ``[T]`` from per-example losses ``[B, T]`` and environments
        ``[B, T]`` or ``[B]`` (``-1`` = excluded) or an assignment ``[B, T, E]``
        (:func:`env_assignment`, weights included); ``dummy``: tensor(s) ``[E, T, ...]``
        (``None`` for ``"vrex"``); ``n_envs`` defaults to the dummies' ``E`` (or
        ``max(env) + 1``); ``valid`` is :meth:`valid` of the assignment when the caller has
        it already."""
        if self.needs_dummy and dummy is None:
            raise ValidationError(f"dummy: the {self.kind!r} penalty needs the dummy multiplier")
        if env.dim() != 3:
            if n_envs is None:
                n_envs = (int(_as_list(dummy)[0].shape[0]) if dummy is not None
                          else int(env.max().clamp_min(0)) + 1)
            env = env_assignment(env, n_envs, weight, n_tasks=loss.shape[1]).to(loss.dtype)
        risks, _ = env_risks(loss, env)
        if valid is None:
            valid = self.valid(env)
        if self.kind == "irmv1":
            return irmv1_penalty(risks, dummy, valid, split=self.split)
        if self.kind == "grad_var":
            return gradient_variance_penalty(risks, dummy, valid)
        return vrex_penalty(risks, valid)

    def from_gradients(self, grads: torch.Tensor, valid: torch.Tensor | None = None
                       ) -> torch.Tensor:
        """The ``"irmv1"`` or ``"grad_var"`` penalty ``[T]`` from the dummy gradients
        ``∂R_t^e/∂w_{e,t}`` computed elsewhere (e.g. in closed form), ``grads[E, T, D]``."""
        if self.kind == "vrex":
            raise ValidationError("kind: the 'vrex' penalty is computed from risks, not gradients")
        if valid is None:
            valid = torch.ones(grads.shape[:2], dtype=torch.bool, device=grads.device)
        if self.kind == "irmv1":
            return _irmv1_from_grads(grads, valid, self.split)
        return _masked_var(grads, valid).sum(dim=-1)

    def valid(self, assign: torch.Tensor) -> torch.Tensor:
        """Which (environment, task) pairs of an assignment ``[B, T, E]`` count, ``[E, T]``:
        summed weight ``>= min_mass`` and effective rows ``>= min_rows`` (both halved under
        ``split``)."""
        scale = 0.5 if self.split else 1.0
        mass = assign.sum(dim=0).T
        ok = mass >= self.min_mass * scale
        if self.min_rows > 0:
            ess = mass.pow(2) / assign.pow(2).sum(dim=0).T.clamp_min(1e-30)
            ok = ok & (ess >= self.min_rows * scale)
        return ok

    def extra_repr(self) -> str:
        return (f"kind={self.kind!r}, min_rows={self.min_rows:g}"
                + (", split=True" if self.split else ""))


# ============================================================================ environments
class LabelEnvironments:
    r"""Environments of each task built from the *other* tasks' labels, with re-balancing.

    For task ``t`` the environment of an example is its stratum of the joint labels of the
    other classification tasks (mixed-radix code, reduced modulo ``max_envs`` when there are
    more strata than that: merging strata still gives a valid, coarser partition). Inside every
    environment task ``t``'s classes are re-balanced by importance weights

    .. math::
        a_{n} = \frac{1}{C_t\, \hat{p}(y_t = y_{nt} \mid e_{nt})},

    estimated on the training data, so that conditioning on another task's label does not shift
    task ``t``'s class balance: only modules whose relation to ``y_t`` changes across the other
    task's strata (spurious, confounded ones) are penalised, not the causal ones. Strata where
    task ``t`` shows fewer than two classes are dropped. Regression tasks are not targets of
    this construction (their rows get environment ``-1``) nor stratifying tasks.

    Args:
        n_classes (sequence of int): classes per task (0 for regression), in task order.
        max_envs (int): cap on the number of environments. (default: :obj:`16`)
        rebalance (bool): apply the class re-balancing weights. (default: :obj:`True`)
    """

    def __init__(self, n_classes: Sequence[int], max_envs: int = 16,
                 rebalance: bool = True) -> None:
        self.n_classes = [int(c) for c in n_classes]
        if not isinstance(max_envs, int) or max_envs < 2:
            raise ValidationError(f"max_envs: expected an integer >= 2, got {max_envs!r}")
        self.max_envs = max_envs
        self.rebalance = bool(rebalance)
        t = len(self.n_classes)
        cls = [c >= 2 for c in self.n_classes]
        radix = np.zeros((t, t), dtype=np.int64)
        sizes = np.ones(t, dtype=np.int64)
        for i in range(t):
            mult = 1
            for j in range(t):
                if j != i and cls[j]:
                    radix[i, j] = mult % max_envs
                    mult *= self.n_classes[j]
            # the strata count, capped (only min(count, max_envs) is used; 2^199 strata of 200
            # binary tasks do not fit an int64)
            sizes[i] = min(mult, max_envs) if cls[i] and any(
                cls[j] for j in range(t) if j != i) else 0
        self._radix = torch.from_numpy(radix)
        self._is_cls = torch.tensor(cls)
        self._others = torch.tensor([[j != i and cls[j] for j in range(t)] for i in range(t)])
        self._target = torch.tensor([cls[i] and sizes[i] >= 2 for i in range(t)])
        self.n_envs = int(max(2, min(int(sizes.max(initial=0)), max_envs)))
        self._table: torch.Tensor | None = None

    @property
    def active(self) -> torch.Tensor:
        """Bool ``[T]``: tasks that get environments (classification, with another
        classification task to stratify by)."""
        return self._target.clone()

    def codes(self, y: torch.Tensor) -> torch.Tensor:
        """Environment of every (example, task) ``[N, T]`` long; ``-1`` where excluded."""
        obs = ~torch.isnan(y)
        y0 = torch.where(obs, y, torch.zeros_like(y)).long()
        radix = self._radix.to(y.device)
        code = (y0[:, None, :] * radix[None]).sum(-1) % self.max_envs  # [N, T]
        others = self._others.to(y.device)
        complete = (obs[:, None, :] | ~others[None]).all(-1)
        ok = complete & obs & self._target.to(y.device)[None]
        return torch.where(ok, code, torch.full_like(code, -1))

    def fit(self, y: torch.Tensor) -> LabelEnvironments:
        """Estimate the per-environment class frequencies of every task on training labels."""
        self._table = class_balance_table(self.codes(y), y, self.n_classes, self.n_envs,
                                          rebalance=self.rebalance)
        return self

    def n_active_envs(self, y: torch.Tensor) -> torch.Tensor:
        """Per task, the number of environments holding at least two classes ``[T]``."""
        if self._table is None:
            self.fit(y)
        assert self._table is not None
        return (self._table.sum(-1) > 0).sum(-1)

    def __call__(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(env [B, T], weight [B, T])`` for a batch of labels ``y[B, T]``."""
        if self._table is None:
            raise ValidationError("LabelEnvironments: call fit(train_y) first")
        return balance_weights(self._table, self.codes(y), y)


def class_balance_table(
    env: torch.Tensor,
    y: torch.Tensor,
    n_classes: Sequence[int],
    n_envs: int,
    rebalance: bool = True,
) -> torch.Tensor:
    r"""Per (task, environment, class) importance weights that balance each task's classes
    inside every environment, :math:`a = 1 / (C_t\, \hat{p}(y_t = c \mid e))`.

    Environments where a classification task shows fewer than two classes get weight 0 (they
    cannot be balanced). Regression tasks (``n_classes`` 0) get weight 1 wherever the
    environment has data. With ``rebalance=False`` every kept cell has weight 1.

    Args:
        env (LongTensor): ``[N, T]`` environment of every (example, task); ``-1`` = excluded.
        y (Tensor): labels ``[N, T]`` (NaN = missing, excluded).
        n_classes (sequence of int): classes per task (0 = regression).
        n_envs (int): number of environments ``E``.
        rebalance (bool): compute balancing weights (else 0/1 validity only).

    Returns:
        Tensor: ``[T, E, C]`` float, ``C = max(2, max n_classes)``.
    """
    t = len(n_classes)
    c = max([2] + [int(k) for k in n_classes])
    obs = ~torch.isnan(y)
    is_cls_row = torch.tensor([int(k) >= 2 for k in n_classes], device=y.device)[None, :]
    lab = torch.where(obs & is_cls_row, y, torch.zeros_like(y)).long().clamp(0, c - 1)
    ok = (env >= 0) & obs
    idx = (torch.arange(t, device=y.device)[None, :] * n_envs + env.clamp_min(0)) * c + lab
    counts = torch.zeros(t * n_envs * c, dtype=torch.float64, device=y.device)
    counts.index_add_(0, idx[ok], torch.ones(int(ok.sum()), dtype=torch.float64,
                                             device=y.device))
    counts = counts.reshape(t, n_envs, c)
    is_cls = torch.tensor([int(k) >= 2 for k in n_classes], device=y.device)[:, None, None]
    n_cls = torch.tensor([max(int(k), 1) for k in n_classes], dtype=torch.float64,
                         device=y.device)[:, None, None]
    freq = counts / counts.sum(-1, keepdim=True).clamp_min(1)
    present = (counts > 0).sum(-1, keepdim=True)
    # regression tasks: one weight for every value column wherever the environment has data
    keep = torch.where(is_cls, (counts > 0) & (present >= 2), present > 0)
    weight = 1.0 / (n_cls * freq.clamp_min(1e-12)) if rebalance else torch.ones_like(freq)
    weight = torch.where(is_cls, weight, torch.ones_like(weight))
    return torch.where(keep, weight, torch.zeros_like(weight)).float()


def balance_weights(
    table: torch.Tensor, env: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Look up :func:`class_balance_table` weights for a batch: ``(env [B, T], weight [B, T])``,
    with ``env = -1`` wherever the weight is 0 (excluded pairs)."""
    t = y.shape[1]
    table = table.to(y.device)
    if env.dim() == 1:
        env = env[:, None].expand(-1, t)
    obs = ~torch.isnan(y)
    lab = torch.where(obs, y, torch.zeros_like(y)).long().clamp(0, table.shape[-1] - 1)
    inside = (env >= 0) & (env < table.shape[1]) & obs
    e = env.clamp(0, table.shape[1] - 1)
    w = table[torch.arange(t, device=y.device)[None, :], e, lab]
    w = torch.where(inside, w, torch.zeros_like(w))
    return torch.where(w > 0, env, torch.full_like(env, -1)), w


def warn_single_environment(reason: str) -> None:
    """Warn (``UserWarning``) that the invariance penalty is disabled, and why."""
    warnings.warn(
        f"the invariance penalty is disabled: {reason}. Pass data with an `env` vector holding "
        "at least two environments, or environments='labels' with at least two classification "
        "tasks, or set invariance=0 to silence this warning.",
        UserWarning,
        stacklevel=3,
    )
