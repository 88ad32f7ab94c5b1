"""K-module encoder: a backbone followed by K module read-outs ``z[B, K, m]`` (MT-CRL)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from encoders.backbones import activation
from taskgraph.exceptions import ValidationError

__all__ = ["ModularEncoder", "InputFeatures", "MODULAR_MODES"]

MODULAR_MODES = ("separate", "split", "blocks")


class InputFeatures(nn.Module):
    r"""The identity backbone: flattens the input, ``out_dim = in_dim``.

    Use it under a :class:`ModularEncoder` with ``mode="blocks"`` so that every module reads a
    block of the *raw* input features.

    Args:
        in_dim (int): number of input features.

    Shapes:
        - **input:** ``[B, *]`` with ``prod(*) = in_dim``
        - **output:** ``[B, in_dim]``
    """

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        if isinstance(in_dim, bool) or not isinstance(in_dim, int) or in_dim < 1:
            raise ValidationError(f"in_dim: expected a positive integer, got {in_dim!r}")
        self.in_dim = self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)

    def config(self) -> dict[str, Any]:
        return {"type": "InputFeatures", "in_dim": self.in_dim}


class ModularEncoder(nn.Module):
    r"""Splits a backbone representation into ``K`` modules of width ``m``.

    Three layouts, each computed in one batched contraction (no loop over modules):

    - ``mode="separate"``: ``K`` independent sub-networks on the backbone output
      :math:`\mathbf{h}`,

      .. math::
          \mathbf{z}_k = \sigma\left(\mathbf{W}_k \mathbf{h} + \mathbf{b}_k\right), \quad
          \mathbf{W}_k \in \mathbb{R}^{m \times d};

    - ``mode="split"``: the backbone output itself is cut into ``K`` consecutive blocks
      (requires ``backbone.out_dim == K * m``), :math:`\mathbf{z}_k = \mathbf{h}_{[km:(k+1)m]}`
      (no parameters, no extra compute);
    - ``mode="blocks"``: like ``"separate"``, but sub-network ``k`` sees only the features
      ``blocks[k]`` of :math:`\mathbf{h}` (a fixed 0/1 mask on :math:`\mathbf{W}_k`); with the
      :class:`InputFeatures` backbone, module ``k`` reads only input block ``k``.

    With ``module_hidden`` the ``"separate"``/``"blocks"`` sub-networks get one hidden layer of
    that width, :math:`\mathbf{z}_k = \sigma(\mathbf{V}_k\, \sigma(\mathbf{W}_k \mathbf{h} +
    \mathbf{b}_k) + \mathbf{c}_k)`.

    Args:
        backbone (nn.Module): any module with an ``out_dim`` attribute.
        k (int, optional): number of modules ``K`` (default: ``len(blocks)`` in ``"blocks"``
            mode, else 4).
        module_dim (int, optional): module width ``m``; defaults to ``backbone.out_dim // k``.
        mode (str): ``"separate"``, ``"split"`` or ``"blocks"``. (default: :obj:`"separate"`)
        act (str): activation of the sub-networks. (default: :obj:`"relu"`)
        blocks (list of list of int, optional): for ``mode="blocks"``, the backbone-output
            indices each module reads.
        module_hidden (int, optional): hidden width of two-layer sub-networks.

    Shapes:
        - **input:** whatever the backbone takes, ``[B, ...]``
        - **output:** ``z[B, K, m]``
    """

    @classmethod
    def over(cls, backbone: nn.Module, n_modules: int, mode: str = "split",
             module_dim: int | None = None, hidden: int = 64) -> ModularEncoder:
        """``n_modules`` modules over ``backbone``: ``"split"`` cuts its output into equal
        slices (``module_dim`` must then be ``out_dim / n_modules`` or ``None``),
        ``"separate"`` gives each module its own head of width ``module_dim`` (default
        ``hidden // n_modules``). Errors name the learner arguments ``n_modules`` and
        ``module_dim``."""
        k, d = int(n_modules), int(backbone.out_dim)
        if mode == "split":
            if module_dim is not None and int(module_dim) * k != d:
                raise ValidationError(
                    f"module_dim: module_mode='split' needs n_modules * module_dim == the "
                    f"backbone width {d}, got {k} * {module_dim}")
            if d % k:
                raise ValidationError(
                    f"n_modules: module_mode='split' needs the backbone width {d} to be a "
                    f"multiple of n_modules={k}")
            return cls(backbone, k=k, module_dim=d // k, mode="split")
        m = int(module_dim) if module_dim is not None else max(1, int(hidden) // k)
        return cls(backbone, k=k, module_dim=m, mode="separate")

    def __init__(
        self,
        backbone: nn.Module,
        k: int | None = None,
        module_dim: int | None = None,
        mode: str = "separate",
        act: str = "relu",
        blocks: Sequence[Sequence[int]] | None = None,
        module_hidden: int | None = None,
    ) -> None:
        super().__init__()
        if not hasattr(backbone, "out_dim"):
            raise ValidationError("backbone: expected a module with an `out_dim` attribute")
        if mode not in MODULAR_MODES:
            raise ValidationError(f"mode: expected one of {MODULAR_MODES}, got {mode!r}")
        d = int(backbone.out_dim)
        if mode == "blocks":
            blocks = self._check_blocks(blocks, d)
            if k is None:
                k = len(blocks)
            if k != len(blocks):
                raise ValidationError(f"k: mode='blocks' has one module per block; got k={k} for "
                                 f"{len(blocks)} blocks")
        elif blocks is not None:
            raise ValidationError("blocks: only used with mode='blocks'")
        k = 4 if k is None else k
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValidationError(f"k: expected a positive integer, got {k!r}")
        m = int(module_dim) if module_dim is not None else max(1, d // k)
        if mode == "split" and d != k * m:
            raise ValidationError(
                f"module_dim: mode='split' needs backbone.out_dim == k * module_dim, "
                f"got {d} != {k} * {m}"
            )
        if module_hidden is not None and (mode == "split" or int(module_hidden) < 1):
            raise ValidationError(
                "module_hidden: expected a positive width, only for mode 'separate' or 'blocks'")
        self.backbone, self.k, self.module_dim, self.mode, self.act_name = backbone, k, m, mode, act
        self.blocks = blocks
        self.module_hidden = None if module_hidden is None else int(module_hidden)
        self.out_dim = k * m
        if mode != "split":
            width = m if self.module_hidden is None else self.module_hidden
            self.weight = nn.Parameter(torch.empty(k, d, width))
            self.bias = nn.Parameter(torch.empty(k, width))
            self.act = activation(act)
            fan_in = d if blocks is None else max(len(b) for b in blocks)
            self._uniform(self.weight, self.bias, fan_in)
            if self.module_hidden is not None:
                self.weight2 = nn.Parameter(torch.empty(k, width, m))
                self.bias2 = nn.Parameter(torch.empty(k, m))
                self._uniform(self.weight2, self.bias2, width)
            if blocks is not None:
                mask = torch.zeros(k, d, 1)
                for j, blk in enumerate(blocks):
                    mask[j, blk] = 1.0
                self.register_buffer("block_mask", mask)

    @staticmethod
    def _uniform(weight: nn.Parameter, bias: nn.Parameter, fan_in: int) -> None:
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(weight, -bound, bound)
        nn.init.uniform_(bias, -bound, bound)

    @staticmethod
    def _check_blocks(blocks: Any, d: int) -> list[list[int]]:
        if blocks is None or isinstance(blocks, (str, bytes)) or not isinstance(blocks, Sequence):
            raise ValidationError(
                "blocks: mode='blocks' needs a list of index lists, one per module")
        out: list[list[int]] = []
        for j, blk in enumerate(blocks):
            idx = [int(i) for i in blk]
            if not idx or min(idx) < 0 or max(idx) >= d:
                raise ValidationError(
                    f"blocks: block {j} must be a non-empty list of indices in [0, {d}), "
                    f"got {blk!r}"
                )
            out.append(idx)
        if not out:
            raise ValidationError("blocks: expected at least one block")
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.modules_from(self.backbone(x))

    def modules_from(self, h: torch.Tensor) -> torch.Tensor:
        """Module outputs ``z[B, K, m]`` from a backbone output ``h[B, d]``."""
        if self.mode == "split":
            return h.reshape(h.shape[0], self.k, self.module_dim)
        w = self.weight if self.blocks is None else self.weight * self.block_mask
        z = self.act(torch.einsum("bd,kdm->bkm", h, w) + self.bias)
        if self.module_hidden is not None:
            z = self.act(torch.einsum("bkh,khm->bkm", z, self.weight2) + self.bias2)
        return z

    def decorrelation(self, z: torch.Tensor, kind: str = "corr") -> torch.Tensor:
        """Dependence between the module blocks of ``z[B, K, m]``
        (:func:`taskgraph.regularizers.decorrelation`: ``"corr"`` or ``"hsic"``)."""
        from taskgraph.regularizers import decorrelation

        return decorrelation(z, kind)

    def config(self) -> dict[str, Any]:
        cfg = getattr(self.backbone, "config", None)
        out: dict[str, Any] = {
            "type": "ModularEncoder",
            "backbone": cfg() if callable(cfg) else None,
            "k": self.k,
            "module_dim": self.module_dim,
            "mode": self.mode,
            "act": self.act_name,
        }
        if self.blocks is not None:
            out["blocks"] = [list(b) for b in self.blocks]
        if self.module_hidden is not None:
            out["module_hidden"] = self.module_hidden
        return out
