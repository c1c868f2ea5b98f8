"""Keras ``EinsumDense``: a kernel contracted with the input by an einsum equation."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from ..activations import get_activation, is_identity
from ..errors import InputError
from ..registry import register_module
from .base import ConfigMixin

__all__ = ["EinsumDense", "EinsumDenseConfig", "EINSUM_DENSE_EQUATION"]

# The equations Keras builds an EinsumDense for: "in,kernel->out", "...in,kernel->...out" or
# "in...,kernel->out..." (letters a-z, A-Z; the right-elided input has at least two letters).
EINSUM_DENSE_EQUATION = re.compile(
    r"(?P<plain>[a-zA-Z]+,[a-zA-Z]+->[a-zA-Z]+)"
    r"|(?P<left>\.\.\.[a-zA-Z]+,[a-zA-Z]+->\.\.\.[a-zA-Z]+)"
    r"|(?P<right>[a-zA-Z]{2,}\.\.\.,[a-zA-Z]+->[a-zA-Z]+\.\.\.)"
)


@dataclass(frozen=True)
class EinsumDenseConfig:
    equation: str  # Keras `equation`, run as written
    kernel_shape: tuple[int, ...]  # shape of the Keras kernel
    bias_shape: tuple[int, ...] | None = None  # shape of the Keras bias (from `bias_axes`); None without one
    activation: str = "linear"  # runtime activation name


@register_module("EinsumDense")
class EinsumDense(ConfigMixin, nn.Module):
    """Keras ``EinsumDense``: ``y = act(einsum(equation, x, kernel) + bias)``.

    ``weight = kernel`` and ``bias = bias`` keep Keras' shapes. The bias has the sizes of the
    output axes from the first of ``bias_axes`` to the last output letter, 1 on the others (and on
    each axis a right ``...`` elides), and is
    added with NumPy broadcasting (aligned on the trailing axes), as Keras adds it. The layer does
    not support masking: a mask stops here. Shapes: ``(N, *in)`` → ``(N, *out)`` per the equation.
    """

    Config = EinsumDenseConfig

    def __init__(self, config: EinsumDenseConfig) -> None:
        super().__init__()
        match = EINSUM_DENSE_EQUATION.fullmatch(config.equation)
        if match is None:
            raise ValueError(f"EinsumDense equation {config.equation!r} is not of a form Keras builds.")
        inputs = config.equation.split(",")[0]
        self._input_rank = len(inputs.replace("...", ""))
        self._ellipsis = "..." in inputs
        self.config = config
        self.weight = nn.Parameter(torch.zeros(config.kernel_shape))
        self.bias = None if config.bias_shape is None else nn.Parameter(torch.zeros(config.bias_shape))
        self._act = None if is_identity(config.activation) else get_activation(config.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            raise InputError(f"{self.describe()} expects a floating-point tensor. Received dtype {x.dtype}.")
        if (x.dim() < self._input_rank) if self._ellipsis else (x.dim() != self._input_rank):
            raise InputError(
                f"{self.describe()} computes {self.config.equation!r}, which needs an input of rank "
                f"{'at least ' if self._ellipsis else ''}{self._input_rank}. Received shape {tuple(x.shape)}."
            )
        try:
            y = torch.einsum(self.config.equation, x, self.weight)  # (N, *out)
        except RuntimeError as err:
            raise InputError(
                f"{self.describe()} cannot compute {self.config.equation!r} on an input of shape {tuple(x.shape)} "
                f"with its kernel of shape {tuple(self.weight.shape)}: {err}"
            ) from err
        if self.bias is not None:
            y = y + self.bias  # bias aligned on the trailing axes
        return y if self._act is None else self._act(y)

    def extra_repr(self) -> str:
        cfg = self.config
        return f"equation={cfg.equation!r}, kernel_shape={cfg.kernel_shape}, bias_shape={cfg.bias_shape}, activation={cfg.activation!r}"
