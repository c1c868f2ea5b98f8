"""Keras BatchNormalization (inference, moving statistics), LayerNormalization, UnitNormalization,
GroupNormalization and RMSNormalization.

All keep the input's layout. All but RMSNormalization pass a mask on unchanged. SpectralNormalization
at inference is its wrapped layer with the stored (already normalized) kernel, and drops the mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..registry import build_module, module_type_name, register_module
from .base import ConfigMixin

__all__ = [
    "BatchNormalization",
    "GroupNormalization",
    "LayerNormalization",
    "RMSNormalization",
    "SpectralNormalization",
    "UnitNormalization",
]


def _resolve_axes(layer: ConfigMixin, axes: tuple[int, ...], x: torch.Tensor) -> list[int]:
    """Keras axes (negative ones count from the end) as positions in ``x``; raises InputError."""
    rank = x.dim()
    if any(not -rank <= a < rank for a in axes):
        raise InputError(
            f"{layer.describe()} normalizes over axes {list(axes)}, which do not exist in an input of shape "
            f"{tuple(x.shape)}."
        )
    return [a % rank for a in axes]


@dataclass(frozen=True)
class BatchNormalizationConfig:
    axes: tuple[int, ...]  # Keras `axis` (an int becomes a 1-tuple); negative counts from the end
    param_shape: tuple[int, ...]  # shape of every Keras weight: (C,), or the full-rank shape for several axes
    epsilon: float = 1e-3  # Keras `epsilon`, added to the moving variance
    center: bool = True  # Keras `center`: has beta (`bias`)
    scale: bool = True  # Keras `scale`: has gamma (`weight`)


@register_module("BatchNormalization")
class BatchNormalization(ConfigMixin, nn.Module):
    """Keras ``BatchNormalization`` at inference, as ``tf.nn.batch_normalization`` computes it.

    ``inv = rsqrt(moving_variance + epsilon) * gamma``; ``y = x * inv + (beta - moving_mean * inv)``.

    ``weight = gamma``, ``bias = beta`` (absent when ``scale``/``center`` is off); buffers
    ``running_mean = moving_mean``, ``running_var = moving_variance``. One axis: parameters
    ``(C,)`` broadcast on that axis. Several axes (tf_keras): parameters already have the
    input's rank with 1 on the other axes. Shapes: ``(N, *)`` → ``(N, *)``.
    """

    Config = BatchNormalizationConfig
    mask_mode = "pass"

    def __init__(self, config: BatchNormalizationConfig) -> None:
        super().__init__()
        if len(config.axes) > 1 and len(config.param_shape) == 1:
            raise ValueError(
                f"BatchNormalization over axes {config.axes} needs full-rank parameters; got {config.param_shape}."
            )
        self.config = config
        shape = config.param_shape
        self.weight = nn.Parameter(torch.ones(shape)) if config.scale else None
        self.bias = nn.Parameter(torch.zeros(shape)) if config.center else None
        self.register_buffer("running_mean", torch.zeros(shape))
        self.register_buffer("running_var", torch.ones(shape))

    def _broadcast_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        cfg = self.config
        axes = _resolve_axes(self, cfg.axes, x)
        if len(cfg.param_shape) > 1:
            if len(cfg.param_shape) != x.dim() or any(x.shape[a] != cfg.param_shape[a] for a in axes):
                raise InputError(
                    f"{self.describe()} has parameters of shape {cfg.param_shape}. Received an input of shape "
                    f"{tuple(x.shape)}."
                )
            return cfg.param_shape
        if x.shape[axes[0]] != cfg.param_shape[0]:
            raise InputError(
                f"{self.describe()} normalizes axis {cfg.axes[0]} of size {cfg.param_shape[0]}. Received an input "
                f"of shape {tuple(x.shape)}."
            )
        shape = [1] * x.dim()
        shape[axes[0]] = cfg.param_shape[0]
        return tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            raise InputError(f"{self.describe()} expects a floating-point tensor. Received dtype {x.dtype}.")
        shape = self._broadcast_shape(x)
        inv = torch.rsqrt(self.running_var + self.config.epsilon)  # param_shape
        if self.weight is not None:
            inv = inv * self.weight
        shift = -self.running_mean * inv if self.bias is None else self.bias - self.running_mean * inv
        return x * inv.reshape(shape) + shift.reshape(shape)  # (N, *)

    def extra_repr(self) -> str:
        cfg = self.config
        return f"axes={cfg.axes}, param_shape={cfg.param_shape}, epsilon={cfg.epsilon}, center={cfg.center}, scale={cfg.scale}"


@dataclass(frozen=True)
class LayerNormalizationConfig:
    axes: tuple[int, ...]  # Keras `axis` in the order Keras stores it (sorted); negative counts from the end
    param_shape: tuple[int, ...]  # shape of gamma/beta: the sizes of `axes`, in that order; () without them
    epsilon: float = 1e-3  # Keras `epsilon`, added to the variance
    center: bool = True  # has beta (`bias`); Keras 3 drops it under rms_scaling
    scale: bool = True  # has gamma (`weight`)
    rms_scaling: bool = False  # Keras 3 `rms_scaling`: y = x * rsqrt(var + eps) * gamma (no centering)


@register_module("LayerNormalization")
class LayerNormalization(ConfigMixin, nn.Module):
    """Keras ``LayerNormalization``: normalizes each sample over ``axes``.

    ``mean, var = moments(x, axes)``; ``inv = rsqrt(var + epsilon) * gamma``;
    ``y = x * inv + (beta - mean * inv)``. With Keras 3 ``rms_scaling``: ``y = x * rsqrt(var + epsilon) * gamma``
    (the variance is still taken about the mean; Keras deprecates the option for that reason).

    As Keras, gamma and beta are *reshaped* (not transposed) to the input's rank with the sizes of
    ``axes`` at their positions. Shapes: ``(N, *)`` → ``(N, *)``.
    """

    Config = LayerNormalizationConfig
    mask_mode = "pass"

    def __init__(self, config: LayerNormalizationConfig) -> None:
        super().__init__()
        self.config = config
        has_beta = config.center and not config.rms_scaling
        has_gamma = config.scale or config.rms_scaling
        self.weight = nn.Parameter(torch.ones(config.param_shape)) if has_gamma else None
        self.bias = nn.Parameter(torch.zeros(config.param_shape)) if has_beta else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if not x.is_floating_point():
            raise InputError(f"{self.describe()} expects a floating-point tensor. Received dtype {x.dtype}.")
        axes = _resolve_axes(self, cfg.axes, x)
        shape = [1] * x.dim()
        for a in axes:
            shape[a] = x.shape[a]
        has_params = self.weight is not None or self.bias is not None
        if has_params and math.prod(shape) != math.prod(cfg.param_shape):
            raise InputError(
                f"{self.describe()} normalizes axes {list(cfg.axes)} with parameters of shape {cfg.param_shape}. "
                f"Received an input of shape {tuple(x.shape)}."
            )
        var, mean = torch.var_mean(x, dim=axes, correction=0, keepdim=True)  # (N, ...) with 1 on axes
        inv = torch.rsqrt(var + cfg.epsilon)
        if cfg.rms_scaling:
            y = x * inv
            return y if self.weight is None else y * self.weight.reshape(shape)
        if self.weight is not None:
            inv = inv * self.weight.reshape(shape)
        shift = -mean * inv
        if self.bias is not None:
            shift = shift + self.bias.reshape(shape)
        return x * inv + shift  # (N, *)

    def extra_repr(self) -> str:
        cfg = self.config
        return f"axes={cfg.axes}, epsilon={cfg.epsilon}, center={cfg.center}, scale={cfg.scale}, rms_scaling={cfg.rms_scaling}"


@dataclass(frozen=True)
class UnitNormalizationConfig:
    axes: tuple[int, ...] = (-1,)  # Keras `axis`; negative counts from the end
    # How the norm of a (near-)zero vector is bounded: "clip_inverse" (Keras 3: x * min(rsqrt(s), 1e12))
    # or "clip_square_sum" (tf_keras' l2_normalize: x * rsqrt(max(s, 1e-12))), s = sum of squares.
    epsilon_rule: str = "clip_inverse"


@register_module("UnitNormalization")
class UnitNormalization(ConfigMixin, nn.Module):
    """Keras ``UnitNormalization``: each sample scaled to unit L2 norm over ``axes``.

    With ``s = Σ_axes x²``: Keras 3 ``y = x · min(rsqrt(s), 1e12)``; tf_keras
    ``y = x · rsqrt(max(s, 1e-12))``. The two differ only for vectors of norm below 1e-6. The
    mask passes. Shapes: ``(N, *)`` → ``(N, *)``.
    """

    Config = UnitNormalizationConfig
    mask_mode = "pass"

    def __init__(self, config: UnitNormalizationConfig) -> None:
        super().__init__()
        if config.epsilon_rule not in ("clip_inverse", "clip_square_sum"):
            raise ValueError(
                f"epsilon_rule must be 'clip_inverse' or 'clip_square_sum'. Received {config.epsilon_rule!r}."
            )
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            raise InputError(f"{self.describe()} expects a floating-point tensor. Received dtype {x.dtype}.")
        squares = x.square().sum(dim=_resolve_axes(self, self.config.axes, x), keepdim=True)  # (N, ...) 1 on axes
        if self.config.epsilon_rule == "clip_inverse":
            return x * torch.rsqrt(squares).clamp(max=1e12)
        return x * torch.rsqrt(squares.clamp(min=1e-12))


@dataclass(frozen=True)
class GroupNormalizationConfig:
    axis: int = -1  # Keras `axis`: the channel axis; negative counts from the end
    groups: int = 32  # Keras `groups`; -1 means one group per channel
    channels: int = 0  # size of gamma/beta (the channel axis); 0 when the layer has neither
    epsilon: float = 1e-3  # Keras `epsilon`, added to the variance
    center: bool = True  # Keras `center`: has beta (`bias`)
    scale: bool = True  # Keras `scale`: has gamma (`weight`)
    # tf_keras weighs the moments by the incoming mask (broadcast to the input); Keras 3 ignores it.
    masked_moments: bool = False


@register_module("GroupNormalization")
class GroupNormalization(ConfigMixin, nn.Module):
    """Keras ``GroupNormalization``: the ``C`` channels on ``axis`` split into ``G`` groups of
    ``C / G`` consecutive channels; each sample is normalized over every non-batch axis of its group.

    The input is reshaped to ``(N, ..., G, C/G, ...)`` (``G`` at ``axis``); over all axes but the
    batch and ``G``, ``mean = E[x]`` and ``var = E[(x - mean)²]``; ``inv = rsqrt(var + epsilon) * gamma``;
    ``y = x * inv + (beta - mean * inv)``, with gamma and beta ``(C,)`` reshaped to ``(G, C/G)``.
    tf_keras (``masked_moments``) weighs the moments by the mask ``w`` broadcast to the input:
    ``mean = Σ w x / Σ w``, ``var = Σ w (x - mean)² / Σ w`` (0 where ``Σ w = 0``). The mask
    passes. Shapes: ``(N, *)`` → ``(N, *)``.
    """

    Config = GroupNormalizationConfig
    mask_mode = "pass"
    takes_mask = True

    def __init__(self, config: GroupNormalizationConfig) -> None:
        super().__init__()
        if config.groups == 0 or config.groups < -1:
            raise ValueError(f"GroupNormalization groups must be positive or -1. Received {config.groups}.")
        self.config = config
        shape = (config.channels,)
        self.weight = nn.Parameter(torch.ones(shape)) if config.scale else None
        self.bias = nn.Parameter(torch.zeros(shape)) if config.center else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        if not x.is_floating_point():
            raise InputError(f"{self.describe()} expects a floating-point tensor. Received dtype {x.dtype}.")
        (axis,) = _resolve_axes(self, (cfg.axis,), x)
        if axis == 0:
            raise InputError(
                f"{self.describe()} normalizes groups on axis {cfg.axis}, the batch axis of {tuple(x.shape)}."
            )
        channels = x.shape[axis]
        groups = channels if cfg.groups == -1 else cfg.groups
        has_params = self.weight is not None or self.bias is not None
        if channels % groups or (has_params and channels != cfg.channels):
            raise InputError(
                f"{self.describe()} splits axis {cfg.axis} into {groups} groups"
                + (f" of {cfg.channels} channels" if has_params else "")
                + f". Received an input of shape {tuple(x.shape)}."
            )
        grouped = list(x.shape[:axis]) + [groups, channels // groups] + list(x.shape[axis + 1 :])
        xg = x.reshape(grouped)  # (N, ..., G, C/G, ...)
        dims = [d for d in range(1, xg.dim()) if d != axis]
        if cfg.masked_moments and mask is not None:
            try:
                w = torch.broadcast_to(mask.to(x.dtype), x.shape).reshape(grouped)  # (N, ..., G, C/G, ...)
            except RuntimeError as err:
                raise InputError(
                    f"{self.describe()} received a mask of shape {tuple(mask.shape)} that does not broadcast to "
                    f"the input's shape {tuple(x.shape)}; tf_keras fails on it too."
                ) from err
            total = (w + torch.zeros_like(xg)).sum(dim=dims, keepdim=True)  # (N, ..., G, 1, ...)
            safe = torch.where(total == 0, torch.ones_like(total), total)
            mean = torch.where(total == 0, torch.zeros_like(total), (w * xg).sum(dim=dims, keepdim=True) / safe)
            dist = (w * (xg - mean).square()).sum(dim=dims, keepdim=True)
            var = torch.where(total == 0, torch.zeros_like(total), dist / safe)
        else:
            mean = xg.mean(dim=dims, keepdim=True)  # (N, ..., G, 1, ...)
            var = (xg - mean).square().mean(dim=dims, keepdim=True)  # as tf.nn.moments
        shape = [1] * xg.dim()
        shape[axis], shape[axis + 1] = groups, channels // groups
        inv = torch.rsqrt(var + cfg.epsilon)
        if self.weight is not None:
            inv = inv * self.weight.reshape(shape)
        shift = -mean * inv
        if self.bias is not None:
            shift = shift + self.bias.reshape(shape)
        return (xg * inv + shift).reshape(x.shape)  # (N, *)

    def extra_repr(self) -> str:
        cfg = self.config
        return f"axis={cfg.axis}, groups={cfg.groups}, epsilon={cfg.epsilon}, center={cfg.center}, scale={cfg.scale}"


@dataclass(frozen=True)
class RMSNormalizationConfig:
    axes: tuple[int, ...] = (-1,)  # Keras `axis`, sorted; negative counts from the end
    param_shape: tuple[int, ...] = ()  # shape of Keras `scale`: the sizes of `axes`, in that order
    epsilon: float = 1e-6  # Keras `epsilon`, added to the mean square


@register_module("RMSNormalization")
class RMSNormalization(ConfigMixin, nn.Module):
    """Keras 3 ``RMSNormalization``: ``y = x * rsqrt(mean(x², axes) + epsilon) * scale``.

    ``weight = scale`` of shape ``(sizes of axes)``, multiplied with NumPy broadcasting (aligned
    on the trailing axes), as Keras multiplies it. The layer does not support masking: a mask
    stops here. Shapes: ``(N, *)`` → ``(N, *)``.
    """

    Config = RMSNormalizationConfig

    def __init__(self, config: RMSNormalizationConfig) -> None:
        super().__init__()
        self.config = config
        self.weight = nn.Parameter(torch.ones(config.param_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            raise InputError(f"{self.describe()} expects a floating-point tensor. Received dtype {x.dtype}.")
        axes = _resolve_axes(self, self.config.axes, x)
        try:
            torch.broadcast_shapes(x.shape, self.weight.shape)
        except RuntimeError as err:
            raise InputError(
                f"{self.describe()} has a scale of shape {tuple(self.weight.shape)}, which does not broadcast to "
                f"the input's shape {tuple(x.shape)}."
            ) from err
        rrms = torch.rsqrt(x.square().mean(dim=axes, keepdim=True) + self.config.epsilon)  # (N, ...) 1 on axes
        return x * rrms * self.weight  # (N, *)

    def extra_repr(self) -> str:
        return f"axes={self.config.axes}, epsilon={self.config.epsilon}"


@dataclass(frozen=True)
class SpectralNormalizationConfig:
    layer: dict[str, Any]  # {"type": runtime module type, "config": its config}


@register_module("SpectralNormalization")
class SpectralNormalization(ConfigMixin, nn.Module):
    """Keras ``SpectralNormalization`` at inference: ``y = layer(x)``.

    Keras divides the kernel by its largest singular value ``σ ≈ v·W·uᵀ`` (power iteration on
    the stored ``vector_u``) only when called with ``training=True``, and writes the result back
    into the kernel; at inference the wrapped layer runs on the kernel as stored. The layer does
    not support masking: a mask stops here. Shapes: those of the wrapped layer.
    """

    Config = SpectralNormalizationConfig

    def __init__(self, config: SpectralNormalizationConfig, layer: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.layer = layer if layer is not None else build_module(config.layer["type"], config.layer["config"])

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> nn.Module:
        return cls(SpectralNormalizationConfig(layer=dict(config["layer"])))

    def get_config(self) -> dict[str, Any]:
        type_name = module_type_name(self.layer)
        if type_name is None:
            raise TypeError(
                f"SpectralNormalization wraps a foreign module {type(self.layer).__name__}; it has no config."
            )
        return {"layer": {"type": type_name, "config": self.layer.get_config()}}  # type: ignore[operator]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)  # shapes of the wrapped layer
