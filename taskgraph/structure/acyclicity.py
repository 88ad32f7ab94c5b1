r"""Acyclicity of a weighted task adjacency and the augmented-Lagrangian schedule that enforces it.

For a weighted adjacency :math:`A \in \mathbb{R}^{T \times T}` (``A[src, dst]``), NOTEARS'

.. math::
    h(A) = \operatorname{tr}\left(e^{A \circ A}\right) - T

is zero exactly when the graph of non-zero entries is a DAG and positive otherwise, with gradient
:math:`\nabla h(A) = 2 \left(e^{A \circ A}\right)^\top \circ A`. DAG-GNN's polynomial form
:math:`\operatorname{tr}\left[(I + A \circ A / T)^T\right] - T` has the same zero set. For large
sparse candidate graphs, :func:`acyclicity_sparse` estimates the trace of the exponential with
Hutchinson probes and a truncated series of sparse mat-vecs, so the cost grows with the number of
edges, not with :math:`T^2`.

Both stay NaN-free for any finite weights. Closed walks only use edges inside strongly connected
components, so :math:`h` and its gradient depend on those edges alone (every other edge has
gradient exactly 0). When the plain evaluation overflows (huge weights), :math:`h` is evaluated
again on the edges inside strongly connected components, in float64: a DAG gives exactly 0 with
zero gradient whatever its weights, and a cycle too heavy for the dtype gives ``+inf``, never NaN.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from taskgraph.exceptions import ValidationError

__all__ = ["acyclicity", "acyclicity_sparse", "AugmentedLagrangian"]

_KINDS = ("expm", "poly")


def _same_component(src: torch.Tensor, dst: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Bool ``[E]``: edge ``src[e] -> dst[e]`` lies inside one strongly connected component
    (it is on a cycle; a self-loop is one)."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    s, d = src.detach().cpu().numpy(), dst.detach().cpu().numpy()
    graph = coo_matrix((np.ones(len(s)), (s, d)), shape=(n_nodes, n_nodes)).tocsr()
    _, labels = connected_components(graph, directed=True, connection="strong")
    lab = torch.as_tensor(labels, device=src.device)
    return lab[src] == lab[dst]


def _overflow_guard(h: torch.Tensor, weight: torch.Tensor, n_nodes: int) -> bool:
    """Whether the plain value can be trusted: finite, and weights small enough that squaring
    them (and summing ``n_nodes`` products) cannot overflow on the way (one host sync)."""
    if weight.numel() == 0:
        return True
    limit = math.sqrt(torch.finfo(weight.dtype).max) / max(n_nodes, 1)
    return bool(torch.isfinite(h) & (weight.detach().abs().amax() < limit))


class _TraceExp(torch.autograd.Function):
    r""":math:`\operatorname{tr} e^{M}` with the exact gradient :math:`(e^{M})^\top`, reusing the
    forward's exponential (autograd through ``matrix_exp`` would exponentiate a ``[2T, 2T]``
    block matrix again in the backward pass)."""

    @staticmethod
    def forward(ctx: Any, m: torch.Tensor) -> torch.Tensor:
        e = torch.linalg.matrix_exp(m)
        ctx.save_for_backward(e)
        return e.diagonal().sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (e,) = ctx.saved_tensors
        return grad * e.t()


def _dense_h(adjacency: torch.Tensor, kind: str) -> torch.Tensor:
    t = adjacency.shape[0]
    sq = adjacency * adjacency
    if kind == "expm":
        return _TraceExp.apply(sq) - t
    eye = torch.eye(t, dtype=adjacency.dtype, device=adjacency.device)
    return torch.linalg.matrix_power(eye + sq / t, t).diagonal().sum() - t


def _saturated(h: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``h`` in ``like``'s dtype, ``+inf`` (with zero gradient) where it is not finite."""
    zero = (like * 0).sum()
    if bool(torch.isfinite(h)):
        return h.to(like.dtype)
    return zero + math.inf


def acyclicity(adjacency: torch.Tensor, kind: str = "expm") -> torch.Tensor:
    r"""Dense acyclicity measure :math:`h(A) \ge 0`, zero iff ``A`` is a DAG.

    Args:
        adjacency (Tensor): ``[T, T]`` weighted adjacency (``A[src, dst]``).
        kind (str): ``"expm"`` (NOTEARS, :math:`\operatorname{tr} e^{A\circ A} - T`) or
            ``"poly"`` (DAG-GNN, :math:`\operatorname{tr}(I + A\circ A/T)^T - T`).

    Returns:
        Tensor: scalar :math:`h(A)`, differentiable in ``A``.
    """
    if adjacency.dim() != 2 or adjacency.shape[0] != adjacency.shape[1]:
        raise ValidationError(f"adjacency: expected a square [T, T] tensor, got "
                              f"{tuple(adjacency.shape)}")
    if kind not in _KINDS:
        raise ValidationError(f"kind: expected one of {_KINDS}, got {kind!r}")
    t = adjacency.shape[0]
    h = _dense_h(adjacency, kind)
    if _overflow_guard(h, adjacency, t):
        return h
    src, dst = (adjacency != 0).nonzero(as_tuple=True)
    inner = torch.zeros(t, t, dtype=torch.bool, device=adjacency.device)
    inner[src, dst] = _same_component(src, dst, t)
    if not bool(inner.any()):  # a DAG: h = 0 and its gradient is 0, whatever the weights
        return (adjacency * 0).sum()
    cyc = torch.where(inner, adjacency.double(), torch.zeros((), dtype=torch.float64,
                                                              device=adjacency.device))
    return _saturated(_dense_h(cyc, kind), adjacency)


