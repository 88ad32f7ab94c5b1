r"""Task → module routing of MT-CRL: ``T × K`` gates and the gated read-out of task node states.

A :class:`TaskModuleRouter` holds one logit per (task, module) pair. Task ``t`` reads the ``K``
module outputs ``z[B, K, m]`` of a :class:`encoders.ModularEncoder` through its gate row
:math:`\mathbf{g}_t \in [0, 1]^K`, giving the task node states ``s[B, T, d]`` that the task
message passing and the heads consume. The gates are the module → task edges of the exported
:class:`~taskgraph.graph.TaskGraph` (``routing``) and of its PyG bipartite ``edge_index``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from taskgraph.exceptions import ValidationError

__all__ = ["TaskModuleRouter", "GATE_KINDS", "READOUTS", "SPARSITY_KINDS"]

GATE_KINDS = ("sigmoid", "hard_concrete", "gumbel", "softmax")
READOUTS = ("concat", "sum", "project")
SPARSITY_KINDS = ("l1", "entropy", "l1+entropy", "none")

# hard-concrete stretch and temperature (Louizos, Welling & Kingma, ICLR 2018)
_HC_GAMMA, _HC_ZETA = -0.1, 1.1


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


class TaskModuleRouter(nn.Module):
    r"""Sparse task → module routing with a gated read-out per task node.

    Gates :math:`g_{tk} \in [0, 1]` from logits :math:`W_{tk}`:

    - ``"sigmoid"`` (default): :math:`g = \sigma(W)`;
    - ``"hard_concrete"``: the stretched, clipped binary concrete of Louizos et al. (2018),
      :math:`g = \min(1, \max(0, \sigma((\log u - \log(1-u) + W)/\beta)(\zeta-\gamma) + \gamma))`
      with :math:`u \sim U(0, 1)` in training and :math:`u = \tfrac12` in evaluation; it reaches
      exact zeros, and its L1 term is the expected L0 norm
      :math:`\sigma(W - \beta\log(-\gamma/\zeta))`;
    - ``"gumbel"``: a straight-through Gumbel-sigmoid, hard 0/1 gates in the forward pass (the
      relaxed sample's gradient in the backward pass), :math:`\mathbb{1}[W > 0]` in evaluation;
    - ``"softmax"``: :math:`g_t = \operatorname{softmax}(W_t)` over modules (rows sum to 1).

    Read-out of task ``t`` (``readout``):

    .. math::
        \text{concat:}\;\; \mathbf{s}_t = [\,g_{t1}\mathbf{z}_1 \,\|\, \cdots \,\|\,
        g_{tK}\mathbf{z}_K\,] \in \mathbb{R}^{Km}, \qquad
        \text{sum:}\;\; \mathbf{s}_t = \sum_k g_{tk}\, \mathbf{z}_k \in \mathbb{R}^{m},

    .. math::
        \text{project:}\;\; \mathbf{s}_t = \sum_k g_{tk}\, \mathbf{P}_k \mathbf{z}_k
        + \mathbf{c}_t \in \mathbb{R}^{p}
        = \mathbf{P}\,[\,g_{t1}\mathbf{z}_1 \,\|\, \cdots \,\|\, g_{tK}\mathbf{z}_K\,]
        + \mathbf{c}_t,

    a learned linear map of the concat read-out to ``proj_dim`` = :math:`p` (per-task bias
    :math:`\mathbf{c}_t`), computed as ``K`` module projections ``[B, K, p]`` mixed by the gates:
    the node width no longer grows with ``K·m``, so wide encoders keep message passing cheap.

    A gate of exactly 0 removes module ``k`` from task ``t`` (no value, no gradient). Gates can
    be pruned for good with :meth:`prune` (a fixed 0/1 ``mask`` buffer) or, only at inference,
    with ``prune_threshold`` (gates below it read as 0 in evaluation mode).

    Args:
        n_tasks (int): number of tasks ``T``.
        n_modules (int): number of modules ``K``.
        module_dim (int): module width ``m``.
        gate (str): ``"sigmoid"``, ``"hard_concrete"``, ``"gumbel"`` or ``"softmax"``.
            (default: :obj:`"sigmoid"`)
        readout (str): ``"concat"``, ``"sum"`` or ``"project"``. (default: :obj:`"concat"`)
        proj_dim (int, optional): output width ``p`` of the ``"project"`` read-out (default:
            ``module_dim``).
        init (float): initial gate value of every pair (the logits are set so the
            evaluation-mode gate equals it; for ``"softmax"`` rows start uniform).
            (default: :obj:`0.5`)
        temperature (float): :math:`\beta` of the hard concrete, :math:`\tau` of the Gumbel
            sigmoid. (default: :obj:`2/3`)
        prune_threshold (float, optional): in evaluation mode, gates below it are 0.

    Shapes:
        - **input:** ``z[B, K, m]``; optional gates ``[T, K]`` or per example ``[B, T, K]``
        - **output:** ``s[B, T, d]`` with ``d = K·m`` (concat), ``m`` (sum) or ``p`` (project)
    """

    def __init__(
        self,
        n_tasks: int,
        n_modules: int,
        module_dim: int,
        *,
        gate: str = "sigmoid",
        readout: str = "concat",
        init: float = 0.5,
        temperature: float = 2.0 / 3.0,
        prune_threshold: float | None = None,
        proj_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.n_tasks = _positive_int(n_tasks, "n_tasks")
        self.n_modules = _positive_int(n_modules, "n_modules")
        self.module_dim = _positive_int(module_dim, "module_dim")
        if gate not in GATE_KINDS:
            raise ValidationError(f"gate: expected one of {GATE_KINDS}, got {gate!r}")
        if readout not in READOUTS:
            raise ValidationError(f"readout: expected one of {READOUTS}, got {readout!r}")
        if not 0.0 < float(init) < 1.0:
            raise ValidationError(f"init: expected a gate value in (0, 1), got {init!r}")
        if not float(temperature) > 0:
            raise ValidationError(f"temperature: expected a positive number, got {temperature!r}")
        if prune_threshold is not None and not 0.0 <= float(prune_threshold) <= 1.0:
            raise ValidationError(
                f"prune_threshold: expected None or a value in [0, 1], got {prune_threshold!r}"
            )
        self.gate, self.readout = gate, readout
        self.init, self.temperature = float(init), float(temperature)
        self.prune_threshold = None if prune_threshold is None else float(prune_threshold)
        if readout == "concat":
            self.out_dim = self.n_modules * self.module_dim
        elif readout == "sum":
            self.out_dim = self.module_dim
        else:
            self.out_dim = _positive_int(self.module_dim if proj_dim is None else proj_dim,
                                         "proj_dim")
        self.logits = nn.Parameter(torch.empty(self.n_tasks, self.n_modules))
        self.register_buffer("mask", torch.ones(self.n_tasks, self.n_modules))
        if readout == "project":
            self.proj = nn.Parameter(torch.empty(self.n_modules, self.module_dim, self.out_dim))
            self.proj_bias = nn.Parameter(torch.zeros(self.n_tasks, self.out_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if self.gate == "softmax":
                self.logits.zero_()
            else:
                self.logits.copy_(self._logit_of(torch.full_like(self.logits, self.init)))
            self.mask.fill_(1.0)
            if self.readout == "project":
                # the fan-in of the concat read-out, as nn.Linear(K·m, p) would use
                bound = 1.0 / math.sqrt(self.n_modules * self.module_dim)
                self.proj.uniform_(-bound, bound)
                self.proj_bias.zero_()

    # ------------------------------------------------------------------ gates
    def _logit_of(self, g: torch.Tensor) -> torch.Tensor:
        """Logits whose evaluation-mode gates equal ``g`` (inverse of :meth:`gates`)."""
        g = g.clamp(1e-6, 1 - 1e-6)
        if self.gate == "hard_concrete":
            p = ((g - _HC_GAMMA) / (_HC_ZETA - _HC_GAMMA)).clamp(1e-6, 1 - 1e-6)
            return self.temperature * torch.logit(p)
        if self.gate == "gumbel":
            return self.temperature * torch.logit(g)
        if self.gate == "softmax":
            return torch.log(g)
        return torch.logit(g)

    def gates(self, sample: bool | None = None) -> torch.Tensor:
        """Gates ``[T, K]`` in ``[0, 1]``.

        Args:
            sample (bool, optional): draw the stochastic gates (hard concrete, Gumbel);
                default: in training mode. Deterministic gates also apply ``prune_threshold``
                when the module is in evaluation mode.
        """
        sample = self.training if sample is None else sample
        w = self.logits
        if self.gate == "sigmoid":
            g = torch.sigmoid(w)
        elif self.gate == "softmax":
            g = torch.softmax(w.masked_fill(self.mask == 0, -math.inf), dim=-1)
            g = torch.nan_to_num(g, nan=0.0)
        elif self.gate == "hard_concrete":
            if sample:
                u = torch.rand_like(w).clamp(1e-6, 1 - 1e-6)
                s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + w) / self.temperature)
            else:
                s = torch.sigmoid(w / self.temperature)
            g = (s * (_HC_ZETA - _HC_GAMMA) + _HC_GAMMA).clamp(0.0, 1.0)
        else:  # gumbel, straight-through
            if sample:
                u = torch.rand_like(w).clamp(1e-6, 1 - 1e-6)
                soft = torch.sigmoid((w + torch.log(u) - torch.log1p(-u)) / self.temperature)
                g = (soft > 0.5).to(w.dtype) + soft - soft.detach()
            else:
                g = (w > 0).to(w.dtype)
        g = g * self.mask
        if not sample and not self.training and self.prune_threshold is not None:
            g = torch.where(g >= self.prune_threshold, g, torch.zeros_like(g))
        return g

    def expected_gates(self) -> torch.Tensor:
        r"""Deterministic, differentiable gate values ``[T, K]`` used by the sparsity terms:
        :math:`\sigma(W)`, softmax rows, the hard concrete's :math:`P(g \neq 0)`, or the Gumbel
        sigmoid's :math:`\sigma(W/\tau)`."""
        w = self.logits
        if self.gate == "sigmoid":
            p = torch.sigmoid(w)
        elif self.gate == "softmax":
            p = torch.softmax(w.masked_fill(self.mask == 0, -math.inf), dim=-1)
            p = torch.nan_to_num(p, nan=0.0)
        elif self.gate == "hard_concrete":
            p = torch.sigmoid(w - self.temperature * math.log(-_HC_GAMMA / _HC_ZETA))
        else:
            p = torch.sigmoid(w / self.temperature)
        return p * self.mask

    def sparsity(self, kind: str = "l1") -> torch.Tensor:
        r"""Sparsity penalty of the routing (a scalar).

        - ``"l1"``: :math:`\sum_{t,k} p_{tk}` with :math:`p` = :meth:`expected_gates` (the
          expected L0 norm for hard-concrete gates). For ``"softmax"`` gates the rows sum to 1,
          so ``"l1"`` is constant and ``"entropy"`` is the useful term.
        - ``"entropy"``: :math:`\sum_{t,k} H(p_{tk})` (binary entropy; row entropy for
          ``"softmax"``), pushes gates to 0 or 1.
        - ``"l1+entropy"``: the sum; ``"none"``: 0.
        """
        if kind not in SPARSITY_KINDS:
            raise ValidationError(f"kind: expected one of {SPARSITY_KINDS}, got {kind!r}")
        p = self.expected_gates()
        total = p.sum() * 0.0
        if kind in ("l1", "l1+entropy"):
            total = total + p.sum()
        if kind in ("entropy", "l1+entropy"):
            q = p.clamp(1e-6, 1 - 1e-6)
            if self.gate == "softmax":
                total = total - (p * torch.log(q)).sum()
            else:
                total = total - (q * torch.log(q) + (1 - q) * torch.log1p(-q)).sum()
        return total

    # ------------------------------------------------------------------ read-out
    def forward(self, z: torch.Tensor, gates: torch.Tensor | None = None) -> torch.Tensor:
        """Task node states ``s[B, T, d]`` from module outputs ``z[B, K, m]``."""
        if z.dim() != 3 or z.shape[1] != self.n_modules or z.shape[2] != self.module_dim:
            raise ValidationError(
                f"z: expected [B, {self.n_modules}, {self.module_dim}], got {tuple(z.shape)}"
            )
        g = self.gates() if gates is None else gates
        if g.dim() == 2:
            g = g[None]
        if g.shape[-2:] != (self.n_tasks, self.n_modules):
            raise ValidationError(
                f"gates: expected [T, K] or [B, T, K] with T={self.n_tasks}, "
                f"K={self.n_modules}, got {tuple(g.shape)}"
            )
        if self.readout == "sum":
            return torch.einsum("btk,bkm->btm", g.expand(z.shape[0], -1, -1), z)
        if self.readout == "project":
            pz = torch.einsum("bkm,kmp->bkp", z, self.proj)       # [B, K, p]
            if g.shape[0] == 1:
                return torch.einsum("tk,bkp->btp", g[0], pz) + self.proj_bias
            return torch.einsum("btk,bkp->btp", g, pz) + self.proj_bias
        s = g[..., None] * z[:, None]  # [B, T, K, m]
        return s.reshape(z.shape[0], self.n_tasks, self.out_dim)

    # ------------------------------------------------------------------ pruning and export
    @torch.no_grad()
    def routing(self) -> torch.Tensor:
        """Evaluation-mode gates ``[T, K]`` (detached; pruning applied): the routing matrix."""
        was = self.training
        self.eval()
        try:
            return self.gates(sample=False).detach().clone()
        finally:
            self.train(was)

    @torch.no_grad()
    def prune(self, threshold: float | None = None) -> torch.Tensor:
        """Fix every gate below ``threshold`` (default: ``prune_threshold``, else 0.5) to 0 for
        good, in training too; returns the new 0/1 mask ``[T, K]``."""
        thr = threshold if threshold is not None else (
            self.prune_threshold if self.prune_threshold is not None else 0.5)
        keep = (self.routing() >= float(thr)).to(self.mask.dtype)
        self.mask.mul_(keep)
        return self.mask.clone()

    def edge_index(self, threshold: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """PyG bipartite edges module → task of the gates above ``threshold``.

        Same layout as :meth:`taskgraph.TaskGraph.routing_edge_index`: row 0 the module index,
        row 1 the task index, sorted by module then task; weights ``[E]`` are the gates.
        """
        g = self.routing()
        mod, task = torch.nonzero(g.T > threshold, as_tuple=True)
        return torch.stack([mod, task]), g[task, mod]

    @torch.no_grad()
    def set_gates(self, gates: torch.Tensor) -> TaskModuleRouter:
        """Set logits and mask so that the evaluation-mode gates equal ``gates[T, K]`` (zeros are
        pruned; exact for sigmoid and hard-concrete gates, rounded for Gumbel gates)."""
        g = torch.as_tensor(gates, dtype=self.logits.dtype, device=self.logits.device)
        if g.shape != (self.n_tasks, self.n_modules):
            raise ValidationError(
                f"gates: expected shape [{self.n_tasks}, {self.n_modules}], got {tuple(g.shape)}"
            )
        if bool(((g < 0) | (g > 1)).any()):
            raise ValidationError("gates: values must lie in [0, 1]")
        self.mask.copy_((g > 0).to(self.mask.dtype))
        self.logits.copy_(self._logit_of(torch.where(g > 0, g, torch.full_like(g, 0.5))))
        if self.gate == "hard_concrete":  # exact 1 needs a logit past the clip point
            self.logits.copy_(torch.where(g >= 1, torch.full_like(g, 20.0), self.logits))
        return self

    @classmethod
    def from_edge_index(
        cls,
        edge_index: torch.Tensor,
        edge_weight: torch.Tensor,
        n_tasks: int,
        n_modules: int,
        module_dim: int,
        **kwargs: Any,
    ) -> TaskModuleRouter:
        """A router whose gates are the module → task edges ``edge_index [2, E]`` (row 0
        module, row 1 task) with weights ``edge_weight [E]``; absent pairs are pruned."""
        ei = torch.as_tensor(edge_index, dtype=torch.long)
        if ei.dim() != 2 or ei.shape[0] != 2:
            raise ValidationError(f"edge_index: expected [2, E], got {tuple(ei.shape)}")
        ew = torch.as_tensor(edge_weight, dtype=torch.float32).reshape(-1)
        if ew.numel() != ei.shape[1]:
            raise ValidationError(
                f"edge_weight: expected {ei.shape[1]} weights (one per edge), got {ew.numel()}"
            )
        if ei.numel() and (int(ei[0].max()) >= n_modules or int(ei[1].max()) >= n_tasks
                           or int(ei.min()) < 0):
            raise ValidationError("edge_index: module or task index out of range")
        router = cls(n_tasks, n_modules, module_dim, **kwargs)
        g = torch.zeros(n_tasks, n_modules)
        g[ei[1], ei[0]] = ew
        return router.set_gates(g)

    def extra_repr(self) -> str:
        extra = "" if self.prune_threshold is None else f", prune_threshold={self.prune_threshold}"
        return (f"tasks={self.n_tasks}, modules={self.n_modules}, module_dim={self.module_dim}, "
                f"gate={self.gate!r}, readout={self.readout!r}{extra}")
