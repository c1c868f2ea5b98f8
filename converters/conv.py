"""Converters for Keras 1-D convolution and pooling: Conv1D, Max/AveragePooling1D, global pooling.

======================  =======================  ==============================================
Keras array             shape                    PyTorch parameter
======================  =======================  ==============================================
Conv1D ``kernel``       ``(k, in / groups, out)``  ``weight = kernel.transpose(2, 1, 0)`` ``(out, in / groups, k)``
Conv1D ``bias``         ``(out,)``               ``bias``
======================  =======================  ==============================================

Pooling layers have no weights. ``data_format="channels_first"`` is supported everywhere
(the runtime modules then take ``(N, C, L)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torch_lstm_probe.errors import UnsupportedOptionError
from torch_lstm_probe.layers.conv import (
    Conv1DConfig,
    GlobalAveragePooling1DConfig,
    GlobalPooling1DConfig,
    Pooling1DConfig,
)

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

__all__ = ["convert_conv1d", "convert_pooling1d", "convert_global_pooling1d", "single_int", "channels_first"]

_LORA = "LoRA-adapted weights are not merged by this converter. Fix: merge the LoRA factors into the kernel in Keras before saving."


def single_int(layer: LayerSpec, ctx: Context, key: str, default: Any = None) -> int:
    """``config[key]`` as one positive int; Keras stores 1-D sizes as an int or a 1-element list."""
    value = layer.config.get(key, default)
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key {key!r} is {layer.config.get(key, default)!r}. "
            "Expected a positive integer (or a list holding one)."
        )
    return int(value)


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


@register("Conv1D")
def convert_conv1d(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Conv1D`` → :class:`torch_lstm_probe.layers.conv.Conv1D` (weight = kernel.transpose(2, 1, 0))."""
    cfg = layer.config
    check_keys(
        layer,
        ctx,
        {
            "filters",
            "kernel_size",
            "strides",
            "padding",
            "data_format",
            "dilation_rate",
            "groups",
            "activation",
            "use_bias",
            "lora_rank",
            "lora_alpha",
        },
        INIT_REG_CONSTRAINT("kernel", "bias"),
    )
    refuse_unless(layer, ctx, "lora_rank", [None, 0], _LORA)
    filters = single_int(layer, ctx, "filters")
    kernel_size = single_int(layer, ctx, "kernel_size")
    groups = single_int(layer, ctx, "groups", 1)
    use_bias = bool(cfg.get("use_bias", True))
    per_group = int(layer.weights[0].shape[1]) if layer.weights and layer.weights[0].ndim == 3 else 0
    expected = {"kernel": (kernel_size, per_group, filters)}
    if use_bias:
        expected["bias"] = (filters,)
    w = unpack_weights(layer, ctx, expected)
    if filters % groups:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: filters={filters} is not divisible by groups={groups}."
        )
    config = Conv1DConfig(
        in_channels=per_group * groups,
        out_channels=filters,
        kernel_size=kernel_size,
        stride=single_int(layer, ctx, "strides", 1),
        dilation=single_int(layer, ctx, "dilation_rate", 1),
        groups=groups,
        padding=_padding(layer, ctx, ("valid", "same", "causal")),
        use_bias=use_bias,
        activation=resolve_activation(layer, ctx, "activation"),
        channels_first=channels_first(layer, ctx),
    )
    state = {"weight": to_tensor(np.transpose(w["kernel"], (2, 1, 0)))}  # (out, in / groups, k)
    if use_bias:
        state["bias"] = to_tensor(w["bias"])
    return ModuleSpec("Conv1D", config, state)


@register("MaxPooling1D", "AveragePooling1D")
def convert_pooling1d(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``MaxPooling1D``/``AveragePooling1D`` → the runtime module of the same name.

    ``strides=None`` means ``pool_size``, as in Keras.
    """
    check_keys(layer, ctx, {"pool_size", "strides", "padding", "data_format"}, set())
    unpack_weights(layer, ctx, {})
    pool_size = single_int(layer, ctx, "pool_size", 2)
    stride = pool_size if layer.config.get("strides") is None else single_int(layer, ctx, "strides")
    config = Pooling1DConfig(pool_size, stride, _padding(layer, ctx, ("valid", "same")), channels_first(layer, ctx))
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
        return ModuleSpec("GlobalMaxPooling1D", GlobalPooling1DConfig(keepdims, first))
    zero_masked = "where" if ctx.keras_version.major >= 3 else "multiply"
    return ModuleSpec("GlobalAveragePooling1D", GlobalAveragePooling1DConfig(keepdims, first, zero_masked))
