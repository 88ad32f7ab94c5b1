r"""Task-level sharing along a relatedness graph over the tasks' head parameters.

A task with few labels borrows its neighbours' head parameters (SGNN's idea, moved from node
states to the heads): the heads are fitted jointly, as the maximum a posteriori estimate under
a Gaussian Markov random field prior over the heads, whose edges say which tasks are related:

.. math::
    \min_{W, b}\; \sum_{n, t\,:\,y_{nt}\ \text{observed}} \ell_t\big(\phi(x_n)^\top W_t + b_t,
    y_{nt}\big) \;+\; \sum_t \sum_d r_d \lVert W_{t,d} \rVert^2
    \;+\; \frac{\lambda}{2} \sum_{(s, t)} |A_{st}|\,
    \big\lVert W_t - \operatorname{sign}(A_{st})\, W_s \big\rVert^2 .

The data term is a *sum* over observed labels, so the prior counts as :math:`\lambda`
pseudo-labels per edge: a task with 40 labels is pulled towards its neighbours, a task with
4,000 barely moves. A negative edge (a conflicting task) pulls :math:`W_t` towards
:math:`-W_s`. The penalty's gradient with respect to :math:`W_t` is a message from every
neighbour, :math:`\lambda \sum_s |A_{st}|\,(W_t - \operatorname{sign}(A_{st}) W_s)`: one step
of Laplacian smoothing over the task graph.

The relatedness graph :math:`A` is learned from the heads themselves (:func:`relatedness_graph`:
signed cosine similarity of the ridge-only heads, each task keeping its ``k`` most similar
tasks above ``min_cosine``). It is undirected: :math:`A` is symmetric.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from taskgraph.exceptions import ValidationError
from taskgraph.nn.heads import OutputLayout

__all__ = ["relatedness_graph", "graph_penalty", "fit_heads", "head_vectors", "kind_groups",
           "observed_slots", "mean_task_loss", "check_grid", "select_shared_heads"]


def kind_groups(layout: OutputLayout) -> torch.Tensor:
    """``[T]`` group ids: tasks can only be related within a group (same kind and class
    count), since only then do their heads have the same shape and meaning."""
    key = layout.is_binary.long() + 2 * layout.is_multi.long() + 4 * layout.is_reg.long()
    key = key * 1000 + layout.n_cls.long()
    return torch.unique(key, return_inverse=True)[1]


def head_vectors(weight: torch.Tensor, col_mask: torch.Tensor) -> torch.Tensor:
    """Each task's head weights as one vector ``[T, d * C_max]`` (unused columns zeroed)."""
    return (weight * col_mask[:, None, :]).reshape(weight.shape[0], -1)


