"""Builds the runtime model from a ModelSpec: converts every layer, then wires the graph."""

from __future__ import annotations

import dataclasses
import warnings
from functools import partial
from typing import Any, Callable, Mapping

import numpy as np
from torch import nn

from torch_lstm_probe.errors import (
    GraphError,
    KerasFileError,
    TorchLstmProbeError,
    UnsupportedOptionError,
    combine_errors,
)
from torch_lstm_probe.model import KerasModel
from torch_lstm_probe.registry import MODULE_TYPES, build_module

from .call_order import keras3_call_order
from .common import Context, ModuleSpec, layer_label
from .ops import op_template
from .registry import TF_FUNCTION_LAYERS, lookup
from .spec import CallSpec, LayerSpec, ModelSpec, TensorRef

__all__ = ["convert_model", "convert_layer", "CustomConverter"]

CustomConverter = Callable[[dict[str, Any], list[np.ndarray]], nn.Module]

_IGNORED_CALL_KWARGS = ("training",)
# Call keywords that change nothing when None (tf_keras records constants=None on RNN calls).
_NONE_ONLY_CALL_KWARGS = ("constants",)


_MODEL_CLASSES = ("Sequential", "Functional", "Model")


def instantiate(spec: ModuleSpec) -> nn.Module:
    """Builds the runtime module and loads its state_dict strictly.

    Prebuilt ``children`` go to the module's constructor by name; their own weights join the
    state_dict, so the strict load still checks every key.
    """
    if not spec.children:
        module = build_module(spec.type, dataclasses.asdict(spec.config))
        module.load_state_dict(spec.state_dict, strict=True)
        return module
    module = MODULE_TYPES[spec.type](spec.config, **spec.children)
    state = dict(spec.state_dict)
    for name, child in spec.children.items():
        state.update({f"{name}.{key}": value for key, value in child.state_dict().items()})
    module.load_state_dict(state, strict=True)
    return module


def _custom_module(
    layer: LayerSpec, ctx: Context, custom_layers: Mapping[str, CustomConverter] | None
) -> nn.Module | None:
    """The user's module for ``layer`` when custom_layers names its registered or class name."""
    key = next((k for k in (layer.registered_name, layer.class_name) if custom_layers and k in custom_layers), None)
    if not custom_layers or key is None:
        return None
    config = dict(layer.config)
    if layer.class_name in TF_FUNCTION_LAYERS:
        config["call_arguments"] = _tf_function_arguments(layer, ctx)
    module = custom_layers[key](config, [np.array(w) for w in layer.weights])
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"{layer_label(layer, ctx)}: custom_layers[{key!r}] returned a "
            f"{type(module).__name__}. Expected an nn.Module."
        )
    return module


def _tf_function_arguments(layer: LayerSpec, ctx: Context) -> dict[str, Any]:
    """The arguments tf_keras recorded for a TFOpLambda call: ``{"args": [...], "kwargs": {...}}``,
    each tensor written ``{"__tensor__": i}`` for the module's i-th positional input (the graph
    passes the tensors in that order, as for Keras 3 op nodes)."""
    templates = []
    for call in layer.calls:
        args, kwargs = op_template([list(call.args), dict(call.kwargs)], [])
        templates.append({"args": args, "kwargs": kwargs})
    if any(t != templates[0] for t in templates[1:]):
        raise UnsupportedOptionError(
            f"{layer_label(layer, ctx)}: its calls record different arguments, so one custom module cannot "
            "stand for it. Expected a TF function layer called once, as tf_keras creates them."
        )
    return templates[0] if templates else {"args": [], "kwargs": {}}


def _is_nested_model(layer: LayerSpec) -> bool:
    return layer.model is not None and layer.class_name in _MODEL_CLASSES


def _build_inner(
    custom_layers: Mapping[str, CustomConverter] | None, ctx: Context, inner: LayerSpec
) -> nn.Module | None:
    """A wrapper's inner layer as a module: the user's custom one, or a nested model; else None."""
    module = _custom_module(inner, ctx, custom_layers)
    if module is None and inner.model is not None:
        module = convert_model(inner.model, custom_layers, _ctx_for(inner.model))
    return module


