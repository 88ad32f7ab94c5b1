"""Encoders for taskgraph: feature backbones and the K-module encoder of MT-CRL.

``build_encoder(config)`` rebuilds an encoder from its ``config()`` dict (plain values only),
which is how saved learners restore their architecture without unpickling objects.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from encoders.backbones import ConvBackbone, MLPBackbone
from encoders.modular import InputFeatures, ModularEncoder

__all__ = ["MLPBackbone", "ConvBackbone", "ModularEncoder", "InputFeatures", "build_encoder",
           "encoder_config"]


def encoder_config(encoder: nn.Module) -> dict[str, Any] | None:
    """The rebuildable config of ``encoder``, or ``None`` for a custom module without one."""
    cfg = getattr(encoder, "config", None)
    if not callable(cfg):
        return None
    out = cfg()
    if out.get("type") == "ModularEncoder" and out.get("backbone") is None:
        return None
    return out


def build_encoder(config: dict[str, Any]) -> nn.Module:
    """Rebuild an encoder from ``config`` (as returned by its ``config()`` method)."""
    cfg = dict(config)
    kind = cfg.pop("type", None)
    if kind == "MLPBackbone":
        return MLPBackbone(**cfg)
    if kind == "ConvBackbone":
        return ConvBackbone(**cfg)
    if kind == "InputFeatures":
        return InputFeatures(**cfg)
    if kind == "ModularEncoder":
        backbone = build_encoder(cfg.pop("backbone"))
        return ModularEncoder(backbone, **cfg)
    raise ValueError(f"config: unknown encoder type {kind!r}")
