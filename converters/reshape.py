"""Converters for Keras reshaping layers: Flatten, Reshape, Permute, RepeatVector,
ZeroPadding1D, Cropping1D and UpSampling1D. None of them has weights."""

from __future__ import annotations

from typing import Any

import numpy as np

from torch_lstm_probe.errors import UnsupportedOptionError
from torch_lstm_probe.layers.reshape import (
    Cropping1DConfig,
    FlattenConfig,
    PermuteConfig,
    RepeatVectorConfig,
    ReshapeConfig,
    UpSampling1DConfig,
    ZeroPadding1DConfig,
)

from .common import Context, ModuleSpec, check_keys, layer_label, unpack_weights
from .conv import channels_first, single_int
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
