r"""Marginals of a pairwise Markov random field over task labels with per-example potentials:
the output-level causal energy-based model (EBM) of GCNet / SGNN-EBM, restricted to the
candidate edges of the task graph.

.. math::
    \log \tilde p(\mathbf{y} \mid \mathbf{x}) = \sum_{j} \phi_j(y_j)
    + \sum_{e = (i, j) \in \mathcal{E}} \psi_e(y_i, y_j)

The unary potentials :math:`\phi` (``[B, T, C]``) and pairwise potentials :math:`\psi`
(``[B, E, C, C]``) are *inputs*: a learner computes them from its networks (for instance
:class:`~taskgraph.structure.ebm.PairwisePotential` on node states, scaled by the learned
structure weight of each edge), and :class:`CausalEBM` provides the energy, conditionals,
pseudo-likelihood and inference (mean field, Gibbs sampling, exact enumeration for small
``T``). It is trained with :func:`~taskgraph.structure.ice.ice_loss` on
:meth:`CausalEBM.log_unnorm`.

Conventions shared by every method:

- ``edge_index[:, e] = (i, j)`` is the edge :math:`i \to j` (``A[src, dst]``) and
  ``psi[b, e, y_i, y_j]`` its potential. The density is undirected: each edge contributes
  :math:`\psi_e(y_i, y_j)` once; the direction only fixes which axis of ``psi`` is which end.
- **Padding:** task ``k`` has ``n_states[k]`` states; ``phi`` columns at or past it are treated
  as :math:`-\infty` (never sampled, zero marginal) whatever they hold, and ``psi`` entries
  touching a state with :math:`\phi = -\infty` are replaced by 0 (no ``-inf * 0`` NaNs).
- **Constant tasks:** a task with ``n_states <= 1`` (regression, or an inactive task), or whose
  ``phi`` row is entirely :math:`-\infty` in some example (what
  :meth:`~taskgraph.nn.heads.OutputLayout.log_proba` gives regression tasks), is a constant of
  one state: its ``phi`` row is replaced by :math:`[0, -\infty, \dots]`, its label is ignored
  (any float, NaN included) and the potentials of its edges are set to 0, so it contributes
  nothing to the density. Marginals of a constant task are :math:`[1, 0, \dots]`.
- ``psi`` must be finite on pairs of possible states (:math:`\phi > -\infty`).

Cost is linear in the number of candidate edges: :math:`O(B \cdot (T + E) \cdot C^2)` per
energy, conditional or mean-field step; nothing is :math:`T \times T`.
"""

from __future__ import annotations

import math
import numbers

import networkx as nx
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taskgraph.exceptions import ValidationError
from taskgraph.mrf.enumeration import combinations

__all__ = ["CausalEBM"]


