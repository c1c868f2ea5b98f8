"""Convolution and pooling with Keras semantics over 1, 2 or 3 spatial axes.

Conv1D/2D/3D, Max/AveragePooling1D/2D/3D, GlobalMax/AveragePooling1D/2D/3D.

Tensors cross the module boundary in Keras layout, channels last ``(N, *S, C)`` (or
``(N, C, *S)`` for ``data_format="channels_first"``), where ``S`` is ``(L,)``, ``(H, W)`` or
``(D, H, W)``. Inside, they are moved to PyTorch's ``(N, C, *S)``.

``padding="same"`` follows TensorFlow exactly, on each spatial axis: with output size
``ceil(L / stride)``, the total padding is ``max((out - 1) * stride + (k - 1) * dilation + 1 - L, 0)``,
split as ``total // 2`` before and the rest (one more when odd) after. ``"causal"`` (1-D only)
pads ``(k - 1) * dilation`` before only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..activations import get_activation, is_identity
from ..errors import InputError
from ..registry import register_module
from .base import ConfigMixin, check_float_input

__all__ = [
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
    "GlobalMaxPooling1D",
    "GlobalAveragePooling1D",
    "GlobalMaxPooling2D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling3D",
    "GlobalAveragePooling3D",
    "same_padding",
    "per_axis",
]

_AXIS_NAMES = {1: ("steps",), 2: ("height", "width"), 3: ("depth", "height", "width")}
_CONV: dict[int, Callable[..., torch.Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_MAX_POOL: dict[int, Callable[..., torch.Tensor]] = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL: dict[int, Callable[..., torch.Tensor]] = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def same_padding(length: int, kernel_size: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's ``"SAME"`` padding ``(before, after)`` for one spatial axis (more after)."""
    out = math.ceil(length / stride)
    span = (kernel_size - 1) * dilation + 1
    total = max((out - 1) * stride + span - length, 0)
    return total // 2, total - total // 2


def per_axis(value: int | Sequence[int], rank: int) -> tuple[int, ...]:
    """``value`` as ``rank`` ints: an int is the same on every spatial axis."""
    if isinstance(value, int):
        return (value,) * rank
    values = tuple(int(v) for v in value)
    if len(values) != rank:
        raise ValueError(f"Expected one int or {rank} ints (one per spatial axis). Received {value!r}.")
    return values


