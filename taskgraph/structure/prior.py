r"""GCNet's feature-level structure-prior generator and the candidate-edge sets it scores.

The generator scores every candidate task pair from task embeddings and per-task feature
summaries, **asymmetrically** (the released code used :math:`t_i + t_j`, which cannot tell
:math:`i \to j` from :math:`j \to i`):

.. math::
    w_{ij} = \sigma\Big(\mathrm{MLP}\big([\mathbf{e}_i \,\|\, \mathbf{f}_i \,\|\,
    \mathbf{e}_j \,\|\, \mathbf{f}_j]\big)\Big) \in [0, 1], \qquad
    w^{\text{trivial}}_{ij} = 1 - w_{ij}.

It is trained with the causal-attention (CAL) losses moved from graph nodes to task edges: the
*causal view* (messages weighted by :math:`w`) must predict the labels, the *trivial view*
(messages weighted by :math:`1 - w`, without the node's own state) is pushed to an uninformative
prediction, and an L1 term keeps :math:`w` sparse (:func:`uninformative_loss`).

Candidate edges (:func:`candidate_edges`): all ordered pairs, a heuristic graph from label
correlation (top-``k`` partners per task), or a user-given :class:`~taskgraph.graph.TaskGraph`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from taskgraph.exceptions import ValidationError
from taskgraph.graph import TaskGraph
from taskgraph.nn.heads import OutputLayout

__all__ = ["StructurePriorGenerator", "uninformative_loss", "candidate_edges",
           "structure_edge_sets", "label_correlation", "all_pairs"]


def all_pairs(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Every ordered pair ``(i, j)``, ``i != j``, row-major. ``[2, n(n-1)]``."""
    idx = torch.arange(n, device=device)
    src = idx.repeat_interleave(n)
    dst = idx.repeat(n)
    keep = src != dst
    return torch.stack([src[keep], dst[keep]])


def label_correlation(y: torch.Tensor) -> torch.Tensor:
    """Pairwise-complete Pearson correlation of label columns (NaN = missing). ``[T, T]``.

    Vectorised with matrix products over the observation mask, ``O(N T^2)``; pairs with fewer
    than 3 co-observed rows get 0.
    """
    m = (~torch.isnan(y)).double()
    v = torch.nan_to_num(y.double())
    n = m.T @ m                              # co-observed counts
    sx = v.T @ m                             # sum of x_i over rows where j observed  [i, j]
    sxx = (v * v).T @ m
    sxy = v.T @ v                            # sum x_i x_j over co-observed (zeros elsewhere)
    nn_ = n.clamp_min(1)
    cov = sxy / nn_ - (sx / nn_) * (sx.T / nn_)
    var_i = sxx / nn_ - (sx / nn_) ** 2
    var_j = var_i.T
    corr = cov / torch.sqrt((var_i * var_j).clamp_min(1e-12))
    corr = torch.where(n >= 3, corr, torch.zeros_like(corr))
    corr.fill_diagonal_(0.0)
    return corr.clamp(-1, 1).float()