def convert_layer(
    layer: LayerSpec, ctx: Context, custom_layers: Mapping[str, CustomConverter] | None = None
) -> tuple[nn.Module, str]:
    """Converts one layer; returns ``(module, call convention)``.

    ``custom_layers`` is consulted for the layer itself, and, through ``ctx.build_inner``, for
    the layer a wrapper (TimeDistributed, Bidirectional) holds.
    """
    module = _custom_module(layer, ctx, custom_layers)
    if module is not None:
        # A TF function call passes its tensors wherever they appear in its arguments, like an op node.
        return module, ("op" if layer.class_name in TF_FUNCTION_LAYERS else "default")
    if _is_nested_model(layer):
        return convert_model(layer.model, custom_layers, _ctx_for(layer.model)), "default"  # type: ignore[arg-type]
    ctx = dataclasses.replace(ctx, build_inner=partial(_build_inner, custom_layers, ctx))
    spec = lookup(layer, ctx)(layer, ctx)
    if spec.call == "op":
        # An op node's arguments mix tensors and constants: keep them as a template per call.
        if len(layer.calls) != 1:
            raise UnsupportedOptionError(f"{layer_label(layer, ctx)}: an op node must be called exactly once.")
        tensors: list[TensorRef] = []
        args = op_template(list(layer.calls[0].args), tensors)
        kwargs = op_template(dict(layer.calls[0].kwargs), tensors)
        spec.config = dataclasses.replace(spec.config, args=args, params={**spec.config.params, **kwargs})
    return instantiate(spec), spec.call


def _ctx_for(spec: ModelSpec) -> Context:
    batch = None
    if spec.inputs and spec.inputs[0].shape:
        batch = spec.inputs[0].shape[0]
    return Context(spec.source, spec.keras_version, spec.library, batch)


def _refs(value: Any, where: str) -> list[Any]:
    """Runtime form of a call argument: a ref list, or a list of ref lists."""
    if isinstance(value, TensorRef):
        return value.as_list()
    if isinstance(value, (list, tuple)):
        return [_refs(v, where) for v in value]
    raise UnsupportedOptionError(f"{where}: call argument {value!r} is not a tensor. Expected layer outputs only.")


def _flat_tensors(value: Any) -> list[TensorRef]:
    if isinstance(value, TensorRef):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flat_tensors(v)]
    return []


_ATTENTION_FLAGS = ("return_attention_scores", "use_causal_mask")


def _attention_inputs(args: list[Any], kwargs: dict[str, Any], where: str) -> tuple[list[Any], dict[str, bool]]:
    """``[query, value(, key)]`` and the constant flags of an attention call, popped from ``kwargs``.

    ``Attention([q, v, k])`` passes a list; ``MultiHeadAttention(q, v, key=k)`` positional
    arguments or keywords (tf_keras records ``value`` and ``key`` as keywords).
    """
    first = args[0]
    tensors = list(first) if isinstance(first, (list, tuple)) else [first, *[a for a in args[1:] if a is not None]]
    for name in ("value", "key"):
        value = kwargs.pop(name, None)
        if value is not None:
            tensors.append(value)
    for name in ("query_mask", "value_mask", "key_mask", "attention_mask"):
        if kwargs.pop(name, None) is not None:
            raise UnsupportedOptionError(
                f"{where}: a call passes {name} explicitly, which the converter does not reproduce (the masks of "
                "the query, value and key tensors, e.g. from Embedding(mask_zero=True), are). Fix: mask the inputs "
                "with Masking or Embedding(mask_zero=True) instead."
            )
    flags = {}
    for name in _ATTENTION_FLAGS:
        value = kwargs.pop(name, False)
        if not isinstance(value, bool):
            raise UnsupportedOptionError(f"{where}: call argument {name}={value!r}. Expected True or False.")
        if value:
            flags[name] = True
    if not 2 <= len(tensors) <= 3:
        raise UnsupportedOptionError(
            f"{where}: an attention call on {len(tensors)} tensor(s). Expected [query, value] or [query, value, key]."
        )
    return tensors, flags


