"""Shape-changing Keras layers: Flatten, Reshape, Permute, RepeatVector, ZeroPadding1D,
Cropping1D and UpSampling1D, all in Keras' channels-last element order.

None of them supports masking in Keras: a mask arriving here stops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..registry import register_module
from .base import ConfigMixin

__all__ = ["Flatten", "Reshape", "Permute", "RepeatVector", "ZeroPadding1D", "Cropping1D", "UpSampling1D"]


def _check_rank(layer: ConfigMixin, x: torch.Tensor, rank: int, what: str) -> None:
    if x.dim() != rank:
        raise InputError(
            f"{layer.describe()} expects {what} (rank {rank}). Received a tensor of shape {tuple(x.shape)} "
            f"(rank {x.dim()})."
        )


@dataclass(frozen=True)
class FlattenConfig:
    channels_first: bool = False  # Keras data_format "channels_first": move axis 1 last before flattening


@register_module("Flatten")
class Flatten(ConfigMixin, nn.Module):
    """Keras ``Flatten``: ``(N, d1, ..., dk)`` → ``(N, d1 * ... * dk)`` in row-major (channels-last) order.

    With ``channels_first`` Keras first moves axis 1 to the end, so the flat order is the same
    as for the channels-last tensor.
    """

    Config = FlattenConfig

    def __init__(self, config: FlattenConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 0:
            raise InputError(f"{self.describe()} expects a batched input. Received a scalar.")
        if self.config.channels_first and x.dim() > 2:
            x = x.movedim(1, -1)  # (N, d2, ..., dk, d1)
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))  # (N, prod(d)); no -1: an empty batch has no size to infer


@dataclass(frozen=True)
class ReshapeConfig:
    target_shape: tuple[int, ...]  # Keras `target_shape` without the batch axis; at most one -1


@register_module("Reshape")
class Reshape(ConfigMixin, nn.Module):
    """Keras ``Reshape``: ``(N, ...)`` → ``(N, *target_shape)`` in row-major order; one ``-1`` is inferred."""

    Config = ReshapeConfig

    def __init__(self, config: ReshapeConfig) -> None:
        super().__init__()
        if sum(1 for d in config.target_shape if d == -1) > 1 or any(d < -1 or d == 0 for d in config.target_shape):
            raise ValueError(f"Reshape target_shape {config.target_shape} must hold positive sizes and at most one -1.")
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        target = self.config.target_shape
        size = math.prod(x.shape[1:])
        known = math.prod(d for d in target if d != -1)
        if (-1 in target and (known == 0 or size % known)) or (-1 not in target and size != known):
            raise InputError(
                f"{self.describe()} reshapes each sample to {target}. Received shape {tuple(x.shape)}, whose "
                f"{size} elements per sample do not fit."
            )
        return x.reshape(x.shape[0], *target)  # (N, *target)


@dataclass(frozen=True)
class PermuteConfig:
    dims: tuple[int, ...]  # Keras `dims`: 1-based axes, the batch axis excluded


@register_module("Permute")
class Permute(ConfigMixin, nn.Module):
    """Keras ``Permute``: ``x.permute(0, *dims)``; e.g. ``dims=(2, 1)`` swaps steps and features."""

    Config = PermuteConfig

    def __init__(self, config: PermuteConfig) -> None:
        super().__init__()
        if sorted(config.dims) != list(range(1, len(config.dims) + 1)):
            raise ValueError(f"Permute dims {config.dims} must be a permutation of 1..{len(config.dims)}.")
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_rank(self, x, len(self.config.dims) + 1, f"an input with {len(self.config.dims)} axes after the batch")
        return x.permute(0, *self.config.dims)


@dataclass(frozen=True)
class RepeatVectorConfig:
    n: int  # Keras `n`: number of repetitions


@register_module("RepeatVector")
class RepeatVector(ConfigMixin, nn.Module):
    """Keras ``RepeatVector``: ``(N, C)`` → ``(N, n, C)``, the vector repeated on a new steps axis."""

    Config = RepeatVectorConfig

    def __init__(self, config: RepeatVectorConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_rank(self, x, 2, "an input (batch, features)")
        return x.unsqueeze(1).repeat(1, self.config.n, 1)  # (N, n, C)


@dataclass(frozen=True)
class ZeroPadding1DConfig:
    left: int = 1  # Keras `padding[0]`: zero steps added before
    right: int = 1  # Keras `padding[1]`: zero steps added after
    channels_first: bool = False  # Keras data_format "channels_first": the steps axis is 2


@register_module("ZeroPadding1D")
class ZeroPadding1D(ConfigMixin, nn.Module):
    """Keras ``ZeroPadding1D``: ``(N, L, C)`` → ``(N, left + L + right, C)`` with zero steps."""

    Config = ZeroPadding1DConfig

    def __init__(self, config: ZeroPadding1DConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        _check_rank(self, x, 3, "an input (batch, steps, features)")
        pad = (cfg.left, cfg.right) if cfg.channels_first else (0, 0, cfg.left, cfg.right)
        return F.pad(x, pad)  # (N, left + L + right, C)


@dataclass(frozen=True)
class Cropping1DConfig:
    left: int = 1  # Keras `cropping[0]`: steps removed at the start
    right: int = 1  # Keras `cropping[1]`: steps removed at the end


@register_module("Cropping1D")
class Cropping1D(ConfigMixin, nn.Module):
    """Keras ``Cropping1D``: ``(N, L, C)`` → ``(N, L - left - right, C)``."""

    Config = Cropping1DConfig

    def __init__(self, config: Cropping1DConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        _check_rank(self, x, 3, "an input (batch, steps, features)")
        steps = x.shape[1]
        if cfg.left + cfg.right >= steps:
            raise InputError(
                f"{self.describe()} crops {cfg.left} + {cfg.right} steps, which needs more than "
                f"{cfg.left + cfg.right} steps. Received shape {tuple(x.shape)}."
            )
        return x[:, cfg.left : steps - cfg.right]  # (N, L - left - right, C)


@dataclass(frozen=True)
class UpSampling1DConfig:
    size: int = 2  # Keras `size`: each step is repeated this many times


@register_module("UpSampling1D")
class UpSampling1D(ConfigMixin, nn.Module):
    """Keras ``UpSampling1D``: repeats each step ``size`` times, ``(N, L, C)`` → ``(N, L * size, C)``."""

    Config = UpSampling1DConfig

    def __init__(self, config: UpSampling1DConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_rank(self, x, 3, "an input (batch, steps, features)")
        return x.repeat_interleave(self.config.size, dim=1)  # (N, L * size, C)