def candidate_edges(
    spec: str | TaskGraph | torch.Tensor,
    n_tasks: int,
    y: torch.Tensor | None = None,
    k: int = 5,
    names: list[str] | None = None,
    data: Any = None,
) -> torch.Tensor:
    """Candidate edges ``[2, E]`` for the structure search.

    Args:
        spec: ``"all"`` (every ordered pair), ``"heuristic"`` (for each task its ``k`` partners
            of highest absolute label correlation, both directions), a :class:`TaskGraph`
            (its edges and, if it has a candidate mask, those too; both directions of every
            edge are searched), or an ``edge_index`` tensor.
        n_tasks: ``T``.
        y: training labels ``[N, T]`` (needed for ``"heuristic"``).
        k: partners per task for ``"heuristic"``.
        names: task names, to check a given TaskGraph's tasks.
        data (MultiTaskData, optional): the training data (needed for ``"pc"``).
    """
    if isinstance(spec, str):
        if spec == "all":
            return all_pairs(n_tasks)
        if spec == "pc":
            return _pc_skeleton(data, n_tasks)
        if spec == "heuristic":
            if y is None:
                raise ValidationError("candidates: 'heuristic' needs training labels")
            corr = label_correlation(y.cpu()).abs()
            kk = min(int(k), n_tasks - 1)
            top = corr.topk(kk, dim=1).indices                    # [T, k]
            src = torch.arange(n_tasks).repeat_interleave(kk)
            dst = top.reshape(-1)
            mask = torch.zeros(n_tasks, n_tasks, dtype=torch.bool)
            mask[src, dst] = True
            mask = (mask | mask.T) & ~torch.eye(n_tasks, dtype=torch.bool)
            return mask.nonzero().T.contiguous()
        raise ValidationError(f"candidates: expected 'all', 'heuristic', 'pc', a TaskGraph or "
                              f"an edge_index, got {spec!r}")
    if isinstance(spec, TaskGraph):
        if names is not None and spec.names != names:
            raise ValidationError(f"candidates: the graph's tasks {spec.names} differ from the "
                                  f"learner's tasks {names}")
        mask = torch.as_tensor(spec.adjacency != 0)
        if spec.candidates is not None:
            mask = mask | torch.as_tensor(spec.candidates, dtype=torch.bool)
        mask = (mask | mask.T) & ~torch.eye(n_tasks, dtype=torch.bool)
        return mask.nonzero().T.contiguous()
    ei = torch.as_tensor(spec, dtype=torch.long).cpu()
    if ei.dim() != 2 or ei.shape[0] != 2:
        raise ValidationError(f"candidates: an edge_index must have shape [2, E], got "
                              f"{tuple(ei.shape)}")
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n_tasks):
        raise ValidationError(f"candidates: edge_index entries must lie in 0..{n_tasks - 1}")
    if bool((ei[0] == ei[1]).any()):
        raise ValidationError("candidates: self-loops are not allowed")
    return ei


def _pc_skeleton(data: Any, n_tasks: int) -> torch.Tensor:
    """Both directions of the PC skeleton of ``data``'s labels, ``[2, E]``."""
    from taskgraph.structure.discovery import discover

    if data is None:
        raise ValidationError("candidates: 'pc' needs the training data")
    discrete = all(t.is_classification for t in data.tasks)
    g = discover(data, "pc", alpha=0.05, indep_test="gsq" if discrete else "fisherz")
    mask = torch.as_tensor(g.skeleton()) & ~torch.eye(n_tasks, dtype=torch.bool)
    return mask.nonzero().T.contiguous()


