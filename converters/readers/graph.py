"""Parses a Keras model config (any generation) into the format-neutral :class:`ModelSpec` graph.

Handles Sequential and Functional configs of Keras 1, Keras 2 / tf.keras / tf_keras and
Keras 3. Weights come from a :class:`WeightSource` supplied by the reader of the file format.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from torch_lstm_probe.errors import FileLimitError, GraphError, KerasFileError

from ..spec import CallSpec, InputSpec, KerasVersion, LayerSpec, ModelSpec, TensorRef
from .limits import MAX_MODEL_NESTING, MAX_NAME_CHARS, short_repr, short_text

__all__ = ["WeightSource", "LayerLocation", "parse_model_config", "MODEL_CLASSES", "snake_case"]

MODEL_CLASSES = ("Sequential", "Functional", "Model")
OP_MODULE = "keras.src.ops"  # the module given to op nodes whose config entry lacks one


def snake_case(name: str) -> str:
    """Keras 3's rule for naming a saved object's group after its class (``LSTM`` → ``lstm``)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


class LayerLocation:
    """Where a layer sits: its Keras name path and its Keras 3 positional weight path."""

    def __init__(self, names: tuple[str, ...], keras3_path: str) -> None:
        self.names = names  # ("outer_model", "lstm"): user layer names from the top
        self.keras3_path = keras3_path  # "layers/functional/layers/lstm_1"

    @property
    def path(self) -> str:
        return "/".join(self.names)


class WeightSource(Protocol):
    """Gives each layer its arrays in Keras ``get_weights()`` order."""

    def weights_for(
        self, location: LayerLocation, class_name: str, config: Mapping[str, Any]
    ) -> tuple[np.ndarray, ...]: ...


# Keras 3 layers whose config has no ``trainable`` key (so it cannot tell them from op nodes).
_LAYERS_WITHOUT_TRAINABLE = frozenset(
    {"SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "Discretization", "Pipeline", "HashedCrossing"}
)

# Config class names that are aliases of a Python class with another name; the saved group is
# named after the Python class.
_SAVED_CLASS = {"GroupQueryAttention": "GroupedQueryAttention"}


class _Counter:
    """Keras 3's per-container unique-name counter (``lstm``, ``lstm_1``, ``lstm_2`` …)."""

    def __init__(self) -> None:
        self.used: dict[str, int] = {}

    def next(self, class_name: str) -> str:
        name = snake_case(_SAVED_CLASS.get(class_name, class_name))
        if name in self.used:
            self.used[name] += 1
            return f"{name}_{self.used[name]}"
        self.used[name] = 0
        return name


def _as_tuple_shape(shape: Any) -> tuple[int | None, ...] | None:
    if shape is None:
        return None
    if isinstance(shape, Mapping):  # tf_keras may serialize a TensorShape as a dict
        shape = shape.get("items", shape.get("shape"))
    if not isinstance(shape, (list, tuple)):
        return None
    if not all(d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 0) for d in shape):
        raise KerasFileError(f"malformed shape {short_repr(shape)}: expected a list of sizes (whole numbers or null).")
    return tuple(shape)


def _index(value: Any, what: str, where: str) -> int:
    """A node or tensor index of a tensor reference: a whole number >= 0."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise KerasFileError(f"{where}: the {what} of a tensor reference is {short_repr(value)}; expected a whole number.")


def _mapping(value: Any, what: str, where: str) -> Mapping[str, Any]:
    """``value`` if it is a JSON object (None counts as an empty one)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise KerasFileError(f"{where}: {what} is {short_repr(value)}; expected a JSON object.")
    return value


def _dtype_name(value: Any, default: str = "float32") -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):  # Keras 3 DTypePolicy {"config": {"name": ...}}
        name = value.get("config", {}).get("name") if isinstance(value.get("config"), Mapping) else None
        return str(name) if name else default
    return default


def _history_ref(tensor: Mapping[str, Any], where: str = "") -> TensorRef:
    """The TensorRef of a Keras 3 ``__keras_tensor__``; its ``keras_history`` must be ``[str, int, int]``."""
    config = tensor.get("config")
    history = config.get("keras_history") if isinstance(config, Mapping) else None
    if not (
        isinstance(history, (list, tuple))
        and len(history) == 3
        and isinstance(history[0], str)
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in history[1:])
    ):
        raise KerasFileError(
            f"{where + ': ' if where else ''}malformed tensor reference: keras_history is {short_repr(history)}. "
            "Expected [layer name, node index, tensor index]."
        )
    return TensorRef(history[0], history[1], history[2])