def _wire_call(layer: LayerSpec, call: CallSpec, convention: str, ctx: Context) -> dict[str, Any]:
    where = layer_label(layer, ctx)
    args = list(call.args)
    kwargs = dict(call.kwargs)
    for key in _IGNORED_CALL_KWARGS:
        kwargs.pop(key, None)
    for key in _NONE_ONLY_CALL_KWARGS:
        if key in kwargs and kwargs[key] is None:
            del kwargs[key]
    if not args:
        raise GraphError(f"{where}: a call of this layer has no input tensors.")
    node_kwargs: dict[str, Any] = {}
    if convention == "op":
        tensors: list[TensorRef] = []
        op_template([list(call.args), dict(call.kwargs)], tensors)
        return {"layer": layer.name, "inputs": [t.as_list() for t in tensors], "kwargs": {}}
    if convention == "attention":
        inputs, flags = _attention_inputs(args, kwargs, where)
        node_kwargs.update(flags)
    elif convention == "rnn":
        tensors = _flat_tensors(args[0]) if isinstance(args[0], (list, tuple)) else [args[0]]
        inputs = [tensors[0]]
        states = tensors[1:]  # Keras 1/2 pass initial states as extra inputs
        if len(args) > 1 and args[1] is not None:
            states = _flat_tensors(args[1])
        if kwargs.get("initial_state") is not None:
            states = _flat_tensors(kwargs.pop("initial_state"))
        kwargs.pop("initial_state", None)
        if states:
            node_kwargs["initial_state"] = [s.as_list() for s in states]
        if ctx.keras_version.major >= 3:
            # Keras 3 (Layer.__call__) passes the automatic mask only to a call with exactly one
            # tensor argument; mask=None counts as no mask. A call with initial_state tensors
            # therefore runs unmasked, yet its output mask still comes from its input's mask.
            # Keras 1/2 pass the mask to every call, and an explicit mask=None means none.
            mask = kwargs.pop("mask", None)
            tensor_arguments = sum(1 for value in (*call.args, *call.kwargs.values()) if _flat_tensors(value))
            if mask is not None:
                node_kwargs["mask"] = _refs(mask, where)
            elif tensor_arguments > 1:
                node_kwargs["apply_mask"] = False
    else:
        if len([a for a in args[1:] if a is not None]) > 0:
            raise UnsupportedOptionError(f"{where}: a call passes extra positional arguments {args[1:]!r}.")
        first = args[0]
        inputs = _flat_tensors(first) if isinstance(first, (list, tuple)) else [first]
        if not all(isinstance(t, TensorRef) for t in inputs):
            raise UnsupportedOptionError(f"{where}: call argument {first!r} is not a tensor.")
    if "mask" in kwargs:
        # An explicit mask=None means "no mask" in Keras 1/2; Keras 3's Layer.__call__ treats it as
        # absent and passes the automatic mask of a one-tensor call.
        mask = kwargs.pop("mask")
        if mask is not None:
            node_kwargs["mask"] = _refs(mask, where)
        elif ctx.keras_version.major < 3:
            node_kwargs["mask"] = None
    if kwargs:
        raise UnsupportedOptionError(
            f"{where}: a call of this layer passes keyword argument(s) {sorted(kwargs)}, which the converter "
            f"does not reproduce. Received: {kwargs!r}."
        )
    bad = [t for t in inputs if not isinstance(t, TensorRef)]
    if bad:
        raise GraphError(f"{where}: call argument {_short(bad[0])} is not a tensor. Expected layer outputs only.")
    return {"layer": layer.name, "inputs": [t.as_list() for t in inputs], "kwargs": node_kwargs}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def convert_model(
    spec: ModelSpec,
    custom_layers: Mapping[str, CustomConverter] | None = None,
    ctx: Context | None = None,
) -> KerasModel:
    """Converts every layer of ``spec`` and returns the runtime graph model.

    All layer errors are collected first, so one exception lists every layer that fails.
    """
    ctx = ctx or _ctx_for(spec)
    modules: dict[str, nn.Module] = {}
    conventions: dict[str, str] = {}
    errors: list[TorchLstmProbeError] = []
    for layer in spec.layers:
        try:
            modules[layer.name], conventions[layer.name] = convert_layer(layer, ctx, custom_layers)
        except TorchLstmProbeError as err:
            errors.append(err)
        except _CONFIG_READ_ERRORS as err:
            if _is_custom(layer, custom_layers):
                raise  # the user's converter failed: their exception, untouched
            errors.append(_unreadable_config(layer, ctx, err))
    _warn_low_precision(spec)
    if errors:
        # One exception for all: it is an instance of every kind present (see combine_errors).
        raise combine_errors(errors, f"{len(errors)} layers cannot be converted:")
    offsets, output_offsets = _node_offsets(spec, ctx)
    nodes = []
    for layer in spec.layers:
        for call in layer.calls:
            try:
                nodes.append(_wire_call(layer, _renumber_call(call, offsets), conventions[layer.name], ctx))
            except TorchLstmProbeError:
                raise
            except _CONFIG_READ_ERRORS as err:
                raise GraphError(
                    f"{layer_label(layer, ctx)}: a call of this layer cannot be read ({type(err).__name__}: {err}). "
                    "The file's graph is damaged."
                ) from err
    outputs = [_renumber(r, output_offsets).as_list() for r in spec.outputs]
    if ctx.keras_version.major >= 3 and any(layer.class_name == "MultiHeadAttention" for layer in spec.layers):
        # Its calls delete the masks of the tensors they read: later readers must come later.
        nodes = [nodes[k] for k in keras3_call_order(nodes, outputs)]
    config = {
        "name": spec.name,
        "inputs": [
            {"name": i.name, "shape": list(i.shape) if i.shape is not None else None, "dtype": i.dtype}
            for i in spec.inputs
        ],
        "layers": [{"name": layer.name, "type": None, "config": None} for layer in spec.layers],
        "nodes": nodes,
        "outputs": outputs,
    }
    try:
        return KerasModel(config, modules)
    except GraphError as err:
        if str(err).startswith(spec.source):
            raise
        raise GraphError(f"{spec.source}: {err}") from err