def structure_edge_sets(
    candidates: Any, graph: TaskGraph | None, names: list[str], *, y: torch.Tensor | None,
    loading: bool, k: int, dense_limit: int, structure: bool, data: Any = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """GCNet's edge sets: ``(feature-level edges, output-level SEM edges, initial SEM weights or
    None)``.

    The feature level uses ``candidates`` (``"auto"``: a given ``graph``, else all pairs up to
    ``dense_limit`` tasks and the heuristic above); the SEM searches all pairs up to
    ``dense_limit`` tasks (so it may add edges a sparse feature graph missed) and the feature
    edges above, except with ``"pc"``, whose skeleton is the candidate set of both levels (a
    causal-learn prior: the SEM only orients and prunes it). A given ``graph``'s edges start at
    SEM weight 0.5. When ``loading``, data-derived edges (heuristic, PC) are left empty (the
    state dict restores them)."""
    t = len(names)
    spec = candidates
    if graph is not None:
        if graph.names != names:
            raise ValidationError(f"graph: its tasks {graph.names} differ from the learner's "
                                  f"{names}")
        if isinstance(spec, str) and spec == "auto":
            spec = graph
    if isinstance(spec, str) and spec == "auto":
        spec = "all" if t <= dense_limit else "heuristic"
    from_data = isinstance(spec, str) and spec in ("heuristic", "pc")
    if from_data and loading:
        feat_edges = torch.zeros(2, 0, dtype=torch.long)
    else:
        feat_edges = candidate_edges(spec, t, y=y, k=k, names=names, data=data)
    pc = isinstance(spec, str) and spec == "pc"
    sem_edges = candidate_edges("all", t) if t <= dense_limit and not pc else feat_edges
    init = None
    if graph is not None and structure:
        a = torch.as_tensor(graph.adjacency != 0)
        init = torch.where(a[sem_edges[0], sem_edges[1]], torch.tensor(0.5), torch.tensor(0.0))
    return feat_edges, sem_edges, init


class StructurePriorGenerator(nn.Module):
    r"""Asymmetric scorer of candidate task edges (GCNet's feature-level generator).

    .. math::
        w_{ij} = \sigma\big(\mathbf{a}^\top \mathrm{ReLU}(\mathbf{W}
        [\mathbf{e}_i \| \mathbf{f}_i \| \mathbf{e}_j \| \mathbf{f}_j] + \mathbf{b}) + c\big)

    Args:
        n_tasks (int): ``T``.
        emb_dim (int): task embedding width (default: 16).
        feat_dim (int): width of the per-task feature summary ``f`` (0 = none).
        hidden (int): hidden width of the scorer (default: 32).
        init_bias (float): initial logit of every edge; the default makes the first weights
            about 0.5 (default: 0.0).

    Shapes:
        - **input:** ``edge_index[2, E]``, optional ``features[T, feat_dim]``
        - **output:** causal weights ``w[E]`` in ``[0, 1]``
    """

    def __init__(self, n_tasks: int, emb_dim: int = 16, feat_dim: int = 0, hidden: int = 32,
                 init_bias: float = 0.0) -> None:
        super().__init__()
        self.n_tasks, self.feat_dim = n_tasks, feat_dim
        self.embedding = nn.Embedding(n_tasks, emb_dim)
        self.score = nn.Sequential(
            nn.Linear(2 * (emb_dim + feat_dim), hidden), nn.ReLU(), nn.Linear(hidden, 1))
        nn.init.normal_(self.embedding.weight, std=1.0 / math.sqrt(emb_dim))
        nn.init.constant_(self.score[2].bias, init_bias)

    def logits(self, edge_index: torch.Tensor,
               features: torch.Tensor | None = None) -> torch.Tensor:
        node = self.embedding.weight
        if self.feat_dim:
            if features is None or features.shape != (self.n_tasks, self.feat_dim):
                raise ValidationError(f"features: expected [{self.n_tasks}, {self.feat_dim}]")
            node = torch.cat([node, features], dim=-1)
        pair = torch.cat([node[edge_index[0]], node[edge_index[1]]], dim=-1)
        return self.score(pair).squeeze(-1)

    def forward(self, edge_index: torch.Tensor,
                features: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.logits(edge_index, features))


def uninformative_loss(layout: OutputLayout, out: torch.Tensor,
                       y: torch.Tensor | None = None) -> torch.Tensor:
    r"""Cross-entropy of the predictions ``out`` against the uniform label distribution,
    averaged over classification tasks (rows with a missing label included: the target does not
    depend on it). Minimal exactly when every prediction is uniform (CAL's trivial branch).

    .. math::
        \mathcal{L}_{\text{triv}} = -\frac{1}{|\mathcal{T}_c|}\sum_{k \in \mathcal{T}_c}
        \frac{1}{C_k} \sum_{c=1}^{C_k} \log p_k(c)

    Shapes:
        - **out:** ``[B, T, C_max]`` head outputs; returns a scalar.
    """
    lp = layout.log_proba(out)
    if layout.cls_index.numel() == 0:
        return out.sum() * 0.0
    lp = torch.where(layout.class_mask, lp, torch.zeros_like(lp))
    per = -(lp.sum(dim=-1) / layout.n_cls.clamp_min(1))     # [B, T]
    return per.index_select(1, layout.cls_index).mean()