class CausalEBM(nn.Module):
    r"""Pairwise Markov random field over task labels on the candidate edges of a task graph.

    .. math::
        \log \tilde p(\mathbf{y} \mid \mathbf{x}) = \sum_{j=1}^{T} \phi_j(y_j)
        + \sum_{e = (i, j)} \psi_e(y_i, y_j),
        \qquad
        p(y_j = c \mid \mathbf{y}_{-j}) = \operatorname{softmax}_c\Big(\phi_j(c)
        + \sum_{e = (i, j)} \psi_e(y_i, c) + \sum_{e = (j, k)} \psi_e(c, y_k)\Big)

    The module has no parameters (only index buffers, so ``.to(device)`` moves them): the
    potentials are arguments of every method, computed by the caller. Each task's incident edges
    are stored once as *incidences* (an edge seen from each of its ends, sorted by owner, CSR
    style), so a node update touches only its own edges.

    Args:
        edge_index (LongTensor): ``[2, E]`` candidate edges ``(src, dst)``; no self-loops;
            duplicates and both directions of a pair are allowed (their potentials add).
        n_tasks (int): number of tasks ``T``.
        n_states (list[int] or Tensor): ``[T]`` number of states of each task (classes);
            ``<= 1`` marks a constant task (regression or inactive), so
            :attr:`OutputLayout.n_cls <taskgraph.nn.heads.OutputLayout>` (0 for regression)
            can be passed as is.

    Shapes:
        - **y:** ``[B, T]`` float labels, NaN = missing (``y_int``: ``[B, T]`` long states)
        - **phi:** ``[B, T, C]`` or ``[T, C]`` (shared by the batch), ``C >= max(n_states)``
        - **psi:** ``[B, E, C, C]`` or ``[E, C, C]``; ``None`` means no pairwise terms
        - **marginals / conditionals:** ``[B, T, C]``
    """

    def __init__(self, edge_index: Tensor, n_tasks: int, n_states: Tensor | list[int]) -> None:
        super().__init__()
        if isinstance(n_tasks, bool) or not isinstance(n_tasks, numbers.Integral) or n_tasks < 1:
            raise ValidationError(f"n_tasks: expected a positive int, got {n_tasks!r}")
        edge_index = torch.as_tensor(edge_index)
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValidationError(
                f"edge_index: expected shape [2, E], got {tuple(edge_index.shape)}")
        if edge_index.dtype.is_floating_point or edge_index.dtype == torch.bool:
            raise ValidationError(f"edge_index: expected an integer tensor, got {edge_index.dtype}")
        edge_index = edge_index.long()
        if edge_index.numel() and (edge_index.min() < 0 or edge_index.max() >= n_tasks):
            raise ValidationError(f"edge_index: node ids must lie in [0, {n_tasks})")
        if bool((edge_index[0] == edge_index[1]).any()):
            raise ValidationError("edge_index: self-loops are not allowed (put them in phi)")
        n_states = torch.as_tensor(n_states, device=edge_index.device)
        if n_states.shape != (n_tasks,) or n_states.dtype.is_floating_point:
            raise ValidationError(
                f"n_states: expected {n_tasks} integers, got shape {tuple(n_states.shape)} "
                f"and dtype {n_states.dtype}")
        self.n_tasks = int(n_tasks)
        self.n_edges = edge_index.shape[1]
        self.register_buffer("edge_index", edge_index)
        self.register_buffer("n_states", n_states.long().clamp_min(1))
        self.max_states = int(self.n_states.max())
        src, dst = edge_index
        # incidence k: (owner node, neighbour node); first E = edges seen from dst, next E from src
        self.register_buffer("inc_owner", torch.cat([dst, src]), persistent=False)
        self.register_buffer("inc_nb", torch.cat([src, dst]), persistent=False)
        self._schedules: dict = {}

    def extra_repr(self) -> str:
        return f"n_tasks={self.n_tasks}, n_edges={self.n_edges}, max_states={self.max_states}"

    # ------------------------------------------------------------------ preparation
    def _prepare(self, phi: Tensor, psi: Tensor | None, batch: int | None = None
                 ) -> tuple[Tensor, Tensor, Tensor]:
        """Validate and broadcast the potentials; apply the padding and constant-task rules.

        Returns ``phi [B, T, C]``, ``psi [B, E, C, C]`` (masked) and ``live [B, T]`` (bool,
        False for constant tasks)."""
        T, E = self.n_tasks, self.n_edges
        if not torch.is_tensor(phi) or phi.dim() not in (2, 3) or phi.shape[-2] != T:
            shape = tuple(phi.shape) if torch.is_tensor(phi) else type(phi).__name__
            raise ValidationError(f"phi: expected shape [B, {T}, C] or [{T}, C], got {shape}")
        C = phi.shape[-1]
        if C < self.max_states:
            raise ValidationError(
                f"phi: has {C} state columns but n_states needs {self.max_states}")
        if psi is None:
            psi = phi.new_zeros(E, C, C)
        if not torch.is_tensor(psi) or psi.dim() not in (3, 4) or psi.shape[-3:] != (E, C, C):
            shape = tuple(psi.shape) if torch.is_tensor(psi) else type(psi).__name__
            raise ValidationError(
                f"psi: expected shape [B, {E}, {C}, {C}] or [{E}, {C}, {C}], got {shape}")
        sizes = ([phi.shape[0]] if phi.dim() == 3 else []) + (
            [psi.shape[0]] if psi.dim() == 4 else []) + ([batch] if batch is not None else [])
        if len(set(s for s in sizes if s != 1)) > 1:
            raise ValidationError(
                f"phi, psi: batch sizes {sizes} do not match (the last is that of y / y_int / "
                "init where one is given)")
        B = max(sizes, default=1)
        # mask at the potentials' own batch size (1 when shared), broadcast to B at the end
        phi = phi if phi.dim() == 3 else phi[None]
        psi = psi if psi.dim() == 4 else psi[None]
        neg_inf = torch.tensor(-math.inf, dtype=phi.dtype, device=phi.device)
        cols = torch.arange(C, device=phi.device)
        phi = torch.where(cols < self.n_states[:, None], phi, neg_inf)
        live = ~torch.isneginf(phi).all(dim=-1) & (self.n_states > 1)
        const_row = torch.where(cols == 0, torch.zeros_like(neg_inf), neg_inf)
        phi = torch.where(live[..., None], phi, const_row)
        if E:
            valid = ~torch.isneginf(phi)
            src, dst = self.edge_index
            keep = (valid[:, src, :, None] & valid[:, dst, None, :]
                    & (live[:, src] & live[:, dst])[..., None, None])
            psi = torch.where(keep, psi, torch.zeros_like(psi))
        phi, psi, live = phi.expand(B, -1, -1), psi.expand(B, -1, -1, -1), live.expand(B, -1)
        return phi, psi, live

    def _labels(self, y: Tensor, live: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Float labels -> (states ``[B, T]`` long, observed ``[B, T]`` bool); validated."""
        if not torch.is_tensor(y) or y.dim() != 2 or y.shape[1] != self.n_tasks:
            shape = tuple(y.shape) if torch.is_tensor(y) else type(y).__name__
            raise ValidationError(f"y: expected shape [B, {self.n_tasks}], got {shape}")
        if not y.dtype.is_floating_point:
            y = y.to(torch.float64)
        obs = ~torch.isnan(y)
        if mask is not None:
            if mask.shape != y.shape:
                raise ValidationError(
                    f"mask: expected shape {tuple(y.shape)}, got {tuple(mask.shape)}")
            obs = obs & mask.bool()
        check = obs & live
        y0 = torch.where(check, y, torch.zeros_like(y))
        bad = check & ((y0 != torch.floor(y0)) | (y0 < 0) | (y0 >= self.n_states))
        if bool(bad.any()):
            b, t = (int(v) for v in bad.nonzero()[0])
            raise ValidationError(
                f"y: label {float(y[b, t])!r} of task {t} (row {b}) is not a state in "
                f"0..{int(self.n_states[t]) - 1}")
        return y0.long(), obs

    def _check_states(self, y_int: Tensor, live: Tensor, name: str) -> Tensor:
        """Validate integer states ``[..., T]``; constant tasks are forced to state 0."""
        if not torch.is_tensor(y_int) or y_int.shape[-1] != self.n_tasks or (
                y_int.dtype.is_floating_point or y_int.dtype == torch.bool):
            shape = tuple(y_int.shape) if torch.is_tensor(y_int) else type(y_int).__name__
            raise ValidationError(f"{name}: expected an integer tensor [..., {self.n_tasks}], "
                                  f"got {shape}")
        y_int = y_int.long()
        live = live.view(live.shape[0], *([1] * (y_int.dim() - 2)), self.n_tasks)
        y_int = torch.where(live, y_int, torch.zeros_like(y_int))
        if bool(((y_int < 0) | (y_int >= self.n_states)).any()):
            raise ValidationError(f"{name}: states must lie in 0..n_states[k]-1 for every task k")
        return y_int

    def _field(self, phi: Tensor, contrib: Tensor) -> Tensor:
        """phi ``[B, T, C]`` + incidence contributions ``[B, 2E, C]`` summed per owner node."""
        if self.n_edges == 0:
            return phi
        return phi.index_add(1, self.inc_owner, contrib.to(phi.dtype))

    @staticmethod
    def _incidence_psi(psi: Tensor) -> Tensor:
        """``[B, 2E, C, C]``: for each incidence, the table indexed ``[neighbour state,
        owner state]``."""
        return torch.cat([psi, psi.transpose(-1, -2)], dim=1)

    # ------------------------------------------------------------------ energy
    def log_unnorm(self, y: Tensor, phi: Tensor, psi: Tensor | None,
                   mask: Tensor | None = None) -> Tensor:
        r"""Unnormalised log-density of (partially observed) label vectors.

        .. math::
            \log \tilde p(\mathbf{y}_O) = \sum_{j \in O} \phi_j(y_j)
            + \sum_{e = (i, j):\, i, j \in O} \psi_e(y_i, y_j)

        where :math:`O` is the set of observed tasks of the row (not NaN and ``mask`` True):
        the energy of the sub-model on the observed tasks, not a marginal.

        Args:
            y (Tensor): ``[B, T]`` float labels, NaN = missing (integer tensors are accepted
                and fully observed).
            phi (Tensor): ``[B, T, C]`` or ``[T, C]`` unary potentials.
            psi (Tensor, optional): ``[B, E, C, C]`` or ``[E, C, C]`` pairwise potentials.
            mask (Tensor, optional): ``[B, T]`` bool, False marks further missing labels.

        Returns:
            Tensor: ``[B]``.
        """
        phi, psi, live = self._prepare(phi, psi, batch=y.shape[0] if torch.is_tensor(y) else None)
        y_int, obs = self._labels(y, live, mask)
        unary = phi.gather(-1, y_int[..., None]).squeeze(-1)
        out = torch.where(obs, unary, torch.zeros_like(unary)).sum(-1)
        if self.n_edges:
            src, dst = self.edge_index
            C = phi.shape[-1]
            idx = y_int[:, src] * C + y_int[:, dst]
            pair = psi.flatten(-2).gather(-1, idx[..., None]).squeeze(-1)
            both = obs[:, src] & obs[:, dst]
            out = out + torch.where(both, pair, torch.zeros_like(pair)).sum(-1)
        return out

    def conditionals(self, y_int: Tensor, phi: Tensor, psi: Tensor | None) -> Tensor:
        r"""Log full conditionals :math:`\log p(y_j = c \mid \mathbf{y}_{-j})` of every task in
        parallel (the neighbours of ``j`` take their values in ``y_int``; ``y_int[:, j]``
        itself is not used).

        Args:
            y_int (LongTensor): ``[B, T]`` states (any value for constant tasks).
            phi (Tensor): ``[B, T, C]`` or ``[T, C]``.
            psi (Tensor, optional): ``[B, E, C, C]`` or ``[E, C, C]``.

        Returns:
            Tensor: ``[B, T, C]`` log-probabilities, ``-inf`` in impossible columns.
        """
        phi, psi, live = self._prepare(phi, psi, batch=y_int.shape[0])
        y_int = self._check_states(y_int, live, "y_int")
        return torch.log_softmax(self._field(phi, self._gather_contrib(psi, y_int)), dim=-1)

    def _gather_contrib(self, psi: Tensor, y_int: Tensor) -> Tensor:
        """``[B, 2E, C]``: row ``y[neighbour]`` of each incidence's table."""
        if self.n_edges == 0:
            return psi.new_zeros(psi.shape[0], 0, psi.shape[-1])
        P = self._incidence_psi(psi)
        y_nb = y_int[:, self.inc_nb]
        idx = y_nb[:, :, None, None].expand(-1, -1, 1, P.shape[-1])
        return P.gather(2, idx).squeeze(2)

    def _mf_contrib(self, psi_inc: Tensor, q: Tensor) -> Tensor:
        """``[B, 2E, C]``: expected table row under the neighbour's marginal ``q``."""
        return torch.einsum("bka,bkac->bkc", q[:, self.inc_nb], psi_inc)

    def pseudo_log_likelihood(self, y: Tensor, phi: Tensor, psi: Tensor | None,
                              mask: Tensor | None = None, n_iter: int = 20) -> Tensor:
        r"""Pseudo-log-likelihood of the observed labels.

        .. math::
            \mathrm{PLL}(\mathbf{y}) = \sum_{j \in O} \log \operatorname{softmax}_{y_j}\Big(
            \phi_j + \sum_{e = (i, j)} \bar\psi_e(\cdot \mid i)
            + \sum_{e = (j, k)} \bar\psi_e(\cdot \mid k)\Big)

        An observed neighbour enters with its label, :math:`\bar\psi = \psi_e(y_i, \cdot)`; a
        missing one with its mean-field marginal :math:`q_i` computed *given the observed
        labels* (observed tasks clamped), :math:`\bar\psi = \sum_a q_i(a)\, \psi_e(a, \cdot)`.
        The fill is treated as a constant (computed without gradient, as an EM E-step), so
        gradients reach ``phi`` and ``psi`` only through the conditionals. Rows without missing
        labels need no fill and give the exact pseudo-log-likelihood.

        Args:
            y (Tensor): ``[B, T]`` float labels, NaN = missing.
            phi, psi: potentials (see :class:`CausalEBM`).
            mask (Tensor, optional): ``[B, T]`` bool, False marks further missing labels.
            n_iter (int): mean-field iterations of the fill (default: 20).

        Returns:
            Tensor: ``[B]``.
        """
        phi, psi, live = self._prepare(phi, psi, batch=y.shape[0] if torch.is_tensor(y) else None)
        y_int, obs = self._labels(y, live, mask)
        C = phi.shape[-1]
        onehot = F.one_hot(y_int, C).to(phi.dtype)
        if self.n_edges and bool((~obs).any()):
            with torch.no_grad():
                q = self._mean_field(phi, psi, n_iter=n_iter, damping=0.5, tol=1e-5,
                                     clamp=onehot, clamp_mask=obs)
            q = torch.where(obs[..., None], onehot, q)
            contrib = self._mf_contrib(self._incidence_psi(psi), q)
        else:
            contrib = self._gather_contrib(psi, y_int)
        logc = torch.log_softmax(self._field(phi, contrib), dim=-1)
        ll = logc.gather(-1, y_int[..., None]).squeeze(-1)
        return torch.where(obs, ll, torch.zeros_like(ll)).sum(-1)

    # ------------------------------------------------------------------ inference
    def mean_field(self, phi: Tensor, psi: Tensor | None, n_iter: int = 20,
                   damping: float = 0.5, tol: float = 1e-5) -> Tensor:
        r"""Naive mean-field marginals by parallel damped fixed-point updates.

        .. math::
            q_j^{(t+1)} = \lambda\, q_j^{(t)} + (1 - \lambda) \operatorname{softmax}\Big(
            \phi_j + \sum_{e = (i, j)} \textstyle\sum_a q_i^{(t)}(a)\, \psi_e(a, \cdot)
            + \sum_{e = (j, k)} \textstyle\sum_b \psi_e(\cdot, b)\, q_k^{(t)}(b)\Big)

        from :math:`q^{(0)} = \operatorname{softmax}(\phi)`, all tasks at once (one
        ``index_add`` over the incidences per iteration), stopping early once no marginal moves
        by more than ``tol``. Exact without edges; close to the truth for weak couplings.
        Differentiable in ``phi`` and ``psi``.

        Args:
            phi, psi: potentials (see :class:`CausalEBM`).
            n_iter (int): maximum number of iterations (default: 20).
            damping (float): :math:`\lambda \in [0, 1)` (default: 0.5).
            tol (float): stopping tolerance on the max absolute change (default: 1e-5).

        Returns:
            Tensor: ``[B, T, C]`` marginals (0 in impossible columns).
        """
        if not 0.0 <= damping < 1.0:
            raise ValidationError(f"damping: expected a value in [0, 1), got {damping!r}")
        if n_iter < 0:
            raise ValidationError(f"n_iter: expected a non-negative int, got {n_iter!r}")
        phi, psi, _ = self._prepare(phi, psi)
        return self._mean_field(phi, psi, n_iter, damping, tol)

    def _mean_field(self, phi: Tensor, psi: Tensor, n_iter: int, damping: float, tol: float,
                    clamp: Tensor | None = None, clamp_mask: Tensor | None = None) -> Tensor:
        q = torch.softmax(phi, dim=-1)
        if clamp is not None:
            q = torch.where(clamp_mask[..., None], clamp, q)
        if self.n_edges == 0:
            return q
        psi_inc = self._incidence_psi(psi)
        for _ in range(n_iter):
            new = _softmax(self._field(phi, self._mf_contrib(psi_inc, q)))
            new = damping * q + (1.0 - damping) * new
            if clamp is not None:
                new = torch.where(clamp_mask[..., None], clamp, new)
            delta = (new - q).abs().max()
            q = new
            if float(delta.detach()) < tol:
                break
        return q

    def _schedule(self, kind: str, device: torch.device) -> dict:
        """Node order, group boundaries and group-sorted incidences for Gibbs sweeps."""
        key = (kind, str(device))
        if key in self._schedules:
            return self._schedules[key]
        T = self.n_tasks
        if kind == "sequential":
            color = list(range(T))
        elif kind == "chromatic":
            color = _greedy_coloring(T, self.edge_index.tolist())
        else:
            raise ValidationError(
                f"schedule: expected 'sequential' or 'chromatic', got {kind!r}")
        order = sorted(range(T), key=lambda t: (color[t], t))
        rank = [0] * T
        for pos, t in enumerate(order):
            rank[t] = pos
        owner = [rank[t] for t in self.inc_owner.tolist()]
        nb = [rank[t] for t in self.inc_nb.tolist()]
        inc_order = sorted(range(len(owner)), key=lambda k: owner[k])
        group_nodes, group_inc, n_start, k = [], [], 0, 0
        for c in sorted(set(color)):
            n_end = n_start + color.count(c)
            k_start = k
            while k < len(inc_order) and owner[inc_order[k]] < n_end:
                k += 1
            group_nodes.append((n_start, n_end))
            group_inc.append((k_start, k))
            n_start = n_end
        sched = {
            "order": torch.tensor(order, device=device, dtype=torch.long),
            "rank": torch.tensor(rank, device=device, dtype=torch.long),
            "inc": torch.tensor(inc_order, device=device, dtype=torch.long),
            "nb": torch.tensor([nb[k] for k in inc_order], device=device, dtype=torch.long),
            "owner": torch.tensor([owner[k] for k in inc_order], device=device,
                                  dtype=torch.long),
            "groups": list(zip(group_nodes, group_inc)),
        }
        self._schedules[key] = sched
        return sched

    @torch.no_grad()
    def gibbs(self, phi: Tensor, psi: Tensor | None, n_sweeps: int = 200, burn_in: int = 20,
              n_chains: int = 1, init: Tensor | None = None,
              generator: torch.Generator | None = None, return_samples: bool = False,
              schedule: str = "sequential") -> Tensor | tuple[Tensor, Tensor]:
        r"""Gibbs sampling with Rao-Blackwellised marginals.

        Each sweep visits the tasks in a fixed order and redraws
        :math:`y_j \sim p(y_j \mid \mathbf{y}_{-j})` from its current neighbours (only the
        incident edges of ``j`` are touched). After ``burn_in`` sweeps the *conditional
        distributions* drawn from are averaged over sweeps and chains (Rao-Blackwellisation:
        lower variance than counting indicator hits):

        .. math::
            \hat p(y_j = c) = \frac{1}{S (N - N_0)} \sum_{s=1}^{S} \sum_{t = N_0 + 1}^{N}
            p\big(y_j = c \mid \mathbf{y}^{(s, t)}_{-j}\big)

        With ``schedule="chromatic"`` the tasks are greedily coloured so that no candidate edge
        joins two tasks of one colour; a colour class is conditionally independent given the
        rest and is redrawn in parallel (same stationary distribution, fewer steps per sweep
        on sparse graphs). Runs without gradient tracking; deterministic given ``generator``.

        Args:
            phi, psi: potentials (see :class:`CausalEBM`).
            n_sweeps (int): total sweeps :math:`N`, burn-in included (default: 200).
            burn_in (int): discarded sweeps :math:`N_0 < N` (default: 20).
            n_chains (int): independent chains :math:`S` per example (default: 1).
            init (LongTensor, optional): ``[B, T]`` (shared by the chains) or
                ``[B, S, T]`` initial states; default: a draw from :math:`\operatorname
                {softmax}(\phi)` per task.
            generator (torch.Generator, optional): random source (on ``phi``'s device).
            return_samples (bool): also return the final state of every chain.
            schedule (str): ``"sequential"`` (default) or ``"chromatic"``.

        Returns:
            Tensor: marginals ``[B, T, C]``; with ``return_samples``, also the final states
            ``[B, S, T]`` (long).
        """
        if n_sweeps < 1 or not 0 <= burn_in < n_sweeps:
            raise ValidationError(
                f"n_sweeps, burn_in: need n_sweeps >= 1 and 0 <= burn_in < n_sweeps, got "
                f"{n_sweeps} and {burn_in}")
        if n_chains < 1:
            raise ValidationError(f"n_chains: expected a positive int, got {n_chains!r}")
        phi, psi, live = self._prepare(phi, psi, batch=None if init is None else init.shape[0])
        B, T, C = phi.shape
        S = n_chains
        sched = self._schedule(schedule, phi.device)
        rank, order = sched["rank"], sched["order"]
        last_valid = (torch.arange(C, device=phi.device) * (~torch.isneginf(phi))).amax(-1)

        if init is None:
            u = torch.rand(B, S, T, 1, generator=generator, device=phi.device, dtype=phi.dtype)
            y = _inverse_cdf(torch.softmax(phi, -1)[:, None].expand(B, S, T, C), u)
            y = torch.minimum(y, last_valid[:, None])
        else:
            y = self._check_states(init, live, "init")
            if y.dim() == 2:
                y = y[:, None, :]
            if y.dim() != 3 or y.shape[0] != B or y.shape[1] not in (1, S):
                raise ValidationError(
                    f"init: expected shape [{B}, {T}] or [{B}, {S}, {T}], got {tuple(init.shape)}")
            y = y.expand(B, S, T)
        y = y[..., order].clone()  # work in schedule order: each group is a contiguous slice
        phi_o, last_valid = phi[:, order], last_valid[:, order]
        psi_inc = self._incidence_psi(psi)[:, sched["inc"]] if self.n_edges else None
        nb, owner = sched["nb"], sched["owner"]
        acc = torch.zeros(B, S, T, C, dtype=phi.dtype, device=phi.device)
        steps = []  # per colour group: node slice, its base field, incidences (if any), clamp
        for (n0, n1), (k0, k1) in sched["groups"]:
            base = phi_o[:, None, n0:n1].expand(B, S, n1 - n0, C)
            inc = None
            if k1 > k0:
                table = psi_inc[:, None, k0:k1].expand(B, S, k1 - k0, C, C)
                inc = (table, nb[k0:k1], owner[k0:k1] - n0, n1 - n0 == 1)
            steps.append((n0, n1, base, inc, last_valid[:, None, n0:n1]))

        for sweep in range(n_sweeps):
            u = torch.rand(B, S, T, 1, generator=generator, device=phi.device, dtype=phi.dtype)
            for n0, n1, field, inc, top in steps:
                if inc is not None:
                    table, nb_k, pos_k, single = inc
                    idx = y[:, :, nb_k, None, None].expand(-1, -1, -1, 1, C)
                    contrib = table.gather(3, idx).squeeze(3)
                    if single:
                        field = field + contrib.sum(2, keepdim=True)
                    else:
                        field = field.index_add(2, pos_k, contrib)
                p = _softmax(field)
                y[:, :, n0:n1] = torch.minimum(_inverse_cdf(p, u[:, :, n0:n1]), top)
                if sweep >= burn_in:
                    acc[:, :, n0:n1] += p
        marg = acc.sum(1)[:, rank] / (S * (n_sweeps - burn_in))
        if return_samples:
            return marg, y[..., rank]
        return marg

    def configurations(self, max_states: int = 2 ** 16) -> Tensor:
        """Every joint state ``[S, T]`` (long), ``S = prod_k n_states[k]``, last task fastest.

        Raises:
            ValidationError: if ``S > max_states``.
        """
        sizes = self.n_states.tolist()
        n = math.prod(sizes)
        if n > max_states:
            raise ValidationError(
                f"max_states: the model has {n} joint states, more than max_states={max_states}; "
                "use mean_field or gibbs")
        return combinations(sizes, self.n_states.device)

    def _joint_scores(self, phi: Tensor, psi: Tensor, Y: Tensor) -> Tensor:
        """Unnormalised log-density ``[B, S]`` of every configuration in ``Y [S, T]``."""
        B, T, C = phi.shape
        E = self.n_edges
        chunk = max(1, 2 ** 22 // (B * max(T, E, 1)))
        t_idx = torch.arange(T, device=phi.device)
        e_idx = torch.arange(E, device=phi.device)
        src, dst = self.edge_index
        psi_flat = psi.flatten(-2)
        parts = []
        for Yc in Y.split(chunk):
            score = phi[:, t_idx, Yc].sum(-1)
            if E:
                score = score + psi_flat[:, e_idx, Yc[:, src] * C + Yc[:, dst]].sum(-1)
            parts.append(score)
        return torch.cat(parts, dim=1)

    def exact_marginals(self, phi: Tensor, psi: Tensor | None,
                        max_states: int = 2 ** 16) -> Tensor:
        r"""Exact marginals by enumerating all :math:`\prod_k C_k` joint states, vectorised
        over states (in memory-bounded chunks) and the batch. Differentiable.

        .. math::
            p(y_j = c) = \sum_{\mathbf{y}:\, y_j = c}
            \exp\big(\log \tilde p(\mathbf{y}) - \log Z\big)

        Raises:
            ValidationError: if there are more than ``max_states`` joint states.

        Returns:
            Tensor: ``[B, T, C]``.
        """
        phi, psi, _ = self._prepare(phi, psi)
        B, T, C = phi.shape
        Y = self.configurations(max_states)
        p = torch.softmax(self._joint_scores(phi, psi, Y), dim=-1)
        onehot = F.one_hot(Y, C).to(p.dtype).view(Y.shape[0], T * C)
        return (p @ onehot).view(B, T, C)

    def exact_log_partition(self, phi: Tensor, psi: Tensor | None,
                            max_states: int = 2 ** 16) -> Tensor:
        r""":math:`\log Z = \log \sum_{\mathbf{y}} \exp \log \tilde p(\mathbf{y})` by
        enumeration (see :meth:`exact_marginals`). Returns ``[B]``."""
        phi, psi, _ = self._prepare(phi, psi)
        Y = self.configurations(max_states)
        return torch.logsumexp(self._joint_scores(phi, psi, Y), dim=-1)

    def predict_proba(self, phi: Tensor, psi: Tensor | None, method: str = "mean_field",
                      **kwargs) -> Tensor:
        """Per-task marginals ``[B, T, C]`` by ``method``: ``"mean_field"``, ``"gibbs"`` or
        ``"exact"``; ``kwargs`` go to that method."""
        if method == "mean_field":
            return self.mean_field(phi, psi, **kwargs)
        if method == "gibbs":
            return self.gibbs(phi, psi, **kwargs)
        if method == "exact":
            return self.exact_marginals(phi, psi, **kwargs)
        raise ValidationError(
            f"method: expected 'mean_field', 'gibbs' or 'exact', got {method!r}")


def _softmax(x: Tensor) -> Tensor:
    """Softmax over the last axis from element-wise ops and reductions: for the many tiny
    tensors of a sampler these stay single-threaded, where ``torch.softmax`` may hand rows to
    the thread pool (slow on a loaded CPU). Rows must contain a finite entry."""
    e = (x - x.amax(dim=-1, keepdim=True)).exp()
    return e / e.sum(dim=-1, keepdim=True)


def _inverse_cdf(p: Tensor, u: Tensor) -> Tensor:
    """Draw states from probabilities ``p[..., C]`` with uniforms ``u[..., 1]``; a state of
    probability 0 is never drawn (the caller clamps float round-off past the last state)."""
    return (p.cumsum(-1) <= u).sum(-1)


def _greedy_coloring(n: int, edges: list[list[int]]) -> list[int]:
    """Welsh-Powell greedy colouring of the undirected graph on ``n`` nodes (largest degree
    first, ties by index; each node takes the smallest colour its neighbours do not use)."""
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(zip(*edges))
    color = nx.greedy_color(g, strategy="largest_first")
    return [color[v] for v in range(n)]