def _parse_keras3_arg(value: Any) -> Any:
    if isinstance(value, Mapping):
        if value.get("class_name") == "__keras_tensor__":
            return _history_ref(value)
        return {k: _parse_keras3_arg(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_parse_keras3_arg(v) for v in value)
    return value


def _parse_keras2_value(value: Any) -> Any:
    if (
        isinstance(value, (list, tuple))
        and len(value) in (3, 4)
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and isinstance(value[2], int)
    ):
        return TensorRef(value[0], value[1], value[2])
    if isinstance(value, (list, tuple)):
        return tuple(_parse_keras2_value(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _parse_keras2_value(v) for k, v in value.items()}
    return value


# tf_keras writes a constant call argument (e.g. the 2.0 of tf.multiply(2.0, x)) under this name.
_CONSTANT_VALUE = "_CONSTANT_VALUE"


def _parse_inbound_nodes(raw: Any, where: str) -> tuple[CallSpec, ...]:
    if not raw:
        return ()
    if not isinstance(raw, (list, tuple)):
        raise KerasFileError(f"{where}: inbound_nodes is {short_repr(raw)}; expected a list of calls.")
    calls = []
    for node in raw:
        if isinstance(node, Mapping):  # Keras 3: {"args": [...], "kwargs": {...}}
            raw_args = node.get("args", ())
            if not isinstance(raw_args, (list, tuple)):
                raise KerasFileError(f"{where}: the args of a call are {short_repr(raw_args)}; expected a list.")
            args = tuple(_parse_keras3_arg(a) for a in raw_args)
            kwargs = {
                k: _parse_keras3_arg(v) for k, v in _mapping(node.get("kwargs"), "the kwargs of a call", where).items()
            }
            calls.append(CallSpec(args, kwargs))
        elif isinstance(node, (list, tuple)):  # Keras 1/2: [[name, node, tensor, {kwargs}], ...]
            if node and isinstance(node[0], str):
                # tf_keras TFOpLambda / SlicingOpLambda: a call on one tensor is written as the bare
                # entry [name, node, tensor, {kwargs}], without the enclosing list.
                node = [node]
            refs: list[Any] = []
            kwargs: dict[str, Any] = {}
            for entry in _flat_entries(node):
                if not (isinstance(entry, (list, tuple)) and len(entry) >= 3):
                    raise KerasFileError(f"{where}: malformed inbound node entry {short_repr(entry)}.")
                if entry[0] == _CONSTANT_VALUE:  # tf_keras: a constant first argument of a TF function
                    refs.append(entry[2])
                else:
                    refs.append(
                        TensorRef(
                            str(entry[0]),
                            _index(entry[1], "node index", where),
                            _index(entry[2], "tensor index", where),
                        )
                    )
                if len(entry) > 3 and entry[3]:
                    call_kwargs = _mapping(entry[3], "the kwargs of a call", where)
                    kwargs.update({k: _parse_keras2_value(v) for k, v in call_kwargs.items()})
            args: tuple[Any, ...] = (refs[0],) if len(refs) == 1 else (tuple(refs),)
            calls.append(CallSpec(args, kwargs))
        else:
            raise KerasFileError(f"{where}: malformed inbound_nodes {short_repr(raw)}.")
    return tuple(calls)


def _flat_entries(node: Sequence[Any], depth: int = 0) -> list[Any]:
    """A Keras 1/2 call's tensor entries ``[name, node, tensor, {kwargs}]``, in order, with nested
    groups flattened: tf_keras writes a nested argument, such as a StackedRNNCells'
    ``initial_state=[[h, c], h2]``, as nested lists of entries."""
    flat: list[Any] = []
    for entry in node:
        if isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], (list, tuple)) and depth < 8:
            flat += _flat_entries(entry, depth + 1)
        else:
            flat.append(entry)
    return flat


