"""Converters for Keras merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum,
Concatenate and Dot. None of them has weights.

Mask handling changed in Keras 3 (OR instead of AND, masked values skipped by Multiply,
Maximum and Minimum), so the rules are picked by the file's ``keras_version``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from torch_lstm_probe.errors import UnsupportedOptionError
from torch_lstm_probe.layers.merge import ConcatenateConfig, DotConfig, MergeConfig

from .common import Context, ModuleSpec, check_keys, layer_label, unpack_weights
from .registry import register
from .spec import LayerSpec

__all__ = ["convert_merge", "convert_concatenate", "convert_dot"]

_OPS = {
    "Add": "add",
    "Subtract": "subtract",
    "Multiply": "multiply",
    "Average": "average",
    "Maximum": "maximum",
    "Minimum": "minimum",
}


def _rules(ctx: Context) -> str:
    return "keras3" if ctx.keras_version.major >= 3 else "keras2"


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@register(*_OPS)
def convert_merge(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras element-wise merges → :class:`torch_lstm_probe.layers.merge.Merge` with ``op`` set."""
    check_keys(layer, ctx, set(), set())
    unpack_weights(layer, ctx, {})
    return ModuleSpec("Merge", MergeConfig(_OPS[layer.class_name], _rules(ctx)))


@register("Concatenate")
def convert_concatenate(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Concatenate`` → :class:`torch_lstm_probe.layers.merge.Concatenate`."""
    check_keys(layer, ctx, {"axis"}, set())
    unpack_weights(layer, ctx, {})
    axis = layer.config.get("axis", -1)
    if not _is_int(axis) or axis == 0:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: axis is {axis!r}. Expected a non-zero integer (axis 0 is the batch)."
        )
    return ModuleSpec("Concatenate", ConcatenateConfig(int(axis), _rules(ctx)))


@register("Dot")
def convert_dot(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Dot`` → :class:`torch_lstm_probe.layers.merge.Dot` (an int ``axes`` applies to both inputs)."""
    check_keys(layer, ctx, {"axes", "normalize"}, set())
    unpack_weights(layer, ctx, {})
    axes = layer.config.get("axes")
    pair = [axes, axes] if _is_int(axes) else axes
    if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(_is_int(a) and a != 0 for a in pair):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: axes is {axes!r}. Expected a non-zero integer or a pair of them "
            "(axis 0 is the batch)."
        )
    config = DotConfig((int(pair[0]), int(pair[1])), bool(layer.config.get("normalize", False)), _rules(ctx))
    return ModuleSpec("Dot", config)
