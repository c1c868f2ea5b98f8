"""Converters for Keras normalization layers at inference: BatchNormalization, LayerNormalization,
UnitNormalization, GroupNormalization, RMSNormalization, SpectralNormalization.

==============================  =============================  ===========================
Keras array (in this order)     shape                          PyTorch tensor
==============================  =============================  ===========================
``gamma`` (if ``scale``)        ``(C,)`` or full rank          ``weight``
``beta`` (if ``center``)        ``(C,)`` or full rank          ``bias``
BN ``moving_mean``              same                           buffer ``running_mean``
BN ``moving_variance``          same                           buffer ``running_var``
BN renorm extras                same                           not used at inference
GroupNorm ``gamma``, ``beta``   ``(C,)``                       ``weight``, ``bias``
RMSNorm ``scale``               ``(sizes of the axes)``        ``weight``
SpectralNorm ``vector_u``       ``(1, kernel.shape[-1])``      not used at inference
==============================  =============================  ===========================

BatchNormalization over several axes (tf_keras) stores full-rank parameters with 1 on the
other axes. LayerNormalization over several axes stores ``(sizes of the axes)``, which Keras
reshapes, never transposes, onto the input: the runtime does the same.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Mapping

import numpy as np

from torch_lstm_probe.errors import UnsupportedOptionError, WeightMismatchError
from torch_lstm_probe.layers.normalization import (
    BatchNormalizationConfig,
    GroupNormalizationConfig,
    LayerNormalizationConfig,
    RMSNormalizationConfig,
    SpectralNormalizationConfig,
    UnitNormalizationConfig,
)

from .common import (
    INIT_REG_CONSTRAINT,
    Context,
    ModuleSpec,
    check_keys,
    config_int,
    inner_layer_spec,
    layer_label,
    refuse_unless,
    to_tensor,
    unpack_weights,
)
from .registry import lookup, register
from .spec import LayerSpec

__all__ = [
    "convert_batch_normalization",
    "convert_group_normalization",
    "convert_layer_normalization",
    "convert_rms_normalization",
    "convert_spectral_normalization",
    "convert_unit_normalization",
]


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


@register("GroupNormalization")
def convert_group_normalization(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``GroupNormalization`` → the runtime module of the same name.

    ``groups=-1`` (one group per channel) is kept and resolved on the input. tf_keras weighs the
    moments by an incoming mask; Keras 3 ignores the mask (both pass it on).
    """
    cfg = layer.config
    check_keys(layer, ctx, {"groups", "axis", "epsilon", "center", "scale"}, INIT_REG_CONSTRAINT("beta", "gamma"))
    axes = _axes(layer, ctx)
    if len(axes) != 1:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key 'axis' is {cfg.get('axis')!r}. Expected a single integer "
            "(the channel axis)."
        )
    groups = cfg.get("groups", 32)
    if groups != -1:
        groups = config_int(layer, ctx, "groups", 32)
    scale, center = bool(cfg.get("scale", True)), bool(cfg.get("center", True))
    names = (["gamma"] if scale else []) + (["beta"] if center else [])
    channels = int(layer.weights[0].shape[0]) if layer.weights and layer.weights[0].ndim == 1 else 0
    w = unpack_weights(layer, ctx, {name: (channels,) for name in names})
    if names and groups != -1 and channels % groups:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key 'groups' is {groups}, which does not divide the {channels} "
            "channels. Expected a divisor of the channel count."
        )
    config = GroupNormalizationConfig(
        axis=axes[0],
        groups=int(groups),
        channels=channels,
        epsilon=float(cfg.get("epsilon", 1e-3)),
        center=center,
        scale=scale,
        masked_moments=ctx.keras_version.major < 3,
    )
    state = {}
    if scale:
        state["weight"] = to_tensor(w["gamma"])
    if center:
        state["bias"] = to_tensor(w["beta"])
    return ModuleSpec("GroupNormalization", config, state)


