"""Converters for Keras image layers that resize or crop at inference: ``Resizing``, ``CenterCrop``,
``RandomCrop``.

Neither has weights. ``Resizing`` is reproduced for ``interpolation`` "bilinear" and "nearest"
without antialiasing or padding to the aspect ratio; other settings are refused. Keras 3's
``AutoContrast`` rescales values at inference; ``Solarization`` and ``Equalization`` are the
identity there (they transform with ``training=True`` only). Keras 3's
``ContrastLimitedAdaptiveHistogramEqualization`` equalizes tile histograms at inference.
"""

from __future__ import annotations

import math

from torch_lstm_probe.errors import UnsupportedOptionError
from torch_lstm_probe.layers.core import DropoutConfig
from torch_lstm_probe.layers.image import (
    RESIZE_METHODS,
    AutoContrastConfig,
    CenterCropConfig,
    ContrastLimitedAdaptiveHistogramEqualizationConfig,
    RandomCropConfig,
    ResizingConfig,
)

from .common import Context, ModuleSpec, check_keys, config_int, layer_label, refuse_unless, unpack_weights
from .registry import register
from .spec import LayerSpec

__all__ = [
    "convert_auto_contrast",
    "convert_center_crop",
    "convert_clahe",
    "convert_inference_identity_image",
    "convert_random_crop",
    "convert_resizing",
]


def _channels_first(layer: LayerSpec, ctx: Context) -> bool:
    value = refuse_unless(layer, ctx, "data_format", [None, "channels_last", "channels_first"])
    return value == "channels_first"


