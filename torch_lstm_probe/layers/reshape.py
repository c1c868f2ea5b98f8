"""Shape-changing Keras layers: Flatten, Reshape, Permute, RepeatVector, ZeroPadding1D/2D/3D,
Cropping1D/2D/3D and UpSampling1D/2D/3D, all in Keras' channels-last element order.

None of them supports masking in Keras: a mask arriving here stops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..registry import register_module
from .base import ConfigMixin
from .conv import check_spatial_input, pad_argument, to_keras_layout, to_torch_layout

__all__ = [
    "Flatten",
    "Reshape",
    "Permute",
    "RepeatVector",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "ZeroPadding3D",
    "Cropping1D",
    "Cropping2D",
    "Cropping3D",
    "UpSampling1D",
    "UpSampling2D",
    "UpSampling3D",
]


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


# ------------------------------------------------------------------------ 2-D and 3-D spatial layers


class _Spatial(ConfigMixin, nn.Module):
    """A shape-changing layer over ``rank`` spatial axes of ``(N, *S, C)`` (or ``(N, C, *S)``)."""

    rank: ClassVar[int]

    def __init__(self, config: ZeroPaddingConfig | CroppingConfig | UpSamplingConfig) -> None:
        super().__init__()
        per_axis = {name: getattr(config, name) for name in ("before", "after", "size") if hasattr(config, name)}
        for name, values in per_axis.items():
            if len(values) != self.rank:
                raise ValueError(f"{type(self).__name__} {name} needs {self.rank} values. Received {values!r}.")
        self.config = config

    def _spatial_dims(self) -> range:
        """The spatial axes: ``1..rank`` channels last, ``2..rank+1`` channels first."""
        start = 2 if self.config.channels_first else 1
        return range(start, start + self.rank)


@dataclass(frozen=True)
class ZeroPaddingConfig:
    before: tuple[int, ...]  # Keras `padding[i][0]`: zero cells added before each spatial axis
    after: tuple[int, ...]  # Keras `padding[i][1]`: zero cells added after each spatial axis
    channels_first: bool = False  # Keras data_format "channels_first": input (N, C, *S)


class _ZeroPadding(_Spatial):
    """Keras ``ZeroPaddingND``: ``(N, *S, C)`` → ``(N, *(before + S + after), C)`` with zero cells."""

    Config = ZeroPaddingConfig

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        check_spatial_input(self, x, self.rank, None, cfg.channels_first)
        pads = list(zip(cfg.before, cfg.after)) + ([] if cfg.channels_first else [(0, 0)])
        return F.pad(x, pad_argument(pads))  # (N, *(before + S + after), C)


@register_module("ZeroPadding2D")
class ZeroPadding2D(_ZeroPadding):
    """Keras ``ZeroPadding2D``: ``(N, H, W, C)`` → ``(N, top + H + bottom, left + W + right, C)``."""

    rank = 2


@register_module("ZeroPadding3D")
class ZeroPadding3D(_ZeroPadding):
    """Keras ``ZeroPadding3D``: zero cells before and after each of ``(D, H, W)``."""

    rank = 3


@dataclass(frozen=True)
class CroppingConfig:
    before: tuple[int, ...]  # Keras `cropping[i][0]`: cells removed at the start of each spatial axis
    after: tuple[int, ...]  # Keras `cropping[i][1]`: cells removed at the end of each spatial axis
    channels_first: bool = False  # Keras data_format "channels_first": input (N, C, *S)


class _Cropping(_Spatial):
    """Keras ``CroppingND``: ``(N, *S, C)`` → ``(N, *(S - before - after), C)``."""

    Config = CroppingConfig

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        check_spatial_input(self, x, self.rank, None, cfg.channels_first)
        index: list[slice] = [slice(None)] * x.dim()
        for axis, before, after in zip(self._spatial_dims(), cfg.before, cfg.after):
            if before + after >= x.shape[axis]:
                raise InputError(
                    f"{self.describe()} crops {before} + {after} cells from axis {axis}, which needs more than "
                    f"{before + after} cells there. Received shape {tuple(x.shape)}."
                )
            index[axis] = slice(before, x.shape[axis] - after)
        return x[tuple(index)]  # (N, *(S - before - after), C)


@register_module("Cropping2D")
class Cropping2D(_Cropping):
    """Keras ``Cropping2D``: ``(N, H, W, C)`` → ``(N, H - top - bottom, W - left - right, C)``."""

    rank = 2


@register_module("Cropping3D")
class Cropping3D(_Cropping):
    """Keras ``Cropping3D``: cells removed before and after each of ``(D, H, W)``."""

    rank = 3


@dataclass(frozen=True)
class UpSamplingConfig:
    size: tuple[int, ...]  # Keras `size`: the factor per spatial axis
    interpolation: str = "nearest"  # "nearest" (repeat each cell) | "bilinear" (2-D, half-pixel centers)
    channels_first: bool = False  # Keras data_format "channels_first": input (N, C, *S)


class _UpSampling(_Spatial):
    """Keras ``UpSamplingND``: ``(N, *S, C)`` → ``(N, *(S * size), C)``.

    ``"nearest"`` repeats each cell ``size`` times per axis. ``"bilinear"`` is TensorFlow's
    ``resize`` with half-pixel centers: output cell ``o`` reads the input at
    ``(o + 0.5) / size - 0.5``, clamped to the edges, interpolated linearly on each axis.
    """

    Config = UpSamplingConfig

    def __init__(self, config: UpSamplingConfig) -> None:
        super().__init__(config)
        allowed = ("nearest", "bilinear") if self.rank == 2 else ("nearest",)
        if config.interpolation not in allowed:
            raise ValueError(
                f"{type(self).__name__} interpolation must be one of {list(allowed)}. Received {config.interpolation!r}."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        check_spatial_input(self, x, self.rank, None, cfg.channels_first)
        if cfg.interpolation == "bilinear":
            h = to_torch_layout(x, cfg.channels_first)  # (N, C, H, W)
            out = [n * s for n, s in zip(h.shape[2:], cfg.size)]
            y = F.interpolate(h, size=out, mode="bilinear", align_corners=False)  # (N, C, H * sh, W * sw)
            return to_keras_layout(y, cfg.channels_first)  # (N, H * sh, W * sw, C)
        for axis, size in zip(self._spatial_dims(), cfg.size):
            x = x.repeat_interleave(size, dim=axis)
        return x  # (N, *(S * size), C)


@register_module("UpSampling2D")
class UpSampling2D(_UpSampling):
    """Keras ``UpSampling2D``: ``(N, H, W, C)`` → ``(N, H * sh, W * sw, C)``, nearest or bilinear."""

    rank = 2


@register_module("UpSampling3D")
class UpSampling3D(_UpSampling):
    """Keras ``UpSampling3D``: each cell repeated ``size`` times on each of ``(D, H, W)``."""

    rank = 3
