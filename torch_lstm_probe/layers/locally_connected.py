"""Unshared convolutions with tf_keras semantics: ``LocallyConnected1D`` and ``LocallyConnected2D``.

Every output position ``p`` has its own kernel. With ``r`` spatial axes, kernel size ``k``,
strides ``s`` and ``C`` input channels, output position ``o`` reads the window that starts at
``o * s - before`` on each axis (``before = 0`` for ``"valid"``, ``floor(k / 2)`` for tf_keras'
``"same"``), cells outside the input reading zero:

    y[n, o, f] = act(sum_{j, c} x[n, o * s - before + j, c] * weight[p(o), j, c, f] + bias[f, o])

``p(o)`` is the row-major index of ``o``; ``j`` runs over the ``prod(k)`` window taps in row-major
order. Output length per axis: ``floor((L - k) / s) + 1`` for ``"valid"`` and ``ceil(L / s)`` for
``"same"``. Shapes: ``(N, *S, C)`` → ``(N, *S_out, F)`` (``(N, C, *S)`` → ``(N, F, *S_out)`` for
channels first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..activations import get_activation, is_identity
from ..errors import InputError
from ..registry import register_module
from .base import ConfigMixin
from .conv import check_spatial_input, pad_argument, per_axis, to_keras_layout, to_torch_layout

__all__ = [
    "LocallyConnectedConfig",
    "LocallyConnected1D",
    "LocallyConnected2D",
    "locally_connected_output_length",
    "window_before",
]


def window_before(kernel_size: int, padding: str) -> int:
    """Cells the first window starts before the input: 0 for ``"valid"``, ``floor(k / 2)`` for ``"same"``."""
    return kernel_size // 2 if padding == "same" else 0


def locally_connected_output_length(length: int, kernel_size: int, stride: int, padding: str) -> int:
    """``floor((L - k) / s) + 1`` for ``"valid"``, ``ceil(L / s)`` for ``"same"``."""
    if padding == "same":
        return math.ceil(length / stride)
    return (length - kernel_size) // stride + 1


@dataclass(frozen=True)
class LocallyConnectedConfig:
    """Config of LocallyConnected1D/2D: sizes are one int per spatial axis (an int means all axes)."""

    in_channels: int  # C
    out_channels: int  # Keras `filters` F
    positions: int  # P = prod(S_out): one kernel per output position
    kernel_size: int | tuple[int, ...]  # Keras `kernel_size`
    stride: int | tuple[int, ...] = 1  # Keras `strides`
    padding: str = "valid"  # "valid" | "same" (tf_keras rule: windows start floor(k / 2) before)
    use_bias: bool = True  # Keras `use_bias`
    activation: str = "linear"  # runtime activation name
    channels_first: bool = False  # Keras data_format "channels_first": (N, C, *S) in and out
    output_size: int | tuple[int, ...] | None = None  # S_out when known (required with a bias)
    input_size: int | tuple[int, ...] | None = None  # S the weights were laid out for; None: any S giving S_out


class _LocallyConnected(ConfigMixin, nn.Module):
    """tf_keras ``LocallyConnectedND``: see the module docstring for the formula.

    ``weight`` ``(P, prod(k), C, F)`` with ``P = prod(S_out)``; ``bias`` ``(F, *S_out)``.
    """

    Config = LocallyConnectedConfig
    rank: ClassVar[int]

    def __init__(self, config: LocallyConnectedConfig) -> None:
        super().__init__()
        if config.padding not in ("valid", "same"):
            raise ValueError(f"{type(self).__name__} padding must be 'valid' or 'same'. Received {config.padding!r}.")
        self.config = config
        self.kernel_size = per_axis(config.kernel_size, self.rank)
        self.stride = per_axis(config.stride, self.rank)
        self.input_size = None if config.input_size is None else per_axis(config.input_size, self.rank)
        self.output_size = None if config.output_size is None else per_axis(config.output_size, self.rank)
        if self.input_size is not None:
            built = self._output_size(self.input_size)
            if self.output_size not in (None, built) or math.prod(built) != config.positions:
                raise ValueError(
                    f"{type(self).__name__} input_size {config.input_size} gives output size {built}, "
                    f"not output_size {config.output_size} with {config.positions} positions."
                )
            self.output_size = built
        if self.output_size is not None and math.prod(self.output_size) != config.positions:
            raise ValueError(
                f"{type(self).__name__} output_size {config.output_size} does not hold {config.positions} positions."
            )
        if config.use_bias and self.output_size is None:
            raise ValueError(f"{type(self).__name__} needs output_size for its bias (F, *S_out).")
        taps = math.prod(self.kernel_size)
        self.weight = nn.Parameter(torch.empty(config.positions, taps, config.in_channels, config.out_channels))
        self.bias = (
            nn.Parameter(torch.zeros(config.out_channels, *(self.output_size or ()))) if config.use_bias else None
        )
        self._act = None if is_identity(config.activation) else get_activation(config.activation)

    def _output_size(self, sizes: tuple[int, ...]) -> tuple[int, ...]:
        """``S_out`` for the spatial input sizes ``S``."""
        return tuple(
            locally_connected_output_length(*args, self.config.padding)
            for args in zip(sizes, self.kernel_size, self.stride)
        )

    def _reads_as_built(self, sizes: tuple[int, ...]) -> bool:
        """Whether every window reads the same input cells as for ``input_size``: on each axis the
        last window's end ``(O - 1) s - before + k``, clipped to ``L``, must agree (cells past it
        are never read)."""
        if self.input_size is None or self.output_size is None:
            return True
        for length, built, k, s, out in zip(sizes, self.input_size, self.kernel_size, self.stride, self.output_size):
            end = (out - 1) * s - window_before(k, self.config.padding) + k
            if min(length, end) != min(built, end):
                return False
        return True

    def _patches(self, h: torch.Tensor, output_size: tuple[int, ...]) -> torch.Tensor:
        """``(N, C, *S)`` → the windows ``(N, P, prod(k), C)``, zeros outside the input."""
        pads = []
        for length, k, s, out in zip(h.shape[2:], self.kernel_size, self.stride, output_size):
            before = window_before(k, self.config.padding)
            pads.append((before, max((out - 1) * s + k - before - length, 0)))
        h = F.pad(h, pad_argument(pads))  # (N, C, *S_padded)
        for axis, (k, s, out) in enumerate(zip(self.kernel_size, self.stride, output_size)):
            h = h.unfold(2 + axis, k, s).narrow(2 + axis, 0, out)  # window axis appended last
        # h: (N, C, *S_out, *k)
        n, c = h.shape[:2]
        r = self.rank
        h = h.permute(0, *range(2, 2 + r), *range(2 + r, 2 + 2 * r), 1)  # (N, *S_out, *k, C)
        return h.reshape(n, math.prod(output_size), math.prod(self.kernel_size), c)  # (N, P, prod(k), C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        check_spatial_input(self, x, self.rank, cfg.in_channels, cfg.channels_first)
        h = to_torch_layout(x, cfg.channels_first)  # (N, C, *S)
        sizes = tuple(h.shape[2:])
        output_size = self._output_size(sizes)
        fits = min(output_size) >= 1 and math.prod(output_size) == cfg.positions
        if not fits or not self._reads_as_built(sizes) or self.output_size not in (None, output_size):
            built = self.input_size or f"an output of {self.output_size or cfg.positions} positions"
            raise InputError(
                f"{self.describe()} has one kernel per output position and was built for spatial size {built}. "
                f"Received shape {tuple(x.shape)}."
            )
        patches = self._patches(h, output_size)  # (N, P, prod(k), C)
        y = torch.einsum("npjc,pjcf->nfp", patches, self.weight)  # (N, F, P)
        y = y.reshape(y.shape[0], cfg.out_channels, *output_size)  # (N, F, *S_out)
        if self.bias is not None:
            y = y + self.bias  # (N, F, *S_out)
        y = to_keras_layout(y, cfg.channels_first)  # (N, *S_out, F)
        return y if self._act is None else self._act(y)  # on the last axis, as Keras

    def extra_repr(self) -> str:
        cfg = self.config
        return (
            f"{cfg.in_channels}, {cfg.out_channels}, positions={cfg.positions}, kernel_size={cfg.kernel_size}, "
            f"stride={cfg.stride}, padding={cfg.padding!r}, activation={cfg.activation!r}"
        )


@register_module("LocallyConnected1D")
class LocallyConnected1D(_LocallyConnected):
    """tf_keras ``LocallyConnected1D``: ``(N, L, C)`` → ``(N, L_out, F)``."""

    rank = 1


@register_module("LocallyConnected2D")
class LocallyConnected2D(_LocallyConnected):
    """tf_keras ``LocallyConnected2D``: ``(N, H, W, C)`` → ``(N, H_out, W_out, F)``."""

    rank = 2
