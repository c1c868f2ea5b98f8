"""Converters for Keras image layers that resize or crop at inference: ``Resizing``, ``CenterCrop``.

Neither has weights. ``Resizing`` is reproduced for ``interpolation`` "bilinear" and "nearest"
without antialiasing or padding to the aspect ratio; other settings are refused.
"""

from __future__ import annotations

from torch_lstm_probe.errors import UnsupportedOptionError
from torch_lstm_probe.layers.image import RESIZE_METHODS, CenterCropConfig, ResizingConfig

from .common import Context, ModuleSpec, check_keys, config_int, layer_label, refuse_unless, unpack_weights
from .registry import register
from .spec import LayerSpec

__all__ = ["convert_center_crop", "convert_resizing"]


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
