"""1-D convolution and pooling with Keras semantics: Conv1D, Max/AveragePooling1D, global pooling.

Tensors cross the module boundary in Keras layout, channels last ``(N, L, C)`` (or
``(N, C, L)`` for ``data_format="channels_first"``). Inside, they are moved to PyTorch's
``(N, C, L)``.

``padding="same"`` follows TensorFlow exactly: with output length ``ceil(L / stride)``, the
total padding is ``max((out - 1) * stride + (k - 1) * dilation + 1 - L, 0)``, split as
``total // 2`` on the left and the rest (one more when odd) on the right. ``"causal"`` pads
``(k - 1) * dilation`` on the left only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..activations import get_activation, is_identity
from ..errors import InputError
from ..registry import register_module
from .base import ConfigMixin, check_float_input

__all__ = [
    "Conv1D",
    "MaxPooling1D",
    "AveragePooling1D",
    "GlobalMaxPooling1D",
    "GlobalAveragePooling1D",
    "same_padding",
]


def same_padding(length: int, kernel_size: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's ``"SAME"`` padding ``(left, right)`` for one spatial axis (more on the right)."""
    out = math.ceil(length / stride)
    span = (kernel_size - 1) * dilation + 1
    total = max((out - 1) * stride + span - length, 0)
    return total // 2, total - total // 2


def _check_sequence(layer: ConfigMixin, x: torch.Tensor, channels: int | None, channels_first: bool) -> None:
    """Raises InputError unless ``x`` is a float ``(N, L, C)`` (or ``(N, C, L)``) tensor."""
    layout = "(batch, channels, steps)" if channels_first else "(batch, steps, channels)"
    check_float_input(layer, x, 3, None if channels_first else channels, f"an input {layout}")
    if channels_first and channels is not None and x.shape[1] != channels:
        raise InputError(
            f"{layer.describe()} expects an input {layout} with {channels} channels on axis 1. "
            f"Received shape {tuple(x.shape)}."
        )


@dataclass(frozen=True)
class Conv1DConfig:
    in_channels: int  # input features: rows of the Keras kernel times `groups`
    out_channels: int  # Keras `filters`
    kernel_size: int  # Keras `kernel_size`
    stride: int = 1  # Keras `strides`
    dilation: int = 1  # Keras `dilation_rate`
    groups: int = 1  # Keras `groups`: channels split into this many independent convolutions
    padding: str = "valid"  # "valid" | "same" (TensorFlow rule) | "causal" (left only)
    use_bias: bool = True  # Keras `use_bias`
    activation: str = "linear"  # runtime activation name
    channels_first: bool = False  # Keras data_format "channels_first": (N, C, L) in and out


