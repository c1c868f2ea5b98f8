"""Converters for Keras ``ConvLSTM1D``, ``ConvLSTM2D`` and ``ConvLSTM3D``.

Weight layout (Keras → PyTorch), gate blocks packed ``[i, f, c, o]`` on the last Keras axis and
on the first PyTorch axis; ``r`` is the rank (spatial axes), ``k`` the kernel sizes:

======================  ======================  ===================================================
Keras array             shape                   PyTorch parameter
======================  ======================  ===================================================
``kernel``              ``(*k, C, 4F)``         ``weight_ih = kernel.transpose(r + 1, r, 0 … r - 1)``
``recurrent_kernel``    ``(*k, F, 4F)``         ``weight_hh``, moved the same way
``bias``                ``(4F,)``               ``bias``
======================  ======================  ===================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torch_lstm_probe.errors import KerasFileError, UnsupportedOptionError, WeightMismatchError
from torch_lstm_probe.layers.conv_lstm import ConvLSTMConfig

from .common import (
    INIT_REG_CONSTRAINT,
    Context,
    ModuleSpec,
    check_keys,
    config_int,
    layer_label,
    refuse_unless,
    resolve_activation,
    to_tensor,
    unpack_weights,
)
from .recurrent import sequence_options
from .registry import register
from .spec import LayerSpec

__all__ = ["convert_conv_lstm"]

SUPPORTED = frozenset(
    {
        "filters",
        "kernel_size",
        "strides",
        "padding",
        "data_format",
        "dilation_rate",
        "activation",
        "recurrent_activation",
        "use_bias",
        "return_sequences",
        "return_state",
        "go_backwards",
        "stateful",
        "time_major",
        "zero_output_for_mask",
    }
)
# Training-only options and initializers (unit_forget_bias only initializes the bias).
IGNORED = frozenset({"dropout", "recurrent_dropout", "unroll", "unit_forget_bias", "seed"}) | INIT_REG_CONSTRAINT(
    "kernel", "recurrent", "bias"
)
_RANKS = {"ConvLSTM1D": 1, "ConvLSTM2D": 2, "ConvLSTM3D": 3}


def _sizes(layer: LayerSpec, ctx: Context, key: str, rank: int) -> tuple[int, ...]:
    """``config[key]`` (one int or ``rank`` ints, default 1) as ``rank`` ints >= 1."""
    value = layer.config.get(key, 1)
    values = [value] * rank if not isinstance(value, (list, tuple)) else list(value)
    if len(values) != rank:
        raise KerasFileError(
            f"{layer_label(layer, ctx)}: config key {key!r} is {value!r}. Expected one int or {rank} ints "
            "(one per spatial axis). Keras never writes this: the file is damaged or was edited."
        )
    return tuple(config_int(layer, ctx, key, config={key: v}) for v in values)


def _refuse(layer: LayerSpec, ctx: Context, option: str, received: Any, expected: str) -> UnsupportedOptionError:
    return UnsupportedOptionError(
        f"{layer_label(layer, ctx)}: option {option!r} is {received!r}, which this converter does not reproduce. "
        f"Expected {expected}."
    )


def _geometry(layer: LayerSpec, ctx: Context, rank: int) -> dict[str, Any]:
    """Kernel size, strides, dilation, padding and layout, refusing what the runtime cannot reproduce."""
    kernel_size = _sizes(layer, ctx, "kernel_size", rank)
    strides = _sizes(layer, ctx, "strides", rank)
    dilation = _sizes(layer, ctx, "dilation_rate", rank)
    padding = str(refuse_unless(layer, ctx, "padding", ["valid", "same"]))
    data_format = layer.config.get("data_format") or "channels_last"
    if data_format not in ("channels_last", "channels_first"):
        raise _refuse(layer, ctx, "data_format", data_format, "'channels_last' or 'channels_first'")
    if any(s > 1 for s in strides) and any(d > 1 for d in dilation):
        raise _refuse(
            layer, ctx, "strides", list(strides), f"all 1 with dilation_rate {list(dilation)} (TensorFlow refuses both)"
        )
    if layer.config.get("time_major", False):
        raise _refuse(layer, ctx, "time_major", layer.config["time_major"], "False (ConvLSTM runs batch-major)")
    return {
        "kernel_size": kernel_size,
        "strides": strides,
        "dilation": dilation,
        "padding": padding,
        "channels_first": data_format == "channels_first",
    }


def _weights(
    layer: LayerSpec, ctx: Context, kernel_size: tuple[int, ...], filters: int, use_bias: bool
) -> tuple[int, dict[str, np.ndarray]]:
    """``(input channels, {kernel, recurrent_kernel[, bias]})``, checked against the config."""
    rank = len(kernel_size)
    kernel = layer.weights[0] if layer.weights else None
    channels = int(kernel.shape[rank]) if kernel is not None and kernel.ndim == rank + 2 else 0
    expected: dict[str, tuple[int, ...]] = {
        "kernel": (*kernel_size, channels, 4 * filters),
        "recurrent_kernel": (*kernel_size, filters, 4 * filters),
    }
    if use_bias:
        expected["bias"] = (4 * filters,)
    if kernel is not None and channels < 1:
        raise WeightMismatchError(
            f"{layer_label(layer, ctx)}: weight 'kernel' has shape {tuple(kernel.shape)}. Expected "
            f"{(*kernel_size, 'input channels >= 1', 4 * filters)}. The weights do not belong to this layer."
        )
    return channels, unpack_weights(layer, ctx, expected)


def _torch_weight(kernel: np.ndarray) -> np.ndarray:
    """Keras ``(*k, in, out)`` → PyTorch ``(out, in, *k)``."""
    rank = kernel.ndim - 2
    return kernel.transpose(rank + 1, rank, *range(rank))


@register("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D")
def convert_conv_lstm(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``ConvLSTM1D/2D/3D`` → :class:`torch_lstm_probe.layers.conv_lstm.ConvLSTM`."""
    check_keys(layer, ctx, SUPPORTED, IGNORED)
    rank = _RANKS[layer.class_name]
    filters = config_int(layer, ctx, "filters")
    use_bias = bool(layer.config.get("use_bias", True))
    geometry = _geometry(layer, ctx, rank)
    channels, w = _weights(layer, ctx, geometry["kernel_size"], filters, use_bias)
    keras3 = ctx.keras_version.major >= 3
    options = sequence_options(layer, ctx)
    if not keras3:  # Keras 2's ConvRNN never hands zero_output_for_mask to its loop, even under Bidirectional
        options["zero_output_for_mask"] = False
    config = ConvLSTMConfig(
        input_size=channels,
        hidden_size=filters,
        activation=resolve_activation(layer, ctx, "activation", "tanh"),
        recurrent_activation=resolve_activation(
            layer, ctx, "recurrent_activation", "sigmoid" if keras3 else "hard_sigmoid"
        ),
        use_bias=use_bias,
        rank=rank,
        **geometry,
        **options,
    )
    state = {
        "weight_ih": to_tensor(_torch_weight(w["kernel"])),  # (4F, C, *k)
        "weight_hh": to_tensor(_torch_weight(w["recurrent_kernel"])),  # (4F, F, *k)
    }
    if use_bias:
        state["bias"] = to_tensor(w["bias"])  # (4F,)
    return ModuleSpec("ConvLSTM", config, state, call="rnn")
