"""Converters for Keras reshaping layers: Flatten, Reshape, Permute, RepeatVector,
ZeroPadding1D/2D/3D, Cropping1D/2D/3D and UpSampling1D/2D/3D. None of them has weights."""

from __future__ import annotations

from typing import Any

import numpy as np

from torch_lstm_probe.errors import UnsupportedOptionError
from torch_lstm_probe.layers.reshape import (
    Cropping1DConfig,
    CroppingConfig,
    FlattenConfig,
    PermuteConfig,
    RepeatVectorConfig,
    ReshapeConfig,
    UpSampling1DConfig,
    UpSamplingConfig,
    ZeroPadding1DConfig,
    ZeroPaddingConfig,
)

from .common import Context, ModuleSpec, check_keys, layer_label, unpack_weights
from .conv import channels_first, int_tuple, single_int
from .registry import register
from .spec import LayerSpec

__all__ = [
    "convert_flatten",
    "convert_reshape",
    "convert_permute",
    "convert_repeat_vector",
    "convert_zero_padding1d",
    "convert_cropping1d",
    "convert_up_sampling1d",
    "convert_zero_padding",
    "convert_cropping",
    "convert_up_sampling",
]


def _int_list(layer: LayerSpec, ctx: Context, key: str) -> list[int]:
    value: Any = layer.config.get(key)
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value
    ):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key {key!r} is {value!r}. Expected a list of integers."
        )
    return [int(v) for v in value]


def _pair(layer: LayerSpec, ctx: Context, key: str, default: int) -> tuple[int, int]:
    """An int (both sides) or a pair ``(before, after)`` of non-negative ints."""
    value: Any = layer.config.get(key, default)
    pair = [value, value] if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    if (
        not isinstance(pair, (list, tuple))
        or len(pair) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in pair)
    ):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key {key!r} is {value!r}. Expected a non-negative int or a pair of them."
        )
    return int(pair[0]), int(pair[1])


@register("Flatten")
def convert_flatten(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Flatten`` → :class:`torch_lstm_probe.layers.reshape.Flatten` (channels-last order)."""
    check_keys(layer, ctx, {"data_format"}, set())
    unpack_weights(layer, ctx, {})
    return ModuleSpec("Flatten", FlattenConfig(channels_first(layer, ctx)))


@register("Reshape")
def convert_reshape(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Reshape`` → :class:`torch_lstm_probe.layers.reshape.Reshape`."""
    check_keys(layer, ctx, {"target_shape"}, set())
    unpack_weights(layer, ctx, {})
    target = _int_list(layer, ctx, "target_shape")
    if target.count(-1) > 1 or any(d < -1 or d == 0 for d in target):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: target_shape {target} must hold positive sizes and at most one -1."
        )
    return ModuleSpec("Reshape", ReshapeConfig(tuple(target)))