def relatedness_graph(vectors: torch.Tensor, *, k: int = 10, min_cosine: float = 0.5,
                      groups: torch.Tensor | None = None, signed: bool = True) -> torch.Tensor:
    r"""A signed, symmetric relatedness graph from task parameter vectors.

    :math:`c_{st}` is the cosine similarity of tasks :math:`s` and :math:`t`; each task keeps
    its ``k`` largest :math:`|c_{st}|` with :math:`|c_{st}| \geq` ``min_cosine`` (within its
    group), and an edge kept by either end is kept both ways with weight :math:`c_{st}`.

    Args:
        vectors (Tensor): ``[T, D]`` one vector per task.
        k (int): neighbours each task keeps at most (>= 1).
        min_cosine (float): smallest :math:`|c_{st}|` that makes an edge, in ``[0, 1]``.
        groups (Tensor, optional): ``[T]`` ids; no edge joins two groups.
        signed (bool): keep negative edges (a conflicting task is borrowed from with its
            sign flipped); ``False`` ranks and keeps :math:`c_{st}` itself, so only
            positively related tasks are joined.

    Returns:
        Tensor: ``A`` ``[T, T]``, symmetric, zero diagonal, signed cosine weights.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValidationError(f"k: expected a positive integer, got {k!r}")
    if not 0.0 <= float(min_cosine) <= 1.0:
        raise ValidationError(f"min_cosine: expected a number in [0, 1], got {min_cosine!r}")
    t = vectors.shape[0]
    if t < 2:
        return vectors.new_zeros(t, t)
    unit = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = unit @ unit.T
    allowed = ~torch.eye(t, dtype=torch.bool, device=vectors.device)
    if groups is not None:
        allowed &= groups[:, None] == groups[None, :]
    similarity = cos.abs() if signed else cos
    strength = torch.where(allowed, similarity, torch.zeros_like(cos))
    top = strength.topk(min(k, t - 1), dim=1).indices
    keep = torch.zeros_like(allowed)
    keep.scatter_(1, top, True)
    keep &= strength >= float(min_cosine)
    keep &= allowed
    keep |= keep.T.clone()
    return torch.where(keep, cos, torch.zeros_like(cos))


def graph_penalty(weight: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
    r""":math:`\frac12 \sum_{s,t} |A_{st}|\,\lVert W_t - \operatorname{sign}(A_{st}) W_s
    \rVert^2` over the edges of ``adjacency`` (``[T, T]``, symmetric); ``weight`` is
    ``[T, ...]``. O(E) in the edges."""
    src, dst = torch.nonzero(adjacency, as_tuple=True)
    if src.numel() == 0:
        return weight.sum() * 0.0
    a = adjacency[src, dst]
    flat = weight.reshape(weight.shape[0], -1)
    diff = flat[dst] - torch.sign(a)[:, None] * flat[src]
    return 0.5 * (a.abs() * diff.pow(2).sum(dim=1)).sum()


def fit_heads(
    features: torch.Tensor,
    y: torch.Tensor,
    layout: OutputLayout,
    col_mask: torch.Tensor,
    *,
    ridge: torch.Tensor | float,
    strength: float = 0.0,
    adjacency: torch.Tensor | None = None,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_iter: int = 200,
    dense: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-task linear heads on fixed features, fitted jointly by L-BFGS (the objective in
    the module docstring).

    Args:
        features (Tensor): :math:`\phi(x)` ``[N, d]``.
        y (Tensor): labels ``[N, T]`` (NaN = missing).
        layout (OutputLayout): the tasks' output layout (the loss of every kind).
        col_mask (Tensor): ``[T, C_max]`` 1 where a task uses an output column.
        ridge (Tensor or float): :math:`r_d`, ``[d]`` or one value for every feature.
        strength (float): :math:`\lambda` (0 = no graph term).
        adjacency (Tensor, optional): ``[T, T]`` signed symmetric relatedness graph.
        init (tuple, optional): ``(W [T, d, C_max], b [T, C_max])`` to start from.
        max_iter (int): L-BFGS iterations.
        dense (bool): evaluate every ``(row, task)`` pair even when few are labelled (the
            same objective; :func:`observed_slots` is the faster default).

    Returns:
        tuple: ``(W [T, d, C_max], b [T, C_max])``.
    """
    n_tasks, c_max = col_mask.shape
    d = features.shape[1]
    out_dtype = features.dtype
    if features.device.type != "mps":       # float64: the line search is not swayed by the
        features = features.double()        # order of float32 sums on another device
        y, col_mask = y.double(), col_mask.double()
    if adjacency is not None:
        adjacency = adjacency.to(features)
    if init is None:
        w0 = features.new_zeros(n_tasks, d, c_max)
        b0 = features.new_zeros(n_tasks, c_max)
    else:
        w0, b0 = (t.detach().to(features) for t in init)
    weight = w0.clone().requires_grad_(True)
    bias = b0.clone().requires_grad_(True)
    slots = None if dense else observed_slots(y)
    if slots is not None:                   # few labels: each task's labelled rows only
        rows, y = slots
        features = features[rows]           # [n_max, T, d]
    r = torch.as_tensor(ridge, dtype=features.dtype, device=features.device)
    r = r.expand(d) if r.dim() == 0 else r
    use_graph = strength > 0 and adjacency is not None and bool((adjacency != 0).any())
    opt = torch.optim.LBFGS([weight, bias], max_iter=max_iter, tolerance_grad=1e-6,
                            tolerance_change=1e-10, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        w = weight * col_mask[:, None, :]
        if slots is None:
            out = torch.einsum("nd,tdc->ntc", features, w)
        else:
            out = torch.einsum("ntd,tdc->ntc", features, w)
        out = (out + bias) * col_mask
        loss = layout.per_example_loss(out, y).sum()
        loss = loss + (r[None, :, None] * w.pow(2)).sum()
        if use_graph:
            loss = loss + strength * graph_penalty(w, adjacency)
        loss.backward()
        return loss

    opt.step(closure)
    weight = (weight.detach() * col_mask[:, None, :]).to(out_dtype)
    return weight, (bias.detach() * col_mask).to(out_dtype)


def observed_slots(y: torch.Tensor, max_fill: float = 0.5
                   ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Each task's labelled rows, padded: ``(rows [n_max, T], y [n_max, T])`` where column
    ``t`` of ``rows`` lists the rows with a label for task ``t`` first (then unlabelled rows,
    whose ``y`` is NaN), ``n_max`` the largest label count. ``None`` when ``n_max`` exceeds
    ``max_fill`` of the rows: then the dense ``[N, T]`` evaluation is as cheap.

    With sparse labels the head fit then touches ``n_max * T`` (row, task) pairs instead of
    ``N * T`` (20x fewer at 5% labels); the loss is the same sum."""
    seen = ~torch.isnan(y)
    n_max = int(seen.sum(dim=0).max()) if y.numel() else 0
    if n_max > max_fill * y.shape[0]:
        return None
    order = torch.argsort((~seen).to(torch.int8), dim=0, stable=True)[:max(n_max, 1)]
    return order, y.gather(0, order)


def mean_task_loss(features: torch.Tensor, y: torch.Tensor, layout: OutputLayout,
                   weight: torch.Tensor, bias: torch.Tensor) -> float:
    """Sum over tasks of each task's mean loss over its observed labels (the selection
    criterion of every learner)."""
    with torch.no_grad():
        out = torch.einsum("nd,tdc->ntc", features, weight) + bias
        return float(layout.task_losses(out, y).sum())


def check_grid(name: str, values: Sequence[float], low: float = 0.0) -> tuple[float, ...]:
    """A non-empty sequence of finite numbers >= ``low``, as a tuple."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValidationError(f"{name}: expected a non-empty sequence of numbers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v) >= low or (
                float(v) == float("inf")):
            raise ValidationError(f"{name}: expected finite numbers >= {low}, got {values!r}")
        out.append(float(v))
    return tuple(out)


