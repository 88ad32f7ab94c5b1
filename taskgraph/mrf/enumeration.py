"""Enumeration of the joint label states of a pairwise MRF over task labels (row-major: the last
task varies fastest), shared by GMTL's exact decoders and the causal EBM's exact marginals."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["combinations", "outer_sum", "prod"]


def prod(sizes: Sequence[int]) -> int:
    """``Π sizes`` as a Python int (no overflow)."""
    out = 1
    for s in sizes:
        out *= int(s)
    return out


def combinations(sizes: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    """Every label combination in row-major order, ``[prod(sizes), len(sizes)]`` long."""
    grids = torch.meshgrid(*[torch.arange(s, device=device) for s in sizes], indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], dim=1)


def outer_sum(factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``out[..., i_1, ..., i_m] = Σ_k f_k[..., i_k]`` for ``f_k`` of shape ``[..., C_k]``,
    flattened row-major to ``[..., ΠC_k]``."""
    out = factors[0]
    for f in factors[1:]:
        out = (out[..., :, None] + f[..., None, :]).reshape(*out.shape[:-1], -1)
    return out
