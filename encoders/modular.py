"""K-module encoder: a backbone followed by K module read-outs ``z[B, K, m]`` (MT-CRL)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from encoders.backbones import activation

__all__ = ["ModularEncoder"]


class ModularEncoder(nn.Module):
    r"""Splits a backbone representation into ``K`` modules of width ``m``.

    Two layouts, both computed in one batched contraction (no loop over modules):

    - ``mode="separate"``: ``K`` independent one-hidden-layer sub-networks on the backbone
      output :math:`\mathbf{h}`,

      .. math::
          \mathbf{z}_k = \sigma\left(\mathbf{W}_k \mathbf{h} + \mathbf{b}_k\right), \quad
          \mathbf{W}_k \in \mathbb{R}^{m \times d};

    - ``mode="split"``: the backbone output itself is cut into ``K`` consecutive blocks
      (requires ``backbone.out_dim == K * m``), :math:`\mathbf{z}_k = \mathbf{h}_{[km:(k+1)m]}`.

    Args:
        backbone (nn.Module): any module with an ``out_dim`` attribute.
        k (int): number of modules ``K``.
        module_dim (int, optional): module width ``m``; defaults to ``backbone.out_dim // k``.
        mode (str): ``"separate"`` or ``"split"``. (default: :obj:`"separate"`)
        act (str): activation of the separate sub-networks. (default: :obj:`"relu"`)

    Shapes:
        - **input:** whatever the backbone takes, ``[B, ...]``
        - **output:** ``z[B, K, m]``
    """

    def __init__(
        self,
        backbone: nn.Module,
        k: int = 4,
        module_dim: int | None = None,
        mode: str = "separate",
        act: str = "relu",
    ) -> None:
        super().__init__()
        if not hasattr(backbone, "out_dim"):
            raise ValueError("backbone: expected a module with an `out_dim` attribute")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k: expected a positive integer, got {k!r}")
        if mode not in ("separate", "split"):
            raise ValueError(f"mode: expected 'separate' or 'split', got {mode!r}")
        d = int(backbone.out_dim)
        m = int(module_dim) if module_dim is not None else max(1, d // k)
        if mode == "split" and d != k * m:
            raise ValueError(
                f"module_dim: mode='split' needs backbone.out_dim == k * module_dim, "
                f"got {d} != {k} * {m}"
            )
        self.backbone, self.k, self.module_dim, self.mode, self.act_name = backbone, k, m, mode, act
        self.out_dim = k * m
        if mode == "separate":
            self.weight = nn.Parameter(torch.empty(k, d, m))
            self.bias = nn.Parameter(torch.empty(k, m))
            self.act = activation(act)
            bound = 1.0 / math.sqrt(d)
            nn.init.uniform_(self.weight, -bound, bound)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.modules_from(self.backbone(x))

    def modules_from(self, h: torch.Tensor) -> torch.Tensor:
        """Module outputs ``z[B, K, m]`` from a backbone output ``h[B, d]``."""
        if self.mode == "split":
            return h.reshape(h.shape[0], self.k, self.module_dim)
        return self.act(torch.einsum("bd,kdm->bkm", h, self.weight) + self.bias)

    def config(self) -> dict[str, Any]:
        cfg = getattr(self.backbone, "config", None)
        return {
            "type": "ModularEncoder",
            "backbone": cfg() if callable(cfg) else None,
            "k": self.k,
            "module_dim": self.module_dim,
            "mode": self.mode,
            "act": self.act_name,
        }
