"""Converters for Keras convolution and pooling over 1, 2 or 3 spatial axes.

Conv1D/2D/3D, Conv1D/2D/3DTranspose, DepthwiseConv1D/2D, SeparableConv1D/2D,
Max/AveragePooling1D/2D/3D, GlobalMax/AveragePooling1D/2D/3D, SpatialDropout2D/3D,
AdaptiveMax/AveragePooling1D/2D/3D (Keras 3).

======================  ==================================  ==============================================
Keras array             shape                               PyTorch parameter
======================  ==================================  ==============================================
Conv1D ``kernel``       ``(k, in / groups, out)``           ``weight = kernel.transpose(2, 1, 0)`` ``(out, in / groups, k)``
Conv2D ``kernel``       ``(kh, kw, in / groups, out)``      ``weight = kernel.transpose(3, 2, 0, 1)`` ``(out, in / groups, kh, kw)``
Conv3D ``kernel``       ``(kd, kh, kw, in / groups, out)``  ``weight = kernel.transpose(4, 3, 0, 1, 2)`` ``(out, in / groups, kd, kh, kw)``
Conv ``bias``           ``(out,)``                          ``bias``
Transpose ``kernel``    ``(*k, out, in)``                   ``weight = kernel.transpose(r + 1, r, 0, ...)`` ``(in, out, *k)``
Depthwise kernel        ``(*k, C, M)``                      ``weight = kernel.reshape(*k, 1, C * M).transpose(r + 1, r, 0, ...)`` ``(C * M, 1, *k)``
Separable depthwise     ``(*k, C, M)``                      ``depthwise_weight``, as for Depthwise ``(C * M, 1, *k)``
Separable pointwise     ``(1, ..., 1, C * M, F)``           ``pointwise_weight = pointwise_kernel.transpose(r + 1, r, 0, ...)`` ``(F, C * M, 1, ..., 1)``
======================  ==================================  ==============================================

``r`` is the number of spatial axes; depthwise output channel ``c * M + m`` comes from input
channel ``c`` and multiplier index ``m``.

Pooling layers have no weights. ``data_format="channels_first"`` is supported everywhere
(the runtime modules then take ``(N, C, *S)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torch_lstm_probe.errors import UnsupportedOptionError
from torch_lstm_probe.layers.conv import (
    AdaptivePoolingConfig,
    Conv1DConfig,
    ConvConfig,
    ConvTransposeConfig,
    DepthwiseConvConfig,
    GlobalAveragePooling1DConfig,
    GlobalPoolingConfig,
    Pooling1DConfig,
    PoolingConfig,
    SeparableConvConfig,
)
from torch_lstm_probe.layers.core import DropoutConfig

from .common import (
    INIT_REG_CONSTRAINT,
    Context,
    ModuleSpec,
    check_keys,
    layer_label,
    refuse_unless,
    resolve_activation,
    to_tensor,
    unpack_weights,
)
from .registry import register
from .spec import LayerSpec

__all__ = [
    "convert_conv",
    "convert_conv_transpose",
    "convert_depthwise_conv",
    "convert_separable_conv",
    "convert_pooling",
    "convert_global_pooling1d",
    "convert_global_pooling",
    "convert_spatial_dropout",
    "convert_adaptive_pooling",
    "convert_conv1d",
    "convert_pooling1d",
    "single_int",
    "int_tuple",
    "channels_first",
]

_LORA = "LoRA-adapted weights are not merged by this converter. Fix: merge the LoRA factors into the kernel in Keras before saving."
_RANK = {"1D": 1, "2D": 2, "3D": 3}


def _rank(layer: LayerSpec) -> int:
    """The number of spatial axes, read from the ``1D``/``2D``/``3D`` in the class name."""
    return next(rank for tag, rank in _RANK.items() if tag in layer.class_name)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def single_int(layer: LayerSpec, ctx: Context, key: str, default: Any = None) -> int:
    """``config[key]`` as one positive int; Keras stores 1-D sizes as an int or a 1-element list."""
    value = layer.config.get(key, default)
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if not _is_int(value) or int(value) < 1:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key {key!r} is {layer.config.get(key, default)!r}. "
            "Expected a positive integer (or a list holding one)."
        )
    return int(value)


def int_tuple(layer: LayerSpec, ctx: Context, key: str, rank: int, default: Any = None) -> tuple[int, ...]:
    """``config[key]`` as ``rank`` positive ints, one per spatial axis; an int means every axis."""
    value = layer.config.get(key, default)
    values = [value] * rank if _is_int(value) else value
    if not isinstance(values, (list, tuple)) or len(values) != rank or not all(_is_int(v) and v >= 1 for v in values):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key {key!r} is {value!r}. "
            f"Expected a positive integer or a list of {rank} positive integers."
        )
    return tuple(int(v) for v in values)


def channels_first(layer: LayerSpec, ctx: Context) -> bool:
    """True for ``data_format="channels_first"``; a missing or None value means channels last."""
    value = layer.config.get("data_format") or "channels_last"
    if value not in ("channels_last", "channels_first"):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: data_format is {value!r}. Expected 'channels_last' or 'channels_first'."
        )
    return value == "channels_first"


def _padding(layer: LayerSpec, ctx: Context, allowed: tuple[str, ...]) -> str:
    value = str(layer.config.get("padding", "valid")).lower()
    if value not in allowed:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: padding is {layer.config.get('padding')!r}, which is not supported. "
            f"Expected one of {list(allowed)}."
        )
    return value


def _sizes(layer: LayerSpec, ctx: Context, key: str, rank: int, default: Any) -> int | tuple[int, ...]:
    """A size option: one int for 1-D layers (their config type keeps ints), else one int per axis."""
    return single_int(layer, ctx, key, default) if rank == 1 else int_tuple(layer, ctx, key, rank, default)


# The config keys every convolution shares (each kind adds its own).
_CONV_KEYS = frozenset({"kernel_size", "strides", "padding", "data_format", "dilation_rate", "activation", "use_bias"})


@register("Conv1D", "Conv2D", "Conv3D")
def convert_conv(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Conv1D``/``Conv2D``/``Conv3D`` → the runtime module of the same name.

    ``weight = kernel.transpose(r + 1, r, 0, ..., r - 1)`` for ``r`` spatial axes.
    """
    cfg = layer.config
    rank = _rank(layer)
    check_keys(
        layer,
        ctx,
        _CONV_KEYS | {"filters", "groups", "lora_rank", "lora_alpha"},
        INIT_REG_CONSTRAINT("kernel", "bias"),
    )
    refuse_unless(layer, ctx, "lora_rank", [None, 0], _LORA)
    filters = single_int(layer, ctx, "filters")
    kernel_size = int_tuple(layer, ctx, "kernel_size", rank)
    groups = single_int(layer, ctx, "groups", 1)
    use_bias = bool(cfg.get("use_bias", True))
    has_kernel = layer.weights and layer.weights[0].ndim == rank + 2
    per_group = int(layer.weights[0].shape[rank]) if has_kernel else 0
    expected = {"kernel": (*kernel_size, per_group, filters)}
    if use_bias:
        expected["bias"] = (filters,)
    w = unpack_weights(layer, ctx, expected)
    if filters % groups:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: filters={filters} is not divisible by groups={groups}."
        )
    config_type = Conv1DConfig if rank == 1 else ConvConfig
    config = config_type(
        in_channels=per_group * groups,
        out_channels=filters,
        kernel_size=kernel_size[0] if rank == 1 else kernel_size,
        stride=_sizes(layer, ctx, "strides", rank, 1),
        dilation=_sizes(layer, ctx, "dilation_rate", rank, 1),
        groups=groups,
        padding=_padding(layer, ctx, ("valid", "same", "causal") if rank == 1 else ("valid", "same")),
        use_bias=use_bias,
        activation=resolve_activation(layer, ctx, "activation"),
        channels_first=channels_first(layer, ctx),
    )
    order = (rank + 1, rank, *range(rank))
    state = {"weight": to_tensor(np.transpose(w["kernel"], order))}  # (out, in / groups, *k)
    if use_bias:
        state["bias"] = to_tensor(w["bias"])
    return ModuleSpec(layer.class_name, config, state)