def pad_argument(pads: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    """``F.pad``'s argument for ``(before, after)`` per spatial axis: the last axis comes first."""
    return tuple(p for pair in reversed(pads) for p in pair)


def to_torch_layout(x: torch.Tensor, channels_first: bool) -> torch.Tensor:
    """``(N, *S, C)`` → ``(N, C, *S)``; a channels-first tensor is returned as is."""
    return x if channels_first else x.movedim(-1, 1)


def to_keras_layout(y: torch.Tensor, channels_first: bool) -> torch.Tensor:
    """``(N, C, *S)`` → ``(N, *S, C)``; kept as is for channels first."""
    return y if channels_first else y.movedim(1, -1)


def layout_text(rank: int, channels_first: bool) -> str:
    """The input layout for messages, e.g. ``(batch, height, width, channels)``."""
    axes = ("channels", *_AXIS_NAMES[rank]) if channels_first else (*_AXIS_NAMES[rank], "channels")
    return f"({', '.join(('batch', *axes))})"


def check_spatial_input(
    layer: ConfigMixin, x: torch.Tensor, rank: int, channels: int | None, channels_first: bool
) -> None:
    """Raises InputError unless ``x`` is a float ``(N, *S, C)`` (or ``(N, C, *S)``) tensor with ``rank`` spatial axes."""
    layout = layout_text(rank, channels_first)
    check_float_input(layer, x, rank + 2, None if channels_first else channels, f"an input {layout}")
    if channels_first and channels is not None and x.shape[1] != channels:
        raise InputError(
            f"{layer.describe()} expects an input {layout} with {channels} channels on axis 1. "
            f"Received shape {tuple(x.shape)}."
        )


def check_window_fits(layer: ConfigMixin, x: torch.Tensor, h: torch.Tensor, spans: Sequence[int], what: str) -> None:
    """Raises InputError when a (padded) spatial axis of ``h`` ``(N, C, *S)`` is shorter than its window span."""
    if any(size < span for size, span in zip(h.shape[2:], spans)):
        need = f"{spans[0]} steps" if len(spans) == 1 else f"{tuple(spans)} cells on its spatial axes (after padding)"
        raise InputError(
            f"{layer.describe()} has {what}, so it needs at least {need}. Received shape {tuple(x.shape)}."
        )


# ------------------------------------------------------------------------------------ convolution


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


@dataclass(frozen=True)
class ConvConfig:
    """Config of Conv2D and Conv3D: sizes are one int per spatial axis (an int means all axes)."""

    in_channels: int  # input features: the Keras kernel's input axis times `groups`
    out_channels: int  # Keras `filters`
    kernel_size: int | tuple[int, ...]  # Keras `kernel_size`
    stride: int | tuple[int, ...] = 1  # Keras `strides`
    dilation: int | tuple[int, ...] = 1  # Keras `dilation_rate`
    groups: int = 1  # Keras `groups`: channels split into this many independent convolutions
    padding: str = "valid"  # "valid" | "same" (TensorFlow rule)
    use_bias: bool = True  # Keras `use_bias`
    activation: str = "linear"  # runtime activation name
    channels_first: bool = False  # Keras data_format "channels_first": (N, C, *S) in and out


class _Conv(ConfigMixin, nn.Module):
    """Keras ``ConvND``: ``act(conv(x) + bias)`` over ``rank`` spatial axes.

    ``weight = kernel.transpose(rank + 1, rank, 0, ..., rank - 1)`` ``(out, in / groups, *k)``;
    ``bias = bias`` ``(out,)``. Per axis, ``out = ceil((L - (k - 1) d) / s)`` for ``"valid"``
    and ``ceil(L / s)`` for ``"same"``/``"causal"``. Shapes: ``(N, *S, C_in)`` → ``(N, *S_out, C_out)``.
    """

    rank: ClassVar[int]
    paddings: ClassVar[tuple[str, ...]] = ("valid", "same")

    def __init__(self, config: Conv1DConfig | ConvConfig) -> None:
        super().__init__()
        name = type(self).__name__
        if config.padding not in self.paddings:
            raise ValueError(f"{name} padding must be one of {list(self.paddings)}. Received {config.padding!r}.")
        if config.in_channels % config.groups or config.out_channels % config.groups:
            raise ValueError(
                f"{name} groups={config.groups} must divide in_channels={config.in_channels} and "
                f"out_channels={config.out_channels}."
            )
        self.config = config
        self.kernel_size = per_axis(config.kernel_size, self.rank)
        self.stride = per_axis(config.stride, self.rank)
        self.dilation = per_axis(config.dilation, self.rank)
        self.weight = nn.Parameter(
            torch.empty(config.out_channels, config.in_channels // config.groups, *self.kernel_size)
        )
        self.bias = nn.Parameter(torch.zeros(config.out_channels)) if config.use_bias else None
        self._act = None if is_identity(config.activation) else get_activation(config.activation)

    def _spans(self) -> list[int]:
        """The dilated kernel's extent per axis: ``(k - 1) * d + 1``."""
        return [(k - 1) * d + 1 for k, d in zip(self.kernel_size, self.dilation)]

    def _pads(self, sizes: Sequence[int]) -> list[tuple[int, int]]:
        """``(before, after)`` padding per spatial axis for the input sizes ``S``."""
        padding = self.config.padding
        if padding == "same":
            return [same_padding(*args) for args in zip(sizes, self.kernel_size, self.stride, self.dilation)]
        if padding == "causal":
            return [(span - 1, 0) for span in self._spans()]
        return [(0, 0)] * self.rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        check_spatial_input(self, x, self.rank, cfg.in_channels, cfg.channels_first)
        h = to_torch_layout(x, cfg.channels_first)  # (N, C_in, *S)
        pads = self._pads(h.shape[2:])
        if any(p for pair in pads for p in pair):
            h = F.pad(h, pad_argument(pads))  # (N, C_in, *(before + S + after))
        check_window_fits(
            self,
            x,
            h,
            self._spans(),
            f"kernel_size {cfg.kernel_size} (dilation {cfg.dilation}) and padding {cfg.padding!r}",
        )
        y = _CONV[self.rank](h, self.weight, self.bias, self.stride, 0, self.dilation, cfg.groups)  # (N, C_out, *S_out)
        if self._act is not None:
            y = self._act(y)
        return to_keras_layout(y, cfg.channels_first)  # (N, *S_out, C_out)

    def extra_repr(self) -> str:
        cfg = self.config
        return (
            f"{cfg.in_channels}, {cfg.out_channels}, kernel_size={cfg.kernel_size}, stride={cfg.stride}, "
            f"dilation={cfg.dilation}, groups={cfg.groups}, padding={cfg.padding!r}, activation={cfg.activation!r}"
        )


@register_module("Conv1D")
class Conv1D(_Conv):
    """Keras ``Conv1D``: ``(N, L, C_in)`` → ``(N, L_out, C_out)``; ``weight = kernel.transpose(2, 1, 0)``.

    Also takes ``padding="causal"``: ``(k - 1) * d`` zeros before the steps.
    """

    Config = Conv1DConfig
    rank = 1
    paddings = ("valid", "same", "causal")


@register_module("Conv2D")
class Conv2D(_Conv):
    """Keras ``Conv2D``: ``(N, H, W, C_in)`` → ``(N, H_out, W_out, C_out)``; ``weight = kernel.transpose(3, 2, 0, 1)``."""

    Config = ConvConfig
    rank = 2


@register_module("Conv3D")
class Conv3D(_Conv):
    """Keras ``Conv3D``: ``(N, D, H, W, C_in)`` → ``(N, D', H', W', C_out)``; ``weight = kernel.transpose(4, 3, 0, 1, 2)``."""

    Config = ConvConfig
    rank = 3


# ---------------------------------------------------------------------------------------- pooling


@dataclass(frozen=True)
class Pooling1DConfig:
    pool_size: int  # Keras `pool_size`
    stride: int  # Keras `strides` (Keras uses pool_size when strides is None)
    padding: str = "valid"  # "valid" | "same" (TensorFlow rule)
    channels_first: bool = False  # Keras data_format "channels_first": (N, C, L) in and out


@dataclass(frozen=True)
class PoolingConfig:
    """Config of the 2-D and 3-D pooling layers: sizes are one int per spatial axis (an int means all axes)."""

    pool_size: int | tuple[int, ...]  # Keras `pool_size`
    stride: int | tuple[int, ...]  # Keras `strides` (Keras uses pool_size when strides is None)
    padding: str = "valid"  # "valid" | "same" (TensorFlow rule)
    channels_first: bool = False  # Keras data_format "channels_first": (N, C, *S) in and out


class _Pooling(ConfigMixin, nn.Module):
    """Windows of ``pool_size`` moved by ``stride`` over ``rank`` spatial axes.

    Per axis, ``out = floor((L - k) / s) + 1`` for ``"valid"`` and ``ceil(L / s)`` for ``"same"``.
    Shapes (channels last): ``(N, *S, C)`` → ``(N, *S_out, C)``.
    """

    rank: ClassVar[int]

    def __init__(self, config: Pooling1DConfig | PoolingConfig) -> None:
        super().__init__()
        if config.padding not in ("valid", "same"):
            raise ValueError(f"{type(self).__name__} padding must be 'valid' or 'same'. Received {config.padding!r}.")
        self.config = config
        self.pool_size = per_axis(config.pool_size, self.rank)
        self.stride = per_axis(config.stride, self.rank)

    def _same_pads(self, sizes: Sequence[int]) -> list[tuple[int, int]]:
        """TensorFlow's ``"SAME"`` ``(before, after)`` per spatial axis for the input sizes ``S``."""
        return [same_padding(*args) for args in zip(sizes, self.pool_size, self.stride)]

    def _pool(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        check_spatial_input(self, x, self.rank, None, cfg.channels_first)
        h = to_torch_layout(x, cfg.channels_first)  # (N, C, *S)
        if cfg.padding == "valid":
            check_window_fits(self, x, h, self.pool_size, f"pool_size {cfg.pool_size} and padding 'valid'")
        y = self._pool(h)  # (N, C, *S_out)
        return to_keras_layout(y, cfg.channels_first)  # (N, *S_out, C)

    def extra_repr(self) -> str:
        cfg = self.config
        return f"pool_size={cfg.pool_size}, stride={cfg.stride}, padding={cfg.padding!r}"


class _MaxPooling(_Pooling):
    """The maximum over each window; ``"same"`` pads with ``-inf`` (TensorFlow rule), so padded cells never win."""

    def _pool(self, h: torch.Tensor) -> torch.Tensor:
        if self.config.padding == "same":
            h = F.pad(h, pad_argument(self._same_pads(h.shape[2:])), value=float("-inf"))  # (N, C, *S_padded)
        return _MAX_POOL[self.rank](h, self.pool_size, self.stride)  # (N, C, *S_out)


def window_sums(h: torch.Tensor, pool_size: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """``sum`` of ``h`` ``(N, C, *S)`` over each window (no division); 1-D goes through 2-D pooling."""
    if len(pool_size) == 1:
        sums = F.avg_pool2d(h.unsqueeze(2), (1, *pool_size), (1, *stride), divisor_override=1)  # (N, C, 1, L_out)
        return sums.squeeze(2)  # (N, C, L_out)
    return _AVG_POOL[len(pool_size)](h, pool_size, stride, divisor_override=1)  # (N, C, *S_out)


def real_cell_counts(
    sizes: Sequence[int],
    pads: Sequence[tuple[int, int]],
    pool_size: Sequence[int],
    stride: Sequence[int],
    device: torch.device,
) -> torch.Tensor:
    """How many real (non-padded) cells each window holds, ``prod_i count_i`` ``(*S_out)``.

    On axis ``i`` the window ``o`` starts at ``o * s - before`` and holds
    ``min(start + k, L) - max(start, 0)`` real cells.
    """
    counts = torch.ones((), dtype=torch.long, device=device)
    for axis, (length, (before, after), k, s) in enumerate(zip(sizes, pads, pool_size, stride)):
        out = (length + before + after - k) // s + 1
        starts = torch.arange(out, device=device) * s - before  # (out_i,)
        count = (starts + k).clamp(max=length) - starts.clamp(min=0)  # (out_i,)
        shape = [1] * len(sizes)
        shape[axis] = out
        counts = counts * count.reshape(shape)  # broadcasts to (*S_out)
    return counts


class _AveragePooling(_Pooling):
    """The mean over each window; with ``"same"``, a window that overlaps the padding is
    divided by its number of real (non-padded) cells, as TensorFlow does."""

    def _pool(self, h: torch.Tensor) -> torch.Tensor:
        if self.config.padding == "valid":
            return _AVG_POOL[self.rank](h, self.pool_size, self.stride)  # (N, C, *S_out)
        sizes = h.shape[2:]
        pads = self._same_pads(sizes)
        sums = window_sums(F.pad(h, pad_argument(pads)), self.pool_size, self.stride)  # (N, C, *S_out)
        counts = real_cell_counts(sizes, pads, self.pool_size, self.stride, h.device)  # (*S_out)
        return sums / counts.to(h.dtype)  # (N, C, *S_out)


@register_module("MaxPooling1D")
class MaxPooling1D(_MaxPooling):
    """Keras ``MaxPooling1D``: ``(N, L, C)`` → ``(N, L_out, C)``."""

    Config = Pooling1DConfig
    rank = 1


@register_module("MaxPooling2D")
class MaxPooling2D(_MaxPooling):
    """Keras ``MaxPooling2D``: ``(N, H, W, C)`` → ``(N, H_out, W_out, C)``."""

    Config = PoolingConfig
    rank = 2


@register_module("MaxPooling3D")
class MaxPooling3D(_MaxPooling):
    """Keras ``MaxPooling3D``: ``(N, D, H, W, C)`` → ``(N, D_out, H_out, W_out, C)``."""

    Config = PoolingConfig
    rank = 3


@register_module("AveragePooling1D")
class AveragePooling1D(_AveragePooling):
    """Keras ``AveragePooling1D``: ``(N, L, C)`` → ``(N, L_out, C)``."""

    Config = Pooling1DConfig
    rank = 1


@register_module("AveragePooling2D")
class AveragePooling2D(_AveragePooling):
    """Keras ``AveragePooling2D``: ``(N, H, W, C)`` → ``(N, H_out, W_out, C)``."""

    Config = PoolingConfig
    rank = 2


@register_module("AveragePooling3D")
class AveragePooling3D(_AveragePooling):
    """Keras ``AveragePooling3D``: ``(N, D, H, W, C)`` → ``(N, D_out, H_out, W_out, C)``."""

    Config = PoolingConfig
    rank = 3


# --------------------------------------------------------------------------------- global pooling


@dataclass(frozen=True)
class GlobalPoolingConfig:
    keepdims: bool = False  # Keras `keepdims`: keep the spatial axes with length 1
    channels_first: bool = False  # Keras data_format "channels_first": input (N, C, *S)


GlobalPooling1DConfig = GlobalPoolingConfig  # the 1-D name, kept for existing imports


class _GlobalPooling(ConfigMixin, nn.Module):
    """Reduces all ``rank`` spatial axes. Shapes: ``(N, *S, C)`` → ``(N, C)``, or ``(N, 1, ..., 1, C)`` with ``keepdims``."""

    Config = GlobalPoolingConfig
    rank: ClassVar[int]

    def __init__(self, config: GlobalPoolingConfig) -> None:
        super().__init__()
        self.config = config

    def _spatial_dims(self) -> tuple[int, ...]:
        """The spatial axes: ``1..rank`` channels last, ``2..rank+1`` channels first."""
        start = 2 if self.config.channels_first else 1
        return tuple(range(start, start + self.rank))

    def _reduce(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_spatial_input(self, x, self.rank, None, self.config.channels_first)
        return self._reduce(x)  # (N, C) or keepdims


class _GlobalMax(_GlobalPooling):
    def _reduce(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=self._spatial_dims(), keepdim=self.config.keepdims)  # (N, C) or keepdims


class _GlobalMean(_GlobalPooling):
    def _reduce(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self._spatial_dims(), keepdim=self.config.keepdims)  # (N, C) or keepdims


@register_module("GlobalMaxPooling1D")
class GlobalMaxPooling1D(_GlobalMax):
    """Keras ``GlobalMaxPooling1D``: the maximum over all steps.

    Keras ignores a mask here (the layer does not support masking): masked steps take part,
    and the mask stops. Shapes: ``(N, L, C)`` → ``(N, C)``, or ``(N, 1, C)`` with ``keepdims``.
    """

    rank = 1


@register_module("GlobalMaxPooling2D")
class GlobalMaxPooling2D(_GlobalMax):
    """Keras ``GlobalMaxPooling2D``: the maximum over height and width. ``(N, H, W, C)`` → ``(N, C)``."""

    rank = 2


@register_module("GlobalAveragePooling2D")
class GlobalAveragePooling2D(_GlobalMean):
    """Keras ``GlobalAveragePooling2D``: the mean over height and width. ``(N, H, W, C)`` → ``(N, C)``."""

    rank = 2


@register_module("GlobalMaxPooling3D")
class GlobalMaxPooling3D(_GlobalMax):
    """Keras ``GlobalMaxPooling3D``: the maximum over depth, height and width. ``(N, D, H, W, C)`` → ``(N, C)``."""

    rank = 3


@register_module("GlobalAveragePooling3D")
class GlobalAveragePooling3D(_GlobalMean):
    """Keras ``GlobalAveragePooling3D``: the mean over depth, height and width. ``(N, D, H, W, C)`` → ``(N, C)``."""

    rank = 3


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
        check_spatial_input(self, x, 1, None, cfg.channels_first)
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
