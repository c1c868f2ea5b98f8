"""Converters for Keras activation layers: Softmax, ReLU, LeakyReLU, PReLU, ELU and (tf_keras) ThresholdedReLU.

==================  ==========================================  ==================
Keras array         shape                                       PyTorch parameter
==================  ==========================================  ==================
PReLU ``alpha``     one sample's shape, 1 on ``shared_axes``    ``weight``
==================  ==========================================  ==================

LeakyReLU's slope is ``negative_slope`` in Keras 3 and ``alpha`` in Keras 2; both default to 0.3.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torch_lstm_probe.errors import UnsupportedOptionError
from torch_lstm_probe.layers.activation_layers import (
    ELUConfig,
    LeakyReLUConfig,
    PReLUConfig,
    ReLUConfig,
    SoftmaxConfig,
    ThresholdedReLUConfig,
)

from .common import INIT_REG_CONSTRAINT, Context, ModuleSpec, check_keys, layer_label, to_tensor, unpack_weights
from .registry import register
from .spec import LayerSpec

__all__ = [
    "convert_softmax",
    "convert_relu",
    "convert_leaky_relu",
    "convert_prelu",
    "convert_elu",
    "convert_thresholded_relu",
]


def _number(
    layer: LayerSpec, ctx: Context, key: str, default: float | None, minimum: float | None = None
) -> float | None:
    """``config[key]`` as a float (Keras 2 may store a 0-d array); None stays None."""
    value: Any = layer.config.get(key, default)
    if value is None:
        return None
    try:
        number = float(np.asarray(value, dtype=np.float64).reshape(()))
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number) or (minimum is not None and number < minimum):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key {key!r} is {value!r}. Expected a finite number"
            + (f" >= {minimum}." if minimum is not None else ".")
        )
    return number


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@register("Softmax")
def convert_softmax(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Softmax`` → :class:`torch_lstm_probe.layers.activation_layers.Softmax`.

    A mask hides entries as the writing Keras did: Keras 3 sets the logits to -1e9 and zeroes the
    outputs, Keras 2 adds -1e9 (or, with tf_keras ``robust_masking``, sets it).
    """
    check_keys(layer, ctx, {"axis", "robust_masking"}, set())
    unpack_weights(layer, ctx, {})
    value = layer.config.get("axis", -1)
    axes = [value] if _is_int(value) else value
    if not isinstance(axes, (list, tuple)) or not axes or not all(_is_int(a) for a in axes) or 0 in axes:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: axis is {value!r}. Expected a non-zero integer or a list of them."
        )
    if ctx.keras_version.major >= 3:
        rules = "keras3"
    else:
        rules = "keras2_robust" if layer.config.get("robust_masking", False) else "keras2"
    return ModuleSpec("Softmax", SoftmaxConfig(tuple(int(a) for a in axes), rules))


@register("ReLU")
def convert_relu(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``ReLU`` → :class:`torch_lstm_probe.layers.activation_layers.ReLU`."""
    check_keys(layer, ctx, {"max_value", "negative_slope", "threshold"}, set())
    unpack_weights(layer, ctx, {})
    config = ReLUConfig(
        max_value=_number(layer, ctx, "max_value", None, 0.0),
        negative_slope=float(_number(layer, ctx, "negative_slope", 0.0, 0.0) or 0.0),
        threshold=float(_number(layer, ctx, "threshold", 0.0) or 0.0),
    )
    return ModuleSpec("ReLU", config)


@register("LeakyReLU")
def convert_leaky_relu(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``LeakyReLU`` → :class:`torch_lstm_probe.layers.activation_layers.LeakyReLU`."""
    check_keys(layer, ctx, {"negative_slope", "alpha"}, set())
    unpack_weights(layer, ctx, {})
    key = "negative_slope" if "negative_slope" in layer.config else "alpha"
    slope = _number(layer, ctx, key, 0.3, 0.0)
    return ModuleSpec("LeakyReLU", LeakyReLUConfig(0.3 if slope is None else slope))


@register("PReLU")
def convert_prelu(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``PReLU`` → :class:`torch_lstm_probe.layers.activation_layers.PReLU` (weight = alpha)."""
    check_keys(layer, ctx, {"shared_axes"}, INIT_REG_CONSTRAINT("alpha"))
    shape = tuple(int(d) for d in layer.weights[0].shape) if layer.weights else (0,)
    w = unpack_weights(layer, ctx, {"alpha": shape})
    shared = layer.config.get("shared_axes")
    shared = [] if shared is None else ([shared] if _is_int(shared) else list(shared))
    if not all(_is_int(a) and 1 <= a <= len(shape) and shape[a - 1] == 1 for a in shared):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: shared_axes {layer.config.get('shared_axes')!r} does not match alpha of shape "
            f"{shape}. Expected 1-based axes where alpha has size 1."
        )
    return ModuleSpec("PReLU", PReLUConfig(shape), {"weight": to_tensor(w["alpha"])})


@register("ELU")
def convert_elu(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``ELU`` → :class:`torch_lstm_probe.layers.activation_layers.ELU`."""
    check_keys(layer, ctx, {"alpha"}, set())
    unpack_weights(layer, ctx, {})
    alpha = _number(layer, ctx, "alpha", 1.0)
    return ModuleSpec("ELU", ELUConfig(1.0 if alpha is None else alpha))


@register("ThresholdedReLU")
def convert_thresholded_relu(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """tf_keras ``ThresholdedReLU`` → :class:`torch_lstm_probe.layers.activation_layers.ThresholdedReLU`:
    ``y = x * (x > theta)``, ``theta`` rounded to float32 as tf_keras casts it to floatx."""
    check_keys(layer, ctx, {"theta"}, set())
    unpack_weights(layer, ctx, {})
    theta = _number(layer, ctx, "theta", 1.0, 0.0)
    theta32 = float(np.float32(1.0 if theta is None else theta))
    return ModuleSpec("ThresholdedReLU", ThresholdedReLUConfig(theta32))
