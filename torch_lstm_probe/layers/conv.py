"""Convolution and pooling with Keras semantics over 1, 2 or 3 spatial axes.

Conv1D/2D/3D, Conv1D/2D/3DTranspose, DepthwiseConv1D/2D, SeparableConv1D/2D,
Max/AveragePooling1D/2D/3D, GlobalMax/AveragePooling1D/2D/3D, AdaptiveMax/AveragePooling1D/2D/3D.

Tensors cross the module boundary in Keras layout, channels last ``(N, *S, C)`` (or
``(N, C, *S)`` for ``data_format="channels_first"``), where ``S`` is ``(L,)``, ``(H, W)`` or
``(D, H, W)``. Inside, they are moved to PyTorch's ``(N, C, *S)``.

``padding="same"`` follows TensorFlow exactly, on each spatial axis: with output size
``ceil(L / stride)``, the total padding is ``max((out - 1) * stride + (k - 1) * dilation + 1 - L, 0)``,
split as ``total // 2`` before and the rest (one more when odd) after. ``"causal"`` (1-D only)
pads ``(k - 1) * dilation`` before only.

A transposed convolution follows TensorFlow's ``conv_transpose`` (the gradient of the forward
convolution whose input has the output's size): on each axis, with ``span = (k - 1) * dilation + 1``,
the output size is ``(L - 1) * stride + span + output_padding`` for ``"valid"`` (``output_padding``
defaults to ``max(span, stride) - span``) and ``L * stride`` for ``"same"``, or
``(L - 1) * stride + span % 2 + output_padding`` when ``output_padding`` is given. The full
transposed result ``(L - 1) * stride + span`` long is cropped by ``before`` at the start
(``0`` for ``"valid"``, ``max((L - 1) * stride + span - out, 0) // 2`` for ``"same"``) and cut or
zero-extended at the end to ``out``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

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
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
    "SeparableConv1D",
    "SeparableConv2D",
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
    "AdaptiveMaxPooling1D",
    "AdaptiveMaxPooling2D",
    "AdaptiveMaxPooling3D",
    "AdaptiveAveragePooling1D",
    "AdaptiveAveragePooling2D",
    "AdaptiveAveragePooling3D",
    "AdaptivePoolingConfig",
    "adaptive_bins",
    "same_padding",
    "per_axis",
]

_AXIS_NAMES = {1: ("steps",), 2: ("height", "width"), 3: ("depth", "height", "width")}
_CONV: dict[int, Callable[..., torch.Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE: dict[int, Callable[..., torch.Tensor]] = {
    1: F.conv_transpose1d,
    2: F.conv_transpose2d,
    3: F.conv_transpose3d,
}
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

    def __init__(self, config: Any) -> None:
        super().__init__()
        if config.padding not in self.paddings:
            raise ValueError(
                f"{type(self).__name__} padding must be one of {list(self.paddings)}. Received {config.padding!r}."
            )
        self.config = config
        self.kernel_size = per_axis(config.kernel_size, self.rank)
        self.stride = per_axis(config.stride, self.rank)
        self.dilation = per_axis(config.dilation, self.rank)
        self._init_parameters(config)
        self._act = None if is_identity(config.activation) else get_activation(config.activation)

    def _init_parameters(self, config: Any) -> None:
        """``weight`` ``(out, in / groups, *k)`` and ``bias`` ``(out,)``."""
        if config.in_channels % config.groups or config.out_channels % config.groups:
            raise ValueError(
                f"{type(self).__name__} groups={config.groups} must divide in_channels={config.in_channels} and "
                f"out_channels={config.out_channels}."
            )
        self.weight = nn.Parameter(
            torch.empty(config.out_channels, config.in_channels // config.groups, *self.kernel_size)
        )
        self.bias = nn.Parameter(torch.zeros(config.out_channels)) if config.use_bias else None

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

    def _padded_input(self, x: torch.Tensor) -> torch.Tensor:
        """Checks ``x`` and returns it in PyTorch layout with the padding applied: ``(N, C_in, *S_padded)``."""
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
        return h

    def _convolve(self, h: torch.Tensor) -> torch.Tensor:
        """``conv(h) + bias`` on the padded input ``(N, C_in, *S_padded)`` → ``(N, C_out, *S_out)``."""
        return _CONV[self.rank](h, self.weight, self.bias, self.stride, 0, self.dilation, self.config.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._convolve(self._padded_input(x))  # (N, C_out, *S_out)
        if self._act is not None:
            y = self._act(y)
        return to_keras_layout(y, self.config.channels_first)  # (N, *S_out, C_out)

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


# -------------------------------------------------------------------------- depthwise and separable


@dataclass(frozen=True)
class DepthwiseConvConfig:
    """Config of DepthwiseConv1D/2D: sizes are one int per spatial axis (an int means all axes)."""

    in_channels: int  # input channels C: the Keras depthwise kernel's input axis
    kernel_size: int | tuple[int, ...]  # Keras `kernel_size`
    depth_multiplier: int = 1  # Keras `depth_multiplier` M: outputs per input channel
    stride: int | tuple[int, ...] = 1  # Keras `strides`
    dilation: int | tuple[int, ...] = 1  # Keras `dilation_rate`
    padding: str = "valid"  # "valid" | "same" (TensorFlow rule)
    use_bias: bool = True  # Keras `use_bias`
    activation: str = "linear"  # runtime activation name
    channels_first: bool = False  # Keras data_format "channels_first": (N, C, *S) in and out

    @property
    def out_channels(self) -> int:
        """``C * M``."""
        return self.in_channels * self.depth_multiplier

    @property
    def groups(self) -> int:
        """One group per input channel."""
        return self.in_channels


class _DepthwiseConv(_Conv):
    """Keras ``DepthwiseConvND``: each input channel ``c`` convolved with its own ``M`` filters.

    ``y[..., c * M + m] = act(sum_j x[..., c] * kernel[j, c, m] + bias[c * M + m])``, a grouped
    convolution with ``groups = C``. ``weight = kernel.reshape(*k, 1, C * M)`` moved to
    ``(C * M, 1, *k)``. Output sizes follow the plain convolution. Shapes: ``(N, *S, C)`` →
    ``(N, *S_out, C * M)``.
    """

    Config = DepthwiseConvConfig


@register_module("DepthwiseConv1D")
class DepthwiseConv1D(_DepthwiseConv):
    """Keras ``DepthwiseConv1D``: ``(N, L, C)`` → ``(N, L_out, C * M)``; ``weight`` ``(C * M, 1, k)``."""

    rank = 1


@register_module("DepthwiseConv2D")
class DepthwiseConv2D(_DepthwiseConv):
    """Keras ``DepthwiseConv2D``: ``(N, H, W, C)`` → ``(N, H_out, W_out, C * M)``; ``weight`` ``(C * M, 1, kh, kw)``."""

    rank = 2


@dataclass(frozen=True)
class SeparableConvConfig:
    """Config of SeparableConv1D/2D: sizes are one int per spatial axis (an int means all axes)."""

    in_channels: int  # input channels C: the Keras depthwise kernel's input axis
    out_channels: int  # Keras `filters`
    kernel_size: int | tuple[int, ...]  # Keras `kernel_size` (of the depthwise step)
    depth_multiplier: int = 1  # Keras `depth_multiplier` M: depthwise outputs per input channel
    stride: int | tuple[int, ...] = 1  # Keras `strides` (of the depthwise step)
    dilation: int | tuple[int, ...] = 1  # Keras `dilation_rate` (of the depthwise step)
    padding: str = "valid"  # "valid" | "same" (TensorFlow rule) | "causal" (1-D only, left only)
    use_bias: bool = True  # Keras `use_bias`
    activation: str = "linear"  # runtime activation name
    channels_first: bool = False  # Keras data_format "channels_first": (N, C, *S) in and out


class _SeparableConv(_Conv):
    """Keras ``SeparableConvND``: a depthwise convolution (no bias) followed by a 1×…×1 convolution.

    ``z = depthwise(x)`` as in :class:`DepthwiseConv1D` (``C * M`` channels, strides, dilation and
    padding applied here); ``y = act(sum_i z[..., i] * pointwise[i, f] + bias[f])``.
    ``depthwise_weight`` ``(C * M, 1, *k)``; ``pointwise_weight`` ``(F, C * M, 1, …, 1)``;
    ``bias`` ``(F,)``. Shapes: ``(N, *S, C)`` → ``(N, *S_out, F)``.
    """

    Config = SeparableConvConfig

    def _init_parameters(self, config: SeparableConvConfig) -> None:
        mid = config.in_channels * config.depth_multiplier
        self.depthwise_weight = nn.Parameter(torch.empty(mid, 1, *self.kernel_size))
        self.pointwise_weight = nn.Parameter(torch.empty(config.out_channels, mid, *(1,) * self.rank))
        self.bias = nn.Parameter(torch.zeros(config.out_channels)) if config.use_bias else None

    def _convolve(self, h: torch.Tensor) -> torch.Tensor:
        conv = _CONV[self.rank]
        z = conv(h, self.depthwise_weight, None, self.stride, 0, self.dilation, self.config.in_channels)
        # z: (N, C * M, *S_out)
        return conv(z, self.pointwise_weight, self.bias)  # (N, F, *S_out)

    def extra_repr(self) -> str:
        cfg = self.config
        return (
            f"{cfg.in_channels}, {cfg.out_channels}, kernel_size={cfg.kernel_size}, "
            f"depth_multiplier={cfg.depth_multiplier}, stride={cfg.stride}, dilation={cfg.dilation}, "
            f"padding={cfg.padding!r}, activation={cfg.activation!r}"
        )


@register_module("SeparableConv1D")
class SeparableConv1D(_SeparableConv):
    """Keras ``SeparableConv1D``: ``(N, L, C)`` → ``(N, L_out, F)``; also ``padding="causal"`` (tf_keras)."""

    rank = 1
    paddings = ("valid", "same", "causal")


@register_module("SeparableConv2D")
class SeparableConv2D(_SeparableConv):
    """Keras ``SeparableConv2D``: ``(N, H, W, C)`` → ``(N, H_out, W_out, F)``."""

    rank = 2


# ---------------------------------------------------------------------------- transposed convolution


def transpose_output_length(
    length: int, kernel_size: int, stride: int, dilation: int, padding: str, output_padding: int | None
) -> int:
    """Keras' output size of a transposed convolution on one axis (``deconv_output_length``).

    With ``span = (k - 1) * d + 1``: ``"valid"`` gives ``(L - 1) * s + span + p`` where ``p``
    defaults to ``max(span, s) - span``; ``"same"`` gives ``L * s``, or
    ``(L - 1) * s + span % 2 + p`` when ``output_padding`` is set.
    """
    span = (kernel_size - 1) * dilation + 1
    if padding == "valid":
        extra = max(span, stride) - span if output_padding is None else output_padding
        return (length - 1) * stride + span + extra
    if output_padding is None:
        return length * stride
    return (length - 1) * stride + span % 2 + output_padding


@dataclass(frozen=True)
class ConvTransposeConfig:
    """Config of Conv1D/2D/3DTranspose: sizes are one int per spatial axis (an int means all axes)."""

    in_channels: int  # input channels: the last axis of the Keras kernel
    out_channels: int  # Keras `filters`
    kernel_size: int | tuple[int, ...]  # Keras `kernel_size`
    stride: int | tuple[int, ...] = 1  # Keras `strides`
    dilation: int | tuple[int, ...] = 1  # Keras `dilation_rate`
    padding: str = "valid"  # "valid" | "same" (TensorFlow rule)
    output_padding: int | tuple[int, ...] | None = None  # Keras `output_padding`; None: Keras' default size
    use_bias: bool = True  # Keras `use_bias`
    activation: str = "linear"  # runtime activation name
    channels_first: bool = False  # Keras data_format "channels_first": (N, C, *S) in and out


class _ConvTranspose(_Conv):
    """Keras ``ConvNDTranspose``: ``act(crop(conv_transpose(x)) + bias)`` over ``rank`` spatial axes.

    ``full[o] = sum_{i, j: o = i s + j d} x[i] kernel[j]`` has ``(L - 1) * s + span`` cells per axis;
    the output is ``full[before : before + out]`` (cells past the end of ``full`` are zero), with
    ``out`` from :func:`transpose_output_length` and ``before`` as in the module docstring.
    ``weight = kernel.transpose(rank + 1, rank, 0, ..., rank - 1)`` ``(in, out, *k)``.
    Shapes: ``(N, *S, C_in)`` → ``(N, *S_out, C_out)``.

    TensorFlow refuses ``"same"`` with ``output_padding = 0`` on an axis of even ``span`` (the
    forward convolution of the output size would not give the input size), and Keras refuses
    ``output_padding >= stride``; so does this module.
    """

    Config = ConvTransposeConfig

    def _init_parameters(self, config: ConvTransposeConfig) -> None:
        name = type(self).__name__
        self.output_padding: tuple[int | None, ...] = (
            (None,) * self.rank if config.output_padding is None else per_axis(config.output_padding, self.rank)
        )
        for p, s, span in zip(self.output_padding, self.stride, self._spans()):
            if p is None:
                continue
            if not 0 <= p < s:
                raise ValueError(f"{name} output_padding must be in [0, stride). Received {p} with stride {s}.")
            if config.padding == "same" and p == 0 and span % 2 == 0:
                raise ValueError(
                    f"{name} with padding 'same' needs output_padding >= 1 on an axis whose dilated kernel "
                    f"span is even (TensorFlow refuses it too). Received output_padding {config.output_padding!r} "
                    f"with kernel_size {config.kernel_size} and dilation {config.dilation}."
                )
        self.weight = nn.Parameter(torch.empty(config.in_channels, config.out_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(config.out_channels)) if config.use_bias else None

    def _crops(self, sizes: Sequence[int], full: Sequence[int]) -> list[tuple[int, int]]:
        """``(-before, out - (full - before))`` per axis: ``F.pad`` amounts that crop ``full`` to the output."""
        crops = []
        for length, full_length, k, s, d, p in zip(
            sizes, full, self.kernel_size, self.stride, self.dilation, self.output_padding
        ):
            out = transpose_output_length(length, k, s, d, self.config.padding, p)
            span = (k - 1) * d + 1
            before = max((length - 1) * s + span - out, 0) // 2 if self.config.padding == "same" else 0
            crops.append((-before, out - (full_length - before)))
        return crops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        check_spatial_input(self, x, self.rank, cfg.in_channels, cfg.channels_first)
        h = to_torch_layout(x, cfg.channels_first)  # (N, C_in, *S)
        full = _CONV_TRANSPOSE[self.rank](h, self.weight, None, self.stride, 0, 0, 1, self.dilation)
        # full: (N, C_out, *((S - 1) * s + span))
        y = F.pad(full, pad_argument(self._crops(h.shape[2:], full.shape[2:])))  # (N, C_out, *S_out)
        if self.bias is not None:
            y = y + self.bias.reshape(-1, *(1,) * self.rank)  # (N, C_out, *S_out)
        if self._act is not None:
            y = self._act(y)
        return to_keras_layout(y, cfg.channels_first)  # (N, *S_out, C_out)

    def extra_repr(self) -> str:
        cfg = self.config
        return (
            f"{cfg.in_channels}, {cfg.out_channels}, kernel_size={cfg.kernel_size}, stride={cfg.stride}, "
            f"dilation={cfg.dilation}, padding={cfg.padding!r}, output_padding={cfg.output_padding}, "
            f"activation={cfg.activation!r}"
        )


@register_module("Conv1DTranspose")
class Conv1DTranspose(_ConvTranspose):
    """Keras ``Conv1DTranspose``: ``(N, L, C_in)`` → ``(N, L_out, C_out)``; ``weight = kernel.transpose(2, 1, 0)``."""

    rank = 1


@register_module("Conv2DTranspose")
class Conv2DTranspose(_ConvTranspose):
    """Keras ``Conv2DTranspose``: ``(N, H, W, C_in)`` → ``(N, H', W', C_out)``; ``weight = kernel.transpose(3, 2, 0, 1)``."""

    rank = 2


@register_module("Conv3DTranspose")
class Conv3DTranspose(_ConvTranspose):
    """Keras ``Conv3DTranspose``: ``(N, D, H, W, C_in)`` → ``(N, D', H', W', C_out)``; ``weight = kernel.transpose(4, 3, 0, 1, 2)``."""

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


# ------------------------------------------------------------------------------- adaptive pooling


@dataclass(frozen=True)
class AdaptivePoolingConfig:
    """Config of the adaptive pooling layers: the output size per spatial axis (an int means all axes)."""

    output_size: int | tuple[int, ...]  # Keras `output_size`
    channels_first: bool = False  # Keras data_format "channels_first": (N, C, *S) in and out


def adaptive_bins(length: int, out: int) -> tuple[int, list[int], list[bool]]:
    """Keras 3's adaptive pooling windows on one axis of ``length`` cells pooled to ``out`` cells.

    Window ``i`` covers ``[floor(i L / O), min(ceil((i + 1) L / O), L))``; with
    ``small = ceil(L / O)`` every window holds ``small`` or ``small + 1`` cells. Returns
    ``(small, starts, is_big)``: window ``i`` is the ``small`` (or, where ``is_big[i]``,
    ``small + 1``) cells from ``starts[i]``. Keras forms ``i L / O`` in float32; the integer form
    here agrees with it while ``O * L < 2**24``.
    """
    small = -(-length // out)
    starts = [min(i * length // out, length - 1) for i in range(out)]
    ends = [min(-(-(i + 1) * length // out), length) for i in range(out)]
    return small, starts, [end - start == small + 1 for start, end in zip(starts, ends)]


class _AdaptivePooling(ConfigMixin, nn.Module):
    """Keras 3 ``AdaptiveMax/AveragePoolingND``: pools each spatial axis to ``output_size`` cells.

    Per axis, in turn (as Keras does), ``y[i] = reduce(x[starts_i : starts_i + n_i])`` with the
    windows of :func:`adaptive_bins` (``n_i`` = ``small`` or ``small + 1``): every stride-1
    window of both lengths is reduced, and each output cell picks its own. ``reduce`` is the
    maximum or the mean; the mean over several axes is the mean of per-axis means, which equals
    the mean over the box since every box row holds the same number of cells.
    Shapes (channels last): ``(N, *S, C)`` → ``(N, *output_size, C)``.
    """

    Config = AdaptivePoolingConfig
    rank: ClassVar[int]

    def __init__(self, config: AdaptivePoolingConfig) -> None:
        super().__init__()
        self.config = config
        self.output_size = per_axis(config.output_size, self.rank)
        if any(o < 1 for o in self.output_size):
            raise ValueError(f"{type(self).__name__} output_size must be positive. Received {config.output_size!r}.")

    def _reduce(self, windows: torch.Tensor) -> torch.Tensor:
        """Reduces the last axis (the window cells)."""
        raise NotImplementedError

    def _pool_axis(self, h: torch.Tensor, dim: int, out: int) -> torch.Tensor:
        """``h`` ``(N, C, *S)`` pooled on axis ``dim`` from ``L`` to ``out`` cells."""
        length = h.shape[dim]
        small, starts, is_big = adaptive_bins(length, out)
        pooled = [self._reduce(h.unfold(dim, small, 1))]  # (..., L - small + 1, ...)
        if any(is_big):
            pooled.append(self._reduce(h.unfold(dim, small + 1, 1)))  # (..., L - small, ...)
        offset = length - small + 1  # where the big windows start in the concatenation
        index = [s + offset if big else s for s, big in zip(starts, is_big)]
        both = torch.cat(pooled, dim=dim)
        return both.index_select(dim, torch.tensor(index, dtype=torch.long, device=h.device))  # (..., out, ...)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        check_spatial_input(self, x, self.rank, None, cfg.channels_first)
        h = to_torch_layout(x, cfg.channels_first)  # (N, C, *S)
        if any(size < 1 for size in h.shape[2:]):
            raise InputError(f"{self.describe()} needs at least one cell per spatial axis. Received {tuple(x.shape)}.")
        for axis, out in enumerate(self.output_size):
            h = self._pool_axis(h, 2 + axis, out)
        return to_keras_layout(h, cfg.channels_first)  # (N, *output_size, C)

    def extra_repr(self) -> str:
        return f"output_size={self.config.output_size}"


class _AdaptiveMax(_AdaptivePooling):
    def _reduce(self, windows: torch.Tensor) -> torch.Tensor:
        return windows.amax(dim=-1)


class _AdaptiveMean(_AdaptivePooling):
    def _reduce(self, windows: torch.Tensor) -> torch.Tensor:
        return windows.mean(dim=-1)


@register_module("AdaptiveMaxPooling1D")
class AdaptiveMaxPooling1D(_AdaptiveMax):
    """Keras ``AdaptiveMaxPooling1D``: ``(N, L, C)`` → ``(N, O, C)``."""

    rank = 1


@register_module("AdaptiveMaxPooling2D")
class AdaptiveMaxPooling2D(_AdaptiveMax):
    """Keras ``AdaptiveMaxPooling2D``: ``(N, H, W, C)`` → ``(N, O_h, O_w, C)``."""

    rank = 2


@register_module("AdaptiveMaxPooling3D")
class AdaptiveMaxPooling3D(_AdaptiveMax):
    """Keras ``AdaptiveMaxPooling3D``: ``(N, D, H, W, C)`` → ``(N, O_d, O_h, O_w, C)``."""

    rank = 3


@register_module("AdaptiveAveragePooling1D")
class AdaptiveAveragePooling1D(_AdaptiveMean):
    """Keras ``AdaptiveAveragePooling1D``: ``(N, L, C)`` → ``(N, O, C)``."""

    rank = 1


@register_module("AdaptiveAveragePooling2D")
class AdaptiveAveragePooling2D(_AdaptiveMean):
    """Keras ``AdaptiveAveragePooling2D``: ``(N, H, W, C)`` → ``(N, O_h, O_w, C)``."""

    rank = 2


@register_module("AdaptiveAveragePooling3D")
class AdaptiveAveragePooling3D(_AdaptiveMean):
    """Keras ``AdaptiveAveragePooling3D``: ``(N, D, H, W, C)`` → ``(N, O_d, O_h, O_w, C)``."""

    rank = 3