def _io_refs(raw: Any, where: str = "") -> tuple[TensorRef, ...]:
    if raw is None:
        return ()
    if isinstance(raw, Mapping):  # a dict of named outputs: keep the dict order
        raw = list(raw.values())
    if isinstance(raw, (list, tuple)) and raw and isinstance(raw[0], str):
        raw = [raw]  # Keras 3 writes a single input/output as one flat [name, 0, 0]
    refs = []
    for item in raw:
        if isinstance(item, Mapping) and item.get("class_name") == "__keras_tensor__":
            refs.append(_history_ref(item, where))
        elif isinstance(item, (list, tuple)) and len(item) >= 3:
            refs.append(
                TensorRef(str(item[0]), _index(item[1], "node index", where), _index(item[2], "tensor index", where))
            )
        else:
            raise KerasFileError(
                f"{where + ': ' if where else ''}malformed model input/output reference {short_repr(item)}."
            )
    return tuple(refs)


def _input_spec_from_input_layer(layer: Mapping[str, Any]) -> InputSpec:
    cfg = _mapping(layer.get("config"), "its config", f"InputLayer {short_repr(layer.get('name'))}")
    name = str(cfg.get("name", layer.get("name", "input")))
    shape = cfg.get("batch_shape", cfg.get("batch_input_shape"))
    if shape is None and cfg.get("shape") is not None:
        shape = [None, *cfg["shape"]]
    dtype = _dtype_name(cfg.get("dtype", cfg.get("input_dtype")))
    return InputSpec(name, _as_tuple_shape(shape), dtype)