@register("Resizing")
def convert_resizing(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``Resizing`` → :class:`torch_lstm_probe.layers.image.Resizing`.

    ``fill_mode`` and ``fill_value`` only act with ``pad_to_aspect_ratio``, which is refused.
    """
    cfg = layer.config
    check_keys(
        layer,
        ctx,
        {"height", "width", "interpolation", "crop_to_aspect_ratio", "pad_to_aspect_ratio", "antialias", "data_format"},
        {"fill_mode", "fill_value"},
    )
    unpack_weights(layer, ctx, {})
    interpolation = cfg.get("interpolation", "bilinear")
    if interpolation not in RESIZE_METHODS:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key 'interpolation' is {interpolation!r}, which is not reproduced. "
            f"Expected one of {list(RESIZE_METHODS)}. Fix: resize with 'bilinear' or 'nearest'."
        )
    refuse_unless(layer, ctx, "antialias", [False], "Antialiased resizing is not reproduced.")
    refuse_unless(layer, ctx, "pad_to_aspect_ratio", [False], "Padding to the aspect ratio is not reproduced.")
    config = ResizingConfig(
        height=config_int(layer, ctx, "height"),
        width=config_int(layer, ctx, "width"),
        interpolation=str(interpolation),
        crop_to_aspect_ratio=bool(cfg.get("crop_to_aspect_ratio", False)),
        channels_first=_channels_first(layer, ctx),
        crop_at_least_one=ctx.keras_version.major >= 3,
    )
    return ModuleSpec("Resizing", config)


@register("CenterCrop")
def convert_center_crop(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``CenterCrop`` → :class:`torch_lstm_probe.layers.image.CenterCrop`."""
    check_keys(layer, ctx, {"height", "width", "data_format"}, set())
    unpack_weights(layer, ctx, {})
    config = CenterCropConfig(
        height=config_int(layer, ctx, "height"),
        width=config_int(layer, ctx, "width"),
        channels_first=_channels_first(layer, ctx),
        crop_at_least_one=ctx.keras_version.major >= 3,
    )
    return ModuleSpec("CenterCrop", config)


@register("RandomCrop")
def convert_random_crop(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras ``RandomCrop`` at inference → :class:`torch_lstm_probe.layers.image.RandomCrop`: tf_keras
    crops to the target aspect ratio and resizes bilinearly (``smart_resize``); Keras 3 returns the
    images unchanged. ``seed`` only drives the training-time crop."""
    check_keys(layer, ctx, {"height", "width", "data_format"}, {"seed", "rng_type", "force_generator"})
    unpack_weights(layer, ctx, {})
    config = RandomCropConfig(
        height=config_int(layer, ctx, "height"),
        width=config_int(layer, ctx, "width"),
        channels_first=_channels_first(layer, ctx),
        smart_resize=ctx.keras_version.major < 3,
    )
    return ModuleSpec("RandomCrop", config)


def _value_range(layer: LayerSpec, ctx: Context) -> tuple[float, float]:
    """``value_range`` as ``(low, high)`` with ``low < high`` (Keras sorts the pair)."""
    value = layer.config.get("value_range", (0, 255))
    ok = isinstance(value, (list, tuple)) and len(value) == 2
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not ok or not min(value) < max(value):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: config key 'value_range' is {value!r}. "
            "Expected two finite numbers (low, high) with low < high."
        )
    return float(min(value)), float(max(value))


@register("AutoContrast")
def convert_auto_contrast(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras 3 ``AutoContrast`` → :class:`torch_lstm_probe.layers.image.AutoContrast` (it acts at inference).

    Keras reduces axes 1 and 2 of the input whatever ``data_format`` says, so ``data_format`` is read
    and left out of the computation, as in Keras.
    """
    check_keys(layer, ctx, {"value_range", "data_format"}, {"bounding_box_format"})
    unpack_weights(layer, ctx, {})
    refuse_unless(layer, ctx, "data_format", [None, "channels_last", "channels_first"])
    return ModuleSpec("AutoContrast", AutoContrastConfig(_value_range(layer, ctx)))


def _refuse(layer: LayerSpec, ctx: Context, key: str, expected: str) -> None:
    raise UnsupportedOptionError(
        f"{layer_label(layer, ctx)}: config key {key!r} is {layer.config.get(key)!r}, which is not reproduced. "
        f"Expected {expected}."
    )


@register("ContrastLimitedAdaptiveHistogramEqualization")
def convert_clahe(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras 3 ``ContrastLimitedAdaptiveHistogramEqualization`` →
    :class:`torch_lstm_probe.layers.image.ContrastLimitedAdaptiveHistogramEqualization` (it acts at inference).

    Keras uses ``value_range`` as given (unsorted), so a pair with ``low >= high`` is refused.
    """
    cfg = layer.config
    check_keys(layer, ctx, {"value_range", "clip_limit", "tile_grid_size", "data_format"}, {"bounding_box_format"})
    unpack_weights(layer, ctx, {})
    value = cfg.get("value_range", (0, 255))
    ok = isinstance(value, (list, tuple)) and len(value) == 2
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not ok or not value[0] < value[1]:
        _refuse(layer, ctx, "value_range", "two finite numbers (low, high) with low < high")
    clip = cfg.get("clip_limit", 4.0)
    if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not math.isfinite(clip):
        _refuse(layer, ctx, "clip_limit", "a finite number")
    grid = cfg.get("tile_grid_size", (8, 8))
    ok = isinstance(grid, (list, tuple)) and len(grid) == 2
    if not ok or not all(isinstance(g, int) and not isinstance(g, bool) and 1 <= g <= 2**16 for g in grid):
        _refuse(layer, ctx, "tile_grid_size", "two positive ints (rows, columns)")
    config = ContrastLimitedAdaptiveHistogramEqualizationConfig(
        value_range=(float(value[0]), float(value[1])),
        clip_limit=float(clip),
        tile_grid_size=(int(grid[0]), int(grid[1])),
        channels_first=_channels_first(layer, ctx),
    )
    return ModuleSpec("ContrastLimitedAdaptiveHistogramEqualization", config)


@register("Solarization", "Equalization")
def convert_inference_identity_image(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """Keras 3 ``Solarization`` and ``Equalization`` → the identity: both transform only with
    ``training=True`` and return the (float) images unchanged at inference."""
    check_keys(
        layer,
        ctx,
        {"value_range", "data_format"},
        {"addition_factor", "threshold_factor", "seed", "bins", "bounding_box_format"},
    )
    unpack_weights(layer, ctx, {})
    _value_range(layer, ctx)
    return ModuleSpec("Dropout", DropoutConfig(0.0))
