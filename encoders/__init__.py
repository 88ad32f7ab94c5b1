"""Encoders for taskgraph: feature backbones and the K-module encoder of MT-CRL.

``build_encoder(config)`` rebuilds an encoder from its ``config()`` dict (plain values only),
which is how saved learners restore their architecture without unpickling objects.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from encoders.backbones import ConvBackbone, MLPBackbone
from encoders.modular import InputFeatures, ModularEncoder
from taskgraph.registry import Registry

__all__ = ["MLPBackbone", "ConvBackbone", "ModularEncoder", "InputFeatures", "build_encoder",
           "encoder_config", "ENCODERS"]

#: encoder classes by the ``type`` their ``config()`` records (the registry type learners and
#: benchmarks use too); register a custom encoder here to make saved learners rebuild it
ENCODERS: Registry[type[nn.Module]] = Registry("encoder")
for _cls in (MLPBackbone, ConvBackbone, InputFeatures, ModularEncoder):
    ENCODERS.register(_cls.__name__, _cls)


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
    if kind is None or kind not in ENCODERS:
        raise ValueError(f"config: unknown encoder type {kind!r}; registered: {ENCODERS.list()}")
    if isinstance(cfg.get("backbone"), dict):     # a wrapper records its backbone's config
        cfg["backbone"] = build_encoder(cfg["backbone"])
    return ENCODERS.create(kind, **cfg)
