"""Converters for Keras 3 op nodes (``keras.src.ops.*`` classes in functional configs).

Op classes share names with layers (``Add``, ``Concatenate``, ``Reshape`` …), so they live in
their own table, looked up when the config's ``module`` is a ``keras.src.ops`` module. Each
entry gives the runtime op and the config keys passed on as constant parameters.
"""

from __future__ import annotations

from typing import Any

from torch_lstm_probe.errors import UnsupportedLayerError, UnsupportedOptionError
from torch_lstm_probe.layers.ops import OpConfig

from .common import Context, ModuleSpec, layer_label
from .spec import LayerSpec, TensorRef

__all__ = ["OP_TABLE", "is_op_node", "convert_op", "op_template"]

# Keras op class -> (runtime op, {keras config key: runtime param name})
OP_TABLE: dict[str, tuple[str, dict[str, str]]] = {
    "NotEqual": ("not_equal", {}),
    "Equal": ("equal", {}),
    "Greater": ("greater", {}),
    "GreaterEqual": ("greater_equal", {}),
    "Less": ("less", {}),
    "LessEqual": ("less_equal", {}),
    "LogicalAnd": ("logical_and", {}),
    "LogicalOr": ("logical_or", {}),
    "LogicalNot": ("logical_not", {}),
    "Add": ("add", {}),
    "Subtract": ("subtract", {}),
    "Multiply": ("multiply", {}),
    "Divide": ("divide", {}),
    "TrueDivide": ("divide", {}),
    "Power": ("power", {}),
    "Maximum": ("maximum", {}),
    "Minimum": ("minimum", {}),
    "Matmul": ("matmul", {}),
    "Negative": ("negative", {}),
    "Absolute": ("abs", {}),
    "Abs": ("abs", {}),
    "Exp": ("exp", {}),
    "Log": ("log", {}),
    "Sqrt": ("sqrt", {}),
    "Square": ("square", {}),
    "Tanh": ("tanh", {}),
    "Sigmoid": ("sigmoid", {}),
    "Relu": ("relu", {}),
    "Softmax": ("softmax", {"axis": "axis"}),
    "Any": ("any", {"axis": "axis", "keepdims": "keepdims"}),
    "All": ("all", {"axis": "axis", "keepdims": "keepdims"}),
    "Mean": ("mean", {"axis": "axis", "keepdims": "keepdims"}),
    "Sum": ("sum", {"axis": "axis", "keepdims": "keepdims"}),
    "Max": ("max", {"axis": "axis", "keepdims": "keepdims"}),
    "Min": ("min", {"axis": "axis", "keepdims": "keepdims"}),
    "Cast": ("cast", {"dtype": "dtype"}),
    "ConvertToTensor": ("convert_to_tensor", {"dtype": "dtype"}),
    "ExpandDims": ("expand_dims", {"axis": "axis"}),
    "Squeeze": ("squeeze", {"axis": "axis"}),
    "Reshape": ("reshape", {"newshape": "newshape"}),
    "Transpose": ("transpose", {"axes": "axes"}),
    "Concatenate": ("concatenate", {"axis": "axis"}),
    "Stack": ("stack", {"axis": "axis"}),
    "GetItem": ("get_item", {}),
    "ZerosLike": ("zeros_like", {}),
    "OnesLike": ("ones_like", {}),
    "Where": ("where", {}),
    "Clip": ("clip", {"x_min": "x_min", "x_max": "x_max"}),
}

# Config keys of op nodes that change nothing.
_OP_IGNORED = {"name", "dtype"}
# Keys accepted only at their default value (anything else would change the result).
_OP_DEFAULT_ONLY = {"initial": None, "sparse": None, "ragged": None}


def is_op_node(layer: LayerSpec) -> bool:
    return str(layer.module or "").startswith("keras.src.ops")


def op_template(value: Any, tensors: list[TensorRef]) -> Any:
    """The JSON-able argument template of an op call; collects its tensors in order."""
    if isinstance(value, TensorRef):
        tensors.append(value)
        return {"__tensor__": len(tensors) - 1}
    if isinstance(value, dict) and value.get("class_name") == "__slice__":
        cfg = value.get("config", {})
        return {"__slice__": [cfg.get("start"), cfg.get("stop"), cfg.get("step")]}
    if isinstance(value, dict):
        return {k: op_template(v, tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [op_template(v, tensors) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise UnsupportedOptionError(f"op argument {value!r} of type {type(value).__name__} is not supported.")


def convert_op(layer: LayerSpec, ctx: Context) -> ModuleSpec:
    """A Keras 3 op node → :class:`torch_lstm_probe.layers.ops.Op` (arguments wired by build)."""
    entry = OP_TABLE.get(layer.class_name)
    if entry is None:
        raise UnsupportedLayerError(
            f"{layer_label(layer, ctx)}: the functional config calls the Keras op {layer.module}.{layer.class_name}, "
            f"which this converter does not reproduce. Supported ops: {', '.join(sorted(OP_TABLE))}. Fix: express "
            "it with supported ops or layers, or pass custom_layers={%r: converter}." % layer.class_name
        )
    op, keys = entry
    unknown = sorted(
        k
        for k in set(layer.config) - set(keys) - _OP_IGNORED
        if not (k in _OP_DEFAULT_ONLY and layer.config[k] == _OP_DEFAULT_ONLY[k])
    )
    if unknown:
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: op config key(s) {unknown} are not supported. Received: "
            f"{ {k: layer.config[k] for k in unknown} }. Expected keys among: {sorted(keys)}."
        )
    params = {runtime: layer.config[key] for key, runtime in keys.items() if key in layer.config}
    return ModuleSpec("Op", OpConfig(op=op, args=[], params=params), call="op")
