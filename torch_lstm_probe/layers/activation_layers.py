"""Keras activation layers with their own options: Softmax, ReLU, LeakyReLU, PReLU, ELU and ThresholdedReLU.

All of them keep the input's shape and pass a mask on unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..registry import register_module
from .base import ConfigMixin

__all__ = ["Softmax", "ReLU", "LeakyReLU", "PReLU", "ELU", "ThresholdedReLU", "ThresholdedReLUConfig"]

# How a mask hides softmax entries: (fill rule, fill value in float16, zero masked outputs after).
# The fill value is -1e9 in every other dtype. "where" puts the fill at a masked logit, "add"
# adds it to the logit.
_SOFTMAX_MASK_RULES = {
    "keras3": ("where", -3e4, True),
    "keras2": ("add", float(torch.finfo(torch.float16).min), False),
    "keras2_robust": ("where", float(torch.finfo(torch.float16).min), False),
}


def _check_float(layer: ConfigMixin, x: torch.Tensor) -> None:
    if not x.is_floating_point():
        raise InputError(f"{layer.describe()} expects a floating-point tensor. Received dtype {x.dtype}.")


@dataclass(frozen=True)
class SoftmaxConfig:
    axes: tuple[int, ...] = (-1,)  # Keras `axis` (an int becomes a 1-tuple)
    mask_rules: str = "keras3"  # "keras3" | "keras2" | "keras2_robust": how a mask hides entries (below)


@register_module("Softmax")
class Softmax(ConfigMixin, nn.Module):
    """Keras ``Softmax`` over ``axes``; several axes: ``exp(x - logsumexp(x, axes))``.

    A mask given to the layer (Keras passes the incoming one) is broadcast against the input
    aligned on the right, as Keras does, and hides the entries where it is False:

    =================  ===================================================================
    mask_rules         masked entries
    =================  ===================================================================
    ``keras3``         logit set to -1e9 (-3e4 in float16); output set to 0 afterwards
    ``keras2``         -1e9 added to the logit (float16: its minimum)
    ``keras2_robust``  logit set to -1e9 (float16: its minimum); tf_keras ``robust_masking``
    =================  ===================================================================

    Shapes: ``(N, *)`` → ``(N, *)``.
    """

    Config = SoftmaxConfig
    mask_mode = "pass"
    takes_mask = True

    def __init__(self, config: SoftmaxConfig) -> None:
        super().__init__()
        if config.mask_rules not in _SOFTMAX_MASK_RULES:
            raise ValueError(
                f"Softmax mask_rules must be one of {sorted(_SOFTMAX_MASK_RULES)}. Received {config.mask_rules!r}."
            )
        self.config = config

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        _check_float(self, x)
        keep = None
        fill, fill_float16, zero_after = _SOFTMAX_MASK_RULES[self.config.mask_rules]
        if mask is not None:
            try:
                keep = torch.broadcast_to(mask.bool(), x.shape)  # (N, *)
            except RuntimeError as err:
                raise InputError(
                    f"{self.describe()} received a mask of shape {tuple(mask.shape)} that does not broadcast "
                    f"(aligned on the right) to its input of shape {tuple(x.shape)}; Keras fails on this input too."
                ) from err
            low = fill_float16 if x.dtype == torch.float16 else -1e9
            if fill == "where":
                x = torch.where(keep, x, torch.full((), low, dtype=x.dtype, device=x.device))
            else:
                x = x + (1.0 - keep.to(x.dtype)) * low
        axes = self.config.axes
        if len(axes) == 1:
            y = torch.softmax(x, dim=axes[0])
        else:
            y = torch.exp(x - torch.logsumexp(x, dim=axes, keepdim=True))
        if keep is not None and zero_after:
            y = torch.where(keep, y, torch.zeros((), dtype=y.dtype, device=y.device))
        return y

    def extra_repr(self) -> str:
        return f"axes={self.config.axes}"


@dataclass(frozen=True)
class ReLUConfig:
    max_value: float | None = None  # Keras `max_value`: upper clip, None for none
    negative_slope: float = 0.0  # Keras `negative_slope`: slope below the threshold
    threshold: float = 0.0  # Keras `threshold`: values at or below it are not passed through


@register_module("ReLU")
class ReLU(ConfigMixin, nn.Module):
    """Keras ``ReLU``, as ``keras.activations.relu`` computes it.

    ``y = clip(x if x > threshold else 0, 0, max_value) - negative_slope * relu(threshold - x)``,
    and ``leaky_relu`` when only ``negative_slope`` is set. Shapes: ``(N, *)`` → ``(N, *)``.
    """

    Config = ReLUConfig
    mask_mode = "pass"

    def __init__(self, config: ReLUConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_float(self, x)
        cfg = self.config
        slope, threshold, max_value = cfg.negative_slope, cfg.threshold, cfg.max_value
        if slope != 0 and max_value is None and threshold == 0:
            return F.leaky_relu(x, slope)
        negative_part = F.relu(threshold - x) if threshold != 0 else F.relu(-x)
        if threshold != 0:
            y = torch.where(x > threshold, x, torch.zeros((), dtype=x.dtype, device=x.device))
        else:
            y = F.relu(x)
        if max_value is not None:
            y = torch.clamp(y, 0.0, max_value)
        return y - slope * negative_part if slope != 0 else y

    def extra_repr(self) -> str:
        cfg = self.config
        return f"max_value={cfg.max_value}, negative_slope={cfg.negative_slope}, threshold={cfg.threshold}"


@dataclass(frozen=True)
class LeakyReLUConfig:
    negative_slope: float = 0.3  # Keras 3 `negative_slope` / Keras 2 `alpha`


@register_module("LeakyReLU")
class LeakyReLU(ConfigMixin, nn.Module):
    """Keras ``LeakyReLU``: ``x`` for ``x >= 0``, ``negative_slope * x`` below. Shapes: ``(N, *)`` → ``(N, *)``."""

    Config = LeakyReLUConfig
    mask_mode = "pass"

    def __init__(self, config: LeakyReLUConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_float(self, x)
        return F.leaky_relu(x, self.config.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.config.negative_slope}"


@dataclass(frozen=True)
class PReLUConfig:
    param_shape: tuple[int, ...]  # shape of Keras `alpha`: the input shape without batch, 1 on shared axes


@register_module("PReLU")
class PReLU(ConfigMixin, nn.Module):
    """Keras ``PReLU``: ``relu(x) - alpha * relu(-x)`` with a learned ``alpha`` (``weight``).

    ``weight = alpha``, shaped like one sample (``(L, C)`` for a sequence) with 1 on the
    ``shared_axes``; it broadcasts over the batch. Shapes: ``(N, *)`` → ``(N, *)``.
    """

    Config = PReLUConfig
    mask_mode = "pass"

    def __init__(self, config: PReLUConfig) -> None:
        super().__init__()
        self.config = config
        self.weight = nn.Parameter(torch.zeros(config.param_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_float(self, x)
        shape = self.config.param_shape
        if x.dim() != len(shape) + 1 or any(p not in (1, d) for p, d in zip(shape, x.shape[1:])):
            raise InputError(
                f"{self.describe()} has alpha of shape {shape}, which fits inputs (batch, {', '.join(map(str, shape))}) "
                f"(1 = any size). Received shape {tuple(x.shape)}."
            )
        return F.relu(x) + (-self.weight) * F.relu(-x)


@dataclass(frozen=True)
class ELUConfig:
    alpha: float = 1.0  # Keras `alpha`: scale of the negative part


@register_module("ELU")
class ELU(ConfigMixin, nn.Module):
    """Keras ``ELU``: ``x`` for ``x > 0``, ``alpha * (exp(x) - 1)`` below. Shapes: ``(N, *)`` → ``(N, *)``."""

    Config = ELUConfig
    mask_mode = "pass"

    def __init__(self, config: ELUConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_float(self, x)
        return F.elu(x, self.config.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.config.alpha}"


@dataclass(frozen=True)
class ThresholdedReLUConfig:
    theta: float = 1.0  # tf_keras `theta`, rounded to float32 as tf_keras casts it to floatx


@register_module("ThresholdedReLU")
class ThresholdedReLU(ConfigMixin, nn.Module):
    """tf_keras ``ThresholdedReLU``: ``y = x * (x > theta)``, so ``x`` above ``theta`` and ``0`` at or
    below it. It passes a mask on. Shapes: ``(N, *)`` → ``(N, *)``."""

    Config = ThresholdedReLUConfig
    mask_mode = "pass"

    def __init__(self, config: ThresholdedReLUConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_float(self, x)
        return x * (x > self.config.theta).to(x.dtype)

    def extra_repr(self) -> str:
        return f"theta={self.config.theta}"
