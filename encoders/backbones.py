"""Feature backbones: an MLP for tabular data and a small CNN for 1×28×28 images.

Every encoder exposes ``out_dim`` (the width of what it returns) and ``config()`` (a dict of
plain values from which :func:`encoders.build_encoder` rebuilds the same architecture, so a saved
learner can be loaded with ``weights_only=True``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["MLPBackbone", "ConvBackbone", "activation"]

_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


def activation(name: str) -> nn.Module:
    """An activation module by name (``relu``, ``elu``, ``gelu``, ``tanh``, ``silu``)."""
    key = name.lower()
    if key not in _ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[key]()


class MLPBackbone(nn.Module):
    r"""A multi-layer perceptron on flattened inputs.

    .. math::
        \mathbf{h}^{(l+1)} = \sigma\left(\mathbf{W}^{(l)} \mathbf{h}^{(l)} + \mathbf{b}^{(l)}\right)

    Args:
        in_dim (int): number of input features (inputs ``[B, ...]`` are flattened).
        hidden (int or sequence of int): width of every hidden layer, or one width per layer.
            (default: :obj:`64`)
        n_layers (int): number of layers when ``hidden`` is an int. (default: :obj:`2`)
        dropout (float): dropout after each activation. (default: :obj:`0.0`)
        act (str): activation name. (default: :obj:`"relu"`)

    Shapes:
        - **input:** ``[B, in_dim]`` or ``[B, *]`` with ``prod(*) = in_dim``
        - **output:** ``[B, out_dim]``, ``out_dim`` = last hidden width
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int | Sequence[int] = 64,
        n_layers: int = 2,
        dropout: float = 0.0,
        act: str = "relu",
    ) -> None:
        super().__init__()
        if not isinstance(in_dim, int) or in_dim < 1:
            raise ValueError(f"in_dim: expected a positive integer, got {in_dim!r}")
        if isinstance(hidden, int):
            widths = [int(hidden)] * int(n_layers)
        else:
            widths = [int(h) for h in hidden]
        if not widths or min(widths) < 1:
            raise ValueError(f"hidden: expected positive widths, got {hidden!r}")
        self.in_dim, self.widths, self.dropout, self.act = in_dim, widths, float(dropout), act
        layers: list[nn.Module] = []
        prev = in_dim
        for w in widths:
            layers += [nn.Linear(prev, w), activation(act)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = w
        self.net = nn.Sequential(*layers)
        self.out_dim = prev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], -1))

    def config(self) -> dict[str, Any]:
        return {
            "type": "MLPBackbone",
            "in_dim": self.in_dim,
            "hidden": list(self.widths),
            "dropout": self.dropout,
            "act": self.act,
        }


class ConvBackbone(nn.Module):
    r"""A small CNN for single-channel 28×28 images (MNIST-sized), LeNet-like.

    Two ``conv(5×5) → ReLU → max-pool(2)`` stages, then a linear layer to ``out_dim``.

    Args:
        in_channels (int): image channels. (default: :obj:`1`)
        out_dim (int): output width. (default: :obj:`64`)
        width (int): channels of the first conv layer (the second has ``2 * width``).
            (default: :obj:`16`)
        image_size (int): side of the square input image. (default: :obj:`28`)
        dropout (float): dropout before the last layer. (default: :obj:`0.0`)

    Shapes:
        - **input:** ``[B, in_channels, image_size, image_size]`` (``[B, image_size²]`` is
          reshaped when ``in_channels == 1``)
        - **output:** ``[B, out_dim]``
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_dim: int = 64,
        width: int = 16,
        image_size: int = 28,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_dim, self.width = in_channels, out_dim, width
        self.image_size, self.dropout = image_size, float(dropout)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Linear(2 * width * side * side, out_dim),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.reshape(x.shape[0], self.in_channels, self.image_size, self.image_size)
        return self.head(self.features(x))

    def config(self) -> dict[str, Any]:
        return {
            "type": "ConvBackbone",
            "in_channels": self.in_channels,
            "out_dim": self.out_dim,
            "width": self.width,
            "image_size": self.image_size,
            "dropout": self.dropout,
        }