@register("Permute")
def convert_permute(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Permute`` → :class:`torch_lstm_probe.layers.reshape.Permute` (dims stay 1-based)."""
    check_keys(layer, ctx, {"dims"}, set())
    unpack_weights(layer, ctx, {})
    dims = _int_list(layer, ctx, "dims")
    if sorted(dims) != list(range(1, len(dims) + 1)):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: dims {dims} is not a permutation of 1..{len(dims)} (axes counted from 1, "
            "the batch axis excluded)."
        )
    return ModuleSpec("Permute", PermuteConfig(tuple(dims)))


@register("RepeatVector")
def convert_repeat_vector(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``RepeatVector`` → :class:`torch_lstm_probe.layers.reshape.RepeatVector`."""
    check_keys(layer, ctx, {"n"}, set())
    unpack_weights(layer, ctx, {})
    return ModuleSpec("RepeatVector", RepeatVectorConfig(single_int(layer, ctx, "n")))


@register("ZeroPadding1D")
def convert_zero_padding1d(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``ZeroPadding1D`` → :class:`torch_lstm_probe.layers.reshape.ZeroPadding1D`."""
    check_keys(layer, ctx, {"padding", "data_format"}, set())
    unpack_weights(layer, ctx, {})
    left, right = _pair(layer, ctx, "padding", 1)
    return ModuleSpec("ZeroPadding1D", ZeroPadding1DConfig(left, right, channels_first(layer, ctx)))


@register("Cropping1D")
def convert_cropping1d(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Cropping1D`` → :class:`torch_lstm_probe.layers.reshape.Cropping1D`."""
    check_keys(layer, ctx, {"cropping"}, set())
    unpack_weights(layer, ctx, {})
    left, right = _pair(layer, ctx, "cropping", 1)
    return ModuleSpec("Cropping1D", Cropping1DConfig(left, right))


@register("UpSampling1D")
def convert_up_sampling1d(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``UpSampling1D`` → :class:`torch_lstm_probe.layers.reshape.UpSampling1D`."""
    check_keys(layer, ctx, {"size"}, set())
    unpack_weights(layer, ctx, {})
    return ModuleSpec("UpSampling1D", UpSampling1DConfig(single_int(layer, ctx, "size", 2)))


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _axis_pairs(layer: LayerSpec, ctx: Context, key: str, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``config[key]`` as ``(before, after)``, each one non-negative int per spatial axis.

    Keras accepts an int (every side), ``rank`` ints (both sides of each axis) or ``rank``
    pairs ``(before, after)``.
    """
    value: Any = layer.config.get(key)
    entries = [value] * rank if _is_int(value) else value
    pairs = None
    if isinstance(entries, (list, tuple)) and len(entries) == rank:
        pairs = [(e, e) if _is_int(e) else tuple(e) if isinstance(e, (list, tuple)) else None for e in entries]
    if pairs is None or not all(p is not None and len(p) == 2 and all(_is_int(v) and v >= 0 for v in p) for p in pairs):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key {key!r} is {value!r}. Expected a non-negative int, "
            f"{rank} of them, or {rank} pairs (before, after) of them."
        )
    return tuple(int(p[0]) for p in pairs), tuple(int(p[1]) for p in pairs)


def _rank(layer: LayerSpec) -> int:
    """The number of spatial axes, from the class name's ``2D``/``3D`` suffix."""
    return int(layer.class_name[-2])


@register("ZeroPadding2D", "ZeroPadding3D")
def convert_zero_padding(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``ZeroPadding2D/3D`` → the runtime module of the same name."""
    check_keys(layer, ctx, {"padding", "data_format"}, set())
    unpack_weights(layer, ctx, {})
    before, after = _axis_pairs(layer, ctx, "padding", _rank(layer))
    return ModuleSpec(layer.class_name, ZeroPaddingConfig(before, after, channels_first(layer, ctx)))


@register("Cropping2D", "Cropping3D")
def convert_cropping(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Cropping2D/3D`` → the runtime module of the same name."""
    check_keys(layer, ctx, {"cropping", "data_format"}, set())
    unpack_weights(layer, ctx, {})
    before, after = _axis_pairs(layer, ctx, "cropping", _rank(layer))
    return ModuleSpec(layer.class_name, CroppingConfig(before, after, channels_first(layer, ctx)))


@register("UpSampling2D", "UpSampling3D")
def convert_up_sampling(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``UpSampling2D/3D`` → the runtime module of the same name.

    Only ``"nearest"`` and ``"bilinear"`` (2-D) are reproduced exactly; Keras' other
    interpolations (bicubic, lanczos, area, ...) are refused.
    """
    rank = _rank(layer)
    check_keys(layer, ctx, {"size", "data_format", "interpolation"}, set())
    unpack_weights(layer, ctx, {})
    allowed = ("nearest", "bilinear") if rank == 2 else ("nearest",)
    interpolation = layer.config.get("interpolation", "nearest")
    if interpolation not in allowed:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: interpolation is {interpolation!r}, which is not reproduced exactly. "
            f"Expected one of {list(allowed)}. Fix: use one of these in Keras, or pass custom_layers."
        )
    size = int_tuple(layer, ctx, "size", rank, 2)
    return ModuleSpec(layer.class_name, UpSamplingConfig(size, interpolation, channels_first(layer, ctx)))