@register_module("Conv1D")
class Conv1D(ConfigMixin, nn.Module):
    """Keras ``Conv1D``: ``act(conv(x) + bias)`` over the steps axis.

    ``weight = kernel.transpose(2, 1, 0)`` ``(out, in / groups, k)``; ``bias = bias`` ``(out,)``.

    Shapes (channels last): ``(N, L, C_in)`` → ``(N, L_out, C_out)`` where ``L_out`` is
    ``ceil((L - (k - 1) d) / s)`` for ``"valid"`` and ``ceil(L / s)`` for ``"same"``/``"causal"``.
    """

    Config = Conv1DConfig

    def __init__(self, config: Conv1DConfig) -> None:
        super().__init__()
        if config.padding not in ("valid", "same", "causal"):
            raise ValueError(f"Conv1D padding must be 'valid', 'same' or 'causal'. Received {config.padding!r}.")
        if config.in_channels % config.groups or config.out_channels % config.groups:
            raise ValueError(
                f"Conv1D groups={config.groups} must divide in_channels={config.in_channels} and "
                f"out_channels={config.out_channels}."
            )
        self.config = config
        self.weight = nn.Parameter(
            torch.empty(config.out_channels, config.in_channels // config.groups, config.kernel_size)
        )
        self.bias = nn.Parameter(torch.zeros(config.out_channels)) if config.use_bias else None
        self._act = None if is_identity(config.activation) else get_activation(config.activation)

    def _pad(self, length: int) -> tuple[int, int]:
        cfg = self.config
        if cfg.padding == "same":
            return same_padding(length, cfg.kernel_size, cfg.stride, cfg.dilation)
        if cfg.padding == "causal":
            return (cfg.kernel_size - 1) * cfg.dilation, 0
        return 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        _check_sequence(self, x, cfg.in_channels, cfg.channels_first)
        h = x if cfg.channels_first else x.transpose(1, 2)  # (N, C_in, L)
        left, right = self._pad(h.shape[-1])
        if left or right:
            h = F.pad(h, (left, right))  # (N, C_in, left + L + right)
        if h.shape[-1] < (cfg.kernel_size - 1) * cfg.dilation + 1:
            raise InputError(
                f"{self.describe()} has kernel_size {cfg.kernel_size} (dilation {cfg.dilation}) and "
                f"padding {cfg.padding!r}, so it needs at least {(cfg.kernel_size - 1) * cfg.dilation + 1} steps. "
                f"Received shape {tuple(x.shape)}."
            )
        y = F.conv1d(h, self.weight, self.bias, cfg.stride, 0, cfg.dilation, cfg.groups)  # (N, C_out, L_out)
        if self._act is not None:
            y = self._act(y)
        return y if cfg.channels_first else y.transpose(1, 2)  # (N, L_out, C_out)

    def extra_repr(self) -> str:
        cfg = self.config
        return (
            f"{cfg.in_channels}, {cfg.out_channels}, kernel_size={cfg.kernel_size}, stride={cfg.stride}, "
            f"dilation={cfg.dilation}, groups={cfg.groups}, padding={cfg.padding!r}, activation={cfg.activation!r}"
        )


@dataclass(frozen=True)
class Pooling1DConfig:
    pool_size: int  # Keras `pool_size`
    stride: int  # Keras `strides` (Keras uses pool_size when strides is None)
    padding: str = "valid"  # "valid" | "same" (TensorFlow rule)
    channels_first: bool = False  # Keras data_format "channels_first": (N, C, L) in and out


class _Pooling1D(ConfigMixin, nn.Module):
    Config = Pooling1DConfig

    def __init__(self, config: Pooling1DConfig) -> None:
        super().__init__()
        if config.padding not in ("valid", "same"):
            raise ValueError(f"{type(self).__name__} padding must be 'valid' or 'same'. Received {config.padding!r}.")
        self.config = config

    def _pool(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        _check_sequence(self, x, None, cfg.channels_first)
        h = x if cfg.channels_first else x.transpose(1, 2)  # (N, C, L)
        if cfg.padding == "valid" and h.shape[-1] < cfg.pool_size:
            raise InputError(
                f"{self.describe()} has pool_size {cfg.pool_size} and padding 'valid', so it needs at least "
                f"{cfg.pool_size} steps. Received shape {tuple(x.shape)}."
            )
        y = self._pool(h)  # (N, C, L_out)
        return y if cfg.channels_first else y.transpose(1, 2)  # (N, L_out, C)

    def extra_repr(self) -> str:
        cfg = self.config
        return f"pool_size={cfg.pool_size}, stride={cfg.stride}, padding={cfg.padding!r}"


@register_module("MaxPooling1D")
class MaxPooling1D(_Pooling1D):
    """Keras ``MaxPooling1D``: the maximum over windows of ``pool_size`` steps.

    ``"same"`` pads with ``-inf`` (TensorFlow rule), so padded cells never win.
    Shapes (channels last): ``(N, L, C)`` → ``(N, L_out, C)``.
    """

    def _pool(self, h: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if cfg.padding == "same":
            left, right = same_padding(h.shape[-1], cfg.pool_size, cfg.stride)
            h = F.pad(h, (left, right), value=float("-inf"))  # (N, C, left + L + right)
        return F.max_pool1d(h, cfg.pool_size, cfg.stride)  # (N, C, L_out)


@register_module("AveragePooling1D")
class AveragePooling1D(_Pooling1D):
    """Keras ``AveragePooling1D``: the mean over windows of ``pool_size`` steps.

    With ``"same"``, a window that overlaps the padding is divided by its number of real
    (non-padded) steps, as TensorFlow does. Shapes (channels last): ``(N, L, C)`` → ``(N, L_out, C)``.
    """

    def _pool(self, h: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if cfg.padding == "valid":
            return F.avg_pool1d(h, cfg.pool_size, cfg.stride)  # (N, C, L_out)
        length = h.shape[-1]
        left, right = same_padding(length, cfg.pool_size, cfg.stride)
        padded = F.pad(h, (left, right)).unsqueeze(2)  # (N, C, 1, left + L + right)
        sums = F.avg_pool2d(padded, (1, cfg.pool_size), (1, cfg.stride), divisor_override=1).squeeze(2)  # (N, C, L_out)
        starts = torch.arange(sums.shape[-1], device=h.device) * cfg.stride - left  # (L_out,)
        counts = (starts + cfg.pool_size).clamp(max=length) - starts.clamp(min=0)  # (L_out,) real steps per window
        return sums / counts.to(h.dtype)  # (N, C, L_out)


@dataclass(frozen=True)
class GlobalPooling1DConfig:
    keepdims: bool = False  # Keras `keepdims`: keep the steps axis with length 1
    channels_first: bool = False  # Keras data_format "channels_first": input (N, C, L)


@register_module("GlobalMaxPooling1D")
class GlobalMaxPooling1D(ConfigMixin, nn.Module):
    """Keras ``GlobalMaxPooling1D``: the maximum over all steps.

    Keras ignores a mask here (the layer does not support masking): masked steps take part,
    and the mask stops. Shapes: ``(N, L, C)`` → ``(N, C)``, or ``(N, 1, C)`` with ``keepdims``.
    """

    Config = GlobalPooling1DConfig

    def __init__(self, config: GlobalPooling1DConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        _check_sequence(self, x, None, cfg.channels_first)
        return x.amax(dim=2 if cfg.channels_first else 1, keepdim=cfg.keepdims)  # (N, C) or keepdims


@dataclass(frozen=True)
class GlobalAveragePooling1DConfig:
    keepdims: bool = False  # Keras `keepdims`: keep the steps axis with length 1
    channels_first: bool = False  # Keras data_format "channels_first": input (N, C, L)
    # How masked steps are zeroed before summing: "where" (Keras 3 selects 0) or "multiply"
    # (Keras 2 multiplies by the mask, so inf/NaN at a masked step still spread).
    zero_masked: str = "where"


@register_module("GlobalAveragePooling1D")
class GlobalAveragePooling1D(ConfigMixin, nn.Module):
    """Keras ``GlobalAveragePooling1D``: the mean over steps; with a mask, the masked mean.

    With a mask ``m`` ``(N, L)``: ``sum_t x_t m_t / sum_t m_t`` (NaN for a row with every step
    masked, as in Keras). The mask stops here. Shapes: ``(N, L, C)`` → ``(N, C)``, or
    ``(N, 1, C)`` with ``keepdims``.
    """

    Config = GlobalAveragePooling1DConfig
    mask_mode = "custom"
    takes_mask = True

    def __init__(self, config: GlobalAveragePooling1DConfig) -> None:
        super().__init__()
        if config.zero_masked not in ("where", "multiply"):
            raise ValueError(f"zero_masked must be 'where' or 'multiply'. Received {config.zero_masked!r}.")
        self.config = config

    def compute_mask(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        return None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        _check_sequence(self, x, None, cfg.channels_first)
        steps = 2 if cfg.channels_first else 1
        if mask is None:
            return x.mean(dim=steps, keepdim=cfg.keepdims)  # (N, C) or keepdims
        if tuple(mask.shape) != (x.shape[0], x.shape[steps]):
            raise InputError(
                f"{self.describe()} received a mask of shape {tuple(mask.shape)} for an input of shape "
                f"{tuple(x.shape)}. Expected a mask (batch, steps) = {(x.shape[0], x.shape[steps])}."
            )
        keep = mask.bool().unsqueeze(1 if cfg.channels_first else 2)  # (N, 1, L) or (N, L, 1)
        weight = keep.to(x.dtype)
        kept = (
            torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
            if cfg.zero_masked == "where"
            else x * weight
        )
        return kept.sum(dim=steps, keepdim=cfg.keepdims) / weight.sum(dim=steps, keepdim=cfg.keepdims)  # (N, C)