def _output_padding(layer: LayerSpec, ctx: Context, rank: int, strides: tuple[int, ...]) -> tuple[int, ...] | None:
    """``output_padding`` as ``rank`` ints in ``[0, stride)`` (Keras' own rule), or None for Keras' default size."""
    value = layer.config.get("output_padding")
    if value is None:
        return None
    values = [value] * rank if _is_int(value) else value
    if not isinstance(values, (list, tuple)) or len(values) != rank or not all(_is_int(v) and v >= 0 for v in values):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key 'output_padding' is {value!r}. "
            f"Expected None, a non-negative integer or a list of {rank} non-negative integers."
        )
    if any(v >= s for v, s in zip(values, strides)):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: output_padding is {value!r} with strides {list(strides)}. "
            "Expected each output_padding value smaller than its stride (Keras refuses the rest)."
        )
    return tuple(int(v) for v in values)


@register("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
def convert_conv_transpose(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Conv1D/2D/3DTranspose`` → the runtime module of the same name.

    ``weight = kernel.transpose(r + 1, r, 0, ..., r - 1)`` ``(in, out, *k)`` for ``r`` spatial axes.
    tf_keras' ``Conv3DTranspose`` drops ``dilation_rate`` from its config (it never dilates): 1.
    """
    cfg = layer.config
    rank = _rank(layer)
    check_keys(
        layer,
        ctx,
        _CONV_KEYS | {"filters", "groups", "output_padding"},
        INIT_REG_CONSTRAINT("kernel", "bias"),
    )
    refuse_unless(layer, ctx, "groups", [1, None])
    filters = single_int(layer, ctx, "filters")
    kernel_size = int_tuple(layer, ctx, "kernel_size", rank)
    strides = int_tuple(layer, ctx, "strides", rank, 1)
    dilation = int_tuple(layer, ctx, "dilation_rate", rank, 1)
    padding = _padding(layer, ctx, ("valid", "same"))
    output_padding = _output_padding(layer, ctx, rank, strides)
    if padding == "same" and output_padding is not None:
        for axis, (p, k, d) in enumerate(zip(output_padding, kernel_size, dilation)):
            if p == 0 and (k - 1) * d % 2 == 1:
                raise UnsupportedOptionError(
                    f"{layer_label(layer, ctx)}: padding 'same' with output_padding {cfg.get('output_padding')!r} "
                    f"gives 0 on spatial axis {axis}, whose dilated kernel span {(k - 1) * d + 1} is even; "
                    "TensorFlow cannot run this layer either. Expected output_padding >= 1 on that axis "
                    "(or an odd kernel span)."
                )
    use_bias = bool(cfg.get("use_bias", True))
    has_kernel = layer.weights and layer.weights[0].ndim == rank + 2
    in_channels = int(layer.weights[0].shape[rank + 1]) if has_kernel else 0
    expected = {"kernel": (*kernel_size, filters, in_channels)}
    if use_bias:
        expected["bias"] = (filters,)
    w = unpack_weights(layer, ctx, expected)
    one = rank == 1
    config = ConvTransposeConfig(
        in_channels=in_channels,
        out_channels=filters,
        kernel_size=kernel_size[0] if one else kernel_size,
        stride=strides[0] if one else strides,
        dilation=dilation[0] if one else dilation,
        padding=padding,
        output_padding=output_padding[0] if one and output_padding is not None else output_padding,
        use_bias=use_bias,
        activation=resolve_activation(layer, ctx, "activation"),
        channels_first=channels_first(layer, ctx),
    )
    order = (rank + 1, rank, *range(rank))
    state = {"weight": to_tensor(np.transpose(w["kernel"], order))}  # (in, out, *k)
    if use_bias:
        state["bias"] = to_tensor(w["bias"])
    return ModuleSpec(layer.class_name, config, state)


def _depthwise_weight(kernel: np.ndarray, rank: int) -> np.ndarray:
    """Keras ``(*k, C, M)`` → PyTorch grouped ``(C * M, 1, *k)``; output channel ``c * M + m``."""
    spatial = kernel.shape[:rank]
    flat = kernel.reshape(*spatial, 1, kernel.shape[rank] * kernel.shape[rank + 1])  # (*k, 1, C * M)
    return np.transpose(flat, (rank + 1, rank, *range(rank)))  # (C * M, 1, *k)


_DEPTHWISE_KEYS = _CONV_KEYS | {"depth_multiplier"}


@register("DepthwiseConv1D", "DepthwiseConv2D")
def convert_depthwise_conv(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``DepthwiseConv1D/2D`` → the runtime module of the same name.

    ``weight`` ``(C * M, 1, *k)`` from ``depthwise_kernel`` ``(*k, C, M)``; tf_keras also stores
    ``groups`` (always 1 there).
    """
    cfg = layer.config
    rank = _rank(layer)
    check_keys(layer, ctx, _DEPTHWISE_KEYS | {"groups"}, INIT_REG_CONSTRAINT("depthwise", "bias"))
    refuse_unless(layer, ctx, "groups", [1, None])
    kernel_size = int_tuple(layer, ctx, "kernel_size", rank)
    multiplier = single_int(layer, ctx, "depth_multiplier", 1)
    use_bias = bool(cfg.get("use_bias", True))
    has_kernel = layer.weights and layer.weights[0].ndim == rank + 2
    in_channels = int(layer.weights[0].shape[rank]) if has_kernel else 0
    expected = {"depthwise_kernel": (*kernel_size, in_channels, multiplier)}
    if use_bias:
        expected["bias"] = (in_channels * multiplier,)
    w = unpack_weights(layer, ctx, expected)
    config = DepthwiseConvConfig(
        in_channels=in_channels,
        kernel_size=kernel_size[0] if rank == 1 else kernel_size,
        depth_multiplier=multiplier,
        stride=_sizes(layer, ctx, "strides", rank, 1),
        dilation=_sizes(layer, ctx, "dilation_rate", rank, 1),
        padding=_padding(layer, ctx, ("valid", "same")),
        use_bias=use_bias,
        activation=resolve_activation(layer, ctx, "activation"),
        channels_first=channels_first(layer, ctx),
    )
    state = {"weight": to_tensor(_depthwise_weight(w["depthwise_kernel"], rank))}  # (C * M, 1, *k)
    if use_bias:
        state["bias"] = to_tensor(w["bias"])
    return ModuleSpec(layer.class_name, config, state)


@register("SeparableConv1D", "SeparableConv2D")
def convert_separable_conv(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``SeparableConv1D/2D`` → the runtime module of the same name.

    ``depthwise_weight`` ``(C * M, 1, *k)`` from ``depthwise_kernel`` ``(*k, C, M)``;
    ``pointwise_weight = pointwise_kernel.transpose(r + 1, r, 0, ...)`` ``(F, C * M, 1, ..., 1)``.
    ``padding="causal"`` (tf_keras ``SeparableConv1D``) pads ``(k - 1) * d`` before the steps.
    """
    cfg = layer.config
    rank = _rank(layer)
    # tf_keras also stores Conv's `groups` (always 1 here) and its unused `kernel_*` options.
    check_keys(
        layer,
        ctx,
        _DEPTHWISE_KEYS | {"filters", "groups"},
        INIT_REG_CONSTRAINT("depthwise", "pointwise", "bias", "kernel"),
    )
    refuse_unless(layer, ctx, "groups", [1, None])
    filters = single_int(layer, ctx, "filters")
    kernel_size = int_tuple(layer, ctx, "kernel_size", rank)
    multiplier = single_int(layer, ctx, "depth_multiplier", 1)
    use_bias = bool(cfg.get("use_bias", True))
    has_kernel = layer.weights and layer.weights[0].ndim == rank + 2
    in_channels = int(layer.weights[0].shape[rank]) if has_kernel else 0
    expected = {
        "depthwise_kernel": (*kernel_size, in_channels, multiplier),
        "pointwise_kernel": (*(1,) * rank, in_channels * multiplier, filters),
    }
    if use_bias:
        expected["bias"] = (filters,)
    w = unpack_weights(layer, ctx, expected)
    config = SeparableConvConfig(
        in_channels=in_channels,
        out_channels=filters,
        kernel_size=kernel_size[0] if rank == 1 else kernel_size,
        depth_multiplier=multiplier,
        stride=_sizes(layer, ctx, "strides", rank, 1),
        dilation=_sizes(layer, ctx, "dilation_rate", rank, 1),
        padding=_padding(layer, ctx, ("valid", "same", "causal") if rank == 1 else ("valid", "same")),
        use_bias=use_bias,
        activation=resolve_activation(layer, ctx, "activation"),
        channels_first=channels_first(layer, ctx),
    )
    order = (rank + 1, rank, *range(rank))
    state = {
        "depthwise_weight": to_tensor(_depthwise_weight(w["depthwise_kernel"], rank)),  # (C * M, 1, *k)
        "pointwise_weight": to_tensor(np.transpose(w["pointwise_kernel"], order)),  # (F, C * M, 1, ..., 1)
    }
    if use_bias:
        state["bias"] = to_tensor(w["bias"])
    return ModuleSpec(layer.class_name, config, state)


@register("MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D")
def convert_pooling(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Max/AveragePooling1D/2D/3D`` → the runtime module of the same name.

    ``strides=None`` means ``pool_size``, as in Keras.
    """
    check_keys(layer, ctx, {"pool_size", "strides", "padding", "data_format"}, set())
    unpack_weights(layer, ctx, {})
    rank = _rank(layer)
    pool_size = _sizes(layer, ctx, "pool_size", rank, 2)
    stride = pool_size if layer.config.get("strides") is None else _sizes(layer, ctx, "strides", rank, None)
    config_type = Pooling1DConfig if rank == 1 else PoolingConfig
    config = config_type(pool_size, stride, _padding(layer, ctx, ("valid", "same")), channels_first(layer, ctx))
    return ModuleSpec(layer.class_name, config)


@register("GlobalMaxPooling1D", "GlobalAveragePooling1D")
def convert_global_pooling1d(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``GlobalMaxPooling1D``/``GlobalAveragePooling1D`` → the runtime module of the same name.

    The masked mean zeroes masked steps the way the writing Keras did: Keras 3 selects 0,
    Keras 2 multiplies by the mask.
    """
    check_keys(layer, ctx, {"data_format", "keepdims"}, set())
    unpack_weights(layer, ctx, {})
    keepdims = bool(layer.config.get("keepdims", False))
    first = channels_first(layer, ctx)
    if layer.class_name == "GlobalMaxPooling1D":
        return ModuleSpec("GlobalMaxPooling1D", GlobalPoolingConfig(keepdims, first))
    zero_masked = "where" if ctx.keras_version.major >= 3 else "multiply"
    return ModuleSpec("GlobalAveragePooling1D", GlobalAveragePooling1DConfig(keepdims, first, zero_masked))


@register("GlobalMaxPooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling3D", "GlobalAveragePooling3D")
def convert_global_pooling(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``GlobalMax/AveragePooling2D/3D`` → the runtime module of the same name (no mask support in Keras)."""
    check_keys(layer, ctx, {"data_format", "keepdims"}, set())
    unpack_weights(layer, ctx, {})
    config = GlobalPoolingConfig(bool(layer.config.get("keepdims", False)), channels_first(layer, ctx))
    return ModuleSpec(layer.class_name, config)


@register("SpatialDropout2D", "SpatialDropout3D")
def convert_spatial_dropout(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``SpatialDropout2D/3D`` → :class:`torch_lstm_probe.layers.core.Dropout`: the identity at inference."""
    check_keys(layer, ctx, {"rate", "data_format"}, {"noise_shape", "seed"})
    unpack_weights(layer, ctx, {})
    channels_first(layer, ctx)
    return ModuleSpec("Dropout", DropoutConfig(float(layer.config.get("rate", 0.0))))


@register(
    "AdaptiveMaxPooling1D",
    "AdaptiveMaxPooling2D",
    "AdaptiveMaxPooling3D",
    "AdaptiveAveragePooling1D",
    "AdaptiveAveragePooling2D",
    "AdaptiveAveragePooling3D",
)
def convert_adaptive_pooling(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras 3 ``AdaptiveMax/AveragePooling1D/2D/3D`` → the runtime module of the same name.

    ``output_size`` is one int per spatial axis (Keras stores the tuple); window ``i`` of an axis
    of ``L`` cells covers ``[floor(i L / O), ceil((i + 1) L / O))``.
    """
    check_keys(layer, ctx, {"output_size", "data_format"}, set())
    unpack_weights(layer, ctx, {})
    rank = _rank(layer)
    output_size = int_tuple(layer, ctx, "output_size", rank)
    return ModuleSpec(layer.class_name, AdaptivePoolingConfig(output_size, channels_first(layer, ctx)))


convert_conv1d = convert_conv  # the 1-D names, kept for existing imports
convert_pooling1d = convert_pooling