# What a converter raises when a config value has a type or size it did not expect.
_CONFIG_READ_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, ZeroDivisionError)


def _is_custom(layer: LayerSpec, custom_layers: Mapping[str, CustomConverter] | None) -> bool:
    """Whether the user's code converts ``layer`` or the layer a wrapper of it holds."""
    if not custom_layers:
        return False
    names: list[Any] = [layer.registered_name, layer.class_name]
    config = layer.config if isinstance(layer.config, Mapping) else {}
    for key in ("layer", "backward_layer"):  # TimeDistributed / Bidirectional: see convert_layer
        inner = config.get(key)
        if isinstance(inner, Mapping):
            class_name = str(inner.get("class_name"))
            names += [inner.get("registered_name"), class_name, class_name.rsplit(">", 1)[-1]]
    return any(isinstance(k, str) and k in custom_layers for k in names)


def _unreadable_config(layer: LayerSpec, ctx: Context, err: Exception) -> KerasFileError:
    """A typed error for a layer whose config a converter could not read (a value of the wrong type or size)."""
    wrapped = KerasFileError(
        f"{layer_label(layer, ctx)}: the layer config cannot be read ({type(err).__name__}: {err}). A value has a "
        "type or size Keras never writes for this class: the file is damaged, or comes from a Keras version this "
        "converter does not know. Fix: re-save the model with Keras, or convert the layer with custom_layers."
    )
    wrapped.__cause__ = err
    return wrapped


_LOW_PRECISION = ("mixed_float16", "mixed_bfloat16", "float16", "bfloat16", "half")