@register("RMSNormalization")
def convert_rms_normalization(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras 3 ``RMSNormalization`` → the runtime module of the same name (weight = scale)."""
    check_keys(layer, ctx, {"axis", "epsilon"}, set())
    axes = tuple(sorted(_axes(layer, ctx)))
    shape = tuple(int(d) for d in layer.weights[0].shape) if layer.weights else (0,)
    w = unpack_weights(layer, ctx, {"scale": shape})
    if len(shape) != len(axes):
        raise WeightMismatchError(
            f"{layer_label(layer, ctx)}: weight 'scale' has shape {shape}. Expected one size per normalized axis "
            f"{list(axes)}."
        )
    config = RMSNormalizationConfig(axes=axes, param_shape=shape, epsilon=float(layer.config.get("epsilon", 1e-6)))
    return ModuleSpec("RMSNormalization", config, {"weight": to_tensor(w["scale"])})


# Layers whose kernel SpectralNormalization may wrap, with whether the layer has a bias.
_SPECTRAL_INNER = {
    "Dense": lambda c: bool(c.get("use_bias", True)),
    "Conv1D": lambda c: bool(c.get("use_bias", True)),
    "Conv2D": lambda c: bool(c.get("use_bias", True)),
    "Conv3D": lambda c: bool(c.get("use_bias", True)),
    "EinsumDense": lambda c: c.get("bias_axes") is not None,
}


@register("SpectralNormalization")
def convert_spectral_normalization(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras 3 ``SpectralNormalization`` → the runtime module of the same name around the converted
    inner layer (state_dict keys gain the prefix ``layer.``).

    At inference Keras runs the inner layer on its stored kernel (normalized by the last training
    step); ``vector_u`` and ``power_iterations`` only drive that training-time update. The arrays
    come as ``[kernel, vector_u, kernel, bias]`` from a ``.keras`` archive (the wrapper tracks
    the kernel too) and as ``[kernel, bias, vector_u]`` from ``.h5``. An inner ``Embedding`` is
    refused: Keras casts the wrapper's output to the input's integer dtype.
    """
    check_keys(layer, ctx, {"layer", "power_iterations"}, set())
    raw: Any = layer.config.get("layer")
    if not isinstance(raw, Mapping) or not isinstance(raw.get("config", {}), Mapping):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key 'layer' is not a serialized layer. Received: {raw!r}. "
            "Expected {'class_name': ..., 'config': {...}}."
        )
    class_name = str(raw.get("class_name"))
    if class_name not in _SPECTRAL_INNER:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key 'layer' wraps a {class_name}, which is not reproduced. "
            f"Expected one of {sorted(_SPECTRAL_INNER)}."
            + (" Keras casts the embeddings to the integer input dtype." if class_name == "Embedding" else "")
        )
    inner_config = dict(raw.get("config") or {})
    n_inner = 1 + int(_SPECTRAL_INNER[class_name](inner_config))
    weights = layer.weights
    if len(weights) == n_inner + 2:  # .keras: the wrapper's [kernel, vector_u], then the inner layer's
        tracked, vector_u, inner_weights = weights[0], weights[1], weights[2:]
        if tracked.shape != inner_weights[0].shape or not np.array_equal(tracked, inner_weights[0]):
            raise WeightMismatchError(
                f"{layer_label(layer, ctx)}: the wrapper's kernel differs from its {class_name}'s kernel. Expected "
                "one kernel stored twice; the file is damaged."
            )
    elif len(weights) == n_inner + 1:  # .h5: the inner layer's arrays, then vector_u
        inner_weights, vector_u = weights[:-1], weights[-1]
    else:
        raise WeightMismatchError(
            f"{layer_label(layer, ctx)}: the file has {len(weights)} weight array(s) with shapes "
            f"{[tuple(w.shape) for w in weights]}. Expected the {n_inner} of its {class_name} and vector_u."
        )
    kernel_out = inner_weights[0].shape[-1] if inner_weights[0].ndim else 0
    if tuple(vector_u.shape) != (1, kernel_out):
        raise WeightMismatchError(
            f"{layer_label(layer, ctx)}: vector_u has shape {tuple(vector_u.shape)}. Expected (1, {kernel_out})."
        )
    inner = inner_layer_spec(layer, raw, "layer", tuple(inner_weights), config=inner_config)
    converted = lookup(inner, ctx)(inner, ctx)
    config = SpectralNormalizationConfig(layer={"type": converted.type, "config": asdict(converted.config)})
    return ModuleSpec("SpectralNormalization", config, {f"layer.{k}": v for k, v in converted.state_dict.items()})