class _Parser:
    def __init__(self, source: str, version: KerasVersion, weights: WeightSource | None) -> None:
        self.source = source
        self.version = version
        self.weights = weights

    def layer_weights(
        self, location: LayerLocation, class_name: str, config: Mapping[str, Any]
    ) -> tuple[np.ndarray, ...]:
        if self.weights is None:
            return ()
        return self.weights.weights_for(location, class_name, config)

    def model(self, model_config: Mapping[str, Any], names: tuple[str, ...], keras3_path: str) -> dict[str, Any]:
        if len(names) > MAX_MODEL_NESTING:
            raise FileLimitError(
                f"{self.source}: models nest more than {MAX_MODEL_NESTING} levels deep (inside "
                f"{short_repr('/'.join(names[:3]))[1:-1]}/...). Keras models nest a few levels; the file is corrupt "
                "or crafted."
            )
        if not isinstance(model_config, Mapping):
            raise KerasFileError(
                f"{self.source}: a model config is a JSON {type(model_config).__name__}, not an object: "
                f"{short_repr(model_config)}."
            )
        class_name = model_config.get("class_name")
        config = model_config.get("config")
        if class_name in ("Functional", "Model") and not isinstance(config, Mapping):
            raise KerasFileError(
                f"{self.source}: the config of {class_name} model {short_repr('/'.join(names) or '(top)')} is "
                f"{short_repr(config)}. Expected an object with 'layers', 'input_layers' and 'output_layers'."
            )
        if class_name == "Sequential":
            return self.sequential(config, names, keras3_path)
        if class_name in ("Functional", "Model"):
            return self.functional(config, class_name, names, keras3_path)
        raise KerasFileError(
            f"{self.source}: the model config has class {class_name!r}. Expected a Sequential or Functional "
            "model. Subclassed models keep their code, not a config, so they cannot be rebuilt from a file; "
            "save a Functional or Sequential model instead."
        )

    def _layer(
        self, entry: Mapping[str, Any], names: tuple[str, ...], keras3_path: str, calls: tuple[CallSpec, ...]
    ) -> LayerSpec:
        class_name = str(entry.get("class_name"))
        registered = entry.get("registered_name")
        if ">" in class_name:  # Keras 3's legacy h5 writes a registered class as "package>Class"
            registered, class_name = class_name, class_name.rsplit(">", 1)[1]
        config = entry.get("config", {})
        if not isinstance(config, Mapping):
            config = {"layers": config} if class_name == "Sequential" else {}
        name = str(entry.get("name") or config.get("name") or class_name)
        if len(name) > MAX_NAME_CHARS or len(class_name) > MAX_NAME_CHARS:
            raise FileLimitError(
                f"{self.source}: a layer name or class name is longer than {MAX_NAME_CHARS} characters "
                f"({short_repr(name)} of class {short_repr(class_name)})."
            )
        location = LayerLocation(names + (name,), keras3_path)
        nested = None
        weights: tuple[np.ndarray, ...] = ()
        wrapped = config.get("layer") if class_name == "TimeDistributed" else None
        if class_name in MODEL_CLASSES:
            raw = self.model(entry, names + (name,), keras3_path)
            nested = _model_spec(raw, self)
        elif isinstance(wrapped, Mapping) and wrapped.get("class_name") in MODEL_CLASSES:
            # TimeDistributed(model): the model's layers keep their own weights, found under
            # "<wrapper>/layer/..." (the Keras 3 path of the wrapped object is "<wrapper path>/layer").
            raw = self.model(wrapped, names + (name, "layer"), f"{keras3_path}/layer")
            nested = _model_spec(raw, self)
        elif str(entry.get("module") or "").startswith(OP_MODULE):
            pass  # op nodes hold no weights
        else:
            weights = self.layer_weights(location, class_name, config)
        return LayerSpec(
            name=name,
            class_name=class_name,
            config=config,
            weights=weights,
            calls=calls,
            model=nested,
            path=location.path,
            module=entry.get("module"),
            registered_name=str(registered) if registered else None,
        )

    def _is_op_node(self, entry: Mapping[str, Any]) -> bool:
        """Keras 3 op nodes: named by their ``keras.src.ops`` module, except in Keras 3's legacy
        h5 configs, which drop the module; there an op node is a Keras 3 entry whose config
        lacks the ``trainable`` key that every layer config has."""
        module = entry.get("module")
        if module:
            return str(module).startswith("keras.src.ops")
        config = entry.get("config")
        if entry.get("class_name") in _LAYERS_WITHOUT_TRAINABLE:
            return False
        return self.version.major >= 3 and isinstance(config, Mapping) and "trainable" not in config

    def sequential(self, config: Any, names: tuple[str, ...], keras3_path: str) -> dict[str, Any]:
        if isinstance(config, list):  # Keras 1 / Keras ≤ 2.2.4: the config is the layer list
            layer_entries, model_name, build_shape = config, "sequential", None
        elif not isinstance(config, Mapping):
            raise KerasFileError(
                f"{self.source}: the config of Sequential model {short_repr('/'.join(names) or '(top)')} is "
                f"{short_repr(config)}. Expected an object with 'layers'."
            )
        else:
            layer_entries = config.get("layers", [])
            model_name = config.get("name", "sequential")
            build_shape = config.get("build_input_shape") or (config.get("build_config") or {}).get("input_shape")
        counter = _Counter()
        inputs: list[InputSpec] = []
        layers: list[LayerSpec] = []
        previous: TensorRef | None = None
        if not isinstance(layer_entries, list):
            raise KerasFileError(
                f"{self.source}: Sequential model {short_repr(model_name)} lists its layers as "
                f"{short_repr(layer_entries)}. Expected a JSON list of layer objects."
            )
        for entry in layer_entries:
            if not isinstance(entry, Mapping):
                raise KerasFileError(
                    f"{self.source}: Sequential model {short_repr(model_name)} has a layer entry {short_repr(entry)}. "
                    "Expected an object with 'class_name' and 'config'."
                )
            class_name = entry.get("class_name")
            cfg = entry.get("config", {}) if isinstance(entry.get("config"), Mapping) else {}
            if class_name == "InputLayer":
                if inputs or layers:
                    raise KerasFileError(
                        f"{self.source}: Sequential model {model_name!r} has an InputLayer after its first layer."
                    )
                spec = _input_spec_from_input_layer(entry)
                inputs.append(spec)
                previous = TensorRef(spec.name, 0, 0)
                counter.next("InputLayer")
                continue
            if previous is None:
                shape = cfg.get("batch_input_shape", cfg.get("batch_shape")) or build_shape
                if shape is None and cfg.get("input_shape") is not None:
                    shape = [None, *cfg["input_shape"]]
                dtype = _dtype_name(cfg.get("dtype"))
                spec = InputSpec(f"{cfg.get('name', class_name)}_input", _as_tuple_shape(shape), dtype)
                inputs.append(spec)
                previous = TensorRef(spec.name, 0, 0)
            path = f"{keras3_path}/layers/{counter.next(str(class_name))}".lstrip("/")
            layer = self._layer(entry, names, path, (CallSpec((previous,), {}),))
            layers.append(layer)
            previous = TensorRef(layer.name, 0, 0)
        if not layers:
            raise KerasFileError(f"{self.source}: Sequential model {model_name!r} has no layers.")
        return {
            "name": model_name,
            "class_name": "Sequential",
            "layers": tuple(layers),
            "inputs": tuple(inputs),
            "outputs": (TensorRef(layers[-1].name, 0, 0),),
        }

    def functional(
        self, config: Mapping[str, Any], class_name: str, names: tuple[str, ...], keras3_path: str
    ) -> dict[str, Any]:
        model_name = config.get("name", "model")
        counter = _Counter()
        layers: list[LayerSpec] = []
        input_entries: dict[str, InputSpec] = {}
        entries = config.get("layers", [])
        if not isinstance(entries, list):
            raise KerasFileError(
                f"{self.source}: model {short_repr(model_name)} lists its layers as {short_repr(entries)}. "
                "Expected a JSON list of layer objects."
            )
        for entry in entries:
            if not isinstance(entry, Mapping):
                raise KerasFileError(
                    f"{self.source}: model {short_repr(model_name)} has a layer entry {short_repr(entry)}. Expected an "
                    "object with 'class_name' and 'config'."
                )
            layer_class = entry.get("class_name")
            layer_config = entry.get("config")
            name = entry.get("name") or (layer_config.get("name") if isinstance(layer_config, Mapping) else None)
            where = f"{self.source}: layer {short_repr(name)} ({short_text(str(layer_class))})"
            if layer_class == "InputLayer":
                spec = _input_spec_from_input_layer(entry)
                input_entries[spec.name] = spec
                counter.next("InputLayer")
                continue
            calls = _parse_inbound_nodes(entry.get("inbound_nodes"), where)
            is_op = self._is_op_node(entry)
            path = "" if is_op else f"{keras3_path}/layers/{counter.next(str(layer_class))}".lstrip("/")
            if is_op and not entry.get("module"):
                entry = {**entry, "module": OP_MODULE}
            layers.append(self._layer(entry, names, path, calls))
        input_refs = _io_refs(config.get("input_layers"), f"{self.source}: model {model_name!r} input_layers")
        output_refs = _io_refs(config.get("output_layers"), f"{self.source}: model {model_name!r} output_layers")
        inputs = []
        for ref in input_refs:
            if ref.layer not in input_entries:
                raise GraphError(f"{self.source}: model {model_name!r} input {ref.layer!r} is not an InputLayer.")
            inputs.append(input_entries[ref.layer])
        return {
            "name": model_name,
            "class_name": class_name,
            "layers": tuple(layers),
            "inputs": tuple(inputs),
            "outputs": output_refs,
        }


