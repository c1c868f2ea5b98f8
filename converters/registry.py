"""The one registry: Keras class name → converter. Filled explicitly; duplicates are errors."""

from __future__ import annotations

from typing import Callable

from torch_lstm_probe.errors import UnsupportedLayerError

from .common import Context, ModuleSpec, layer_label
from .spec import LayerSpec

__all__ = ["Converter", "CONVERTERS", "TF_FUNCTION_LAYERS", "register", "lookup", "supported_classes"]

Converter = Callable[[LayerSpec, Context], ModuleSpec]

CONVERTERS: dict[str, Converter] = {}

# Layers that carry code or another framework's model instead of Keras weights and config.
_CODE_LAYERS = {
    "Lambda": "holds Python code",
    "TFSMLayer": "runs a TensorFlow SavedModel",
    "TorchModuleWrapper": "holds a pickled PyTorch module",
    "JaxLayer": "holds JAX code",
    "FlaxLayer": "holds a Flax module",
    "DenseFeatures": "runs TensorFlow feature columns",
}
# tf_keras records a TensorFlow function called on Keras tensors (tf.transpose(x), x * 2, x[:, 0])
# as one of these layers, naming the function in config["function"].
TF_FUNCTION_LAYERS = ("TFOpLambda", "SlicingOpLambda")


def register(*class_names: str) -> Callable[[Converter], Converter]:
    """Decorator: registers a converter for one or more Keras class names."""

    def wrap(fn: Converter) -> Converter:
        for name in class_names:
            if name in CONVERTERS:
                raise RuntimeError(
                    f"Keras class {name!r} has two converters: {CONVERTERS[name].__name__} and {fn.__name__}."
                )
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
    if layer.class_name in TF_FUNCTION_LAYERS:
        function = str(layer.config.get("function", "?"))[:100]
        raise UnsupportedLayerError(
            f"{layer_label(layer, ctx)} is a call of the TensorFlow function tf.{function}, which tf_keras "
            "recorded in the graph; this loader runs no TensorFlow code. Fix: replace the call with a Keras layer "
            "(e.g. Permute, Reshape, Multiply, Add) and save the model again, or pass "
            f"custom_layers={{'{layer.class_name}': converter}} in tlp.load_keras, where converter(config, weights) "
            "returns an nn.Module: config['function'] names the function and config['call_arguments'] holds the "
            "recorded args and kwargs, each tensor written {'__tensor__': i} for the module's i-th positional input."
        )
    if layer.class_name in _CODE_LAYERS:
        raise UnsupportedLayerError(
            f"{layer_label(layer, ctx)} {_CODE_LAYERS[layer.class_name]}, and this loader never executes code from "
            f"a file. Fix: reimplement it and pass {hint}."
        )
    raise UnsupportedLayerError(
        f"{layer_label(layer, ctx)}: no converter for Keras class {layer.class_name!r}. "
        f"Supported classes: {', '.join(supported_classes())}. Fix: pass {hint}."
    )
