r"""Maximum a posteriori states of a pairwise MRF over task labels,

.. math::
    \hat{\mathbf{y}} = \arg\max_{\mathbf{y}} \sum_k u_k(y_k) + \sum_{(a, b)} \psi_{ab}(y_a, y_b),

with per-example unaries ``u_k [N, C_k]`` and shared pairwise tables ``ψ_ab [C_a, C_b]``:
exact enumeration (:func:`enumerate_argmax`), max-product on trees (:func:`tree_max_product`),
variable elimination for small tree-width (:func:`elimination_plan`, :func:`eliminate`), loopy
max-product with damping (:func:`loopy_max_product`) and iterated conditional modes
(:func:`icm`). GMTL's joint decoding (:mod:`taskgraph.inference.gmtl`) runs on them; the causal
EBM's marginals live beside them (:mod:`taskgraph.mrf.marginals`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import networkx as nx
import torch

from taskgraph.mrf.enumeration import combinations, outer_sum, prod

__all__ = ["ConvergenceWarning", "components", "single_threaded", "factor_table",
           "enumerate_argmax", "oriented", "tree_max_product", "elimination_plan", "eliminate",
           "loopy_max_product", "icm", "pad_score", "CHUNK_ELEMENTS", "CACHE_ELEMENTS"]


CHUNK_ELEMENTS = 2**20  # scores held at once by the exact decoders ([n, M] per chunk)
CACHE_ELEMENTS = 2**15  # message-passing elements per op: under torch's parallel grain size


def pad_score(dtype: torch.dtype) -> float:
    """Finite stand-in for -inf in the padded class slots of loopy max-product: below any score a
    decode can meet (a fixed constant such as -1e30 is not: weighted log-probabilities can pass
    it), with headroom so that sums with it cannot overflow."""
    return -torch.finfo(dtype).max / 16


class ConvergenceWarning(UserWarning):
    """Loopy max-product stopped at ``max_iter`` before its messages converged."""


# ---------------------------------------------------------------------------- small helpers
def components(n: int, edges: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Connected components of the undirected graph on ``0..n-1``, each sorted, ordered by
    their smallest node."""
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(edges)
    return sorted(sorted(c) for c in nx.connected_components(g))


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch ops in this block on one intra-op thread, restoring the setting afterwards.

    Message passing is a long sequence of small tensor ops; a thread pool synchronises on each
    of them, which costs more than it saves on small machines and stalls badly when cores are
    oversubscribed (scikit-learn limits thread pools in its hot loops for the same reason)."""
    before = torch.get_num_threads()
    if before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before > 1:
            torch.set_num_threads(before)


def factor_table(
    nodes: list[int],
    unary: Sequence[torch.Tensor],
    edges: Sequence[tuple[int, int]],
    pairwise: Sequence[torch.Tensor],
    sizes: Sequence[int],
) -> torch.Tensor:
    """Flat ``[Π C]`` sum of the unary and pairwise factors over ``nodes`` (row-major)."""
    pos = {v: i for i, v in enumerate(nodes)}
    shape = [sizes[v] for v in nodes]
    table = torch.zeros(shape, dtype=unary[nodes[0]].dtype)
    for v in nodes:
        view = [1] * len(nodes)
        view[pos[v]] = sizes[v]
        table = table + unary[v].reshape(view)
    for (a, b), p in zip(edges, pairwise):
        if a not in pos or b not in pos:
            continue
        view = [1] * len(nodes)
        view[pos[a]], view[pos[b]] = sizes[a], sizes[b]
        pab = p if pos[a] < pos[b] else p.T
        table = table + pab.reshape(view)
    return table.reshape(-1)


# ---------------------------------------------------------------------------- decoders
def enumerate_argmax(
    unaries: Sequence[torch.Tensor], neg_log_prior: torch.Tensor, chunk_size: int | None
) -> torch.Tensor:
    r"""Exact joint argmax by enumeration, chunked over examples.

    ``score[n, c] = Σ_k u_k[n, c_k] + neg_log_prior[c]`` over the ``M = ΠC_k`` combinations
    ``c`` (row-major), built as an outer sum per chunk of ``n`` examples (``[n, M]`` at once).

    Returns ``[N, m]`` long labels.
    """
    sizes = [u.shape[1] for u in unaries]
    n_comb = neg_log_prior.numel()
    combos = combinations(sizes, neg_log_prior.device)
    n = unaries[0].shape[0]
    step = chunk_size or max(1, CHUNK_ELEMENTS // n_comb)
    out = []
    for start in range(0, n, step):
        scores = outer_sum([u[start:start + step] for u in unaries]) + neg_log_prior
        out.append(combos[scores.argmax(dim=1)])
    return torch.cat(out) if out else torch.zeros(0, len(sizes), dtype=torch.long)


def oriented(edges: Sequence[tuple[int, int]], pairwise: Sequence[torch.Tensor]):
    """Neighbour lists ``{v: [(u, psi[C_v, C_u])]}`` of an undirected pairwise model."""
    nbrs: dict[int, list[tuple[int, torch.Tensor]]] = {}
    for (a, b), p in zip(edges, pairwise):
        nbrs.setdefault(a, []).append((b, p))
        nbrs.setdefault(b, []).append((a, p.T))
    return nbrs


def tree_max_product(
    phi: dict[int, torch.Tensor],
    edges: Sequence[tuple[int, int]],
    psi: Sequence[torch.Tensor],
) -> dict[int, torch.Tensor]:
    r"""Exact MAP on a forest by max-product (Viterbi) message passing, vectorised over
    examples: one upward pass in reverse BFS order storing argmax back-pointers, then one
    downward pass. ``phi[v]`` is ``[N, C_v]``; returns ``{v: labels [N]}``."""
    nbrs = oriented(edges, psi)
    nodes = sorted(phi)
    seen: set[int] = set()
    order: list[int] = []
    parent: dict[int, tuple[int, torch.Tensor]] = {}
    for root in nodes:
        if root in seen:
            continue
        seen.add(root)
        queue = [root]
        while queue:
            v = queue.pop(0)
            order.append(v)
            for u, p_vu in nbrs.get(v, []):
                if u not in seen:
                    seen.add(u)
                    parent[u] = (v, p_vu.T)  # psi oriented [C_u, C_parent]
                    queue.append(u)
    belief = {v: phi[v].clone() for v in nodes}
    back: dict[int, torch.Tensor] = {}
    for v in reversed(order):
        if v not in parent:
            continue
        p, psi_vp = parent[v]
        scores = belief[v][:, :, None] + psi_vp[None]  # [N, C_v, C_p]
        msg, arg = scores.max(dim=1)
        back[v] = arg
        belief[p] = belief[p] + msg
    labels: dict[int, torch.Tensor] = {}
    for v in order:
        if v in parent:
            labels[v] = back[v].gather(1, labels[parent[v][0]][:, None])[:, 0]
        else:
            labels[v] = belief[v].argmax(dim=1)
    return labels


def elimination_plan(
    nodes: Sequence[int],
    edges: Sequence[tuple[int, int]],
    sizes: Sequence[int],
    limit: int,
) -> tuple[list[int], int] | None:
    r"""Greedy min-fill elimination order of a pairwise model (ties: smallest factor).

    Returns ``(order, largest factor)`` where the largest factor is the biggest
    :math:`\prod C` over a variable and its neighbours at elimination, or ``None`` as soon as
    a step would need a factor over ``limit`` cells under every choice."""
    nbrs: dict[int, set[int]] = {v: set() for v in nodes}
    for a, b in edges:
        if a in nbrs and b in nbrs:
            nbrs[a].add(b)
            nbrs[b].add(a)
    order: list[int] = []
    largest = 1
    remaining = set(nodes)
    while remaining:
        best: tuple[int, int, int] | None = None
        for v in sorted(remaining):
            nv = nbrs[v]
            cells = sizes[v] * prod([sizes[u] for u in nv])
            if cells > limit:
                continue
            fill = sum(1 for u in nv for w in nv if u < w and w not in nbrs[u])
            key = (fill, cells, v)
            if best is None or key < best:
                best = key
        if best is None:
            return None
        _, cells, v = best
        largest = max(largest, cells)
        nv = nbrs.pop(v)
        for u in nv:
            nbrs[u].discard(v)
            nbrs[u] |= nv - {u}
        remaining.discard(v)
        order.append(v)
    return order, largest


def eliminate(
    phi: dict[int, torch.Tensor],
    edges: Sequence[tuple[int, int]],
    psi: Sequence[torch.Tensor],
    order: Sequence[int],
    largest: int,
    chunk_size: int | None,
) -> dict[int, torch.Tensor]:
    r"""Exact MAP by max-product variable elimination along ``order`` (a junction-tree pass),
    vectorised over examples and chunked so that about :math:`2^{20}` scores are held at once.

    Eliminating :math:`v` replaces the factors that contain it by
    :math:`\max_{y_v} \sum_f f` over the union of their scopes minus :math:`v` and keeps the
    argmax as a back-pointer table; labels are read back in reverse order.
    ``phi[v]`` is ``[N, C_v]``; returns ``{v: labels [N]}``."""
    sizes = {v: t.shape[1] for v, t in phi.items()}
    n = next(iter(phi.values())).shape[0]
    step = chunk_size or max(1, CHUNK_ELEMENTS // largest)
    out = {v: [] for v in phi}
    for start in range(0, n, step):
        factors: list[tuple[tuple[int, ...], torch.Tensor]] = [
            ((v,), t[start:start + step]) for v, t in phi.items()]
        for (a, b), p in zip(edges, psi):
            scope, table = ((a, b), p) if a < b else ((b, a), p.T)
            factors.append((scope, table[None]))
        back: dict[int, tuple[tuple[int, ...], torch.Tensor]] = {}
        for v in order:
            mine = [f for f in factors if v in f[0]]
            factors = [f for f in factors if v not in f[0]]
            union = tuple(sorted({u for scope, _ in mine for u in scope}))
            total = None
            for scope, table in mine:
                view = [table.shape[0]] + [sizes[u] if u in scope else 1 for u in union]
                term = table.reshape(view)
                total = term if total is None else total + term
            best, arg = total.max(dim=1 + union.index(v))
            rest = tuple(u for u in union if u != v)
            back[v] = (rest, arg)
            if rest:
                factors.append((rest, best))
        labels: dict[int, torch.Tensor] = {}
        for v in reversed(order):
            rest, arg = back[v]
            flat = torch.zeros(arg.shape[0], dtype=torch.long, device=arg.device)
            for u in rest:
                flat = flat * sizes[u] + labels[u]
            labels[v] = arg.reshape(arg.shape[0], -1).gather(1, flat[:, None])[:, 0]
        for v in phi:
            out[v].append(labels[v])
    return {v: torch.cat(parts) for v, parts in out.items()}


def loopy_max_product(
    phi: dict[int, torch.Tensor],
    edges: Sequence[tuple[int, int]],
    psi: Sequence[torch.Tensor],
    *,
    damping: float,
    max_iter: int,
    tol: float,
    chunk_size: int | None,
) -> tuple[dict[int, torch.Tensor], float, int]:
    r"""Damped loopy max-product in the log domain, vectorised over examples and edges.

    For every directed edge :math:`i \to j`:

    .. math::
        m_{i\to j}(y_j) \leftarrow \delta\, m_{i\to j}(y_j) + (1-\delta)\Big[\max_{y_i}
        \phi_i(y_i) + \psi_{ij}(y_i, y_j) + \sum_{k \in N(i)\setminus j} m_{k\to i}(y_i)\Big],

    messages normalised to max 0, all edges updated in parallel. An example stops (its messages
    are frozen) once none of its messages moved by more than ``tol`` in a sweep; the rest stop
    after ``max_iter`` sweeps. Labels are the argmax of the final beliefs.

    Returns ``(labels, fraction of examples converged, sweeps run)``.
    """
    nodes = sorted(phi)
    pos = {v: i for i, v in enumerate(nodes)}
    m = len(nodes)
    width = max(phi[v].shape[1] for v in nodes)
    ref = phi[nodes[0]]
    n, dtype, device = ref.shape[0], ref.dtype, ref.device
    # layout [node or edge, class, example]: examples innermost, so gathers over edges copy
    # contiguous rows and every update is a long vectorised loop
    neg = pad_score(dtype)
    phi_all = torch.full((m, width, n), neg, dtype=dtype, device=device)
    valid = torch.zeros(m, width, dtype=torch.bool, device=device)
    for v in nodes:
        phi_all[pos[v], : phi[v].shape[1]] = phi[v].T
        valid[pos[v], : phi[v].shape[1]] = True
    e = len(edges)
    src = torch.tensor([pos[a] for a, _ in edges] + [pos[b] for _, b in edges], device=device)
    dst = torch.tensor([pos[b] for _, b in edges] + [pos[a] for a, _ in edges], device=device)
    rev = torch.cat([torch.arange(e, 2 * e), torch.arange(e)]).to(device)
    psi_dir = torch.zeros(2 * e, width, width, dtype=dtype, device=device)
    for i, p in enumerate(psi):
        ca, cb = p.shape
        psi_dir[i, :ca, :cb] = p
        psi_dir[e + i, :cb, :ca] = p.T
    psi_src = [psi_dir[:, c, :, None].contiguous() for c in range(width)]  # [2E, C_dst, 1]
    pad = ~valid[dst][:, :, None]  # [2E, C, 1] padded destination classes
    has_pad = bool(pad.any())

    msgs = torch.zeros(2 * e, width, n, dtype=dtype, device=device)
    step = chunk_size or max(16, CACHE_ELEMENTS // max(1, 2 * e * width))
    # the examples still iterating, compacted: ids, potentials and messages
    ids = torch.arange(n, device=device)
    ph_act, msg_act = phi_all, msgs.clone()
    sweeps, moved = 0, torch.ones(n, dtype=torch.bool, device=device)
    for it in range(1, max_iter + 1):
        sweeps = it
        parts = []
        for start in range(0, ids.numel(), step):
            old = msg_act[:, :, start:start + step]
            belief = ph_act[:, :, start:start + step].clone()
            # sum of incoming messages; index_put_ rather than index_add_, whose CPU kernel
            # stalls badly when the machine's cores are oversubscribed
            belief.index_put_((dst,), old, accumulate=True)
            cavity = belief.index_select(0, src).sub_(old.index_select(0, rev))
            new = cavity[:, 0, None, :] + psi_src[0]  # max over the source label
            for c in range(1, width):
                new = torch.maximum(new, cavity[:, c, None, :] + psi_src[c])
            if has_pad:
                new.masked_fill_(pad, neg)
            new.sub_(new.amax(dim=1, keepdim=True))
            if has_pad:
                new.masked_fill_(pad, 0.0)
            if damping:
                new.lerp_(old, damping)
            parts.append((new - old).abs_().amax(dim=(0, 1)) > tol)
            old.copy_(new)
        moved = torch.cat(parts)
        n_moving = int(moved.sum())
        if n_moving == 0:
            break
        if n_moving <= 0.75 * ids.numel():  # retire the converged examples
            done = torch.nonzero(~moved).flatten()
            msgs.index_copy_(2, ids.index_select(0, done), msg_act.index_select(2, done))
            keep = torch.nonzero(moved).flatten()
            ids = ids.index_select(0, keep)
            ph_act = ph_act.index_select(2, keep)
            msg_act = msg_act.index_select(2, keep)
            moved = torch.ones(ids.numel(), dtype=torch.bool, device=device)
    msgs.index_copy_(2, ids, msg_act)
    n_failed = int(moved.sum()) if sweeps == max_iter else 0
    phi_all.index_put_((dst,), msgs, accumulate=True)
    # a padded slot is never a label, whatever the scores (all -inf rows decode to class 0)
    labels = phi_all.masked_fill(~valid[:, :, None], -math.inf).argmax(dim=1)  # [m, N]
    return {v: labels[pos[v]] for v in nodes}, 1.0 - n_failed / max(1, n), sweeps


def icm(
    phi: dict[int, torch.Tensor],
    edges: Sequence[tuple[int, int]],
    psi: Sequence[torch.Tensor],
    labels: dict[int, torch.Tensor],
    max_sweeps: int = 20,
) -> dict[int, torch.Tensor]:
    """Iterated conditional modes from ``labels``: each task in turn takes its best label given
    its neighbours', vectorised over examples, until no label changes. Never lowers the
    objective, and ends at a local optimum with respect to single-task changes."""
    nbrs = oriented(edges, psi)
    labels = {v: t.clone() for v, t in labels.items()}
    for _ in range(max_sweeps):
        changed = False
        for v in sorted(phi):
            score = phi[v].clone()
            for u, p_vu in nbrs.get(v, []):
                score = score + p_vu.T.index_select(0, labels[u])  # [N, C_v]
            current = score.gather(1, labels[v][:, None])[:, 0]
            best_val, best = score.max(dim=1)
            better = best_val > current
            if bool(better.any()):
                labels[v] = torch.where(better, best, labels[v])
                changed = True
        if not changed:
            break
    return labels


# ---------------------------------------------------------------------------- the decoder