def select_shared_heads(
    phi: torch.Tensor,
    y: torch.Tensor,
    layout: OutputLayout,
    col_mask: torch.Tensor,
    *,
    n_trunk: int,
    phi_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    graph: bool = True,
    signed: bool = True,
    skip: bool = True,
    k: int = 10,
    min_cosine: Sequence[float] = (0.3, 0.5, 0.7),
    strengths: Sequence[float] = (1.0, 3.0, 10.0, 30.0),
    ridges: Sequence[float] = (0.1, 0.3, 3.0),
    trunk_ridges: Sequence[float] = (3.0, 30.0, 1000.0),
    max_iter: int = 200,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    r"""Heads on fixed features :math:`\phi = [\text{trunk} \| \text{input}]`, refitted
    exactly (:func:`fit_heads`) and chosen on validation data, with and without the
    relatedness-graph prior (the read-out of :class:`~taskgraph.learners.GraphShare`, and the
    ``share`` read-out of the graph learners).

    1. Ridge-only heads over ``trunk_ridges`` × ``ridges`` (ridge :math:`r_h` on the first
       ``n_trunk`` columns, :math:`r` on the rest; without ``skip`` every column is a trunk
       column and the middle of ``ridges`` is used).
    2. With ``graph``: the relatedness graph of the best ridge-only heads at the middle
       ``min_cosine`` (:func:`relatedness_graph`), and the graph prior over ``ridges`` ×
       ``strengths`` at the chosen :math:`r_h`; if a graph fit wins, the other thresholds and
       then the other trunk ridges at the chosen pair.

    Every candidate competes on the validation loss (:func:`mean_task_loss`), so the graph is
    dropped where it does not lower it. Without validation data the middle of every grid is
    used and the graph's fit (when there is one) is kept.

    Args:
        phi (Tensor): ``[N, d]`` training features; ``y`` ``[N, T]`` (NaN = missing).
        layout (OutputLayout), col_mask (Tensor): the tasks' outputs (``[T, C_max]`` mask).
        n_trunk (int): leading columns of ``phi`` that get the trunk ridge.
        phi_val (Tensor, optional), y_val (Tensor, optional): validation features and labels.
        graph, signed, skip, k, min_cosine, strengths, ridges, trunk_ridges, max_iter: as in
            :class:`~taskgraph.learners.GraphShare`.

    Returns:
        tuple: ``(W [T, d, C_max], b [T, C_max], A [T, T], record)``: the chosen heads, the
        relatedness graph (the chosen one, or the middle threshold's when no graph fit won;
        zeros without ``graph``) and ``record`` (the choice: ``trunk_ridge``, ``ridge``,
        ``strength`` (0: no graph), ``min_cosine``, ``val_loss``,
        ``val_loss_without_graph`` and ``candidates``, each with its validation loss).
    """
    width = phi.shape[1]
    candidates: list[dict[str, Any]] = []
    selecting = phi_val is not None and y_val is not None
    Fit = tuple[torch.Tensor, torch.Tensor]

    def middle(grid: Sequence[float]) -> float:
        return tuple(grid)[len(grid) // 2]

    def ridge_vector(trunk: float, inputs: float) -> torch.Tensor:
        r = torch.full((width,), float(inputs), device=phi.device)
        r[:n_trunk] = float(trunk)
        return r

    # without skip every feature is an encoder feature: only trunk_ridges applies
    input_grid = tuple(ridges) if skip else (middle(ridges),)
    trunk_grid = tuple(trunk_ridges)
    if not selecting:           # no validation data: the middle of every grid
        input_grid, trunk_grid = (middle(ridges),), (middle(trunk_ridges),)
    best: list[Any] = []        # [loss, choice, fit, adjacency]

    def consider(choice: dict[str, Any], fit: Fit, adjacency: torch.Tensor | None) -> None:
        loss = (mean_task_loss(phi_val, y_val, layout, *fit) if selecting
                else float("nan"))
        candidates.append({**choice, "val_loss": loss})
        # without validation data the last candidate (the graph's, when there is one) wins
        if not best or not selecting or loss < best[0]:
            best[:] = [loss, choice, fit, adjacency]

    def fit_at(trunk: float, inputs: float, init: Fit | None, strength: float = 0.0,
               adjacency: torch.Tensor | None = None) -> Fit:
        return fit_heads(phi, y, layout, col_mask, ridge=ridge_vector(trunk, inputs),
                         strength=strength, adjacency=adjacency, init=init, max_iter=max_iter)

    # 1. ridge-only heads: the graph-free reference and the source of the graph
    fit: Fit | None = None
    for tr in trunk_grid:
        for r in input_grid:
            fit = fit_at(tr, r, fit)
            consider({"trunk_ridge": tr, "ridge": r, "strength": 0.0, "min_cosine": None},
                     fit, None)
    base_loss, base_choice, base_fit, _ = best
    groups = kind_groups(layout)
    vectors = head_vectors(base_fit[0], col_mask)
    taus = tuple(min_cosine) if selecting else (middle(min_cosine),)

    def graph_at(tau: float) -> torch.Tensor:
        return relatedness_graph(vectors, k=k, min_cosine=tau, groups=groups, signed=signed)

    chosen_graph = graph_at(middle(min_cosine))
    first = graph_at(middle(taus))
    if graph and bool((first != 0).any()):
        # 2. the graph prior at the middle threshold: ridge x strength, the encoder-block
        #    ridge of the graph-free choice (a graph lets the ridge be smaller: each head
        #    is held by its neighbours instead of by zero)
        tr0 = base_choice["trunk_ridge"]
        lams = tuple(strengths) if selecting else (middle(strengths),)
        for r in input_grid:
            fit = base_fit
            for lam in lams:
                fit = fit_at(tr0, r, fit, lam, first)
                consider({"trunk_ridge": tr0, "ridge": r, "strength": lam,
                          "min_cosine": middle(taus)}, fit, first)
        # 3. at the chosen ridge and strength: the other thresholds, then encoder ridges
        if best[1]["strength"] > 0:
            seen = [first]
            for tau in taus:
                adjacency = graph_at(tau)
                if any(torch.equal(adjacency, a) for a in seen) or not bool(
                        (adjacency != 0).any()):
                    continue
                seen.append(adjacency)
                c = best[1]
                consider({**c, "min_cosine": tau}, fit_at(
                    c["trunk_ridge"], c["ridge"], best[2], c["strength"], adjacency),
                    adjacency)
            c = best[1]
            for tr in trunk_grid:
                if tr != c["trunk_ridge"]:
                    consider({**c, "trunk_ridge": tr}, fit_at(
                        tr, c["ridge"], best[2], c["strength"], best[3]), best[3])
    loss, choice, (weight, bias), adjacency = best
    if adjacency is not None:
        chosen_graph = adjacency
    if not graph:
        chosen_graph = torch.zeros_like(chosen_graph)
    record = {**choice, "val_loss": loss, "val_loss_without_graph": base_loss,
              "candidates": candidates}
    return weight, bias, chosen_graph.detach().cpu(), record