def _model_spec(raw: Mapping[str, Any], parser: _Parser, **extra: Any) -> ModelSpec:
    return ModelSpec(
        name=str(raw["name"]),
        class_name=str(raw["class_name"]),
        layers=raw["layers"],
        inputs=raw["inputs"],
        outputs=raw["outputs"],
        keras_version=parser.version,
        source=parser.source,
        file_format=extra.get("file_format", "nested"),
        backend=extra.get("backend"),
        library=extra.get("library", "keras"),
    )


def parse_model_config(
    model_config: Mapping[str, Any],
    *,
    source: str,
    keras_version: KerasVersion,
    file_format: str,
    weights: WeightSource | None,
    backend: str | None = None,
    library: str = "keras",
) -> ModelSpec:
    """Turns a model config dict (``model.to_json()`` / ``config.json``) into a ModelSpec."""
    if not isinstance(model_config, Mapping) or "class_name" not in model_config:
        raise KerasFileError(f"{source}: the model config is not a Keras model config (no 'class_name').")
    parser = _Parser(source, keras_version, weights)
    raw = parser.model(model_config, (), "")
    return _model_spec(raw, parser, file_format=file_format, backend=backend, library=library)


def library_of(model_config: Mapping[str, Any], version: KerasVersion) -> str:
    """ "tf_keras" for configs written by tf_keras/tf.keras, else "keras".

    tf.keras wrote "2.2.4-tf"/"2.3.0-tf" before its version numbers left standalone Keras'
    behind (2.4); standalone Keras 2.0-2.3 wrote the bare number.
    """
    module = str(model_config.get("module", ""))
    tf_keras_2 = version.major == 2 and (version.tf or version >= KerasVersion(2, 4))
    if module.startswith("tf_keras") or tf_keras_2:
        return "tf_keras"
    return "keras"


def decode(value: Any) -> Any:
    """h5py attributes may be bytes or numpy scalars; return plain str where text is meant."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO":
        return [decode(v) for v in value.tolist()]
    return value


def names_list(value: Any) -> Sequence[str]:
    decoded = decode(value)
    if isinstance(decoded, np.ndarray):
        return [decode(v) for v in decoded.tolist()]
    return list(decoded)