def acyclicity_sparse(
    edge_index: torch.Tensor,
    edge_weight: torch.Tensor,
    n_nodes: int,
    n_probes: int = 16,
    n_terms: int = 12,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Stochastic estimate of :math:`\operatorname{tr}(e^{W}) - T` for sparse :math:`W = A\circ A`.

    .. math::
        \hat h = \frac{1}{P} \sum_{p=1}^{P} \sum_{k=1}^{K} \frac{\mathbf{z}_p^\top W^k
        \mathbf{z}_p}{k!}, \qquad \mathbf{z}_p \in \{\pm 1\}^T

    (the :math:`k = 0` term equals :math:`T` in expectation and is dropped). Unbiased up to the
    series truncation, which only loses cycles longer than ``n_terms``; cost
    :math:`O(P \cdot K \cdot E)`. Differentiable in ``edge_weight``.

    Args:
        edge_index (LongTensor): ``[2, E]`` candidate edges ``(src, dst)``.
        edge_weight (Tensor): ``[E]`` weights :math:`A_e`.
        n_nodes (int): ``T``.
        n_probes (int): Rademacher probes ``P``.
        n_terms (int): series terms ``K``.
        generator (torch.Generator, optional): for reproducible probes.
    """
    if edge_index.numel() == 0:
        return edge_weight.sum() * 0.0
    state = None if generator is None else generator.get_state()
    h = _hutchinson(edge_index, edge_weight, n_nodes, n_probes, n_terms, generator)
    if _overflow_guard(h, edge_weight, n_nodes):
        return h
    keep = _same_component(edge_index[0], edge_index[1], n_nodes)
    if not bool(keep.any()):  # a DAG: h = 0 and its gradient is 0, whatever the weights
        return (edge_weight * 0).sum()
    if generator is not None:  # the same probes as the plain estimate
        generator.set_state(state)
    h = _hutchinson(edge_index[:, keep], edge_weight[keep].double(), n_nodes, n_probes, n_terms,
                    generator)
    return _saturated(h, edge_weight)


def _hutchinson(edge_index: torch.Tensor, edge_weight: torch.Tensor, n_nodes: int,
                n_probes: int, n_terms: int, generator: torch.Generator | None) -> torch.Tensor:
    w = edge_weight * edge_weight
    z = torch.randint(0, 2, (n_nodes, n_probes), generator=generator,
                      device=edge_weight.device).to(edge_weight.dtype) * 2 - 1
    src, dst = edge_index[0], edge_index[1]
    v = z
    total = edge_weight.new_zeros(())
    for k in range(1, n_terms + 1):
        # (W^T v)[dst] += w * v[src]  — propagate along edges, O(E * P)
        nxt = torch.zeros_like(v).index_add(0, dst, w[:, None] * v[src])
        v = nxt
        # the coefficient as a Python float: n_probes * k! overflows int64 for k >= 21
        total = total + (z * v).sum() * (1.0 / n_probes / math.factorial(k))
    return total


class AugmentedLagrangian:
    r"""NOTEARS' augmented-Lagrangian schedule for the constraint :math:`h(A) = 0`.

    The penalty added to the loss is :math:`\alpha h + \frac{\rho}{2} h^2`. After each outer
    step (:meth:`update`, called once per epoch by the learners) the multiplier moves
    :math:`\alpha \leftarrow \alpha + \rho h` and, when :math:`h` did not fall below
    ``progress`` times its previous value, :math:`\rho \leftarrow` ``rho_mult`` :math:`\cdot
    \rho` (capped at ``rho_max``).

    Args:
        rho (float): initial quadratic weight (default: 1.0).
        alpha (float): initial multiplier (default: 0.0).
        rho_mult (float): growth factor of ``rho`` (default: 10).
        rho_max (float): cap of ``rho`` (default: 1e6).
        progress (float): required shrink factor of ``h`` per outer step (default: 0.25).
        h_tol (float): below this ``h`` counts as satisfied and ``rho`` stops growing
            (default: 1e-8).
    """

    def __init__(self, rho: float = 1.0, alpha: float = 0.0, rho_mult: float = 10.0,
                 rho_max: float = 1e6, progress: float = 0.25, h_tol: float = 1e-8) -> None:
        if rho <= 0 or rho_mult < 1 or rho_max < rho or not 0 < progress < 1:
            raise ValidationError(
                "AugmentedLagrangian: need rho > 0, rho_mult >= 1, rho_max >= rho and "
                f"0 < progress < 1; got rho={rho}, rho_mult={rho_mult}, rho_max={rho_max}, "
                f"progress={progress}"
            )
        self.rho, self.alpha = float(rho), float(alpha)
        self.rho_mult, self.rho_max, self.progress = float(rho_mult), float(rho_max), progress
        self.h_tol = float(h_tol)
        self.h_prev = math.inf

    def penalty(self, h: torch.Tensor) -> torch.Tensor:
        """:math:`\\alpha h + \\frac{\\rho}{2} h^2`."""
        return self.alpha * h + 0.5 * self.rho * h * h

    def update(self, h: float) -> None:
        """One outer step with the current value of ``h``."""
        h = float(h)
        if h > self.h_tol and h > self.progress * self.h_prev:
            self.rho = min(self.rho * self.rho_mult, self.rho_max)
        self.alpha += self.rho * h
        self.h_prev = h

    def state_dict(self) -> dict[str, Any]:
        return {"rho": self.rho, "alpha": self.alpha, "h_prev": self.h_prev}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rho, self.alpha, self.h_prev = state["rho"], state["alpha"], state["h_prev"]

    def __repr__(self) -> str:
        return f"AugmentedLagrangian(rho={self.rho:g}, alpha={self.alpha:g})"
