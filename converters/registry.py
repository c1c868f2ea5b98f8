"""The one registry: Keras class name → converter. Filled explicitly; duplicates are errors."""

from __future__ import annotations

from typing import Callable

from torch_lstm_probe.errors import UnsupportedLayerError

from .common import Context, ModuleSpec, layer_label
from .spec import LayerSpec

__all__ = ["Converter", "CONVERTERS", "register", "lookup", "supported_classes"]

Converter = Callable[[LayerSpec, Context], ModuleSpec]

CONVERTERS: dict[str, Converter] = {}

_CODE_LAYERS = ("Lambda", "TFOpLambda", "SlicingOpLambda")


def register(*class_names: str) -> Callable[[Converter], Converter]:
    """Decorator: registers a converter for one or more Keras class names."""

    def wrap(fn: Converter) -> Converter:
        for name in class_names:
            if name in CONVERTERS:
                raise RuntimeError(f"Keras class {name!r} has two converters: {CONVERTERS[name].__name__} and {fn.__name__}.")
            CONVERTERS[name] = fn
        return fn

    return wrap


def supported_classes() -> list[str]:
    return sorted(CONVERTERS)


def lookup(layer: LayerSpec, ctx: Context) -> Converter:
    """The converter for ``layer.class_name``; an unknown class raises UnsupportedLayerError."""
    from .ops import convert_op, is_op_node

    if is_op_node(layer):
        return convert_op
    fn = CONVERTERS.get(layer.class_name)
    if fn is not None:
        return fn
    hint = (
        f"custom_layers={{'{layer.class_name}': converter}} in tlp.load_keras, where converter(config, weights) "
        "returns an nn.Module"
    )
    if layer.class_name in _CODE_LAYERS:
        raise UnsupportedLayerError(
            f"{layer_label(layer, ctx)} holds Python code, and this loader never executes code from a file. "
            f"Fix: reimplement it and pass {hint}."
        )
    raise UnsupportedLayerError(
        f"{layer_label(layer, ctx)}: no converter for Keras class {layer.class_name!r}. "
        f"Supported classes: {', '.join(supported_classes())}. Fix: pass {hint}."
    )