def _warn_low_precision(spec: ModelSpec) -> None:
    """Keras layers with a float16/bfloat16 dtype policy compute in that precision; the converted
    model computes in its own dtype (float32 by default), so results differ from Keras by that
    rounding. Say so rather than differ silently."""
    names = []
    for layer in spec.layers:
        dtype = layer.config.get("dtype") if isinstance(layer.config, Mapping) else None
        if isinstance(dtype, Mapping):
            policy = dtype.get("config")
            dtype = policy.get("name") if isinstance(policy, Mapping) else None
        if isinstance(dtype, str) and dtype in _LOW_PRECISION:
            names.append(f"{layer.name} ({dtype})")
    if names:
        warnings.warn(
            f"{spec.source}: layers {', '.join(names)} compute in reduced precision in Keras. The converted "
            "model computes in its own dtype (float32 by default), so its outputs differ from Keras' by that "
            "rounding (typically 1e-3).",
            stacklevel=3,
        )


def _node_offsets(spec: ModelSpec, ctx: Context) -> tuple[dict[str, int], dict[str, int]]:
    """How far the config's node indices of each nested model are shifted, in the layers' calls
    and in the model's ``output_layers``; subtracting them gives the call index.

    ===========================  ==========================  ===============================
    writer                       inbound nodes (calls)       ``output_layers``
    ===========================  ==========================  ===============================
    Keras 1/2, tf.keras,         +1 for a nested Functional  same as the calls
    tf_keras                     or a Sequential that starts
                                 with an InputLayer
    Keras 3 (``.keras``, h5)     none: 0 is the first call   +1 for a nested Functional,
                                                             none for a Sequential
    ===========================  ==========================  ===============================

    Keras 2 counts the built-in node that links a nested network's inputs to its outputs in
    both places. Keras 3 (``serialize_node`` in ``functional.py``) counts only the calls inside
    the outer model for inbound nodes, but still numbers ``output_layers`` of a Functional from 1
    and subtracts 1 when loading them.
    """
    shifted = {layer.name: 1 for layer in spec.layers if _skips_first_node(layer, ctx)}
    if ctx.keras_version.major >= 3:
        return {}, shifted
    return shifted, shifted


def _skips_first_node(layer: LayerSpec, ctx: Context) -> bool:
    """Whether the config's node indices of a nested model count a built-in first node.

    A nested Functional model starts with a node linking its own inputs to its outputs, so its
    first call is node 1 (in Keras 3 only in ``output_layers``, see :func:`_node_offsets`).
    Keras 1/2 do the same for a nested Sequential that has an input layer: an explicit one
    (tf.keras, tf_keras), or the implicit ``<first layer>_input`` that Keras <= 2.2 creates from
    the first layer's ``batch_input_shape`` without writing it to the config (tf_keras reads
    such files by the same rule). Keras 3 Sequential models do not.
    """
    if not _is_nested_model(layer):
        return False
    if layer.class_name in ("Functional", "Model"):
        return True
    if ctx.keras_version.major >= 3:
        return False
    entries = layer.config.get("layers", []) if isinstance(layer.config, Mapping) else []
    first = entries[0] if isinstance(entries, (list, tuple)) and entries else None
    if not isinstance(first, Mapping):
        return False
    first_config = first.get("config")
    implicit_input = isinstance(first_config, Mapping) and first_config.get("batch_input_shape") is not None
    return first.get("class_name") == "InputLayer" or implicit_input


def _renumber(ref: TensorRef, offsets: Mapping[str, int]) -> TensorRef:
    shift = offsets.get(ref.layer, 0)
    return TensorRef(ref.layer, ref.node - shift, ref.index) if shift else ref


def _renumber_value(value: Any, offsets: Mapping[str, int]) -> Any:
    if isinstance(value, TensorRef):
        return _renumber(value, offsets)
    if isinstance(value, tuple):
        return tuple(_renumber_value(v, offsets) for v in value)
    if isinstance(value, list):
        return [_renumber_value(v, offsets) for v in value]
    if isinstance(value, dict):
        return {k: _renumber_value(v, offsets) for k, v in value.items()}
    return value


def _renumber_call(call: CallSpec, offsets: Mapping[str, int]) -> CallSpec:
    if not offsets:
        return call
    return CallSpec(_renumber_value(call.args, offsets), _renumber_value(dict(call.kwargs), offsets))
