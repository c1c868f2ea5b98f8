"""Converters for Keras normalization layers at inference: BatchNormalization, LayerNormalization.

==============================  =============================  ===========================
Keras array (in this order)     shape                          PyTorch tensor
==============================  =============================  ===========================
``gamma`` (if ``scale``)        ``(C,)`` or full rank          ``weight``
``beta`` (if ``center``)        ``(C,)`` or full rank          ``bias``
BN ``moving_mean``              same                           buffer ``running_mean``
BN ``moving_variance``          same                           buffer ``running_var``
BN renorm extras                same                           not used at inference
==============================  =============================  ===========================

BatchNormalization over several axes (tf_keras) stores full-rank parameters with 1 on the
other axes. LayerNormalization over several axes stores ``(sizes of the axes)``, which Keras
reshapes, never transposes, onto the input: the runtime does the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torch_lstm_probe.errors import UnsupportedOptionError
from torch_lstm_probe.layers.normalization import (
    BatchNormalizationConfig,
    LayerNormalizationConfig,
    UnitNormalizationConfig,
)

from .common import (
    INIT_REG_CONSTRAINT,
    Context,
    ModuleSpec,
    check_keys,
    layer_label,
    refuse_unless,
    to_tensor,
    unpack_weights,
)
from .registry import register
from .spec import LayerSpec

__all__ = ["convert_batch_normalization", "convert_layer_normalization", "convert_unit_normalization"]


def _axes(layer: LayerSpec, ctx: Context) -> tuple[int, ...]:
    value: Any = layer.config.get("axis", -1)
    axes = [value] if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    if (
        not isinstance(axes, (list, tuple))
        or not axes
        or not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes)
        or len(set(axes)) != len(axes)
    ):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: axis is {value!r}. Expected an integer or a list of distinct integers."
        )
    if 0 in axes:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: axis {value!r} includes the batch axis 0, which this converter does not "
            "reproduce. Fix: normalize over non-batch axes."
        )
    return tuple(int(a) for a in axes)


@register("BatchNormalization")
def convert_batch_normalization(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``BatchNormalization`` (inference) → :class:`torch_lstm_probe.layers.normalization.BatchNormalization`.

    Only the moving statistics matter at inference, so ``momentum``, ``synchronized``, ``fused``
    and the renorm settings are ignored; renorm's extra arrays are checked and dropped.
    """
    cfg = layer.config
    check_keys(
        layer,
        ctx,
        {"axis", "epsilon", "center", "scale", "renorm", "virtual_batch_size", "adjustment"},
        INIT_REG_CONSTRAINT("beta", "gamma")
        | {
            "momentum",
            "moving_mean_initializer",
            "moving_variance_initializer",
            "synchronized",
            "fused",
            "renorm_clipping",
            "renorm_momentum",
        },
    )
    refuse_unless(
        layer,
        ctx,
        "virtual_batch_size",
        [None],
        "Ghost batch normalization (virtual batches) is not "
        "reproduced. Fix: save the model without virtual_batch_size.",
    )
    refuse_unless(layer, ctx, "adjustment", [None], "A custom adjustment function cannot be reproduced.")
    axes = _axes(layer, ctx)
    scale, center = bool(cfg.get("scale", True)), bool(cfg.get("center", True))
    names = (["gamma"] if scale else []) + (["beta"] if center else []) + ["moving_mean", "moving_variance"]
    if cfg.get("renorm", False):
        names += ["moving_stddev", "renorm_mean", "renorm_stddev"]
    stats_at = int(scale) + int(center)
    shape = tuple(int(d) for d in layer.weights[stats_at].shape) if len(layer.weights) > stats_at else (0,)
    w = unpack_weights(layer, ctx, {name: shape for name in names})
    if len(axes) > 1 and len(shape) == 1:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: normalizes axes {list(axes)} but stores parameters of shape {shape}. "
            "Expected full-rank parameters (one size per input axis)."
        )
    epsilon = float(cfg.get("epsilon", 1e-3))
    config = BatchNormalizationConfig(axes=axes, param_shape=shape, epsilon=epsilon, center=center, scale=scale)
    state = {"running_mean": to_tensor(w["moving_mean"]), "running_var": to_tensor(w["moving_variance"])}
    if scale:
        state["weight"] = to_tensor(w["gamma"])
    if center:
        state["bias"] = to_tensor(w["beta"])
    return ModuleSpec("BatchNormalization", config, state)


@register("LayerNormalization")
def convert_layer_normalization(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``LayerNormalization`` → :class:`torch_lstm_probe.layers.normalization.LayerNormalization`.

    Keras 3 ``rms_scaling=True`` is supported: gamma always exists then, beta never.
    """
    cfg = layer.config
    check_keys(layer, ctx, {"axis", "epsilon", "center", "scale", "rms_scaling"}, INIT_REG_CONSTRAINT("beta", "gamma"))
    axes = _axes(layer, ctx)
    rms = bool(cfg.get("rms_scaling", False))
    scale, center = bool(cfg.get("scale", True)), bool(cfg.get("center", True))
    has_gamma, has_beta = scale or rms, center and not rms
    names = (["gamma"] if has_gamma else []) + (["beta"] if has_beta else [])
    shape = tuple(int(d) for d in layer.weights[0].shape) if layer.weights else ()
    if names and not shape:
        shape = (0,)  # no arrays at all: unpack_weights reports what is missing
    w = unpack_weights(layer, ctx, {name: shape for name in names})
    config = LayerNormalizationConfig(
        axes=axes,
        param_shape=shape,
        epsilon=float(cfg.get("epsilon", 1e-3)),
        center=center,
        scale=scale,
        rms_scaling=rms,
    )
    state = {}
    if has_gamma:
        state["weight"] = to_tensor(w["gamma"])
    if has_beta:
        state["bias"] = to_tensor(w["beta"])
    return ModuleSpec("LayerNormalization", config, state)


@register("UnitNormalization")
def convert_unit_normalization(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``UnitNormalization`` → the runtime module of the same name; the bound on a zero
    vector's inverse norm follows the writer (Keras 3 ``ops.normalize``, tf_keras ``l2_normalize``)."""
    check_keys(layer, ctx, {"axis"}, set())
    unpack_weights(layer, ctx, {})
    rule = "clip_inverse" if ctx.keras_version.major >= 3 else "clip_square_sum"
    return ModuleSpec("UnitNormalization", UnitNormalizationConfig(_axes(layer, ctx), rule))
