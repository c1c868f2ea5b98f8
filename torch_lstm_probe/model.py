"""The graph executor: runs a converted Keras Sequential or Functional graph of named modules.

A model is ``(config, state_dict)``. The config is plain JSON::

    {"name": "model",
     "inputs":  [{"name": "input_1", "shape": [null, 4], "dtype": "int32"}],
     "layers":  [{"name": "lstm", "type": "LSTM", "config": {...}}, ...],
     "nodes":   [{"layer": "lstm", "inputs": [["embedding", 0, 0]],
                  "kwargs": {"initial_state": [["enc", 0, 1], ["enc", 0, 2]]}}, ...],
     "outputs": [["dense", 0, 0]]}

A tensor reference ``[layer, call, index]`` is the ``index``-th output of the ``call``-th call
of ``layer`` (model inputs are ``[input_name, 0, 0]``). Nodes are stored in execution order;
the n-th node of a layer is its call n. Every layer is a submodule named by its Keras name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .errors import GraphError, InputError, TorchLstmProbeError
from .layers.text import as_string_array
from .registry import build_module, module_type_name, register_module

__all__ = ["KerasModel", "Ref"]

Ref = tuple[str, int, int]

_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64", "half", "float", "double")
# The load-time shape check: lengths tried for free (None) axes, and the largest input it builds
# with a non-empty batch (an empty batch allocates nothing).
_DRY_RUN_STEPS = (8, 1, 64)
_DRY_RUN_MAX_ELEMENTS = 1 << 20
_DRY_RUN_MAX_STEPS = 1024  # longest axis between batch and features a layer gets in that run (RNNs step through it)
_MAX_DECLARED_SIZE = 2**31 - 1  # the largest size a declared input axis may have
# What a layer raises (beyond our own errors) when its input does not fit it, e.g. a torch shape error.
_LAYER_FAILURES = (RuntimeError, ValueError, IndexError, TypeError, KeyError, AttributeError, ZeroDivisionError)


@dataclass(frozen=True)
class _Node:
    layer: str  # Keras layer name
    call: int  # index of this call among the layer's calls
    inputs: tuple[Ref, ...]  # positional tensor inputs
    kwargs: Mapping[str, Any]  # keyword inputs: refs or lists of refs, or constants (apply_mask=False)


def _ref(value: Any) -> Ref:
    if (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and isinstance(value[2], int)
    ):
        return (value[0], value[1], value[2])
    raise GraphError(f"Malformed tensor reference {value!r}. Expected [layer_name, call_index, tensor_index].")


def _refs_in(value: Any) -> Iterator[Ref]:
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
        yield _ref(value)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _refs_in(item)


def _resolve(value: Any, values: Mapping[Ref, Any]) -> Any:
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
        return values[_ref(value)]
    if not isinstance(value, (list, tuple)):
        return value  # a constant keyword argument, e.g. apply_mask=False
    return [_resolve(v, values) for v in value]


@register_module("Model")
class KerasModel(nn.Module):
    """A converted Keras model: a graph of named PyTorch modules with Keras semantics.

    Call it like the Keras model: inputs in Keras input order as positional arguments, one
    list/tuple, or a dict by input name; numpy arrays or tensors. It returns a tensor, or a
    list for several outputs, on the model's device.

    Example:
        >>> model = tlp.load_keras("model.keras").eval()
        >>> y = model(x)
        >>> model.layer("lstm")          # the nn.Module standing for Keras layer "lstm"
    """

    def __init__(self, config: Mapping[str, Any], modules: Mapping[str, nn.Module] | None = None) -> None:
        super().__init__()
        if not isinstance(config, Mapping):
            raise GraphError(f"A model config must be a JSON object. Received {type(config).__name__}.")
        self.name: str = str(config.get("name", "model"))
        self.keras_name = ""
        # where the model came from (source, keras_version, file_format, library), set by the loader
        self.source_info: dict[str, str] = {}
        self._inputs: list[dict[str, Any]] = [_input_spec(self.name, i) for i in _section(self.name, config, "inputs")]
        self._layer_entries: list[dict[str, Any]] = [
            _layer_entry(self.name, e) for e in _section(self.name, config, "layers")
        ]
        self._outputs: list[Ref] = [_ref(r) for r in _section(self.name, config, "outputs")]
        layer_names = [e["name"] for e in self._layer_entries]
        if len(set(layer_names)) != len(layer_names):
            raise GraphError(f"Model {self.name!r} has duplicate layer names: {layer_names}.")
        for entry in self._layer_entries:
            name = entry["name"]
            module = modules[name] if modules is not None and name in modules else None
            if module is None:
                module = build_module(entry["type"], entry["config"])
            self._add_layer(name, module)
        self._nodes = self._plan(_section(self.name, config, "nodes"))
        self._input_names = [i["name"] for i in self._inputs]
        self._index_inputs = self._find_index_inputs()
        self._check_shapes()

    # ------------------------------------------------------------------ construction
    def _add_layer(self, name: str, module: nn.Module) -> None:
        key = _module_name(name)
        if not name or name in self._declared_input_names() or key in self._modules:
            raise GraphError(f"Layer name {name!r} cannot be used as a module name (empty, an input, or taken).")
        if hasattr(self, key):
            raise GraphError(
                f"Keras layer name {name!r} collides with an attribute of the PyTorch model container. "
                "Fix: rename the layer in Keras before saving."
            )
        self.add_module(key, module)
        _set_keras_names(module, name)

    def _declared_input_names(self) -> set[str]:
        """Input names from the config (usable while the layers are still being added)."""
        return {i["name"] for i in self._inputs}

    def _plan(self, raw_nodes: Sequence[Mapping[str, Any]]) -> list[_Node]:
        calls: dict[str, int] = {}
        nodes: list[_Node] = []
        for raw in raw_nodes:
            if (
                not isinstance(raw, Mapping)
                or not isinstance(raw.get("layer"), str)
                or not isinstance(raw.get("inputs"), (list, tuple))
                or not isinstance(raw.get("kwargs", {}), Mapping)
            ):
                raise GraphError(
                    f"Model {self.name!r}: malformed node {_short(raw)}. Expected "
                    '{"layer": name, "inputs": [[layer, call, index], ...], "kwargs": {...}}.'
                )
            layer = raw["layer"]
            if _module_name(layer) not in self._modules:
                raise GraphError(f"Model {self.name!r}: a node calls unknown layer {layer!r}.")
            call = calls.get(layer, 0)
            calls[layer] = call + 1
            nodes.append(_Node(layer, call, tuple(_ref(r) for r in raw["inputs"]), dict(raw.get("kwargs", {}))))
        # Order the nodes topologically (configs list layers, not calls, in order).
        available = {(i["name"], 0, 0) for i in self._inputs}
        produced_by = {(n.layer, n.call): n for n in nodes}
        ordered: list[_Node] = []
        done: set[tuple[str, int]] = set()

        def needs(node: _Node) -> list[Ref]:
            refs = list(node.inputs)
            for v in node.kwargs.values():
                refs.extend(_refs_in(v))
            return refs

        def producer_of(node: _Node, ref: Ref) -> _Node | None:
            """The node that makes ``ref`` (None for a model input)."""
            if (ref[0], 0, 0) in available and ref[1:] == (0, 0) and _module_name(ref[0]) not in self._modules:
                return None
            producer = produced_by.get((ref[0], ref[1]))
            if producer is None:
                raise GraphError(
                    f"Model {self.name!r}: layer {node.layer!r} reads tensor {list(ref)}, which no input or "
                    "layer call produces."
                )
            return producer

        # Depth-first, with an explicit stack: a graph may be deeper than Python's recursion limit.
        visiting: set[tuple[str, int]] = set()
        for root in nodes:
            if (root.layer, root.call) in done:
                continue
            visiting.add((root.layer, root.call))
            stack: list[tuple[_Node, Iterator[Ref]]] = [(root, iter(needs(root)))]
            while stack:
                node, pending = stack[-1]
                for ref in pending:
                    producer = producer_of(node, ref)
                    if producer is None or (producer.layer, producer.call) in done:
                        continue
                    if (producer.layer, producer.call) in visiting:
                        raise GraphError(f"Model {self.name!r} has a cycle through layer {producer.layer!r}.")
                    visiting.add((producer.layer, producer.call))
                    stack.append((producer, iter(needs(producer))))
                    break
                else:
                    stack.pop()
                    visiting.discard((node.layer, node.call))
                    done.add((node.layer, node.call))
                    ordered.append(node)
        for ref in self._outputs:
            is_input = ref[0] in self._declared_input_names() and ref[1:] == (0, 0)
            if not is_input and (ref[0], ref[1]) not in produced_by:
                raise GraphError(f"Model {self.name!r}: output {list(ref)} is produced by no layer call.")
        return ordered

    def _check_shapes(self) -> None:
        """Runs the graph once on empty inputs of the declared shapes, so that a file whose layers do
        not fit together fails here, at load time, and not at its first forward.

        The run uses a batch of 0 rows, so it allocates nothing however large the declared sizes
        (``RepeatVector(10**9)`` included): every shape check of every layer still runs. Layers that
        cannot take an empty batch (a stateful layer with a fixed batch, a ``time_major`` layer whose
        first axis is time) get one more try with the declared first axis (or 1), if that input is
        small. Free axes (``None``) get a few lengths; a model that fails on all of them loads all
        the same (Keras accepts such graphs and they may fit other lengths) and its forward raises
        an InputError naming the layer. Recurrent kernels step through time even for an empty
        batch, so the run stops unjudged where a layer would get more than ``_DRY_RUN_MAX_STEPS``
        steps; it costs well under a millisecond per layer on short sequences (0.7 ms for the
        bundled example). Custom layers are called once here too.

        Raises:
            GraphError: the declared input shapes do not fit the layers.
        """
        shapes = [spec.get("shape") for spec in self._inputs]
        if not shapes or any(shape is None for shape in shapes):
            return  # ranks unknown: nothing to run
        if self._device_dtype()[0].type == "meta":
            return  # built without memory (a size check before the real build): nothing can run
        free = any(d is None for shape in shapes for d in shape[1:])
        failure: TorchLstmProbeError | None = None
        for steps in _DRY_RUN_STEPS if free else (1,):
            for batch in (0, None):
                inputs = self._dry_inputs(steps, batch)
                if inputs is None:
                    continue
                error = self._dry_run(inputs)
                if error is None:
                    return
                failure = failure or error
        if failure is not None and not free:
            pretty = ", ".join(_pretty_shape(shape) for shape in shapes)
            raise GraphError(
                f"Model {self.name!r}: its layers do not fit together for the input shape(s) the file declares "
                f"({pretty}): {failure}"
            ) from failure

    def _dry_inputs(self, steps: int, batch: int | None) -> list[Any] | None:
        """Zeros (for a text input, the word ``"a"``) of each declared shape: free axes ``steps`` long,
        the first axis ``batch`` rows (``None``: the declared size, or 1); None when that would be more
        than a small input."""
        device, dtype = self._device_dtype()
        shapes = []
        for spec in self._inputs:
            first = spec["shape"][0]
            rows = batch if batch is not None else (first if first is not None else 1)
            shapes.append([rows] + [steps if d is None else d for d in spec["shape"][1:]])
        if batch is None and sum(math.prod(shape) for shape in shapes) > _DRY_RUN_MAX_ELEMENTS:
            return None
        if any(math.prod(shape[1:]) >= 2**62 for shape in shapes):
            raise GraphError(
                f"Model {self.name!r} declares input shapes {', '.join(map(_pretty_shape, shapes))} (None = any size) "
                "with more than 2**62 elements per sample. Expected sizes a tensor can have."
            )
        return [
            np.full(shape, "a", dtype=object)  # text inputs: one short word each
            if _is_text(spec)
            else torch.zeros(shape, device=device, dtype=torch.long if spec["name"] in self._index_inputs else dtype)
            for spec, shape in zip(self._inputs, shapes)
        ]

    def _dry_run(self, inputs: list[torch.Tensor]) -> TorchLstmProbeError | None:
        """Runs the graph on ``inputs`` without gradients, in eval mode; restores modes and carried state.

        Recurrent kernels step through time even for an empty batch, so the run stops (and proves
        nothing) where a layer would get more than ``_DRY_RUN_MAX_STEPS`` steps.
        """
        modes = {module: module.training for module in self.modules()}
        guards = [
            module.register_forward_pre_hook(_limit_steps)
            for module in self.modules()
            if module is not self and not isinstance(module, nn.Identity)  # gate hook points stay unhooked
        ]
        try:
            self.eval()
            with torch.no_grad():
                self.forward(*inputs)
        except TorchLstmProbeError as err:
            return err
        except _TooManySteps:
            return None
        finally:
            for guard in guards:
                guard.remove()
            for module, mode in modes.items():
                module.training = mode
            self.reset_states()
        return None

    def _find_index_inputs(self) -> set[str]:
        """Model inputs that feed only index-reading layers (e.g. Embedding): they stay integer."""
        consumers: dict[str, list[nn.Module]] = {name: [] for name in self._input_names}
        for node in self._nodes:
            for ref in node.inputs:
                if ref[0] in consumers:
                    consumers[ref[0]].append(self._modules[_module_name(node.layer)])
        index_inputs = set()
        for name, mods in consumers.items():
            if mods and all(getattr(m, "takes_indices", False) or _is_index_model(m, 0) for m in mods):
                index_inputs.add(name)
        for spec in self._inputs:
            if not str(spec.get("dtype", "float32")).startswith(("float", "bfloat")) and spec["name"] in consumers:
                index_inputs.add(spec["name"])
        return index_inputs

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> KerasModel:
        return cls(config)

    def get_config(self) -> dict[str, Any]:
        """The JSON-able config; raises TypeError if a layer is a foreign (custom) module."""
        layers = []
        for entry in self._layer_entries:
            module = self._modules[_module_name(entry["name"])]
            type_name = module_type_name(module)  # type: ignore[arg-type]
            if type_name is None:
                raise TypeError(
                    f"Layer {entry['name']!r} is a custom module ({type(module).__name__}) with no saved config. "
                    "Models with custom_layers cannot be saved by tlp.save; save the state_dict instead."
                )
            layers.append({"name": entry["name"], "type": type_name, "config": module.get_config()})  # type: ignore[operator]
        nodes = []
        for node in self._saved_node_order():
            nodes.append({"layer": node.layer, "inputs": [list(r) for r in node.inputs], "kwargs": dict(node.kwargs)})
        return {
            "name": self.name,
            "inputs": [dict(i) for i in self._inputs],
            "layers": layers,
            "nodes": nodes,
            "outputs": [list(r) for r in self._outputs],
        }

    def _saved_node_order(self) -> list[_Node]:
        """The nodes in run order, which a reload keeps (the run order can matter: see
        ``clears_input_masks``), unless it calls a shared layer's calls out of order; a node's call
        index is its rank among the layer's nodes, so then the layer order is used."""
        last: dict[str, int] = {}
        for node in self._nodes:
            if node.call < last.get(node.layer, -1):
                position = {e["name"]: k for k, e in enumerate(self._layer_entries)}
                return sorted(self._nodes, key=lambda n: (position[n.layer], n.call))
            last[node.layer] = node.call
        return list(self._nodes)

    # ------------------------------------------------------------------ public API
    @property
    def layer_names(self) -> list[str]:
        """Keras layer names (input layers excluded), in the order of the Keras config."""
        return [e["name"] for e in self._layer_entries]

    @property
    def input_names(self) -> list[str]:
        return list(self._input_names)

    @property
    def input_specs(self) -> list[dict[str, Any]]:
        """Each input's name, Keras batch shape (``None`` for free axes) and dtype."""
        return [dict(i) for i in self._inputs]

    def dynamic_shapes(self) -> tuple[tuple[dict[int, Any], ...]]:
        """``dynamic_shapes`` for ``torch.export.export(model, args)`` and ``torch.onnx.export``:
        the batch axis is dynamic (one dimension shared by every input whose batch Keras leaves
        free). Other axes keep the traced size: exporting ``nn.LSTM`` unrolls it over time, which
        fixes the number of steps.

        Example:
            >>> program = torch.export.export(model, (x,), dynamic_shapes=model.dynamic_shapes())
        """
        batch = torch.export.Dim("batch")
        return (tuple({0: batch} if spec["shape"][0] is None else {} for spec in self._inputs),)

    @property
    def output_refs(self) -> list[Ref]:
        return list(self._outputs)

    def call_counts(self) -> dict[str, int]:
        """How often each layer is called in one forward pass (shared layers: more than once)."""
        counts: dict[str, int] = {}
        for node in self._nodes:
            counts[node.layer] = counts.get(node.layer, 0) + 1
        return counts

    def layer(self, name: str) -> nn.Module:
        """The module standing for Keras layer ``name``; ``"outer/inner"`` reaches nested models."""
        head, _, rest = name.partition("/")
        module = self._modules.get(_module_name(head))
        if module is None or head in self._input_names:
            raise KeyError(f"Model {self.name!r} has no layer {head!r}. Layers: {', '.join(self.layer_names)}.")
        if rest:
            if not isinstance(module, KerasModel):
                raise KeyError(f"Layer {head!r} is not a nested model, so {name!r} names nothing.")
            return module.layer(rest)
        return module

    def iter_layers(self, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
        """Yields ``(path, module)`` for every layer, nested models' layers included."""
        for entry in self._layer_entries:
            path = prefix + entry["name"]
            module = self._modules[_module_name(entry["name"])]
            yield path, module
            if isinstance(module, KerasModel):
                yield from module.iter_layers(path + "/")

    def reset_states(self) -> None:
        """Zeros the carried state of every stateful layer."""
        for _, module in self.iter_layers():
            if hasattr(module, "reset_states") and not isinstance(module, KerasModel):
                module.reset_states()

    # ------------------------------------------------------------------ running
    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        for p in self.parameters():
            return p.device, p.dtype
        for b in self.buffers():
            if b.is_floating_point():
                return b.device, b.dtype
        return torch.device("cpu"), torch.get_default_dtype()

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
        names = self._input_names
        if kwargs:
            if args:
                raise InputError(f"Model {self.name!r}: pass inputs positionally or by name, not both.")
            given: Any = kwargs
        elif len(args) == 1 and isinstance(args[0], Mapping):
            given = args[0]
        elif len(args) == 1 and isinstance(args[0], (list, tuple)) and len(names) > 1:
            given = list(args[0])
        elif (
            len(args) == 1
            and isinstance(args[0], (list, tuple))
            and len(args[0]) == 1
            and isinstance(args[0][0], (torch.Tensor, np.ndarray))
        ):
            given = list(args[0])  # [x] for a single-input model, as Keras accepts
        else:
            given = list(args)
        if isinstance(given, Mapping):
            unknown = sorted(set(given) - set(names))
            missing = [n for n in names if n not in given]
            if unknown or missing:
                raise InputError(
                    f"Model {self.name!r} takes inputs {names}. Received names {sorted(given)}"
                    + (f"; unknown {unknown}" if unknown else "")
                    + (f"; missing {missing}" if missing else "")
                    + "."
                )
            values = [given[n] for n in names]
        else:
            if len(given) != len(names):
                raise InputError(
                    f"Model {self.name!r} takes {len(names)} input(s) {names}, in this order. Received {len(given)}."
                )
            values = given
        device, dtype = self._device_dtype()
        return [self._prepare(spec, v, device, dtype) for spec, v in zip(self._inputs, values)]

    def _prepare(self, spec: Mapping[str, Any], value: Any, device: torch.device, dtype: torch.dtype) -> Any:
        name = spec["name"]
        if _is_text(spec):
            return self._prepare_text(spec, value)
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf":
                raise InputError(f"Input {name!r} must be numeric. Received a numpy array of dtype {value.dtype}.")
            value = torch.from_numpy(np.ascontiguousarray(value))
        elif not isinstance(value, torch.Tensor):
            try:
                value = torch.as_tensor(np.asarray(value))
            except (TypeError, ValueError, RuntimeError) as err:
                raise InputError(f"Input {name!r} must be a tensor or array. Received {type(value).__name__}.") from err
        boolean = spec.get("dtype") == "bool"  # e.g. an explicit mask passed to a layer's mask=
        if value.is_complex() or (value.dtype == torch.bool and not boolean):
            raise InputError(f"Input {name!r} must be real numbers. Received dtype {value.dtype}.")
        shape = spec.get("shape")
        if shape is not None:
            expected = tuple(shape)
            ok = value.dim() == len(expected) and all(
                e is None or e == g or (k == 0 and not spec.get("fixed_batch"))
                for k, (e, g) in enumerate(zip(expected, value.shape))
            )
            if not ok:
                raise InputError(
                    f"Input {name!r} of model {self.name!r} expects shape {_pretty_shape(expected)} (None = any size). "
                    f"Received shape {tuple(value.shape)}."
                )
            empty = [k for k, (e, g) in enumerate(zip(expected, value.shape)) if k > 0 and e is None and g == 0]
            if empty:
                raise InputError(
                    f"Input {name!r} of model {self.name!r} has size 0 on axis {empty[0]} (shape "
                    f"{tuple(value.shape)}). Expected at least one step: Keras layers cannot run on empty sequences."
                )
        if boolean:
            return value.to(device=device, dtype=torch.bool)
        if value.is_floating_point() and str(spec.get("dtype")).startswith(("int", "uint")):
            # Keras casts a float value to the input's integer dtype (toward zero) before any layer
            # sees it, so e.g. an Embedding's mask_zero sees 0.5 as 0.
            value = value.trunc()
        if name in self._index_inputs and not value.is_floating_point():
            return value.to(device=device, dtype=torch.long)
        if name in self._index_inputs:
            return value.to(device=device)
        return value.to(device=device, dtype=dtype)

    def _prepare_text(self, spec: Mapping[str, Any], value: Any) -> np.ndarray:
        """A text input as an object array of str, reshaped as Keras does between ``(N,)`` and ``(N, 1)``.

        It stays an array: the text layer it feeds turns it into ids.
        """
        name = spec["name"]
        if isinstance(value, (str, bytes)):
            raise InputError(
                f"Input {name!r} of model {self.name!r} takes a batch of texts. Received one {type(value).__name__} "
                f"{_short(value, 60)}. Expected a list, tuple or numpy array of strings, e.g. [{_short(value, 60)}]."
            )
        array = as_string_array(value, f"Input {name!r} of model {self.name!r}")
        shape = spec.get("shape")
        if shape is None:
            return array
        expected = tuple(shape)
        if array.ndim + 1 == len(expected) and expected[-1] == 1:
            array = array[..., None]  # Keras feeds (N,) to Input(shape=(1,)) as (N, 1)
        elif array.ndim == len(expected) + 1 and array.shape[-1] == 1:
            array = array[..., 0]
        ok = array.ndim == len(expected) and all(
            e is None or e == g or (k == 0 and not spec.get("fixed_batch"))
            for k, (e, g) in enumerate(zip(expected, array.shape))
        )
        if not ok:
            raise InputError(
                f"Input {name!r} of model {self.name!r} expects texts of shape {_pretty_shape(expected)} (None = any "
                f"size). Received shape {array.shape}."
            )
        return array

    def forward(
        self,
        *args: Any,
        input_masks: Sequence[torch.Tensor | None] | None = None,
        return_masks: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Runs the model on inputs given positionally, as a list, or by name (a dict or keywords).

        Args:
            input_masks: a Keras mask (or None) for each input; a parent graph hands a nested
                model the masks of the tensors it is called on.
            return_masks: also return the mask of each output, ``(result, masks)``.
        """
        out, masks = self.run_graph(self._bind(args, kwargs), input_masks)
        return (out, masks) if return_masks else out

    def run_graph(
        self, inputs: Sequence[torch.Tensor], masks: Sequence[torch.Tensor | None] | None = None
    ) -> tuple[Any, list[torch.Tensor | None]]:
        """Runs the graph on bound inputs; returns (Keras-style result, output masks)."""
        values: dict[Ref, Any] = {}
        mask_of: dict[Ref, torch.Tensor | None] = {}
        for k, (spec, x) in enumerate(zip(self._inputs, inputs)):
            values[(spec["name"], 0, 0)] = x
            mask_of[(spec["name"], 0, 0)] = masks[k] if masks is not None else None
        for node in self._nodes:
            module = self._modules[_module_name(node.layer)]
            try:
                xs = [values[r] for r in node.inputs]
                in_masks = [mask_of.get(r) for r in node.inputs]
                call_kwargs = {key: _resolve(v, values) for key, v in node.kwargs.items() if key != "mask"}
                if "mask" in node.kwargs:
                    explicit = node.kwargs["mask"]
                    in_masks = [_resolve(explicit, values)] if explicit is not None else [None]
            except KeyError as err:
                raise GraphError(
                    f"Model {self.name!r}: layer {node.layer!r} reads tensor {list(err.args[0])}, which its layer "
                    "call does not output (the call has fewer outputs)."
                ) from None
            try:
                out, out_masks = _call(module, xs, in_masks, call_kwargs)
            except TorchLstmProbeError:
                raise
            except _LAYER_FAILURES as err:
                shapes = ", ".join(str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__ for x in xs)
                raise InputError(
                    f"Model {self.name!r}: layer {node.layer!r} ({type(module).__name__}) cannot run on input(s) of "
                    f"shape {shapes} ({type(err).__name__}: {err}). Fix: feed inputs of the shapes in "
                    "model.input_specs; if they match, the file's layers do not fit together."
                ) from err
            if getattr(module, "clears_input_masks", False):
                for ref in node.inputs:  # the tensors it read lose their masks for later layers
                    mask_of[ref] = None
            outs = out if isinstance(out, tuple) else (out,)
            for k, o in enumerate(outs):
                values[(node.layer, node.call, k)] = o
                mask_of[(node.layer, node.call, k)] = out_masks[k] if k < len(out_masks) else None
        missing = [list(r) for r in self._outputs if r not in values]
        if missing:
            raise GraphError(f"Model {self.name!r}: output(s) {missing} are not produced (the call has fewer outputs).")
        result = [values[r] for r in self._outputs]
        result_masks = [mask_of.get(r) for r in self._outputs]
        return (result[0] if len(result) == 1 else result), result_masks


class _TooManySteps(Exception):
    """The load-time run met a sequence too long to step through quickly; it proves nothing then."""


def _limit_steps(module: nn.Module, args: tuple[Any, ...]) -> None:
    """Forward pre-hook of the load-time run: stops it before a layer steps through a long axis."""
    for arg in args:
        for x in arg if isinstance(arg, (list, tuple)) else (arg,):
            if isinstance(x, torch.Tensor) and x.dim() >= 3 and max(x.shape[1:-1]) > _DRY_RUN_MAX_STEPS:
                raise _TooManySteps


def _section(model: str, config: Mapping[str, Any], key: str) -> list[Any]:
    value = config.get(key)
    if not isinstance(value, (list, tuple)):
        raise GraphError(f"Model {model!r}: config key {key!r} is {_short(value)}. Expected a list.")
    return list(value)


def _input_spec(model: str, raw: Any) -> dict[str, Any]:
    """One model input: a name, a shape (a list of sizes or None, or None when unknown) and a dtype."""
    shape = raw.get("shape") if isinstance(raw, Mapping) else None
    ok = (
        isinstance(raw, Mapping)
        and isinstance(raw.get("name"), str)
        and isinstance(raw.get("dtype", "float32"), str)
        and (
            shape is None
            or (
                isinstance(shape, (list, tuple))
                and len(shape) >= 1
                and all(
                    d is None or (isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= _MAX_DECLARED_SIZE)
                    for d in shape
                )
            )
        )
    )
    if not ok:
        raise GraphError(
            f"Model {model!r}: malformed input {_short(raw)}. Expected "
            f'{{"name": str, "shape": [None or a size in 0..{_MAX_DECLARED_SIZE}, ...], "dtype": str}}.'
        )
    return dict(raw)


def _layer_entry(model: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
        raise GraphError(f"Model {model!r}: malformed layer entry {_short(raw)}. Expected {{'name': str, ...}}.")
    return dict(raw)


def _is_text(spec: Mapping[str, Any]) -> bool:
    """Whether a model input takes strings (Keras ``Input(dtype="string")``)."""
    return spec.get("dtype") == "string"


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pretty_shape(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _call(
    module: nn.Module, xs: list[Any], in_masks: list[torch.Tensor | None], kwargs: dict[str, Any]
) -> tuple[Any, list[torch.Tensor | None]]:
    """Calls one layer with Keras mask handling; returns (output, mask of each output)."""
    mode = getattr(module, "mask_mode", "drop")
    mask = in_masks[0] if len(in_masks) == 1 else (in_masks if any(m is not None for m in in_masks) else None)
    if isinstance(module, KerasModel):  # through __call__, so hooks on the nested model fire
        out, out_masks = module(*xs, input_masks=in_masks, return_masks=True)
        return (tuple(out) if isinstance(out, list) else out), list(out_masks)
    if mask is not None and getattr(module, "takes_mask", False):
        kwargs = {**kwargs, "mask": mask}
    out = module(*xs, **kwargs)
    n_out = len(out) if isinstance(out, tuple) else 1
    if mode == "pass":
        return out, [mask] * n_out
    if mode == "custom":
        computed = module.compute_mask(*xs, mask=mask)  # type: ignore[operator]
        return out, list(computed) if isinstance(computed, tuple) else [computed]
    return out, [None] * n_out


def _is_index_model(module: nn.Module, input_index: int) -> bool:
    return (
        isinstance(module, KerasModel)
        and input_index < len(module._inputs)
        and module._inputs[input_index]["name"] in module._index_inputs
    )


def _module_name(layer: str) -> str:
    """The submodule name of a Keras layer: its name, with '.' (which PyTorch refuses in module
    names; tf_keras names TF function layers like ``tf.compat.v1.transpose``) written as '․'."""
    return layer.replace(".", "\u2024")


def _set_keras_names(module: nn.Module, path: str) -> None:
    """Records the Keras name (graph path) on a layer module and on its inner wrapped layers."""
    if isinstance(module, KerasModel):
        module.keras_name = path
        return
    try:
        module.keras_name = path  # type: ignore[assignment]
    except AttributeError:
        return
    for child_name in ("layer", "forward_layer", "backward_layer"):
        child = getattr(module, child_name, None)
        if isinstance(child, nn.Module) and not isinstance(child, KerasModel):
            _set_keras_names(child, f"{path}/{child_name}")
